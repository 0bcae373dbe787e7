"""Run several variants through the real lmms-eval CLI, one after another, resumably and honestly.

Each variant gets its own folder: ``<out>/<variant>/`` with lmms-eval's outputs (``lmms-eval/``), its log (every
attempt appended), the per-sample answer cache (``answer_cache/``) and a status:

* ``COMPLETE``: the exact run it completed (model_args, tasks, extra arguments, the checkpoint's identity and the
  MileBench data's identity) and its results file, with no failed sample. A rerun skips the variant only if all of
  that is unchanged and the results file is still there.
* ``INCOMPLETE``: the run finished but some samples failed (counted per task). A rerun runs the variant again: its
  finished answers come from the answer cache and exactly the failed samples are computed.

Everything is validated before the first run starts (variants, tasks, model_args, the data folder), one sweep at a
time may write into a folder (a lock), and SIGINT/SIGTERM stop the running lmms-eval child before the sweep exits.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..attention.variants import parse_variant, variant_model_args
from ..runtime.model_args import split_model_args
from ..validation import UserError
from .evalrun import failed_samples, run_lmms_eval, scores_of

COMPLETE, INCOMPLETE = "COMPLETE", "INCOMPLETE"


@dataclass
class VariantRun:
    """What the sweep did with one variant."""

    variant: str
    folder: Path
    status: str  # "skipped" (complete before), "complete", "incomplete" (failed samples), "failed" (no results)
    seconds: float
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)  # task -> failed samples
    error: str = ""


def _expand_tasks(tasks: str) -> list[str]:
    """MileBench task folders named by ``tasks`` (task or group names; other tasks are not MileBench's)."""
    from ..milebench.catalog import BY_TASK_NAME, GROUPS

    folders = []
    for name in tasks.split(","):
        members = GROUPS.get(name) or ([BY_TASK_NAME[name]] if name in BY_TASK_NAME else [])
        folders += [t.folder for t in members if t.folder not in folders]
    return folders


def _include_path(extra: list[str]) -> str | None:
    for flag, value in itertools.pairwise(extra):
        if flag == "--include_path":
            return value
    return None


@functools.cache
def known_tasks(include_path: str | None) -> frozenset[str]:
    """Every task and group name lmms-eval knows, with our tasks and ``include_path`` (indexing takes seconds)."""
    import lmms_eval.models  # noqa: F401 - loads the model entry points, which add our task folder
    from lmms_eval.tasks import TaskManager

    return frozenset(TaskManager(include_path=include_path).all_tasks)


def check_tasks(tasks: str, extra: list[str]) -> None:
    """Every task or group name is known to lmms-eval (with our tasks and any ``--include_path``)."""
    known = known_tasks(_include_path(extra))
    unknown = [t for t in tasks.split(",") if t not in known]
    if unknown:
        raise UserError(
            f"unknown task(s) {', '.join(unknown)}; "
            'lmms-eval tasks list --include-path "$(lmms-futuremask tasks --path)" lists the valid names'
        )


def check_data(tasks: str, env: dict[str, str]) -> None:
    """The MileBench folder holds every MileBench task the sweep will run (all missing ones named at once)."""
    from ..milebench.data import ENV_VAR, MileBenchDataError, data_dir, task_file

    root = data_dir(env.get(ENV_VAR) or os.environ.get(ENV_VAR))
    missing = [f for f in _expand_tasks(tasks) if not task_file(f, root).is_file()]
    if missing:
        raise MileBenchDataError(
            f"{root} lacks {len(missing)} MileBench task(s): {', '.join(missing)}. Run `lmms-futuremask "
            f"download-milebench --dir {root}` or point $MILEBENCH_DIR at a complete copy."
        )


#: Our lmms-eval models (the first is the default).
MODELS = ("llava_futuremask", "futuremask")


def plan(
    variants: list[str], tasks: str, model_args: str, extra: list[str], env: dict[str, str], model: str = MODELS[0]
) -> None:
    """Validate everything a sweep needs before its first run: a typo in the last variant fails now, not hours in."""
    from ..runtime.model_args import MODEL_ARGS, parse_model_args
    from ..validation import check_choice

    try:
        table = MODEL_ARGS[check_choice("--model", model, MODELS, noun="models")]
    except ValueError as error:
        raise UserError(str(error)) from None

    if len(set(variants)) != len(variants):
        duplicates = sorted({v for v in variants if variants.count(v) > 1})
        raise UserError(f"--variants lists {', '.join(duplicates)} more than once")
    args = split_model_args(model_args)
    if {"mode", "merge"} & set(args):
        raise UserError("--model-args must not set mode or merge: the variants do (e.g. --variants future_v2v+merge)")
    for variant in variants:
        try:
            mode, merge = parse_variant(variant)
        except ValueError as error:
            raise UserError(f"--variants: {error}") from None
        parse_model_args({**args, "mode": mode, "merge": merge}, table)
    check_data(tasks, env)
    check_tasks(tasks, extra)


def run_identity(model_args: str, tasks: str, env: dict[str, str]) -> dict:
    """What a finished variant depends on besides its arguments: the checkpoint's and the MileBench data's identity."""
    from ..milebench.data import ENV_VAR, data_identity
    from ..runtime.fingerprint import checkpoint_identity

    args = split_model_args(model_args)
    identity = {"checkpoint": checkpoint_identity(str(args.get("pretrained", "")), args.get("revision"))}
    folders = _expand_tasks(tasks)
    if folders:
        identity["data"] = data_identity(folders, env.get(ENV_VAR) or os.environ.get(ENV_VAR))
    return identity


@contextlib.contextmanager
def sweep_lock(root: Path) -> Iterator[None]:
    """One sweep per output folder at a time."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".sweep.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise UserError(
                f"another sweep is writing into {root} (pid {handle.read().strip() or '?'}); wait for it to "
                "finish or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _completed(folder: Path, record: dict) -> dict | None:
    """The COMPLETE record of ``folder`` if it is for exactly this run and its results file still exists."""
    marker = folder / COMPLETE
    if not marker.exists():
        return None
    done = json.loads(marker.read_text())
    if done.get("run") != record or not Path(done.get("results_file", "")).is_file():
        return None
    return done


def run_sweep(
    variants: list[str],
    tasks: str,
    model_args: str,
    output_root: str | Path,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
    run: Callable[..., Path] = run_lmms_eval,
    model: str = MODELS[0],
    progress_every: float = 60.0,
) -> list[VariantRun]:
    """Evaluate every variant (``MODE`` or ``MODE+merge``) with ``model_args`` (no mode/merge in it) on ``tasks``;
    a running variant's progress is logged every ``progress_every`` seconds."""
    root, extra, env = Path(output_root), list(extra or []), dict(env or {})
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a folder")
    plan(variants, tasks, model_args, extra, env, model)
    runs = []
    with sweep_lock(root):
        for number, variant in enumerate(variants, 1):
            prefix = f"[sweep {number}/{len(variants)}] {variant}"
            runs.append(
                _run_variant(variant, prefix, root, tasks, model_args, extra, env, log, run, model, progress_every)
            )
    return runs


def _run_variant(variant, prefix, root, tasks, model_args, extra, env, log, run, model, every) -> VariantRun:
    folder = root / variant
    folder.mkdir(parents=True, exist_ok=True)
    args = f"{model_args},{variant_model_args(variant)},answer_cache={folder / 'answer_cache'}"
    record = {"model": model, "model_args": args, "tasks": tasks, "extra": extra, **run_identity(args, tasks, env)}
    done = _completed(folder, record)
    if done is not None:
        log(f"{prefix}: complete, skipped ({folder})")
        return VariantRun(variant, folder, "skipped", 0.0, scores_of(done["results_file"]))
    log(f"{prefix}: running (log: {folder / 'lmms-eval.log'})")
    (folder / COMPLETE).unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        results = run(
            args,
            tasks,
            folder / "lmms-eval",
            folder / "lmms-eval.log",
            extra,
            env,
            model=model,
            progress=lambda text: log(f"{prefix}: {text}"),
            progress_every=every,
        )
    except RuntimeError as error:
        log(f"{prefix}: FAILED, no results written: {failure_reason(str(error))} (see {folder / 'lmms-eval.log'})")
        return VariantRun(variant, folder, "failed", time.perf_counter() - start, error=str(error))
    seconds = time.perf_counter() - start
    record |= run_identity(args, tasks, env)  # a hub checkpoint is in the local cache now: its commit is known
    scores, failed = scores_of(results), {t: n for t, n in failed_samples(results).items() if n}
    status = {"run": record, "results_file": str(results), "failed_samples": failed}
    if failed:
        (folder / INCOMPLETE).write_text(json.dumps(status, indent=1))
        counts = ", ".join(f"{task} {n}" for task, n in failed.items())
        log(
            f"{prefix}: done in {seconds:.0f} s with {sum(failed.values())} failed sample(s) ({counts}); "
            f"{_headline(scores)}. Not complete: rerun to retry exactly the failed samples"
        )
        return VariantRun(variant, folder, "incomplete", seconds, scores, failed)
    (folder / INCOMPLETE).unlink(missing_ok=True)
    (folder / COMPLETE).write_text(json.dumps(status, indent=1))
    log(f"{prefix}: done in {seconds:.0f} s, 0 failed samples, {_headline(scores)}")
    return VariantRun(variant, folder, "complete", seconds, scores)


def failure_reason(log_tail: str) -> str:
    """The line of a failed run's log that says why (the last one naming an error), shortened for one line."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"Error\b|RunFailed|error:", line)]
    reason = (errors or lines or ["no output"])[-1]
    return reason if len(reason) <= 300 else reason[:297] + "..."


def _headline(scores: dict[str, dict[str, float]]) -> str:
    groups = {task: metrics["score"] for task, metrics in scores.items() if "score" in metrics and len(metrics) == 1}
    if groups:
        return ", ".join(f"{task} score {value:.3f}" for task, value in groups.items())
    return f"{len(scores)} task(s)"
