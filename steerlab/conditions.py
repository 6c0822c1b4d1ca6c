"""Conditions compared on the same items: each a vector added at its layers (or the unsteered
model), evaluated once and kept in a journal (:func:`compare_conditions`; notebook 05's
learned vectors against their controls), with the paired difference to a baseline.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steerlab import _io
from steerlab.console import say
from steerlab.devices import dtype_name
from steerlab.errors import OptionError
from steerlab.evaluation import EvalResult, evaluate
from steerlab.spotcheck import NORM_RTOL
from steerlab.stats import comparison_row
from steerlab.steering import steer
from steerlab.tasks import Item, Task, get_task

if TYPE_CHECKING:
    from pathlib import Path

    from steerlab.models import Model
    from steerlab.vectors import SteeringVector


def condition_fingerprint(vec: SteeringVector | None) -> dict[str, Any] | None:
    """What a condition's journal row records of its vector: its method, layers and per-layer
    norms to 3 significant digits."""
    if vec is None:
        return None
    return {"method": vec.method, "layers": list(vec.layers),
            "norms": [f"{float(n):.3g}" for n in vec.norms().values()]}


def condition_key(model: Model, task: str, items: Sequence[Item], batch_size: int,
                  name: str, vec: SteeringVector | None) -> str:
    """The journal key of one condition of :func:`compare_conditions`: model, dtype, task,
    items, batching, the condition's name and its vector's method and layers. The vector's
    norms are not in the key (the last bits of a vector extracted on another CPU may differ,
    and a rounded norm can then round the other way): :func:`recorded_condition` compares
    them to :data:`~steerlab.spotcheck.NORM_RTOL`."""
    fp = condition_fingerprint(vec)
    d = {"model": model.hf_id, "dtype": dtype_name(model.dtype),
         "task": task, "items": [it.id for it in items], "batch_size": batch_size,
         "condition": name, "vector": None if fp is None else
         {"method": fp["method"], "layers": fp["layers"]}}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def recorded_condition(rows: Sequence[dict[str, Any]], key: str,
                       vec: SteeringVector | None) -> dict[str, Any] | None:
    """The journal row of the condition ``key`` whose vector's norms are ``vec``'s (each to
    :data:`~steerlab.spotcheck.NORM_RTOL`; a vector whose norms differ is another vector),
    or None."""
    want = [float(n) for n in vec.norms().values()] if vec is not None else []
    for row in rows:
        if row.get("key") != key:
            continue
        got = [float(n) for n in (row.get("vector") or {}).get("norms", [])]
        if len(got) == len(want) and all(abs(g - w) <= NORM_RTOL * max(abs(w), 1e-12)
                                          for g, w in zip(got, want, strict=True)):
            return row
    return None


def evaluate_condition(model: Model, task: Task, items: Sequence[Item] | None,
                       vec: SteeringVector | None, batch_size: int) -> EvalResult:
    """One condition of :func:`compare_conditions`: ``vec`` added at its layers with
    coefficient 1 (``None``: the unsteered model), greedy, ``batch_size`` items per batch."""
    if vec is None:
        return evaluate(model, task, items=items, batch_size=batch_size)
    with steer(model, vec, coeff=1.0):
        return evaluate(model, task, items=items, batch_size=batch_size)


def compare_conditions(model: Model, conditions: dict[str, SteeringVector | None],
                       task: str = "arithmetic", items: Sequence[Item] | None = None,
                       baseline: str = "base", batch_size: int = 50,
                       seed: int = 0, out: str | Path | None = None) -> pd.DataFrame:
    """Accuracy of ``model`` on the same items under each condition (a vector added at its
    layers with coefficient 1, or ``None`` for the unsteered model), against ``baseline``.

    ``out``: a JSON-lines journal; each condition's evaluation (per-item correctness, answers
    and completions, the model's dtype) is appended when done, and a condition found there
    (:func:`recorded_condition`: the same :func:`condition_key`, its vector's norms) is read
    back instead of evaluated again.

    Returns:
        One row per condition, in ``conditions`` order: ``condition``, the
        :data:`~steerlab.stats.COMPARISON_COLUMNS` of a sweep row
        (:func:`steerlab.stats.comparison_row`: ``accuracy`` with its 95% Wilson interval
        ``ci_low``/``ci_high``, ``baseline`` the baseline condition's accuracy, ``delta`` with
        its paired-bootstrap interval ``delta_low``/``delta_high`` and McNemar ``p_mcnemar``;
        ``seed`` seeds the bootstrap) and ``seconds``.

    Raises:
        OptionError: ``baseline`` is not one of the conditions.
    """
    if baseline not in conditions:
        raise OptionError(f"The baseline {baseline!r} must be one of the conditions "
                          f"{list(conditions)}: add it (e.g. {{{baseline!r}: None, ...}} for "
                          "the unsteered model) or pass baseline= one of them.")
    t = get_task(task)
    its = list(items) if items is not None else t.items()
    recorded = _io.read_jsonl(out) if out is not None else []
    results: dict[str, EvalResult] = {}
    for k, (name, vec) in enumerate(conditions.items(), start=1):
        key = condition_key(model, t.name, its, batch_size, name, vec)
        row = recorded_condition(recorded, key, vec)
        if row is not None:
            results[name] = journal_result(row, its)
            continue
        t0 = time.perf_counter()
        say(f"evaluating condition {k}/{len(conditions)} {name!r} ({len(its)} items)")
        results[name] = evaluate_condition(model, t, its, vec, batch_size)
        say(f"  {name!r}: accuracy {results[name].correct.mean():.3f}, "
            f"{time.perf_counter() - t0:.0f} s")
        if out is not None:
            _io.append_jsonl(out, {
                "key": key, "condition": name, "model": model.hf_id,
                "dtype": dtype_name(model.dtype), "task": t.name,
                "n": len(its), "batch_size": batch_size,
                "vector": condition_fingerprint(vec), "seconds": results[name].seconds,
                "correct": "".join("1" if c else "0" for c in results[name].correct),
                "predictions": list(results[name].predictions),
                "completions": list(results[name].completions)})
    base = results[baseline].correct
    return pd.DataFrame([{"condition": name, **comparison_row(base, res.correct, seed=seed),
                          "seconds": res.seconds} for name, res in results.items()])


def journal_result(row: dict[str, Any], items: Sequence[Item]) -> EvalResult:
    """The :class:`EvalResult` of an evaluation journal row of :func:`compare_conditions`."""
    correct = np.array([c == "1" for c in row["correct"]])
    if len(correct) != len(items):
        raise OptionError(f"A journal row of {row.get('condition')!r} has {len(correct)} items, "
                          f"the evaluation {len(items)}.")
    return EvalResult(row["task"], row["model"], [it.id for it in items], correct,
                      list(row.get("predictions", [])), float(row["seconds"]),
                      extra={"dtype": row.get("dtype")},
                      completions=list(row.get("completions", [])))
