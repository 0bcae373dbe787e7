"""Choosing a mask per task, honestly: cross-fitting on hand-built score tables with known answers (ties, a task
where original wins, a choice that only looks good on the samples it saw), intervals checked by enumeration, the
routing file written and read back."""

import csv
import itertools

import numpy as np
import pytest

from lmms_futuremask.cli import main
from lmms_futuremask.experiments.runs import load_run
from lmms_futuremask.experiments.selection import build_selection, choose, cross_fit, fold_of, format_markdown
from lmms_futuremask.experiments.stats import paired_bootstrap_ci
from lmms_futuremask.runtime.routing import load_routing, write_routing
from lmms_futuremask.validation import UserError

from .test_report import TASK_A, TASK_B, write_run

ORDER = ["original", "future", "future_v2v"]


def table(**scores):
    return {variant: np.array(values, dtype=float) for variant, values in scores.items()}


def reference_cross_fit(scores: dict[str, list[float]], fold: list[int], folds: int, order: list[str]):
    """Cross-fitting with explicit loops: per fold, the mean of each variant on the other folds' samples, the
    first in ``order`` among the highest, then that variant's scores on the fold."""
    chosen, routed = [], [None] * len(fold)
    for f in range(folds):
        means = {}
        for variant in order:
            seen = [scores[variant][i] for i in range(len(fold)) if fold[i] != f]
            means[variant] = sum(seen) / len(seen)
        best = max(means.values())
        pick = next(v for v in order if abs(means[v] - best) < 1e-12)
        chosen.append(pick)
        for i in range(len(fold)):
            if fold[i] == f:
                routed[i] = scores[pick][i]
    return chosen, routed


def test_choose_takes_the_highest_mean_and_breaks_ties_towards_original():
    assert choose(table(original=[0, 1], future=[1, 1], future_v2v=[1, 0]), ORDER) == "future"
    assert choose(table(original=[1, 0], future=[0, 1], future_v2v=[1, 1]), ORDER) == "future_v2v"
    assert choose(table(original=[1, 0], future=[0, 1], future_v2v=[0, 0]), ORDER) == "original"  # a tie
    assert choose(table(original=[0, 0], future=[1, 0], future_v2v=[0, 1]), ORDER) == "future"  # tie: order


def test_folds_are_balanced_and_fixed_by_the_seed():
    fold = fold_of(11, 2, seed=0)
    assert sorted(np.bincount(fold).tolist()) == [5, 6]
    assert fold.tolist() == fold_of(11, 2, seed=0).tolist()
    assert fold.tolist() != fold_of(11, 2, seed=1).tolist()
    assert sorted(np.bincount(fold_of(10, 3)).tolist()) == [3, 3, 4]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("folds", [2, 3])
def test_cross_fit_equals_the_explicit_loop(seed, folds):
    rng = np.random.default_rng(10 + seed)
    scores = {v: rng.integers(0, 2, 12).astype(float).tolist() for v in ORDER}
    fold = fold_of(12, folds, seed).tolist()
    chosen, routed = cross_fit(table(**scores), ORDER, folds, seed)
    assert (chosen, routed.tolist()) == reference_cross_fit(scores, fold, folds, ORDER)


def test_the_explicit_loop_can_fail():
    """Guard: the reference gives another answer when the held-out fold is not the one scored."""
    scores = {"original": [0, 0, 1, 1], "future": [1, 1, 0, 0], "future_v2v": [0, 0, 0, 0]}
    assert reference_cross_fit(scores, [0, 0, 1, 1], 2, ORDER) == (["original", "future"], [0, 0, 0, 0])
    assert reference_cross_fit(scores, [0, 1, 0, 1], 2, ORDER) != (["original", "future"], [0, 0, 0, 0])


def test_a_choice_that_only_wins_on_the_samples_it_saw_gains_nothing_held_out():
    """future wins on one fold's samples only, future_v2v on the other's: the oracle picks one and reports a gain;
    cross-fitted, each fold is scored by the variant the *other* fold preferred, which loses there."""
    fold = fold_of(8, 2, seed=0)
    original = np.full(8, 0.5)
    future = np.where(fold == 0, 1.0, 0.0)
    future_v2v = np.where(fold == 1, 0.9, 0.1)
    scores = {"original": original, "future": future, "future_v2v": future_v2v}
    chosen, routed = cross_fit(scores, ORDER, 2, 0)
    assert chosen == ["future_v2v", "future"]
    assert routed.mean() == pytest.approx(0.05)  # 0.1 on fold 0, 0.0 on fold 1
    assert max(s.mean() for s in scores.values()) == 0.5  # what the oracle would have said


def test_too_few_samples_for_the_folds_are_refused():
    with pytest.raises(ValueError, match="cannot be split into 3 folds"):
        cross_fit(table(original=[1, 0], future=[0, 1], future_v2v=[0, 0]), ORDER, 3)


# -- intervals --------------------------------------------------------------------------------------------------------


def exhaustive_percentiles(diffs, level=0.95):
    """Percentile interval of the mean over all n^n equally likely resamples (no sampling error)."""
    means = sorted(sum(pick) / len(diffs) for pick in itertools.product(diffs, repeat=len(diffs)))
    tail = (1 - level) / 2 * 100
    return tuple(np.percentile(means, [tail, 100 - tail]))


def test_bootstrap_interval_matches_exhaustive_enumeration():
    diffs = [0.3, -0.1, 0.2, 0.0, 0.5, 0.1]
    mean, low, high = paired_bootstrap_ci([diffs], resamples=40_000)
    exact_low, exact_high = exhaustive_percentiles(diffs)
    assert mean == pytest.approx(np.mean(diffs))
    assert low == pytest.approx(exact_low, abs=0.01) and high == pytest.approx(exact_high, abs=0.01)
    assert paired_bootstrap_ci([diffs]) == paired_bootstrap_ci([diffs])  # fixed seed


def test_stratified_interval_of_a_mean_over_tasks():
    assert paired_bootstrap_ci([[0.5, 0.5], [0.1, 0.1, 0.1]]) == pytest.approx((0.3, 0.3, 0.3))  # no spread
    mean, low, high = paired_bootstrap_ci([[1, 0, 1, 1, 0, 1], [-1, 0, 0, 1]])
    assert mean == pytest.approx((4 / 6 + 0) / 2) and low < mean < high
    # Guard: the exhaustive reference tells a clear gain from noise.
    assert exhaustive_percentiles([0.2, 0.25, 0.1, 0.3, 0.2, 0.15])[0] > 0
    assert exhaustive_percentiles([0.2, -0.2, 0.1, -0.1, 0.05, -0.05])[0] < 0


# -- from run folders ------------------------------------------------------------------------------------------------

# TASK_A: future wins on every sample; TASK_B: original wins (future loses 4 of 12); future_v2v ties original on A.
SCORES = {
    "original": {TASK_A: [0] * 6 + [1] * 6, TASK_B: [1] * 12},
    "future": {TASK_A: [1] * 12, TASK_B: [1] * 8 + [0] * 4},
    "future_v2v": {TASK_A: [0] * 6 + [1] * 6, TASK_B: [0] * 12},
}


def sweep(tmp_path, variants=("original", "future", "future_v2v")):
    return [write_run(tmp_path / v, SCORES[v], mode=v) for v in variants]


def test_selection_of_known_answers(tmp_path):
    selection = build_selection([load_run(f) for f in sweep(tmp_path)])
    rows = {row.name: row for row in selection.rows}
    assert selection.best_single == "future"  # mean over tasks: (1 + 8/12) / 2
    assert rows[TASK_A].chosen == ["future", "future"] and rows[TASK_A].routed == 1.0
    assert rows[TASK_A].vs_original[0] == pytest.approx(0.5) and rows[TASK_A].vs_original[1] > 0
    assert rows[TASK_B].oracle_variant == "original" and rows[TASK_B].oracle == 1.0
    assert selection.routing == {TASK_A: "future", TASK_B: "original"}
    group = rows["milebench"]
    assert group.kind == "group" and group.tasks == 2
    assert group.original == pytest.approx(0.75) and group.best_single == pytest.approx((1 + 8 / 12) / 2)
    for row in selection.rows:
        mean, low, high = row.vs_original
        assert low <= mean <= high


def test_ties_route_to_original(tmp_path):
    runs = [load_run(f) for f in sweep(tmp_path, ("original", "future_v2v"))]
    selection = build_selection(runs)
    assert selection.routing[TASK_A] == "original"  # future_v2v equals original there: no reason to switch


def test_a_task_not_every_variant_scored_is_left_out_and_said_so(tmp_path):
    original = write_run(tmp_path / "o", SCORES["original"])
    future = write_run(tmp_path / "f", {TASK_A: SCORES["future"][TASK_A]}, mode="future")
    selection = build_selection([load_run(original), load_run(future)])
    assert [row.name for row in selection.rows] == [TASK_A] and selection.left_out == [TASK_B]
    assert f"Left out (not scored per sample by every variant): {TASK_B}" in format_markdown(selection)


def test_selection_refuses_what_it_cannot_answer_honestly(tmp_path):
    folders = sweep(tmp_path)
    with pytest.raises(UserError, match="needs the original variant"):
        build_selection([load_run(f) for f in folders[1:]])
    with pytest.raises(UserError, match="--folds must be at least 2"):
        build_selection([load_run(f) for f in folders], folds=1)
    with pytest.raises(UserError, match="fewer samples than --folds 20"):
        build_selection([load_run(f) for f in folders], folds=20)
    other = write_run(tmp_path / "x", SCORES["future"], mode="future", extra_args=",dtype=float16")
    with pytest.raises(UserError, match="--allow-mismatch"):
        build_selection([load_run(folders[0]), load_run(other)])


def test_select_cli_writes_table_csv_picture_and_a_routing_file(tmp_path, capsys):
    folders = sweep(tmp_path / "runs")
    out = tmp_path / "select"
    assert main(["select", *map(str, folders), "--out", str(out)]) == 0
    markdown = (out / "select.md").read_text()
    assert "oracle (optimistic)" in markdown and "held-out" in markdown and "Best single variant" in markdown
    rows = list(csv.DictReader((out / "select.csv").open()))
    assert {TASK_A, TASK_B, "milebench"} <= {r["row"] for r in rows}
    assert (out / "select.png").stat().st_size > 0
    routing = load_routing(out / "routing.yaml", lambda task: task in (TASK_A, TASK_B))
    assert routing.tasks == {TASK_A: ("future", "none"), TASK_B: ("original", "none")}
    assert "held-out" in (out / "routing.yaml").read_text()  # the header says what the choice saw


# -- the routing file ------------------------------------------------------------------------------------------------


def known(task):
    return task in ("milebench_tqa", "milebench_mmcoqa")


def test_routing_file_round_trip_and_both_spellings(tmp_path):
    path = write_routing(tmp_path / "r.yaml", {"milebench_tqa": "future_v2v+merge"}, "a comment")
    assert load_routing(path, known).tasks == {"milebench_tqa": ("future_v2v", "kernel")}
    path.write_text("tasks:\n  milebench_mmcoqa: {mode: future_v2t, merge: none}\n")
    assert load_routing(path, known).variant_for("milebench_mmcoqa") == ("future_v2t", "none")
    assert load_routing(path, known).variant_for("milebench_tqa") is None


@pytest.mark.parametrize(
    "text, message",
    [
        ("tasks:\n  milebench_tqa: futur\n", "unknown mode 'futur'"),
        ("tasks:\n  milebench_tqa: original+merge\n", "needs a future mode"),
        ("tasks:\n  milebench_tqa: future+pool\n", "MODE or MODE\\+merge"),
        ("tasks:\n  milebench_nope: future\n", "unknown task\\(s\\) \\['milebench_nope'\\]"),
        ("milebench_tqa: future\n", "expected a mapping 'tasks:'"),
        ("tasks: [\n", "not valid YAML"),
    ],
)
def test_bad_routing_files_are_refused_with_the_fix(tmp_path, text, message):
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_routing(path, known)


def test_a_missing_routing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_routing(tmp_path / "nope.yaml", known)
