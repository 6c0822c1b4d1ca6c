"""Checks for lesson 3: an accuracy's 95% Wilson interval, and a paired bootstrap interval for
the change in accuracy between two runs on the same items."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from steerlab.stats import Z95, paired_difference, wilson_interval
from steerlab.teach._harness import Fail, call, check

WILSON_CASES = [(0, 20), (1, 20), (10, 20), (20, 20), (3, 7), (116, 200), (0, 1), (512, 1000)]


def _numbers(got: Any, k: int, what: str) -> list[float]:
    """``got`` as ``k`` plain floats, or :class:`Fail` saying what came back."""
    if got is None:
        raise Fail(f"{what} returned None; expected {k} numbers. Did you forget `return`?")
    try:
        vals = [float(x) for x in np.asarray(got, dtype=float).reshape(-1)]
    except (TypeError, ValueError):
        raise Fail(f"{what} returned {type(got).__name__} {got!r:.80}; expected a tuple of {k} "
                   "numbers.") from None
    if len(vals) != k:
        raise Fail(f"{what} returned {len(vals)} numbers ({got!r:.80}); expected {k}.")
    if not all(math.isfinite(v) for v in vals):
        raise Fail(f"{what} returned {vals}: NaN or inf (a division by zero at k=0 or k=n?).")
    return vals


def _wald(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    p = k / n
    half = z * math.sqrt(p * (1 - p) / n)
    return max(0.0, p - half), min(1.0, p + half)


@check
def check_wilson_interval(fn: Any) -> str:
    """Check ``fn(k, n) -> (lo, hi)``, the 95% Wilson score interval of k correct out of n,
    against :func:`steerlab.stats.wilson_interval` on cases that include k=0 and k=n."""
    for k, n in WILSON_CASES:
        what = f"your wilson_interval({k}, {n})"
        lo, hi = _numbers(call(fn, k, n, what=what), 2, what)
        ref = wilson_interval(k, n)
        if max(abs(lo - ref[0]), abs(hi - ref[1])) <= 1e-6:
            continue
        got = f"expected ({ref[0]:.4f}, {ref[1]:.4f}), got ({lo:.4f}, {hi:.4f})"
        if max(abs(hi - ref[0]), abs(lo - ref[1])) <= 1e-6:
            raise Fail(f"{what}: {got}: the ends are swapped; return (lo, hi).")
        if max(abs(lo / 100 - ref[0]), abs(hi / 100 - ref[1])) <= 1e-6:
            raise Fail(f"{what}: {got}: that is in percent; return fractions in [0, 1].")
        for alt, why in ((_wald(k, n), "the normal-approximation (Wald) interval "
                          "p ± z·sqrt(p(1-p)/n): it collapses to a single point at k=0 or k=n "
                          "and is too narrow at small n, which is why we use Wilson's"),
                         (wilson_interval(k, n, 1.6448536), "a 90% interval (z=1.645): use "
                          "z=1.96 for 95%")):
            if max(abs(lo - alt[0]), abs(hi - alt[1])) <= 1e-4:
                raise Fail(f"{what}: {got}: this is {why}.")
        raise Fail(f"{what}: {got}. Hint: centre = (p + z²/2n) / (1 + z²/n), half-width = "
                   "z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²), with z = 1.96.")
    return f"equals steerlab.stats.wilson_interval on {len(WILSON_CASES)} cases, k=0 and k=n too."


def paired_outcomes(n: int = 200, flip: float = 0.12, seed: int = 7
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Two (n,) bool outcome vectors on the same items: ``b`` is ``a`` with a fraction ``flip``
    of the items changed, more often for the better (like a steered run vs its baseline)."""
    rng = np.random.default_rng(seed)
    a = rng.random(n) < 0.6
    change = rng.random(n) < flip
    b = np.where(change & ~a, True, np.where(change & a & (rng.random(n) < 0.3), False, a))
    return a, b


@check
def check_paired_bootstrap(fn: Any) -> str:
    """Check ``fn(a, b, n_boot=10_000, seed=0) -> (delta, lo, hi)``: ``delta = mean(b) -
    mean(a)`` on the same items and its 95% bootstrap interval, resampling *items* (pairs).
    Compared with :func:`steerlab.stats.paired_difference` (bootstrap noise allowed: 0.02)."""
    a, b = paired_outcomes()
    ref = paired_difference(a, b)
    what = f"your paired_bootstrap(a, b) on {a.size} paired outcomes"
    delta, lo, hi = _numbers(call(fn, a.copy(), b.copy(), n_boot=10_000, seed=0, what=what), 3,
                             what)
    exp = f"expected about ({ref.delta:+.3f}, {ref.lo:+.3f}, {ref.hi:+.3f})"
    got = f"got ({delta:+.3f}, {lo:+.3f}, {hi:+.3f})"
    if abs(delta - ref.delta) > 1e-9:
        hint = ("the sign is flipped: b minus a (the steered run minus the baseline)"
                if abs(delta + ref.delta) <= 1e-9 else "delta is mean(b) - mean(a)")
        raise Fail(f"{what}: {exp}, {got}: {hint}.")
    if not lo <= delta <= hi:
        raise Fail(f"{what}: {exp}, {got}: the interval must contain delta; return "
                   "(delta, lo, hi) with lo <= hi.")
    width, ref_width = hi - lo, ref.hi - ref.lo
    if width > 1.4 * ref_width:
        raise Fail(f"{what}: {exp}, {got}: your interval is {width / ref_width:.1f}x as wide "
                   "as the paired one. Resampling a and b independently ignores that both runs "
                   "scored the same items; draw one set of item indices per resample and use "
                   "it for both: idx = rng.integers(0, n, n); (b[idx] - a[idx]).mean().")
    if width < 0.7 * ref_width:
        raise Fail(f"{what}: {exp}, {got}: your interval is too narrow: take the 2.5th and "
                   "97.5th percentiles of the resampled deltas, each resample the same size "
                   "as the data.")
    if max(abs(lo - ref.lo), abs(hi - ref.hi)) > 0.02:
        raise Fail(f"{what}: {exp}, {got}: the interval is off-centre. Hint: the percentiles "
                   "of the resampled deltas, np.percentile(deltas, [2.5, 97.5]).")
    tie_d, tie_lo, tie_hi = _numbers(call(fn, a.copy(), a.copy(), n_boot=1000, seed=0,
                                          what=f"{what} (b equal to a)"), 3, what)
    if (tie_d, tie_lo, tie_hi) != (0.0, 0.0, 0.0):
        raise Fail(f"{what}: with b identical to a expected (0, 0, 0), got ({tie_d:+.3f}, "
                   f"{tie_lo:+.3f}, {tie_hi:+.3f}): paired resamples of identical runs never "
                   "differ.")
    return (f"delta {delta:+.3f} and interval [{lo:+.3f}, {hi:+.3f}] agree with "
            f"steerlab.stats.paired_difference [{ref.lo:+.3f}, {ref.hi:+.3f}].")


def subsample_deltas(a: np.ndarray, b: np.ndarray, n: int, repeats: int = 2000,
                     seed: int = 0) -> np.ndarray:
    """(repeats,) ``mean(b) - mean(a)`` on random subsets of ``n`` of the paired items (drawn
    without replacement): what a study with only ``n`` items could have reported."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(a.size, size=n, replace=False) for _ in range(repeats)])
    return (b[idx] - a[idx]).mean(axis=1)
