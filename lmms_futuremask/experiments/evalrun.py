"""Running the real lmms-eval CLI in a subprocess and reading what it wrote (used by demo, sweep and report)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

#: For runs that must not touch a hub (the demo on the embedded tiny checkpoint, tests).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def lmms_eval_command() -> list[str]:
    """The real lmms-eval CLI of this environment (its console script, else ``python -m lmms_eval``)."""
    script = Path(sys.executable).with_name("lmms-eval")
    if script.exists():
        return [str(script)]
    found = shutil.which("lmms-eval")
    return [found] if found else [sys.executable, "-m", "lmms_eval"]


def find_results_file(output_path: str | Path) -> Path:
    """The newest ``*_results.json`` lmms-eval wrote under ``output_path``."""
    files = sorted(Path(output_path).rglob("*_results.json"), key=lambda p: p.stat().st_mtime)
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


_BOOKKEEPING = re.compile(r"_(few|medium|many)$|^failed_samples$|^samples$")


def headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a table column: per-level splits and bookkeeping left out, ``score`` only if alone."""
    kept = {k: v for k, v in metrics.items() if not _BOOKKEEPING.search(k)}
    if "score" in kept and len(kept) > 1:
        kept.pop("score")
    return kept


def run_lmms_eval(
    model_args: str,
    tasks: str,
    output_path: str | Path,
    log_file: str | Path,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Path:
    """One ``lmms-eval --model llava_futuremask`` run; returns its results file or raises with the log's tail.

    lmms-eval exits 0 even when evaluation fails, so success is judged by the results file it writes.
    """
    command = lmms_eval_command() + [
        "--model", "llava_futuremask",
        "--model_args", model_args,
        "--tasks", tasks,
        "--output_path", str(output_path),
        "--log_samples",
    ] + list(extra or [])  # fmt: skip
    with open(log_file, "w") as handle:
        handle.write(" ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, env={**os.environ, **(env or {})}, stdout=handle, stderr=subprocess.STDOUT)
    try:
        return find_results_file(output_path)
    except FileNotFoundError:
        tail = Path(log_file).read_text()[-3000:]
        raise RuntimeError(f"lmms-eval failed (exit {done.returncode}); log {log_file}:\n{tail}") from None
