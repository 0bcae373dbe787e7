"""Prompt text: where images go, and the conversation template around the user turn.

A sample's text marks each image's place with ``<image>`` (interleaved prompts); a text without placeholders gets
its images prepended. Two ways to turn that into the model's prompt:

* :func:`render_prompt`, for LLaVA-style processors, which expand each ``<image>`` of the text themselves: the text
  goes into one of the fixed conversation templates of :data:`CONV_TEMPLATES` (the paper's LLaVA-1.5 prompts);
* :func:`chat_messages`, for any processor with a chat template: a user turn whose content alternates text and
  ``{"type": "image"}`` (or one ``{"type": "video"}``) parts in the text's order, which the processor's own template
  renders with the family's own placeholders (``<|image_pad|>``, ``<start_of_image>``, ``[IMG]``, ...).
"""

from __future__ import annotations

from collections.abc import Callable

from ..validation import check_choice

IMAGE_PLACEHOLDER = "<image>"
#: Visual tokens of one LLaVA-1.5 image: CLIP ViT-L/14 at 336 px, (336 / 14)^2 patches, one token each.
LLAVA_IMAGE_TOKENS = 576

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
    """Return ``name`` if it is a conversation template, else raise naming the valid ones."""
    return check_choice("conv_template", name, CONV_TEMPLATES, noun="templates")


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


def chat_messages(
    context: str, n_images: int, where: str = "", video: bool = False, system: str | None = None
) -> list[dict]:
    """The chat messages of one sample: a user turn with its text and image parts in order (see the module doc).

    With ``video`` the sample's images are the frames of one video, placed where the first image goes; the
    whitespace that separated the frames' placeholders goes with them (text between them stays).
    """
    pieces = place_images(context, n_images, where).split(IMAGE_PLACEHOLDER)
    content: list[dict] = []
    for index, piece in enumerate(pieces):
        if index and not (video and index > 1):
            content.append({"type": "video" if video else "image"})
        between_frames = video and 0 < index < len(pieces) - 1
        if piece and not (between_frames and not piece.strip()):
            content.append({"type": "text", "text": piece})
    messages = [{"role": "user", "content": content}]
    if system:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return messages
