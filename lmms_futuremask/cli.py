"""``lmms-futuremask``: the project's own subcommands (lmms-eval itself stays the evaluation CLI).

Parse and dispatch only: each subcommand calls one library function.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .attention.masks import MODES
from .attention.variants import PAPER_VARIANTS
from .validation import UserError

DESCRIPTION = """Future-aware causal masks for VLMs in lmms-eval: tools around the evaluation.

Evaluate with lmms-eval itself, e.g.
  lmms-eval --model llava_futuremask --model_args pretrained=llava-hf/llava-1.5-7b-hf,mode=future_v2v \\
      --tasks milebench
and use these subcommands for the rest: data, sweeps of variants, reports, inspection, benchmarks."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each help text; descriptions keep their line breaks."""


# -- argument types: a bad value is argparse's one-line usage error (exit 2), never a traceback ---------------------


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _counts(text: str) -> tuple[int, ...]:
    try:
        return tuple(_count(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of whole numbers >= 1") from None


def _folder(text: str) -> str:
    if Path(text).expanduser().is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; give a folder (it is created if missing)")
    return text


def _parts(text: str) -> tuple[int, ...]:
    from .milebench.download import PARTS

    numbers = [p.strip() for p in text.split(",")]
    if not all(n.isdigit() and int(n) < len(PARTS) for n in numbers):
        raise argparse.ArgumentTypeError(f"{text!r}: give part numbers 0-{len(PARTS) - 1}, comma-separated")
    return tuple(int(n) for n in numbers)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    """``tiny-model``: write a tiny checkpoint of one family."""
    from .testing.vlms import tiny_vlm, write_tiny_vlm

    tiny_vlm(args.family)  # an unknown family fails here, naming the valid ones
    path = write_tiny_vlm(args.family, args.dir, seed=args.seed)
    print(f"tiny {args.family} checkpoint written to {path} (use pretrained={path})")
    return 0


def cmd_sample_task(args: argparse.Namespace) -> int:
    """``sample-task``: write the synthetic sample tasks."""
    from .testing.sample_task import GROUP_NAME, write_sample_task

    path = write_sample_task(args.dir, n_docs=args.docs)
    print(f"sample tasks written; run with --include_path {path} --tasks {GROUP_NAME}")
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    """``tasks``: list our MileBench tasks, or print their folder."""
    from .milebench.catalog import GROUPS, TASK_FOLDER, TASKS

    if args.path:
        print(TASK_FOLDER)
        return 0
    print("MileBench tasks for lmms-eval (found by --tasks with no flag once lmms-futuremask is installed):")
    for name, members in GROUPS.items():
        print(f"  {name:<24} group of {len(members)} tasks")
    for task in TASKS:
        print(f"  {task.task_name:<36} {task.folder} ({task.category})")
    print('List them with lmms-eval itself: lmms-eval tasks list --include-path "$(lmms-futuremask tasks --path)"')
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``demo``: the main job on the embedded default."""
    from .experiments.demo import run_demo

    return run_demo(
        args.out, args.variants.split(","), args.tasks, args.docs, args.batch_size, args.max_new_tokens, args.device
    )


def cmd_sweep(args: argparse.Namespace) -> int:
    """``sweep``: run variants resumably; exit 1 while a variant is not complete."""
    from .experiments.sweep import run_sweep

    passthrough = args.lmms_eval_args[1:] if args.lmms_eval_args[:1] == ["--"] else args.lmms_eval_args
    runs = run_sweep(
        args.variants.split(","),
        args.tasks,
        args.model_args,
        args.out,
        passthrough,
        model=args.model,
        progress_every=args.progress_every,
    )
    done = [r.variant for r in runs if r.status in ("complete", "skipped")]
    print(f"[sweep] {len(done)} of {len(runs)} variant(s) complete; report with: lmms-futuremask report {args.out}")
    unfinished = [f"{r.variant} ({r.status})" for r in runs if r.status not in ("complete", "skipped")]
    if unfinished:
        print(f"[sweep] not complete: {', '.join(unfinished)}; rerun the same command to retry", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: the comparison table and its pictures."""
    from .experiments.report import write_report

    print(write_report(args.folders, args.out, allow_mismatch=args.allow_mismatch))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    """``select``: a variant per task, its held-out gain, and the routing file."""
    from .experiments.selection import write_selection

    print(write_selection(args.folders, args.out, folds=args.folds, seed=args.seed, allow_mismatch=args.allow_mismatch))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    """``inspect``: attention maps of one prompt per mode."""
    from .experiments.plots import inspect_attention

    for path in inspect_attention(
        args.pretrained, args.prompt, args.image, args.modes.split(","), args.out, args.layer, args.device, args.dtype
    ):
        print(f"written: {path}")
    return 0


def cmd_fake_milebench(args: argparse.Namespace) -> int:
    """``fake-milebench``: synthetic MileBench in the official layout."""
    from .milebench.fake import write_fake_milebench

    root = write_fake_milebench(args.dir, samples_per_task=args.samples, seed=args.seed)
    print(f"synthetic MileBench (29 tasks, {args.samples} samples each) written to {root}; export MILEBENCH_DIR={root}")
    return 0


def cmd_download_milebench(args: argparse.Namespace) -> int:
    """``download-milebench``: fetch, extract and verify; exit 1 while a task is broken."""
    from .milebench.data import data_dir
    from .milebench.download import LICENSE_NOTE, PARTS, download_milebench

    parts = PARTS if args.parts is None else tuple(PARTS[i] for i in args.parts)
    root = data_dir(args.dir)
    print(f"MileBench -> {root}. {LICENSE_NOTE}")
    checks = download_milebench(root, source=args.source, parts=parts, force=args.force, keep_archives=args.keep)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.folder}: {check.detail}")
    failed = [c.folder for c in checks if not c.ok]
    if failed:
        print(
            f"{len(failed)} task folder(s) incomplete: {', '.join(failed)}. Run the command again to repair them "
            "(parts holding a broken task are extracted again); if a task fails right after its part was extracted, "
            "the archive itself is incomplete: add --force to fetch and extract every part afresh."
        )
        return 1
    print(f"all 29 tasks verified; export MILEBENCH_DIR={root}")
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    """``rescore``: score saved MileBench answers again, offline."""
    from .milebench.rescore import format_rescore_table, rescore_logs

    table = rescore_logs(args.log_dir, root=args.data_dir)
    print(format_rescore_table(table))
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench``: time every variant and write the tables."""
    from .experiments.bench import format_rows, run_bench, write_outputs

    rows, weight_bytes = run_bench(
        arch=args.arch,
        variants=tuple(args.variants.split(",")),
        images=args.images,
        batches=args.batches,
        text_tokens=args.text_tokens,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn,
        layers=args.layers,
        vision=args.vision,
    )
    print("\n" + format_rows(rows))
    markdown, table = write_outputs(rows, args.out_dir, "lmms-futuremask " + " ".join(sys.argv[1:]), weight_bytes)
    print(f"written: {markdown}, {table}")
    return 0


def cmd_bench_loading(args: argparse.Namespace) -> int:
    """``bench-loading``: the share of wall time spent loading images, with and without prefetching."""
    from .experiments.bench import environment, format_loading, loading_bench

    width, height = (int(x) for x in args.image_size.lower().split("x"))
    rows = loading_bench(
        arch=args.arch,
        layers=args.layers,
        samples=args.samples,
        image_size=(width, height),
        batch=args.batch,
        new_tokens=args.new_tokens,
        prefetch=tuple(sorted({0, args.prefetch})),
        rounds=args.rounds,
        device=args.device,
    )
    table = format_loading(rows)
    command = "lmms-futuremask " + " ".join(sys.argv[1:])
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(f"Machine: {environment()}\n\nCommand: `{command}`\n\n{table}\n")
        print(f"written: {args.out}")
    return 0


def _bench_model_args(parser: argparse.ArgumentParser, archs) -> None:
    """The random-weight model and device options both benchmarks take."""
    parser.add_argument("--arch", default="tiny", choices=list(archs), help="random-weight model built from a config")
    parser.add_argument(
        "--layers",
        type=int,
        default=None,
        help="decoder layers to build (default: the architecture's); e.g. 2 for real widths on a CPU",
    )
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")


def _subcommand(sub, name: str, summary: str, description: str, func) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=description, formatter_class=_HelpFormatter)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand, each argument with its help and default."""
    parser = argparse.ArgumentParser(prog="lmms-futuremask", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    variants_help = f"comma-separated MODE or MODE+merge; modes: {', '.join(MODES)}"

    p = _subcommand(
        sub,
        "tasks",
        "list the MileBench tasks and groups this plugin adds to lmms-eval",
        "The 29 MileBench tasks and their groups. `lmms-eval tasks list` does not load plugins; pass it our task "
        'folder: lmms-eval tasks list --include-path "$(lmms-futuremask tasks --path)"',
        cmd_tasks,
    )
    p.add_argument("--path", action="store_true", help="print only the task folder (for --include-path)")

    p = _subcommand(
        sub,
        "demo",
        "the main job: every variant on the tiny checkpoint and synthetic data, then the report",
        "Writes a tiny random LLaVA checkpoint and synthetic data under --out, runs the real lmms-eval CLI once per "
        "variant (offline) and writes the report. The pipeline is real; a random model's numbers mean nothing.",
        cmd_demo,
    )
    p.add_argument("--out", default="runs/demo", help="folder for the checkpoint, data, results and report")
    p.add_argument("--variants", default=",".join(PAPER_VARIANTS), help=variants_help)
    p.add_argument("--tasks", default="milebench_paper", help="milebench* tasks/groups and/or futuremask_sample")
    p.add_argument("--docs", type=int, default=2, help="samples per task in the synthetic data")
    p.add_argument("--batch-size", type=int, default=2, help="prompts per forward")
    p.add_argument("--max-new-tokens", type=int, default=16, help="answer length (the protocol's 512, cut for speed)")
    p.add_argument("--device", default="cpu", help="torch device of the runs")

    p = _subcommand(
        sub,
        "sweep",
        "run variants through lmms-eval one after another, resumably",
        "Each variant runs in its own folder under --out with an answer cache; a rerun skips complete variants and "
        "computes only the samples that failed. Everything is validated before the first run. Arguments after -- "
        "go to lmms-eval (e.g. -- --limit 50 --batch_size 8).",
        cmd_sweep,
    )
    p.add_argument("--variants", default=",".join(PAPER_VARIANTS), help=variants_help)
    p.add_argument("--tasks", default="milebench_paper", help="lmms-eval tasks or groups, comma-separated")
    p.add_argument("--model", default="llava_futuremask", help="lmms-eval model: llava_futuremask or futuremask")
    p.add_argument("--model-args", required=True, help="lmms-eval model_args without mode/merge")
    p.add_argument("--out", default="runs/sweep", help="sweep folder: one subfolder per variant")
    p.add_argument(
        "--progress-every",
        type=_positive_seconds,
        default=60.0,
        help="seconds between progress lines of a running variant",
    )
    p.add_argument("lmms_eval_args", nargs=argparse.REMAINDER, help="after --: passed on to lmms-eval")

    p = _subcommand(
        sub,
        "report",
        "Table-4-style comparison with significance, heatmap and mask figure",
        "One row per variant, one column per task and group, differences from `original` with paired tests "
        "(Holm-adjusted), failed samples, and the paper's published rows. Runs that differ in more than the mask "
        "(checkpoint, other model_args, generation settings, limits, samples, data) are refused unless "
        "--allow-mismatch.",
        cmd_report,
    )
    p.add_argument("folders", nargs="+", help="lmms-eval output folders, one per variant, or a sweep folder")
    p.add_argument("--out", default="runs/report", help="folder for report.md, report.csv and the PNGs")
    p.add_argument(
        "--allow-mismatch", action="store_true", help="write the report anyway, marking the cells not comparable"
    )

    p = _subcommand(
        sub,
        "select",
        "choose a mask per task, with a held-out (cross-fitted) estimate of the gain, and write routing.yaml",
        "Per task, the variant chosen on k-1 folds of the samples and scored on the held-out fold, for every fold; "
        "the routing's gain over original and over the best single variant with paired bootstrap intervals, per "
        "task and group; the oracle (chosen and scored on all samples) beside it, labelled optimistic. Writes "
        "select.md, select.csv, select.png and routing.yaml (use it with --model_args ...,routing=routing.yaml). "
        "The runs must differ in the mask only, as for report.",
        cmd_select,
    )
    p.add_argument("folders", nargs="+", help="lmms-eval output folders (one per variant, with original), or a sweep")
    p.add_argument("--out", default="runs/select", help="folder for select.md, select.csv, select.png, routing.yaml")
    p.add_argument("--folds", type=int, default=2, help="cross-fitting folds (k >= 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold split")
    p.add_argument("--allow-mismatch", action="store_true", help="select even if runs differ in more than the mask")

    p = _subcommand(
        sub,
        "inspect",
        "save head-averaged attention maps of one prompt under several modes",
        "Loads a checkpoint with eager attention (the only backend that returns weights) and saves one PNG per mode "
        "of one layer's head-averaged attention for one prompt.",
        cmd_inspect,
    )
    p.add_argument("--pretrained", required=True, help="HF model id or local checkpoint folder")
    p.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    p.add_argument("--prompt", required=True, help="the full prompt, with the model's image placeholder per image")
    p.add_argument("--modes", default="original,future", help="comma-separated modes")
    p.add_argument("--layer", type=int, default=-1, help="decoder layer (negative: from the last)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="weights dtype (auto: bfloat16 on a GPU, float32 on the CPU; a 7B needs ~28 GB in float32)",
    )
    p.add_argument("--out", default="runs/inspect", help="folder for the PNGs")

    p = _subcommand(
        sub,
        "fake-milebench",
        "write a synthetic MileBench (all 29 tasks) in the official layout",
        "Synthetic data in the official folder layout, for trying the pipeline offline (export MILEBENCH_DIR).",
        cmd_fake_milebench,
    )
    p.add_argument("dir", type=_folder, help="target folder")
    p.add_argument("--samples", type=_count, default=4, help="samples per task")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic content")

    p = _subcommand(
        sub,
        "download-milebench",
        "fetch, extract and verify the official MileBench data",
        "Downloads the six official archives (or takes them from --source), extracts and verifies every task; "
        "a rerun repairs what is broken.",
        cmd_download_milebench,
    )
    p.add_argument(
        "--dir", type=_folder, default=None, help="target folder (default: $MILEBENCH_DIR or the cache folder)"
    )
    p.add_argument("--source", default=None, help="a local folder holding the MileBench_part*.tar.gz files")
    p.add_argument("--parts", type=_parts, default=None, help="comma-separated part numbers (default: 0-5)")
    p.add_argument("--force", action="store_true", help="re-extract parts already done")
    p.add_argument("--keep", action="store_true", help="keep downloaded archives after extraction")

    p = _subcommand(
        sub,
        "rescore",
        "re-score saved lmms-eval --log_samples MileBench outputs offline",
        "Scores the answers in *_samples_milebench_*.jsonl files again with the official scorer, without a model.",
        cmd_rescore,
    )
    p.add_argument("log_dir", help="an lmms-eval --output_path holding --log_samples files")
    p.add_argument("--data-dir", default=None, help="MileBench folder (default: $MILEBENCH_DIR)")
    p.add_argument("--json", default=None, help="also write the table as JSON here")

    from .experiments.bench import ARCHS, BENCH_VARIANTS

    p = _subcommand(
        sub,
        "bench",
        "prefill / decode / end-to-end speed and peak memory of every variant",
        "Times every variant on a random-weight LLaVA built from a config (no download); see docs/benchmarks.md.",
        cmd_bench,
    )
    _bench_model_args(p, ARCHS)
    p.add_argument(
        "--vision",
        default="auto",
        choices=["auto", "full", "small"],
        help="vision tower: the architecture's CLIP (full) or the tiny one (small); auto: small on the CPU",
    )
    p.add_argument("--variants", default=",".join(BENCH_VARIANTS), help=variants_help)
    p.add_argument(
        "--images", type=_counts, default="1,4,8", help="images per prompt, comma-separated (576 tokens each)"
    )
    p.add_argument("--batches", type=_counts, default="1,8", help="batch sizes, comma-separated")
    p.add_argument("--text-tokens", type=int, default=200, help="text tokens per prompt")
    p.add_argument("--new-tokens", type=int, default=64, help="decode steps timed per round")
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds (every variant once each), after a warm-up round"
    )
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument(
        "--attn", default="sdpa", choices=["sdpa", "eager", "flex_attention", "flash_attention_2"], help="backend"
    )
    p.add_argument("--out-dir", default="runs/bench", help="folder for the markdown and CSV results")

    p = _subcommand(
        sub,
        "bench-loading",
        "the share of wall time spent loading MileBench images, with and without prefetching",
        "Runs synthetic MileBench samples of 7 photograph-sized images through the runner (LLaVA-1.5's image "
        "pipeline, a random-weight model) with prefetch=0 and prefetch=N, interleaved; see docs/benchmarks.md.",
        cmd_bench_loading,
    )
    _bench_model_args(p, ARCHS)
    p.add_argument("--samples", type=int, default=16, help="samples of 7 images each")
    p.add_argument("--image-size", default="800x600", help="WIDTHxHEIGHT of the synthetic images")
    p.add_argument("--batch", type=int, default=1, help="batch size")
    p.add_argument("--new-tokens", type=int, default=8, help="tokens generated per sample")
    p.add_argument("--prefetch", type=int, default=1, help="batches loaded ahead in the prefetching runs")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds of both settings")
    p.add_argument("--out", default=None, help="also write the table (with machine and command) to this file")

    p = _subcommand(
        sub,
        "tiny-model",
        "write a deterministic tiny random VLM checkpoint (offline)",
        "A small random checkpoint of a VLM family with its real processor, built offline, for tests and trials.",
        cmd_tiny_model,
    )
    p.add_argument("dir", type=_folder, help="target folder")
    p.add_argument("--family", default="llava", help="VLM family, e.g. llava, qwen2_5_vl, gemma3, idefics3")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights")

    p = _subcommand(
        sub,
        "sample-task",
        "write the synthetic futuremask_sample lmms-eval tasks",
        "Two small image tasks (generation and multiple choice) with their data, for lmms-eval --include_path.",
        cmd_sample_task,
    )
    p.add_argument("dir", type=_folder, help="target folder")
    p.add_argument("--docs", type=_count, default=12, help="docs per task")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user error is one line on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as error:
        print(f"lmms-futuremask {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
