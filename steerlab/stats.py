"""Honest intervals for accuracies and paired differences of accuracies.

Every accuracy steerlab reports comes with a 95% Wilson score interval (good at small n and near
0 or 1, where the normal approximation fails), and every "steered vs. baseline" comparison on the
same items with a paired bootstrap interval and an exact McNemar test, so a +3 point gain on 200
questions is not mistaken for an effect.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from steerlab.errors import EmptyInputError, SteerlabError

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile, scipy.stats.norm.ppf(0.975)


class StatsInputError(SteerlabError, ValueError):
    """Counts or outcome vectors that cannot be analysed (k > n, mismatched lengths, values
    that are not 0/1 or booleans)."""


@dataclass(frozen=True)
class Accuracy:
    """An accuracy with its 95% Wilson score interval.

    Attributes:
        k: Number of correct items.
        n: Number of items (> 0).
        acc: ``k / n``, in [0, 1].
        lo: Lower end of the 95% Wilson interval, in [0, 1].
        hi: Upper end of the 95% Wilson interval, in [0, 1].
    """

    k: int
    n: int
    acc: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.acc:.3f} [{self.lo:.3f}, {self.hi:.3f}] (n={self.n})"


@dataclass(frozen=True)
class PairedDiff:
    """Difference of two accuracies measured on the same items (``b`` minus ``a``).

    Attributes:
        delta: ``mean(b) - mean(a)``, in [-1, 1].
        lo: Lower end of the 95% paired-bootstrap percentile interval of ``delta``.
        hi: Upper end of that interval.
        p_value: Exact two-sided McNemar p-value (binomial test on the discordant pairs); 1.0
            when there are no discordant pairs.
        n: Number of paired items.
        n_better: Items wrong under ``a`` and right under ``b``.
        n_worse: Items right under ``a`` and wrong under ``b``.
    """

    delta: float
    lo: float
    hi: float
    p_value: float
    n: int
    n_better: int
    n_worse: int

    def __str__(self) -> str:
        return (f"{self.delta:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}] "
                f"(McNemar p={self.p_value:.2g}, n={self.n})")


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Args:
        k: Number of successes, ``0 <= k <= n``.
        n: Number of trials, ``n > 0``.
        z: Standard normal quantile of the two-sided level (default: 95%).

    Returns:
        ``(lo, hi)``, both in [0, 1]; ``lo`` is exactly 0 when ``k == 0`` and ``hi`` exactly 1
        when ``k == n``.

    Raises:
        EmptyInputError: ``n == 0``.
        StatsInputError: negative counts, ``k > n``, non-integer counts or ``z <= 0``.
    """
    for name, value in (("k", k), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise StatsInputError(f"{name} must be an integer count, got {value!r}.")
    k, n = int(k), int(n)
    if n == 0:
        raise EmptyInputError("wilson_interval needs n > 0 items; got n=0 (nothing was scored).")
    if n < 0 or k < 0 or k > n:
        raise StatsInputError(f"Need 0 <= k <= n, got k={k}, n={n}: k counts the correct items "
                              "among the n scored ones.")
    if not (math.isfinite(z) and z > 0):
        raise StatsInputError(f"z must be a positive finite quantile (1.96 for 95%), got {z!r}.")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _as_outcomes(x: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    """``x`` as a 1-D bool array, checking it holds only booleans or 0/1."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise StatsInputError(f"{name} must be a 1-D sequence of per-item outcomes, got shape "
                              f"{arr.shape}.")
    if arr.size == 0:
        raise EmptyInputError(f"{name} is empty: pass one correct/incorrect outcome per item.")
    if arr.dtype == np.bool_:
        return arr
    if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
        raise StatsInputError(f"{name} must hold booleans or 0/1 per item (True = correct), got "
                              f"dtype {arr.dtype} with values such as {arr[:5].tolist()}.")
    return arr.astype(bool)


def accuracy(correct: Sequence[bool] | np.ndarray) -> Accuracy:
    """Accuracy of per-item outcomes, with its 95% Wilson interval.

    Args:
        correct: Shape ``(n,)``, booleans or 0/1, True for a correct item.

    Returns:
        The :class:`Accuracy`.

    Raises:
        EmptyInputError: no items.
        StatsInputError: not 1-D, or values other than booleans / 0 / 1.
    """
    arr = _as_outcomes(correct, "correct")
    k, n = int(arr.sum()), int(arr.size)
    lo, hi = wilson_interval(k, n)
    return Accuracy(k=k, n=n, acc=k / n, lo=lo, hi=hi)


def _mcnemar_p(n_better: int, n_worse: int) -> float:
    """Exact two-sided McNemar p-value: binomial test of the discordant pairs at p = 1/2."""
    discordant = n_better + n_worse
    if discordant == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(min(1.0, binomtest(n_better, discordant, 0.5).pvalue))


def paired_difference(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray,
                      n_boot: int = 10_000, seed: int = 0) -> PairedDiff:
    """Difference ``mean(b) - mean(a)`` of outcomes on the same items, with a paired bootstrap
    95% interval and an exact McNemar test.

    The bootstrap resamples item indices with replacement (the pair ``(a[i], b[i])`` stays
    together) and takes the 2.5/97.5 percentiles of the resampled deltas. Each item contributes
    ``d_i = b_i - a_i`` in {-1, 0, +1}, so a resample's delta depends only on how many drawn
    items are better / tied / worse, and those counts are exactly Multinomial(n, (n_better/n,
    n_tied/n, n_worse/n)). We draw the counts directly: the same bootstrap distribution in
    O(n_boot) time and memory instead of an ``(n_boot, n)`` index matrix.

    Args:
        a: Shape ``(n,)``, outcomes of the baseline (booleans or 0/1, True = correct).
        b: Shape ``(n,)``, outcomes of the variant on the same items, in the same order.
        n_boot: Number of bootstrap resamples (>= 1).
        seed: Seed of the ``numpy.random.Generator``; same inputs and seed give the same interval.

    Returns:
        The :class:`PairedDiff`.

    Raises:
        EmptyInputError: no items.
        StatsInputError: different lengths, bad values, or ``n_boot < 1``.
    """
    a_arr, b_arr = _as_outcomes(a, "a"), _as_outcomes(b, "b")
    if a_arr.size != b_arr.size:
        raise StatsInputError(f"a and b must score the same items in the same order, got "
                              f"{a_arr.size} and {b_arr.size} outcomes.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 1:
        raise StatsInputError(f"n_boot must be a positive integer (e.g. 10_000), got {n_boot!r}.")
    n = int(a_arr.size)
    n_better = int(np.count_nonzero(b_arr & ~a_arr))
    n_worse = int(np.count_nonzero(a_arr & ~b_arr))
    n_tied = n - n_better - n_worse
    delta = (n_better - n_worse) / n

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [n_better / n, n_tied / n, n_worse / n], size=int(n_boot))
    boot = (counts[:, 0] - counts[:, 2]) / n
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return PairedDiff(delta=delta, lo=float(lo), hi=float(hi),
                      p_value=_mcnemar_p(n_better, n_worse), n=n, n_better=n_better,
                      n_worse=n_worse)


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (family-wise error rate): the
    i-th smallest of m p-values is multiplied by ``m - i`` (0-based i), the results made
    non-decreasing in that order and capped at 1. A cell whose adjusted p is below 0.05 stays
    significant after accounting for every other cell of the family being tried too.

    Args:
        p_values: Shape ``(m,)``, the raw p-values (e.g. the McNemar p of each sweep cell).

    Returns:
        The adjusted p-values, shape ``(m,)``, in the input order.

    Raises:
        StatsInputError: not 1-D, or values outside [0, 1] (NaN included).
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise StatsInputError(f"holm takes a 1-D list of p-values, got shape {p.shape}.")
    if p.size and not ((p >= 0) & (p <= 1)).all():
        raise StatsInputError(f"p-values must lie in [0, 1], got {p[~((p >= 0) & (p <= 1))][:3]}.")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = adjusted
    return out


def interval_side(low: Sequence[float] | np.ndarray, high: Sequence[float] | np.ndarray
                  ) -> np.ndarray:
    """Where each 95% interval ``[low, high]`` lies: +1 above zero, -1 below, 0 when it holds
    zero (the one reading of "significantly up / down" in every verdict and figure)."""
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return (lo > 0).astype(int) - (hi < 0).astype(int)


COMPARISON_COLUMNS = ("n", "accuracy", "ci_low", "ci_high", "baseline", "delta", "delta_low",
                      "delta_high", "p_mcnemar")
"""The columns of every "accuracy and paired difference to a baseline" table steerlab writes
(sweep rows, :func:`steerlab.conditions.compare_conditions`), in this order; see
:func:`comparison_row`."""


def comparison_row(base_correct: Sequence[bool] | np.ndarray,
                   correct: Sequence[bool] | np.ndarray, seed: int = 0,
                   n_boot: int = 10_000) -> dict[str, float | int]:
    """One condition measured against a baseline on the same items: the one definition of the
    :data:`COMPARISON_COLUMNS`.

    Args:
        base_correct: Shape ``(n,)``, the baseline's per-item outcomes (booleans or 0/1).
        correct: Shape ``(n,)``, the condition's outcomes on the same items, in the same order.
        seed: Seed of the paired bootstrap (:func:`paired_difference`).
        n_boot: Number of bootstrap resamples.

    Returns:
        ``n`` (items), ``accuracy`` with its 95% Wilson interval ``ci_low``/``ci_high``,
        ``baseline`` (the baseline's accuracy), ``delta`` (accuracy minus baseline) with its
        95% paired-bootstrap interval ``delta_low``/``delta_high``, and ``p_mcnemar`` (exact
        two-sided McNemar p); exactly those keys, in that order.

    Raises:
        EmptyInputError: no items.
        StatsInputError: different lengths or values other than booleans / 0 / 1.
    """
    acc = accuracy(correct)
    diff = paired_difference(base_correct, correct, n_boot=n_boot, seed=seed)
    return {"n": acc.n, "accuracy": acc.acc, "ci_low": acc.lo, "ci_high": acc.hi,
            "baseline": accuracy(base_correct).acc, "delta": diff.delta, "delta_low": diff.lo,
            "delta_high": diff.hi, "p_mcnemar": diff.p_value}


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile bootstrap interval of the mean over axis 0 (pairs, resampled with
    replacement), per column, NaNs (pairs without that cell) left out: the interval of every
    patching map's cells."""
    vals = np.asarray(values, dtype=float)
    n = vals.shape[0]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    with warnings.catch_warnings():  # all-NaN columns (cells no pair has) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(vals[idx], axis=1)  # (n_boot, cells)
        lo, hi = np.nanpercentile(means, [2.5, 97.5], axis=0)
    return lo, hi
