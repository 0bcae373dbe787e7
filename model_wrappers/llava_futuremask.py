"""``llava_futuremask``: the paper's preset, LLaVA-1.5 (llava-hf) with a future-aware prefill mask.

Its prompts are the LLaVA conversation templates, and MileBench docs get the paper's exact pipeline (token ids,
pixels, stop rule: :mod:`lmms_futuremask.milebench.llava`). Everything else is :class:`.base.FutureMaskLMM`.
"""

from __future__ import annotations

from typing import Any

from lmms_futuremask.milebench.llava import LlavaProtocol
from lmms_futuremask.milebench.prompt import DEFAULT_TEMPLATE as MILEBENCH_TEMPLATE
from lmms_futuremask.milebench.prompt import ProtocolSettings
from lmms_futuremask.runtime.model_args import LLAVA_FUTUREMASK_ARGS
from lmms_futuremask.runtime.prompting import DEFAULT_CONV_TEMPLATE
from lmms_futuremask.runtime.vlm import VLM

from .base import FutureMaskLMM, LoglikelihoodPair

__all__ = ["LlavaFutureMask", "LoglikelihoodPair"]


class LlavaFutureMask(FutureMaskLMM):
    """lmms-eval model: ``--model llava_futuremask --model_args pretrained=...,mode=future_v2v``."""

    NAME = "llava_futuremask"
    ARGS = LLAVA_FUTUREMASK_ARGS

    def load(self, args: dict[str, Any], device: str | None) -> VLM:
        """The LLaVA model with the conversation template of ``conv_template`` (``auto``: ``llava_hf``)."""
        template = args["conv_template"]
        return self.load_vlm(args, device, conv_template=DEFAULT_CONV_TEMPLATE if template == "auto" else template)

    def protocol(self, args: dict[str, Any]) -> LlavaProtocol:
        """The paper's pipeline; ``conv_template=auto`` gives MileBench docs its ``llava_llama_2`` template."""
        template = args["conv_template"]
        settings = ProtocolSettings(
            max_context_len=args["milebench_context_len"],
            tokens_per_image=args["milebench_image_tokens"] or self.vlm.tokens_per_image,
            pad_square=args["milebench_pad_square"],
        )
        return LlavaProtocol.for_model(
            self.vlm.model, self.vlm.processor, settings, MILEBENCH_TEMPLATE if template == "auto" else template
        )

    def milebench_settings(self) -> Any:
        """The protocol's budget, image cost, padding and template."""
        return (self.milebench.settings, self.milebench.template)
