"""``lmms-futuremask``: the project's own subcommands (lmms-eval itself stays the evaluation CLI)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .masks import MODES, check_mode


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


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from .tiny import write_tiny_model

    path = write_tiny_model(args.dir, seed=args.seed)
    print(f"tiny LLaVA checkpoint written to {path} (use pretrained={path})")
    return 0


def cmd_sample_task(args: argparse.Namespace) -> int:
    from .sample_task import GROUP_NAME, write_sample_task

    path = write_sample_task(args.dir, n_docs=args.docs)
    print(f"sample tasks written; run with --include_path {path} --tasks {GROUP_NAME}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: tiny checkpoint, sample task, real lmms-eval CLI, one run per mode."""
    from .sample_task import GROUP_NAME, write_sample_task
    from .tiny import write_tiny_model

    out = Path(args.out).resolve()
    modes = [check_mode(m) for m in args.modes.split(",")]
    model_dir = write_tiny_model(out / "tiny-llava")
    task_dir = write_sample_task(out / "tasks", n_docs=args.docs)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    rows = {}
    for mode in modes:
        output_path = out / "results" / mode
        shutil.rmtree(output_path, ignore_errors=True)
        command = lmms_eval_command() + [
            "--model", "llava_futuremask",
            "--model_args", f"pretrained={model_dir},mode={mode},device={args.device}",
            "--tasks", GROUP_NAME,
            "--include_path", str(task_dir),
            "--batch_size", str(args.batch_size),
            "--output_path", str(output_path),
            "--log_samples",
        ]  # fmt: skip
        print(f"[demo] mode={mode}: {' '.join(command)}", flush=True)
        log = out / f"lmms-eval-{mode}.log"
        with open(log, "w") as handle:
            done = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            print(Path(log).read_text()[-4000:], file=sys.stderr)
            print(f"[demo] lmms-eval failed for mode={mode} (log: {log})", file=sys.stderr)
            return done.returncode
        rows[mode] = scores_of(find_results_file(output_path))
    print(format_table(rows))
    print("Scores of a tiny random model on synthetic data: the pipeline is real, the numbers mean nothing.")
    return 0


def format_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    columns = sorted({(task, metric) for table in rows.values() for task, ms in table.items() for metric in ms})
    header = "| mode | " + " | ".join(f"{task} {metric}" for task, metric in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for mode, table in rows.items():
        cells = [f"{table.get(task, {}).get(metric, float('nan')):.3f}" for task, metric in columns]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmms-futuremask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny-model", help="write a deterministic tiny random LLaVA checkpoint (offline)")
    tiny.add_argument("dir")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_tiny_model)

    sample = sub.add_parser("sample-task", help="write the synthetic futuremask_sample lmms-eval tasks")
    sample.add_argument("dir")
    sample.add_argument("--docs", type=int, default=12)
    sample.set_defaults(func=cmd_sample_task)

    demo = sub.add_parser("demo", help="run lmms-eval with the tiny checkpoint on the sample tasks, once per mode")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument("--modes", default=",".join(MODES))
    demo.add_argument("--docs", type=int, default=12)
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--device", default="cpu")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
