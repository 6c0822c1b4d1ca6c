"""Is this vector reliable? Per-item steerability and anti-steerable inputs, over layers and
against reference directions.

A mean accuracy hides how single inputs respond: Tan et al. 2024 ("Analyzing the
generalization and reliability of steering vectors") find that for many behaviours a large
fraction of inputs move *against* the vector. :mod:`steerlab.steerability` measures each
item's slope for one vector at one layer (steerable, anti-steerable or undecided). A
norm-matched random direction (:func:`~steerlab.vectors.random_like`) run the same way is the
reference: a vector is reliable where its steerable fraction clearly exceeds the random
direction's and its anti-steerable fraction does not.

:func:`reliability_report` runs it over layers for a vector and its references (norm-matched
random directions, and any others given, e.g. the label-shuffled difference of means), with
the vector's cheap predictors beside it (its training sets', :mod:`steerlab.predictors`, and
its logit lens', :func:`steerlab.lens.lens_coherence`), into a :class:`Reliability`: tables, a
plain-words verdict, a figure (:func:`steerlab.control_plots.reliability_figure`) and a resumable
journal that ``results/`` recordings are read back from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlab import _io
from steerlab.control_plots import reliability_figure
from steerlab.devices import dtype_name
from steerlab.errors import EmptyInputError, OptionError
from steerlab.evaluation import mc_batches
from steerlab.kinds import config_key
from steerlab.lens import lens_coherence
from steerlab.options import COMPARE_SCALE, BackendName, Scale, Scoring
from steerlab.steerability import (
    DEFAULT_COEFFS,
    RESPONSES,
    _grid,
    _scored,
    _scoring,
    _steerability,
    gold_responses,
)
from steerlab.tasks import Item, Task, get_task
from steerlab.validate import check_layers
from steerlab.vectors import SteeringVector, match_norms, random_like

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from steerlab.models import Model

__all__ = ["Reliability", "ReliabilityPlan", "plan_reliability", "reliability_report"]

@dataclass
class Reliability:
    """A vector's reliability report (:func:`reliability_report`).

    Attributes:
        table: one row per (layer, method, seed): :meth:`Steerability.fractions` and, on the
            vector's rows, its predictors (``consistency``, ``d_prime``, ``probe_acc`` from
            its training sets where it has them; ``lens_peak``, ``lens_coherence``).
        slopes: one row per (layer, method, seed, item): ``slope``, ``lo``, ``hi``.
        meta: model, dtype, task, n, coeffs, scale, the response, the vector's method and
            model, the references' names.
    """

    table: pd.DataFrame
    slopes: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def verdict(self) -> str:
        """Plain words, per layer: the vector's steerable and anti-steerable fractions against
        the references' (the largest of them), and whether the intervals separate."""
        m = self.meta
        lines = [f"{m['model']} ({m['dtype']}), {m['task']} (n={m['n']}), "
                 f"{m['vector_method']} vector, coefficients {list(m['coeffs'])} in "
                 f"{m['scale']} units; response: {m['response']}"]
        t = self.table
        for layer, g in t.groupby("layer", sort=True):
            mine = g[g["method"] == m["vector_method"]].iloc[0]
            refs = g[g["method"] != m["vector_method"]]
            ref = refs.loc[refs["steerable"].idxmax()] if len(refs) else None
            line = (f"  layer {int(layer)}: steerable {mine.steerable:.2f} "
                    f"[{mine.steerable_low:.2f}, {mine.steerable_high:.2f}], anti-steerable "
                    f"{mine.anti_steerable:.2f} [{mine.anti_low:.2f}, {mine.anti_high:.2f}]")
            if ref is not None:
                apart = mine.steerable_low > ref.steerable_high
                line += (f"; best reference ({ref.method}) steerable {ref.steerable:.2f} "
                         f"[{ref.steerable_low:.2f}, {ref.steerable_high:.2f}]: "
                         + ("the vector steers more items" if apart else
                            "not separated from it"))
            lines.append(line)
        return "\n".join(lines)

    def figure(self) -> go.Figure:
        """:func:`steerlab.control_plots.reliability_figure` of this report."""
        return reliability_figure(self)

    def _repr_html_(self) -> str:
        cols = [c for c in ("layer", "method", "seed", "n", "steerable", "steerable_low",
                            "steerable_high", "anti_steerable", "anti_low", "anti_high",
                            "mean_slope", "consistency", "d_prime", "probe_acc", "lens_peak",
                            "lens_coherence") if c in self.table.columns]
        head = "<br>".join(self.verdict().splitlines())
        return f"<p>{head}</p>" + self.table[cols].to_html(index=False, float_format="%.3f")

    def save(self, path: str | Path) -> Path:
        """The report as one JSON file (no pickle): meta, table and slopes as records."""
        doc = {"meta": self.meta, "table": json.loads(self.table.to_json(orient="records")),
               "slopes": json.loads(self.slopes.to_json(orient="records"))}
        return _io.write_text(path, json.dumps(doc, indent=1, default=float))

    @classmethod
    def load(cls, path: str | Path) -> Reliability:
        doc = json.loads(Path(path).read_text())
        return cls(pd.DataFrame(doc["table"]), pd.DataFrame(doc["slopes"]), doc["meta"])


def _vector_hash(vector: SteeringVector, layers: Sequence[int]) -> str:
    h = hashlib.sha256()
    for layer in layers:
        h.update(vector[layer].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


def reliability_report(model: Model, vector: SteeringVector, task: Task | str,
                       layers: Sequence[int] | None = None, random: int = 1,
                       references: Mapping[str, SteeringVector] | None = None,
                       coeffs: Sequence[float] = DEFAULT_COEFFS, n: int | None = 100,
                       seed: int = 0, scale: Scale = COMPARE_SCALE, chat: bool | None = None,
                       scoring: Scoring | None = None, batch_size: int = 16,
                       backend: BackendName = "hf", lens: bool = True,
                       out: str | Path | None = None, progress: bool = False) -> Reliability:
    """Per-item steerability (:func:`steerability`) of ``vector`` at each of ``layers``
    (default: its own) and of its references: ``random`` norm-matched random directions
    (seeds 0, 1, ...; :func:`~steerlab.vectors.random_like`) and ``references`` (name ->
    vector, e.g. ``{"shuffled": shuffled_diff_of_means(pos, neg)}``, read at the same norm
    as ``vector`` at each layer). The items, their batches and the coefficients are the same
    for all. ``lens``: add :func:`steerlab.lens.lens_coherence` to the vector's predictors.

    The cells of one layer run together: each batch's blocks up to the layer once for all of
    them, the zero coefficient (nothing added) once. ``out``: a JSONL journal; each (layer,
    method, seed) cell's responses are appended as its layer finishes, under the key of the
    run (model, dtype, task, items, coefficients, scale, the vectors' hashes, batching), and
    cells it holds are read back, not computed: a killed run resumes where it stopped
    (:func:`steerlab.recordings_controls.recorded_reliability` reads a recording back in its
    own dtype and spot-checks it)."""
    plan = plan_reliability(model, vector, task, layers, random, references, coeffs, n, seed,
                            scale, chat, scoring, batch_size, backend)
    done = {r["cell"]: r for r in _io.read_jsonl(out) if r.get("key") == plan.key} \
        if out is not None else {}
    rows, slopes = [], []
    known = vector.meta.get("predictors", {})
    lensed = lens_coherence(vector, model, plan.layers) if lens else {}
    cells = plan.cells()
    got = {name: np.array(r["responses"], dtype=float) for name, r in done.items()}
    for layer in tqdm(plan.layers, desc=f"reliability {plan.task.name}",
                      disable=not progress, leave=False):
        todo = [(cell_id(l, m, s), v) for l, m, s, v in cells
                if l == layer and cell_id(l, m, s) not in got]
        if not todo:
            continue
        # one forward per batch up to the layer for every cell of it; the zero coefficient
        # (nothing added, the same for every method) once
        added = [torch.zeros(model.d_model)] + [v.added(layer, c, scale)[0]
                                                for _, v in todo for c in plan.coeffs if c != 0]
        y_all = gold_responses(model, plan.task, plan.items, layer, added, plan.chat,
                               plan.scoring, batch_size, backend)
        k = 1
        for name, _ in todo:
            y = np.empty((len(plan.coeffs), len(plan.items)))
            for i, c in enumerate(plan.coeffs):
                y[i] = y_all[0] if c == 0 else y_all[k]
                k += c != 0
            got[name] = y
            if out is not None:
                _io.append_jsonl(out, {"key": plan.key, "cell": name, "config": plan.config,
                                       "responses": y.tolist()})  # cpu: numpy
    for layer, method, ref_seed, _ in cells:
        y = got[cell_id(layer, method, ref_seed)]
        st = _steerability(y, plan.coeffs, plan.ids, layer, scale, method, plan.task)
        extra = {**known.get(str(layer), {}), **lensed.get(layer, {})} \
            if method == vector.method else {}
        rows.append({"layer": layer, "method": method, "seed": ref_seed, **st.fractions(),
                     **extra})
        slopes.append(st.frame.assign(layer=layer, method=method, seed=ref_seed))
    meta = {**{k: plan.config[k] for k in ("model", "dtype", "task", "coeffs", "scale",
                                             "chat", "scoring", "seed")},
            "n": len(plan.items), "response": RESPONSES[plan.task.kind],
            "vector_method": vector.method, "vector_model": vector.model_id,
            "references": sorted({m for _, m, _, _ in cells if m != vector.method}),
            "key": plan.key}
    return Reliability(pd.DataFrame(rows), pd.concat(slopes, ignore_index=True), meta)


def cell_id(layer: int, method: str, seed: int | None) -> str:
    """The journal name of one reliability cell."""
    return f"{layer}:{method}:{'' if seed is None else seed}"


@dataclass
class ReliabilityPlan:
    """What :func:`reliability_report` computes, checked before anything runs."""

    task: Task
    items: list[Item]
    layers: list[int]
    coeffs: tuple[float, ...]
    chat: bool
    scoring: Scoring
    vectors: list[tuple[str, int | None, SteeringVector]]
    config: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return [it.id for it in self.items]

    @property
    def key(self) -> str:
        """The journal key: :func:`steerlab.kinds.config_key` of :attr:`config`."""
        return config_key(self.config)

    def batches(self, model: Model) -> list[list[int]]:
        """The item batches every cell runs (indices into :attr:`items`)."""
        return mc_batches(model, _scored(self.task, self.items), self.scoring, self.chat,
                          self.config["batch_size"])

    def cells(self) -> list[tuple[int, str, int | None, SteeringVector]]:
        """(layer, method, seed, vector) per cell, layer by layer."""
        return [(l, m, s, v) for l in self.layers for m, s, v in self.vectors]


def plan_reliability(model: Model, vector: SteeringVector, task: Task | str,
                     layers: Sequence[int] | None = None, random: int = 1,
                     references: Mapping[str, SteeringVector] | None = None,
                     coeffs: Sequence[float] = DEFAULT_COEFFS, n: int | None = 100,
                     seed: int = 0, scale: Scale = COMPARE_SCALE, chat: bool | None = None,
                     scoring: Scoring | None = None, batch_size: int = 16,
                     backend: BackendName = "hf") -> ReliabilityPlan:
    """The :class:`ReliabilityPlan` of :func:`reliability_report` (same arguments)."""
    the_task = get_task(task) if isinstance(task, str) else task
    grid = _grid(coeffs)
    vector.check_compatible(model)
    use_layers = check_layers(model, list(layers) if layers is not None else vector.layers)
    if random < 0:
        raise OptionError(f"random must be >= 0 (norm-matched random directions), got {random}.")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")
    refs = dict(references or {})
    if vector.method in refs or (random and vector.method == "random"):
        raise OptionError(f"A reference is named {vector.method!r} like the vector: give the "
                          "references other names.")
    vecs: list[tuple[str, int | None, SteeringVector]] = [(vector.method, None, vector)]
    vecs += [("random", s, random_like(vector, seed=s)) for s in range(random)]
    for name, ref in refs.items():
        ref.check_compatible(model)
        missing = [l for l in use_layers if l not in ref.layers]
        if missing:
            raise OptionError(f"Reference {name!r} has no vector at layers {missing}.")
        # the same size as the vector at each layer, and its reference norms (scale="norm")
        ref = match_norms(replace(ref, vectors={l: ref[l] for l in use_layers}), vector)
        vecs.append((name, None, replace(ref, ref_norms=dict(vector.ref_norms))))
    use_scoring = _scoring(the_task, scoring)
    items = the_task.items(n, seed)
    if not items:
        raise EmptyInputError(f"No items to measure steerability on for task {the_task.name}.")
    chat_ = model.uses_chat(chat)
    config = {"model": model.hf_id, "dtype": dtype_name(model.dtype), "task": the_task.name,
              "items": [it.id for it in items], "coeffs": list(grid), "scale": scale,
              "chat": chat_, "scoring": use_scoring, "seed": seed,
              "batch_size": batch_size, "backend": backend, "layers": use_layers,
              "response": RESPONSES[the_task.kind],
              "vectors": {cell_id(0, m, s)[2:]: _vector_hash(v, use_layers)
                          for m, s, v in vecs}}
    return ReliabilityPlan(the_task, list(items), use_layers, grid, chat_, use_scoring, vecs,
                           config)

