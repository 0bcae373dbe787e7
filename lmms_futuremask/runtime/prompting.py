"""Prompt text: where images go, and the conversation template around the user turn.

LLaVA-style processors expand each ``<image>`` placeholder into the image's visual tokens, in order. So an
interleaved prompt is just text with placeholders in place; a task without placeholders gets them prepended.
"""

from __future__ import annotations

from collections.abc import Callable

IMAGE_PLACEHOLDER = "<image>"

_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
_VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

#: conv_template name -> user text -> the prompt the model continues (the answer follows it directly).
CONV_TEMPLATES: dict[str, Callable[[str], str]] = {
    # The llava-hf model cards' format for LLaVA-1.5.
    "llava_hf": lambda text: f"USER: {text} ASSISTANT:",
    # LLaVA-1.5's own conversation (conv_vicuna_v1), with its system line.
    "vicuna_v1": lambda text: f"{_VICUNA_SYSTEM} USER: {text} ASSISTANT:",
    # LLaVA's conv_llava_llama_2, which MileBench's LLaVA workers use.
    "llava_llama_2": lambda text: f"[INST] <<SYS>>\n{_LLAMA_2_SYSTEM}\n<</SYS>>\n\n{text} [/INST]",
    # No wrapping at all.
    "plain": lambda text: text,
}

DEFAULT_CONV_TEMPLATE = "llava_hf"


def check_conv_template(name: str) -> str:
    if name not in CONV_TEMPLATES:
        raise ValueError(f"unknown conv_template {name!r}; valid templates are: {', '.join(CONV_TEMPLATES)}")
    return name


class ImageCountMismatch(ValueError):
    """The text's ``<image>`` placeholders and the sample's images disagree."""


def place_images(context: str, n_images: int, where: str = "") -> str:
    """Return ``context`` with exactly ``n_images`` placeholders.

    Placeholders already in the text are kept where they are (interleaved prompts); with none, one per image is
    prepended, as LLaVA's evaluation does. Any other count is an error that names ``where`` (task and doc).
    """
    found = context.count(IMAGE_PLACEHOLDER)
    if found == n_images:
        return context
    if found == 0:
        return "\n".join([IMAGE_PLACEHOLDER] * n_images) + "\n" + context
    raise ImageCountMismatch(
        f"{where}: the context has {found} {IMAGE_PLACEHOLDER} placeholder(s) but the sample has {n_images} "
        f"image(s); make doc_to_text emit one {IMAGE_PLACEHOLDER} per image, or none to have them prepended"
    )


def render_prompt(context: str, n_images: int, conv_template: str = DEFAULT_CONV_TEMPLATE, where: str = "") -> str:
    """The full prompt for one sample: images placed, then the conversation template applied."""
    return CONV_TEMPLATES[check_conv_template(conv_template)](place_images(context, n_images, where))
