"""A Table-4-style comparison of variants from lmms-eval output folders, with paired significance per task.

Each folder is read by :func:`~lmms_futuremask.experiments.runs.load_run`. Variants are compared only if nothing but
the mask differs between their runs (checkpoint, other model_args, generation settings, limits, samples, data);
otherwise the report is refused, or, with ``allow_mismatch``, written with every affected cell marked. Per task,
every variant is tested against ``original`` on the samples both scored (:mod:`.stats`: exact McNemar for 0/1
scores, a paired bootstrap otherwise), and the p-values of the whole table are Holm-adjusted.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..attention.variants import PAPER_VARIANTS
from ..milebench.catalog import BY_FOLDER, BY_TASK_NAME, GROUPS, short_name
from ..validation import UserError
from .evalrun import headline_metrics
from .runs import Mismatch, Run, expand_run_folders, load_run, mismatches
from .stats import ALPHA, BOOTSTRAP_RESAMPLES, holm, paired_test


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
    """One (variant, column) of the table; ``value`` None: the variant did not report that column."""

    value: float | None
    delta: float | None = None  # value minus original's
    test: str | None = None  # "McNemar" or "bootstrap", against original on the samples both scored
    p: float | None = None  # raw p-value
    p_adjusted: float | None = None  # Holm-adjusted across the table's tests
    best: bool = False
    failed: int = 0  # samples of the task (of the group's tasks) that failed and scored 0
    mismatch: tuple[str, ...] = ()  # what besides the mask differs from the reference run (allow_mismatch only)


@dataclass
class Report:
    """The comparison table of one model's variants (:func:`build_report`), ready to format."""

    model: str
    variants: list[str]
    columns: list[tuple[str, str]]  # (task or group, metric)
    cells: dict[tuple[str, str], Cell]  # (variant, column task) -> cell
    paper: dict[str, dict[str, float]]  # variant -> task -> published score
    reference: str = "original"  # the run every other is checked against
    mismatches: list[Mismatch] = field(default_factory=list)  # listed only when allowed
    failed: dict[str, int] = field(default_factory=dict)  # variant -> failed samples over its task columns
    limited: bool = False  # some run used --limit: the paper's rows are on all samples, ours are not

    @property
    def tests(self) -> int:
        """Paired tests in the table (the family Holm adjusts over)."""
        return sum(1 for cell in self.cells.values() if cell.p is not None)


def variant_order(variants: list[str]) -> list[str]:
    """The paper's variants in its order, then any others alphabetically."""
    known = [v for v in PAPER_VARIANTS if v in variants]
    return known + sorted(v for v in variants if v not in known)


def task_order(task: str) -> tuple[int, str]:
    """Sort key: MileBench tasks in the catalog's order, then any others alphabetically."""
    names = list(BY_TASK_NAME)
    return (names.index(task), task) if task in BY_TASK_NAME else (len(names), task)


def check_comparable(runs: list[Run], allow_mismatch: bool = False) -> tuple[str, list[Mismatch]]:
    """``(reference variant, mismatches)``: every run checked against ``original`` (else the first variant).
    Mismatches raise a :class:`UserError` listing them unless ``allow_mismatch``."""
    models = sorted({r.model for r in runs})
    if len(models) != 1:
        raise UserError(f"report one model at a time; these folders hold {models}")
    by_variant = {r.variant: r for r in runs}
    if len(by_variant) != len(runs):
        duplicates = sorted({r.variant for r in runs if sum(x.variant == r.variant for x in runs) > 1})
        raise UserError(f"two folders hold the same variant ({', '.join(duplicates)}); pass one folder per variant")
    reference = variant_order(list(by_variant))[0]
    found = [m for r in runs if r.variant != reference for m in mismatches(r, by_variant[reference])]
    if found and not allow_mismatch:
        listed = "\n  ".join(str(m) for m in found[:20])
        listed += f"\n  ... {len(found) - 20} more" if len(found) > 20 else ""
        raise UserError(
            f"these runs differ in more than the mask, so their differences are not the mask's (checked against "
            f"{reference}):\n  {listed}\nRerun the variants with the same settings (a sweep does), or pass "
            "--allow-mismatch to write the report with the affected cells marked."
        )
    return reference, found


def build_report(runs: list[Run], allow_mismatch: bool = False) -> Report:
    """The table of ``runs`` (one per variant, one model); see the module docstring for what is refused."""
    reference, found = check_comparable(runs, allow_mismatch)
    by_variant = {r.variant: r for r in runs}
    variants = variant_order(list(by_variant))
    tasks = sorted({t for r in runs for t in r.scores if t not in GROUPS}, key=task_order)
    groups = [g for g in GROUPS if any(g in r.scores for r in runs)]
    columns = [(t, next(iter(headline_metrics(next(r.scores[t] for r in runs if t in r.scores))))) for t in tasks]
    columns += [(g, "score") for g in groups]
    base = by_variant.get("original")
    cells: dict[tuple[str, str], Cell] = {}
    for task, metric in columns:
        members = {t.task_name for t in GROUPS[task]} if task in GROUPS else {task}
        for variant in variants:
            run = by_variant[variant]
            value = run.scores.get(task, {}).get(metric)
            cell = Cell(value, failed=sum(run.failed.get(t, 0) for t in members))
            cell.mismatch = tuple(
                m.what if m.task is None else f"{m.task}: {m.what}"
                for m in found
                if m.variant == variant and (m.task is None or m.task in members)
            )
            if base is not None and value is not None and metric in base.scores.get(task, {}):
                cell.delta = value - base.scores[task][metric]
                if variant != "original" and task in run.samples and task in base.samples:
                    common = sorted(set(run.samples[task]) & set(base.samples[task]))
                    if common:
                        cell.test, cell.p = paired_test(
                            [base.samples[task][d] for d in common], [run.samples[task][d] for d in common]
                        )
            cells[(variant, task)] = cell
        present = [cells[(v, task)].value for v in variants if cells[(v, task)].value is not None]
        for variant in variants:
            cell = cells[(variant, task)]
            cell.best = cell.value is not None and max(present) > min(present) and cell.value == max(present)
    tested = [cell for cell in cells.values() if cell.p is not None]
    for cell, adjusted in zip(tested, holm([cell.p for cell in tested]), strict=True):
        cell.p_adjusted = adjusted
    model = runs[0].model
    published = paper_numbers()
    return Report(
        model,
        variants,
        columns,
        cells,
        paper={v: published[(model, v)] for v in variants if (model, v) in published},
        reference=reference,
        mismatches=found,
        failed={v: sum(n for t, n in by_variant[v].failed.items() if t in tasks) for v in variants},
        limited=any(r.setup.get("--limit", "None") != "None" for r in runs),
    )


def _cell_text(variant: str, cell: Cell) -> str:
    if cell.value is None:
        return "–"
    text = f"**{cell.value:.3f}**" if cell.best else f"{cell.value:.3f}"
    if cell.delta is not None and variant != "original":
        text += f" ({cell.delta:+.3f})"
    if cell.p_adjusted is not None and cell.p_adjusted < ALPHA:
        text += "†" if cell.test == "McNemar" else "‡"
    if cell.failed:
        text += f" [{cell.failed} failed]"
    if cell.mismatch:
        text += " ≠"
    return text


def format_markdown(report: Report) -> str:
    """The table as markdown, with a legend that says what each mark means."""
    header = "| variant | " + " | ".join(f"{short_name(t)} ({m})" for t, m in report.columns) + " | failed |"
    lines = [f"Model: {report.model}", "", header, "|---|" + "---|" * (len(report.columns) + 1)]
    for variant in report.variants:
        cells = [_cell_text(variant, report.cells[(variant, task)]) for task, _ in report.columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {report.failed.get(variant, 0)} |")
    for variant, scores in report.paper.items():
        cells = [f"{scores[t]:.3f}" if t in scores else "–" for t, _ in report.columns]
        lines.append(f"| paper: {variant} | " + " | ".join(cells) + " | |")
    significance = (
        f"† exact McNemar test, ‡ paired bootstrap ({BOOTSTRAP_RESAMPLES:,} resamples, fixed seed), against "
        f"`original` on the samples both runs scored: p < {ALPHA} after Holm's adjustment across the table's "
        f"{report.tests} tests (raw and adjusted p-values in report.csv). "
        if report.tests
        else "No paired tests (they need an `original` run and --log_samples files). "
    )
    lines += [
        "",
        "Bold: best in column. In brackets: difference from `original`. " + significance + "Groups are unweighted "
        "means of their tasks. [N failed] and the failed column: samples that failed (an error or an unscorable "
        "answer) and count as 0; rerun to retry them. –: not reported by that run.",
    ]
    if report.paper:
        note = "Rows `paper:` are the published Table 4 numbers for this model"
        lines.append(note + (" (on all samples; these runs used --limit)." if report.limited else "."))
    if report.mismatches:
        lines += ["", f"≠ Not comparable with `{report.reference}` (shown because of --allow-mismatch):"]
        lines += [f"- {m}" for m in report.mismatches]
    return "\n".join(lines)


def write_csv(report: Report, path: str | Path) -> None:
    """One row per (variant, column), then the paper's rows; p-values raw and Holm-adjusted."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "model",
                "variant",
                "task",
                "metric",
                "value",
                "delta_vs_original",
                "test",
                "p_value",
                "p_holm",
                "best",
                "failed",
                "not_comparable",
            ]
        )
        for variant in report.variants:
            for task, metric in report.columns:
                c = report.cells[(variant, task)]
                writer.writerow(
                    [
                        report.model,
                        variant,
                        task,
                        metric,
                        c.value,
                        c.delta,
                        c.test,
                        c.p,
                        c.p_adjusted,
                        c.best,
                        c.failed,
                        "; ".join(c.mismatch),
                    ]
                )
        for variant, scores in report.paper.items():
            for task, metric in report.columns:
                if task in scores:
                    writer.writerow([report.model, f"paper:{variant}", task, metric, scores[task]] + [""] * 7)


def write_report(folders: list[Path], out_dir: str | Path, allow_mismatch: bool = False) -> str:
    """Table (markdown + CSV), delta heatmap and mask-pattern figure for some lmms-eval output folders (or sweep
    folders); returns the markdown and the files written."""
    from .plots import delta_heatmap, mask_patterns

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the report")
    report = build_report([load_run(folder) for folder in expand_run_folders(folders)], allow_mismatch)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(report)
    (out_dir / "report.md").write_text(markdown + "\n")
    write_csv(report, out_dir / "report.csv")
    pictures = [mask_patterns(out_dir / "mask_patterns.png")]
    if "original" in report.variants and len(report.variants) > 1:
        pictures.append(delta_heatmap(report, out_dir / "deltas.png"))
    files = ", ".join(str(p) for p in [out_dir / "report.md", out_dir / "report.csv", *pictures])
    return f"{markdown}\n\nwritten: {files}"
