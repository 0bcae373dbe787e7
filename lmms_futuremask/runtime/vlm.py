"""A loaded VLM with its mode enabled: prompts in, batched answers and continuation scores out.

This is the model side of a run and nothing else: no failure policy, no caching, no request bookkeeping (those
live in :mod:`lmms_futuremask.runtime.runner`). Every method takes a whole batch and raises if any of it fails;
the runner decides what a failure means.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteria

from ..attention.integration import disable, enable, enabled_settings
from .continuation import ContinuationScore, score_continuations
from .model_args import ModelArgsError, default_device
from .prompting import (
    DEFAULT_CONV_TEMPLATE,
    IMAGE_PLACEHOLDER,
    LLAVA_IMAGE_TOKENS,
    chat_messages,
    check_conv_template,
    render_prompt,
)

DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class Sample:
    """One prompt: text with or without ``<image>`` placeholders, its images, and where it comes from.

    A protocol that builds the model inputs itself (the paper's LLaVA pipeline for MileBench) also sets
    ``input_ids`` (the whole prompt, images expanded to their visual positions) and ``pixel_values`` ``[N, 3, H, W]``;
    the text then only describes the prompt. ``notes`` are protocol quirks the sample hit (counted per run).
    """

    context: str
    images: list[Any] = field(default_factory=list)
    where: str = "sample"
    conv_template: str | None = None  # None: the VLM's template
    input_ids: list[int] | None = None
    pixel_values: torch.Tensor | None = None
    notes: tuple[str, ...] = ()
    video: bool = False  # the images are the frames of one video (chat prompts of video-capable processors)
    system: str | None = None  # a system turn for this sample (chat prompts), before the VLM's own


#: Generation kwargs :class:`GenerationSettings` reads itself; any other ``GenerationConfig`` option passes through.
_OWN_KWARGS = (
    "max_new_tokens",
    "min_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "num_beams",
    "repetition_penalty",
    "until",
)


@dataclass(frozen=True)
class GenerationSettings:
    """What ``generate`` is asked for, built from a request's generation kwargs (:meth:`from_kwargs`).

    Greedy unless ``do_sample`` (lmms-eval's convention: a temperature above 0 without ``do_sample`` samples too).
    """

    max_new_tokens: int = 1024
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_beams: int = 1
    repetition_penalty: float | None = None
    until: tuple[str, ...] = ()
    cache_implementation: str | None = None  # e.g. "static": a fixed-shape cache (compiled decode on GPUs)
    stop_token_ids: tuple[int, ...] = ()  # a row also ends once it generated one of these (a stopping criterion)
    extra: tuple[tuple[str, Any], ...] = ()  # other GenerationConfig options, as given

    @classmethod
    def from_kwargs(cls, gen_kwargs: dict | None, **fixed: Any) -> tuple[GenerationSettings, list[str]]:
        """``(settings, ignored keys)`` from a task's / ``--gen_kwargs``' generation kwargs; ``fixed`` overrides.

        Every ``GenerationConfig`` option is honoured; a key that is not one (a task's own hint such as
        ``image_aspect_ratio``) is returned as ignored, for the caller to say so.
        """
        from transformers import GenerationConfig

        kwargs = dict(gen_kwargs or {})
        until = kwargs.get("until") or []
        temperature = float(kwargs.get("temperature") or 0)
        do_sample = bool(kwargs.get("do_sample", temperature > 0))
        known = GenerationConfig()
        extra = tuple(sorted((k, v) for k, v in kwargs.items() if k not in _OWN_KWARGS and hasattr(known, k)))
        ignored = sorted(k for k in kwargs if k not in _OWN_KWARGS and not hasattr(known, k))
        values = {
            "max_new_tokens": int(kwargs.get("max_new_tokens", 1024)),
            "min_new_tokens": int(kwargs.get("min_new_tokens") or 0),
            "do_sample": do_sample,
            "temperature": temperature if do_sample and temperature > 0 else None,
            "top_p": float(kwargs["top_p"]) if do_sample and kwargs.get("top_p") is not None else None,
            "top_k": int(kwargs["top_k"]) if do_sample and kwargs.get("top_k") is not None else None,
            "num_beams": int(kwargs.get("num_beams") or 1),
            "repetition_penalty": (
                float(kwargs["repetition_penalty"]) if kwargs.get("repetition_penalty") is not None else None
            ),
            "until": (until,) if isinstance(until, str) else tuple(until),
            "extra": extra,
        }
        return cls(**(values | {k: v for k, v in fixed.items() if v is not None})), ignored

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``model.generate`` (EOS ids are added by the VLM, which knows the tokenizer)."""
        kwargs = {
            "do_sample": self.do_sample,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens or None,
            **dict(self.extra),
        }
        if self.cache_implementation:
            kwargs["cache_implementation"] = self.cache_implementation
        optional = {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}
        optional["repetition_penalty"] = self.repetition_penalty
        return kwargs | {k: v for k, v in optional.items() if v is not None}


@dataclass(frozen=True)
class Generation:
    """One answer and what produced it: the prompt as fed (template applied, images as the processor's placeholders
    before their expansion) and the token counts (prompt tokens the model saw, visual ones included; new tokens)."""

    text: str
    prompt: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None


class StopAtTokens(StoppingCriteria):
    """A ``generate`` stopping criterion: a row is done once its last token is one of ``ids``.

    Unlike extra EOS ids, it is not suppressed by ``min_new_tokens`` (LLaVA's keyword criterion is not either).
    """

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = torch.tensor(list(ids))

    def __call__(self, input_ids: torch.Tensor, _scores: torch.Tensor, **_kwargs: Any) -> torch.Tensor:
        """``[B]`` bool: the rows whose last token is a stop id."""
        return torch.isin(input_ids[:, -1], self.ids.to(input_ids.device))


def _generated_length(tokens: torch.Tensor, ends: torch.Tensor) -> int:
    """New tokens up to and including the first end token (what follows it is padding)."""
    stops = torch.isin(tokens, ends).nonzero()
    return int(stops[0, 0]) + 1 if len(stops) else int(tokens.shape[0])


def cut_at_stop_strings(text: str, until: Sequence[str]) -> str:
    """Text up to the first stop string (lmms-eval's ``until``)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def resolve_dtype(dtype: str | torch.dtype) -> Any:
    """``"bfloat16"`` -> ``torch.bfloat16`` (``"auto"`` stays ``"auto"``); unknown names raise naming the valid."""
    from ..validation import check_choice

    if isinstance(dtype, torch.dtype):
        return dtype
    return DTYPES[check_choice("dtype", dtype, DTYPES)]


#: The ``conv_template`` that renders prompts with the processor's own chat template (any VLM family).
CHAT_TEMPLATE = "chat"


def load_model(pretrained: str, **kwargs: Any) -> Any:
    """``AutoModelForImageTextToText``, or ``AutoModelForCausalLM`` for VLMs registered only there
    (Phi-4-multimodal)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = AutoConfig.from_pretrained(
        pretrained, revision=kwargs.get("revision"), trust_remote_code=kwargs.get("trust_remote_code", False)
    )
    if config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES or kwargs.get("trust_remote_code"):
        return AutoModelForImageTextToText.from_pretrained(pretrained, **kwargs)
    return AutoModelForCausalLM.from_pretrained(pretrained, **kwargs)


def uses_multimodal_rope(model: Any) -> bool:
    """Whether the model computes its own (3-D, M-RoPE) positions from the prompt (Qwen2/2.5/3-VL and kin): then
    nobody else may pass it ``position_ids``."""
    return any(hasattr(m, "get_rope_index") for m in (model, getattr(model, "model", None)) if m is not None)


def takes_video(processor: Any) -> bool:
    """Whether a processor takes ``videos=`` (it has a video processor); others ignore the argument silently."""
    return getattr(processor, "video_processor", None) is not None


class VLM:
    """A VLM, its processor and how prompts are rendered, with the mode already enabled.

    ``conv_template`` is one of :data:`~lmms_futuremask.runtime.prompting.CONV_TEMPLATES` (LLaVA-style processors that
    expand ``<image>`` themselves; images passed as one flat list) or ``"chat"`` (the processor's own chat template,
    any family; images nested per prompt, a sample's frames as one video where ``Sample.video``).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        conv_template: str = DEFAULT_CONV_TEMPLATE,
        autocast: str | torch.dtype | None = None,
        system: str | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.conv_template = conv_template if conv_template == CHAT_TEMPLATE else check_conv_template(conv_template)
        self.autocast = None if autocast in (None, "none") else resolve_dtype(autocast)
        self.system = system
        self.multimodal_rope = uses_multimodal_rope(model)
        self._image_costs: dict[tuple[int, int], int] = {}
        #: How the model was enabled (restored after a routed batch; None: not enabled) and the variant in force
        #: (None: that one). See :meth:`use_variant`.
        self._own_settings = enabled_settings(model)
        self._variant: tuple[str, str] | None = None
        #: Held for tokenizer and processor work (fast tokenizers refuse concurrent use while one call changes
        #: their padding settings): the runner's loading thread and the model's thread take turns on the host side;
        #: the model itself runs without it.
        self.host_lock = threading.RLock()

    @classmethod
    def from_pretrained(
        cls,
        pretrained: str,
        mode: str = "original",
        merge: str = "none",
        dtype: str | torch.dtype = "auto",
        device: str | None = None,
        device_map: str | None = None,
        attn_implementation: str = "sdpa",
        conv_template: str = DEFAULT_CONV_TEMPLATE,
        revision: str = "main",
        trust_remote_code: bool = False,
        autocast: str | None = None,
        system: str | None = None,
        processor_kwargs: dict[str, Any] | None = None,
        visual_token_ids: tuple[int, ...] | None = None,
        needs_video: bool = False,
        **merge_options: Any,
    ) -> VLM:
        """Load processor and model, move the model to ``device`` (unless ``device_map``) and enable the mode.
        ``needs_video``: refuse (before the weights load) a processor that takes no video."""
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(
            pretrained, revision=revision, trust_remote_code=trust_remote_code, **(processor_kwargs or {})
        )
        if needs_video and not takes_video(processor):
            raise ModelArgsError(
                f"model_args: frames_as_video=true, but {pretrained}'s processor ({type(processor).__name__}) takes "
                "no video; drop it, or use a video-capable model (Qwen-VL, LLaVA-OneVision, LLaVA-NeXT-Video, ...)"
            )
        model = load_model(
            pretrained,
            revision=revision,
            dtype=resolve_dtype(dtype),
            device_map=device_map or None,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        ).eval()
        if not device_map:
            model.to(default_device(device))
        enable(model, mode, merge, visual_token_ids=visual_token_ids, **merge_options)
        return cls(model, processor, conv_template=conv_template, autocast=autocast, system=system)

    def use_variant(self, variant: tuple[str, str] | None) -> None:
        """Prefill the next batches under ``variant`` (``(mode, merge)``; None: as the model was enabled when this
        VLM was built), re-enabling the model only when it changes. Routed runs call it before each batch; a merge
        variant keeps the merge knobs the model was enabled with, if it was enabled with a merge."""
        if variant == self._variant:
            return
        own = self._own_settings
        if variant is None:
            if own is None:
                disable(self.model)
            else:
                enable(self.model, **own)
        else:
            options = {} if own is None else {"visual_token_ids": own["visual_token_ids"]}
            if variant[1] == "kernel" and own is not None and own["merge"] == "kernel":
                options |= {k: v for k, v in own.items() if k.startswith("merge_")}
            enable(self.model, *variant, **options)
        self._variant = variant

    @property
    def device(self) -> torch.device:
        """Where the inputs go (the first parameter's device)."""
        return next(self.model.parameters()).device

    def prompt(self, sample: Sample) -> str:
        """The full prompt text of a sample: images placed, conversation (or chat) template applied."""
        template = sample.conv_template or self.conv_template
        if template != CHAT_TEMPLATE:
            return render_prompt(sample.context, len(sample.images), template, sample.where)
        if sample.video and not takes_video(self.processor):
            raise ValueError(
                f"{sample.where}: the sample is a video, which {type(self.processor).__name__} does not take "
                "(its frames would be dropped silently); give this task to a video-capable model"
            )
        system = sample.system or self.system
        messages = chat_messages(sample.context, len(sample.images), sample.where, sample.video, system)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Processor outputs of a left-padded batch, on the model's device (floats in the model's dtype)."""
        prompts = [self.prompt(s) for s in samples]
        media: dict[str, Any] = {}
        if any(s.images for s in samples):
            if self.conv_template == CHAT_TEMPLATE:  # nested per prompt: the form every family's processor takes
                images = [s.images for s in samples if s.images and not s.video]
                videos = [s.images for s in samples if s.images and s.video]
                media = {"images": images or None, "videos": videos or None}
            else:
                media = {"images": [image for s in samples for image in s.images]}
        inputs = self.processor(text=prompts, padding=True, return_tensors="pt", **media)
        inputs = {k: v for k, v in inputs.items() if k not in ("labels", "text_replacement_offsets")}
        return {
            key: value.to(self.device, self.model.dtype) if value.is_floating_point() else value.to(self.device)
            for key, value in inputs.items()
        }

    def image_cost(self, size: tuple[int, int]) -> int:
        """Tokens one image of ``size`` (width, height) adds to a prompt in this model (visual tokens and the markers
        the processor puts around them), measured once per size through the processor itself."""
        if size not in self._image_costs:
            from PIL import Image

            image = Image.new("RGB", size, (127, 127, 127))
            with_image = self.encode([Sample(f"{IMAGE_PLACEHOLDER}x", [image], "image cost")])["input_ids"].shape[1]
            without = self.encode([Sample("x", [], "image cost")])["input_ids"].shape[1]
            self._image_costs[size] = with_image - without
        return self._image_costs[size]

    def inputs(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Model inputs of a batch: through the processor, or left-padded from the samples' own ``input_ids``."""
        built = [s.input_ids is not None for s in samples]
        if not any(built):
            return self.encode(samples)
        if not all(built):
            raise ValueError("a batch cannot mix samples with ready input_ids and samples rendered by the processor")
        width = max(len(s.input_ids) for s in samples)
        input_ids = torch.full((len(samples), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, sample in enumerate(samples):
            input_ids[row, width - len(sample.input_ids) :] = torch.tensor(sample.input_ids)
            attention_mask[row, width - len(sample.input_ids) :] = 1
        inputs = {"input_ids": input_ids.to(self.device), "attention_mask": attention_mask.to(self.device)}
        pixels = [s.pixel_values for s in samples if s.pixel_values is not None and len(s.pixel_values)]
        if pixels:
            inputs["pixel_values"] = torch.cat(pixels).to(self.device, self.model.dtype)
        return inputs

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    @property
    def tokens_per_image(self) -> int:
        """Visual tokens one image costs: the config's ``image_seq_length``, else LLaVA-1.5's (an estimate for
        batching only; dynamic-resolution models count each image with their processor)."""
        return int(getattr(self.model.config, "image_seq_length", None) or LLAVA_IMAGE_TOKENS)

    def estimated_length(self, text: str, n_images: int) -> int:
        """Prompt tokens (text plus visual tokens), for grouping similar lengths into a batch."""
        return len(self.tokenizer.encode(text, add_special_tokens=False)) + n_images * self.tokens_per_image

    @torch.inference_mode()
    def generate_batch(self, samples: list[Sample], settings: GenerationSettings) -> list[Generation]:
        """Answers of a batch, in order; a batch of any size gives the tokens of one-at-a-time runs."""
        with self.host_lock:
            inputs = self.inputs(samples)
        extra = {"stopping_criteria": [StopAtTokens(settings.stop_token_ids)]} if settings.stop_token_ids else {}
        with self._autocast():
            output = self.model.generate(
                **inputs,
                **settings.generate_kwargs(),
                **extra,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        with self.host_lock:
            texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            prompts = [self.prompt(sample) for sample in samples]
        ends = torch.tensor([self.tokenizer.eos_token_id, *settings.stop_token_ids], device=new_tokens.device)
        return [
            Generation(
                cut_at_stop_strings(text, settings.until),
                prompt,
                int(inputs["attention_mask"][row].sum()),
                _generated_length(new_tokens[row], ends),
            )
            for row, (prompt, text) in enumerate(zip(prompts, texts, strict=True))
        ]

    def continuation_tokens(self, prompt: str, continuation: str) -> list[int]:
        """Tokens of ``continuation`` as they follow ``prompt`` (split the joint encoding where it agrees)."""
        whole = self.tokenizer.encode(prompt + continuation)
        head = self.tokenizer.encode(prompt)
        if whole[: len(head)] == head and len(whole) > len(head):
            return whole[len(head) :]
        return self.tokenizer.encode(continuation, add_special_tokens=False)

    def score_batch(self, samples: list[Sample], continuations: list[str]) -> list[ContinuationScore]:
        """Log-likelihood of each continuation after its prompt; the prompt alone is prefilled under the mode."""
        with self.host_lock:
            prompts = [self.prompt(s) for s in samples]
            tokens = [self.continuation_tokens(p, c) for p, c in zip(prompts, continuations, strict=True)]
            inputs = self.inputs(samples)
        with self._autocast():
            return score_continuations(self.model, inputs, tokens, self.tokenizer.pad_token_id, self.multimodal_rope)

    def probe(self) -> None:
        """Run one tiny prompt with one synthetic image through the whole model (two new tokens, so a decode step
        too); raises what the model raises. Tells a model that fails as a whole from a sample that fails."""
        from PIL import Image

        image = Image.new("RGB", (64, 64), (127, 127, 127))
        self.generate_batch([Sample("Describe the image.", [image], "probe")], GenerationSettings(2, 2))
