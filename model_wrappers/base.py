"""What both lmms-eval models share: translating lmms-eval's requests into the library's and the answers back.

Nothing here decides anything: model_args are checked by :mod:`lmms_futuremask.runtime.model_args` before anything
loads; batching, caching and the failure policy are :class:`lmms_futuremask.runtime.runner.Runner`'s; prompts,
images and the MileBench protocol are the library's. A subclass names its model_args table and says how to load its
model and which MileBench protocol it applies.
"""

from __future__ import annotations

from typing import Any

from lmms_eval import utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger

from lmms_futuremask.milebench.prompt import is_milebench_doc
from lmms_futuremask.runtime.answer_cache import AnswerCache
from lmms_futuremask.runtime.errors import is_error_answer
from lmms_futuremask.runtime.fingerprint import checkpoint_identity
from lmms_futuremask.runtime.media import visuals_of
from lmms_futuremask.runtime.model_args import Arg, parse_model_args
from lmms_futuremask.runtime.prompting import IMAGE_PLACEHOLDER
from lmms_futuremask.runtime.runner import Request, Runner
from lmms_futuremask.runtime.vlm import VLM, GenerationSettings, Sample

from ._logging import route_library_logs

#: model_args that do not change an answer (left out of the answer cache's fingerprint).
EXECUTION_ONLY = ("answer_cache", "batch_size", "device", "on_error")
MERGE_OPTIONS = ("merge_pool", "merge_kernel", "merge_prefix")


class LoglikelihoodPair(tuple):
    """``(logprob, is_greedy)`` that survives lmms-eval 0.7.3's evaluator.

    Its ``unwrap_generation_output`` turns any plain tuple into its ``str()``, which breaks every
    ``multiple_choice`` task; a ``GenerationResult`` passes its ``text`` through untouched, and the response
    cache only asks that ``text`` can be ``strip()``-ed.
    """

    def strip(self) -> str:
        return repr(self)


class FutureMaskLMM(lmms):
    """The shared lmms-eval model: a subclass sets ``NAME`` and ``ARGS`` and implements ``load`` and ``protocol``."""

    is_simple = True
    NAME = "futuremask"
    ARGS: dict[str, Arg] = {}
    VIDEOS = False  # whether video files are decoded for this model

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        route_library_logs()
        args = parse_model_args(model_args, self.ARGS)  # before anything heavy
        from accelerate import Accelerator

        accelerator = Accelerator()
        device = args["device"]
        if accelerator.num_processes > 1 and not args["device_map"]:
            device = f"cuda:{accelerator.local_process_index}" if accelerator.device.type == "cuda" else "cpu"
        self.args = args
        self.accelerator = accelerator
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self.vlm = self.load(args, device)
        self.milebench = self.protocol(args)
        self.cache_implementation = None if args["cache_implementation"] == "dynamic" else args["cache_implementation"]
        cache = None
        if args["answer_cache"]:
            settings = {k: v for k, v in args.items() if k not in EXECUTION_ONLY}
            settings |= {"model": self.NAME, "checkpoint": checkpoint_identity(args["pretrained"], args["revision"])}
            settings |= {"milebench": repr(self.milebench_settings())}
            cache = AnswerCache(args["answer_cache"], settings, rank=self._rank)
        self.runner = Runner(
            self.vlm,
            batch_size=args["batch_size"],
            on_error=args["on_error"],
            answer_cache=cache,
            label=self.NAME,
            show_progress=self._rank == 0,
        )
        if self._rank == 0:
            logger.info(
                f"{self.NAME}: {args['pretrained']} mode={args['mode']} merge={args['merge']} "
                f"batch_size={args['batch_size']}"
            )

    # -- what a subclass says ------------------------------------------------------------------------------------

    def load(self, args: dict[str, Any], device: str | None) -> VLM:
        """The model with its mode enabled (:meth:`load_vlm` with the subclass's prompt style)."""
        raise NotImplementedError

    @staticmethod
    def load_vlm(args: dict[str, Any], device: str | None, **style: Any) -> VLM:
        """:meth:`VLM.from_pretrained` with the shared model_args; ``style``: the subclass's own options."""
        return VLM.from_pretrained(
            args["pretrained"],
            mode=args["mode"],
            merge=args["merge"],
            dtype=args["dtype"],
            device=device,
            device_map=args["device_map"],
            attn_implementation=args["attn_implementation"],
            revision=args["revision"],
            trust_remote_code=args["trust_remote_code"],
            autocast=args["autocast"],
            **{k: args[k] for k in MERGE_OPTIONS if args[k] is not None},
            **style,
        )

    def protocol(self, args: dict[str, Any]) -> Any:
        """The MileBench protocol: an object with ``sample(doc, where) -> Sample`` and ``stop_token_ids``."""
        raise NotImplementedError

    def milebench_settings(self) -> Any:
        """What of the protocol changes answers (for the answer cache's fingerprint)."""
        raise NotImplementedError

    # -- lmms-eval's model API -----------------------------------------------------------------------------------

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
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

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answers of lmms-eval ``generate_until`` requests (error answers for failed samples), with token counts.

        The request's logged context (``--log_samples``' ``arguments``) becomes the prompt the model was fed.
        """
        answers = self.runner.generate([self._request(r, "generate") for r in requests])
        results = []
        for request, answer in zip(requests, answers, strict=True):
            if not is_error_answer(answer.text):
                self.cache_hook.add_partial("generate_until", request.args[:2], answer.text)
            if answer.prompt:
                request.arguments = (answer.prompt, *request.arguments[1:])
            counts = TokenCounts(input_tokens=answer.input_tokens, output_tokens=answer.output_tokens)
            results.append(GenerationResult(text=answer.text, token_counts=counts))
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        """``(log-prob, is_greedy)`` of each continuation, scored causally after the masked prompt."""
        scores = self.runner.loglikelihood([self._request(r, "loglikelihood") for r in requests])
        return [GenerationResult(text=LoglikelihoodPair(score)) for score in scores]

    def generate_until_multi_round(self, requests) -> list[str]:
        """Not supported: multi-round tasks feed model answers back, which this adapter does not do."""
        raise NotImplementedError(f"{self.NAME} does not run multi-round tasks; use single-round generate tasks")

    # -- translation ------------------------------------------------------------------------------------------------

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
                images, video = visuals_of(doc_to_visual(doc), self.args.get("video_frames", 8), self.VIDEOS)
                sample = Sample(context, images, where, video=video or self._frames_as_video(images))
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

    def _frames_as_video(self, images: list[Any]) -> bool:
        return bool(self.args.get("frames_as_video")) and len(images) > 1

    def _settings(self, gen_kwargs: dict, milebench: bool = False) -> GenerationSettings:
        gen_kwargs = dict(gen_kwargs or {})
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        return GenerationSettings(
            max_new_tokens=self.args["max_new_tokens"] or int(gen_kwargs.get("max_new_tokens", 1024)),
            min_new_tokens=int(gen_kwargs.get("min_new_tokens", 0)),
            temperature=float(gen_kwargs.get("temperature", 0) or 0),
            top_p=gen_kwargs.get("top_p"),
            num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
            until=tuple(until),
            cache_implementation=self.cache_implementation,
            stop_token_ids=self.milebench.stop_token_ids if milebench else (),
        )
