"""``lmms-futuremask``: the project's own subcommands (lmms-eval itself stays the evaluation CLI)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .masks import MODES
from .variants import PAPER_VARIANTS, variant_model_args


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
    """The main job on the embedded default: tiny checkpoint, synthetic data, real lmms-eval CLI, one run per mode."""
    from .milebench.fake import write_fake_milebench
    from .sample_task import GROUP_NAME, write_sample_task
    from .tiny import write_tiny_model

    out = Path(args.out).resolve()
    variants = args.variants.split(",")
    variant_args = {v: variant_model_args(v) for v in variants}
    model_dir = write_tiny_model(out / "tiny-llava")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    extra = []
    if GROUP_NAME in args.tasks:
        extra = ["--include_path", str(write_sample_task(out / "tasks", n_docs=args.docs))]
    if "milebench" in args.tasks:
        env["MILEBENCH_DIR"] = str(write_fake_milebench(out / "MileBench", samples_per_task=args.docs))
    rows = {}
    for variant in variants:
        output_path = out / "results" / variant
        shutil.rmtree(output_path, ignore_errors=True)
        model_args = f"pretrained={model_dir},{variant_args[variant]},device={args.device}"
        model_args += f",max_new_tokens={args.max_new_tokens}"
        command = lmms_eval_command() + [
            "--model", "llava_futuremask",
            "--model_args", model_args,
            "--tasks", args.tasks,
            "--batch_size", str(args.batch_size),
            "--output_path", str(output_path),
            "--log_samples",
        ] + extra  # fmt: skip
        print(f"[demo] {variant}: {' '.join(command)}", flush=True)
        log = out / f"lmms-eval-{variant}.log"
        with open(log, "w") as handle:
            done = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        try:
            rows[variant] = scores_of(find_results_file(output_path))
        except FileNotFoundError:
            print(log.read_text()[-4000:], file=sys.stderr)
            print(f"[demo] lmms-eval failed for {variant} (exit {done.returncode}; log: {log})", file=sys.stderr)
            return done.returncode or 1
    print(format_table(rows))
    print("Scores of a tiny random model on synthetic data: the pipeline is real, the numbers mean nothing.")
    return 0


def _headline_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The metrics worth a table column: per-level splits and bookkeeping left out."""
    skip = re.compile(r"_(few|medium|many)$|^failed_samples$|^samples$")
    kept = {k: v for k, v in metrics.items() if not skip.search(k)}
    if "score" in kept and len(kept) > 1:
        kept.pop("score")
    return kept


def format_table(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    """Tasks (and groups) down, variants across."""
    modes = list(rows)
    keys = sorted(
        {(task, metric) for table in rows.values() for task, ms in table.items() for metric in _headline_metrics(ms)}
    )
    lines = ["| task | metric | " + " | ".join(modes) + " |", "|---|---|" + "---|" * len(modes)]
    for task, metric in keys:
        cells = [f"{rows[m].get(task, {}).get(metric, float('nan')):.3f}" for m in modes]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cmd_fake_milebench(args: argparse.Namespace) -> int:
    from .milebench.fake import write_fake_milebench

    root = write_fake_milebench(args.dir, samples_per_task=args.samples, seed=args.seed)
    print(f"synthetic MileBench (29 tasks, {args.samples} samples each) written to {root}; export MILEBENCH_DIR={root}")
    return 0


def cmd_download_milebench(args: argparse.Namespace) -> int:
    from .milebench.data import data_dir
    from .milebench.download import LICENSE_NOTE, PARTS, download_milebench

    parts = PARTS if args.parts is None else tuple(PARTS[int(i)] for i in args.parts.split(","))
    root = data_dir(args.dir)
    print(f"MileBench -> {root}. {LICENSE_NOTE}")
    checks = download_milebench(root, source=args.source, parts=parts, force=args.force, keep_archives=args.keep)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.folder}: {check.detail}")
    failed = [c.folder for c in checks if not c.ok]
    if failed:
        print(f"{len(failed)} task folder(s) incomplete: {', '.join(failed)}. Run the command again to resume.")
        return 1
    print(f"all 29 tasks verified; export MILEBENCH_DIR={root}")
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from .milebench.rescore import format_rescore_table, rescore_logs

    table = rescore_logs(args.log_dir, root=args.data_dir)
    print(format_rescore_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_rows, run_bench, write_outputs

    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    rows = run_bench(
        arch=args.arch,
        variants=tuple(args.variants.split(",")),
        images=ints(args.images),
        batches=ints(args.batches),
        text_tokens=args.text_tokens,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn,
    )
    print("\n" + format_rows(rows, all_rows=rows))
    markdown, table = write_outputs(rows, args.out_dir, "lmms-futuremask " + " ".join(sys.argv[1:]))
    print(f"written: {markdown}, {table}")
    return 0


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

    demo = sub.add_parser("demo", help="the main job: lmms-eval on the tiny checkpoint and synthetic data, per mode")
    demo.add_argument("--out", default="runs/demo")
    demo.add_argument(
        "--variants",
        default=",".join(PAPER_VARIANTS),
        help=f"comma-separated MODE or MODE+merge; modes: {', '.join(MODES)}",
    )
    demo.add_argument("--tasks", default="milebench_paper", help="milebench* tasks/groups and/or futuremask_sample")
    demo.add_argument("--docs", type=int, default=2, help="samples per task in the synthetic data")
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--max-new-tokens", type=int, default=16, help="shortened from the protocol's 512 for speed")
    demo.add_argument("--device", default="cpu")
    demo.set_defaults(func=cmd_demo)

    fake = sub.add_parser("fake-milebench", help="write a synthetic MileBench (all 29 tasks) in the official layout")
    fake.add_argument("dir")
    fake.add_argument("--samples", type=int, default=4, help="samples per task")
    fake.add_argument("--seed", type=int, default=0)
    fake.set_defaults(func=cmd_fake_milebench)

    download = sub.add_parser("download-milebench", help="fetch, extract and verify the official MileBench data")
    download.add_argument("--dir", default=None, help="target folder (default: $MILEBENCH_DIR or the cache folder)")
    download.add_argument("--source", default=None, help="a local folder holding the MileBench_part*.tar.gz files")
    download.add_argument("--parts", default=None, help="comma-separated part numbers (default: 0-5)")
    download.add_argument("--force", action="store_true", help="re-extract parts already done")
    download.add_argument("--keep", action="store_true", help="keep downloaded archives after extraction")
    download.set_defaults(func=cmd_download_milebench)

    from .bench import ARCHS, BENCH_VARIANTS

    bench = sub.add_parser("bench", help="prefill / decode / end-to-end speed and peak memory of every variant")
    bench.add_argument("--arch", default="tiny", choices=list(ARCHS), help="random-weight model built from a config")
    bench.add_argument("--variants", default=",".join(BENCH_VARIANTS))
    bench.add_argument("--images", default="1,4,8", help="images per prompt (576 tokens each)")
    bench.add_argument("--batches", default="1,8")
    bench.add_argument("--text-tokens", type=int, default=200)
    bench.add_argument("--new-tokens", type=int, default=32)
    bench.add_argument("--repeats", type=int, default=3, help="median over this many runs, after a warm-up")
    bench.add_argument("--device", default=None)
    bench.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on the CPU")
    bench.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    bench.add_argument("--out-dir", default="runs/bench")
    bench.set_defaults(func=cmd_bench)

    rescore = sub.add_parser("rescore", help="re-score saved lmms-eval --log_samples MileBench outputs offline")
    rescore.add_argument("log_dir")
    rescore.add_argument("--data-dir", default=None, help="MileBench folder (default: $MILEBENCH_DIR)")
    rescore.add_argument("--json", default=None, help="also write the table as JSON here")
    rescore.set_defaults(func=cmd_rescore)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .milebench.data import MileBenchDataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (MileBenchDataError, FileNotFoundError) as error:
        print(f"lmms-futuremask {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
