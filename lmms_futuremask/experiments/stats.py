"""Paired significance tests of one variant against a baseline on the same samples, and their correction for
multiplicity (a report tests every variant on every task: at p < 0.05, one in twenty null comparisons would be
"significant" by chance).

* :func:`mcnemar_exact`: 0/1 scores (accuracy); exact binomial test on the discordant pairs.
* :func:`paired_bootstrap`: any score (Rouge-L); resampled mean differences, vectorised, with a fixed seed so a
  report is reproducible.
* :func:`holm`: Holm's step-down adjustment (family-wise error rate), applied across all tests of one table.
* :func:`paired_bootstrap_ci`: a percentile interval of a mean paired difference; stratified over several tasks
  (each resampled within itself) for the mean over tasks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
_CHUNK = 2_000_000  # resampled indices drawn at once (bounds the memory of a large n)


def mcnemar_exact(baseline: Sequence[float], variant: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial test on the discordant pairs)."""
    b = sum(1 for x, y in zip(baseline, variant, strict=True) if x == 1 and y == 0)
    c = sum(1 for x, y in zip(baseline, variant, strict=True) if x == 0 and y == 1)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def bootstrap_means(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED):
    """Means of ``resamples`` resamples (with replacement) of ``values``: a float64 array ``[resamples]``."""
    data = np.asarray(values, dtype=np.float64)
    n = len(data)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // max(n, 1))
    means = [
        data[rng.integers(0, n, size=(min(rows, resamples - done), n))].mean(axis=1)
        for done in range(0, resamples, rows)
    ]
    return np.concatenate(means)


def paired_bootstrap(
    baseline: Sequence[float],
    variant: Sequence[float],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> float:
    """Two-sided paired bootstrap p-value for the mean difference ``variant - baseline``.

    The resampled mean differences, centred on the observed one, approximate its null distribution; the p-value
    is the share at least as far from the observed mean as the observed mean is from 0, with the usual +1
    correction (never exactly 0 from a finite number of resamples).
    """
    diffs = np.asarray(variant, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    if len(diffs) == 0:
        return 1.0
    observed = float(diffs.mean())
    if np.all(diffs == diffs[0]):  # no spread: the difference is either nothing or certain
        return 1.0 if observed == 0 else 0.0
    means = bootstrap_means(diffs, resamples, seed)
    # "at least as far", with rounding tolerance: resampled means often tie with 0 or twice the observed mean
    extreme = int(np.count_nonzero(np.abs(means - observed) >= abs(observed) * (1 - 1e-9)))
    return (extreme + 1) / (resamples + 1)


def paired_test(baseline: Sequence[float], variant: Sequence[float]) -> tuple[str, float]:
    """``(test name, p-value)``: McNemar when every score is 0 or 1, else the paired bootstrap."""
    if all(v in (0.0, 1.0) for v in [*baseline, *variant]):
        return "McNemar", mcnemar_exact(baseline, variant)
    return "bootstrap", paired_bootstrap(baseline, variant)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input's order.

    Sorted ascending, the i-th smallest (0-based) of m is multiplied by ``m - i``; the running maximum keeps the
    adjusted values in the same order as the raw ones; each is capped at 1. Rejecting where the adjusted p is below
    alpha controls the family-wise error rate at alpha, under any dependence between the tests.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def paired_bootstrap_ci(
    diffs_per_task: Sequence[Sequence[float]],
    level: float = 1 - ALPHA,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """``(mean, low, high)`` of the mean over tasks of each task's mean paired difference, with a percentile
    bootstrap interval at ``level``: samples are resampled within each task (a stratified bootstrap; one task is
    the plain paired bootstrap), task ``i`` with seed ``seed + i``, so the interval is reproducible."""
    tasks = [np.asarray(d, dtype=np.float64) for d in diffs_per_task]
    if not tasks or any(len(d) == 0 for d in tasks):
        raise ValueError("paired_bootstrap_ci needs at least one sample in every task")
    observed = float(np.mean([d.mean() for d in tasks]))
    means = np.mean([bootstrap_means(d, resamples, seed + i) for i, d in enumerate(tasks)], axis=0)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return observed, float(low), float(high)
