"""MileBench for any VLM: the official prompt, rendered with the model's own chat template and image placeholders.

The prompt text, choice block, CLEVR fix, placeholder behaviour and right-to-left truncation are the official ones
(:mod:`.prompt`). What changes per model: the tokenizer that counts text, each image's cost in the context budget
(the tokens the model's processor really gives *that* image: dynamic resolution, anyres tiles and the markers around
them included, measured once per image size), the budget itself (default: the model's context length), and the
template (the processor's chat template, images where their slots are). ``llava_futuremask`` keeps the paper's exact
LLaVA-1.5 pipeline instead (:mod:`.llava`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runtime.vlm import VLM, Sample
from .data import image_size, open_image
from .llava import ChunkCodec
from .prompt import render


@dataclass
class ChatProtocol:
    """Everything that turns a MileBench doc into a chat-template sample for one model."""

    vlm: VLM
    codec: ChunkCodec
    max_context_len: int
    stop_token_ids: tuple[int, ...] = ()  # generation ends at the model's own EOS only

    @classmethod
    def for_vlm(cls, vlm: VLM, max_context_len: int | None = None) -> ChatProtocol:
        """The protocol of a loaded model; the budget defaults to its context length."""
        text = vlm.model.config.get_text_config()
        budget = max_context_len or int(getattr(text, "max_position_embeddings", None) or 4096)
        return cls(vlm, ChunkCodec(vlm.tokenizer), budget)

    def image_tokens(self, doc: dict[str, Any]) -> list[int]:
        """What each of the doc's images costs in this model's context (from the image's size only)."""
        return [self.vlm.image_cost(image_size(doc, i)) for i in range(len(doc["images"]))]

    def sample(self, doc: dict[str, Any], where: str, system: str | None = None) -> Sample:
        """The sample of one doc: the official text truncated to the budget, the images it keeps, in place; a
        ``system`` instruction (lmms-eval's ``--system_instruction``) becomes the system turn."""
        rendered = render(doc, self.codec.encode, self.codec.decode, self.max_context_len, self.image_tokens(doc))
        images = [open_image(doc, i) for i in rendered.images]
        return Sample(rendered.text, images, where, notes=rendered.notes, system=system)
