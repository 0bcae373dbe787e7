"""A Table-4-style comparison of variants from lmms-eval output folders, with paired significance per task.

Reads each folder's ``*_results.json`` (task scores, the run's model_args) and ``*_samples_<task>.jsonl`` (per-sample
scores). Variants come from the model_args (``mode``, ``merge``). Per task, every variant is tested against
``original`` on the samples both scored: exact McNemar for 0/1 scores (accuracy), a paired bootstrap otherwise
(Rouge-L).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..attention.variants import PAPER_VARIANTS
from ..milebench.catalog import BY_FOLDER, BY_TASK_NAME, GROUPS
from ..validation import UserError
from .evalrun import failed_samples, find_results_file, headline_metrics, read_samples, sample_files, scores_of

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000


# -- statistics ----------------------------------------------------------------------------------------------------


def mcnemar_exact(baseline: list[float], variant: list[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial test on the discordant pairs)."""
    b = sum(1 for x, y in zip(baseline, variant, strict=True) if x == 1 and y == 0)
    c = sum(1 for x, y in zip(baseline, variant, strict=True) if x == 0 and y == 1)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    baseline: list[float], variant: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> float:
    """Two-sided paired bootstrap p-value for a mean difference (resampled differences, centred under H0)."""
    diffs = [y - x for x, y in zip(baseline, variant, strict=True)]
    if not diffs:
        return 1.0
    observed = sum(diffs) / len(diffs)
    if all(d == diffs[0] for d in diffs):  # no spread: the difference is either nothing or certain
        return 1.0 if observed == 0 else 0.0
    rng = random.Random(seed)
    n = len(diffs)
    extreme = 0
    for _ in range(resamples):
        mean = sum(diffs[rng.randrange(n)] for _ in range(n)) / n
        if abs(mean - observed) >= abs(observed):
            extreme += 1
    return (extreme + 1) / (resamples + 1)


def paired_test(baseline: list[float], variant: list[float]) -> tuple[str, float]:
    """``(test name, p-value)``: McNemar when every score is 0 or 1, else the paired bootstrap."""
    if all(v in (0.0, 1.0) for v in baseline + variant):
        return "McNemar", mcnemar_exact(baseline, variant)
    return "bootstrap", paired_bootstrap(baseline, variant)


# -- reading runs --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    variant: str
    model: str
    folder: Path
    scores: dict[str, dict[str, float]]  # task -> metric -> value (as lmms-eval reported)
    samples: dict[str, dict[int, float]] = field(default_factory=dict)  # task -> doc_id -> per-sample score
    failed: dict[str, int] = field(default_factory=dict)  # task -> samples that failed (scored 0)


def _model_args(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def variant_of(model_args: dict[str, str]) -> str:
    mode = model_args.get("mode", "original")
    return f"{mode}+merge" if model_args.get("merge", "none") == "kernel" else mode


def model_key(pretrained: str) -> str:
    """``llava-hf/llava-1.5-7b-hf`` -> ``llava-1.5-7b`` (the paper table's model names); else the folder name."""
    name = pretrained.rstrip("/").split("/")[-1].lower()
    for size in ("7b", "13b"):
        if f"llava-1.5-{size}" in name or f"llava-v1.5-{size}" in name:
            return f"llava-1.5-{size}"
    return name


def _sample_score(record: dict, metric: str) -> float | None:
    value = record.get(metric)
    if isinstance(value, dict):
        value = value.get("score")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_run(folder: str | Path) -> Run:
    """A variant's scores, per-sample scores and failed samples, from the newest lmms-eval run in ``folder``."""
    results_file = find_results_file(folder)
    config = json.loads(results_file.read_text())["config"]
    args = _model_args(config.get("model_args", ""))
    run = Run(variant_of(args), model_key(args.get("pretrained", "?")), Path(folder), scores_of(results_file))
    run.failed = failed_samples(results_file)
    for task, path in sample_files(results_file).items():
        if task not in run.scores:
            continue
        metric = next(iter(headline_metrics(run.scores[task])))
        per_doc = {}
        for record in read_samples(path):
            score = _sample_score(record, metric)
            if score is not None:
                per_doc[int(record["doc_id"])] = score
        run.samples[task] = per_doc
    return run


def paper_numbers() -> dict[tuple[str, str], dict[str, float]]:
    """(model, variant) -> task name -> published score (Table 4 of the paper)."""
    text = resources.files("lmms_futuremask").joinpath("data/paper_table4_llava15.csv").read_text()
    table = {}
    for row in csv.DictReader(io.StringIO(text)):
        scores = {BY_FOLDER[k].task_name: float(v) for k, v in row.items() if k in BY_FOLDER}
        table[(row["model"], row["mask"])] = scores
    return table


# -- the table -----------------------------------------------------------------------------------------------------


@dataclass
class Cell:
    value: float | None
    delta: float | None = None
    test: str | None = None
    p: float | None = None
    best: bool = False
    failed: int = 0  # samples of the task (of the group's tasks) that failed and scored 0


@dataclass
class Report:
    model: str
    variants: list[str]
    columns: list[tuple[str, str]]  # (task or group, metric)
    cells: dict[tuple[str, str], Cell]  # (variant, column task) -> cell
    paper: dict[str, dict[str, float]]  # variant -> task -> published score


def _order(variants: list[str]) -> list[str]:
    known = [v for v in PAPER_VARIANTS if v in variants]
    return known + sorted(v for v in variants if v not in known)


def build_report(runs: list[Run]) -> Report:
    models = sorted({r.model for r in runs})
    if len(models) != 1:
        raise UserError(f"report one model at a time; these folders hold {models}")
    by_variant = {r.variant: r for r in runs}
    if len(by_variant) != len(runs):
        duplicates = sorted({r.variant for r in runs if sum(x.variant == r.variant for x in runs) > 1})
        raise UserError(f"two folders hold the same variant ({', '.join(duplicates)}); pass one folder per variant")
    variants = _order(list(by_variant))
    tasks = sorted({t for r in runs for t in r.scores if t not in GROUPS}, key=_task_order)
    groups = [g for g in GROUPS if any(g in r.scores for r in runs)]
    columns = [(t, next(iter(headline_metrics(by_variant[variants[0]].scores.get(t, {"score": 0}))))) for t in tasks]
    columns += [(g, "score") for g in groups]
    base = by_variant.get("original")
    cells: dict[tuple[str, str], Cell] = {}
    for task, metric in columns:
        for variant in variants:
            run = by_variant[variant]
            value = run.scores.get(task, {}).get(metric)
            members = [t.task_name for t in GROUPS[task]] if task in GROUPS else [task]
            cell = Cell(value, failed=sum(run.failed.get(t, 0) for t in members))
            if base is not None and value is not None and task in base.scores:
                cell.delta = value - base.scores[task][metric]
                if variant != "original" and task in run.samples and task in base.samples:
                    common = sorted(set(run.samples[task]) & set(base.samples[task]))
                    cell.test, cell.p = paired_test(
                        [base.samples[task][d] for d in common], [run.samples[task][d] for d in common]
                    )
            cells[(variant, task)] = cell
        present = [cells[(v, task)].value for v in variants if cells[(v, task)].value is not None]
        for variant in variants:
            cell = cells[(variant, task)]
            cell.best = cell.value is not None and max(present) > min(present) and cell.value == max(present)
    published = paper_numbers()
    paper = {v: published[(models[0], v)] for v in variants if (models[0], v) in published}
    return Report(models[0], variants, columns, cells, paper)


def _task_order(task: str) -> tuple[int, str]:
    names = list(BY_TASK_NAME)
    return (names.index(task), task) if task in BY_TASK_NAME else (len(names), task)


def _label(task: str) -> str:
    return BY_TASK_NAME[task].folder if task in BY_TASK_NAME else task


def format_markdown(report: Report) -> str:
    header = "| variant | " + " | ".join(f"{_label(t)} ({m})" for t, m in report.columns) + " |"
    lines = [f"Model: {report.model}", "", header, "|---|" + "---|" * len(report.columns)]
    for variant in report.variants:
        cells = []
        for task, _ in report.columns:
            cell = report.cells[(variant, task)]
            if cell.value is None:
                cells.append("–")
                continue
            text = f"{cell.value:.3f}"
            if cell.best:
                text = f"**{text}**"
            if cell.delta is not None and variant != "original":
                text += f" ({cell.delta:+.3f})"
            if cell.p is not None and cell.p < ALPHA:
                text += "†" if cell.test == "McNemar" else "‡"
            if cell.failed:
                text += f" [{cell.failed} failed]"
            cells.append(text)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    for variant, scores in report.paper.items():
        cells = [f"{scores[t]:.3f}" if t in scores else "–" for t, _ in report.columns]
        lines.append(f"| paper: {variant} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Bold: best in column. In brackets: difference from `original`. "
        f"† exact McNemar test, ‡ paired bootstrap ({BOOTSTRAP_RESAMPLES:,} resamples): p < {ALPHA} against "
        "`original` on the samples both runs scored. Groups are unweighted means of their tasks. "
        "[N failed]: samples that failed (an error or an unscorable answer) and count as 0; rerun to retry them.",
    ]
    if report.paper:
        lines.append("Rows `paper:` are the published Table 4 numbers for this model.")
    return "\n".join(lines)


def write_csv(report: Report, path: str | Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["model", "variant", "task", "metric", "value", "delta_vs_original", "test", "p_value", "best", "failed"]
        )
        for variant in report.variants:
            for task, metric in report.columns:
                c = report.cells[(variant, task)]
                writer.writerow([report.model, variant, task, metric, c.value, c.delta, c.test, c.p, c.best, c.failed])
        for variant, scores in report.paper.items():
            for task, metric in report.columns:
                if task in scores:
                    writer.writerow([report.model, f"paper:{variant}", task, metric, scores[task], "", "", "", "", ""])
