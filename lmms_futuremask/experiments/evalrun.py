"""Running the real lmms-eval CLI in a subprocess and reading what it wrote (used by demo, sweep and report).

lmms-eval exits 0 after most errors, so a run is judged by its files: a ``*_results.json`` (no results file: the
run failed), its scores, and its failed samples (the ``failed_samples`` metric of MileBench tasks, or answers
recorded as errors in the ``--log_samples`` files of any task).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..runtime.errors import is_error_answer
from ..runtime.progress import PROGRESS_ENV, read_progress

#: For runs that must not touch a hub (the demo on the embedded tiny checkpoint, tests).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def lmms_eval_command() -> list[str]:
    """The real lmms-eval CLI of this environment (its console script, else ``python -m lmms_eval``)."""
    script = Path(sys.executable).with_name("lmms-eval")
    if script.exists():
        return [str(script)]
    found = shutil.which("lmms-eval")
    return [found] if found else [sys.executable, "-m", "lmms_eval"]


def find_results_file(output_path: str | Path, since: float | None = None) -> Path:
    """The newest ``*_results.json`` lmms-eval wrote under ``output_path`` (at or after time ``since``, if given)."""
    files = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
    if since is not None:
        files = [f for f in files if f.stat().st_mtime >= since]
    if not files:
        raise FileNotFoundError(f"lmms-eval wrote no *_results.json under {output_path}")
    return files[-1]


def scores_of(results_file: str | Path) -> dict[str, dict[str, float]]:
    """task -> metric -> value, from an lmms-eval results file (stderr entries left out)."""
    results = json.loads(Path(results_file).read_text())["results"]
    table: dict[str, dict[str, float]] = {}
    for task, metrics in results.items():
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in key:
                table.setdefault(task, {})[key.split(",")[0]] = float(value)
    return table


def sample_files(results_file: str | Path) -> dict[str, Path]:
    """task -> its ``<date>_samples_<task>.jsonl``, written by the same run as ``<date>_results.json``."""
    results_file = Path(results_file)
    prefix = results_file.name.removesuffix("_results.json")
    return {path.stem.split("_samples_", 1)[1]: path for path in results_file.parent.glob(f"{prefix}_samples_*.jsonl")}


def read_samples(path: str | Path) -> list[dict]:
    """The records of a ``--log_samples`` file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def response_of(record: dict) -> object:
    """A --log_samples record's answer: its filtered response (else the raw one), unwrapped from lists."""
    response = record.get("filtered_resps", record.get("resps"))
    while isinstance(response, list) and response:
        response = response[0]
    return response


def failed_samples(results_file: str | Path) -> dict[str, int]:
    """task -> samples that failed: its ``failed_samples`` metric where it reports one (MileBench), else the
    answers recorded as errors in its samples file. Groups are left out; tasks without failures are 0."""
    scores = scores_of(results_file)
    files = sample_files(results_file)
    failed = {}
    for task, metrics in scores.items():
        if "failed_samples" in metrics:
            failed[task] = int(metrics["failed_samples"])
        elif task in files:
            failed[task] = sum(1 for r in read_samples(files[task]) if is_error_answer(response_of(r)))
    return failed


_BOOKKEEPING = re.compile(r"_(few|medium|many)$|^failed_samples$|^samples$")


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a table column: per-level splits and bookkeeping left out, ``score`` only if alone."""
    kept = {k: v for k, v in metrics.items() if not _BOOKKEEPING.search(k)}
    if "score" in kept and len(kept) > 1:
        kept.pop("score")
    return kept


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies (even by SIGKILL), so no orphan keeps
    computing. Elsewhere a no-op."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def _forward_signals(process: subprocess.Popen) -> Iterator[list[int]]:
    """While the child runs, SIGINT/SIGTERM to us go to it too; the signals received are listed."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum, _frame):
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _wait(process: subprocess.Popen, progress_file: Path, progress: Callable[[str], None] | None, every: float) -> None:
    """Wait for the child, reporting its progress now and then; a Ctrl-C while waiting keeps waiting (the signal
    was forwarded to the child, which stops)."""
    last = None
    while True:
        try:
            process.wait(timeout=every if progress is not None else None)
            return
        except subprocess.TimeoutExpired:
            state = read_progress(progress_file)
            if state is not None and (state.kind, state.done, state.total) != last:
                last = (state.kind, state.done, state.total)
                progress(state.describe())
        except KeyboardInterrupt:
            continue


def run_lmms_eval(
    model_args: str,
    tasks: str,
    output_path: str | Path,
    log_file: str | Path,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    model: str = "llava_futuremask",
    progress: Callable[[str], None] | None = None,
    progress_every: float = 60.0,
) -> Path:
    """One ``lmms-eval`` run; returns its results file or raises with the log's tail.

    With ``progress``, it is called every ``progress_every`` seconds with how far the run is (samples done / total,
    elapsed, ETA) whenever that changed, read from the file the child's runner writes (``progress.json`` beside
    the log).

    The log is appended to (an interrupted attempt's log is kept above the next one). SIGINT/SIGTERM received
    meanwhile are forwarded to lmms-eval and waited for, then re-raised here as ``KeyboardInterrupt`` /
    ``SystemExit``; if this process dies otherwise (SIGKILL), Linux sends lmms-eval SIGTERM. No orphan keeps computing
    (and holding a GPU).
    """
    command = [
        *lmms_eval_command(),
        "--model",
        model,
        "--model_args",
        model_args,
        "--tasks",
        tasks,
        "--output_path",
        str(output_path),
        "--log_samples",
        *list(extra or []),
    ]
    start = time.time() - 1  # file times have a coarse resolution on some file systems
    progress_file = Path(log_file).with_name("progress.json")
    progress_file.unlink(missing_ok=True)
    with open(log_file, "a") as handle:
        environment = {**os.environ, **(env or {}), PROGRESS_ENV: str(progress_file)}
        process = subprocess.Popen(
            command, env=environment, stdout=handle, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
        )
        handle.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} lmms-eval pid {process.pid}: {' '.join(command)}\n")
        handle.flush()
        with _forward_signals(process) as received:
            _wait(process, progress_file, progress, progress_every)
    if received:
        if received[0] == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + received[0])
    try:
        return find_results_file(output_path, since=start)
    except FileNotFoundError:
        tail = Path(log_file).read_text()[-3000:]
        raise RuntimeError(f"lmms-eval failed (exit {process.returncode}); log {log_file}:\n{tail}") from None
