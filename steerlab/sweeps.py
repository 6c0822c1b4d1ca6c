"""Layer x coefficient x method sweeps with controls, resumable, as a tidy DataFrame.

Coefficients are in units of the layer's typical residual norm by default (``scale="norm"``):
every vector is unit-normalised and multiplied by ``coeff * mean ||h_l||`` (measured on the
extraction prompts), so ``coeff=0.2`` means "a fifth of the residual stream's size" at any
layer of any model. ``scale="unit"`` uses ``coeff`` times the unit vector; ``scale="raw"`` the
raw difference of means. Under every scale each control (``random``, ``shuffled``) has the
difference of means' norm at every layer, so controls differ from it in direction only.

The grid and its checks are :mod:`steerlab.sweep_plan`'s. Generative tasks give base models
:data:`~steerlab.sweep_plan.SHOTS` few-shot examples (:func:`~steerlab.sweep_plan.
default_shots`, the same rule as ``steerlab eval``); their journal rows keep each item's
completion when the evaluation returns them.

Each finished cell is appended to a JSON-lines journal at once (and, for ``.parquet`` outputs,
the parquet file is rewritten atomically), so a killed sweep resumes where it stopped. The
vectors are saved next to the journal (keyed by the sweep's config hash), so a resumed sweep
does not extract them again, and a finished one extracts nothing.

Speed (``fast=True``, the default): for multiple-choice tasks on the ``hf`` backend, cells
are run one layer at a time, and each batch runs the blocks before the steering layer once for
all of that layer's (method, coeff) cells (:func:`steerlab.cells.evaluate_cells`), and
each cell's later blocks read the columns all rows of a batch begin with (a chat template,
few-shot examples) once: same items, the same logits up to the rounding of smaller matrix
products (the same answers, tested), less work. Generative tasks decode the cells of all layers
together (:func:`_groups`, up to :data:`~steerlab.cells.DECODE_ROWS` rows per batch): a
row per item and cell, each with its own vector at its own layer, the prompt's forward shared
among the rows whose inputs to a block are still equal (and the tokens all prompts begin with
read by a few lead prompts only), and each row dropped once its answer is complete, so the
cells cost about what their unfinished rows cost in one wide batch (same
answers item by item in fp32; completions end where the answer is complete). The unsteered
baseline is then one more cell, the zero vector's (adding zero changes no number), so it
shares that work too. The ``tlens``/``nnsight`` backends run one full pass per cell (``fast=False``
forces that everywhere).

Modes (``mode=``): ``add`` (the default; coefficients in ``scale`` units), ``project`` (Hong
et al.'s ``h + coeff (h . v̂) v̂``: ``coeff`` is their dimensionless ``a``, ``scale`` does not
apply) and ``ablate`` (``h - (h . v̂) v̂``: one cell per method and layer, recorded as coeff
1). Scope (``scope=``): ``layer`` steers the residual stream after each swept layer; ``all`` is
Hong et al.'s all-sites form: the direction extracted at the swept layer is applied at every
layer's block input, attention output and MLP output (:func:`steerlab.steering.hong_projection`).
Only ``add`` at ``layer`` scope takes the fast shared-prefix path.

The journal key (:meth:`SweepKey.key`) holds everything that decides a cell's numbers,
including the layer list, so sweeps over other layers never share rows; coefficients and
methods are not in it, since each cell is looked up by its own (method, layer, coeff).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from steerlab import _io
from steerlab.cells import cells_per_batch, evaluate_cells
from steerlab.console import progress as progress_bar
from steerlab.devices import DTYPE_NAMES
from steerlab.evaluation import EvalResult, evaluate
from steerlab.extraction import extract_pair, vector_from_pair
from steerlab.options import (
    BackendName,
    Method,
    Reduction,
)
from steerlab.reports import table_of
from steerlab.steering import HONG_SITES, steer
from steerlab.sweep_journal import (
    SweepKey,
    SweepVectors,
    completions_of,
    journal_path,
    journal_row,
    load_vectors,
    result_of,
    rows_of,
    save_vectors,
    write_parquet,
)
from steerlab.sweep_plan import SweepConfig, SweepPlan, as_config, grid, plan_sweep
from steerlab.tasks import Task

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["build_vectors", "cell_steering", "missing_cells", "recorded_dtype", "recorded_rows",
           "sweep"]

def build_vectors(model: Model, task: Task, layers: Sequence[int], methods: Sequence[str],
                  seed: int = 0, extract_from: str | None = None, extract_n: int | None = None,
                  reduction: Reduction = "last", chat: bool | None = None, batch_size: int = 16,
                  backend: BackendName = "hf", eval_items: Sequence[Any] = ()) -> SweepVectors:
    """Extract the steering vector and its controls on prompts disjoint from ``eval_items``
    (:func:`steerlab.extraction.extract_pair` then :func:`~steerlab.extraction.vector_from_pair`).

    ``diff_means``: reasoning minus memorisation; ``random``: a Gaussian direction per layer,
    seeded by ``(seed, layer)``; ``shuffled``: difference of means under permuted labels;
    ``memorisation``: the opposite direction (memorisation minus reasoning). The controls have
    ``diff_means``' norm at every layer (``memorisation`` has it already).
    """
    pos, neg = extract_pair(model, extract_from or task.extract_from, list(layers), n=extract_n,
                            reduction=reduction, chat=chat, batch_size=batch_size,
                            backend=backend, exclude=list(eval_items))
    return SweepVectors({m: vector_from_pair(pos, neg, m, seed) for m in methods})


def recorded_rows(model: Model, config: SweepConfig, out: str | Path | None,
                  dtype: str | None = None) -> list[dict]:
    """The journal rows at ``out`` of the sweep ``config`` of ``model`` (in ``dtype``, default
    the model's)."""
    if out is None:
        return []
    plan = plan_sweep(model, config)
    key = replace(plan.key, dtype=dtype or plan.key.dtype)
    return rows_of(_io.read_jsonl(journal_path(out)), key)


def missing_cells(model: Model, config: SweepConfig, out: str | Path | None,
                  dtype: str | None = None) -> int:
    """How many cells of the sweep (the baseline included) its journal at ``out`` lacks in
    ``dtype`` (default: the model's); 0: the sweep is recorded whole."""
    plan = plan_sweep(model, config)
    rows = recorded_rows(model, config, out, dtype)
    return len(grid(plan) - {(r["method"], r["layer"], float(r["coeff"])) for r in rows})


def recorded_dtype(model: Model, config: SweepConfig, out: str | Path) -> str | None:
    """The dtype the sweep ``config`` of ``model`` was recorded in at ``out`` (its journal's
    rows carry the key of the sweep, and the key holds the dtype): the model's own dtype when
    rows of it are there, else the first of :data:`~steerlab.devices.DTYPE_NAMES` that has
    rows; None when the journal holds no row of this sweep in any dtype."""
    own = plan_sweep(model, config).key.dtype
    for dtype in (own, *DTYPE_NAMES):
        if recorded_rows(model, config, out, dtype):
            return dtype
    return None

def sweep(model: Model, config: SweepConfig | Task | str,
          layers: Sequence[int] | None = None, coeffs: Sequence[float] | None = None,
          methods: Sequence[Method] | None = None, *, out: str | Path | None = None,
          progress: bool = True, fast: bool = True,
          **options: Any) -> pd.DataFrame:
    """Accuracy for every (method, layer, coeff) cell against the unsteered baseline.

    Args:
        model: the model.
        config: a :class:`SweepConfig`; or, as a shorthand, its task, with ``layers``,
            ``coeffs`` (``methods``) and any other :class:`SweepConfig` field as keywords
            (``options``).
        out: ``.jsonl`` or ``.parquet`` results file; finished cells are appended at once and
            skipped when the same sweep is run again; the vectors are kept next to it.
        progress: a progress bar over cells.
        fast: share the work before the steering layer among a layer's cells (see the module
            doc); ``False`` runs one full evaluation pass per cell. Same results either way.

    Returns:
        One row per cell (plus the ``baseline`` row): accuracy with its 95% Wilson interval,
        and the paired difference to the baseline on the same items with its 95% bootstrap
        interval and McNemar p-value.
    """
    cfg_in = as_config(config, layers, coeffs, methods, **options)
    plan = plan_sweep(model, cfg_in)
    task, layers, items, few, chat, cfg = (plan.task, plan.layers, plan.items, plan.shots,
                                           plan.chat, plan.key)
    coeffs, seed, scale = plan.coeffs, cfg_in.seed, cfg_in.scale
    methods = list(cfg_in.methods)
    extract_from, extract_n, reduction = (cfg_in.extract_from, cfg_in.extract_n,
                                          cfg_in.reduction)
    scoring, backend, batch_size, mode, scope = (cfg_in.scoring, cfg_in.backend,
                                                 cfg_in.batch_size, cfg_in.mode, cfg_in.scope)
    gen = task.kind != "mc"
    keep_text = gen or scoring == "generate"  # completions go to the journal
    mc_items = None if gen else items  # whose answered letters the journal keeps
    journal = journal_path(out) if out is not None else None
    recorded = _io.read_jsonl(journal) if journal else []
    rows = rows_of(recorded, cfg)
    if journal is not None and recorded and not rows:
        _warn_other_dtype(recorded, cfg, plan, journal)
    done = {(r["method"], r["layer"], r["coeff"]): r for r in rows}
    ev: dict[str, Any] = {"items": items, "chat": chat, "scoring": scoring, "backend": backend,
          "batch_size": batch_size, "progress": False}

    def record(row: dict) -> None:
        rows.append(row)
        done[(row["method"], row["layer"], row["coeff"])] = row
        if journal is not None:
            _io.append_jsonl(journal, row)
            if Path(out).suffix == ".parquet":  # type: ignore[arg-type]
                write_parquet(rows, Path(out))  # type: ignore[arg-type]

    shared = fast and (mode, scope) == ("add", "layer")  # the cells of a layer share work
    base: EvalResult | None = None
    base_completions: list[str] | None = None
    if ("baseline", -1, 0.0) in done:
        base_row = done[("baseline", -1, 0.0)]
        base = result_of(base_row, task.name, model.hf_id, items)
        base_completions = base_row.get("completions") if keep_text else None
    elif not shared:
        t0 = time.perf_counter()
        base = evaluate(model, task, shots=few, **ev)
        base_completions = completions_of(base) if keep_text else None
        record(journal_row(cfg, "baseline", -1, 0.0, 0.0, base, base,
                           time.perf_counter() - t0, mc_items, base_completions))
    cells = [(m, l, float(c)) for m in methods for l in layers for c in coeffs
             if (m, l, float(c)) not in done]
    if not cells and base is not None:  # a finished sweep: nothing to extract or evaluate
        return table_of(rows, methods)
    vecs = load_vectors(journal, cfg.key(), layers, methods) if journal else None
    if vecs is None:
        vecs = build_vectors(model, task, layers, methods, seed, extract_from, extract_n,
                             reduction, chat, batch_size, backend, items)
        if journal is not None:
            save_vectors(vecs, journal, cfg.key())
    bar = progress_bar(total=len(cells), desc=f"sweep {task.name}", disable=not progress)
    if not shared:
        # projections and all-site scopes share no work between cells: one pass per cell
        assert base is not None  # evaluated above when the cells do not share work
        for method, layer, coeff in cells:
            bar.set_postfix_str(f"{method} L{layer} c{coeff:g}")
            vec, norm, how = cell_steering(vecs, cfg_in, method, layer, coeff)
            t0 = time.perf_counter()
            if coeff == 0.0 and mode != "ablate":  # leaves the logits bit-for-bit unchanged
                res, completions = base, base_completions
            else:
                with steer(model, vec, backend=backend, **how) as handle:
                    res = evaluate(model, task, shots=few, **ev)
                res.extra["receipt"] = str(handle.receipt)
                completions = completions_of(res) if keep_text else None
            record(journal_row(cfg, method, layer, coeff, norm, res, base,
                               time.perf_counter() - t0, mc_items, completions))
            bar.update()
    else:
        reuse: dict[int, tuple[int, Any]] = {}  # batch -> (layer, output) of the last layer
        for group in _groups(cells, gen, cells_per_batch(batch_size), base is None):
            steered = [c for c in group if c[2] != 0.0]
            bar.set_postfix_str(f"layer {'/'.join(map(str, sorted({c[1] for c in group})))}: "
                                f"{len(group)} cells")
            added = [vecs.added(m, l, c, scale) for m, l, c in steered]
            # the unsteered baseline is the zero vector's cell of the first group: adding 0
            # changes no number, and its row rides along with the cells' (its prompt shares
            # their blocks, its decoding their batch); put at the group's highest layer, where
            # it shares the most of the prompt's forward
            zero = [] if base is not None else [torch.zeros_like(vecs.vectors[methods[0]][
                layers[0]])]
            at = [max((l for _, l, _ in steered), default=layers[0])] * len(zero) \
                + [l for _, l, _ in steered]
            one = len(set(at)) == 1  # one layer's cells (always, for multiple choice)
            results = evaluate_cells(model, task, at[0] if one else at,
                                     zero + [v for v, _ in added],
                                     reuse=reuse, shots=few, **ev) if at else []
            if zero:
                base = results.pop(0)
                base_completions = completions_of(base) if keep_text else None
                record(journal_row(cfg, "baseline", -1, 0.0, 0.0, base, base, base.seconds,
                                   mc_items, base_completions))
            assert base is not None  # recorded, or decoded with the first group's cells
            by_cell = {c: (r, norm) for c, r, (_, norm) in zip(steered, results, added,
                                                                strict=True)}
            for cell in group:  # in the naive loop's order
                method, layer, coeff = cell
                if coeff == 0.0:
                    record(journal_row(cfg, method, layer, coeff, 0.0, base, base, 0.0,
                                       mc_items, base_completions))
                else:
                    res, norm = by_cell[cell]
                    record(journal_row(cfg, method, layer, coeff, norm, res, base, res.seconds,
                                   mc_items, completions_of(res) if keep_text else None))
            bar.update(len(group))
    bar.close()
    return table_of(rows, methods)


def cell_steering(vecs: SweepVectors, config: SweepConfig, method: str, layer: int,
                  coeff: float) -> tuple[torch.Tensor, float, dict[str, Any]]:
    """How one cell of a sweep steers, as one pass per cell applies it: the tensor, its added
    norm (nan for projections and ablations) and the keywords of
    :func:`steerlab.steering.steer` (with ``backend`` to be added by the caller)."""
    if config.mode == "add":
        vec, norm = vecs.added(method, layer, coeff, config.scale)
        how: dict[str, Any] = {"coeff": 1.0}
    else:  # a direction: its norm does not enter, coeff is the projection's own
        vec, norm = vecs.vectors[method][layer], float("nan")
        how = {"coeff": coeff, "mode": config.mode}
    if config.scope == "all":
        how.update(layers=None, from_layer=layer, site=HONG_SITES, any_site=True)
    else:
        how.update(layers=layer)
    return vec, norm, how


def _groups(cells: Sequence[tuple[Method, int, float]], gen: bool, per_batch: int,
            with_zero: bool) -> list[list[tuple[Method, int, float]]]:
    """The cells evaluated together by the fast path, each group in the naive loop's order:
    a multiple-choice sweep's cells one layer at a time (they share the blocks before it,
    and each layer continues from the last one's recorded output); a generative sweep's
    cells of any layers, up to ``per_batch`` decoded rows per item (the unsteered zero
    vector's row, ``with_zero``, counts in the first group), since a wider decoding batch
    costs less per row. Coefficient-0 cells need no row (they are the baseline)."""
    if not gen:
        return [[c for c in cells if c[1] == layer] for layer in dict.fromkeys(
            c[1] for c in cells)]
    groups: list[list[tuple[Method, int, float]]] = []
    group: list[tuple[Method, int, float]] = []
    used = int(with_zero)
    for cell in cells:
        steers = cell[2] != 0.0
        if steers and used >= per_batch and group:
            groups.append(group)
            group, used = [], 0
        group.append(cell)
        used += steers
    return [*groups, group] if group else groups



def _warn_other_dtype(recorded: list[dict], cfg: SweepKey, plan: SweepPlan,
                      journal: Path) -> None:
    """A results file whose rows were all recorded in another dtype (the default dtype follows
    the machine: bf16 on a CPU with fast bf16, fp32 elsewhere) is recomputed, not reused: say
    so, and how to reuse it (:func:`steerlab.recordings.recorded_sweep` does)."""
    for other in DTYPE_NAMES:
        if other != cfg.dtype and rows_of(recorded, replace(cfg, dtype=other)):
            warnings.warn(f"{journal} holds this sweep recorded in {other}; the model here is "
                          f"{cfg.dtype}, so it is computed again. To reuse the recorded cells, "
                          f"load the model with dtype={other!r} (or set "
                          f"STEERLAB_DTYPE={other}).", stacklevel=3)
            return


