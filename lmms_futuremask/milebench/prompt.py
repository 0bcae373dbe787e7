"""The official MileBench prompt (MileBench ``utils.py`` and its LLaVA worker), rule for rule, quirks included.

1. Context: the sample's context, then (for multi-choice) ``"\\nChoice list: \\n"`` + one ``"A. choice"`` line per
   option (no letter for GPR1200) + ``"\\nYour answer is: "``. Only then are ``{image#k}``/``{table#k}`` (k = 1..N,
   N the sample's image count) replaced by image slots, so placeholders inside choices become images too, and a
   placeholder numbered beyond N stays as literal text (upstream answers such samples).
2. Truncation to the model's context budget: the instruction's tokens are reserved; the context is walked right to
   left by slot-separated fragments, each kept fragment encoded and decoded with the model's tokenizer; only the
   rightmost fragment may be left-truncated; after each fragment the *last remaining image of the sample* takes the
   slot before it (images are popped from the end of the list, whatever the placeholders' numbers); the walk stops
   when the next fragment or image does not fit, or after the leftmost fragment. Images therefore pair with slots
   from the right: with more images than slots, one extra image is placed before the text and any further ones are
   dropped; with more slots than images, slots stay empty and upstream's LLaVA crashes, which we refuse.
3. Text = instruction + ``"\\n"`` + truncated context; two adjacent image slots get a newline after each (the worker's
   CLEVR-Change fix, applied to every task as upstream does); slots become ``<image>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..runtime.prompting import LLAVA_IMAGE_TOKENS
from .data import MileBenchDataError

SLOT = "<ImageHere>"
IMAGE_TEXT = "<image>"
DEFAULT_CONTEXT_LEN = 4096  # LLaVA-1.5's MileBench budget in the paper's lineage
DEFAULT_TEMPLATE = "llava_llama_2"
NO_LETTER_TASKS = ("GPR1200",)
_LEFTOVER = re.compile(r"\{(?:image|table)#\d+\}")

Encode = Callable[[str], list[int]]
Decode = Callable[[list[int]], str]


def context_with_choices(doc: dict[str, Any]) -> str:
    """Step 1: context plus the choice block, placeholders 1..N replaced by slots."""
    context = doc["context"]
    if doc["has_choices"]:
        lines = [
            ("" if doc["milebench_task"] in NO_LETTER_TASKS else f"{chr(65 + i)}. ") + choice
            for i, choice in enumerate(doc["choices"])
        ]
        context += "\nChoice list: \n" + "\n".join(lines) + "\nYour answer is: "
    for k in range(1, len(doc["images"]) + 1):
        context = context.replace(f"{{image#{k}}}", SLOT).replace(f"{{table#{k}}}", SLOT)
    return context


def model_text(instruction: str, context: str) -> str:
    """Step 3: instruction line, the adjacent-slot newline fix, slots as ``<image>``."""
    text = instruction + "\n" + context
    return text.replace(SLOT + SLOT, SLOT + "\n" + SLOT + "\n").replace(SLOT, IMAGE_TEXT)


def full_prompt(doc: dict[str, Any]) -> str:
    """The untruncated prompt with ``<image>`` placeholders, for models that do not truncate."""
    return model_text(doc["instruction"], context_with_choices(doc))


def truncate(
    instruction: str,
    context: str,
    image_tokens: Sequence[int],
    encode: Encode,
    decode: Decode,
    max_context_len: int,
    spare_image_tokens: int,
) -> tuple[str, list[int]]:
    """Step 2: ``(context text with slots, indices of the images kept)``, walking right to left.

    ``image_tokens[i]`` is what image ``i`` costs in the budget (LLaVA-1.5: 576 for every image; a dynamic-resolution
    model: that image's own count). Upstream checks that an image would fit before it checks that one is left; with
    none left, ``spare_image_tokens`` is the cost it checks (LLaVA-1.5: 576). ``encode``/``decode`` are the model's
    tokenizer without special tokens.
    """
    budget = max_context_len - len(encode(instruction))
    remaining = list(range(len(image_tokens)))
    used, chunks, kept, image_first = 0, [], [], False
    for fragment in reversed(context.split(SLOT)):
        ids = encode(fragment)
        if len(ids) + used > budget:
            if not chunks:
                chunks.insert(0, ids[-budget:])  # Python slicing, quirks for budget <= 0 included
            break
        image_first = False
        chunks.insert(0, ids)
        used += len(ids)
        cost = image_tokens[remaining[-1]] if remaining else spare_image_tokens
        if cost + used > budget:
            break
        if remaining:
            image_first = True
            kept.insert(0, remaining.pop())
            used += cost
    text = "".join(decode(c) + SLOT for c in chunks[:-1]) + decode(chunks[-1])
    return (SLOT if image_first else "") + text, kept


@dataclass(frozen=True)
class ProtocolSettings:
    """The knobs of the protocol: the model's context budget, what one image costs in it, and whether images are
    padded to a square with the image processor's mean colour (LLaVA-1.5's ``pad`` aspect ratio)."""

    max_context_len: int = DEFAULT_CONTEXT_LEN
    tokens_per_image: int = LLAVA_IMAGE_TOKENS
    pad_square: bool = True


@dataclass(frozen=True)
class Rendered:
    """One sample under the protocol: the user text (``<image>`` slots), the images it shows, and the upstream
    quirks it hit (counted in the run's summary)."""

    text: str
    images: list[int]
    notes: tuple[str, ...] = ()


def is_milebench_doc(doc: Any) -> bool:
    """True for the docs our MileBench tasks produce."""
    return isinstance(doc, dict) and "milebench_task" in doc


def render(
    doc: dict[str, Any],
    encode: Encode,
    decode: Decode,
    max_context_len: int,
    image_tokens: Sequence[int],
    spare_image_tokens: int | None = None,
) -> Rendered:
    """Steps 1-3 for one sample, with upstream's placeholder behaviour; raises where upstream's LLaVA crashes.

    ``image_tokens``: the cost of each of the sample's images; ``spare_image_tokens`` (default: the largest) the
    cost upstream checks when no image is left.
    """
    where = f"{doc['milebench_task']} sample {doc['sample_id']}"
    context = context_with_choices(doc)
    slots, n_images = context.count(SLOT), len(doc["images"])
    spare = spare_image_tokens if spare_image_tokens is not None else max(image_tokens, default=0)
    truncated, kept = truncate(doc["instruction"], context, image_tokens, encode, decode, max_context_len, spare)
    text = model_text(doc["instruction"], truncated)
    notes = []
    if n_images > slots:
        notes.append("more images than placeholders (upstream: one extra image placed first, the rest dropped)")
    if _LEFTOVER.search(context):
        notes.append("a placeholder numbered beyond the images (upstream: left in the text as is)")
    if text.count(IMAGE_TEXT) != len(kept):
        raise MileBenchDataError(
            f"{where}: {text.count(IMAGE_TEXT)} image slot(s) but {len(kept)} image(s) after truncation (a "
            "placeholder used more than once, or more placeholders than images); upstream's LLaVA crashes here, "
            "so the sample is refused"
        )
    return Rendered(text, kept, tuple(notes))
