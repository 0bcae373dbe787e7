"""Run several variants through the real lmms-eval CLI, one after another, resumably.

Each variant gets its own folder: ``<out>/<variant>/`` with lmms-eval's outputs (``lmms-eval/``), its log, the
per-sample answer cache (``answer_cache/``) and, once finished, ``COMPLETE`` (the exact run it completed). A rerun
skips complete variants and resumes a partial one from its answer cache: no finished sample is computed twice.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..attention.variants import variant_model_args
from .evalrun import run_lmms_eval, scores_of


@dataclass
class VariantRun:
    variant: str
    folder: Path
    skipped: bool
    seconds: float
    scores: dict[str, dict[str, float]]


def _run_record(model_args: str, tasks: str, extra: list[str]) -> dict:
    return {"model_args": model_args, "tasks": tasks, "extra": extra}


def run_sweep(
    variants: list[str],
    tasks: str,
    model_args: str,
    output_root: str | Path,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    log=print,
) -> list[VariantRun]:
    """Evaluate every variant (``MODE`` or ``MODE+merge``) with ``model_args`` (no mode/merge in it) on ``tasks``."""
    if any(part.split("=")[0] in ("mode", "merge") for part in model_args.split(",")):
        raise ValueError("--model-args must not set mode or merge: the variants do")
    root = Path(output_root)
    extra = list(extra or [])
    runs = []
    for number, variant in enumerate(variants, 1):
        folder = root / variant
        folder.mkdir(parents=True, exist_ok=True)
        args = f"{model_args},{variant_model_args(variant)},answer_cache={folder / 'answer_cache'}"
        record = _run_record(args, tasks, extra)
        marker = folder / "COMPLETE"
        prefix = f"[sweep {number}/{len(variants)}] {variant}"
        if marker.exists() and json.loads(marker.read_text()).get("run") == record:
            log(f"{prefix}: complete, skipped ({folder})")
            results = json.loads(marker.read_text())["results_file"]
            runs.append(VariantRun(variant, folder, True, 0.0, scores_of(results)))
            continue
        log(f"{prefix}: running (log: {folder / 'lmms-eval.log'})")
        start = time.perf_counter()
        results = run_lmms_eval(args, tasks, folder / "lmms-eval", folder / "lmms-eval.log", extra, env)
        seconds = time.perf_counter() - start
        marker.write_text(json.dumps({"run": record, "results_file": str(results)}, indent=1))
        scores = scores_of(results)
        log(f"{prefix}: done in {seconds:.0f} s, {_headline(scores)}")
        runs.append(VariantRun(variant, folder, False, seconds, scores))
    return runs


def _headline(scores: dict[str, dict[str, float]]) -> str:
    groups = {task: metrics["score"] for task, metrics in scores.items() if "score" in metrics and len(metrics) == 1}
    if groups:
        return ", ".join(f"{task} score {value:.3f}" for task, value in groups.items())
    return f"{len(scores)} task(s)"
