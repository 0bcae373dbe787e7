"""The official MileBench prompt (MileBench ``utils.py`` and its LLaVA worker), rule for rule.

1. Context: the sample's context, then (for multi-choice) ``"\\nChoice list: \\n"`` + one ``"A. choice"`` line per
   option (no letter for GPR1200) + ``"\\nYour answer is: "``. Only then are ``{image#k}``/``{table#k}`` (k = 1..N)
   replaced by image slots, so placeholders inside choices become images too.
2. Truncation to the model's context budget: the instruction's tokens are reserved; the context is walked right to
   left by image-separated fragments, each kept fragment re-encoded and decoded with the model's tokenizer; only the
   rightmost fragment may be left-truncated; each image costs ``tokens_per_image``; the walk stops when the next
   fragment or image does not fit. The question end and the rightmost images survive.
3. Text = instruction + ``"\\n"`` + truncated context; two adjacent image slots get a newline after each (the worker's
   CLEVR-Change fix, applied to every task as upstream does); slots become ``<image>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .data import check_placeholders, open_image

SLOT = "<ImageHere>"
DEFAULT_CONTEXT_LEN = 4096  # LLaVA-1.5's MileBench budget in the paper's lineage
DEFAULT_TEMPLATE = "llava_llama_2"
NO_LETTER_TASKS = ("GPR1200",)


def context_with_choices(doc: dict[str, Any]) -> str:
    """Step 1: context plus the choice block, placeholders replaced by slots."""
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


def _model_text(instruction: str, context: str) -> str:
    """Step 3: instruction line, the adjacent-slot newline fix, slots as ``<image>``."""
    text = instruction + "\n" + context
    return text.replace(SLOT + SLOT, SLOT + "\n" + SLOT + "\n").replace(SLOT, "<image>")


def full_prompt(doc: dict[str, Any]) -> str:
    """The untruncated prompt with ``<image>`` placeholders, for models that do not truncate."""
    return _model_text(doc["instruction"], context_with_choices(doc))


def truncate(
    instruction: str,
    context: str,
    n_images: int,
    tokenizer: Any,
    max_context_len: int,
    tokens_per_image: int,
) -> tuple[str, list[int]]:
    """Step 2: ``(context text with slots, indices of the images kept)``, walking right to left."""

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    budget = max_context_len - len(encode(instruction))
    remaining = list(range(n_images))
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
        if tokens_per_image + used > budget:
            break
        if remaining:
            image_first = True
            kept.insert(0, remaining.pop())
            used += tokens_per_image
    text = "".join(tokenizer.decode(c) + SLOT for c in chunks[:-1]) + tokenizer.decode(chunks[-1])
    return (SLOT if image_first else "") + text, kept


@dataclass(frozen=True)
class ProtocolSettings:
    """The knobs of the protocol: the model's context budget, what one image costs in it, and the square padding
    colour (LLaVA-1.5's ``pad`` aspect ratio: the image processor's mean colour; None leaves images as they are)."""

    max_context_len: int = DEFAULT_CONTEXT_LEN
    tokens_per_image: int = 576
    pad_fill: tuple[int, int, int] | None = None


def is_milebench_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and "milebench_task" in doc


def render(doc: dict[str, Any], tokenizer: Any, settings: ProtocolSettings) -> tuple[str, list[int]]:
    """The user text (with ``<image>`` placeholders) and the indices of the images it shows, for one sample."""
    where = f"{doc['milebench_task']} sample {doc['sample_id']}"
    check_placeholders(doc["context"] + " ".join(doc["choices"]), len(doc["images"]), where)
    context, kept = truncate(
        doc["instruction"],
        context_with_choices(doc),
        len(doc["images"]),
        tokenizer,
        settings.max_context_len,
        settings.tokens_per_image,
    )
    return _model_text(doc["instruction"], context), kept


def protocol_inputs(doc: dict[str, Any], tokenizer: Any, settings: ProtocolSettings) -> tuple[str, list[Any]]:
    """The user text and the (padded) images the model sees for one sample under the official protocol."""
    text, kept = render(doc, tokenizer, settings)
    return text, [open_image(doc, i, settings.pad_fill) for i in kept]
