"""Requests in, answers out: caching, batching, and the failure policy, once for every harness adapter.

An adapter (the lmms-eval models in ``model_wrappers/``) only translates its harness's requests into
:class:`Request` objects and the answers back. Everything else happens here:

* answers found in the :class:`~lmms_futuremask.runtime.answer_cache.AnswerCache` are reused, the rest computed;
* requests that share generation settings are batched, longest prompt first (estimated without opening images),
  so padding stays low; a batch's samples are loaded (images opened and preprocessed) shortly before it runs: with
  ``prefetch=N`` a worker thread loads the next ``N`` batches while the model works on the current one (the VLM's
  ``host_lock`` keeps tokenizer and processor calls of the two threads apart; loading is deterministic, so answers
  do not depend on it);
* a failure is its sample's: a batch that fails is retried one sample at a time, a sample that still fails gets an
  error answer (``on_error="record"``, visible in results, never stored in the cache, so a rerun retries it) or stops
  the run (``on_error="raise"``);
* a run that computed nothing is not a result: when the first sample to fail at the model fails before any has
  succeeded, a probe (one tiny prompt) decides whether the *model* fails as a whole, and if so the run stops at once
  with the reason; and a pass in which every sample failed raises instead of returning error answers.
  :class:`~lmms_futuremask.runtime.errors.RunFailed` reaches the harness, so lmms-eval writes no results file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..validation import check_choice
from .answer_cache import AnswerCache, request_key
from .errors import ERROR_MARKER, RunFailed, SampleError, is_error_answer
from .progress import ProgressFile
from .vlm import VLM, Generation, GenerationSettings, Sample

logger = logging.getLogger("lmms_futuremask")

ON_ERROR = ("record", "raise")
T = TypeVar("T")

#: The score of a continuation whose sample failed: no option can be preferred because of a failure.
FAILED_SCORE = (float("-inf"), False)


@dataclass
class Request:
    """One harness request, independent of the harness.

    ``options`` is what the answer depends on besides the prompt: the generation kwargs (``kind="generate"``) or
    the continuation to score (``kind="loglikelihood"``; None when the continuation is computed per doc and so not
    cacheable). ``load`` builds the :class:`Sample` (opening its images) and raises for a bad sample; ``data`` is the
    identity of the files or dataset the sample comes from (part of the cache key).
    """

    kind: str
    task: str
    doc_id: int
    context: str
    options: Any
    load: Callable[[], tuple[Sample, Any]]
    data: Any = None
    n_images: int = 0  # placeholders visible in ``context`` (for the length estimate; images are not opened)
    settings: GenerationSettings | None = None
    variant: tuple[str, str] | None = None  # (mode, merge) of a routed task; None: the model's own

    @property
    def where(self) -> str:
        """``task <task> doc <id>``: how errors and logs name the request."""
        return f"task {self.task} doc {self.doc_id}"


def _from_cache(kind: str, value: Any) -> tuple[Any, Sequence[str]]:
    """A cached answer back in the runner's form, with its sample's protocol notes (a bare string is an answer
    stored without its prompt)."""
    if kind == "loglikelihood":
        return tuple(value), ()
    if isinstance(value, str):
        return Generation(value), ()
    fields = {k: v for k, v in value.items() if k != "notes"}
    return Generation(**fields), value.get("notes", ())


def _to_cache(result: Any, notes: Sequence[str]) -> Any:
    """What the cache stores for an answer: the generation's fields and its sample's protocol notes (so a resumed
    run counts them too), or a score pair as it is."""
    if not isinstance(result, Generation):
        return result
    return asdict(result) | ({"notes": list(notes)} if notes else {})


class Runner:
    """Runs requests through a :class:`VLM` under one failure policy and one answer cache."""

    def __init__(
        self,
        vlm: VLM,
        batch_size: int = 1,
        on_error: str = "record",
        answer_cache: AnswerCache | None = None,
        label: str = "futuremask",
        show_progress: bool = True,
        prefetch: int = 1,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 (batches loaded ahead; 0: off), got {prefetch}")
        self.vlm = vlm
        self.batch_size = batch_size
        self.prefetch = prefetch
        self._host_lock = getattr(vlm, "host_lock", None) or threading.RLock()  # a VLM's, or our own for stand-ins
        self.on_error = check_choice("on_error", on_error, ON_ERROR)
        self.answer_cache = answer_cache
        self.label = label
        self.show_progress = show_progress
        self.failures: list[str] = []
        self.notes: Counter[str] = Counter()  # protocol quirks of a pass's samples (e.g. MileBench placeholders)
        self._model_ok = False  # set once a sample succeeded or the probe passed
        #: Seconds spent loading samples (in either thread) and waiting for them on the main thread, for the bench.
        self.load_seconds = 0.0
        self.load_wait_seconds = 0.0

    # -- public ----------------------------------------------------------------------------------------------------

    def generate(self, requests: list[Request]) -> list[Generation]:
        """One answer per request, in order: cached, generated, or an error answer (its text starts with
        :data:`~lmms_futuremask.runtime.errors.ERROR_MARKER`)."""
        return self._run(requests, self._generate_batch, self._error_answer)

    def loglikelihood(self, requests: list[Request]) -> list[tuple[float, bool]]:
        """``(log-prob, is_greedy)`` per request, in order; a failed sample scores ``(-inf, False)``."""
        return self._run(requests, self._score_batch, lambda _request, _error: FAILED_SCORE)

    # -- the loop --------------------------------------------------------------------------------------------------

    def _run(self, requests: list[Request], compute, failed_value) -> list[Any]:
        from tqdm import tqdm

        answers: list[Any] = [None] * len(requests)
        keys = [self._key(r) for r in requests]
        todo = []
        for index, key in enumerate(keys):
            cached = None if key is None else self.answer_cache.get(key)
            if cached is None:
                todo.append(index)
            else:
                answers[index], notes = _from_cache(requests[index].kind, cached)
                self.notes.update(notes)
        kind = requests[0].kind if requests else ""
        bar = tqdm(total=len(todo), disable=not self.show_progress, desc=f"{self.label} {kind}")
        progress = ProgressFile(kind, len(todo), len(requests) - len(todo)) if self.show_progress else None
        for batch, loaded in self._loaded_batches(list(self._batches(todo, requests)), requests):
            self._run_batch(batch, loaded, requests, keys, answers, compute, failed_value)
            bar.update(len(batch))
            if progress is not None:
                progress.advance(len(batch))
        bar.close()
        self._report(answers)
        return answers

    def _loaded_batches(self, batches: list[list[int]], requests: list[Request]):
        """``(batch, its loaded samples)`` in order; with ``prefetch`` > 0 the next batches load in a worker thread
        while the caller runs the current one."""
        if self.prefetch == 0 or len(batches) < 2:
            for batch in batches:
                start = time.perf_counter()
                loaded = self._load(batch, requests)
                self.load_wait_seconds += time.perf_counter() - start
                yield batch, loaded
            return
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="futuremask-load")
        ahead: deque[Future] = deque()
        try:
            for position, batch in enumerate(batches):
                while len(ahead) <= self.prefetch and position + len(ahead) < len(batches):
                    ahead.append(pool.submit(self._load, batches[position + len(ahead)], requests))
                start = time.perf_counter()
                loaded = ahead.popleft().result()
                self.load_wait_seconds += time.perf_counter() - start
                yield batch, loaded
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _load(self, batch: list[int], requests: list[Request]) -> dict[int, Any]:
        """Each request's ``load()`` result, or the exception it raised (handled by the main thread)."""
        start = time.perf_counter()
        loaded: dict[int, Any] = {}
        for index in batch:
            with self._host_lock:
                try:
                    loaded[index] = requests[index].load()
                except Exception as error:  # noqa: BLE001 - an unreadable sample is that sample's failure
                    loaded[index] = error
        self.load_seconds += time.perf_counter() - start
        return loaded

    def _run_batch(self, batch, loaded, requests, keys, answers, compute, failed_value) -> None:
        """Run a batch's samples that loaded, store the answers; those that did not load fail here."""
        for index in batch:
            if isinstance(loaded[index], Exception):
                answers[index] = self._fail(requests[index], loaded.pop(index), failed_value)
            else:
                self.notes.update(loaded[index][0].notes)
        ready = [i for i in batch if i in loaded]
        results = self._isolated(ready, lambda part: compute([loaded[i] for i in part], requests[part[0]]))
        for index, result in zip(ready, results, strict=True):
            if isinstance(result, BaseException):
                answers[index] = self._fail(requests[index], result, failed_value)
            else:
                answers[index] = result
                if keys[index] is not None:
                    self.answer_cache.put(keys[index], _to_cache(result, loaded[index][0].notes))

    def _key(self, request: Request) -> str | None:
        """The answer cache key; None where an answer must not be reused (no cache, a continuation computed per
        doc, or a sampled generation, which a rerun draws again)."""
        if self.answer_cache is None or (request.kind == "loglikelihood" and request.options is None):
            return None
        if request.settings is not None and request.settings.do_sample:
            return None
        options = request.options if request.variant is None else [request.options, list(request.variant)]
        return request_key(request.kind, request.task, request.doc_id, request.context, options, request.data)

    def _batches(self, indices: list[int], requests: list[Request]) -> Iterator[list[int]]:
        """Requests that share generation settings and variant, longest first, ``batch_size`` at a time."""
        groups: dict[tuple[str, Any], list[int]] = {}
        for index in indices:
            groups.setdefault((repr(requests[index].settings), requests[index].variant), []).append(index)
        for group in groups.values():
            ordered = sorted(group, key=lambda i: -self.vlm.estimated_length(requests[i].context, requests[i].n_images))
            for start in range(0, len(ordered), self.batch_size):
                yield ordered[start : start + self.batch_size]

    def _generate_batch(self, loaded: list[tuple[Sample, Any]], first: Request) -> list[Generation]:
        self.vlm.use_variant(first.variant)
        return self.vlm.generate_batch([sample for sample, _ in loaded], first.settings)

    def _score_batch(self, loaded: list[tuple[Sample, Any]], first: Request) -> list[tuple[float, bool]]:
        self.vlm.use_variant(first.variant)
        scores = self.vlm.score_batch([sample for sample, _ in loaded], [c for _, c in loaded])
        return [(score.logprob, score.is_greedy) for score in scores]

    # -- failures --------------------------------------------------------------------------------------------------

    def _isolated(self, indices: list[int], run: Callable[[list[int]], list[T]]) -> list[T | BaseException]:
        """Run a batch; if it fails, run its samples one by one, so only the failing ones get their exception."""
        if not indices:
            return []
        try:
            results = run(indices)
        except SampleError:
            raise
        except Exception as error:  # noqa: BLE001 - any model or data error is isolated to its sample
            if len(indices) == 1:
                self._check_model(error)
                return [error]
            logger.warning("a batch of %d failed (%s); retrying its samples one by one", len(indices), error)
            return [self._isolated([index], run)[0] for index in indices]
        self._model_ok = True
        return results

    def _check_model(self, error: BaseException) -> None:
        """Before any sample has succeeded, a failure may be the model's: probe it, and stop the run if so."""
        if self._model_ok:
            return
        try:
            self.vlm.probe()
        except Exception as probe_error:
            raise RunFailed(
                f"{self.label}: the model fails as a whole, not one sample: {type(probe_error).__name__}: "
                f"{probe_error} (the first sample failed with {type(error).__name__}: {error}). "
                "No results are written; fix the model_args (device, dtype, attn_implementation, ...) and rerun."
            ) from probe_error
        self._model_ok = True

    def _fail(self, request: Request, error: BaseException, failed_value: Callable) -> Any:
        """Record one failed request (or raise under ``on_error="raise"``); returns its answer."""
        message = f"{request.where}: {type(error).__name__}: {error}"
        if self.on_error == "raise":
            raise SampleError(message) from error
        logger.error("sample failed, recorded as an error answer: %s", message)
        self.failures.append(message)
        return failed_value(request, error)

    @staticmethod
    def _error_answer(request: Request, error: BaseException) -> Generation:
        return Generation(f"{ERROR_MARKER} {request.where}: {type(error).__name__}: {error}")

    def _report(self, answers: list[Any]) -> None:
        """Log the cache and failure summary; raise if every request of the pass failed."""
        if self.answer_cache is not None:
            logger.info("%s: %s", self.label, self.answer_cache.summary())
        notes, self.notes = self.notes, Counter()
        for note, count in notes.items():
            logger.warning("%s: %d sample(s): %s", self.label, count, note)
        failures, self.failures = self.failures, []
        if not failures:
            return
        logger.error(
            "%s: %d sample(s) failed and were recorded as error answers (on_error=raise stops at the first instead):"
            "\n  %s",
            self.label,
            len(failures),
            "\n  ".join(failures),
        )
        failed = sum(1 for a in answers if a == FAILED_SCORE or (isinstance(a, Generation) and is_error_answer(a.text)))
        if failed == len(answers):
            raise RunFailed(
                f"{self.label}: every sample failed ({failed} of {len(answers)}); no results are written. "
                f"First failure: {failures[0]}"
            )
