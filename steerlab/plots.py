"""Figures: every function returns a ``plotly.graph_objects.Figure`` and never shows or saves it
(saving is :func:`steerlab.figures.save_figure`). Titles say which model and data made them.
The figures of the controls (patching maps, kind patching, reliability) are in
:mod:`steerlab.control_plots`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steerlab.analysis import LayerPCA, cluster_view, lens_side_by_side
from steerlab.devices import dtype_label
from steerlab.options import CONTROLS
from steerlab.stats import interval_side, wilson_interval

POS_COLOR, NEG_COLOR = "#d62728", "#1f77b4"
METHOD_STYLE = {"diff_means": ("#d62728", "solid"), "random": ("#7f7f7f", "dot"),
                "shuffled": ("#2ca02c", "dash"), "memorisation": ("#1f77b4", "dashdot")}


def _pca_traces(p: LayerPCA, show_legend: bool, pos_name: str, neg_name: str) -> list:
    return [
        go.Scatter(x=p.neg[:, 0], y=p.neg[:, 1], mode="markers", name=neg_name,
                   marker={"color": NEG_COLOR, "size": 5, "opacity": 0.6},
                   showlegend=show_legend, legendgroup="neg"),
        go.Scatter(x=p.pos[:, 0], y=p.pos[:, 1], mode="markers", name=pos_name,
                   marker={"color": POS_COLOR, "size": 5, "opacity": 0.6},
                   showlegend=show_legend, legendgroup="pos"),
    ]


def pca_panels(pcas: dict[str, LayerPCA], pos_name: str = "reasoning",
               neg_name: str = "memorisation", data: str = "") -> go.Figure:
    """One PCA panel per model (the seed's Figure 1), with an arrow from the memorisation
    centroid to the reasoning centroid."""
    names = list(pcas)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[
        f"{n}<br>layer {pcas[n].layer}, held-out 2-D boundary acc {pcas[n].heldout_accuracy:.2f}"
        for n in names])
    for i, name in enumerate(names, start=1):
        for tr in _pca_traces(pcas[name], i == 1, pos_name, neg_name):
            fig.add_trace(tr, row=1, col=i)
        p = pcas[name]
        fig.add_annotation(x=p.pos_centroid[0], y=p.pos_centroid[1], ax=p.neg_centroid[0],
                           ay=p.neg_centroid[1], xref=f"x{i if i > 1 else ''}",
                           yref=f"y{i if i > 1 else ''}", axref=f"x{i if i > 1 else ''}",
                           ayref=f"y{i if i > 1 else ''}", showarrow=True, arrowhead=3,
                           arrowwidth=2, arrowcolor="black", text="")
        fig.update_xaxes(title_text="PC1", row=1, col=i)
        fig.update_yaxes(title_text="PC2", row=1, col=i)
    fig.update_layout(title=f"PCA of last-token residuals: {pos_name} vs {neg_name} "
                      f"prompts{'<br><sup>' + data + '</sup>' if data else ''}", height=460,
                      margin={"t": 120},
                      width=max(500, 430 * len(names)), template="plotly_white")
    return fig


def pca_boundary(p: LayerPCA, model: str, pos_name: str = "reasoning",
                 neg_name: str = "memorisation", data: str = "") -> go.Figure:
    """Detailed PCA view with the fitted linear decision boundary (the seed's Figure 2)."""
    fig = go.Figure(_pca_traces(p, True, pos_name, neg_name))
    pts = np.vstack([p.pos, p.neg])
    xs = np.linspace(pts[:, 0].min(), pts[:, 0].max(), 50)
    w0, w1, b = p.boundary
    if abs(w1) > 1e-9:
        ys = -(w0 * xs + b) / w1
        keep = (ys >= pts[:, 1].min() - 1) & (ys <= pts[:, 1].max() + 1)
        fig.add_trace(go.Scatter(x=xs[keep], y=ys[keep], mode="lines", name="decision boundary",
                                 line={"color": "black", "dash": "dash"}))
    fig.add_annotation(x=p.pos_centroid[0], y=p.pos_centroid[1], ax=p.neg_centroid[0],
                       ay=p.neg_centroid[1], xref="x", yref="y", axref="x", ayref="y",
                       showarrow=True, arrowhead=3, arrowwidth=2, text="")
    fig.update_layout(
        title=f"{model}, layer {p.layer}: held-out accuracy of the boundary "
              f"{p.heldout_accuracy:.2f} (PC1 {p.explained[0]:.0%}, PC2 {p.explained[1]:.0%} "
              f"of variance){'<br>' + data if data else ''}",
        xaxis_title="PC1", yaxis_title="PC2", template="plotly_white", height=480, width=640)
    return fig


def accuracy_by_layer(table: pd.DataFrame, coeff: float, title: str = "",
                      bands: bool = False) -> go.Figure:
    """Accuracy vs steering layer at one coefficient, per method, with 95% intervals, the
    unsteered baseline (band = its interval) and chance as reference lines (Figure 3).
    ``bands``: also shade, per layer, the range the control directions' (random, shuffled)
    intervals span, the accuracy a direction with no signal reaches there."""
    fig = go.Figure()
    base = table[table["method"] == "baseline"].iloc[0]
    cells = table[(table["method"] != "baseline") & np.isclose(table["coeff"], coeff)]
    layers = sorted(cells["layer"].unique())
    if layers:
        fig.add_trace(go.Scatter(x=[layers[0], layers[-1], layers[-1], layers[0]],
                                 y=[base.ci_low, base.ci_low, base.ci_high, base.ci_high],
                                 fill="toself", fillcolor="rgba(0,0,0,0.08)", line={"width": 0},
                                 mode="lines",
                                 name="baseline 95% CI", hoverinfo="skip"))
    fig.add_hline(y=base.accuracy, line={"color": "black"},
                  annotation_text=f"unsteered {base.accuracy:.3f}")
    if pd.notna(base.get("chance")):
        fig.add_hline(y=base.chance, line={"color": "gray", "dash": "dot"},
                      annotation_text=f"chance {base.chance:.2f}",
                      annotation_position="bottom right")
    controls = cells[cells["method"].isin(CONTROLS)]
    if bands and len(controls):  # the range the no-signal directions' intervals span
        span = controls.groupby("layer").agg(low=("ci_low", "min"), high=("ci_high", "max"))
        fig.add_trace(go.Scatter(
            x=[*span.index, *span.index[::-1]], y=[*span["low"], *span["high"][::-1]],
            fill="toself", fillcolor="rgba(127,127,127,0.18)", line={"width": 0},
            mode="lines", name="controls' 95% CIs (" + ", ".join(
                sorted(controls["method"].unique())) + ")", hoverinfo="skip"))
    for method, group in cells.groupby("method", sort=False):
        g = group.sort_values("layer")
        color, dash = METHOD_STYLE.get(str(method), ("#9467bd", "solid"))
        fig.add_trace(go.Scatter(
            x=g["layer"], y=g["accuracy"], mode="lines+markers", name=str(method),
            line={"color": color, "dash": dash},
            error_y={"type": "data", "symmetric": False, "array": g["ci_high"] - g["accuracy"],
                     "arrayminus": g["accuracy"] - g["ci_low"]}))
    fig.update_layout(title=title or f"Accuracy vs steering layer (coeff {coeff:g})",
                      xaxis_title="steering layer", yaxis_title="accuracy (95% Wilson CI)",
                      template="plotly_white", height=450, width=760)
    return fig


def protocol_gains(gains: dict[str, pd.DataFrame], reported: dict[str, dict],
                   title: str = "") -> go.Figure:
    """The seed protocol's "best-layer gain" (best cell picked on the evaluation items minus
    unsteered, :func:`steerlab.replication.best_layer_gains`), one marker per draw, per
    direction and model (``gains``: model -> that table), with the gains the seed reported
    for its own models (``reported``: :data:`~steerlab.replication.SEED_REPORTED`) as
    dashed lines: how large a gain the protocol yields from directions with no signal."""
    fig = go.Figure()
    for i, (name, g) in enumerate(gains.items()):
        for method, group in g.groupby("method", sort=False):
            color, _ = METHOD_STYLE.get(str(method), ("#9467bd", "solid"))
            fig.add_trace(go.Scatter(
                x=[f"{name}<br>{method}"] * len(group), y=group["gain"], mode="markers",
                marker={"color": color, "size": 10, "symbol": ["circle", "diamond"][i % 2]},
                name=f"{name}: {method}", customdata=group[["draw", "best_layer"]],
                hovertemplate="draw %{customdata[0]}, layer %{customdata[1]}: "
                              "%{y:+.3f}<extra></extra>"))
    for name, r in reported.items():
        fig.add_hline(y=r["best"] - r["unsteered"], line={"color": "black", "dash": "dash",
                                                          "width": 1},
                      annotation_text=f"seed: {name.split('/')[-1]} "
                                      f"{r['best'] - r['unsteered']:+.3f}",
                      annotation_position="top left")
    fig.add_hline(y=0, line={"color": "gray"})
    fig.update_layout(title=title or "The seed protocol's best-layer gain, per direction",
                      yaxis_title="best-layer accuracy − unsteered (same items)",
                      template="plotly_white", height=480, width=860)
    return fig


def delta_heatmap(table: pd.DataFrame, method: str = "diff_means", title: str = "") -> go.Figure:
    """Layer x coefficient heatmap of the paired accuracy change vs the unsteered baseline;
    cells whose 95% paired interval excludes zero are marked with *."""
    cells = table[table["method"] == method]
    piv = cells.pivot_table(index="coeff", columns="layer", values="delta")
    sig = cells.assign(sig=interval_side(cells["delta_low"], cells["delta_high"]) != 0).pivot_table(
        index="coeff", columns="layer", values="sig")
    text = [[f"{v:+.3f}{'*' if s else ''}" for v, s in zip(row, srow, strict=True)]
            for row, srow in zip(piv.values, sig.values, strict=True)]
    lim = float(np.nanmax(np.abs(piv.values))) if piv.size else 1.0
    fig = go.Figure(go.Heatmap(z=piv.values, x=[str(c) for c in piv.columns],
                               y=[f"{c:g}" for c in piv.index], text=text,
                               texttemplate="%{text}", colorscale="RdBu", zmid=0, zmin=-lim,
                               zmax=lim, colorbar={"title": "Δ accuracy"}))
    fig.update_layout(title=title or f"Δ accuracy vs unsteered ({method}); * = 95% paired CI "
                      "excludes 0", xaxis_title="steering layer", yaxis_title="coefficient",
                      template="plotly_white", height=420, width=760)
    return fig


def cosine_profiles(profiles: dict[str, tuple[np.ndarray, np.ndarray]],
                    vector_layer: int | dict[str, int], title: str = "") -> go.Figure:
    """Mean cosine (± sd) between the reasoning vector and each layer's activations of
    reasoning and memorisation prompts, one panel per model (Figure 4).

    ``profiles``: model -> ((L, n_pos) cosines, (L, n_neg) cosines).
    """
    names = list(profiles)
    vl = vector_layer if isinstance(vector_layer, dict) else dict.fromkeys(names, vector_layer)
    fig = make_subplots(rows=1, cols=len(names),
                        subplot_titles=[f"{n} (vector from layer {vl[n]})" for n in names])
    for i, name in enumerate(names, start=1):
        for cos, label, color in zip(profiles[name], ("reasoning", "memorisation"),
                                     (POS_COLOR, NEG_COLOR), strict=True):
            m, s = cos.mean(1), cos.std(1)
            fig.add_trace(go.Scatter(x=list(range(cos.shape[0])), y=m, mode="lines+markers",
                                     name=label,
                                     line={"color": color}, showlegend=i == 1,
                                     legendgroup=label,
                                     error_y={"type": "data", "array": s, "thickness": 1}),
                          row=1, col=i)
        fig.update_xaxes(title_text="layer", row=1, col=i)
        fig.update_yaxes(title_text="cosine with vector", row=1, col=i)
    fig.update_layout(title=title or "Cosine similarity of the reasoning vector with each "
                      "layer's activations", template="plotly_white", height=420,
                      width=max(520, 460 * len(names)))
    return fig


# ---- learned vectors (notebooks 05 and 06) ----------------------------------------------------


def training_curves(history: pd.DataFrame, dev_n: int, title: str = "",
                    window: int = 5) -> go.Figure:
    """RLOO training: mean reward per step (and its running mean) and greedy dev accuracy with
    95% Wilson intervals, on one shared step axis."""

    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "rollout reward (sampled, temperature 1)", f"greedy dev accuracy (n={dev_n})"))
    steps = history.dropna(subset=["reward"]) if "reward" in history else history.iloc[:0]
    if len(steps):
        fig.add_trace(go.Scatter(x=steps.step, y=steps.reward, mode="markers", name="reward",
                                 marker={"color": "#aaaaaa", "size": 5}), 1, 1)
        fig.add_trace(go.Scatter(x=steps.step, y=steps.reward.rolling(window, 1).mean(),
                                 mode="lines", name=f"running mean ({window} steps)",
                                 line={"color": "#d62728"}), 1, 1)
    dev = history.dropna(subset=["dev_acc"]) if "dev_acc" in history else history.iloc[:0]
    if len(dev):
        k = (dev.dev_acc * dev_n).round().astype(int)
        lo, hi = zip(*(wilson_interval(int(x), dev_n) for x in k), strict=True)
        fig.add_trace(go.Scatter(
            x=dev.step, y=dev.dev_acc, mode="lines+markers", name="dev accuracy",
            line={"color": "#1f77b4"},
            error_y={"type": "data", "symmetric": False,
                     "array": np.array(hi) - dev.dev_acc.to_numpy(),
                     "arrayminus": dev.dev_acc.to_numpy() - np.array(lo)}), 1, 2)
    fig.update_xaxes(title_text="step")
    fig.update_layout(title=title, template="plotly_white", height=460, width=1050,
                      margin={"t": 120})
    return fig


def condition_bars(table: pd.DataFrame, title: str = "", baseline: str = "base") -> go.Figure:
    """Accuracy per condition with 95% Wilson intervals; each bar labelled with its paired
    difference to the baseline (bootstrap 95% interval). ``table``: the comparison schema
    (:data:`steerlab.stats.COMPARISON_COLUMNS`, e.g. from
    :func:`steerlab.conditions.compare_conditions`) with a ``condition`` column."""
    text = [("baseline" if r.condition == baseline else
             f"{r.delta:+.3f} [{r.delta_low:+.3f}, {r.delta_high:+.3f}]")
            for _, r in table.iterrows()]
    fig = go.Figure(go.Bar(
        x=table.condition, y=table.accuracy, text=text, textposition="outside",
        marker_color=["#7f7f7f" if c == baseline else "#1f77b4" for c in table.condition],
        error_y={"type": "data", "symmetric": False, "array": table.ci_high - table.accuracy,
                 "arrayminus": table.accuracy - table.ci_low}))
    fig.update_layout(title=title, yaxis_title="accuracy (95% Wilson CI)",
                      yaxis_range=[0, min(1.0, float(table.ci_high.max()) + 0.15)],
                      template="plotly_white", height=470, width=900, margin={"t": 100})
    return fig


def table_figure(df: pd.DataFrame, title: str = "", width: int = 1100,
                 height: int | None = None) -> go.Figure:
    """A DataFrame as a plotly table (for tables that belong in figures/): columns as wide as
    their longest entry (within reason), rows tall enough for wrapped text."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in df[c]] for c in df]
    widths = [min(max(len(str(c)), *(len(v) for v in col)) if col else len(str(c)), 60)
              for c, col in zip(df.columns, cells, strict=True)]
    chars_per_line = [max(8, w * 0.9) for w in widths]  # rough: a cell wraps past its width
    lines = [max((len(v) / cpl for v, cpl in zip(row, chars_per_line, strict=True)), default=1)
             for row in zip(*cells, strict=True)] if cells else []
    rows_px = sum(22 * max(1, int(np.ceil(n))) + 12 for n in lines)
    fig = go.Figure(go.Table(columnwidth=widths,
                             header={"values": list(df.columns), "align": "left",
                                     "fill_color": "#e8e8e8"},
                             cells={"values": cells, "align": "left"}))
    fig.update_layout(title=title, width=width, height=height or 130 + rows_px,
                      margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return fig


def layer_cosine_figure(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Per-layer cosine between two vectors (:func:`steerlab.lens.layer_cosines`)."""
    fig = go.Figure(go.Scatter(x=table.layer, y=table.cosine, mode="lines+markers",
                               name="cosine"))
    fig.add_hline(y=0, line={"color": "gray", "dash": "dot"})
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="cosine similarity",
                      template="plotly_white", height=420, width=760)
    return fig


# ---- notebook 04: cost and benefit ------------------------------------------------------------


def cost_benefit_figure(costs: pd.DataFrame, data: str = "") -> go.Figure:
    """Seconds per piece of work on this machine, steering vs full fine-tuning: horizontal bars
    on a log axis, one panel per model, coloured by ``kind`` (measured / extrapolated).

    ``costs``: :func:`steerlab.analysis.cost_table` rows of one or more models; the title names
    those models and ``data`` (what was measured on).
    """
    import plotly.express as px

    models = ", ".join(dict.fromkeys(str(m) for m in costs["model"]))
    sub = f"{models}{' · ' + data if data else ''}"
    fig = px.bar(costs, x="seconds", y="what", color="kind", facet_col="model",
                 orientation="h", log_x=True,
                 title="Seconds on this machine (2-core CPU): steering vs full fine-tuning "
                       f"(log scale; extrapolated bars are labelled)<br><sup>{sub}</sup>",
                 template="plotly_white", height=420, width=1100)
    fig.update_layout(margin={"t": 110})
    return fig


# ---- notebook 06: reading learned vectors -----------------------------------------------------


def logit_lens_figure(lens: pd.DataFrame, model: str, data: str = "",
                      what: str = "the learned vector") -> go.Figure:
    """One layer's logit lens (:func:`steerlab.lens.logit_lens` with ``layers=<one layer>``) as a
    table figure: top and bottom tokens side by side with their cosines
    (:func:`steerlab.analysis.lens_side_by_side`); the title names the layer, ``what`` was
    read, the ``model`` and the ``data`` it came from."""

    table = lens_side_by_side(lens)
    layer = int(lens.layer.iloc[0]) if len(lens) else "?"
    return table_figure(table, title=f"Logit lens of {what} at layer {layer} · {model}"
                        f"{'<br>' + data if data else ''}", width=760)


def cluster_table_figure(clusters: pd.DataFrame, model: str, data: str = "",
                         k: int = 50) -> go.Figure:
    """The paper's Table 2 as a figure: :func:`steerlab.analysis.cluster_view` of a
    :func:`steerlab.lens.cluster_table` (made from each layer's top-``k`` tokens), rounded to
    3 decimals; the title names the ``model`` and the ``data``."""

    return table_figure(cluster_view(clusters).round(3), title=(
        f"Clusters of each layer's top-{k} logit-lens tokens · learned vectors of {model}"
        f"{'<br>(' + data + ')' if data else ''}"))


def resource_table_figure(table: pd.DataFrame, model: str, dtype: object = "",
                          data: str = "") -> go.Figure:
    """The resource table (:func:`steerlab.analysis.resource_table`, the paper's Table 3) as a
    figure, rounded to 4 decimals; the title names the ``model`` (and its ``dtype``, a torch
    dtype or a name), the ``data`` of the steps, and says the last row is the paper's model."""
    dt = dtype_label(dtype) if dtype != "" else ""
    return table_figure(table.round(4), title=(
        f"Training cost per step on this CPU · {model}{f' ({dt})' if dt else ''}"
        f"{' · ' + data if data else ''}<br>"
        "last row: the paper's model, computed from its architecture"))
