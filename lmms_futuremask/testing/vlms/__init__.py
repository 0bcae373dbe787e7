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

from ...validation import unknown_choice

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
        raise unknown_choice("tiny VLM family", name, FAMILY_MODULES, noun="families")
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


def sample_images(count: int, size: int = 48, seed: int = 0) -> list[Any]:
    """Deterministic noise images (never one flat colour: Idefics3 drops all-zero tiles as padding)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def user_prompt(name: str, processor: Any, n_images: int, question: str = "Which image is brighter?") -> str:
    """A prompt with ``n_images`` images and text before, between and after them, in the family's own format (its
    chat template; PaliGemma's and Florence-2's processors take plain text)."""
    if name == "paligemma":
        return "<image>" * n_images + question + " Answer with one word."
    if name == "florence2":
        return "<CAPTION>"
    content: list[dict] = [{"type": "text", "text": question}]
    for index in range(n_images):
        content += [{"type": "image"}, {"type": "text", "text": f"image {index + 1}"}]
    content.append({"type": "text", "text": "Answer with one word."})
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def processor_inputs(name: str, processor: Any, image_counts: list[int], seed: int = 0) -> dict[str, Any]:
    """Model inputs of a left-padded batch, one prompt per entry of ``image_counts`` (images nested per prompt, the
    form every family's processor takes), float tensors in float32."""
    size = tiny_vlm(name).extra.get("image_size", 48)
    processor.tokenizer.padding_side = "left"
    texts = [user_prompt(name, processor, n) for n in image_counts]
    images = [sample_images(n, size, seed + i) for i, n in enumerate(image_counts)]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    return {
        key: value.float() if value.is_floating_point() else value
        for key, value in batch.items()
        if key not in ("labels", "text_replacement_offsets")
    }
