"""A sweep's table read and said in plain words: Holm's adjustment over each method's steered
cells, the readable columns, the verdict, the report ``steerlab sweep`` prints and
``steerlab report`` writes, and reading a recorded table back.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from steerlab import _io
from steerlab.errors import OptionError
from steerlab.options import CONTROLS
from steerlab.stats import COMPARISON_COLUMNS, holm, interval_side

__all__ = ["ALPHA", "COLUMNS", "read_table", "report", "steered_cells", "summary", "table_of",
           "verdict", "with_holm"]

#: the readable columns of a sweep table, in order
COLUMNS = ["model", "task", "method", "layer", "coeff", "scale", "added_norm",
           *COMPARISON_COLUMNS, "p_holm", "chance", "seconds"]
ALPHA = 0.05  # the verdict's significance level, after Holm's adjustment


def table_of(rows: list[dict], methods: Sequence[str]) -> pd.DataFrame:
    """A sweep's journal rows as its table: with ``p_holm``, the baseline first, then each
    method's cells by layer and coefficient."""
    table = with_holm(pd.DataFrame(rows))
    order = {m: i for i, m in enumerate(("baseline", *methods))}
    table = table.sort_values(["method", "layer", "coeff"],
                              key=lambda s: s.map(order) if s.name == "method" else s)
    return table.reset_index(drop=True)


def steered_cells(table: pd.DataFrame) -> pd.Series:
    """Which rows of a sweep table are steered cells (not the baseline, coefficient not 0)."""
    return (table["method"] != "baseline") & (table["coeff"] != 0)


def with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with ``p_holm``: each steered cell's McNemar p adjusted by Holm's method over
    the steered cells of its method (the family of cells a reader scans for "did this vector
    help anywhere"); 1.0 for the baseline and coefficient-0 rows, which test nothing."""
    table = table.copy()
    table["p_holm"] = 1.0
    steered = steered_cells(table)
    for _, idx in table[steered].groupby("method", sort=False).groups.items():
        table.loc[idx, "p_holm"] = holm(table.loc[idx, "p_mcnemar"].to_numpy())
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """The table's readable columns (accuracies and deltas with their intervals)."""
    return table[[c for c in COLUMNS if c in table.columns]]


def verdict(table: pd.DataFrame) -> str:
    """Plain-language summary: how many cells of each method moved accuracy (paired 95%
    interval excluding 0, and how many of those stay significant after Holm's adjustment over
    the method's cells), and whether the difference-of-means vector beat the controls."""
    if "p_holm" not in table.columns:  # a table read back from an older results file
        table = with_holm(table)
    base = table[table["method"] == "baseline"].iloc[0]
    lines = [f"{base.model} on {base.task}: unsteered accuracy {base.accuracy:.3f} "
             f"[{base.ci_low:.3f}, {base.ci_high:.3f}] (n={int(base.n)})"
             + (f", chance {base.chance:.3f}" if pd.notna(base.chance) else "")]
    steered = table[steered_cells(table)]
    for method, g in steered.groupby("method", sort=False):
        side = interval_side(g["delta_low"], g["delta_high"])
        up, down = int((side > 0).sum()), int((side < 0).sum())
        holm_up = int(((g["p_holm"] < ALPHA) & (g["delta"] > 0)).sum())
        holm_down = int(((g["p_holm"] < ALPHA) & (g["delta"] < 0)).sum())
        best = g.loc[g["delta"].idxmax()]
        lines.append(f"  {method}: {len(g)} cells, {up} significantly up, {down} significantly "
                     f"down; best {best.delta:+.3f} [{best.delta_low:+.3f}, "
                     f"{best.delta_high:+.3f}] at layer {best.layer}, coeff {best.coeff:g}")
        lines.append(f"    after Holm over its {len(g)} cells (p < {ALPHA}): {holm_up} up, "
                     f"{holm_down} down; best cell's p {best.p_mcnemar:.3g} -> "
                     f"{best.p_holm:.3g}")
    dm = steered[steered["method"] == "diff_means"]
    ctrl = steered[steered["method"].isin(CONTROLS)]
    if len(dm) and len(ctrl):
        dm_up = dm[dm["delta_low"] > 0]
        dm_holm = dm_up[dm_up["p_holm"] < ALPHA]
        ctrl_best_low = ctrl["delta_low"].max()
        beat = dm_holm[dm_holm["delta_low"] > ctrl["delta_high"].max()]
        if len(dm_up) == 0:
            lines.append("  => steering with the difference-of-means vector did not raise "
                         "accuracy significantly anywhere.")
        elif len(dm_holm) == 0:
            lines.append(f"  => the vector raised accuracy in {len(dm_up)} cells by its "
                         f"interval, but none stays significant after Holm's adjustment for "
                         f"the {len(dm)} cells tried.")
        elif len(beat):
            lines.append(f"  => the vector raised accuracy in {len(dm_holm)} cells (after Holm); "
                         f"in {len(beat)} its interval lies above every control cell's.")
        else:
            lines.append(f"  => the vector raised accuracy in {len(dm_holm)} cells (after Holm), "
                         f"but not beyond the controls (best control lower bound "
                         f"{ctrl_best_low:+.3f}).")
    return "\n".join(lines)


def report(table: pd.DataFrame) -> str:
    """What ``steerlab sweep`` prints and ``steerlab report`` writes for a sweep table: the
    readable columns (with ``p_holm``), then the :func:`verdict`."""
    if "p_holm" not in table.columns:
        table = with_holm(table)
    with pd.option_context("display.max_rows", 500, "display.width", 250,
                           "display.float_format", "{:.3f}".format):
        text = summary(table).to_string(index=False)
    return f"{text}\n{verdict(table)}"


def read_table(path: str | Path) -> pd.DataFrame:
    """A recorded sweep table (``.parquet``, or a journal ``.jsonl``) with ``p_holm``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No sweep results at {path}: pass the --out file of a "
                                "`steerlab sweep` run (.parquet or its .journal.jsonl).")
    if path.suffix == ".jsonl":
        rows = _io.read_jsonl(path)  # a last line cut by a kill is skipped
        table = pd.DataFrame(rows).drop(columns=["correct", "completions"], errors="ignore")
    else:
        table = pd.read_parquet(path)
    missing = [c for c in ("method", "layer", "coeff", "p_mcnemar") if c not in table.columns]
    if missing:
        raise OptionError(f"{path} is not a sweep table: it has no column(s) {missing}.")
    return with_holm(table)
