"""Figures of the controls: activation-patching maps, kind patching (cloze and generated
answers) and reliability reports. Like :mod:`steerlab.plots`, every function returns a
``plotly.graph_objects.Figure`` and never shows or saves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.devices import dtype_label
from steerlab.plots import METHOD_STYLE

if TYPE_CHECKING:
    from steerlab.reliability import Reliability


def _cell_values(frame: pd.DataFrame, example: int | None) -> pd.Series:
    """The mean over pairs, or one pair's value (``example``), per row of a patching frame."""
    if example is None:
        return frame["value"]
    return frame["values"].map(lambda v: v[example])


def patching_heatmaps(results: list, title: str = "", example: int | None = None
                      ) -> go.Figure:
    """Layer x position maps of activation patching, one panel per site (side by side), the
    positions labelled with the first clean prompt's tokens; ``example``: one pair's values
    instead of the mean over pairs. ``results``: :class:`steerlab.patching.PatchResult` s
    with per-position cells (no heads)."""
    fig = make_subplots(rows=1, cols=len(results), shared_yaxes=True,
                        subplot_titles=[r.site for r in results], horizontal_spacing=0.03)
    for k, r in enumerate(results, start=1):
        f = r.frame.assign(v=_cell_values(r.frame, example))
        piv = f.pivot_table(index="layer", columns="position", values="v", aggfunc="first")
        tokens = f.drop_duplicates("position").set_index("position")["token"]
        x = [f"{p}: {tokens[p]!r}"[:18] for p in piv.columns]
        fig.add_trace(go.Heatmap(z=piv.values, x=x, y=list(piv.index), colorscale="RdBu",
                                 zmid=0, zmin=-1, zmax=1, showscale=k == len(results),
                                 colorbar={"title": r.metric.split(" ")[0]}), row=1, col=k)
        fig.update_xaxes(tickangle=-60, row=1, col=k)
    fig.update_yaxes(title_text="layer", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=520,
                      width=340 * len(results) + 120, margin={"t": 110})
    return fig


def head_heatmap(result: object, title: str = "", example: int | None = None) -> go.Figure:
    """Layer x head map of patching each head's output (site ``z``, all positions at once)."""
    frame = result.frame  # type: ignore[attr-defined]
    f = frame.assign(v=_cell_values(frame, example))
    piv = f.pivot_table(index="layer", columns="head", values="v", aggfunc="first")
    fig = go.Figure(go.Heatmap(z=piv.values, x=[str(h) for h in piv.columns],
                               y=list(piv.index), colorscale="RdBu", zmid=0,
                               colorbar={"title": result.metric.split(" ")[0]}))  # type: ignore[attr-defined]
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer",
                      template="plotly_white", height=520, width=560, margin={"t": 110})
    return fig


KIND_STYLE = {"patch_other": ("#d62728", "solid"), "patch_same": ("#1f77b4", "solid"),
              "patch_reasoning": ("#d62728", "solid"), "patch_recall": ("#e377c2", "solid"),
              "mean_patch": ("#ff7f0e", "dashdot"), "diff_means": ("#9467bd", "dash"),
              "random": ("#7f7f7f", "dot"), "shuffled": ("#2ca02c", "dash")}


def kind_patching_figure(frames: list[pd.DataFrame], title: str = "") -> go.Figure:
    """Change in accuracy vs layer under each :func:`steerlab.kinds.kind_patching` (or
    :func:`steerlab.kinds_gen.kind_patching_gen`) condition, one panel per target task,
    with paired 95% bootstrap intervals and the zero line (the unsteered run on the same
    items)."""
    def name(f: pd.DataFrame) -> str:
        what = (f"{f['source_kind'].iloc[0]} states" if "source_kind" in f.columns
                else "states and directions")
        chance = f.attrs.get("chance")
        return (f"{f.attrs.get('target', '')}: {what} written in<br><sup>unsteered "
                f"{f.attrs['unsteered'][0]:.3f}"
                + (f", chance {chance:.2f}" if chance is not None else "")
                + f", n={f.attrs['n']}</sup>")

    names = [name(f) for f in frames]
    fig = make_subplots(rows=1, cols=len(frames), subplot_titles=names, shared_yaxes=True,
                        horizontal_spacing=0.05)
    for k, frame in enumerate(frames, start=1):
        conds = list(dict.fromkeys(frame["condition"]))
        for j, (cond, g) in enumerate(frame.groupby("condition", sort=False)):
            g = g.sort_values("layer")
            color, dash = KIND_STYLE.get(str(cond), ("#8c564b", "solid"))
            dodge = 0.5 * (j - (len(conds) - 1) / 2) / max(len(conds) - 1, 1)  # side by side
            fig.add_trace(go.Scatter(
                x=g["layer"] + dodge, y=g["delta"], customdata=g["layer"],
                hovertemplate="layer %{customdata}: %{y:+.3f}", mode="lines+markers",
                name=str(cond),
                legendgroup=str(cond), showlegend=k == 1, line={"color": color, "dash": dash},
                error_y={"type": "data", "symmetric": False,
                         "array": g["delta_high"] - g["delta"],
                         "arrayminus": g["delta"] - g["delta_low"]}), row=1, col=k)
        fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=k)  # type: ignore[arg-type]
        fig.update_xaxes(title_text="layer (edit at the prompt's last token)", row=1, col=k)
    fig.update_yaxes(title_text="Δ accuracy vs unsteered (paired 95% CI)", row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=520,
                      width=560 * len(frames) + 160, margin={"t": 130})
    return fig


#: the training sets' and the logit lens' predictors a reliability figure draws, and their names
PREDICTORS = {"consistency": "consistency", "d_prime": "d′", "probe_acc": "probe accuracy",
              "lens_peak": "lens peak", "lens_coherence": "lens coherence"}


def reliability_figure(report: Reliability, title: str = "") -> go.Figure:
    """A :class:`~steerlab.reliability.Reliability` report in three panels: each layer's
    per-item slopes (box per method: the vector and its references), the steerable and
    anti-steerable fractions with their 95% intervals by layer, and the vector's predictors
    by layer, each divided by its largest absolute value across layers (with the steerable
    fraction, scaled the same way) so one can see whether they pick the layers that steer."""
    m, t, sl = report.meta, report.table, report.slopes
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.08, subplot_titles=(
        "per-item slope (response per unit coeff)", "fraction of items (95% Wilson)",
        "predictors (÷ max |value| over layers)"))
    mine = m["vector_method"]
    for method, g in sl.groupby("method", sort=False):
        color, _ = METHOD_STYLE.get(str(method), ("#9467bd", "solid"))
        fig.add_trace(go.Box(x=g["layer"].astype(str), y=g["slope"], name=str(method),
                             marker_color=color, boxpoints=False, legendgroup=str(method)),
                      row=1, col=1)
    for (method, seed), g in t.groupby(["method", t["seed"].fillna(-1)], sort=False):
        color, _ = METHOD_STYLE.get(str(method), ("#9467bd", "solid"))
        label = str(method) + (f" {int(seed)}" if seed >= 0 and method != mine else "")
        for col, low, high, dash, what in (("steerable", "steerable_low", "steerable_high",
                                            "solid", "steerable"),
                                           ("anti_steerable", "anti_low", "anti_high", "dot",
                                            "anti-steerable")):
            fig.add_trace(go.Scatter(
                x=g["layer"], y=g[col], mode="lines+markers", name=f"{label}: {what}",
                line={"color": color, "dash": dash}, legendgroup=str(method),
                error_y={"type": "data", "symmetric": False, "array": g[high] - g[col],
                         "arrayminus": g[col] - g[low]}), row=1, col=2)
    own = t[t["method"] == mine].sort_values("layer")
    for col in ["steerable", *[c for c in PREDICTORS if c in own.columns]]:
        vals = own[col].astype(float)
        top = float(vals.abs().max()) if vals.notna().any() else 0.0
        if top > 0:
            fig.add_trace(go.Scatter(
                x=own["layer"], y=vals / top, mode="lines+markers",
                name=PREDICTORS.get(col, "steerable fraction (measured)"),
                line={"width": 3 if col == "steerable" else 1.5,
                      "color": "black" if col == "steerable" else None}), row=1, col=3)
    fig.add_hline(y=0, line={"color": "gray", "width": 1}, row=1, col=1)
    fig.update_xaxes(title_text="layer")
    fig.update_layout(
        title=title or (f"Is this vector reliable? {m['vector_method']} vector of "
                        f"{m['model']} on {m['task']} (n={m['n']}, {dtype_label(m['dtype'])}, "
                        f"coefficients {m['coeffs']} × {m['scale']})"),
        boxmode="group", template="plotly_white", height=620, width=1400,
        legend={"font": {"size": 10}})
    return fig
