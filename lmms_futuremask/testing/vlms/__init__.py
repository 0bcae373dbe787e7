"""Tiny random checkpoints of many Hugging Face VLM families, each with its real processor class, built offline.

Every family is a :class:`TinyVLM`: a builder that returns ``(model, processor)`` with random weights (a deterministic
seed), a decoder small enough to run in milliseconds on a CPU, few visual tokens per image, a tokenizer trained
offline on a built-in corpus that holds the family's special tokens, and the family's chat template. Where the
family's decoder has sliding-window or chunked layers, the window / chunk is set smaller than a two-image prompt so
that they are in play. ``write_tiny_vlm(name, DIR)`` saves it so that ``AutoModelForImageTextToText`` and
``AutoProcessor`` load it back from ``DIR`` (``pretrained=DIR`` in lmms-eval).

Builders live in one module per lineage (``llava``, ``qwen``, ``idefics``, ...); :data:`FAMILY_MODULES` maps each
family name to its module, imported only when that family is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: family name -> the module (under this package) that builds it.
FAMILY_MODULES: dict[str, str] = {
    "llava": "llava",
    "llava_next": "llava",
    "llava_onevision": "llava",
    "llava_next_video": "llava",
    "qwen2_vl": "qwen",
    "qwen2_5_vl": "qwen",
    "qwen3_vl": "qwen",
    "idefics3": "idefics",
    "smolvlm": "idefics",
    "internvl": "internvl",
    "mistral3": "mistral",
    "gemma3": "gemma",
    "paligemma": "gemma",
    "aya_vision": "cohere",
    "llama4": "llama4",
    "janus": "janus",
    "phi4_multimodal": "phi4",
    "florence2": "florence",
}


@dataclass(frozen=True)
class TinyVLM:
    """One family's tiny checkpoint recipe and what a test needs to know about it."""

    name: str
    #: seed -> (model in eval mode, processor). Deterministic for a given seed.
    build: Callable[[int], tuple[Any, Any]]
    #: What stands for one image in a *user message's text* when a prompt is written by hand (e.g. "<image>");
    #: None when the family only places images through its chat template.
    image_placeholder: str | None
    #: Token strings whose positions hold visual features (expanded by the processor), e.g. ("<|image_pad|>",).
    visual_tokens: tuple[str, ...]
    #: Token strings the processor adds around images that stay text (e.g. ("<|vision_start|>", "<|vision_end|>")).
    marker_tokens: tuple[str, ...] = ()
    #: The decoder's stock mask is not plain causal (e.g. Gemma 3 image blocks, PaliGemma prefix).
    non_causal_stock_mask: bool = False
    #: Layer kinds of the decoder in play at a two-image prompt: subset of {"full", "sliding", "chunked"}.
    layer_kinds: tuple[str, ...] = ("full",)
    #: The family takes video input (``videos=`` in the processor).
    video: bool = False
    #: Free text: anything a user of this family should know (nested config ids, refusals, ...).
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def tiny_vlm(name: str) -> TinyVLM:
    """The recipe of one family; unknown names raise naming the valid ones."""
    if name not in FAMILY_MODULES:
        raise ValueError(f"unknown tiny VLM family {name!r}; valid families are: {', '.join(FAMILY_MODULES)}")
    module = importlib.import_module(f"{__name__}.{FAMILY_MODULES[name]}")
    return module.FAMILIES[name]


def build_tiny_vlm(name: str, seed: int = 0) -> tuple[Any, Any]:
    """``(model, processor)`` of a family, in memory."""
    return tiny_vlm(name).build(seed)


def write_tiny_vlm(name: str, directory: str | Path, seed: int = 0) -> Path:
    """Save a family's tiny checkpoint (config, weights, processor, tokenizer, chat template) to ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model, processor = build_tiny_vlm(name, seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
