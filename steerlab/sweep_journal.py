"""A sweep's journal: the key that decides whether a recorded cell may be reused, the rows
(one per finished cell, per-item answers kept), the vectors saved beside it, and the parquet
table rewritten after each cell.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from steerlab import _io
from steerlab.errors import SteerlabError
from steerlab.evaluation import EvalResult
from steerlab.options import BackendName, Mode, Reduction, Scale, Scope, Scoring
from steerlab.stats import comparison_row
from steerlab.tasks import LETTERS, Item
from steerlab.vectors import SteeringVector

__all__ = ["NO_LETTER", "SweepKey", "SweepVectors", "answered", "journal_path", "journal_row",
           "load_vectors", "result_of", "rows_of", "save_vectors", "write_parquet"]


@dataclass(frozen=True)
class SweepKey:
    """Everything that decides a sweep's numbers (its hash keys the resumable journal).

    ``layers`` are the sorted steering layers, ``shots`` the few-shot examples per prompt.
    Multiple-choice items are scored in batches by prompt length
    (:func:`steerlab.evaluation.mc_batches`); batch shapes move the last bits of the logits,
    so a change of that rule would need a field here.
    """

    model_id: str
    dtype: str
    task: str
    n: int
    seed: int
    scale: Scale
    extract_from: str
    extract_n: int | None
    reduction: Reduction
    chat: bool
    scoring: Scoring | None
    backend: BackendName
    layers: tuple[int, ...]
    shots: int
    mode: Mode
    scope: Scope

    def key(self) -> str:
        """12 hex digits of the hash of every field."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class SweepVectors:
    """The vectors a sweep adds, per method; each carries the reference norms its ``norm``
    coefficients are measured in (the same for every method: both prompt sets' mean norm)."""

    vectors: dict[str, SteeringVector]

    @property
    def layer_norms(self) -> dict[int, float]:
        return next(iter(self.vectors.values())).ref_norms

    def added(self, method: str, layer: int, coeff: float, scale: Scale) -> tuple[Any, float]:
        """(vector to add with coeff 1, its norm) for one cell (:meth:`SteeringVector.added`)."""
        return self.vectors[method].added(layer, coeff, scale)


def _vector_file(journal: Path, key: str, method: str) -> Path:
    return journal.with_name(f"{journal.name}.vectors") / f"{key}_{method}.safetensors"


def save_vectors(vecs: SweepVectors, journal: Path, key: str) -> None:
    """Write each method's vector (tagged with the sweep's key) next to the journal."""
    for method, vec in vecs.vectors.items():
        tagged = replace(vec, meta={**vec.meta, "sweep_config": key})
        tagged.save(_vector_file(journal, key, method))  # atomic (a temporary file + rename)


def load_vectors(journal: Path, key: str, layers: Sequence[int],
                 methods: Sequence[str]) -> SweepVectors | None:
    """The vectors a previous run of the same sweep saved, or None when any is missing, made
    for another config or another layer set, lacks reference norms, or is unreadable."""
    vectors: dict[str, SteeringVector] = {}
    for method in methods:
        path = _vector_file(journal, key, method)
        if not path.is_file():
            return None
        try:
            vec = SteeringVector.load(path)
        except SteerlabError:
            return None
        if vec.meta.get("sweep_config") != key or vec.layers != list(layers) \
                or sorted(vec.ref_norms) != list(layers):
            return None
        vectors[method] = vec
    return SweepVectors(vectors)


def write_parquet(rows: list[dict], path: Path) -> None:
    """The rows without their per-item columns (those stay in the journal), atomically."""
    with _io.atomic_path(path) as tmp:
        pd.DataFrame(rows).drop(columns=["correct", "completions"],
                                errors="ignore").to_parquet(tmp)


def journal_path(out: str | Path) -> Path:
    """The JSON-lines journal of the results file ``out`` (``out`` itself for ``.jsonl``)."""
    out = Path(out)
    return out if out.suffix == ".jsonl" else out.with_name(out.name + ".journal.jsonl")


def completions_of(res: EvalResult) -> list[str]:
    """The result's per-item completions, where the evaluation records them."""
    return list(getattr(res, "completions", None) or [])


#: the ``answered`` character of an item whose generated answer named no option letter
NO_LETTER = "-"


def answered(items: Sequence[Item], preds: Sequence[str]) -> str:
    """The letter of each multiple-choice item's chosen option, one character per item (the
    journal's ``answered`` column, from which an answer-letter bias can be read)."""
    return "".join(LETTERS[it.options.index(p)] if p in it.options else NO_LETTER
                   for it, p in zip(items, preds, strict=True))


def journal_row(cfg: SweepKey, method: str, layer: int, coeff: float, added_norm: float,
         res: EvalResult, base: EvalResult, seconds: float, items: Sequence[Item] | None,
         completions: list[str] | None = None) -> dict:
    """One journal row; ``completions`` (generative tasks) are kept with it when given, the
    answered letters when ``items`` (a multiple-choice task's) are given."""
    return {"model": cfg.model_id, "task": cfg.task, "method": method, "layer": layer,
            "coeff": coeff, "scale": cfg.scale, "added_norm": added_norm,
            **comparison_row(base.correct, res.correct, seed=cfg.seed),
            "chance": res.chance,
            "seconds": seconds, "config": cfg.key(),
            "correct": "".join("1" if c else "0" for c in res.correct),
            **({"completions": completions} if completions is not None else {}),
            # what the steering did (a receipt's summary): every cell can be audited
            **({"receipt": res.extra["receipt"]} if res is not base and "receipt" in res.extra
               else {}),
            **({"answered": answered(items, res.predictions)}
               if items is not None and res.predictions else {})}


def result_of(row: dict, task: str, model_id: str, items: Sequence[Item]) -> EvalResult:
    """The :class:`~steerlab.evaluation.EvalResult` a journal row records (per-item correctness
    and, for multiple choice, the chosen options)."""
    correct = np.array([c == "1" for c in row["correct"]])
    preds = [it.options[LETTERS.index(a)] if a != NO_LETTER else ""
             for it, a in zip(items, row["answered"], strict=True)] \
        if row.get("answered") else []
    return EvalResult(task, model_id, [it.id for it in items], correct, preds, row["seconds"],
                      row["chance"])


def rows_of(recorded: list[dict], key: SweepKey) -> list[dict]:
    """The rows of ``recorded`` that belong to the sweep ``key``."""
    return [r for r in recorded if r.get("config") == key.key()]
