"""Recordings: the expensive results kept in ``results/``, reused in their own dtype and
spot-checked.

A *recording* is a resumable journal that an expensive computation wrote: a sweep
(``results/sweep_*``), a seed-protocol replication (``results/replication_*``, one sweep per
draw), a training run (``results/train_*``) or the evaluations of notebook 05
(``results/train_*/evaluations.jsonl``); :mod:`steerlab.recordings_controls` does the same
for the patching controls and reliability reports of notebooks 07 and 08. Each knows the
dtype it was computed in: a sweep's journal key holds it
(:func:`steerlab.sweeps.recorded_dtype`), a training checkpoint's meta holds it
(:func:`steerlab.train_journal.run_dtype`), an evaluation row holds it. The notebooks read
every recording through this module:

* the model is loaded in the recording's dtype, whatever the machine's default
  (:func:`steerlab.devices.default_dtype`), so the recording is read back, never silently
  recomputed in another dtype;
* each reused recording is **spot-checked**: one randomly drawn recorded cell (or evaluated
  condition, or training step) is computed again, in the recorded dtype, on one batch of its
  items exactly as the recording batched them, and compared with the journal item by item
  (:data:`steerlab.spotcheck.TOLERANCE` differing items allowed: none). The terminal and the
  notebook get one line per check (:mod:`steerlab.spotcheck`); a check that fails raises.
  ``$STEERLAB_SPOT_SEED`` fixes the draws (the line names the seed it used);
* what is not recorded is computed (with a line saying so and the sweep's progress bar).

``$STEERLAB_RECOMPUTE=1`` (``make run-all``) reuses nothing: the notebooks write every
recording anew under ``runs/recomputed/`` (:func:`steerlab.notebooks.results_root`), in the
machine's default dtype, and ``results/`` stays as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from steerlab import _io
from steerlab.cells import can_share_prefix, evaluate_cells
from steerlab.conditions import (
    compare_conditions,
    condition_key,
    evaluate_condition,
    recorded_condition,
)
from steerlab.console import say
from steerlab.devices import dtype_name
from steerlab.evaluation import evaluate, evaluation_batches
from steerlab.models import load_model
from steerlab.replication import protocol_config
from steerlab.spotcheck import (
    NORM_RTOL,
    TRAIN_RTOL,
    SpotCheck,
    SpotCheckError,
    compare,
    draw,
    other_kernels,
    report,
    shown,
    slack,
)
from steerlab.steering import steer
from steerlab.sweep_journal import NO_LETTER, answered
from steerlab.sweep_plan import plan_sweep
from steerlab.sweeps import (
    build_vectors,
    cell_steering,
    missing_cells,
    recorded_dtype,
    recorded_rows,
    sweep,
)
from steerlab.tasks import get_task
from steerlab.train import replay, replayable, train_rloo
from steerlab.train_journal import JOURNAL, checkpoint_step, run_dtype

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.sweep_plan import SweepConfig
    from steerlab.tasks import Item
    from steerlab.vectors import SteeringVector

__all__ = ["Evaluations", "check_evaluation", "check_sweep", "check_training", "load_in",
           "read_back", "recorded_protocol", "recorded_sweep", "recorded_training"]


def load_in(name: str, dtype: str, model: Model | None = None, why: str = "") -> Model:
    """``model`` when it is already ``name`` in ``dtype``; else ``name`` loaded in ``dtype``
    (saying so, with ``why``)."""

    if model is not None and dtype_name(model.dtype) == dtype:
        return model
    say(f"loading {name} in {dtype}{': ' + why if why else ''}")
    return load_model(name, dtype=dtype)


def read_back(name: str, model: Model | None, out: str | Path,
              recorded: Callable[[Model], str | None]) -> Model:
    """The model to read the recording ``out`` back with: ``model`` when it is ``name`` (else
    ``name`` loaded in the machine's default dtype), then loaded again in the dtype the
    recording was made in (``recorded(model)``; None when nothing is recorded)."""
    model = model if model is not None and model.name == name else load_model(name)
    dtype = recorded(model)
    if dtype is None:
        return model
    return load_in(name, dtype, model, f"the dtype {shown(out)} was recorded in")


def computing(out: str | Path, missing: int, what: str, dtype: str | torch.dtype) -> None:
    """Say that ``missing`` parts (``what``) of the recording ``out`` are computed now, in
    ``dtype``."""
    name = dtype if isinstance(dtype, str) else dtype_name(dtype)
    say(f"{shown(out)}: {missing} {what} not recorded in {name}: computing them")


# --- sweeps and replications ------------------------------------------------------------------

def check_sweep(model: Model, config: SweepConfig, out: str | Path,
                seed: int | None = None) -> SpotCheck:
    """Spot-check the recorded sweep ``config`` at ``out`` on ``model`` (in the recorded
    dtype): one random recorded cell, one batch of its items as the sweep batched them (any
    batch for scored options; for generated answers, up to 200 new tokens a row, the cell's
    smallest batch, the cheapest to decode again); its vector extracted again at that layer
    alone (the same vector: the extraction is per layer, the controls are seeded per layer);
    the batch evaluated the way the sweep evaluated it (multiple choice added at one layer:
    the shared prefix replayed, :func:`steerlab.cells.evaluate_cells`, whose logits differ
    from one pass per cell in the last bits, enough to move a close answer in bf16; otherwise
    one pass under :func:`steerlab.steering.steer`); per-item correctness (and, for multiple
    choice, the answered letters) compared with the journal, and the added norm to
    :data:`~steerlab.spotcheck.NORM_RTOL`."""

    plan = plan_sweep(model, config)
    rows = recorded_rows(model, config, out)
    if not rows:
        raise SpotCheckError(f"{shown(out)} holds no row of this sweep in "
                             f"{plan.key.dtype}: nothing to check.")
    rng, seed = draw(f"{shown(out)}", seed)
    row = rng.choice(sorted(rows, key=lambda r: (r["method"], r["layer"], r["coeff"])))
    cfg = plan.config
    scoring = cfg.scoring or plan.task.scoring
    batches = evaluation_batches(model, plan.task, plan.items, scoring, plan.chat,
                                 cfg.batch_size)
    generated = plan.task.kind != "mc" or scoring == "generate"
    smallest = min(len(b) for b in batches)
    b = rng.choice([i for i, bt in enumerate(batches) if not generated or len(bt) == smallest])
    idx = batches[b]
    items = [plan.items[i] for i in idx]
    steered = row["method"] != "baseline" and float(row["coeff"]) != 0.0
    cell = ("the unsteered baseline" if row["method"] == "baseline"
            else f"cell {row['method']} layer {row['layer']} coeff {row['coeff']:+g}")
    drawn = (f"{cell}, batch {b + 1}/{len(batches)} ({len(idx)} of {len(plan.items)} items"
             + ("; generated answers: the smallest batch" if generated else "") + ")")
    say(f"spot check of {shown(out)} ({plan.key.dtype}): computing {drawn} again")
    t0 = time.perf_counter()
    differ: list[str] = []
    what = ["per-item answers"]
    vec: torch.Tensor | None = None
    how: dict[str, Any] = {}
    if steered:
        vecs = build_vectors(model, plan.task, [row["layer"]], [row["method"]], cfg.seed,
                             cfg.extract_from, cfg.extract_n, cfg.reduction, plan.chat,
                             cfg.batch_size, cfg.backend, plan.items)
        vec, norm, how = cell_steering(vecs, cfg, row["method"], row["layer"],
                                       float(row["coeff"]))
        if cfg.mode == "add":  # projections record no norm
            what.append(f"the added norm (to {NORM_RTOL:.0%})")
            if abs(norm - row["added_norm"]) > NORM_RTOL * abs(row["added_norm"]):
                differ.append(f"added norm recorded {row['added_norm']:.4f}, now {norm:.4f}")
    ev: dict[str, Any] = {"items": items, "chat": plan.chat, "scoring": cfg.scoring,
                          "backend": cfg.backend, "batch_size": len(items),
                          "shots": plan.shots, "progress": False}
    if (cfg.mode, cfg.scope) == ("add", "layer") and not generated \
            and can_share_prefix(plan.task, cfg.backend, model):
        # as the sweep ran it: the baseline is the zero vector's cell at its first layer
        layer = row["layer"] if steered else plan.layers[0]
        added = vec if vec is not None else torch.zeros(model.d_model)
        res = evaluate_cells(model, plan.task, layer, [added], **ev)[0]
    else:
        with steer(model, vec, backend=cfg.backend, **how) if vec is not None \
                else nullcontext():
            res = evaluate(model, plan.task, **ev)
    differ += compare([row["correct"][i] for i in idx],
                       ["1" if c else "0" for c in res.correct], idx, "correct")
    if row.get("answered") and res.predictions:
        what.insert(1, "answered letters")
        differ += compare([row["answered"][i] for i in idx],
                           list(answered(items, res.predictions)), idx,
                           f"answered letter ({NO_LETTER}: none)")
    norm_checked = any(w.startswith("the added norm") for w in what)
    compared = len(idx) * (1 + ("answered letters" in what)) + norm_checked
    return report(SpotCheck(shown(out), drawn, plan.key.dtype, compared, differ,
                            time.perf_counter() - t0, seed, what=", ".join(what),
                            tolerance=slack(plan.key.dtype, model.device, len(idx))))


def recorded_sweep(name: str, config: SweepConfig, out: str | Path, progress: bool = True,
                   model: Model | None = None) -> tuple[Model, pd.DataFrame]:
    """The sweep ``config`` of model ``name`` with results file ``out``: read back in the dtype
    it was recorded in and spot-checked (:func:`check_sweep`) when ``out`` holds it whole,
    else computed (what is missing) in the machine's default dtype, saying so. Returns the
    model it used (``model`` when that one fits) and the sweep's table."""

    model = read_back(name, model, out, lambda m: recorded_dtype(m, config, out))
    missing = missing_cells(model, config, out)
    if missing:
        computing(out, missing, "cell(s)", model.dtype)
    table = sweep(model, config, out=out, progress=progress)
    if not missing:
        check_sweep(model, config, out)
    return model, table


def recorded_protocol(name: str, out: str | Path, draws: int, progress: bool = True,
                      model: Model | None = None, **kwargs: Any) -> tuple[Model, pd.DataFrame]:
    """:func:`steerlab.replication.seed_protocol` of model ``name`` into the directory ``out``
    (``kwargs`` go to :func:`~steerlab.replication.protocol_config`), read back in the dtype
    it was recorded in; one spot check for the whole recording (a random draw's random cell)
    when every draw was recorded, else the missing cells are computed, saying so."""

    paths = [Path(out) / f"draw{d}.parquet" for d in range(draws)]

    def recorded(m: Model) -> str | None:  # one dtype for every draw, or none
        dtypes = {recorded_dtype(m, protocol_config(m, seed=d, **kwargs), p)
                  for d, p in enumerate(paths)}
        return next(iter(dtypes)) if len(dtypes) == 1 else None

    model = read_back(name, model, out, recorded)
    configs = [protocol_config(model, seed=d, **kwargs) for d in range(draws)]
    missing = sum(missing_cells(model, c, p) for c, p in zip(configs, paths, strict=True))
    if missing:
        computing(out, missing, "cell(s)", model.dtype)
    frames = [sweep(model, c, out=p, progress=progress).assign(draw=d)
              for d, (c, p) in enumerate(zip(configs, paths, strict=True))]
    if not missing:
        rng, _ = draw(f"{shown(out)}:draw")
        d = rng.randrange(draws)
        check_sweep(model, configs[d], paths[d])
    return model, pd.concat(frames, ignore_index=True)


# --- evaluations of conditions (notebook 05) --------------------------------------------------

def check_evaluation(model: Model, row: dict[str, Any], vec: SteeringVector | None,
                     items: Sequence[Item], journal: str | Path,
                     seed: int | None = None) -> SpotCheck:
    """Spot-check one recorded condition of :func:`steerlab.conditions.compare_conditions`
    (its journal ``row``, its vector ``vec``, its ``items``): one random batch of its items,
    evaluated again as the recording batched it; per-item correctness and extracted answers
    compared with the row."""

    task = get_task(row["task"])
    rng, seed = draw(f"{shown(journal)}:{row['key']}", seed)
    batches = evaluation_batches(model, task, items, task.scoring, model.uses_chat(None),
                                 int(row["batch_size"]))
    b = rng.randrange(len(batches))
    idx = batches[b]
    drawn = (f"condition {row['condition']!r}, batch {b + 1}/{len(batches)} ({len(idx)} of "
             f"{len(items)} items)")
    say(f"spot check of {shown(journal)} ({row['dtype']}): computing {drawn} again")
    t0 = time.perf_counter()
    res = evaluate_condition(model, task, [items[i] for i in idx], vec, len(idx))
    differ = compare([row["correct"][i] for i in idx], ["1" if c else "0" for c in res.correct],
                      idx, "correct")
    if row.get("predictions"):
        differ += compare([row["predictions"][i] for i in idx], list(res.predictions), idx,
                           "answer")
    return report(SpotCheck(shown(journal), drawn, row["dtype"], 2 * len(idx), differ,
                            time.perf_counter() - t0, seed,
                            what="per-item answers and correctness",
                            tolerance=slack(row["dtype"], model.device, len(idx))))


class Evaluations:
    """The journal of a notebook's :func:`~steerlab.conditions.compare_conditions` calls: each
    :meth:`compare` reads recorded conditions back and evaluates (and records) the others;
    :meth:`spot_check` then checks one randomly drawn reused condition."""

    def __init__(self, journal: str | Path) -> None:
        self.journal = Path(journal)
        self.reused: list[tuple[dict[str, Any], SteeringVector | None, list[Item]]] = []

    def compare(self, model: Model, conditions: dict[str, SteeringVector | None],
                items: Sequence[Item], task: str = "arithmetic", batch_size: int = 50,
                **kwargs: Any) -> pd.DataFrame:

        its = list(items)
        rows = _io.read_jsonl(self.journal)
        found = [(recorded_condition(rows, condition_key(model, task, its, batch_size, name,
                                                         vec), vec), vec, its)
                 for name, vec in conditions.items()]
        reused = [(row, vec, its) for row, vec, its in found if row is not None]
        self.reused += reused
        todo = len(conditions) - len(reused)
        say(f"{shown(self.journal)}: {len(reused)} of {len(conditions)} conditions recorded"
            + (f", evaluating {todo}" if todo else ", read back"))
        return compare_conditions(model, conditions, task, its, batch_size=batch_size,
                                  out=self.journal, **kwargs)

    def spot_check(self, model: Model, seed: int | None = None) -> SpotCheck | None:
        """Check one randomly drawn condition that :meth:`compare` read back (None, saying
        so, when every condition was evaluated here)."""
        if not self.reused:
            say(f"{shown(self.journal)}: every condition was evaluated in this run; nothing "
                "reused, nothing to spot-check")
            return None
        rng, seed = draw(f"{shown(self.journal)}:condition", seed)
        row, vec, items = rng.choice(self.reused)
        return check_evaluation(model, row, vec, items, self.journal, seed)


# --- training runs ----------------------------------------------------------------------------

def recorded_training(name: str, cfg: Any, out_dir: str | Path, progress: bool = True
                      ) -> tuple[Model, Any]:
    """:func:`steerlab.train.train_rloo` of model ``name`` with ``cfg`` into ``out_dir``: a
    run recorded there is read back with the model in the run's dtype and, when it is
    complete, spot-checked (:func:`check_training`); missing steps are trained, saying so.
    Returns the model and the :class:`~steerlab.train.TrainRun`."""

    out = Path(out_dir)
    dtype = run_dtype(out)
    model = load_in(name, dtype, why=f"the dtype {shown(out)} was trained in") \
        if dtype is not None else load_model(name)
    done = checkpoint_step(out) or 0
    if done < cfg.steps:
        say(f"{shown(out)}: {done} of {cfg.steps} steps recorded: training the rest")
    run = train_rloo(model, cfg, out, progress=progress)
    if done >= cfg.steps:
        check_training(model, out)
    return model, run


def check_training(model: Model, out_dir: str | Path, seed: int | None = None,
                   **replay_options: Any) -> SpotCheck:
    """Spot-check the recorded training run in ``out_dir`` on ``model`` (in the run's dtype):
    one random entry of :func:`steerlab.train.replayable` computed again and compared with
    its journal row (the dev accuracy exactly; a step's reward, signal groups, token count
    and sampled text exactly, its loss and norms to :data:`TRAIN_RTOL`)."""

    out = Path(out_dir)
    rng, seed = draw(f"{shown(out)}:step", seed)
    dtype = run_dtype(out) or "unrecorded dtype"
    entries = replayable(out)
    cross = other_kernels(dtype, model.device)
    if cross:  # a step's sampled text must match exactly: draw a dev evaluation (items)
        entries = [e for e in entries if e[0] == "dev"] or entries
    kind, step = rng.choice(entries)
    row = next(r for r in _io.read_jsonl(out / JOURNAL) if r["step"] == step)
    drawn = (f"dev accuracy at step {step}" if kind == "dev"
             else f"training step {step} (from the zero start)")
    say(f"spot check of {shown(out)} ({dtype}): computing the {drawn} again")
    t0 = time.perf_counter()
    got = replay(model, out, kind, step, **replay_options)
    differ = []
    for k, v in got.items():
        if k not in row or k in ("seconds", "gen_seconds"):
            continue
        if isinstance(v, float) and k in ("loss", "grad_norm", "vector_norm"):
            same = abs(v - row[k]) <= TRAIN_RTOL * max(abs(row[k]), 1e-12)
        elif k == "dev_acc" and cross:
            # a fraction of the dev items: as many items may differ as in any batch
            n = int(got["dev_items"])
            same = round(abs(v - row[k]) * n) <= slack(dtype, model.device, n)
        else:
            same = v == row[k]
        if not same:
            differ.append(f"{k}: recorded {row[k]!r}, now {v!r}")
    compared = sum(1 for k in got if k in row and k not in ("seconds", "gen_seconds"))
    what = "journal fields" + (" (the dev accuracy to the items a bf16 recording may differ "
                               "by on other bf16 kernels)" if cross and kind == "dev" else "")
    return report(SpotCheck(shown(out), drawn, dtype, compared, differ,
                            time.perf_counter() - t0, seed, what=what))
