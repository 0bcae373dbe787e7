"""Task-adaptive masks, chosen honestly: a variant per task from a sweep, its gain estimated on samples the choice
did not see (``lmms-futuremask select``).

Choosing the best of several variants per task and scoring it on the same samples reports the maximum of noisy
means: biased upward, more so with more variants and fewer samples. So, per task, with the samples of every variant
paired by doc id:

1. **Cross-fitting.** The samples are split into ``k`` folds (a fixed-seed permutation). For each fold, the variant
   with the highest mean on the *other* folds is chosen (ties: ``original`` first, then the report's variant order)
   and scored on this fold. Every sample is scored by a choice that did not see it; together they give the routing's
   held-out per-sample scores.
2. **Comparisons.** Held-out routing minus ``original``, and minus the best single variant (the one with the highest
   mean over all the tasks, itself chosen on all samples: a baseline that flatters itself, not the routing), as mean
   paired differences with percentile paired-bootstrap intervals; for a group, the mean over its tasks with a
   bootstrap stratified by task.
3. **The oracle**: the variant chosen and scored on all samples, shown beside it and labelled optimistic. Its choice
   (ties to ``original``) is what ``routing.yaml`` records, for a routed run (``routing=`` model_arg).

The runs must differ in the mask only (checked as for ``report``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..milebench.catalog import GROUPS
from ..runtime.routing import write_routing
from ..validation import UserError
from .report import check_comparable, task_order, variant_order
from .runs import Run, expand_run_folders, load_run
from .stats import ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, paired_bootstrap_ci

FOLDS = 2
FOLD_SEED = 0


def choose(table: dict[str, np.ndarray], order: list[str], rows: np.ndarray | None = None) -> str:
    """The variant with the highest mean score over ``rows`` (all samples if None); ties go to the earliest in
    ``order``. ``table``: variant -> per-sample scores, aligned across variants."""
    return _first_best({v: float(table[v].mean() if rows is None else table[v][rows].mean()) for v in order}, order)


def _first_best(means: dict[str, float], order: list[str]) -> str:
    """The earliest variant in ``order`` whose mean is the highest (to rounding)."""
    best = max(means.values())
    return next(v for v in order if means[v] >= best - 1e-12)


def fold_of(n: int, folds: int = FOLDS, seed: int = FOLD_SEED) -> np.ndarray:
    """``[n]`` fold index of each sample: a fixed-seed permutation dealt round-robin (fold sizes differ by <= 1)."""
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return fold


def cross_fit(
    table: dict[str, np.ndarray], order: list[str], folds: int = FOLDS, seed: int = FOLD_SEED
) -> tuple[list[str], np.ndarray]:
    """``(variant chosen for each fold, held-out per-sample scores of the routing)``: fold ``f``'s samples are scored
    by the variant chosen on the other folds."""
    n = len(next(iter(table.values())))
    if n < folds:
        raise ValueError(f"{n} sample(s) cannot be split into {folds} folds")
    fold = fold_of(n, folds, seed)
    chosen, routed = [], np.empty(n, dtype=np.float64)
    for f in range(folds):
        variant = choose(table, order, rows=fold != f)
        chosen.append(variant)
        routed[fold == f] = table[variant][fold == f]
    return chosen, routed


@dataclass
class Row:
    """One line of the selection table: a task, or a group (the mean over its tasks present)."""

    name: str
    kind: str  # "task" or "group"
    samples: int
    chosen: list[str]  # per fold (a task); for a group, each member's choices
    routed: float
    original: float
    best_single: float
    vs_original: tuple[float, float, float]  # mean difference, CI low, CI high
    vs_best: tuple[float, float, float]
    oracle_variant: str  # a task's; "" for a group
    oracle: float
    tasks: int = 1


@dataclass
class Selection:
    """Everything ``select`` writes."""

    model: str
    variants: list[str]
    best_single: str
    folds: int
    seed: int
    rows: list[Row]
    routing: dict[str, str]  # task -> variant chosen on all samples
    folders: list[str]
    left_out: list[str]  # tasks some variant did not score (per sample), not selected


def _tables(runs: list[Run]) -> dict[str, dict[str, np.ndarray]]:
    """task -> variant -> per-sample scores on the docs every variant scored (tasks with per-sample scores only)."""
    tables = {}
    tasks = sorted({t for r in runs for t in r.samples if t not in GROUPS}, key=task_order)
    for task in tasks:
        if not all(task in r.samples for r in runs):
            continue
        docs = sorted(set.intersection(*(set(r.samples[task]) for r in runs)))
        if docs:
            tables[task] = {r.variant: np.array([r.samples[task][d] for d in docs], dtype=np.float64) for r in runs}
    return tables


def build_selection(
    runs: list[Run], folds: int = FOLDS, seed: int = FOLD_SEED, allow_mismatch: bool = False
) -> Selection:
    """Cross-fitted choices, comparisons and the oracle for every task all ``runs`` scored (see the module doc)."""
    if folds < 2:
        raise UserError(f"--folds must be at least 2 (a choice must be scored on samples it did not see), got {folds}")
    check_comparable(runs, allow_mismatch)
    variants = [r.variant for r in runs]
    if "original" not in variants:
        raise UserError("select needs the original variant's run among the folders (the baseline of every gain)")
    if len(variants) < 2:
        raise UserError("select needs at least two variants (original and one to choose instead)")
    order = ["original", *[v for v in variant_order(variants) if v != "original"]]
    tables = _tables(runs)
    if not tables:
        raise UserError(
            "no task has per-sample scores in every folder; run lmms-eval with --log_samples (a sweep does)"
        )
    small = [
        f"{task} ({len(next(iter(t.values())))})" for task, t in tables.items() if len(next(iter(t.values()))) < folds
    ]
    if small:
        raise UserError(f"fewer samples than --folds {folds} in: {', '.join(small)}; lower --folds or add samples")
    macro = {v: float(np.mean([t[v].mean() for t in tables.values()])) for v in order}
    best_single = _first_best(macro, order)
    rows, held_out = [], {}
    for task, table in tables.items():
        chosen, routed = cross_fit(table, order, folds, seed)
        held_out[task] = routed
        oracle_variant = choose(table, order)
        rows.append(
            Row(
                name=task,
                kind="task",
                samples=len(routed),
                chosen=chosen,
                routed=float(routed.mean()),
                original=float(table["original"].mean()),
                best_single=float(table[best_single].mean()),
                vs_original=paired_bootstrap_ci([routed - table["original"]]),
                vs_best=paired_bootstrap_ci([routed - table[best_single]]),
                oracle_variant=oracle_variant,
                oracle=float(table[oracle_variant].mean()),
            )
        )
    rows += _group_rows(tables, held_out, best_single, rows)
    routing = {row.name: row.oracle_variant for row in rows if row.kind == "task"}
    scored = {t for r in runs for t in r.samples if t not in GROUPS}
    left_out = sorted(scored - set(tables), key=task_order)
    folders = [str(r.folder) for r in runs]
    return Selection(runs[0].model, order, best_single, folds, seed, rows, routing, folders, left_out)


def _group_rows(tables, held_out, best_single: str, task_rows: list[Row]) -> list[Row]:
    """Each MileBench group with at least two tasks present, then all the tasks together (when no group has them
    all)."""
    by_task = {row.name: row for row in task_rows}
    groups = {g: [t.task_name for t in members if t.task_name in tables] for g, members in GROUPS.items()}
    groups = {g: members for g, members in groups.items() if len(members) > 1}  # one task: its own row already
    if len(tables) > 1 and not any(len(m) == len(tables) for m in groups.values()):
        groups["all tasks"] = list(tables)
    rows = []
    for group, members in groups.items():
        rows.append(
            Row(
                name=group,
                kind="group",
                samples=sum(len(held_out[t]) for t in members),
                chosen=[v for t in members for v in by_task[t].chosen],
                routed=float(np.mean([held_out[t].mean() for t in members])),
                original=float(np.mean([tables[t]["original"].mean() for t in members])),
                best_single=float(np.mean([tables[t][best_single].mean() for t in members])),
                vs_original=paired_bootstrap_ci([held_out[t] - tables[t]["original"] for t in members]),
                vs_best=paired_bootstrap_ci([held_out[t] - tables[t][best_single] for t in members]),
                oracle_variant="",
                oracle=float(np.mean([by_task[t].oracle for t in members])),
                tasks=len(members),
            )
        )
    return rows


# -- output ----------------------------------------------------------------------------------------------------------


def _interval(values: tuple[float, float, float]) -> str:
    mean, low, high = values
    mark = " *" if low > 0 or high < 0 else ""  # the interval excludes 0
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]{mark}"


def _chosen_text(row: Row) -> str:
    if row.kind == "group":
        counts = {v: row.chosen.count(v) for v in dict.fromkeys(row.chosen)}
        return ", ".join(f"{v} x{n}" for v, n in counts.items())
    return ", ".join(row.chosen)


def format_markdown(selection: Selection) -> str:
    """The selection table with its method and caveats."""
    level = f"{1 - ALPHA:.0%}"
    lines = [
        f"# Task-adaptive mask selection: {selection.model}",
        "",
        f"Variants: {', '.join(selection.variants)}. Cross-fitting: {selection.folds} folds, seed {selection.seed} "
        "(each sample is scored by the variant chosen on the other folds). Intervals: "
        f"{level} percentile paired bootstrap ({BOOTSTRAP_RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}; a group's "
        "stratified by task); * marks an interval that excludes 0.",
        f"Best single variant (highest mean over these tasks, chosen on all samples): **{selection.best_single}**.",
        "",
        "| task / group | samples | chosen per fold | routed (held-out) | original | routed - original "
        f"[{level} CI] | best single | routed - best single [{level} CI] | oracle (optimistic) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in selection.rows:
        name = row.name if row.kind == "task" else f"**{row.name}** (mean of {row.tasks} tasks)"
        oracle = f"{row.oracle:.4f}" + (f" ({row.oracle_variant})" if row.oracle_variant else "")
        lines.append(
            f"| {name} | {row.samples} | {_chosen_text(row)} | {row.routed:.4f} | {row.original:.4f} | "
            f"{_interval(row.vs_original)} | {row.best_single:.4f} | {_interval(row.vs_best)} | {oracle} |"
        )
    if selection.left_out:
        lines += ["", f"Left out (not scored per sample by every variant): {', '.join(selection.left_out)}."]
    lines += [
        "",
        "How to read it: the routing's gain is real where the held-out interval excludes 0. The oracle column "
        "chooses and scores on the same samples, so it is biased upward (the best of several noisy means); never "
        "report it as the routing's score. Intervals are per row and not adjusted for the number of rows: with many "
        "tasks, some exclude 0 by chance (see the report's Holm-adjusted p-values for per-variant tests). "
        "routing.yaml holds the oracle's choices (all samples): estimate its gain from this table, then confirm on "
        "data it was not chosen on.",
    ]
    return "\n".join(lines)


#: select.csv's columns: each row's interval bounds follow its mean difference.
CSV_COLUMNS = (
    "model row kind tasks samples chosen_per_fold routed original best_single_variant best_single "
    "routed_minus_original ci_low_original ci_high_original routed_minus_best ci_low_best ci_high_best "
    "oracle_variant oracle folds seed"
).split()


def write_csv(selection: Selection, path: str | Path) -> None:
    """One CSV row per table row, every number in full precision."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in selection.rows:
            writer.writerow(
                [
                    selection.model,
                    row.name,
                    row.kind,
                    row.tasks,
                    row.samples,
                    ";".join(row.chosen),
                    row.routed,
                    row.original,
                    selection.best_single,
                    row.best_single,
                    *row.vs_original,
                    *row.vs_best,
                    row.oracle_variant,
                    row.oracle,
                    selection.folds,
                    selection.seed,
                ]
            )


def plot(selection: Selection, path: str | Path) -> Path:
    """Routed minus original per row, with its interval; the oracle's difference as a cross (optimistic)."""
    from ..milebench.catalog import short_name
    from .plots import _pyplot

    plt = _pyplot()
    rows = selection.rows
    fig, ax = plt.subplots(figsize=(7, 1.0 + 0.35 * len(rows)))
    y = np.arange(len(rows))[::-1]
    mean = np.array([r.vs_original[0] for r in rows])
    errors = np.array([[r.vs_original[0] - r.vs_original[1], r.vs_original[2] - r.vs_original[0]] for r in rows]).T
    ax.errorbar(mean, y, xerr=errors, fmt="o", color="tab:blue", capsize=3, label="routed (held-out), CI")
    ax.scatter([r.oracle - r.original for r in rows], y, marker="x", color="tab:red", label="oracle (optimistic)")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_yticks(y, [short_name(r.name) if r.kind == "task" else r.name for r in rows], fontsize=8)
    ax.set_xlabel("score minus original")
    ax.set_title(f"{selection.model}: task-adaptive mask, cross-fitted ({selection.folds} folds)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)


def write_selection(
    folders: list[str | Path],
    out_dir: str | Path,
    folds: int = FOLDS,
    seed: int = FOLD_SEED,
    allow_mismatch: bool = False,
) -> str:
    """``select.md``, ``select.csv``, ``select.png`` and ``routing.yaml`` under ``out_dir``; returns the markdown
    and the files written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the selection")
    selection = build_selection(
        [load_run(folder) for folder in expand_run_folders(folders)], folds, seed, allow_mismatch
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(selection)
    (out_dir / "select.md").write_text(markdown + "\n")
    write_csv(selection, out_dir / "select.csv")
    picture = plot(selection, out_dir / "select.png")
    comment = (
        f"lmms-futuremask select: per task, the variant with the highest mean on all samples (ties: original) of\n"
        f"{selection.model} in: {', '.join(selection.folders)}\n"
        f"This choice saw the samples it was scored on: see select.md for the held-out ({folds}-fold) estimate.\n"
        "Use: --model_args ...,routing=<this file>  (tasks not listed run the model_args' mode/merge)"
    )
    routing = write_routing(out_dir / "routing.yaml", selection.routing, comment)
    files = ", ".join(str(p) for p in [out_dir / "select.md", out_dir / "select.csv", picture, routing])
    return f"{markdown}\n\nwritten: {files}"
