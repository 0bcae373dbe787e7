"""The main job on the embedded default: the tiny checkpoint and synthetic data through the real lmms-eval CLI,
one run per variant, then the report (table, significance, pictures) and the task-adaptive selection (held-out
estimate, routing file). Nothing is downloaded."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..attention.variants import variant_model_args
from .evalrun import OFFLINE_ENV, run_lmms_eval
from .report import write_report
from .selection import write_selection


def run_demo(
    out: str | Path,
    variants: list[str],
    tasks: str,
    docs: int = 2,
    batch_size: int = 2,
    max_new_tokens: int = 16,
    device: str = "cpu",
) -> int:
    """Write the tiny checkpoint and the data under ``out``, evaluate every variant, print the report; exit code."""
    from ..milebench.fake import write_fake_milebench
    from ..testing.sample_task import GROUP_NAME, write_sample_task
    from ..testing.tiny import write_tiny_model

    out = Path(out).resolve()
    variant_args = {v: variant_model_args(v) for v in variants}  # an unknown variant fails before any work
    model_dir = write_tiny_model(out / "tiny-llava")
    env, extra = dict(OFFLINE_ENV), ["--batch_size", str(batch_size)]
    if GROUP_NAME in tasks:
        extra += ["--include_path", str(write_sample_task(out / "tasks", n_docs=docs))]
    if "milebench" in tasks:
        env["MILEBENCH_DIR"] = str(write_fake_milebench(out / "MileBench", samples_per_task=docs))
    for variant in variants:
        output_path = out / "results" / variant
        shutil.rmtree(output_path, ignore_errors=True)
        model_args = f"pretrained={model_dir},{variant_args[variant]},device={device},max_new_tokens={max_new_tokens}"
        print(f"[demo] {variant}: lmms-eval --model llava_futuremask --model_args {model_args}", flush=True)
        try:
            run_lmms_eval(model_args, tasks, output_path, out / f"lmms-eval-{variant}.log", extra, env)
        except RuntimeError as error:
            print(f"[demo] {variant}: {error}", file=sys.stderr)
            return 1
    folders = [out / "results" / v for v in variants]
    print(write_report(folders, out / "report"))
    if "original" in variants and len(variants) > 1:
        print(write_selection(folders, out / "select"))
    print("Scores of a tiny random model on synthetic data: the pipeline is real, the numbers mean nothing.")
    return 0
