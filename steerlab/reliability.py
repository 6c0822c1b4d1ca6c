"""Is this vector reliable? Per-item steerability and anti-steerable inputs.

A mean accuracy hides how single inputs respond: Tan et al. 2024 ("Analyzing the
generalization and reliability of steering vectors") find that for many behaviours a large
fraction of inputs move *against* the vector. Here, for one vector, one layer and a small
coefficient grid around zero, each item's **response** is the log-probability of its gold
option against the others (``log_softmax`` over the options' scores, at the gold option),
and its **slope** the least-squares slope of that response over the coefficients (per unit
coefficient, in ``scale`` units), with a 95% t-interval from the fit's residuals (three or more
coefficients). An item is **steerable** when its interval lies above zero, **anti-steerable**
when it lies below (the vector, added with a positive coefficient, makes its gold answer less
likely), and undecided otherwise; each fraction carries a Wilson interval over the items.
A norm-matched random direction (:func:`~steerlab.vectors.random_like`) run the same way is
the reference: a vector is reliable where its steerable fraction clearly exceeds the random
direction's and its anti-steerable fraction does not.

Multiple-choice tasks only for now (the options' scores come from one forward); each batch's
blocks up to the layer run once for all coefficients (:class:`steerlab.engine.Prefix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from scipy import stats as sps
from tqdm.auto import tqdm

from steerlab import engine
from steerlab.errors import OptionError
from steerlab.evaluation import mc_batch, mc_batches
from steerlab.options import COMPARE_SCALE, SCORINGS, BackendName, Scale, Scoring
from steerlab.stats import wilson_interval
from steerlab.steering import steer
from steerlab.tasks import Item, Task, get_task
from steerlab.validate import check_layers
from steerlab.vectors import SteeringVector, random_like

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["DEFAULT_COEFFS", "Steerability", "gold_margins", "reliability_table",
           "steerability"]

#: a small symmetric grid around zero, in ``norm`` units (fractions of the layer's residual)
DEFAULT_COEFFS: tuple[float, ...] = (-0.15, -0.1, -0.05, 0.0, 0.05, 0.1, 0.15)


@dataclass
class Steerability:
    """Per-item slopes of one vector at one layer (see the module doc).

    Attributes:
        frame: one row per item: ``item``, ``slope``, ``lo``, ``hi`` (95% t-interval),
            ``response0`` (the response at coefficient 0 when the grid has it, else NaN).
        responses: (n_coeffs, n_items) the responses the slopes were fitted to.
    """

    frame: pd.DataFrame
    responses: np.ndarray
    layer: int
    coeffs: tuple[float, ...]
    scale: Scale
    method: str
    task: str

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


@torch.no_grad()
def gold_margins(model: Model, task: Task, items: Sequence[Item], layer: int,
                 added: Sequence[torch.Tensor], chat: bool, scoring: Scoring,
                 batch_size: int = 16, backend: BackendName = "hf",
                 progress: bool = False) -> np.ndarray:
    """(len(added), n_items): each item's gold-option log-probability against its other
    options (``log_softmax`` over the options' scores) with each (d_model,) vector of
    ``added`` added at ``layer`` (``resid_post``, every position). Each batch runs blocks
    ``0..layer`` once for all of them where the backend can replay (:mod:`steerlab.engine`)."""
    be = model.backend(backend)
    out = np.full((len(added), len(items)), math.nan)
    gold = [it.options.index(it.answer) for it in items]
    batches = mc_batches(model, items, scoring, chat, batch_size)
    for idx in tqdm(batches, desc=f"{task.name} L{layer} slopes", disable=not progress,
                    leave=False):
        mc = mc_batch(model, [items[i] for i in idx], scoring, chat)
        prefix = engine.Prefix(be, mc.enc)
        prefix.reach(layer)
        for k, v in enumerate(added):
            with steer(model, v, layers=layer, coeff=1.0, backend=backend):
                logits = prefix.forward(keep=mc.keep)
            for i, scores in zip(idx, mc.finish(logits), strict=True):
                s = torch.log_softmax(torch.as_tensor(scores, dtype=torch.float64), 0)
                out[k, i] = float(s[gold[i]])
    return out


def steerability(model: Model, vector: SteeringVector, layer: int, task: Task | str,
                 coeffs: Sequence[float] = DEFAULT_COEFFS, items: Sequence[Item] | None = None,
                 n: int | None = 100, seed: int = 0, scale: Scale = COMPARE_SCALE,
                 chat: bool | None = None, scoring: Scoring | None = None,
                 batch_size: int = 16, backend: BackendName = "hf",
                 progress: bool = False) -> Steerability:
    """Each item's slope of its gold-option log-probability over ``coeffs`` (``vector`` at
    ``layer``, ``coeff x scale`` units, :meth:`SteeringVector.added`), with its interval."""
    the_task = get_task(task) if isinstance(task, str) else task
    if the_task.kind != "mc":
        raise OptionError(f"Task {the_task.name!r} is {the_task.kind}: per-item steerability "
                          "is measured on multiple-choice tasks (the gold option against "
                          "the others, from one forward). Use a multiple-choice task.")
    grid = tuple(float(c) for c in coeffs)
    if not all(math.isfinite(c) for c in grid):
        raise OptionError(f"coeffs={list(coeffs)}: every coefficient must be a finite number.")
    if len(set(grid)) < 2 or len(set(grid)) != len(grid):
        raise OptionError(f"coeffs={list(coeffs)}: give two or more distinct coefficients "
                          "(three or more for per-item intervals), e.g. -0.1, 0, 0.1.")
    (layer,) = check_layers(model, [layer])
    vector.check_compatible(model)
    scoring = scoring or the_task.scoring
    if scoring not in SCORINGS or scoring == "generate":
        raise OptionError(f"scoring={scoring!r}: use letter, text or cloze (options scored "
                          "by log-probability).")
    use = list(items) if items is not None else the_task.items(n, seed)
    added = [vector.added(layer, c, scale)[0] for c in grid]
    y = gold_margins(model, the_task, use, layer, added, model.uses_chat(chat), scoring,
                     batch_size, backend, progress)
    slope, lo, hi = _fit(np.array(grid), y)
    zero = grid.index(0.0) if 0.0 in grid else None
    frame = pd.DataFrame({"item": [it.id for it in use], "slope": slope, "lo": lo, "hi": hi,
                          "response0": y[zero] if zero is not None else math.nan})
    return Steerability(frame, y, layer, grid, scale, vector.method, the_task.name)


def reliability_table(model: Model, vector: SteeringVector, task: Task | str,
                      layers: Sequence[int] | None = None, controls: int = 1,
                      **kwargs: Any) -> pd.DataFrame:
    """:meth:`Steerability.fractions` per layer for ``vector`` and for ``controls``
    norm-matched random directions (seeds 0, 1, ...): one row per (layer, method, seed); the
    vector's rows also carry its training sets' predictors where it has them
    (:mod:`steerlab.predictors`: ``consistency``, ``d_prime``, ``probe_acc``)."""
    rows = []
    known = vector.meta.get("predictors", {})
    for layer in check_layers(model, list(layers) if layers is not None else vector.layers):
        refs = [("random", random_like(vector, seed=s), s) for s in range(controls)]
        for method, vec, seed in [(vector.method, vector, None), *refs]:
            st = steerability(model, vec, layer, task, **kwargs)
            extra = known.get(str(layer), {}) if vec is vector else {}
            rows.append({"layer": layer, "method": method, "seed": seed, **st.fractions(),
                         **extra})
    return pd.DataFrame(rows)
