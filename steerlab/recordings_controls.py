"""Recordings of the controls: kind patching scored by cloze (notebook 07) and on generated
answers (notebook 08), and reliability reports (notebook 08), each read back in the dtype it
was recorded in and spot-checked, as :mod:`steerlab.recordings` does for sweeps and training:
one randomly drawn recorded batch and cell computed again exactly as the recording computed it,
compared item by item, a line to the terminal and the notebook, an error when it differs.
What is not recorded is computed (saying so) in the machine's default dtype.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from steerlab import _io, kinds_gen
from steerlab.console import say
from steerlab.kinds import (
    KIND_CONDITIONS,
    KindPlan,
    cell_name,
    config_key,
    journal_dtype,
    kind_cells,
    kind_config,
    plan_kind_patching,
    recorded_batches,
    run_kind_patching,
)
from steerlab.kinds import recorded_dtype as kind_dtype
from steerlab.recordings import computing, read_back
from steerlab.reliability import Reliability, cell_id, plan_reliability, reliability_report
from steerlab.spotcheck import (
    NORM_RTOL,
    TRAIN_RTOL,
    SpotCheck,
    SpotCheckError,
    compare,
    draw,
    report,
    shown,
    slack,
)
from steerlab.steerability import gold_responses

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.vectors import SteeringVector

__all__ = ["check_kind_patching", "check_kind_patching_gen", "check_reliability",
           "recorded_kind_patching", "recorded_kind_patching_gen", "recorded_reliability"]


# --- kind patching scored by cloze (notebook 07) ----------------------------------------------

def recorded_kind_patching(name: str, target: str, out: str | Path, progress: bool = True,
                           model: Model | None = None, **options: Any
                           ) -> tuple[Model, pd.DataFrame]:
    """:func:`steerlab.kinds.kind_patching` of model ``name`` on ``target`` (``options``: its
    other arguments) with the journal ``out``: read back in the dtype it was recorded in and
    spot-checked (:func:`check_kind_patching`) when ``out`` holds every batch, else the
    missing batches computed in the machine's default dtype, saying so. Returns the model it
    used (``model`` when that one fits) and the table."""

    model = read_back(name, model, out, lambda m: kind_dtype(m, out, target=target, **options))
    config = kind_config(model, target, **options)
    batches = -(-len(config["items"]) // config["batch_size"])
    missing = batches - len(recorded_batches(config_key(config), out))
    if missing:
        computing(out, missing, f"of {batches} batch(es) of kind patching on {target}",
                  config["dtype"])
    plan = plan_kind_patching(model, target, **options)  # the sources read once, for both
    frame = run_kind_patching(plan, progress, out)
    if not missing:
        check_kind_patching(model, target, out, options, plan=plan)
    return model, frame


def check_kind_patching(model: Model, target: str, out: str | Path,
                        options: dict[str, Any] | None = None,
                        seed: int | None = None, plan: KindPlan | None = None) -> SpotCheck:
    """Spot-check the recorded kind patching of ``target`` (``options``: the other arguments
    of :func:`steerlab.kinds.kind_patching`) in the journal ``out`` on ``model`` (in the
    recorded dtype): one random recorded batch, one random cell of it (a layer and condition,
    or the unsteered run) computed again (the sources cached again, the blocks before the
    layer recorded and replayed as the recording did); each item's chosen option and
    correctness compared with the journal, and the edit's norm to
    :data:`~steerlab.spotcheck.NORM_RTOL`. ``plan``: the run's plan when already made."""

    plan = plan or plan_kind_patching(model, target, **(options or {}))
    batches = recorded_batches(plan.key, out)
    if not batches:
        raise SpotCheckError(f"{shown(out)} holds no batch of kind patching on {target} in "
                             f"{plan.config['dtype']}: nothing to check.")
    rng, seed = draw(f"{shown(out)}:{target}", seed)
    start = rng.choice(sorted(batches))
    cells = [None] + [(l, c) for l in plan.layers for c in KIND_CONDITIONS]
    cell = rng.choice(cells)
    name = "base" if cell is None else cell_name(*cell)
    idx = list(range(start, min(start + plan.batch_size, len(plan.items))))
    drawn = (f"{target}, {'the unsteered run' if cell is None else f'layer {cell[0]} {cell[1]}'}"
             f", batch {plan.starts.index(start) + 1}/{len(plan.starts)} ({len(idx)} of "
             f"{len(plan.items)} items)")
    say(f"spot check of {shown(out)} ({plan.config['dtype']}): computing {drawn} again")
    t0 = time.perf_counter()
    got = kind_cells(plan, start, [] if cell is None else [cell], base=cell is None)[name]
    row = batches[start][name]
    differ, compared, what = _compare_cell(row, got, idx, "chosen", "chosen option")
    return report(SpotCheck(shown(out), drawn, plan.config["dtype"], compared, differ,
                            time.perf_counter() - t0, seed, what=what,
                            tolerance=slack(plan.config["dtype"], model.device, len(idx))))


def _compare_cell(row: dict[str, Any], got: dict[str, Any], idx: list[int], field: str,
                  name: str) -> tuple[list[str], int, str]:
    """What differs between a recorded kind-patching cell and its recomputation: each item's
    ``field`` (called ``name``), correctness and, for edited cells, the edit's norm (to
    :data:`~steerlab.spotcheck.NORM_RTOL`); with the number of values compared and what."""
    differ = compare([str(c) for c in row[field]], [str(c) for c in got[field]], idx, name)
    differ += compare([str(c) for c in row["correct"]], [str(c) for c in got["correct"]], idx,
                      "correct")
    what, compared = f"{name}s and correctness", 2 * len(idx)
    if "norm" in row:
        what += f", edit norms (to {NORM_RTOL:.0%})"
        compared += len(idx)
        differ += [f"item {i}: edit norm recorded {r:.4f}, now {g:.4f}"
                   for i, r, g in zip(idx, row["norm"], got["norm"], strict=True)
                   if abs(r - g) > NORM_RTOL * max(abs(r), 1e-12)]
    return differ, compared, what


# --- kind patching scored on generated answers (notebook 08) ----------------------------------

def recorded_kind_patching_gen(name: str, out: str | Path, progress: bool = True,
                               model: Model | None = None, **options: Any
                               ) -> tuple[Model, pd.DataFrame]:
    """:func:`steerlab.kinds_gen.kind_patching_gen` of model ``name`` (``options``: its other
    arguments) with the journal ``out``: read back in the dtype it was recorded in and
    spot-checked (:func:`check_kind_patching_gen`) when ``out`` holds every batch, else the
    missing batches computed in the machine's default dtype, saying so."""
    model = read_back(name, model, out, lambda m: kinds_gen.recorded_dtype(m, out, **options))
    config = kinds_gen.kind_gen_config(model, **options)
    batches = -(-len(config["items"]) // config["batch_size"])
    missing = batches - len(recorded_batches(config_key(config), out))
    if missing:
        computing(out, missing, f"of {batches} batch(es) of generative kind patching",
                  config["dtype"])
    plan = kinds_gen.plan_kind_patching_gen(model, **options)  # sources read once, for both
    frame = kinds_gen.run_kind_patching_gen(plan, progress, out)
    if not missing:
        check_kind_patching_gen(model, out, options, plan=plan)
    return model, frame


def check_kind_patching_gen(model: Model, out: str | Path, options: dict[str, Any] | None = None,
                            seed: int | None = None,
                            plan: kinds_gen.GenKindPlan | None = None) -> SpotCheck:
    """Spot-check a recorded :func:`~steerlab.kinds_gen.kind_patching_gen` run (``options``:
    its arguments) in the journal ``out`` on ``model`` (in the recorded dtype): one random
    recorded batch, one random cell of it (or the unsteered run) decoded again; each item's
    judged answer and correctness compared with the journal, and the edit's norm to
    :data:`~steerlab.spotcheck.NORM_RTOL`. ``plan``: the run's plan when already made."""
    plan = plan or kinds_gen.plan_kind_patching_gen(model, **(options or {}))
    batches = kinds_gen.recorded_batches(plan.key, out)
    if not batches:
        raise SpotCheckError(f"{shown(out)} holds no batch of generative kind patching in "
                             f"{plan.config['dtype']}: nothing to check.")
    rng, seed = draw(f"{shown(out)}:gen", seed)
    start = rng.choice(sorted(batches))
    cell = rng.choice([None] + [(l, c) for l in plan.layers
                                for c in kinds_gen.GEN_KIND_CONDITIONS])
    name = "base" if cell is None else kinds_gen.cell_name(*cell)
    idx = list(range(start, min(start + plan.batch_size, len(plan.items))))
    drawn = (f"{plan.target}, {'the unsteered run' if cell is None else f'layer {cell[0]} '}"
             f"{'' if cell is None else cell[1]}, batch {plan.starts.index(start) + 1}/"
             f"{len(plan.starts)} ({len(idx)} of {len(plan.items)} items; generated answers)")
    say(f"spot check of {shown(out)} ({plan.config['dtype']}): computing {drawn} again")
    t0 = time.perf_counter()
    got = kinds_gen.gen_kind_cells(plan, start, [] if cell is None else [cell],
                                   base=cell is None)[name]
    row = batches[start][name]
    differ, compared, what = _compare_cell(row, got, idx, "answer", "judged answer")
    return report(SpotCheck(shown(out), drawn, plan.config["dtype"], compared, differ,
                            time.perf_counter() - t0, seed, what=what,
                            tolerance=slack(plan.config["dtype"], model.device, len(idx))))


# --- reliability reports (notebook 08) --------------------------------------------------------

def recorded_reliability(name: str, vector: SteeringVector, task: str, out: str | Path,
                         progress: bool = True, model: Model | None = None, **options: Any
                         ) -> tuple[Model, Reliability]:
    """:func:`steerlab.reliability.reliability_report` of ``vector`` on model ``name`` and
    ``task`` (``options``: its other arguments) with the journal ``out``: read back in the
    dtype it was recorded in and spot-checked (:func:`check_reliability`) when ``out`` holds
    every cell, else the missing cells computed in the machine's default dtype, saying so."""
    model = read_back(name, model, out, lambda m: journal_dtype(
        out, plan_reliability(m, vector, task, **options).config))
    plan = plan_reliability(model, vector, task, **options)
    have = {r["cell"] for r in _io.read_jsonl(out) if r.get("key") == plan.key}
    missing = [c for c in plan.cells() if cell_id(c[0], c[1], c[2]) not in have]
    if missing:
        computing(out, len(missing), f"of {len(plan.cells())} reliability cell(s) of "
                  f"{vector.method} on {task}", plan.config["dtype"])
    rep = reliability_report(model, vector, task, out=out, progress=progress, **options)
    if not missing:
        check_reliability(model, vector, task, out, options)
    return model, rep


def check_reliability(model: Model, vector: SteeringVector, task: str, out: str | Path,
                      options: dict[str, Any] | None = None, seed: int | None = None
                      ) -> SpotCheck:
    """Spot-check a recorded reliability report: one random recorded cell (layer, method),
    one random batch of its items as the report batched them, every coefficient's responses
    computed again and compared with the journal item by item (each to
    :data:`~steerlab.spotcheck.TRAIN_RTOL`, relative to the larger of 1 and the response)."""
    plan = plan_reliability(model, vector, task, **(options or {}))
    rows = {r["cell"]: r for r in _io.read_jsonl(out) if r.get("key") == plan.key}
    if not rows:
        raise SpotCheckError(f"{shown(out)} holds no cell of this reliability report in "
                             f"{plan.config['dtype']}: nothing to check.")
    rng, seed = draw(f"{shown(out)}:reliability", seed)
    layer, method, ref_seed, vec = rng.choice(
        [c for c in plan.cells() if cell_id(c[0], c[1], c[2]) in rows])
    batches = plan.batches(model)
    b = rng.randrange(len(batches))
    idx = batches[b]
    drawn = (f"{method}{'' if ref_seed is None else f' {ref_seed}'} at layer {layer}, batch "
             f"{b + 1}/{len(batches)} ({len(idx)} of {len(plan.items)} items, "
             f"{len(plan.coeffs)} coefficients)")
    say(f"spot check of {shown(out)} ({plan.config['dtype']}): computing {drawn} again")
    t0 = time.perf_counter()
    added = [vec.added(layer, c, plan.config["scale"])[0] for c in plan.coeffs]
    got = gold_responses(model, plan.task, plan.items, layer, added, plan.chat, plan.scoring,
                         plan.config["batch_size"], plan.config["backend"], only=[b])
    want = np.array(rows[cell_id(layer, method, ref_seed)]["responses"], dtype=float)
    differ = []
    for i in idx:
        off = np.abs(got[:, i] - want[:, i]) > TRAIN_RTOL * np.maximum(1.0, np.abs(want[:, i]))
        if off.any():
            k = int(np.argmax(off))
            differ.append(f"item {i}: response at coeff {plan.coeffs[k]:+g} recorded "
                          f"{want[k, i]:.5f}, now {got[k, i]:.5f}")
    return report(SpotCheck(shown(out), drawn, plan.config["dtype"], len(idx), differ,
                            time.perf_counter() - t0, seed,
                            what=f"per-item responses at every coefficient (to {TRAIN_RTOL})",
                            tolerance=slack(plan.config["dtype"], model.device, len(idx))))
