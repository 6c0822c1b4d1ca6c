"""A token view of steering: for one prompt, the projection of each token's residual onto a
vector's direction at one layer, without and with steering (a table, an HTML strip, a figure).

Steering at the layer that is read (``steer_layer == layer``) adds ``coeff * v`` to every
token's residual there, so every projection moves by the same ``coeff * |v|`` (in ``raw``
units): a check more than a view. Steering at an earlier layer and reading at a later one shows
how the blocks in between carry (or undo) the push, token by token.

Example:
    >>> frame = token_projections(model, "What is 17 + 25?", vec, layer=14, coeff=4.0,
    ...                           steer_layer=10)
    >>> display(HTML(token_view_html(frame)))
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from steerlab.cache import cache_activations
from steerlab.errors import LayerError
from steerlab.options import APPLY_SCALE, BackendName, Scale
from steerlab.steering import steer
from steerlab.vectors import SITE, SteeringVector, unit

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["ROWS", "token_projection_figure", "token_projections", "token_view_html"]

#: the two rows of the view, and the frame's columns holding them
ROWS = ("unsteered", "steered")
#: diverging scale: negative (blue) -> zero (near white) -> positive (red), ColorBrewer RdBu
_NEG, _MID, _POS = (33, 102, 172), (247, 247, 247), (178, 24, 43)


def token_projections(model: Model, prompt: str, vector: SteeringVector | torch.Tensor,
                      layer: int, coeff: float = 1.0, *, steer_layer: int | None = None,
                      scale: Scale = APPLY_SCALE, backend: BackendName = "hf",
                      chat: bool | None = None) -> pd.DataFrame:
    """Per prompt token, the projection of the residual at ``layer`` onto the unit direction of
    ``vector`` at ``layer``, unsteered and with ``steer(model, vector, layers=steer_layer,
    coeff=coeff, scale=scale)`` on.

    The residual is read with ``cache_activations(..., reduction="none")`` at the vector's
    site (``resid_post`` for a raw tensor) and projected in float64.

    Args:
        model: the model.
        prompt: one prompt (the chat template applies as ``chat`` says, as everywhere).
        vector: a :class:`SteeringVector` holding ``layer`` and ``steer_layer``, or a
            (d_model,) tensor used at both.
        layer: where the residual is read and which direction it is projected on.
        coeff: the steering coefficient, in ``scale`` units.
        steer_layer: where the vector is added (default ``layer``; at most ``layer``: a later
            edit cannot reach the residual read at ``layer``).
        scale: ``raw``, ``unit`` or ``norm`` (:meth:`SteeringVector.added`).
        backend: ``hf``, ``tlens`` or ``nnsight``.
        chat: apply the chat template (default: follow the model).

    Returns:
        One row per prompt token: ``position``, ``token_id``, ``token`` (the decoded token),
        ``unsteered`` and ``steered`` projections. ``attrs`` records the model, layers, coeff,
        scale and site (the titles read them).
    """
    steer_layer = layer if steer_layer is None else steer_layer
    if steer_layer > layer:
        raise LayerError(f"steer_layer={steer_layer} comes after layer={layer}: an edit there "
                         "cannot change the residual read at layer. Steer at or before it.")
    direction = vector[layer] if isinstance(vector, SteeringVector) else vector  # (d_model,)
    towards = unit(direction.double())
    site = vector.site if isinstance(vector, SteeringVector) else SITE
    chat = model.uses_chat(chat)  # one decision for the cache and the token strings

    def read() -> torch.Tensor:
        acts = cache_activations(model, [prompt], [layer], reduction="none", chat=chat,
                                 backend=backend, progress=False, site=site)
        return acts.at(layer)[0].double() @ towards  # (T,)

    plain = read()
    with steer(model, vector, layers=steer_layer, coeff=coeff, backend=backend, scale=scale):
        steered = read()
    enc = model.encode([prompt], chat=chat, padding_side="right")
    ids = enc["input_ids"][0].cpu().tolist()
    frame = pd.DataFrame({
        "position": range(len(ids)), "token_id": ids,
        "token": [model.tokenizer.decode([i]) for i in ids],
        "unsteered": plain.cpu().numpy(), "steered": steered.cpu().numpy()})
    frame.attrs.update(model=model.name, layer=layer, steer_layer=steer_layer,
                       coeff=float(coeff), scale=scale, site=site)
    return frame


def _title(frame: pd.DataFrame, title: str | None) -> str:
    if title is not None:
        return title
    a = frame.attrs
    if not a:
        return "projection on the steering direction, per token"
    return (f"{a['model']}: projection on the vector at layer {a['layer']} ({a['site']}), "
            f"steered at layer {a['steer_layer']}, coeff {a['coeff']:g} ({a['scale']})")


def _vmax(frame: pd.DataFrame) -> float:
    """The colour scale's end: the 95th percentile of |projection| over both rows, so one
    huge token (the first token is often an attention sink, its residual many times larger than
    the rest) does not wash out every other one; larger values show at full colour."""
    values = frame[list(ROWS)].abs().to_numpy()
    return float(np.quantile(values, 0.95)) if values.size else 0.0


def _colour(value: float, vmax: float) -> tuple[str, str]:
    """(background, text) CSS colours of ``value`` on a diverging scale of ``±vmax``."""
    t = max(-1.0, min(1.0, value / vmax)) if vmax > 0 else 0.0
    end = _POS if t > 0 else _NEG
    rgb = tuple(round(m + abs(t) * (e - m)) for m, e in zip(_MID, end, strict=True))
    return f"rgb{rgb}", "#fff" if abs(t) > 0.6 else "#000"


def _shown(token: str) -> str:
    """A token as HTML text: escaped, with line breaks and tabs made visible."""
    return html.escape(token).replace("\n", "↵").replace("\t", "⇥")


def token_view_html(frame: pd.DataFrame, title: str | None = None) -> str:
    """Two rows of coloured tokens ("unsteered", "steered"; one colour scale, symmetric
    around zero and clipped at :func:`_vmax`, for both), each token's projection in its hover
    title; every token is HTML-escaped. ``title`` defaults to one naming the model and layers
    (``frame.attrs``)."""
    vmax = _vmax(frame)
    rows = []
    for row in ROWS:
        spans = []
        for pos, tok, value in zip(frame["position"], frame["token"], frame[row], strict=True):
            bg, fg = _colour(float(value), vmax)
            hover = html.escape(f"{row} · position {pos} · {tok!r} · {value:+.4g}", quote=True)
            spans.append(f'<span title="{hover}" style="background:{bg};color:{fg};'
                         f'padding:1px 0;white-space:pre">{_shown(str(tok))}</span>')
        rows.append(f'<tr><th style="text-align:right;padding-right:8px;font-weight:normal">'
                    f'{row}</th><td style="line-height:1.9">{"".join(spans)}</td></tr>')
    lo, hi = _colour(-vmax, vmax)[0], _colour(vmax, vmax)[0]
    legend = (f'<div style="font-size:smaller">colour: projection, <span style="background:'
              f'{lo};color:#fff">&nbsp;&le;{-vmax:.3g}&nbsp;</span> to <span style="background:'
              f'{hi};color:#fff">&nbsp;&ge;{vmax:.3g}&nbsp;</span>; hover a token for its '
              'value</div>')
    return (f'<div class="steerlab-token-view" style="font-family:monospace">'
            f'<div style="font-weight:bold;margin-bottom:4px">{html.escape(_title(frame, title))}'
            f'</div><table>{"".join(rows)}</table>{legend}</div>')


def token_projection_figure(frame: pd.DataFrame, title: str | None = None) -> go.Figure:
    """A heat strip: rows "unsteered" and "steered", one column per token (its text on the
    cell and the axis), coloured by the projection on a diverging scale centred on zero and
    clipped like :func:`token_view_html`'s (the hover shows the real value)."""
    tokens = [_shown(str(t)) for t in frame["token"]]
    z = frame[list(ROWS)].to_numpy().T  # (2, T)
    vmax = _vmax(frame)
    clip = {"zmin": -vmax, "zmax": vmax} if vmax > 0 else {}
    fig = go.Figure(go.Heatmap(
        z=z, x=list(frame["position"]), y=list(ROWS), text=[tokens, tokens],
        texttemplate="%{text}", colorscale="RdBu", reversescale=True, zmid=0, **clip,
        colorbar={"title": {"text": "projection"}},
        hovertemplate="%{y}<br>position %{x}: %{text}<br>projection %{z:.4g}<extra></extra>"))
    fig.update_layout(title=html.escape(_title(frame, title)), height=260,
                      width=max(600, 40 * len(frame) + 200),
                      xaxis={"tickmode": "array", "tickvals": list(frame["position"]),
                             "ticktext": tokens, "title": "token"},
                      yaxis={"autorange": "reversed"})
    return fig
