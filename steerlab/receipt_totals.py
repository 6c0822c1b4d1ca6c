"""A receipt's totals: per (layer, site), the forwards of each phase an edit ran in, the rows
and positions it changed and the mean sizes (:meth:`steerlab.receipts.Receipt.totals`); the
totals of several receipts of one edit set added up (:func:`add_up`, a sweep cell's item
batches); and the lines that say them (:func:`describe`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlab.receipts import EditInfo, Firing, Level


def collect(edits: list[EditInfo], firings: list[Firing], level: Level, rows: Any = None,
            layers: Any = None) -> list[dict[str, Any]]:
    """:meth:`steerlab.receipts.Receipt.totals` of these edits and firings."""
    keep = None if rows is None else {int(r) for r in rows}
    wanted = None if layers is None else {int(x) for x in layers}
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    for info in edits:
        if wanted is None or info.layer in wanted:
            groups.setdefault((info.layer, info.site), _empty(info))
    for f in firings:
        info = edits[f.edit]
        g = groups.get((info.layer, info.site))
        if g is None:
            continue
        mine = _mine(f, keep)
        if mine is not None and not mine.any():
            continue
        n_rows = f.rows if mine is None else int(mine.sum())
        g["prompt_forwards" if f.phase == "prompt" else "decoding_steps"] += 1
        g["rows"] = max(g["rows"], n_rows)
        if f.per_row is None:
            g["positions"] += f.positions if mine is None else \
                f.positions // max(f.rows, 1) * n_rows
            g[f"{f.phase}_positions"] += f.positions if mine is None else \
                f.positions // max(f.rows, 1) * n_rows
            continue
        sel = slice(None) if mine is None else mine
        norm, asked, proj, count = (t[sel].sum().item() for t in f.per_row)
        g["positions"] += int(count)
        g[f"{f.phase}_positions"] += int(count)
        g["_norm"] += norm
        g["_asked"] += asked
        g["_proj"] += proj
    detail = level == "detail"
    for g in groups.values():
        n = g["positions"]
        for key in ("norm", "asked", "proj"):
            total = g.pop(f"_{key}")
            g[f"mean_{key}"] = total / n if detail and n and not math.isnan(total) \
                else math.nan
    return list(groups.values())


def describe(what: str, totals: list[dict[str, Any]], forwards: int | None = None) -> str:
    """The summary lines of :meth:`steerlab.receipts.Receipt.totals` (or of :func:`add_up`'s)."""
    lines = []
    for g in totals:
        if not g["prompt_forwards"] and not g["decoding_steps"]:
            seen = "" if forwards is None else f" ({forwards} forwards seen)"
            lines.append(f"{what}: layer {g['layer']} {g['site']} never ran{seen}")
            continue
        parts = [f"{what} layer {g['layer']} {g['site']} at "
                 f"{g['prompt_forwards']} prompt forward"
                 f"{'s' if g['prompt_forwards'] != 1 else ''} and "
                 f"{g['decoding_steps']} decoding step"
                 f"{'s' if g['decoding_steps'] != 1 else ''} x {g['rows']} rows",
                 f"{g['prompt_positions']} prompt positions, "
                 f"{g['decoding_positions']} decoded" if g["positions"] else
                 "no position changed (read only)"]
        if not math.isnan(g["mean_norm"]):
            size = f"mean change {g['mean_norm']:.4g}"
            if not math.isnan(g["mean_asked"]):
                size += f" (asked {g['mean_asked']:.4g})"
            if not math.isnan(g["mean_proj"]):
                size += f", mean |h·r̂| {g['mean_proj']:.4g}"
            parts.append(size)
        lines.append(", ".join(parts))
    return "\n".join(lines) if lines else f"{what}: no edits"


def add_up(parts: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Several :meth:`Receipt.totals` of one edit set (a sweep cell's item batches) as one:
    counts added, rows the largest, mean sizes weighted by positions."""
    out: dict[tuple[int, str], dict[str, Any]] = {}
    for totals in parts:
        for g in totals:
            key = (g["layer"], g["site"])
            if key not in out:
                out[key] = dict(g)
                continue
            o = out[key]
            n0, n1 = o["positions"], g["positions"]
            for m in ("mean_norm", "mean_asked", "mean_proj"):
                o[m] = (o[m] * n0 + g[m] * n1) / (n0 + n1) if n0 + n1 else math.nan
            for c in ("prompt_forwards", "decoding_steps", "positions", "prompt_positions",
                      "decoding_positions"):
                o[c] += g[c]
            o["rows"] = max(o["rows"], g["rows"])
    return list(out.values())


def _empty(info: EditInfo) -> dict[str, Any]:
    return {"layer": info.layer, "site": info.site, "when": info.when, "prompt_forwards": 0,
            "decoding_steps": 0, "rows": 0, "positions": 0, "prompt_positions": 0,
            "decoding_positions": 0, "_norm": 0.0, "_asked": 0.0, "_proj": 0.0}


def _mine(f: Firing, keep: set[int] | None) -> torch.Tensor | None:
    """Which of the firing's batch rows are in ``keep`` (None: all rows count)."""
    if keep is None:
        return None
    ids = f.row_ids if f.row_ids is not None else torch.arange(f.rows)
    return torch.tensor([int(i) in keep for i in ids.cpu().tolist()], dtype=torch.bool)
