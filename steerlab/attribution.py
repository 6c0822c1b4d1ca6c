"""Attribution patching: every cell of :func:`~steerlab.patching.activation_patching`
estimated at once, to first order, ``(a_clean - a_corrupt) . d metric / d a`` at the corrupted
run, from one clean forward and one corrupted forward + backward; :func:`screen_and_verify`
patches the top cells for real and reports how well the estimate ranked them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from steerlab.cache import cache_sites
from steerlab.metrics import Metric, as_metric, last_logits
from steerlab.options import BackendName, Site
from steerlab.padding import mask_of
from steerlab.pairs import prompt_pairs
from steerlab.patching import (
    ALL,
    PatchResult,
    activation_patching,
    check_options,
    patch_cells,
    result,
)
from steerlab.receipts import Receipt

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["attribution_patching", "screen_and_verify"]


def attribution_patching(model: Model, clean: Sequence[str], corrupted: Sequence[str],
                         metric: Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         site: Site = "resid_pre", layers: Sequence[int] | int | None = None,
                         positions: Sequence[int] | str | None = None,
                         heads: Sequence[int] | None = None, backend: BackendName = "hf",
                         chat: bool | None = None, seed: int = 0) -> PatchResult:
    """First-order estimate of denoising every cell: ``(a_clean - a_corrupt) . dM/da`` with
    the gradient taken at the corrupted run (one clean forward, one corrupted forward and
    backward). Same cells, shapes and normalisation as :func:`activation_patching`."""
    m = as_metric(metric)
    pairs = prompt_pairs(model, clean, corrupted, chat)
    width = pairs.clean["input_ids"].shape[1]
    use_layers, use_pos, use_heads = check_options(model, site, layers, positions, heads,
                                                    "denoise", backend, width)
    be = model.backend(backend)
    n = len(pairs.lengths)
    with torch.no_grad():
        clean_acts = cache_sites(model, list(clean), [site], layers=use_layers,
                                 reduction="none", chat=chat, backend=backend)[site]
        clean_v = m(last_logits(be.forward(pairs.clean), pairs.lengths), torch.arange(n))
    store: dict[int, torch.Tensor] = {}

    def grab(layer: int):
        def fn(h: torch.Tensor) -> torch.Tensor:
            if not h.requires_grad:  # a frozen model: make this activation a graph input
                h = h.detach().requires_grad_(True)
            store[layer] = h
            return h  # handed on, so the gradient reaches this very tensor (z: a view)

        return fn

    def leaf(h: torch.Tensor) -> torch.Tensor:  # the graph starts at block 0's input
        return h if h.requires_grad else h.detach().requires_grad_(True)

    rec = Receipt("read for gradients")
    grabs = [(layer, grab(layer), {"site": site, "receipt": rec}) for layer in use_layers]
    with be.add_edits([(0, leaf, {"site": "resid_pre"}), *grabs]), torch.enable_grad():
        logits = be.forward(pairs.corrupted)
        corr_v = m(last_logits(logits, pairs.lengths), torch.arange(n))
        tensors = [store[l] for l in use_layers]
        grads = torch.autograd.grad(corr_v.sum(), tensors, allow_unused=True)
    clean_m, corr_m = float(clean_v.mean()), float(corr_v.detach().mean())
    scale = (clean_m - corr_m) if m.normalise else 1.0
    cells = patch_cells(use_layers, use_pos, use_heads)
    values = np.full((n, len(cells)), np.nan)
    mask = mask_of(pairs.lengths, width)  # (n, T)
    for li, layer in enumerate(use_layers):
        g = grads[li]
        if g is None:
            g = torch.zeros_like(tensors[li])
        act = tensors[li].detach().float()
        delta = clean_acts.at(layer)[:, :width].to(act.device) - act
        contrib = (delta * g.float())  # (n, T, d) or (n, T, H, dh)
        contrib = contrib.sum(-1).cpu()  # (n, T) or (n, T, H): small, to the host once
        for c, (l, p, hd) in enumerate(cells):
            if l != layer:
                continue
            x = contrib if hd < 0 else contrib[..., hd]
            if site == "z" and hd < 0:
                x = x.sum(-1)
            if p < 0:
                val = (x * mask).sum(1)
                values[:, c] = val.cpu().numpy()
            else:
                ok = p < pairs.lengths
                values[ok.cpu().numpy(), c] = x[ok, p].cpu().numpy()
    values = values / scale
    res = result(values, cells, site, use_layers, use_pos, use_heads, "denoise", m, clean_m,
                 corr_m, pairs.tokens, seed, {"backend": backend, "n_pairs": n,
                                              "method": "attribution"})
    res.receipt = rec
    return res


def screen_and_verify(model: Model, clean: Sequence[str], corrupted: Sequence[str],
                      metric: Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      top_k: int = 10, **kwargs: Any) -> pd.DataFrame:
    """Screen every cell with :func:`attribution_patching`, then patch the ``top_k`` cells of
    largest |estimate| for real: one row per verified cell with both values and their ranks,
    and the Spearman rank correlation of the two in ``.attrs["spearman"]``."""
    est = attribution_patching(model, clean, corrupted, metric, **kwargs)
    top = est.frame.reindex(est.frame["value"].abs().sort_values(ascending=False).index)
    top = top.head(top_k)
    kw = {k: v for k, v in kwargs.items() if k in ("site", "backend", "chat", "seed")}
    real = []
    for row in top.itertuples():
        got = activation_patching(model, clean, corrupted, metric, layers=[int(row.layer)],
                                  positions=ALL if row.position < 0 else [int(row.position)],
                                  heads=None if row.head < 0 else [int(row.head)],
                                  progress=False, **kw)
        real.append(float(got.frame["value"].iloc[0]))
    out = top[["site", "layer", "position", "token", "head"]].copy()
    out["attribution"] = top["value"].to_numpy()
    out["patched"] = real
    out["rank_attribution"] = out["attribution"].abs().rank(ascending=False)
    out["rank_patched"] = out["patched"].abs().rank(ascending=False)
    rho = out[["rank_attribution", "rank_patched"]].corr(method="pearson").iloc[0, 1]
    out = out.reset_index(drop=True)
    out.attrs["spearman"] = float(rho) if not math.isnan(rho) else float("nan")
    return out
