"""The report is honest: statistics checked by hand or by exhaustive enumeration, Holm's adjustment by hand, runs
that differ in more than the mask refused (or marked), missing cells left blank, failed samples counted.

Run folders are written here as lmms-eval writes them (``*_results.json`` + ``*_samples_<task>.jsonl``), with
known per-sample scores.
"""

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.plots import delta_grid
from lmms_futuremask.experiments.report import build_report, format_markdown, write_csv
from lmms_futuremask.experiments.runs import load_run
from lmms_futuremask.experiments.stats import holm, mcnemar_exact, paired_bootstrap, paired_test
from lmms_futuremask.validation import UserError

# -- statistics ------------------------------------------------------------------------------------------------------


def test_mcnemar_by_hand():
    # discordant pairs b = 1 (baseline right only), c = 9: p = 2 * P(X <= 1 | n = 10) = 2 * 11 / 1024
    baseline = [1] + [0] * 9 + [1, 0]
    variant = [0] + [1] * 9 + [1, 0]
    assert mcnemar_exact(baseline, variant) == pytest.approx(22 / 1024)
    assert mcnemar_exact([1, 0, 1, 0], [0, 1, 0, 1]) == 1.0  # b = c = 2: capped at 1
    assert mcnemar_exact([0] * 5, [1] * 5) == pytest.approx(2 / 32)
    assert mcnemar_exact([1, 0], [1, 0]) == 1.0  # no discordant pair


def exhaustive_bootstrap_p(diffs):
    """The bootstrap p-value with every one of the n^n equally likely resamples enumerated (no sampling error)."""
    observed = sum(diffs) / len(diffs)
    means = [sum(pick) / len(diffs) for pick in itertools.product(diffs, repeat=len(diffs))]
    return sum(abs(m - observed) >= abs(observed) * (1 - 1e-9) for m in means) / len(means)


@pytest.mark.parametrize(
    "baseline, variant",
    [
        ([0.2, 0.5, 0.1, 0.9, 0.4, 0.3], [0.4, 0.45, 0.3, 0.95, 0.5, 0.2]),
        ([0.5, 0.5, 0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.6, 0.4, 0.55, 0.5]),
    ],
)
def test_paired_bootstrap_matches_exhaustive_enumeration(baseline, variant):
    diffs = [y - x for x, y in zip(baseline, variant, strict=True)]
    exact = exhaustive_bootstrap_p(diffs)
    estimate = paired_bootstrap(baseline, variant, resamples=20_000)
    assert estimate == pytest.approx(exact, abs=0.01)  # Monte Carlo error ~ sqrt(p(1-p)/20000) < 0.004
    assert paired_bootstrap(baseline, variant) == paired_bootstrap(baseline, variant)  # fixed seed


def test_exhaustive_reference_can_tell_data_apart():
    # guard: the reference gives clearly different answers for a clear and a null difference
    assert exhaustive_bootstrap_p([0.2, 0.25, 0.1, 0.3, 0.2, 0.15]) < 0.01
    assert exhaustive_bootstrap_p([0.2, -0.2, 0.1, -0.1, 0.05, -0.05]) > 0.9


def test_paired_bootstrap_edge_cases():
    assert paired_bootstrap([0.25, 0.5, 0.75], [0.5, 0.75, 1.0]) == 0.0  # a constant shift, no spread
    assert paired_bootstrap([0.5] * 4, [0.5] * 4) == 1.0
    assert paired_bootstrap([], []) == 1.0
    big = np.random.default_rng(1).random(5000)
    assert 0 <= paired_bootstrap(big, big + 0.001 * (np.arange(5000) % 3 - 1), resamples=1000) <= 1  # chunked
    assert paired_test([1, 0, 1], [0, 0, 1])[0] == "McNemar"
    assert paired_test([0.5, 0.2], [0.4, 0.3])[0] == "bootstrap"


def test_holm_by_hand():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.04]) == pytest.approx([0.04])
    assert holm([]) == []


# -- run folders as lmms-eval writes them ----------------------------------------------------------------------------

TASK_A, TASK_B = "milebench_tqa", "milebench_clevr_change"
GEN = {"max_new_tokens": 512, "min_new_tokens": 1, "temperature": 0.0, "do_sample": False, "until": [], "num_beams": 1}


def write_run(
    folder: Path,
    per_task: dict[str, list[float]],
    mode: str = "original",
    extra_args: str = "",
    limit: float | None = None,
    gen: dict | None = None,
    failed: dict[str, int] | None = None,
    targets: dict[str, list[str]] | None = None,
    pretrained: str = "/models/tiny-llava",
) -> Path:
    """An lmms-eval output folder: results + one samples file per task, with these per-sample scores."""
    out = folder / "model"
    out.mkdir(parents=True)
    results, configs, counts = {}, {}, {}
    for task, scores in per_task.items():
        n_failed = (failed or {}).get(task, 0)
        mean = sum(scores) / len(scores)
        results[task] = {"alias": task, "accuracy,none": mean, "score,none": mean, "failed_samples,none": n_failed}
        configs[task] = {"task": task, "generation_kwargs": gen or GEN}
        counts[task] = {"original": 100, "effective": len(scores)}
        records = []
        for doc_id, score in enumerate(scores):
            target = (targets or {}).get(task, [f"answer {i}" for i in range(len(scores))])[doc_id]
            item = {"score": score, "failed": False}
            records.append({"doc_id": doc_id, "target": target, "input_media": [f"{doc_id}_0.png"], "accuracy": item})
        (out / f"20260101_000000_samples_{task}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    model_args = f"pretrained={pretrained},mode={mode},device=cpu" + extra_args
    config = {"model": "llava_futuremask", "model_args": model_args, "limit": limit, "offset": 0}
    document = {"results": results, "configs": configs, "n-samples": counts, "config": config}
    (out / "20260101_000000_results.json").write_text(json.dumps(document))
    return folder


BASE = {TASK_A: [1, 1, 0, 1, 0, 1, 1, 0, 1, 1, 0, 1], TASK_B: [0, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1, 0]}


def load(*folders):
    return [load_run(folder) for folder in folders]


def test_comparable_runs_make_a_report(tmp_path):
    runs = load(
        write_run(tmp_path / "o", BASE), write_run(tmp_path / "f", BASE, mode="future", extra_args=",batch_size=4")
    )
    report = build_report(runs)  # batch_size and device only decide how a run executes
    assert report.mismatches == [] and report.cells[("future", TASK_A)].delta == 0


@pytest.mark.parametrize(
    "change, expected",
    [
        (dict(limit=4.0, per_task={TASK_A: BASE[TASK_A][:4], TASK_B: BASE[TASK_B][:4]}), "other samples (4 vs 12"),
        (dict(extra_args=",max_new_tokens=8"), "model_args max_new_tokens '8' vs 'none'"),
        (dict(extra_args=",dtype=float16"), "model_args dtype 'float16' vs 'auto'"),
        (dict(gen={**GEN, "max_new_tokens": 4}), "generation settings"),
        (dict(targets={TASK_A: [f"other {i}" for i in range(12)]}), "other data for 12 of 12 samples"),
        (dict(pretrained="/elsewhere/tiny-llava"), "model_args pretrained"),
    ],
)
def test_runs_that_differ_in_more_than_the_mask_are_refused_or_marked(tmp_path, change, expected):
    kwargs = {"per_task": BASE, **change}
    runs = load(write_run(tmp_path / "o", BASE), write_run(tmp_path / "v", mode="future_v2v", **kwargs))
    with pytest.raises(UserError, match="--allow-mismatch") as refused:
        build_report(runs)
    assert expected in str(refused.value)

    report = build_report(runs, allow_mismatch=True)
    marked = [task for task, _ in report.columns if report.cells[("future_v2v", task)].mismatch]
    assert marked and all(not report.cells[("original", t)].mismatch for t, _ in report.columns)
    markdown = format_markdown(report)
    assert "≠ Not comparable with `original`" in markdown and expected in markdown
    write_csv(report, tmp_path / "report.csv")
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert any(expected in row["not_comparable"] for row in rows if row["variant"] == "future_v2v")


def test_equal_runs_are_not_flagged_by_the_checks_above(tmp_path):
    # guard: the same folder contents as the reference, under another mode, raise nothing
    runs = load(write_run(tmp_path / "o", BASE), write_run(tmp_path / "v", BASE, mode="future_v2v"))
    assert build_report(runs).mismatches == []


def test_cli_refuses_with_one_line_and_writes_nothing(tmp_path, capsys):
    write_run(tmp_path / "o", BASE)
    write_run(tmp_path / "v", BASE, mode="future", extra_args=",max_new_tokens=8")
    out = tmp_path / "report"
    assert main(["report", str(tmp_path / "o"), str(tmp_path / "v"), "--out", str(out)]) == 2
    assert "--allow-mismatch" in capsys.readouterr().err and not out.exists()
    assert main(["report", str(tmp_path / "o"), str(tmp_path / "v"), "--out", str(out), "--allow-mismatch"]) == 0
    assert "≠" in (out / "report.md").read_text()


def test_holm_across_the_table_decides_the_marks(tmp_path):
    # future loses all 8 of task A's right answers (b = 8, c = 0: p = 2 / 2^8) and gains one on task B (p = 1);
    # future_v2v equals original (p = 1, 1). Holm over 4 tests: the smallest p times 4 = 0.03125, still < 0.05.
    runs = load(
        write_run(tmp_path / "o", BASE),
        write_run(tmp_path / "f", {TASK_A: [0] * 12, TASK_B: [1, *BASE[TASK_B][1:]]}, mode="future"),
        write_run(tmp_path / "v", BASE, mode="future_v2v"),
    )
    report = build_report(runs)
    lost = report.cells[("future", TASK_A)]
    assert lost.test == "McNemar" and lost.p == pytest.approx(2 / 256)
    assert report.tests == 4
    assert lost.p_adjusted == pytest.approx(4 * 2 / 256)
    assert report.cells[("future", TASK_B)].p_adjusted == 1.0
    markdown = format_markdown(report)
    row = next(line for line in markdown.splitlines() if line.startswith("| future |"))
    assert "(-0.667)†" in row and row.count("†") == 1
    assert "Holm" in markdown and "4 tests" in markdown


def test_a_small_raw_p_that_holm_adjusts_away_is_not_marked(tmp_path):
    # future gains 6 answers on task A (b = 0, c = 6: p = 2 / 64 < 0.05); the table has 4 tests: 4 * 2 / 64 > 0.05
    base = {TASK_A: [0] * 6 + [1] * 6, TASK_B: [0] * 6 + [1] * 6}
    gain = {TASK_A: [1] * 12, TASK_B: [0] * 6 + [1] * 6}
    runs = load(write_run(tmp_path / "o", base), write_run(tmp_path / "f", gain, mode="future"))
    runs += load(write_run(tmp_path / "v", base, mode="future_v2v"))
    report = build_report(runs)
    cell = report.cells[("future", TASK_A)]
    assert cell.p == pytest.approx(2 / 64) and cell.p < 0.05  # raw: significant
    assert cell.p_adjusted == pytest.approx(4 * 2 / 64) and cell.p_adjusted > 0.05  # Holm over 4 tests: not
    row = next(line for line in format_markdown(report).splitlines() if line.startswith("| future |"))
    assert "(+0.500)" in row and "†" not in row
    write_csv(report, tmp_path / "report.csv")
    row = next(
        r for r in csv.DictReader(open(tmp_path / "report.csv")) if r["variant"] == "future" and r["task"] == TASK_A
    )
    assert float(row["p_value"]) == pytest.approx(2 / 64) and float(row["p_holm"]) == pytest.approx(8 / 64)


def test_missing_cells_are_blank_not_zero(tmp_path):
    runs = load(write_run(tmp_path / "o", BASE), write_run(tmp_path / "f", {TASK_A: BASE[TASK_A]}, mode="future"))
    report = build_report(runs)
    assert report.cells[("future", TASK_B)].value is None and report.cells[("future", TASK_B)].delta is None
    grid = delta_grid(report)
    columns = [task for task, _ in report.columns]
    assert np.isnan(grid[0, columns.index(TASK_B)]) and grid[0, columns.index(TASK_A)] == 0.0
    row = next(line for line in format_markdown(report).splitlines() if line.startswith("| future |"))
    assert "–" in row


def test_failed_samples_have_a_column(tmp_path):
    runs = load(
        write_run(tmp_path / "o", BASE, failed={TASK_A: 2}),
        write_run(tmp_path / "f", BASE, mode="future", failed={TASK_A: 1, TASK_B: 3}),
    )
    report = build_report(runs)
    assert report.failed == {"original": 2, "future": 4}
    lines = format_markdown(report).splitlines()
    assert lines[2].endswith("| failed |")
    assert next(line for line in lines if line.startswith("| future |")).endswith("| 4 |")
