"""``llava_futuremask``: LLaVA (and other HF VLMs keyed by ``image_token_id``) with a future-aware prefill mask.

A thin lmms-eval adapter: model_args are checked by :mod:`lmms_futuremask.runtime.model_args` before anything loads;
requests become :class:`lmms_futuremask.runtime.runner.Request` objects; masks, batching, caching, scoring and the
failure policy live in the library.
"""

from __future__ import annotations

from typing import Any

from lmms_eval import utils
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger

from lmms_futuremask.milebench.llava import LlavaProtocol
from lmms_futuremask.milebench.prompt import DEFAULT_TEMPLATE as MILEBENCH_TEMPLATE
from lmms_futuremask.milebench.prompt import ProtocolSettings, is_milebench_doc
from lmms_futuremask.runtime.answer_cache import AnswerCache
from lmms_futuremask.runtime.errors import is_error_answer
from lmms_futuremask.runtime.fingerprint import checkpoint_identity
from lmms_futuremask.runtime.model_args import LLAVA_FUTUREMASK_ARGS, parse_model_args
from lmms_futuremask.runtime.prompting import DEFAULT_CONV_TEMPLATE, IMAGE_PLACEHOLDER
from lmms_futuremask.runtime.runner import Request, Runner
from lmms_futuremask.runtime.vlm import VLM, GenerationSettings, Sample

from ._logging import route_library_logs


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        return [visuals]
    return [v for item in visuals for v in _flatten(item)]


class _LoglikelihoodPair(tuple):
    """``(logprob, is_greedy)`` that survives lmms-eval 0.7.3's evaluator.

    Its ``unwrap_generation_output`` turns any plain tuple into its ``str()``, which breaks every
    ``multiple_choice`` task; a ``GenerationResult`` passes its ``text`` through untouched, and the response
    cache only asks that ``text`` can be ``strip()``-ed.
    """

    def strip(self) -> str:
        return repr(self)


def _check_images(images: list[Any]) -> list[Any]:
    from PIL import Image

    for image in images:
        if not isinstance(image, Image.Image):
            raise TypeError(f"llava_futuremask takes PIL images; doc_to_visual returned a {type(image).__name__}")
    return [image.convert("RGB") for image in images]


class LlavaFutureMask(lmms):
    """lmms-eval model: ``--model llava_futuremask --model_args pretrained=...,mode=future_v2v``."""

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        route_library_logs()
        args = parse_model_args(model_args, LLAVA_FUTUREMASK_ARGS)  # before anything heavy
        from accelerate import Accelerator

        accelerator = Accelerator()
        device = args["device"]
        if accelerator.num_processes > 1 and not args["device_map"]:
            device = f"cuda:{accelerator.local_process_index}" if accelerator.device.type == "cuda" else "cpu"
        merge_options = {k: args[k] for k in ("merge_pool", "merge_kernel", "merge_prefix") if args[k] is not None}
        conv_template = args["conv_template"]
        self.vlm = VLM.from_pretrained(
            args["pretrained"],
            mode=args["mode"],
            merge=args["merge"],
            dtype=args["dtype"],
            device=device,
            device_map=args["device_map"],
            attn_implementation=args["attn_implementation"],
            conv_template=DEFAULT_CONV_TEMPLATE if conv_template == "auto" else conv_template,
            revision=args["revision"],
            trust_remote_code=args["trust_remote_code"],
            autocast=args["autocast"],
            **merge_options,
        )
        self.accelerator = accelerator
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self.max_new_tokens = args["max_new_tokens"]
        self.cache_implementation = None if args["cache_implementation"] == "dynamic" else args["cache_implementation"]
        # MileBench docs get the paper's pipeline (prompt, ids, pixels, stop rule); "auto" gives them llava_llama_2.
        self.milebench = LlavaProtocol.for_model(
            self.vlm.model,
            self.vlm.processor,
            ProtocolSettings(
                max_context_len=args["milebench_context_len"],
                tokens_per_image=args["milebench_image_tokens"] or self.vlm.tokens_per_image,
                pad_square=args["milebench_pad_square"],
            ),
            MILEBENCH_TEMPLATE if conv_template == "auto" else conv_template,
        )
        cache = None
        if args["answer_cache"]:
            settings = {k: v for k, v in args.items() if k not in ("answer_cache", "batch_size", "device", "on_error")}
            settings |= {"checkpoint": checkpoint_identity(args["pretrained"], args["revision"])}
            settings |= {"milebench": self.milebench.settings, "milebench_template": self.milebench.template}
            cache = AnswerCache(args["answer_cache"], settings, rank=self._rank)
        self.runner = Runner(
            self.vlm,
            batch_size=args["batch_size"],
            on_error=args["on_error"],
            answer_cache=cache,
            label="llava_futuremask",
            show_progress=self._rank == 0,
        )
        if self._rank == 0:
            logger.info(
                f"llava_futuremask: {args['pretrained']} mode={args['mode']} merge={args['merge']} "
                f"batch_size={args['batch_size']}"
            )

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> LlavaFutureMask:
        """Values in ``--model_args`` win over the CLI's injected ``--batch_size``/``--device`` defaults."""
        args = utils.simple_parse_args_string(arg_string)
        injected = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**injected, **args)

    @property
    def model(self):
        """The transformers model (mode enabled)."""
        return self.vlm.model

    @property
    def tokenizer(self):
        """The processor's tokenizer."""
        return self.vlm.tokenizer

    @property
    def batch_size(self) -> int:
        """Prompts per forward."""
        return self.runner.batch_size

    @property
    def device(self):
        """The model's device."""
        return self.vlm.device

    # -- requests -> samples ---------------------------------------------------------------------------------------

    def _request(self, instance: Instance, kind: str) -> Request:
        """The library's request for one lmms-eval instance; its sample is built (images opened) only when run."""
        context, options, doc_to_visual, doc_id, task, split = instance.args
        dataset = self.task_dict[task][split]
        columns = getattr(dataset, "column_names", None)  # an HF Dataset: do not decode a doc's images yet
        milebench = "milebench_task" in columns if columns is not None else is_milebench_doc(dataset[doc_id])
        where = f"task {task} doc {doc_id}"

        def load() -> tuple[Sample, Any]:
            doc = dataset[doc_id]
            if milebench:
                sample = self.milebench.sample(doc, f"{where} (sample {doc['sample_id']})")
            else:
                sample = Sample(context, _check_images(_flatten(doc_to_visual(doc))), where)
            if kind == "loglikelihood":
                return sample, options if isinstance(options, str) else options(doc)
            return sample, None

        if kind == "loglikelihood":
            cache_options, settings = (options if isinstance(options, str) else None), None
        else:
            cache_options, settings = sorted(options.items()), self._settings(options, milebench)
        return Request(
            kind=kind,
            task=task,
            doc_id=doc_id,
            context=context,
            options=cache_options,
            load=load,
            data=dataset[doc_id]["data_identity"] if milebench else getattr(dataset, "_fingerprint", None),
            n_images=context.count(IMAGE_PLACEHOLDER),
            settings=settings,
        )

    def _settings(self, gen_kwargs: dict, milebench: bool = False) -> GenerationSettings:
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens or int(gen_kwargs.get("max_new_tokens", 1024)),
            min_new_tokens=int(gen_kwargs.get("min_new_tokens", 0)),
            temperature=float(gen_kwargs.get("temperature", 0) or 0),
            top_p=gen_kwargs.get("top_p"),
            num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
            until=tuple(until),
            cache_implementation=self.cache_implementation,
            stop_token_ids=self.milebench.stop_token_ids if milebench else (),
        )

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Answers of lmms-eval ``generate_until`` requests (error answers for failed samples)."""
        answers = self.runner.generate([self._request(r, "generate") for r in requests])
        for request, answer in zip(requests, answers, strict=True):
            if not is_error_answer(answer):
                self.cache_hook.add_partial("generate_until", request.args[:2], answer)
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(log-prob, is_greedy)`` of each continuation, scored causally after the masked prompt."""
        scores = self.runner.loglikelihood([self._request(r, "loglikelihood") for r in requests])
        return [GenerationResult(text=_LoglikelihoodPair(score)) for score in scores]

    def generate_until_multi_round(self, requests) -> list[str]:
        """Not supported: multi-round tasks feed model answers back, which this adapter does not do."""
        raise NotImplementedError("llava_futuremask does not run multi-round tasks; use single-round generate tasks")
