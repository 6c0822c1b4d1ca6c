"""Activation patching at any site, on any backend, and the result both patchings return.

**Activation patching** (denoising, the default): run the *corrupted* prompts, write the
*clean* run's activation at one cell (site, layer, position[, head]) into them, and measure
how much of the clean behaviour comes back; ``direction="noise"`` writes the corrupted
activation into the clean run instead. TransformerLens' ``patching`` module runs one full
forward of the corrupted batch per cell; here each row of a forward patches another cell (of
another prompt pair), and on the ``hf`` backend the blocks before a layer's cells are run once
for all of them (the corrupted prefix is the same for every cell of that layer), so only the
blocks from the patched layer on are recomputed. Same numbers, fewer FLOPs.

**Attribution patching** (:mod:`steerlab.attribution`) estimates every cell at once to first
order; the metrics are in :mod:`steerlab.metrics`, the prompt pairs in :mod:`steerlab.pairs`.
Intervals are percentile bootstraps across prompt pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlab import engine
from steerlab.backends.base import check_site
from steerlab.cache import cache_sites
from steerlab.errors import OptionError
from steerlab.metrics import Metric, as_metric, last_logits
from steerlab.options import DIRECTIONS, BackendName, Direction, Site
from steerlab.pairs import prompt_pairs, shared_prefix
from steerlab.receipts import Receipt
from steerlab.stats import bootstrap_mean_ci
from steerlab.validate import check_layers

if TYPE_CHECKING:
    from steerlab.models import Model

#: ``positions="all"``: one cell per layer (and head) patching every position at once
ALL = "all"


# --- results --------------------------------------------------------------------------------


@dataclass
class PatchResult:
    """What :func:`activation_patching` (or :func:`attribution_patching`) returns.

    Attributes:
        frame: one row per cell: site, layer, position (-1 for ``positions="all"``), token,
            head (-1 for residual sites), value (mean over pairs), ci_low, ci_high (95%
            bootstrap across pairs), values (per pair; NaN where the pair is shorter).
        tensor: the values shaped like TransformerLens' maps: ``[layer, pos]``, ``[layer]``
            (positions ``"all"``), ``[layer, pos, head]`` or ``[layer, head]`` (site ``z``).
        clean, corrupted: the metric's mean on the unpatched clean and corrupted runs (raw,
            before normalisation).
    """

    frame: pd.DataFrame
    tensor: torch.Tensor
    site: Site
    layers: list[int]
    positions: list[int] | str
    heads: list[int] | None
    direction: Direction
    metric: str
    clean: float
    corrupted: float
    meta: dict[str, Any] = field(default_factory=dict)
    #: what the patching did (:mod:`steerlab.receipts`): every forward's patched positions
    receipt: Receipt | None = field(default=None, repr=False, compare=False)

    def strongest(self) -> dict[str, Any]:
        """The cell with the largest mean value: layer, position, token, head, value and its
        95% interval (plain Python values, ready for JSON)."""
        row = self.frame.loc[self.frame["value"].idxmax()]
        return {"site": self.site, "layer": int(row["layer"]), "position": int(row["position"]),
                "token": str(row["token"]), "head": int(row["head"]),
                "value": float(row["value"]), "ci_low": float(row["ci_low"]),
                "ci_high": float(row["ci_high"])}


def result(values: np.ndarray, cells: list[tuple[int, int, int]], site: Site,
            layers: list[int], positions: list[int] | str, heads: list[int] | None,
            direction: Direction, metric: Metric, clean: float, corrupted: float,
            tokens: list[str], seed: int, meta: dict[str, Any]) -> PatchResult:
    """The :class:`PatchResult` of ``values`` (n_pairs, n_cells; NaN where a pair lacks the
    cell): per-cell means with bootstrap intervals across pairs, and the map tensor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=0)
    lo, hi = bootstrap_mean_ci(values, seed=seed)
    rows = []
    for c, (layer, pos, head) in enumerate(cells):
        rows.append({"site": site, "layer": layer, "position": pos,
                     "token": tokens[pos] if 0 <= pos < len(tokens) else "",
                     "head": head, "value": float(mean[c]), "ci_low": float(lo[c]),
                     "ci_high": float(hi[c]),
                     "values": values[:, c].tolist()})  # cpu: a numpy array
    frame = pd.DataFrame(rows)
    shape = [len(layers)]
    if positions != ALL:
        shape.append(len(positions))
    if heads is not None:
        shape.append(len(heads))
    tensor = torch.tensor(mean, dtype=torch.float32).reshape(shape)
    return PatchResult(frame, tensor, site, layers, positions, heads, direction, metric.name,
                       clean, corrupted, meta)


# --- activation patching --------------------------------------------------------------------


def patch_cells(layers: list[int], positions: list[int] | str, heads: list[int] | None
                ) -> list[tuple[int, int, int]]:
    """Every (layer, position, head) cell; -1 for "all positions" and for "no head"."""
    pos: list[int] = [-1] if isinstance(positions, str) else list(positions)
    hs: list[int] = [-1] if heads is None else list(heads)
    return [(l, p, h) for l in layers for p in pos for h in hs]


def check_options(model: Model, site: Site, layers: Sequence[int] | int | None,
                  positions: Sequence[int] | str | None, heads: Sequence[int] | None,
                  direction: Direction, backend: BackendName, width: int
                  ) -> tuple[list[int], list[int] | str, list[int] | None]:
    """The layers, positions and heads to patch, each checked against the model and the
    prompts' ``width``; an unknown site or direction is refused."""
    be = model.backend(backend)
    check_site(site, be.sites, model.name)
    if direction not in DIRECTIONS:
        raise OptionError(f"Unknown direction {direction!r}: use one of {DIRECTIONS}.")
    use_layers = check_layers(model, layers)
    if positions is None:
        use_pos: list[int] | str = list(range(width))
    elif positions == ALL:
        use_pos = ALL
    elif isinstance(positions, str):
        raise OptionError(f"positions={positions!r}: pass None (each position), 'all' (all "
                          "at once) or a list of positions.")
    else:
        use_pos = [p if p >= 0 else width + p for p in positions]
        bad = [p for p in use_pos if not 0 <= p < width]
        if bad or not use_pos:
            raise OptionError(f"Positions {list(positions)} out of range: the prompts have "
                              f"at most {width} tokens.")
    use_heads: list[int] | None = None
    if site == "z":
        n_heads = be.heads[0]  # type: ignore[index]
        use_heads = list(range(n_heads)) if heads is None else list(heads)
        bad = [h for h in use_heads if not 0 <= h < n_heads]
        if bad or not use_heads:
            raise OptionError(f"Heads {heads} out of range: {model.name} has {n_heads} heads.")
    elif heads is not None:
        raise OptionError(f"heads= needs site='z' (per-head outputs), not {site!r}.")
    return use_layers, use_pos, use_heads


def _patch_fn(src: torch.Tensor, rows: torch.Tensor, pairs: torch.Tensor, pos: torch.Tensor,
              heads: torch.Tensor, lengths: torch.Tensor):
    """An edit writing ``src[pair, pos(, head)]`` into each listed row (pos -1: every real
    position; head -1: every head)."""
    def fn(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        s = src.to(device=h.device, dtype=h.dtype)
        for r, i, p, k in zip(rows.cpu().tolist(), pairs.cpu().tolist(), pos.cpu().tolist(),
                              heads.cpu().tolist(), strict=True):
            t = slice(0, int(lengths[i])) if p < 0 else slice(p, p + 1)
            if k < 0:
                h[r, t] = s[i, t]
            else:
                h[r, t, k] = s[i, t, k]
        return h

    return fn


def activation_patching(model: Model, clean: Sequence[str], corrupted: Sequence[str],
                        metric: Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        site: Site = "resid_pre", layers: Sequence[int] | int | None = None,
                        positions: Sequence[int] | str | None = None,
                        heads: Sequence[int] | None = None, direction: Direction = "denoise",
                        backend: BackendName = "hf", batch_cells: int = 32,
                        chat: bool | None = None, seed: int = 0, progress: bool | None = None,
                        fast: bool = True) -> PatchResult:
    """Patch every (layer, position[, head]) cell of ``site`` between paired prompts.

    Args:
        clean, corrupted: prompts, pair by pair of the same token length.
        metric: a :class:`Metric` (:func:`logit_diff`, :func:`answer_logprob`, ...) or a
            callable ``(logits (rows, vocab), pair (rows,)) -> (rows,)``.
        site: any site the model has (``resid_pre``, ``attn_out``, ``mlp_out``, ``z``, ...).
        layers: default all; positions: None = each position, ``"all"`` = all at once, or a
            list (negative counts from the end); heads: site ``z`` only (default all).
        direction: ``denoise`` (clean activation into the corrupted run) or ``noise``.
        batch_cells: rows per forward (each row patches one cell of one pair).
        fast: skip cells before a pair's first differing token (both runs are the same
            there: the value is the unpatched run's) and, on the ``hf`` backend, run the
            blocks before each layer once for all its cells.

    Returns:
        :class:`PatchResult` (``.frame``, ``.tensor``).
    """
    m = as_metric(metric)
    pairs = prompt_pairs(model, clean, corrupted, chat)
    width = pairs.clean["input_ids"].shape[1]
    use_layers, use_pos, use_heads = check_options(model, site, layers, positions, heads,
                                                    direction, backend, width)
    if batch_cells < 1:
        raise OptionError(f"batch_cells must be >= 1, got {batch_cells}.")
    be = model.backend(backend)
    src_prompts, run_on = ((clean, pairs.corrupted) if direction == "denoise"
                           else (corrupted, pairs.clean))
    n = len(pairs.lengths)
    with torch.no_grad():
        acts = cache_sites(model, list(src_prompts), [site], layers=use_layers,
                           reduction="none", chat=chat, backend=backend)[site]
        clean_v = m(last_logits(be.forward(pairs.clean), pairs.lengths), torch.arange(n))
        corr_v = m(last_logits(be.forward(pairs.corrupted), pairs.lengths), torch.arange(n))
    cells = patch_cells(use_layers, use_pos, use_heads)
    values = np.full((n, len(cells)), np.nan)
    # before a pair's first differing token both runs are the same (a causal model): a patch
    # there changes nothing, so with ``fast`` its value is the unpatched run's, not recomputed
    same = shared_prefix(pairs) if fast else torch.zeros(n, dtype=torch.long)
    base_v = (corr_v if direction == "denoise" else clean_v).cpu().numpy()
    jobs = []
    for c, (_, p, _) in enumerate(cells):
        for i in range(n):
            if p >= int(pairs.lengths[i]):
                continue  # a pair shorter than the position has no cell
            if 0 <= p < int(same[i]):
                values[i, c] = base_v[i]
            else:
                jobs.append((c, i))
    show = progress if progress is not None else len(jobs) > 4 * batch_cells
    bar = tqdm(total=len(jobs), desc=f"patching {site}", disable=not show, leave=False)
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for c, i in jobs:
        by_layer.setdefault(cells[c][0], []).append((c, i))
    prefix = engine.Prefix(be, run_on, share=fast)  # blocks before a layer: run once
    rec = Receipt("patched", "detail")
    with torch.no_grad():
        for layer, layer_jobs in by_layer.items():
            src = acts.at(layer)  # (n, T, ...) of the source run
            if layer > 0:
                prefix.reach(layer - 1)
            else:
                prefix.clear()
            for k in range(0, len(layer_jobs), batch_cells):
                chunk = layer_jobs[k:k + batch_cells]
                got = _run_chunk(be, m, pairs.lengths, site, layer, src, cells, chunk, prefix,
                                 rec)
                for (c, i), v in zip(chunk, got.cpu().tolist(), strict=True):
                    values[i, c] = v
                bar.update(len(chunk))
    bar.close()
    clean_m, corr_m = float(clean_v.mean()), float(corr_v.mean())
    if m.normalise:
        values = (values - corr_m) / (clean_m - corr_m)
    res = result(values, cells, site, use_layers, use_pos, use_heads, direction, m, clean_m,
                 corr_m, pairs.tokens, seed,
                 {"backend": backend, "n_pairs": n, "shared_prefix": prefix.on})
    res.receipt = rec
    return res


def _run_chunk(be: Any, m: Metric, lengths: torch.Tensor, site: Site, layer: int,
               src: torch.Tensor, cells: list[tuple[int, int, int]],
               chunk: list[tuple[int, int]], prefix: engine.Prefix, rec: Receipt
               ) -> torch.Tensor:
    """Metric values of one forward whose rows each patch one (cell, pair) of ``layer``."""
    pair_of_row = torch.tensor([i for _, i in chunk])
    rows = torch.arange(len(chunk))
    pos = torch.tensor([cells[c][1] for c, _ in chunk])
    heads = torch.tensor([cells[c][2] for c, _ in chunk])
    fn = _patch_fn(src, rows, pair_of_row, pos, heads, lengths)
    with be.add_edits([(layer, fn, {"site": site, "receipt": rec})]):
        logits = prefix.forward(rows=pair_of_row)
    return m(last_logits(logits, lengths[pair_of_row]), pair_of_row)


