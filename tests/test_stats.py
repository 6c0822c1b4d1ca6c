"""Wilson intervals, accuracies and paired differences (bootstrap + exact McNemar)."""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import pytest

from steerlab.errors import EmptyInputError, SteerlabError
from steerlab.stats import (
    COMPARISON_COLUMNS,
    Accuracy,
    PairedDiff,
    StatsInputError,
    accuracy,
    comparison_row,
    paired_difference,
    wilson_interval,
)

Z = 1.959963984540054


def closed_form_wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """Wilson interval written the other textbook way: (2k + z^2 -+ z sqrt(z^2 + 4k(n-k)/n))
    / (2(n + z^2))."""
    root = z * math.sqrt(z * z + 4 * k * (n - k) / n)
    den = 2 * (n + z * z)
    return (2 * k + z * z - root) / den, (2 * k + z * z + root) / den


@pytest.mark.parametrize(("k", "n", "expected"), [
    (0, 10, (0.0, 0.2775)),
    (5, 10, (0.2366, 0.7634)),
    (10, 10, (0.7225, 1.0)),
])
def test_wilson_known_values(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(expected[0], abs=1e-4)
    assert hi == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (0, 1),
                                      (1, 1), (37, 200), (82, 200), (1234, 5000)])
def test_wilson_matches_closed_form(k, n):
    lo, hi = wilson_interval(k, n)
    ref_lo, ref_hi = closed_form_wilson(k, n)
    assert lo == pytest.approx(ref_lo, abs=1e-12)
    assert hi == pytest.approx(ref_hi, abs=1e-12)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_wilson_edges_are_exact():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0
    # wider z -> wider interval
    lo95, hi95 = wilson_interval(5, 10)
    lo99, hi99 = wilson_interval(5, 10, z=2.5758293035489)
    assert lo99 < lo95 and hi99 > hi95


def test_wilson_bad_input():
    with pytest.raises(EmptyInputError, match="n=0"):
        wilson_interval(0, 0)
    with pytest.raises(StatsInputError, match="k <= n"):
        wilson_interval(11, 10)
    with pytest.raises(StatsInputError, match="k <= n"):
        wilson_interval(-1, 10)
    with pytest.raises(StatsInputError, match="integer"):
        wilson_interval(2.5, 10)  # type: ignore[arg-type]
    with pytest.raises(StatsInputError, match="z must be"):
        wilson_interval(1, 10, z=0.0)
    assert issubclass(StatsInputError, SteerlabError)
    assert issubclass(StatsInputError, ValueError)


def test_accuracy_and_str():
    correct = [True] * 82 + [False] * 118
    acc = accuracy(correct)
    assert isinstance(acc, Accuracy)
    assert (acc.k, acc.n, acc.acc) == (82, 200, 0.41)
    assert (acc.lo, acc.hi) == wilson_interval(82, 200)
    assert str(acc) == f"0.410 [{acc.lo:.3f}, {acc.hi:.3f}] (n=200)"
    assert str(acc).startswith("0.410 [0.3") and str(acc).endswith("(n=200)")
    # numpy arrays and 0/1 ints are accepted and give the same answer
    assert accuracy(np.array(correct)) == acc
    assert accuracy(np.array(correct, dtype=int)) == acc
    with pytest.raises(dataclasses.FrozenInstanceError):
        acc.k = 3  # type: ignore[misc]


def test_accuracy_bad_input():
    with pytest.raises(EmptyInputError, match="correct is empty"):
        accuracy([])
    with pytest.raises(StatsInputError, match="0/1"):
        accuracy([0, 1, 2])
    with pytest.raises(StatsInputError, match="0/1"):
        accuracy(["yes", "no"])
    with pytest.raises(StatsInputError, match="1-D"):
        accuracy(np.ones((2, 3), dtype=bool))


def test_paired_delta_exact_and_counts():
    a = np.array([1, 1, 0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    b = np.array([1, 0, 1, 1, 1, 0, 1, 1, 0, 0], dtype=bool)
    d = paired_difference(a, b)
    assert isinstance(d, PairedDiff)
    assert d.delta == pytest.approx(b.mean() - a.mean(), abs=1e-12)
    assert d.delta == 0.2
    assert (d.n, d.n_better, d.n_worse) == (10, 3, 1)
    assert d.lo <= d.delta <= d.hi
    # exact McNemar: 3 vs 1 discordant -> two-sided binomial p = 2 * P(X <= 1 | 4, 1/2) = 0.625
    assert d.p_value == pytest.approx(0.625)


def test_paired_identical_vectors():
    rng = np.random.default_rng(1)
    a = rng.random(200) < 0.4
    d = paired_difference(a, a.copy())
    assert (d.delta, d.lo, d.hi, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (d.n_better, d.n_worse) == (0, 0)
    assert str(d) == "+0.000 [+0.000, +0.000] (McNemar p=1, n=200)"


def test_paired_strongly_better():
    a = np.zeros(100, dtype=bool)
    a[:30] = True
    b = a.copy()
    b[30:70] = True  # 40 items improved, none worse
    d = paired_difference(a, b)
    assert d.delta == pytest.approx(0.40)
    assert d.lo > 0 and d.hi > d.lo
    assert d.p_value < 0.001
    assert d.p_value == pytest.approx(2 * 0.5 ** 40)
    text = str(d)
    assert text.startswith("+0.400 [+0.") and text.endswith("n=100)") and "McNemar p=" in text


def test_paired_worse_is_negative():
    a = np.ones(50, dtype=bool)
    b = a.copy()
    b[:20] = False
    d = paired_difference(a, b)
    assert d.delta == pytest.approx(-0.4)
    assert d.hi < 0
    assert (d.n_better, d.n_worse) == (0, 20)


def test_paired_deterministic_with_seed():
    rng = np.random.default_rng(7)
    a = rng.random(300) < 0.5
    b = rng.random(300) < 0.55
    assert paired_difference(a, b, seed=3) == paired_difference(a, b, seed=3)
    other = paired_difference(a, b, seed=4)
    assert other.delta == paired_difference(a, b, seed=3).delta


def test_paired_bootstrap_matches_index_resampling():
    """The multinomial shortcut gives the same distribution as resampling item indices."""
    rng = np.random.default_rng(11)
    a = rng.random(150) < 0.5
    b = np.where(rng.random(150) < 0.3, ~a, a)
    d = paired_difference(a, b, n_boot=40_000, seed=0)
    diff = b.astype(float) - a.astype(float)
    idx = rng.integers(0, diff.size, size=(40_000, diff.size))
    ref_lo, ref_hi = np.percentile(diff[idx].mean(axis=1), [2.5, 97.5])
    step = 1 / diff.size  # resampled deltas live on a grid of 1/n
    assert abs(d.lo - ref_lo) <= 2 * step
    assert abs(d.hi - ref_hi) <= 2 * step


def test_paired_fast_for_large_n():
    rng = np.random.default_rng(0)
    a = rng.random(5000) < 0.5
    b = rng.random(5000) < 0.5
    t0 = time.perf_counter()
    paired_difference(a, b)
    assert time.perf_counter() - t0 < 2.0


def test_paired_bad_input():
    with pytest.raises(StatsInputError, match="same items"):
        paired_difference([True, False], [True])
    with pytest.raises(EmptyInputError, match="a is empty"):
        paired_difference([], [])
    with pytest.raises(StatsInputError, match="n_boot"):
        paired_difference([True], [False], n_boot=0)
    with pytest.raises(StatsInputError, match="0/1"):
        paired_difference([0, 3], [1, 1])


def test_comparison_row_is_accuracy_and_paired_difference_under_the_sweep_names():
    from steerlab.reports import COLUMNS

    rng = np.random.default_rng(3)
    base, cond = rng.random(200) < 0.4, rng.random(200) < 0.55
    row = comparison_row(base, cond, seed=7)
    assert tuple(row) == COMPARISON_COLUMNS
    i = COLUMNS.index(COMPARISON_COLUMNS[0])  # one block of the sweep's columns, same order
    assert tuple(COLUMNS[i:i + len(COMPARISON_COLUMNS)]) == COMPARISON_COLUMNS
    acc, diff = accuracy(cond), paired_difference(base, cond, seed=7)
    assert row == {"n": 200, "accuracy": acc.acc, "ci_low": acc.lo, "ci_high": acc.hi,
                   "baseline": accuracy(base).acc, "delta": diff.delta, "delta_low": diff.lo,
                   "delta_high": diff.hi, "p_mcnemar": diff.p_value}
    assert row["delta"] == pytest.approx(row["accuracy"] - row["baseline"])
    assert comparison_row(base, cond, seed=7) == row  # seeded: reproducible
    same = comparison_row(base, base)
    assert same["delta"] == same["delta_low"] == same["delta_high"] == 0.0
    assert same["p_mcnemar"] == 1.0
    with pytest.raises(StatsInputError, match="same items"):
        comparison_row(base, cond[:10])
    with pytest.raises(EmptyInputError):
        comparison_row([], [])


def test_holm_known_values_and_order():
    from steerlab.stats import StatsInputError, holm

    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).size == 0
    p = np.random.default_rng(0).uniform(size=50)
    adj = holm(p)
    assert (adj >= p).all() and (adj <= 1).all()
    # Holm is never stricter than Bonferroni and never looser than the raw p
    assert (adj <= np.minimum(1, p * p.size) + 1e-12).all()
    for bad in ([0.1, 1.5], [np.nan], [[0.1]]):
        with pytest.raises(StatsInputError):
            holm(bad)


def test_bootstrap_mean_interval_per_column():
    """Each column's interval brackets its mean, narrows with more pairs, leaves NaN pairs
    out, and repeats under the same seed."""
    from steerlab.stats import bootstrap_mean_ci

    rng = np.random.default_rng(0)
    values = rng.normal([0.0, 5.0, 0.0], 1.0, size=(400, 3))
    values[::2, 2] = np.nan  # a cell only half the pairs have
    lo, hi = bootstrap_mean_ci(values, seed=1)
    mean = np.nanmean(values, axis=0)
    assert ((lo < mean) & (mean < hi)).all()
    assert lo[1] > 4.5 and hi[1] < 5.5
    assert hi[2] - lo[2] > hi[0] - lo[0]  # half the pairs: wider
    lo2, hi2 = bootstrap_mean_ci(values, seed=1)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    small_lo, small_hi = bootstrap_mean_ci(values[:40], seed=1)
    assert (small_hi - small_lo)[0] > (hi - lo)[0]
    gone = np.full((10, 1), np.nan)
    assert np.isnan(bootstrap_mean_ci(gone)[0]).all()


def test_interval_side_is_the_one_reading_of_significance():
    from steerlab.stats import interval_side

    got = interval_side([0.01, -0.2, -0.1, 0.0], [0.2, -0.01, 0.1, 0.0])
    assert got.tolist() == [1, -1, 0, 0]
