"""Our attention backend for transformers: ``futuremask_<base>`` runs a base backend (sdpa, eager, flex, flash) on
every call and changes only the prefills that carry our ``futuremask`` keyword (see
:mod:`lmms_futuremask.attention.integration`). One place registers it and finds its base."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

import torch

#: Our backends are named ``futuremask_<base>``; transformers builds their masks as for ``<base>``.
BACKEND_PREFIX = "futuremask_"


@functools.cache
def base_attention(module_type: type, base: str) -> Callable:
    """The function ``base`` names for this attention class (eager is defined per model file)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager":
        return sys.modules[module_type.__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[base]


def scaling_of(module: torch.nn.Module, query: torch.Tensor, kwargs: dict) -> float:
    """The softmax scale the base kernel would use."""
    return kwargs.get("scaling") or getattr(module, "scaling", None) or query.shape[-1] ** -0.5


def register_backend(name: str, base: str, attention: Callable) -> str:
    """Register ``attention`` as ``name`` with transformers, masks built as for ``base``; returns ``name``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    attention.__name__ = name
    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name
