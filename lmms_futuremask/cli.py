"""``lmms-futuremask``: the project's own subcommands (lmms-eval itself stays the evaluation CLI)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from .attention.masks import MODES
from .attention.variants import PAPER_VARIANTS, variant_model_args
from .experiments.evalrun import OFFLINE_ENV, run_lmms_eval
from .validation import UserError


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from .testing.vlms import tiny_vlm, write_tiny_vlm

    tiny_vlm(args.family)  # an unknown family fails here, naming the valid ones
    path = write_tiny_vlm(args.family, args.dir, seed=args.seed)
    print(f"tiny {args.family} checkpoint written to {path} (use pretrained={path})")
    return 0


def cmd_sample_task(args: argparse.Namespace) -> int:
    from .testing.sample_task import GROUP_NAME, write_sample_task

    path = write_sample_task(args.dir, n_docs=args.docs)
    print(f"sample tasks written; run with --include_path {path} --tasks {GROUP_NAME}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default: tiny checkpoint, synthetic data, real lmms-eval CLI, one run per
    variant, then the report (table, significance, pictures)."""
    from .milebench.fake import write_fake_milebench
    from .testing.sample_task import GROUP_NAME, write_sample_task
    from .testing.tiny import write_tiny_model

    out = Path(args.out).resolve()
    variants = args.variants.split(",")
    variant_args = {v: variant_model_args(v) for v in variants}
    model_dir = write_tiny_model(out / "tiny-llava")
    env, extra = dict(OFFLINE_ENV), ["--batch_size", str(args.batch_size)]
    if GROUP_NAME in args.tasks:
        extra += ["--include_path", str(write_sample_task(out / "tasks", n_docs=args.docs))]
    if "milebench" in args.tasks:
        env["MILEBENCH_DIR"] = str(write_fake_milebench(out / "MileBench", samples_per_task=args.docs))
    for variant in variants:
        output_path = out / "results" / variant
        shutil.rmtree(output_path, ignore_errors=True)
        model_args = f"pretrained={model_dir},{variant_args[variant]},device={args.device}"
        model_args += f",max_new_tokens={args.max_new_tokens}"
        print(f"[demo] {variant}: lmms-eval --model llava_futuremask --model_args {model_args}", flush=True)
        try:
            run_lmms_eval(model_args, args.tasks, output_path, out / f"lmms-eval-{variant}.log", extra, env)
        except RuntimeError as error:
            print(f"[demo] {variant}: {error}", file=sys.stderr)
            return 1
    print(write_report([out / "results" / v for v in variants], out / "report"))
    print("Scores of a tiny random model on synthetic data: the pipeline is real, the numbers mean nothing.")
    return 0


def write_report(folders: list[Path], out_dir: Path) -> str:
    """Table (markdown + CSV), delta heatmap and mask-pattern figure for some lmms-eval output folders."""
    from .experiments.plots import delta_heatmap, mask_patterns
    from .experiments.report import build_report, format_markdown, load_run, write_csv

    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = build_report([load_run(folder) for folder in folders])
    markdown = format_markdown(report)
    (out_dir / "report.md").write_text(markdown + "\n")
    write_csv(report, out_dir / "report.csv")
    pictures = [mask_patterns(out_dir / "mask_patterns.png")]
    if "original" in report.variants and len(report.variants) > 1:
        pictures.append(delta_heatmap(report, out_dir / "deltas.png"))
    files = ", ".join(str(p) for p in [out_dir / "report.md", out_dir / "report.csv", *pictures])
    return f"{markdown}\n\nwritten: {files}"


def _expand_run_folders(paths: list[str]) -> list[Path]:
    """Sweep roots expand to their variant folders; anything else is taken as one lmms-eval output folder."""
    from .experiments.sweep import COMPLETE, INCOMPLETE

    folders = []
    for path in map(Path, paths):
        variants = sorted({p.parent for name in (COMPLETE, INCOMPLETE) for p in path.glob(f"*/{name}")})
        folders += variants or [path]
    return folders


def cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.sweep import run_sweep

    passthrough = args.lmms_eval_args[1:] if args.lmms_eval_args[:1] == ["--"] else args.lmms_eval_args
    runs = run_sweep(args.variants.split(","), args.tasks, args.model_args, args.out, passthrough, model=args.model)
    done = [r.variant for r in runs if r.status in ("complete", "skipped")]
    print(f"[sweep] {len(done)} of {len(runs)} variant(s) complete; report with: lmms-futuremask report {args.out}")
    unfinished = [f"{r.variant} ({r.status})" for r in runs if r.status not in ("complete", "skipped")]
    if unfinished:
        print(f"[sweep] not complete: {', '.join(unfinished)}; rerun the same command to retry", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(write_report(_expand_run_folders(args.folders), Path(args.out)))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from .experiments.plots import attention_maps

    processor = AutoProcessor.from_pretrained(args.pretrained)
    model = AutoModelForImageTextToText.from_pretrained(args.pretrained, attn_implementation="eager").eval()
    images = [Image.open(p).convert("RGB") for p in args.image]
    inputs = processor(text=[args.prompt], images=images or None, return_tensors="pt")
    for path in attention_maps(model, dict(inputs), args.modes.split(","), args.out, layer=args.layer):
        print(f"written: {path}")
    return 0


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
        print(
            f"{len(failed)} task folder(s) incomplete: {', '.join(failed)}. Run the command again to repair them "
            "(parts holding a broken task are extracted again); if a task fails right after its part was extracted, "
            "the archive itself is incomplete: add --force to fetch and extract every part afresh."
        )
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
    from .experiments.bench import format_rows, run_bench, write_outputs

    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    rows, weight_bytes = run_bench(
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
    markdown, table = write_outputs(rows, args.out_dir, "lmms-futuremask " + " ".join(sys.argv[1:]), weight_bytes)
    print(f"written: {markdown}, {table}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmms-futuremask", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny-model", help="write a deterministic tiny random VLM checkpoint (offline)")
    tiny.add_argument("dir")
    tiny.add_argument("--family", default="llava", help="VLM family, e.g. llava, qwen2_5_vl, gemma3, idefics3")
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

    sweep = sub.add_parser("sweep", help="run variants through lmms-eval one after another, resumably")
    sweep.add_argument("--variants", default=",".join(PAPER_VARIANTS), help="comma-separated MODE or MODE+merge")
    sweep.add_argument("--tasks", default="milebench_paper")
    sweep.add_argument("--model", default="llava_futuremask", help="llava_futuremask or futuremask")
    sweep.add_argument("--model-args", required=True, help="lmms-eval model_args without mode/merge")
    sweep.add_argument("--out", default="runs/sweep")
    sweep.add_argument("lmms_eval_args", nargs=argparse.REMAINDER, help="after --: passed on to lmms-eval")
    sweep.set_defaults(func=cmd_sweep)

    report = sub.add_parser("report", help="Table-4-style comparison with significance, heatmap and mask figure")
    report.add_argument("folders", nargs="+", help="lmms-eval output folders, one per variant, or a sweep folder")
    report.add_argument("--out", default="runs/report")
    report.set_defaults(func=cmd_report)

    inspect = sub.add_parser("inspect", help="save head-averaged attention maps of one prompt under several modes")
    inspect.add_argument("--pretrained", required=True)
    inspect.add_argument("--image", action="append", default=[], help="an image file (repeat for several)")
    inspect.add_argument("--prompt", required=True, help="the full prompt with one <image> per image")
    inspect.add_argument("--modes", default="original,future")
    inspect.add_argument("--layer", type=int, default=-1)
    inspect.add_argument("--out", default="runs/inspect")
    inspect.set_defaults(func=cmd_inspect)

    from .experiments.bench import ARCHS, BENCH_VARIANTS

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
    bench.add_argument("--attn", default="sdpa", choices=["sdpa", "eager", "flex_attention", "flash_attention_2"])
    bench.add_argument("--out-dir", default="runs/bench")
    bench.set_defaults(func=cmd_bench)

    rescore = sub.add_parser("rescore", help="re-score saved lmms-eval --log_samples MileBench outputs offline")
    rescore.add_argument("log_dir")
    rescore.add_argument("--data-dir", default=None, help="MileBench folder (default: $MILEBENCH_DIR)")
    rescore.add_argument("--json", default=None, help="also write the table as JSON here")
    rescore.set_defaults(func=cmd_rescore)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, FileNotFoundError) as error:
        print(f"lmms-futuremask {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
