"""The seed replication's protocol, run as it was and as it should be.

**As it was** (:func:`seed_protocol`): MMLU-Pro reasoning questions, about 100 per condition,
Hong et al.'s projection ``h <- h + a (h . r̂) r̂`` at every layer's block input, attention
output and MLP output (r̂ the direction of one layer, each layer >= 3 tried in turn), and
**the best layer picked on the same items it is reported on**, with no interval. Here the
same protocol is a set of sweeps (:func:`steerlab.sweeps.sweep` with ``mode="project"``,
``scope="all"``), one per *draw* (a seeded item sample, which also seeds the random and
shuffled controls), so the "best-layer gain" the protocol reports can be read off for the
difference-of-means direction and for directions that carry no reasoning signal:
:func:`best_layer_gains` gives its distribution per direction, next to the gains the seed
reported (:data:`SEED_REPORTED`).

**As it should be** (:func:`honest_protocol`): layer and coefficient picked on a dev split,
the pick evaluated once on disjoint test items with a paired interval against the unsteered
model; the dev sweep's verdict carries Holm-adjusted p-values.

Scoring: ``letter`` (the log-probability of each option letter after the question and its
options: one forward per item, the full-scale version on a CPU) or ``generate``, the seed's
own: up to 200 greedy tokens per item and cell, steered at every position, the letter
extracted from the text (:func:`steerlab.answers.extract_letter`); on this project's CPUs it
runs at a reduced scale (see the README).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steerlab.errors import OptionError
from steerlab.evaluation import evaluate
from steerlab.reports import steered_cells
from steerlab.stats import comparison_row
from steerlab.steering import hong_projection
from steerlab.sweep_journal import NO_LETTER, answered
from steerlab.sweep_plan import SweepConfig
from steerlab.sweeps import build_vectors, sweep
from steerlab.tasks import LETTERS, Task, get_task

if TYPE_CHECKING:
    from steerlab.models import Model

#: what the seed replication reported (its logs; best layer picked on the evaluation items,
#: about 100 MMLU-Pro reasoning questions, no intervals): unsteered and best-layer accuracy
SEED_REPORTED: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.2-1B": {"unsteered": 0.120, "best": 0.207, "layer": 6},
    "meta-llama/Llama-3.2-1B-Instruct": {"unsteered": 0.129, "best": 0.239, "layer": 10},
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": {"unsteered": 0.000, "best": 0.278,
                                                  "layer": None},
}
TASK = "mmlu-pro-reasoning"
FIRST_LAYER = 3  # the seed tried every layer from 3 on
COEFFS = (0.1,)  # Hong et al.'s a, in their +-0.05..0.15 range


def protocol_layers(model: Model, every: int = 1) -> list[int]:
    """The layers the seed tried: every layer from :data:`FIRST_LAYER` on (``every`` > 1:
    every ``every``-th of them, the reduced scale)."""
    if every < 1:
        raise OptionError(f"every must be >= 1, got {every}.")
    if model.n_layers <= FIRST_LAYER:
        raise OptionError(f"{model.name} has {model.n_layers} layers: the protocol tries layers "
                          f">= {FIRST_LAYER}.")
    return list(range(FIRST_LAYER, model.n_layers, every))


def protocol_config(model: Model, seed: int = 0, n: int | None = 100,
                    layers: Sequence[int] | None = None, coeffs: Sequence[float] = COEFFS,
                    methods: Sequence[str] = ("diff_means", "random", "shuffled"),
                    task: str | Task = TASK, **options: Any) -> SweepConfig:
    """The sweep of one draw of the seed's protocol: Hong et al.'s all-sites projection from
    each layer in turn (``coeffs`` are their ``a``), letter scoring, ``n`` items sampled with
    ``seed`` (which also seeds the controls)."""
    fixed = {"task", "layers", "coeffs", "methods", "n", "seed", "scale", "mode", "scope"}
    unknown = sorted(set(options) - (set(SweepConfig.__dataclass_fields__) - fixed))
    if unknown:
        raise OptionError(f"Unknown or fixed protocol option(s) {unknown}: the protocol sets "
                          f"{sorted(fixed)} itself; others: "
                          f"{sorted(set(SweepConfig.__dataclass_fields__) - fixed)}.")
    return SweepConfig(task, list(layers) if layers is not None else protocol_layers(model),
                       list(coeffs), tuple(methods), n=n, seed=seed,  # type: ignore[arg-type]
                       scale="raw", mode="project", scope="all",
                       scoring=options.pop("scoring", "letter"), **options)


def seed_protocol(model: Model, draws: int = 3, out: str | Path | None = None,
                  progress: bool = True, **kwargs: Any) -> pd.DataFrame:
    """The seed's protocol repeated over ``draws`` seeded item samples (and control seeds):
    one resumable sweep per draw (``out``: a directory; ``draw<k>.parquet`` in it). Returns
    the sweeps' rows with a ``draw`` column (see :func:`best_layer_gains`). ``kwargs`` go to
    :func:`protocol_config` (``n``, ``layers``, ``coeffs``, ``methods``, ...)."""
    if draws < 1:
        raise OptionError(f"draws must be >= 1, got {draws}.")
    frames = []
    for d in range(draws):
        cfg = protocol_config(model, seed=d, **kwargs)
        path = Path(out) / f"draw{d}.parquet" if out is not None else None
        frames.append(sweep(model, cfg, out=path, progress=progress).assign(draw=d))
    return pd.concat(frames, ignore_index=True)


def best_layer_gains(table: pd.DataFrame) -> pd.DataFrame:
    """What the seed's protocol reports, per (method, draw): the cell of highest accuracy on
    the evaluation items themselves (best layer and coefficient), its accuracy, the unsteered
    accuracy on the same items and the "gain" between them, which the protocol reports
    without an interval; the cell's paired interval and raw and Holm-adjusted p are kept to
    show what the pick means."""
    rows = []
    draws = table["draw"] if "draw" in table.columns else pd.Series(0, index=table.index)
    for (method, draw), g in table[steered_cells(table)].groupby(
            [table["method"], draws], sort=False):
        best = g.loc[g["accuracy"].idxmax()]
        rows.append({"method": method, "draw": int(draw), "best_layer": int(best.layer),
                     "best_coeff": float(best.coeff), "accuracy": float(best.accuracy),
                     "unsteered": float(best.baseline), "gain": float(best.accuracy
                                                                      - best.baseline),
                     "delta_low": float(best.delta_low), "delta_high": float(best.delta_high),
                     "p_mcnemar": float(best.p_mcnemar),
                     "p_holm": float(best.get("p_holm", np.nan)), "cells": len(g),
                     "n": int(best.n)})
    return pd.DataFrame(rows)


def answer_letters(table: pd.DataFrame, gold: dict[int, str] | None = None) -> pd.DataFrame:
    """Which letters the model answered, per draw and condition: unsteered, and each
    direction's best-layer cell (the one :func:`best_layer_gains` picks). One row each with
    the share of every letter, the most common letter and its share, the share of items
    whose letter the steering changed (``changed``), and (``gold``: the gold
    letters of each draw's items, e.g. from :func:`gold_letters`) the gold letters' own
    shares as a ``gold`` row, so a best-layer "gain" that only moves answers towards a
    letter the sample happens to favour can be read off. Needs the journal's ``answered``
    column (recorded by sweeps of multiple-choice tasks); generated answers that named no
    letter count as :data:`~steerlab.sweep_journal.NO_LETTER` (``-``)."""
    if "answered" not in table.columns:
        raise OptionError("This table has no answered letters: it was recorded before sweeps "
                          "kept them (rerun the sweep into a new --out).")
    draws = table["draw"] if "draw" in table.columns else pd.Series(0, index=table.index)
    best = best_layer_gains(table)
    rows = []

    def shares(condition: str, draw: int, letters: str, layer: int = -1,
               unsteered: str | None = None) -> dict[str, Any]:
        counts = pd.Series(list(letters)).value_counts()
        top = str(counts.index[0])
        changed = np.nan if unsteered is None else float(np.mean(
            [a != b for a, b in zip(letters, unsteered, strict=True)]))
        return {"draw": draw, "condition": condition, "layer": layer, "n": len(letters),
                "top": top, "top_share": counts.iloc[0] / len(letters), "changed": changed,
                **{c: counts.get(c, 0) / len(letters) for c in (*LETTERS, NO_LETTER)}}

    for draw in sorted(set(draws)):
        here = table[draws == draw]
        if gold is not None:
            rows.append(shares("gold", int(draw), gold[int(draw)]))
        base = here[here["method"] == "baseline"]
        unsteered = str(base["answered"].iloc[0])
        rows.append(shares("unsteered", int(draw), unsteered))
        for b in best[best["draw"] == draw].itertuples():
            cell = here[(here["method"] == b.method) & (here["layer"] == b.best_layer)
                        & (here["coeff"] == b.best_coeff)]
            rows.append(shares(f"{b.method} best", int(draw), str(cell["answered"].iloc[0]),
                               b.best_layer, unsteered))
    out = pd.DataFrame(rows)
    return out[[c for c in out.columns if c not in (*LETTERS, NO_LETTER) or out[c].any()]]


def gold_letters(draws: int, n: int | None = 100, task: str | Task = TASK) -> dict[int, str]:
    """The gold answer letter of each item of each of the protocol's draws (the items
    :func:`seed_protocol` evaluates: ``n`` sampled with the draw's seed)."""
    t = get_task(task) if isinstance(task, str) else task
    return {d: "".join(LETTERS[it.answer_index] for it in t.items(n, d)) for d in range(draws)}


def gain_distribution(gains: pd.DataFrame) -> pd.DataFrame:
    """Per method: how large a best-layer gain the protocol produced over the draws (mean,
    min, max, and the share of draws with a positive gain)."""
    return gains.groupby("method", sort=False)["gain"].agg(
        draws="count", mean="mean", min="min", max="max",
        positive=lambda g: float((g > 0).mean())).reset_index()


def split_items(task: Task | str, n_dev: int, n_test: int, seed: int = 0
                ) -> tuple[Task, Task]:
    """Two disjoint, seeded item sets of ``task`` as tasks of their own (``<name>[dev]``,
    ``<name>[test]``), so sweeps and evaluations keep them apart."""
    t = get_task(task) if isinstance(task, str) else task
    items = list(t.load_items())
    if n_dev < 1 or n_test < 1 or n_dev + n_test > len(items):
        raise OptionError(f"{t.name} has {len(items)} items: cannot split {n_dev} dev + "
                          f"{n_test} test items (each >= 1, together at most {len(items)}).")
    random.Random(f"{t.name}:dev-test:{seed}").shuffle(items)
    dev, test = tuple(items[:n_dev]), tuple(items[n_dev:n_dev + n_test])
    return (dataclasses.replace(t, name=f"{t.name}[dev]", load_items=lambda: list(dev)),
            dataclasses.replace(t, name=f"{t.name}[test]", load_items=lambda: list(test)))


def honest_protocol(model: Model, n_dev: int = 100, n_test: int = 100, seed: int = 0,
                    method: str = "diff_means", out: str | Path | None = None,
                    progress: bool = True, **kwargs: Any) -> dict[str, Any]:
    """The protocol done right: the sweep of :func:`protocol_config` on ``n_dev`` dev items
    (its table with raw and Holm-adjusted p), the best ``method`` cell picked there, then
    evaluated once on ``n_test`` disjoint test items against the unsteered model on the same
    items (paired interval, McNemar p). ``out``: a directory for the dev sweep's journal.

    Returns:
        ``dev`` (the dev sweep's table), ``pick`` (layer, coeff, dev accuracy and gain),
        ``test`` (a :func:`steerlab.stats.comparison_row` of the pick vs unsteered on test),
        ``dev_letters`` (:func:`answer_letters` of the dev sweep, with the dev gold letters)
        and ``test_letters`` (unsteered and steered on test: the most common answered letter,
        its share, and the share of test items whose gold answer is that letter).
    """

    dev_task, test_task = split_items(kwargs.pop("task", TASK), n_dev, n_test, seed)
    cfg = protocol_config(model, seed=seed, n=None, task=dev_task, **kwargs)
    if method not in cfg.methods:
        raise OptionError(f"method {method!r} is not swept: methods={list(cfg.methods)}.")
    dev = sweep(model, cfg, out=Path(out) / "dev.parquet" if out is not None else None,
                progress=progress)
    cells = dev[steered_cells(dev) & (dev["method"] == method)]
    best = cells.loc[cells["accuracy"].idxmax()]
    layer, coeff = int(best.layer), float(best.coeff)
    test_items = test_task.items()
    # the pick's direction, extracted exactly as the dev sweep extracted it (same recipe,
    # source and seed), on prompts checked to share no question with dev or test items
    vecs = build_vectors(model, dev_task, [layer], [method], seed, cfg.extract_from,
                         cfg.extract_n, cfg.reduction, cfg.chat, cfg.batch_size, cfg.backend,
                         [*dev_task.items(), *test_items])
    vec = vecs.vectors[method][layer]
    ev: dict[str, Any] = {"items": test_items, "scoring": cfg.scoring, "progress": False,
                          "batch_size": cfg.batch_size, "backend": cfg.backend}
    base = evaluate(model, test_task, **ev)
    with hong_projection(model, vec, from_layer=layer, coeff=coeff, backend=cfg.backend):
        steered = evaluate(model, test_task, **ev)
    def letters_of(items: Sequence[Any], got: Sequence[str], gold: str) -> dict:
        """The most common answered letter, its share, and the gold answers' share of it."""
        said = answered(items, got)
        top = max(LETTERS, key=said.count)
        return {"top": top, "top_share": said.count(top) / len(said),
                "gold_share_of_top": gold.count(top) / len(gold)}

    dev_gold = "".join(LETTERS[it.answer_index] for it in dev_task.items())
    test_gold = "".join(LETTERS[it.answer_index] for it in test_items)
    dev_letters = answer_letters(dev, {0: dev_gold}) if "answered" in dev.columns else None
    return {"dev": dev,
            "pick": {"method": method, "layer": layer, "coeff": coeff,
                     "dev_accuracy": float(best.accuracy), "dev_unsteered": float(best.baseline),
                     "dev_gain": float(best.delta), "dev_p_holm": float(best.p_holm)},
            "test": {**comparison_row(base.correct, steered.correct, seed=seed),
                     "n_dev": n_dev, "n_test": n_test},
            # what moved: the answered letters, dev (every condition's best cell) and test
            "dev_letters": dev_letters,
            "test_letters": {"unsteered": letters_of(test_items, base.predictions, test_gold),
                             "steered": letters_of(test_items, steered.predictions, test_gold)}}
