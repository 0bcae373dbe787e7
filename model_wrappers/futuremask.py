"""``futuremask``: any Hugging Face VLM with a future-aware prefill mask, prompted with its own chat template.

``--model futuremask --model_args pretrained=Qwen/Qwen2.5-VL-7B-Instruct,mode=future_v2v``: the processor's chat
template and image placeholders, every processor output passed to the model, videos for video-capable processors,
and MileBench with each image's real token count in this model (:mod:`lmms_futuremask.milebench.chat`). Everything
else is :class:`.base.FutureMaskLMM`.
"""

from __future__ import annotations

from typing import Any

from lmms_futuremask.milebench.chat import ChatProtocol
from lmms_futuremask.runtime.model_args import FUTUREMASK_ARGS
from lmms_futuremask.runtime.vlm import CHAT_TEMPLATE, VLM

from .base import FutureMaskLMM


class FutureMask(FutureMaskLMM):
    """lmms-eval model: ``--model futuremask --model_args pretrained=...,mode=future_v2v``."""

    NAME = "futuremask"
    ARGS = FUTUREMASK_ARGS
    VIDEOS = True

    def load(self, args: dict[str, Any], device: str | None) -> VLM:
        """The model (``AutoModelForImageTextToText``) and processor, prompts through its chat template."""
        processor_kwargs = dict(args["processor_kwargs"] or {})
        processor_kwargs |= {k: args[k] for k in ("max_pixels", "min_pixels") if args[k] is not None}
        return self.load_vlm(
            args,
            device,
            conv_template=CHAT_TEMPLATE,
            system=args["system_prompt"],
            processor_kwargs=processor_kwargs,
            visual_token_ids=args["visual_token_ids"],
            needs_video=args["frames_as_video"],
        )

    def protocol(self, args: dict[str, Any]) -> ChatProtocol:
        """MileBench with this model's template and image costs."""
        return ChatProtocol.for_vlm(self.vlm, args["milebench_context_len"])

    def milebench_settings(self) -> Any:
        """The protocol's context budget."""
        return self.milebench.max_context_len
