"""``llava_futuremask``: LLaVA (and other HF VLMs keyed by ``image_token_id``) with a future-aware prefill mask.

A thin lmms-eval adapter: requests become :class:`lmms_futuremask.runtime.runner.Sample` objects; masks, batching,
scoring and the error policy live in the library.
"""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator
from lmms_eval import utils
from lmms_eval.api.instance import GenerationResult, Instance
from lmms_eval.api.model import lmms
from loguru import logger
from tqdm import tqdm

from lmms_futuremask.milebench.prompt import DEFAULT_CONTEXT_LEN, ProtocolSettings, is_milebench_doc, protocol_inputs
from lmms_futuremask.milebench.prompt import DEFAULT_TEMPLATE as MILEBENCH_TEMPLATE
from lmms_futuremask.runtime.answer_cache import AnswerCache, request_key
from lmms_futuremask.runtime.prompting import DEFAULT_CONV_TEMPLATE
from lmms_futuremask.runtime.runner import ERROR_MARKER, GenerationSettings, Sample, VLMRunner

DEFAULT_PRETRAINED = "llava-hf/llava-1.5-7b-hf"


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


def _where(task: str, doc_id: int) -> str:
    return f"task {task} doc {doc_id}"


def _check_images(images: list[Any]) -> list[Any]:
    from PIL import Image

    for image in images:
        if not isinstance(image, Image.Image):
            raise TypeError(f"llava_futuremask takes PIL images; doc_to_visual returned a {type(image).__name__}")
    return [image.convert("RGB") for image in images]


class LlavaFutureMask(lmms):
    """lmms-eval model: ``--model llava_futuremask --model_args pretrained=...,mode=future_v2v``."""

    is_simple = True

    def __init__(
        self,
        pretrained: str = DEFAULT_PRETRAINED,
        mode: str = "original",
        merge: str = "none",
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | None = None,
        attn_implementation: str = "sdpa",
        batch_size: int | str = 1,
        conv_template: str = "auto",
        max_new_tokens: int | None = None,
        milebench_context_len: int = DEFAULT_CONTEXT_LEN,
        milebench_image_tokens: int | None = None,
        milebench_pad_square: bool = True,
        on_error: str = "record",
        answer_cache: str | None = None,
        cache_implementation: str | None = None,
        revision: str = "main",
        trust_remote_code: bool = False,
        max_batch_size: int | None = None,
        **merge_options: Any,
    ) -> None:
        super().__init__()
        accelerator = Accelerator()
        if accelerator.num_processes > 1 and not device_map:
            device = f"cuda:{accelerator.local_process_index}" if accelerator.device.type == "cuda" else "cpu"
        self.runner = VLMRunner.from_pretrained(
            str(pretrained),
            mode=mode,
            merge=merge,
            dtype=dtype,
            device=device,
            device_map=device_map,
            attn_implementation=attn_implementation,
            conv_template=DEFAULT_CONV_TEMPLATE if conv_template == "auto" else conv_template,
            on_error=on_error,
            revision=revision,
            trust_remote_code=trust_remote_code,
            **merge_options,
        )
        self.accelerator = accelerator
        self._rank = accelerator.process_index
        self._world_size = accelerator.num_processes
        self.batch_size_per_gpu = int(batch_size)
        self.max_new_tokens = None if max_new_tokens is None else int(max_new_tokens)
        self.cache_implementation = cache_implementation
        self.mode, self.merge = mode, merge
        # MileBench docs get the official protocol; "auto" gives them its llava_llama_2 template.
        self.milebench_template = MILEBENCH_TEMPLATE if conv_template == "auto" else conv_template
        image_mean = getattr(self.runner.processor.image_processor, "image_mean", None)
        self.milebench = ProtocolSettings(
            max_context_len=int(milebench_context_len),
            tokens_per_image=int(milebench_image_tokens or self.runner.tokens_per_image),
            pad_fill=tuple(int(x * 255) for x in image_mean) if milebench_pad_square and image_mean else None,
        )
        self.answer_cache = None
        if answer_cache:
            settings = dict(
                pretrained=str(pretrained), revision=revision, mode=mode, merge=merge, dtype=dtype,
                attn_implementation=attn_implementation, conv_template=conv_template, max_new_tokens=max_new_tokens,
                milebench=self.milebench, milebench_template=self.milebench_template, **merge_options,
            )  # fmt: skip
            self.answer_cache = AnswerCache(answer_cache, settings, rank=self._rank)
        if self._rank == 0:
            logger.info(f"llava_futuremask: {pretrained} mode={mode} merge={merge} batch_size={batch_size}")

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> LlavaFutureMask:
        """Values in ``--model_args`` win over the CLI's injected ``--batch_size``/``--device`` defaults."""
        args = utils.simple_parse_args_string(arg_string)
        injected = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**injected, **args)

    @property
    def model(self):
        return self.runner.model

    @property
    def tokenizer(self):
        return self.runner.tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self.runner.device

    # -- requests -> samples ---------------------------------------------------------------------------------------

    def _sample(self, context: str, doc_to_visual, doc_id: int, task: str, split: str) -> Sample:
        where = _where(task, doc_id)
        doc = self.task_dict[task][split][doc_id]
        if is_milebench_doc(doc):
            text, images = protocol_inputs(doc, self.tokenizer, self.milebench)
            return Sample(text, images, f"{where} (sample {doc['sample_id']})", self.milebench_template)
        return Sample(context, _check_images(_flatten(doc_to_visual(doc))), where)

    def _settings(self, gen_kwargs: dict) -> GenerationSettings:
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
        )

    def _length(self, request: Instance) -> int:
        """Estimated prompt tokens (text + visual) for length-aware batching, without opening any image."""
        return self.runner.estimated_length(request.args[0], request.args[0].count("<image>"))

    def _batches(self, indices: list[int], requests: list[Instance]):
        """Longest first, ``batch_size`` at a time: similar lengths share a batch, so padding stays low."""
        ordered = sorted(indices, key=lambda i: -self._length(requests[i]))
        for start in range(0, len(ordered), self.batch_size):
            yield ordered[start : start + self.batch_size]

    def _fail(self, request: Instance, error: BaseException) -> str:
        """Record a request that failed before reaching the model; returns its error answer."""
        context, _, _, doc_id, task, _ = request.args
        return self.runner.fail(Sample(context, where=_where(task, doc_id)), error)

    def _load(self, request: Instance, index: int, failed: dict[int, BaseException]) -> Sample | None:
        """The sample of a request, its images opened now (one batch at a time); a failure is that sample's."""
        context, _, doc_to_visual, doc_id, task, split = request.args
        try:
            return self._sample(context, doc_to_visual, doc_id, task, split)
        except Exception as error:  # noqa: BLE001 - an unreadable sample is that sample's failure
            failed[index] = error
            return None

    def _cache_key(self, kind: str, request: Instance, extra: Any) -> str | None:
        if self.answer_cache is None:
            return None
        context, _, _, doc_id, task, _ = request.args
        return request_key(kind, task, doc_id, context, extra)

    def _cached(self, key: str | None) -> Any | None:
        return None if key is None else self.answer_cache.get(key)

    def _remember(self, key: str | None, answer: Any) -> None:
        if key is not None:
            self.answer_cache.put(key, answer)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        keys = [self._cache_key("generate_until", r, sorted(r.args[1].items())) for r in requests]
        groups: dict[str, list[int]] = {}  # batches share their generation settings
        for index, request in enumerate(requests):
            answers[index] = self._cached(keys[index])
            if answers[index] is None:
                groups.setdefault(repr(sorted(request.args[1].items())), []).append(index)
        pbar = tqdm(total=len(requests), disable=self._rank != 0, desc="llava_futuremask generate")
        for indices in groups.values():
            settings = self._settings(requests[indices[0]].args[1])
            for batch in self._batches(indices, requests):
                failed: dict[int, BaseException] = {}
                loaded = {i: self._load(requests[i], i, failed) for i in batch}
                for index, error in failed.items():
                    answers[index] = self._fail(requests[index], error)
                ready = [i for i in batch if loaded[i] is not None]
                for index, text in zip(ready, self.runner.generate([loaded[i] for i in ready], settings)):
                    answers[index] = text
                    if not text.startswith(ERROR_MARKER):
                        self._remember(keys[index], text)
                    self.cache_hook.add_partial("generate_until", requests[index].args[:2], text)
                pbar.update(len(batch))
        pbar.close()
        self._report_failures()
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[GenerationResult]:
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        keys = [
            self._cache_key("loglikelihood", r, r.args[1] if isinstance(r.args[1], str) else None) for r in requests
        ]
        for index, key in enumerate(keys):
            cached = self._cached(key) if isinstance(requests[index].args[1], str) else None
            results[index] = None if cached is None else tuple(cached)
        todo = [i for i, result in enumerate(results) if result is None]
        pbar = tqdm(total=len(todo), disable=self._rank != 0, desc="llava_futuremask loglikelihood")
        for batch in self._batches(todo, requests):
            failed: dict[int, BaseException] = {}
            ready: list[tuple[int, Sample, str]] = []
            for index in batch:
                sample = self._load(requests[index], index, failed)
                if sample is None:
                    continue
                _, target, _, doc_id, task, split = requests[index].args
                try:
                    doc = self.task_dict[task][split][doc_id]
                    ready.append((index, sample, target if isinstance(target, str) else target(doc)))
                except Exception as error:  # noqa: BLE001
                    failed[index] = error
            for index, error in failed.items():
                self._fail(requests[index], error)
                results[index] = (float("-inf"), False)
            scores = self.runner.loglikelihood([s for _, s, _ in ready], [c for _, _, c in ready]) if ready else []
            for (index, _, _), score in zip(ready, scores):
                results[index] = (score.logprob, score.is_greedy)
                if isinstance(requests[index].args[1], str):
                    self._remember(keys[index], results[index])
            pbar.update(len(batch))
        pbar.close()
        self._report_failures()
        return [GenerationResult(text=_LoglikelihoodPair(pair)) for pair in results]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("llava_futuremask does not run multi-round tasks; use single-round generate tasks")

    def _report_failures(self) -> None:
        if self.answer_cache is not None and self._rank == 0:
            logger.info(f"llava_futuremask: {self.answer_cache.summary()}")
        failures, self.runner.failures = self.runner.failures, []
        if failures:
            logger.error(
                f"llava_futuremask: {len(failures)} sample(s) failed and were recorded as error answers "
                f"(on_error=raise stops at the first instead):\n  " + "\n  ".join(failures)
            )
