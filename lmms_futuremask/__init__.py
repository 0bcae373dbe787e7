"""Future-aware causal masks for vision-language models, as a transformers patch and an lmms-eval plugin.

The root is lazy (as transformers' is): ``lmms_futuremask.enable`` imports torch and the attention core on first use,
so the parts that need neither (MileBench scoring, ``rescore``, the report's statistics) import in a blink.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "MODES": "lmms_futuremask.attention.masks",
    "RELAXATIONS": "lmms_futuremask.attention.masks",
    "build_mask": "lmms_futuremask.attention.masks",
    "mask_function": "lmms_futuremask.attention.masks",
    "enable": "lmms_futuremask.attention.integration",
    "disable": "lmms_futuremask.attention.integration",
    "current_mode": "lmms_futuremask.attention.integration",
}

__all__ = ["MODES", "RELAXATIONS", "__version__", "build_mask", "current_mode", "disable", "enable", "mask_function"]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lmms_futuremask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
