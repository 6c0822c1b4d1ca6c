"""Per-item steerability: how each input responds to one vector at one layer.

For a small coefficient grid around zero, each item's **response** is the log-probability of
its gold option against the others (``log_softmax`` over the options' scores, at the gold
option), and its **slope** the least-squares slope of that response over the coefficients (per
unit coefficient, in ``scale`` units), with a 95% t-interval from the fit's residuals (three or
more coefficients). An item is **steerable** when its interval lies above zero,
**anti-steerable** when it lies below (the vector, added with a positive coefficient, makes its
gold answer less likely), and undecided otherwise; each fraction carries a Wilson interval over
the items.

On a free-answer task (arithmetic, GSM8K...) the response is the mean log-probability per token
of the item's gold answer right after its prompt (teacher-forced, one forward, as cloze scoring
reads an option): what a steer toward the answer would raise. Each batch's blocks up to the
layer run once for all coefficients (:class:`steerlab.engine.Prefix`).

:mod:`steerlab.reliability` runs this over layers, against reference directions, into a report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from tqdm.auto import tqdm

from steerlab import engine
from steerlab.errors import EmptyInputError, OptionError
from steerlab.evaluation import mc_batch, mc_batches
from steerlab.options import COMPARE_SCALE, SCORINGS, BackendName, Scale, Scoring
from steerlab.stats import wilson_interval
from steerlab.steering import steer
from steerlab.tasks import Item, Task, get_task
from steerlab.validate import check_layers
from steerlab.vectors import SteeringVector

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["DEFAULT_COEFFS", "RESPONSES", "Steerability", "gold_responses", "steerability"]

#: a small symmetric grid around zero, in ``norm`` units (fractions of the layer's residual)
DEFAULT_COEFFS: tuple[float, ...] = (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15)

#: what an item's response is, by task kind
RESPONSES = {"mc": "log-probability of the gold option against the other options",
             "gen": "mean log-probability per token of the gold answer as the first words "
                    "after the prompt (a chat reply's first tokens; after a base model's "
                    "'A:', with a space)"}


@dataclass
class Steerability:
    """Per-item slopes of one vector at one layer (see the module doc).

    Attributes:
        frame: one row per item: ``item``, ``slope``, ``lo``, ``hi`` (95% t-interval),
            ``response0`` (the response at coefficient 0 when the grid has it, else NaN).
        responses: (n_coeffs, n_items) the responses the slopes were fitted to.
        response: what a response is (:data:`RESPONSES`).
    """

    frame: pd.DataFrame
    responses: np.ndarray
    layer: int
    coeffs: tuple[float, ...]
    scale: Scale
    method: str
    task: str
    response: str = ""

    def fractions(self) -> dict[str, float | int]:
        """Steerable and anti-steerable fractions of the items, each with its 95% Wilson
        interval, and the mean and median slope."""
        n = len(self.frame)
        up = int((self.frame["lo"] > 0).sum())
        down = int((self.frame["hi"] < 0).sum())
        s_lo, s_hi = wilson_interval(up, n)
        a_lo, a_hi = wilson_interval(down, n)
        return {"n": n, "steerable": up / n, "steerable_low": s_lo, "steerable_high": s_hi,
                "anti_steerable": down / n, "anti_low": a_lo, "anti_high": a_hi,
                "mean_slope": float(self.frame["slope"].mean()),
                "median_slope": float(self.frame["slope"].median())}


def _fit(coeffs: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column least-squares slope of ``y`` (k, n) over ``coeffs`` (k,), with its 95%
    t-interval (NaN with fewer than three coefficients)."""
    c = coeffs - coeffs.mean()
    sxx = float((c ** 2).sum())
    slope = (c[:, None] * (y - y.mean(0))).sum(0) / sxx
    k = len(coeffs)
    if k < 3:
        nan = np.full_like(slope, math.nan)
        return slope, nan, nan
    fitted = y.mean(0) + slope * c[:, None]
    se = np.sqrt(((y - fitted) ** 2).sum(0) / (k - 2) / sxx)
    t = float(sps.t.ppf(0.975, k - 2))
    return slope, slope - t * se, slope + t * se


def _scored(task: Task, items: Sequence[Item]) -> list[Item]:
    """The items as options are scored: a free answer's gold text is its one option."""
    if task.kind == "mc":
        return list(items)
    return [replace(it, options=(it.answer,)) for it in items]


@torch.no_grad()
def gold_responses(model: Model, task: Task, items: Sequence[Item], layer: int,
                   added: Sequence[torch.Tensor], chat: bool, scoring: Scoring,
                   batch_size: int = 16, backend: BackendName = "hf",
                   progress: bool = False, only: Sequence[int] | None = None) -> np.ndarray:
    """(len(added), n_items): each item's response (:data:`RESPONSES`) with each (d_model,)
    vector of ``added`` added at ``layer`` (``resid_post``, every position). Items are
    batched as :func:`steerlab.evaluation.mc_batches` batches them; ``only``: the batches to
    run (indices into that list; the other items stay NaN). Each batch runs blocks
    ``0..layer`` once for all the vectors where the backend can replay
    (:mod:`steerlab.engine`)."""
    be = model.backend(backend)
    scored = _scored(task, items)
    out = np.full((len(added), len(scored)), math.nan)
    gold = [it.options.index(it.answer) for it in scored]
    batches = mc_batches(model, scored, scoring, chat, batch_size)
    run = [batches[b] for b in only] if only is not None else batches
    for idx in tqdm(run, desc=f"{task.name} L{layer} slopes", disable=not progress,
                    leave=False):
        # a chat reply begins with the answer itself; a base model's "A:" with a space
        mc = mc_batch(model, [scored[i] for i in idx], scoring, chat,
                      space=task.kind == "mc" or not chat)
        prefix = engine.Prefix(be, mc.enc)
        prefix.reach(layer)
        for k, v in enumerate(added):
            with steer(model, v, layers=layer, coeff=1.0, backend=backend):
                logits = prefix.forward(keep=mc.keep)
            for i, scores in zip(idx, mc.finish(logits), strict=True):
                s = torch.as_tensor(scores, dtype=torch.float64)
                out[k, i] = float(torch.log_softmax(s, 0)[gold[i]] if task.kind == "mc"
                                  else s[gold[i]])
    return out


def _grid(coeffs: Sequence[float]) -> tuple[float, ...]:
    grid = tuple(float(c) for c in coeffs)
    if not all(math.isfinite(c) for c in grid):
        raise OptionError(f"coeffs={list(coeffs)}: every coefficient must be a finite number.")
    if len(set(grid)) < 2 or len(set(grid)) != len(grid):
        raise OptionError(f"coeffs={list(coeffs)}: give two or more distinct coefficients "
                          "(three or more for per-item intervals), e.g. -0.1, 0, 0.1.")
    return grid


def _scoring(task: Task, scoring: Scoring | None) -> Scoring:
    if task.kind != "mc":
        if scoring not in (None, "cloze"):
            raise OptionError(f"scoring={scoring!r}: task {task.name!r} has free answers, "
                              "read as the gold answer's log-probability (leave scoring unset).")
        return "cloze"
    use = scoring or task.scoring
    if use not in SCORINGS or use == "generate":
        raise OptionError(f"scoring={use!r}: use letter, text or cloze (options scored "
                          "by log-probability).")
    return use


def steerability(model: Model, vector: SteeringVector, layer: int, task: Task | str,
                 coeffs: Sequence[float] = DEFAULT_COEFFS, items: Sequence[Item] | None = None,
                 n: int | None = 100, seed: int = 0, scale: Scale = COMPARE_SCALE,
                 chat: bool | None = None, scoring: Scoring | None = None,
                 batch_size: int = 16, backend: BackendName = "hf",
                 progress: bool = False) -> Steerability:
    """Each item's slope of its response (:data:`RESPONSES`) over ``coeffs`` (``vector`` at
    ``layer``, ``coeff x scale`` units, :meth:`SteeringVector.added`), with its interval."""
    the_task = get_task(task) if isinstance(task, str) else task
    grid = _grid(coeffs)
    (layer,) = check_layers(model, [layer])
    vector.check_compatible(model)
    use_scoring = _scoring(the_task, scoring)
    use = list(items) if items is not None else the_task.items(n, seed)
    if not use:
        raise EmptyInputError(f"No items to measure steerability on for task {the_task.name}.")
    added = [vector.added(layer, c, scale)[0] for c in grid]
    y = gold_responses(model, the_task, use, layer, added, model.uses_chat(chat), use_scoring,
                       batch_size, backend, progress)
    return _steerability(y, grid, [it.id for it in use], layer, scale, vector.method,
                         the_task)


def _steerability(y: np.ndarray, grid: tuple[float, ...], ids: list[str], layer: int,
                  scale: Scale, method: str, task: Task) -> Steerability:
    slope, lo, hi = _fit(np.array(grid), y)
    zero = grid.index(0.0) if 0.0 in grid else None
    frame = pd.DataFrame({"item": ids, "slope": slope, "lo": lo, "hi": hi,
                          "response0": y[zero] if zero is not None else math.nan})
    return Steerability(frame, y, layer, grid, scale, method, task.name, RESPONSES[task.kind])
