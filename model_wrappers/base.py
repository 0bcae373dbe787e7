"""What both lmms-eval models share: translating lmms-eval's requests into the library's and the answers back.

Nothing here decides anything: model_args are checked by :mod:`lmms_futuremask.runtime.model_args` before anything
loads; batching, caching and the failure policy are :class:`lmms_futuremask.runtime.runner.Runner`'s; prompts,
images and the MileBench protocol are the library's. A subclass names its model_args table and says how to load its
model and which MileBench protocol it applies.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, ClassVar

from lmms_eval import utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from loguru import logger

from lmms_futuremask.attention.integration import check_backend
from lmms_futuremask.milebench.prompt import full_prompt, is_milebench_doc
from lmms_futuremask.runtime.answer_cache import AnswerCache
from lmms_futuremask.runtime.errors import is_error_answer
from lmms_futuremask.runtime.fingerprint import checkpoint_identity
from lmms_futuremask.runtime.media import visuals_of
from lmms_futuremask.runtime.model_args import EXECUTION_ONLY, MERGE_OPTIONS, Arg, parse_model_args
from lmms_futuremask.runtime.prompting import IMAGE_PLACEHOLDER
from lmms_futuremask.runtime.routing import Routing, describe, load_routing
from lmms_futuremask.runtime.runner import Request, Runner
from lmms_futuremask.runtime.vlm import VLM, GenerationSettings, Sample

from ._logging import route_library_logs


class LoglikelihoodPair(tuple):
    """``(logprob, is_greedy)`` that survives lmms-eval 0.7.3's evaluator.

    Its ``unwrap_generation_output`` turns any plain tuple into its ``str()``, which breaks every
    ``multiple_choice`` task; a ``GenerationResult`` passes its ``text`` through untouched, and the response
    cache only asks that ``text`` can be ``strip()``-ed.
    """

    def strip(self) -> str:
        """What the response cache checks for emptiness."""
        return repr(self)


def _evaluator_setting(name: str) -> Any:
    """A setting of the ``lmms_eval.evaluator.simple_evaluate`` call that is creating this model (None outside
    one): lmms-eval passes its CLI flags there, not to the model, and some must be refused before the model loads."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "simple_evaluate" and frame.f_globals.get("__name__") == "lmms_eval.evaluator":
            return frame.f_locals.get(name)
        frame = frame.f_back
    return None


def _chat_template_refusal(name: str) -> ValueError:
    return ValueError(
        f"--apply_chat_template is not for {name}: it applies the model's own template itself "
        "(futuremask: the processor's chat template; llava_futuremask: conv_template=...). Drop the flag."
    )


def _called_by_response_cache() -> bool:
    """Whether lmms-eval's response cache (``--use_cache``) is the caller: it keys what it stores on each
    request's context, read after the model returns."""
    frame = sys._getframe(2)
    for _ in range(8):
        if frame is None:
            return False
        if type(frame.f_locals.get("self")).__name__ == "ResponseCache":
            return True
        frame = frame.f_back
    return False


def _system_instruction(context: str, doc: dict[str, Any], where: str) -> str | None:
    """The ``--system_instruction`` lmms-eval put before a MileBench doc's official prompt (None if none). The
    protocol rebuilds the prompt from the doc, so any other change to the task's context is refused."""
    official = full_prompt(doc)
    if context == official:
        return None
    if context.endswith(official):
        return context[: -len(official)]
    raise ValueError(
        f"{where}: the task's context is not MileBench's official prompt; the MileBench protocol rebuilds the "
        "prompt from the doc (truncated for the model), and only --system_instruction can be added to it"
    )


def known_tasks_check() -> Callable[[str], bool]:
    """Whether lmms-eval can run a task of a given name: ours from the catalog, any other from the task index of
    the lmms-eval run creating this model (its ``--include_path`` folders included), else lmms-eval's own index,
    built at most once per check (only when a name is not ours)."""
    from lmms_futuremask.milebench.catalog import BY_TASK_NAME, TASK_FOLDER

    manager = _evaluator_setting("task_manager")

    @functools.cache
    def subtasks() -> frozenset[str]:
        from lmms_eval.tasks import TaskManager

        return frozenset((manager or TaskManager(include_path=str(TASK_FOLDER))).all_subtasks)

    def is_known(name: str) -> bool:
        if name.startswith("milebench"):  # our names: no need for lmms-eval's index
            return name in BY_TASK_NAME
        return name in subtasks()

    return is_known


def routing_of(args: dict[str, Any]) -> Routing | None:
    """The routing file of ``routing=`` checked (file, variants, tasks, the backend for each mode), or None."""
    if not args["routing"]:
        return None
    routing = load_routing(args["routing"], known_tasks_check())
    for mode, _merge in routing.tasks.values():
        check_backend(args["attn_implementation"], mode)
    logger.info(f"routing {routing.path}: {describe(routing)}; other tasks: mode={args['mode']} merge={args['merge']}")
    return routing


class FutureMaskLMM(lmms):
    """The shared lmms-eval model: a subclass sets ``NAME`` and ``ARGS`` and implements ``load`` and ``protocol``."""

    is_simple = True
    NAME = "futuremask"
    ARGS: ClassVar[dict[str, Arg]] = {}
    VIDEOS = False  # whether video files are decoded for this model

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        route_library_logs()
        args = parse_model_args(model_args, self.ARGS)  # before anything heavy
        self.routing = routing_of(args)  # read and checked before anything heavy too
        from accelerate import Accelerator

        accelerator = Accelerator()
        device = args["device"]
        if accelerator.num_processes > 1 and not args["device_map"]:
            device = f"cuda:{accelerator.local_process_index}" if accelerator.device.type == "cuda" else "cpu"
        self.args = args
        self._ignored: set[str] = set()
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
            prefetch=args["prefetch"] if args["prefetch"] is not None else int(self.vlm.device.type != "cpu"),
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
        if _evaluator_setting("apply_chat_template"):
            raise _chat_template_refusal(cls.NAME)
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

    @property
    def chat_template(self):
        """Refused: lmms-eval's ``--apply_chat_template`` would render the prompt before the model renders it again
        (also refused in :meth:`create_from_arg_string`, before the model loads)."""
        raise _chat_template_refusal(self.NAME)

    def apply_chat_template(self, chat_history):  # noqa: ARG002 - lmms-eval's signature
        """Refused, see :attr:`chat_template`."""
        return self.chat_template

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answers of lmms-eval ``generate_until`` requests (error answers for failed samples), with token counts.

        The request's logged context (``--log_samples``' ``input``) becomes the prompt the model was fed, except
        under ``--use_cache``, whose keys hash that context after this returns.
        """
        answers = self.runner.generate([self._request(r, "generate") for r in requests])
        keep_context = _called_by_response_cache()
        results = []
        for request, answer in zip(requests, answers, strict=True):
            if not is_error_answer(answer.text):
                self.cache_hook.add_partial("generate_until", request.args[:2], answer.text)
            if answer.prompt and not keep_context:
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
                system = _system_instruction(context, doc, where)
                sample = self.milebench.sample(doc, f"{where} (sample {doc['sample_id']})", system)
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
            variant=self.routing.variant_for(task) if self.routing else None,
        )

    def _frames_as_video(self, images: list[Any]) -> bool:
        return bool(self.args.get("frames_as_video")) and len(images) > 1

    def _settings(self, gen_kwargs: dict, milebench: bool = False) -> GenerationSettings:
        settings, ignored = GenerationSettings.from_kwargs(
            gen_kwargs,
            max_new_tokens=self.args["max_new_tokens"],
            cache_implementation=self.cache_implementation,
            stop_token_ids=self.milebench.stop_token_ids if milebench else None,
        )
        new = [key for key in ignored if key not in self._ignored]
        if new and self._rank == 0:
            logger.warning(f"{self.NAME}: generation kwargs {new} are not generation settings and are ignored")
        self._ignored.update(new)
        return settings
