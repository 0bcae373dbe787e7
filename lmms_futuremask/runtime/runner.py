"""Load a VLM with a mode enabled and run batches of samples through it, one failure never sinking a batch.

This is everything the lmms-eval adapter needs that does not depend on lmms-eval: model loading, prompt
rendering, left-padded batched generation, continuation scoring, and the per-sample error policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ..attention.integration import enable
from .continuation import ContinuationScore, score_continuations
from .prompting import DEFAULT_CONV_TEMPLATE, check_conv_template, render_prompt

logger = logging.getLogger("lmms_futuremask")

#: Prefix of the answer recorded for a sample that failed under ``on_error="record"``: visible in logs and
#: sample files, and never an empty string that a scorer could take for a real answer.
ERROR_MARKER = "[futuremask-error]"

ON_ERROR = ("record", "raise")
DTYPES = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

T = TypeVar("T")


class SampleError(RuntimeError):
    """A sample failed under ``on_error="raise"``; the message names the sample."""


@dataclass
class Sample:
    """One prompt: text with or without ``<image>`` placeholders, its images, and where it comes from."""

    context: str
    images: list[Any] = field(default_factory=list)
    where: str = "sample"
    conv_template: str | None = None  # None: the runner's template


@dataclass
class GenerationSettings:
    max_new_tokens: int = 1024
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1
    until: tuple[str, ...] = ()
    cache_implementation: str | None = None  # e.g. "static": a fixed-shape cache (compiled decode on GPUs)

    def generate_kwargs(self) -> dict[str, Any]:
        sample = self.temperature > 0
        extra = {"cache_implementation": self.cache_implementation} if self.cache_implementation else {}
        return extra | {
            "do_sample": sample,
            "temperature": self.temperature if sample else None,
            "top_p": self.top_p if sample else None,
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens or None,
        }


def cut_at_stop_strings(text: str, until: Sequence[str]) -> str:
    """Text up to the first stop string (lmms-eval's ``until``)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def resolve_dtype(dtype: str | torch.dtype) -> Any:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid values are: {', '.join(DTYPES)}")
    return DTYPES[dtype]


class VLMRunner:
    """A VLM, its processor and a conversation template, with the mode already enabled."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        conv_template: str = DEFAULT_CONV_TEMPLATE,
        on_error: str = "record",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"unknown on_error {on_error!r}; valid values are: {', '.join(ON_ERROR)}")
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.conv_template = check_conv_template(conv_template)
        self.on_error = on_error
        self.failures: list[str] = []

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
        on_error: str = "record",
        revision: str = "main",
        trust_remote_code: bool = False,
        **merge_options: Any,
    ) -> VLMRunner:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model = AutoModelForImageTextToText.from_pretrained(
            pretrained,
            revision=revision,
            dtype=resolve_dtype(dtype),
            device_map=device_map or None,
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
        ).eval()
        if not device_map:
            model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        enable(model, mode, merge, **merge_options)
        processor = AutoProcessor.from_pretrained(pretrained, revision=revision, trust_remote_code=trust_remote_code)
        return cls(model, processor, conv_template=conv_template, on_error=on_error)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompt(self, sample: Sample) -> str:
        template = sample.conv_template or self.conv_template
        return render_prompt(sample.context, len(sample.images), template, sample.where)

    def encode(self, prompts: list[str], images: list[Any]) -> dict[str, torch.Tensor]:
        inputs = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return dict(inputs)

    @property
    def tokens_per_image(self) -> int:
        return int(getattr(self.model.config, "image_seq_length", None) or 576)

    def estimated_length(self, text: str, n_images: int) -> int:
        """Prompt tokens (text plus visual tokens), for grouping similar lengths into a batch."""
        return len(self.tokenizer.encode(text, add_special_tokens=False)) + n_images * self.tokens_per_image

    # -- generation ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _generate_batch(self, samples: list[Sample], settings: GenerationSettings) -> list[str]:
        prompts = [self.prompt(s) for s in samples]
        inputs = self.encode(prompts, [img for s in samples for img in s.images])
        output = self.model.generate(
            **inputs,
            **settings.generate_kwargs(),
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [cut_at_stop_strings(t, settings.until) for t in texts]

    def generate(self, samples: list[Sample], settings: GenerationSettings) -> list[str]:
        """Greedy (or sampled) answers, in order; a batch of any size gives the tokens of one-at-a-time runs."""
        return self._isolated(samples, lambda batch: self._generate_batch(batch, settings), self._error_answer)

    # -- scoring ---------------------------------------------------------------------------------------------------

    def continuation_tokens(self, prompt: str, continuation: str) -> list[int]:
        """Tokens of ``continuation`` as they follow ``prompt`` (split the joint encoding where it agrees)."""
        whole = self.tokenizer.encode(prompt + continuation)
        head = self.tokenizer.encode(prompt)
        if whole[: len(head)] == head and len(whole) > len(head):
            return whole[len(head) :]
        return self.tokenizer.encode(continuation, add_special_tokens=False)

    def _score_batch(self, samples: list[Sample], continuations: list[str]) -> list[ContinuationScore]:
        prompts = [self.prompt(s) for s in samples]
        tokens = [self.continuation_tokens(p, c) for p, c in zip(prompts, continuations)]
        inputs = self.encode(prompts, [img for s in samples for img in s.images])
        return score_continuations(self.model, inputs, tokens, self.tokenizer.pad_token_id)

    def loglikelihood(self, samples: list[Sample], continuations: list[str]) -> list[ContinuationScore]:
        """Sum of log-probs of each continuation after its prompt; the prompt alone is prefilled under the mode."""
        pairs = list(zip(samples, continuations))

        def run(batch):
            return self._score_batch([s for s, _ in batch], [c for _, c in batch])

        def failed(pair, error):
            self._record_failure(pair[0], error)
            return ContinuationScore(logprob=float("-inf"), is_greedy=False)

        return self._isolated(pairs, run, failed)

    # -- failures ----------------------------------------------------------------------------------------------------

    def _isolated(self, items: list[Any], run: Callable[[list[Any]], list[T]], on_failure) -> list[T]:
        """Run a batch; if it fails, run its items one by one so only the failing ones are affected."""
        try:
            return run(items)
        except SampleError:
            raise
        except Exception as error:  # noqa: BLE001 - any model or data error is isolated to its sample
            if len(items) == 1:
                return [on_failure(items[0], error)]
            logger.warning("a batch of %d failed (%s); retrying its samples one by one", len(items), error)
            return [self._isolated([item], run, on_failure)[0] for item in items]

    def _record_failure(self, sample: Sample, error: BaseException) -> None:
        message = f"{sample.where}: {type(error).__name__}: {error}"
        if self.on_error == "raise":
            raise SampleError(message) from error
        logger.error("sample failed, recorded as an error answer: %s", message)
        self.failures.append(message)

    def _error_answer(self, sample: Sample, error: BaseException) -> str:
        self._record_failure(sample, error)
        return f"{ERROR_MARKER} {type(error).__name__}: {error}"

    def fail(self, sample: Sample, error: BaseException) -> str:
        """Record a failure that happened before the sample reached the model (e.g. an unreadable image)."""
        return self._error_answer(sample, error)
