"""Spot checks of reused recordings: the seeded draw of what to compute again, the comparison
with the journal, and the one line each check prints (:class:`SpotCheck`); a check that fails
raises :class:`SpotCheckError`. :mod:`steerlab.recordings` runs them.
"""

from __future__ import annotations

import math
import os
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from steerlab.console import say
from steerlab.devices import cpu_has_fast_bf16
from steerlab.errors import SteerlabError

__all__ = ["CROSS_KERNEL_ITEMS", "NORM_RTOL", "SEED_ENV", "TOLERANCE", "TRAIN_RTOL",
           "SpotCheck", "SpotCheckError", "compare", "draw", "report", "shown", "slack",
           "spot_seed"]

#: the environment variable that fixes the spot checks' random draws
SEED_ENV = "STEERLAB_SPOT_SEED"
#: items of a recomputed batch allowed to differ from the journal (per-item answers)
TOLERANCE = 0
#: relative tolerance of a replayed training step's float fields (loss, norms); rewards,
#: token counts and the sampled text must be equal
TRAIN_RTOL = 1e-3
#: relative tolerance of a recomputed vector's or edit's norm: bf16 forwards round differently
#: on CPUs with and without native bf16 instructions (a SmolLM2 layer-12 norm recorded on one
#: moved 0.22% on the other, every answer the same); a wrong vector is off by far more
NORM_RTOL = 1e-2
#: the fraction of compared items (at least one) allowed to differ when a bf16 recording is
#: computed again on other bf16 kernels than the ones it was made with (bf16 is the default
#: only on CPUs with native bf16; a CPU without emulates it and accumulates otherwise, and so
#: does a GPU): a near-tie greedy token flips now and then (notebook 05's dev accuracy at step
#: 60, recorded 0.61 on an AVX512-BF16 CPU, came out 0.60 on a CPU without: 1 of 100 items)
CROSS_KERNEL_ITEMS = 0.02


class SpotCheckError(SteerlabError, AssertionError):
    """A recording that does not reproduce: the recomputed batch differs from the journal."""


def spot_seed() -> int:
    """The seed of this run's spot checks: ``$STEERLAB_SPOT_SEED``, else a fresh random one."""
    value = os.environ.get(SEED_ENV)
    return int(value) if value else secrets.randbelow(1_000_000)


def draw(label: str, seed: int | None = None) -> tuple[random.Random, int]:
    """A random source for the draws of the check labelled ``label`` (``seed``, default
    :func:`spot_seed`), and the seed it used."""
    seed = spot_seed() if seed is None else seed
    return random.Random(f"{seed}:{label}"), seed


def shown(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (as the terminal shows it)."""
    path = Path(path).resolve()
    repo = Path(__file__).resolve().parent.parent
    return str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path)


@dataclass
class SpotCheck:
    """One spot check: which recording, what was drawn and computed again, in which dtype,
    and how many of the compared per-item answers (or fields) differ."""

    recording: str
    drawn: str
    dtype: str
    compared: int
    differ: list[str]
    seconds: float
    seed: int
    what: str = "per-item answers"
    #: items allowed to differ (:func:`slack`); anything else that differs fails the check
    tolerance: int = TOLERANCE
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Nothing differs; or, with a :func:`slack` (other bf16 kernels), nothing but
        per-item answers, and the verdict of at most ``tolerance`` items: there a near-tie
        may reword an answer without changing whether it is right (3 of 50 arithmetic
        answers of notebook 05's learned condition, one verdict)."""
        per_item = [d for d in self.differ if d.startswith("item ")]
        others = [d for d in self.differ if not d.startswith("item ")]
        if not self.tolerance:
            return not self.differ
        verdicts = {d.split(":")[0] for d in per_item if ": correct recorded" in d}
        return not others and len(verdicts) <= self.tolerance

    def line(self) -> str:
        status = "passed" if self.ok else "FAILED"
        same = self.compared - len(self.differ)
        allowed = (f"; up to {self.tolerance} verdict(s) may differ, and answers: a bf16 "
                   "recording on other bf16 kernels" if self.tolerance else "")
        return (f"spot check {status}: {self.recording} ({self.dtype}), {self.drawn}: computed "
                f"again in {self.seconds:.0f} s, {same}/{self.compared} {self.what} as "
                f"recorded{allowed} (seed {self.seed}; {SEED_ENV}={self.seed} repeats the "
                "draw)")


def other_kernels(dtype: str, device: torch.device | str) -> bool:
    """True when a ``dtype`` recording computed again on ``device`` may run on other bf16
    kernels than it was made with: a bf16 recording anywhere but a CPU with native bf16."""
    bf16 = dtype in ("bf16", "bfloat16", "torch.bfloat16")
    return bf16 and not (torch.device(device).type == "cpu" and cpu_has_fast_bf16())


def slack(dtype: str, device: torch.device | str, items: int) -> int:
    """Items of ``items`` compared that may differ: none, except :data:`CROSS_KERNEL_ITEMS` of
    them (at least one) where :func:`other_kernels` holds."""
    if not other_kernels(dtype, device):
        return TOLERANCE
    return max(1, math.floor(CROSS_KERNEL_ITEMS * items))


def report(check: SpotCheck) -> SpotCheck:
    """Print the check's line (notebook and terminal); raise :class:`SpotCheckError` when it
    failed, naming what differs."""
    say(check.line())
    if not check.ok:
        detail = "; ".join(check.differ[:8]) + (" ..." if len(check.differ) > 8 else "")
        raise SpotCheckError(f"{check.line()}\nDiffers: {detail}\nThe recording does not "
                             "reproduce on this machine: recompute it (make run-all, or delete "
                             "it) or find what changed.")
    return check


def compare(recorded: Sequence[str], got: Sequence[str], idx: Sequence[int],
            what: str) -> list[str]:
    """One line per item whose ``what`` differs between the journal and the recomputation."""
    return [f"item {i}: {what} recorded {r!r}, now {g!r}"
            for i, r, g in zip(idx, recorded, got, strict=True) if r != g]
