"""The paper's inputs for LLaVA-1.5, rebuilt on a llava-hf checkpoint: same token ids, same pixels, same stop rule.

The paper ran ``liuhaotian/llava-v1.5-7b`` through MileBench's dataset code and LLaVA's worker (``llava/mm_utils.py``:
``expand2square``, ``process_images``, ``tokenizer_image_token``; transformers 4.37 with the slow LLaMA tokenizer).
``llava-hf/llava-1.5-7b-hf`` holds the same weights; this module gives it the same inputs:

* **token ids** (:class:`ChunkCodec`, :func:`prompt_ids`): ``tokenizer_image_token``'s rule: the prompt is split at
  each ``<image>``, every text chunk is tokenized on its own (so SentencePiece's dummy-prefix ``"▁"`` starts the
  chunk after each image), one BOS leads, and each image takes the model's visual positions. A SentencePiece-BPE
  tokenizer is driven the way the slow tokenizer encodes and decodes plain text (``"▁"`` prepended, spaces as
  ``"▁"``, one leading space stripped when decoding), whichever ``tokenizer.json`` layout the checkpoint was written
  with (the older ``Prepend`` normalizer or the newer ``Metaspace`` pre-tokenizer): encoding the whole prompt at
  once with the newer layout would lose the ``"▁"`` after each image and the leading space of fragments. MileBench's
  truncation encodes and decodes fragments with the same codec.
* **pixels** (:func:`pixel_values`): the image as RGB, padded to a centred square with the image processor's mean
  colour (``expand2square``), then CLIP preprocessing on the PIL path (PIL bicubic resize of the short side, centre
  crop, rescale, normalise in float32), which transformers 4.37 used; transformers 5's default torchvision path
  differs by 1-2/255 in a few values.
* **stop rule**: the worker also stops at ``<s>`` (BOS) through its keyword stopping criterion.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import torch

from ..runtime.prompting import render_prompt
from ..runtime.vlm import Sample
from .data import open_image
from .prompt import ProtocolSettings, render

SPIECE = "▁"


class ChunkCodec:
    """Encode and decode text chunks as LLaVA's tokenizer did, without special tokens.

    SentencePiece-BPE tokenizers (LLaMA, Vicuna: a BPE model with byte fallback behind a ``Prepend("▁")``
    normalizer or a ``Metaspace`` pre-tokenizer) get the slow tokenizer's behaviour on plain text; any other
    tokenizer (byte-level BPE, ...) is used as it is.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.sentencepiece = backend is not None and _is_sentencepiece_bpe(json.loads(backend.to_str()))
        if self.sentencepiece:
            self._model = backend.model

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as a chunk of its own (no BOS)."""
        if not self.sentencepiece:
            return list(self.tokenizer(text, add_special_tokens=False).input_ids)
        if not text:
            return []
        return [token.id for token in self._model.tokenize(SPIECE + text.replace(" ", SPIECE))]

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids`` as the slow LLaMA tokenizer decoded plain text (transformers 4.37
        ``convert_tokens_to_string``): the first piece loses its ``"▁"``, then SentencePiece's own decoding runs,
        which also drops the ``"▁"`` of the next piece while nothing has been written yet (a lone ``"▁"`` first),
        turns ``"▁"`` into spaces and runs of byte pieces into UTF-8 text, one U+FFFD per byte that starts no valid
        character (left truncation can cut a character's bytes)."""
        if not self.sentencepiece:
            return self.tokenizer.decode(ids)
        pieces = [self._model.id_to_token(i) for i in ids]
        if pieces and pieces[0].startswith(SPIECE):
            pieces[0] = pieces[0][1:]
        text, run, at_start = [], bytearray(), True
        for piece in [*pieces, None]:  # None flushes the last byte run
            byte = _byte_piece(piece)
            if byte is not None:
                run.append(byte)
                continue
            if run:
                text.append(_utf8_per_byte(bytes(run)))
                run.clear()
                at_start = False
            if piece is None:
                break
            stripped = at_start and piece.startswith(SPIECE)
            piece = piece[1:] if stripped else piece
            text.append(piece.replace(SPIECE, " "))
            at_start = at_start and not (piece or stripped)
        return "".join(text)


def _byte_piece(piece: str | None) -> int | None:
    """The byte of a byte-fallback piece ``<0xHH>``, else None."""
    if piece is None or len(piece) != 6 or not (piece.startswith("<0x") and piece.endswith(">")):
        return None
    try:
        return int(piece[3:5], 16)
    except ValueError:
        return None


def _utf8_per_byte(data: bytes) -> str:
    """UTF-8 decoding as SentencePiece does it: each valid character in turn, one U+FFFD per byte that starts none
    (Python's ``errors="replace"`` would give one U+FFFD per invalid run instead)."""
    out, index = [], 0
    while index < len(data):
        lead = data[index]
        width = 1 if lead < 0x80 else 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4
        try:
            out.append(data[index : index + width].decode("utf-8"))
            index += width
        except UnicodeDecodeError:
            out.append("\ufffd")
            index += 1
    return "".join(out)


def _is_sentencepiece_bpe(config: dict) -> bool:
    model = config.get("model") or {}
    if model.get("type") != "BPE" or not model.get("byte_fallback"):
        return False
    pre = config.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace":
        return True
    normalizer = config.get("normalizer") or {}
    parts = normalizer.get("normalizers", [normalizer])
    return any(p.get("type") == "Prepend" and p.get("prepend") == SPIECE for p in parts)


def prompt_ids(
    prompt: str, codec: ChunkCodec, bos_token_id: int | None, image_token_id: int, tokens_per_image: int
) -> list[int]:
    """``tokenizer_image_token``'s ids for ``prompt`` (``<image>`` slots), each image as ``tokens_per_image``
    copies of ``image_token_id`` (llava-hf splices the image features there, where LLaVA spliced them in place of
    its single image index)."""
    chunks = [codec.encode(chunk) for chunk in prompt.split("<image>")]
    ids = [] if bos_token_id is None else [bos_token_id]
    for index, chunk in enumerate(chunks):
        if index:
            ids += [image_token_id] * tokens_per_image
        ids += chunk
    return ids


@functools.cache
def _pil_class(name: str) -> type | None:
    import transformers

    return getattr(transformers, f"{name}Pil", None) or getattr(transformers, name, None)


def pil_image_processor(image_processor: Any) -> Any:
    """The same image processor on the PIL/NumPy path (transformers 4.37's arithmetic), same settings."""
    if getattr(image_processor, "backend", None) == "pil":
        return image_processor
    name = type(image_processor).__name__.removesuffix("Fast")
    cls = _pil_class(name)
    if cls is None or getattr(cls, "backend", None) is None:
        raise ValueError(f"{type(image_processor).__name__} has no PIL counterpart; cannot reproduce LLaVA's pixels")
    settings = {k: v for k, v in image_processor.to_dict().items() if k not in ("image_processor_type", "backend")}
    return cls(**settings)


def expand2square(image: Any, fill: tuple[int, int, int]) -> Any:
    """LLaVA's ``expand2square``: paste the image centred on a square of side max(w, h) filled with ``fill``."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def mean_colour(image_processor: Any) -> tuple[int, int, int]:
    """The padding colour LLaVA uses: the processor's mean, ``int(x * 255)`` per channel."""
    return tuple(int(x * 255) for x in image_processor.image_mean)


def pixel_values(images: list[Any], image_processor_pil: Any, pad: bool = True) -> torch.Tensor:
    """``[N, 3, H, W]`` float32: LLaVA's ``process_images`` with ``image_aspect_ratio="pad"`` on RGB images."""
    fill = mean_colour(image_processor_pil)
    tensors = []
    for image in images:
        square = expand2square(image, fill) if pad else image
        tensors.append(image_processor_pil(images=[square], return_tensors="pt")["pixel_values"][0])
    return torch.stack(tensors)


@dataclass
class LlavaProtocol:
    """Everything that turns a MileBench doc into the inputs the paper's LLaVA-1.5 run gave the model."""

    codec: ChunkCodec
    image_processor: Any  # on the PIL path
    settings: ProtocolSettings
    template: str  # conversation template (llava_llama_2 in the paper's lineage)
    image_token_id: int
    bos_token_id: int | None  # None when the tokenizer adds no BOS

    @classmethod
    def for_model(cls, model: Any, processor: Any, settings: ProtocolSettings, template: str) -> LlavaProtocol:
        """The protocol for a loaded llava-hf model and its processor."""
        tokenizer = processor.tokenizer
        adds_bos = tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
        return cls(
            codec=ChunkCodec(tokenizer),
            image_processor=pil_image_processor(processor.image_processor),
            settings=settings,
            template=template,
            image_token_id=model.config.image_token_id,
            bos_token_id=tokenizer.bos_token_id if adds_bos else None,
        )

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The worker's keyword stopping criterion ends generation at ``<s>`` too."""
        return () if self.bos_token_id is None else (self.bos_token_id,)

    def sample(self, doc: dict[str, Any], where: str, system: str | None = None) -> Sample:
        """The sample of one doc: prompt ids and pixels as the paper's pipeline builds them. A ``system``
        instruction (lmms-eval's ``--system_instruction``) goes before the task instruction, inside the budget."""
        if system:
            doc = {**doc, "instruction": system + doc["instruction"]}
        cost = self.settings.tokens_per_image
        rendered = render(
            doc, self.codec.encode, self.codec.decode, self.settings.max_context_len, [cost] * len(doc["images"]), cost
        )
        prompt = render_prompt(rendered.text, len(rendered.images), self.template, where)
        fill = mean_colour(self.image_processor)
        images = [open_image(doc, i) for i in rendered.images]
        if self.settings.pad_square:
            images = [expand2square(image, fill) for image in images]
        return Sample(
            context=rendered.text,
            images=images,
            where=where,
            conv_template=self.template,
            input_ids=prompt_ids(prompt, self.codec, self.bos_token_id, self.image_token_id, cost),
            pixel_values=pixel_values(images, self.image_processor, pad=False) if images else None,
            notes=rendered.notes,
        )
