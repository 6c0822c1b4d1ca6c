"""Activation patching and attribution patching at any site, on any backend.

**Activation patching** (denoising, the default): run the *corrupted* prompts, write the
*clean* run's activation at one cell (site, layer, position[, head]) into them, and measure
how much of the clean behaviour comes back; ``direction="noise"`` writes the corrupted
activation into the clean run instead. TransformerLens' ``patching`` module runs one full
forward of the corrupted batch per cell; here each row of a forward patches another cell (of
another prompt pair), and on the ``hf`` backend the blocks before a layer's cells are run once
for all of them (the corrupted prefix is the same for every cell of that layer), so only the
blocks from the patched layer on are recomputed. Same numbers, fewer FLOPs.

**Attribution patching** estimates every cell at once to first order,
``(a_clean - a_corrupt) . d metric / d a`` at the corrupted run, from one clean forward and one
corrupted forward + backward; :func:`screen_and_verify` patches the top cells for real and
reports how well the estimate ranked them.

Metrics see the logits at each prompt's last token, (rows, vocab), and the index of the pair
each row belongs to; they return one value per row. :func:`logit_diff` is normalised so the
clean run scores 1 and the corrupted run 0 (the IOI convention), from the batch means.
Intervals are percentile bootstraps across prompt pairs.
"""

from __future__ import annotations

import math
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
from steerlab.cache import cache_sites, check_layers
from steerlab.errors import EmptyInputError, OptionError
from steerlab.models import check_prompts
from steerlab.options import DIRECTIONS
from steerlab.stats import accuracy, bootstrap_mean_ci

if TYPE_CHECKING:
    from steerlab.models import Model

#: ``positions="all"``: one cell per layer (and head) patching every position at once
ALL = "all"


class PatchInputError(EmptyInputError):
    """Clean and corrupted prompts that cannot be patched pair by pair."""


# --- metrics --------------------------------------------------------------------------------


@dataclass
class Metric:
    """A per-row metric on last-token logits.

    ``fn(logits (R, vocab) float32, pairs (R,) long) -> (R,)``; ``normalise``: report
    ``(v - mean corrupted) / (mean clean - mean corrupted)``, so clean = 1 and corrupted = 0.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    normalise: bool = False

    def __call__(self, logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """One value per row, on the host (a few numbers per forward: the one copy back)."""
        out = self.fn(logits.float(), pairs.to(logits.device))
        if not isinstance(out, torch.Tensor) or out.shape != pairs.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise OptionError(f"Metric {self.name!r} returned {got}; it must return one value "
                              f"per row, shape {tuple(pairs.shape)} (not a mean over rows).")
        return out.cpu()


def _token_ids(model: Model, answers: Sequence[str | int]) -> torch.Tensor:
    """One token id per answer: an int as is, a string by its first token (with the leading
    space a continuation would have, unless it starts with one)."""
    ids = []
    for a in answers:
        if isinstance(a, int):
            ids.append(a)
            continue
        toks = model.tokenizer.encode(a if a.startswith(" ") else " " + a,
                                      add_special_tokens=False)
        if not toks:
            raise OptionError(f"Answer {a!r} has no tokens.")
        ids.append(toks[0])
    return torch.tensor(ids, dtype=torch.long)


def logit_diff(model: Model, correct: Sequence[str | int], incorrect: Sequence[str | int],
               normalise: bool = True) -> Metric:
    """logit(correct) - logit(incorrect) per pair (one answer per pair, token ids or strings
    whose first token is used), normalised so clean = 1 and corrupted = 0 by default."""
    good, bad = _token_ids(model, correct), _token_ids(model, incorrect)
    if len(good) != len(bad):
        raise OptionError(f"{len(good)} correct answers but {len(bad)} incorrect ones.")

    def fn(logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(pairs), device=logits.device)
        g, b = good.to(logits.device)[pairs], bad.to(logits.device)[pairs]
        return logits[rows, g] - logits[rows, b]

    return Metric("logit_diff" + (" (normalised)" if normalise else ""), fn, normalise)


def answer_logprob(model: Model, answers: Sequence[str | int]) -> Metric:
    """Log-probability of each pair's answer token."""
    ids = _token_ids(model, answers)

    def fn(logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(pairs), device=logits.device)
        return torch.log_softmax(logits, -1)[rows, ids.to(logits.device)[pairs]]

    return Metric("answer_logprob", fn)


def answer_prob(model: Model, answers: Sequence[str | int]) -> Metric:
    """Probability of each pair's answer token."""
    lp = answer_logprob(model, answers)
    return Metric("answer_prob", lambda lg, p: lp.fn(lg, p).exp())


def _as_metric(metric: Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Metric:
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise OptionError("metric must be a steerlab.patching.Metric or a callable "
                          "(logits (rows, vocab), pair index (rows,)) -> (rows,).")
    return Metric(getattr(metric, "__name__", "metric"), metric)


# --- prompts --------------------------------------------------------------------------------


@dataclass
class _Pairs:
    clean: dict[str, torch.Tensor]      # right-padded input_ids / attention_mask, (n, T)
    corrupted: dict[str, torch.Tensor]
    lengths: torch.Tensor               # (n,) tokens per pair (the same in both prompts)
    tokens: list[str]                   # the first clean prompt's tokens (axis labels)


def _pairs(model: Model, clean: Sequence[str], corrupted: Sequence[str],
           chat: bool | None) -> _Pairs:
    clean, corrupted = check_prompts(clean), check_prompts(corrupted)
    if len(clean) != len(corrupted):
        raise PatchInputError(f"{len(clean)} clean prompts but {len(corrupted)} corrupted ones: "
                              "patching needs one corrupted prompt per clean prompt.")
    a = model.encode(clean, chat=chat, padding_side="right")
    b = model.encode(corrupted, chat=chat, padding_side="right")
    la, lb = a["attention_mask"].sum(1), b["attention_mask"].sum(1)
    bad = (la != lb).nonzero().flatten().cpu().tolist()
    if bad:
        i = bad[0]
        raise PatchInputError(
            f"Pair {i} has {int(la[i])} clean tokens ({clean[i]!r}) but {int(lb[i])} corrupted "
            f"tokens ({corrupted[i]!r}): activation patching writes position p of one run into "
            "position p of the other, so each pair must tokenize to the same length. Reword "
            "one prompt (e.g. swap a name for one of the same token length).")
    width = int(la.max())
    a = {k: v[:, :width] for k, v in a.items()}
    b = {k: v[:, :width] for k, v in b.items()}
    ids = a["input_ids"][0, :int(la[0])].cpu().tolist()
    tokens = [model.tokenizer.decode([t]) for t in ids]
    return _Pairs(a, b, la.cpu(), tokens)


def _shared_prefix(pairs: _Pairs) -> torch.Tensor:
    """(n,) number of leading tokens each clean prompt shares with its corrupted one."""
    diff = (pairs.clean["input_ids"] != pairs.corrupted["input_ids"]).cpu()  # (n, T)
    width = diff.shape[1]
    first = torch.where(diff.any(1), diff.float().argmax(1), torch.full((len(diff),), width))
    return torch.minimum(first, pairs.lengths)


def _last_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(len(lengths), device=logits.device)
    return logits[rows, lengths.to(logits.device) - 1].float()


@dataclass
class FactPairs:
    """Clean and corrupted prompts with each pair's right and corrupting answer."""

    clean: list[str]
    corrupted: list[str]
    correct: list[str]
    incorrect: list[str]


FACT_TEMPLATE = "Fact: the capital city of {} is the city of"


def fact_pairs(model: Model, facts: Sequence[tuple[str, str]], n: int | None = None,
               template: str = FACT_TEMPLATE) -> FactPairs:
    """Pairs for factual-recall patching: clean = ``template`` with subject i, corrupted =
    with subject i + 1 (cyclically); answers: object i vs object i + 1. Only subjects whose
    prompt has the most common token length are kept (patching needs equal lengths)."""
    lengths = [len(model.tokenizer(template.format(s))["input_ids"]) for s, _ in facts]
    common = max(set(lengths), key=lengths.count)
    use = [f for f, length in zip(facts, lengths, strict=True) if length == common]
    if n is not None:
        use = use[:n]
    if len(use) < 2:
        raise PatchInputError(f"Fewer than 2 facts tokenize to the same length with {template!r}.")
    nxt = use[1:] + use[:1]
    return FactPairs([template.format(s) for s, _ in use], [template.format(s) for s, _ in nxt],
                     [o for _, o in use], [o for _, o in nxt])


def pair_behaviour(model: Model, pairs: FactPairs, chat: bool | None = None,
                   backend: str = "hf") -> pd.DataFrame:
    """Does the model get the facts right at all? Per pair: logit(correct) - logit(incorrect)
    on the clean and on the corrupted prompt. ``.attrs``: the share of clean prompts that
    prefer the right answer and of corrupted prompts that prefer the corrupting one, each an
    :class:`steerlab.stats.Accuracy` with its 95% Wilson interval."""

    m = logit_diff(model, pairs.correct, pairs.incorrect, normalise=False)
    p = _pairs(model, pairs.clean, pairs.corrupted, chat)
    be = model.backend(backend)
    n = len(p.lengths)
    with torch.no_grad():
        clean = m(_last_logits(be.forward(p.clean), p.lengths), torch.arange(n)).cpu().numpy()
        corr = m(_last_logits(be.forward(p.corrupted), p.lengths), torch.arange(n)).cpu().numpy()
    out = pd.DataFrame({"clean": pairs.clean, "correct": pairs.correct,
                        "incorrect": pairs.incorrect, "logit_diff_clean": clean,
                        "logit_diff_corrupted": corr})
    out.attrs["clean_right"] = accuracy(clean > 0)
    out.attrs["corrupted_flipped"] = accuracy(corr < 0)
    return out


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
    site: str
    layers: list[int]
    positions: list[int] | str
    heads: list[int] | None
    direction: str
    metric: str
    clean: float
    corrupted: float
    meta: dict[str, Any] = field(default_factory=dict)

    def strongest(self) -> dict[str, Any]:
        """The cell with the largest mean value: layer, position, token, head, value and its
        95% interval (plain Python values, ready for JSON)."""
        row = self.frame.loc[self.frame["value"].idxmax()]
        return {"site": self.site, "layer": int(row["layer"]), "position": int(row["position"]),
                "token": str(row["token"]), "head": int(row["head"]),
                "value": float(row["value"]), "ci_low": float(row["ci_low"]),
                "ci_high": float(row["ci_high"])}


def _result(values: np.ndarray, cells: list[tuple[int, int, int]], site: str,
            layers: list[int], positions: list[int] | str, heads: list[int] | None,
            direction: str, metric: Metric, clean: float, corrupted: float,
            tokens: list[str], seed: int, meta: dict[str, Any]) -> PatchResult:
    """values: (n_pairs, n_cells), NaN where a pair lacks the cell."""
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


def _cells(layers: list[int], positions: list[int] | str, heads: list[int] | None
           ) -> list[tuple[int, int, int]]:
    pos: list[int] = [-1] if isinstance(positions, str) else list(positions)
    hs: list[int] = [-1] if heads is None else list(heads)
    return [(l, p, h) for l in layers for p in pos for h in hs]


def _check_options(model: Model, site: str, layers: Sequence[int] | int | None,
                   positions: Sequence[int] | str | None, heads: Sequence[int] | None,
                   direction: str, backend: str, width: int
                   ) -> tuple[list[int], list[int] | str, list[int] | None]:
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
                        site: str = "resid_pre", layers: Sequence[int] | int | None = None,
                        positions: Sequence[int] | str | None = None,
                        heads: Sequence[int] | None = None, direction: str = "denoise",
                        backend: str = "hf", batch_cells: int = 32, chat: bool | None = None,
                        seed: int = 0, progress: bool | None = None,
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
    m = _as_metric(metric)
    pairs = _pairs(model, clean, corrupted, chat)
    width = pairs.clean["input_ids"].shape[1]
    use_layers, use_pos, use_heads = _check_options(model, site, layers, positions, heads,
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
        clean_v = m(_last_logits(be.forward(pairs.clean), pairs.lengths), torch.arange(n))
        corr_v = m(_last_logits(be.forward(pairs.corrupted), pairs.lengths), torch.arange(n))
    cells = _cells(use_layers, use_pos, use_heads)
    values = np.full((n, len(cells)), np.nan)
    # before a pair's first differing token both runs are the same (a causal model): a patch
    # there changes nothing, so with ``fast`` its value is the unpatched run's, not recomputed
    same = _shared_prefix(pairs) if fast else torch.zeros(n, dtype=torch.long)
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
    with torch.no_grad():
        for layer, layer_jobs in by_layer.items():
            src = acts.at(layer)  # (n, T, ...) of the source run
            if layer > 0:
                prefix.reach(layer - 1)
            else:
                prefix.clear()
            for k in range(0, len(layer_jobs), batch_cells):
                chunk = layer_jobs[k:k + batch_cells]
                got = _run_chunk(be, m, pairs.lengths, site, layer, src, cells, chunk, prefix)
                for (c, i), v in zip(chunk, got.cpu().tolist(), strict=True):
                    values[i, c] = v
                bar.update(len(chunk))
    bar.close()
    clean_m, corr_m = float(clean_v.mean()), float(corr_v.mean())
    if m.normalise:
        values = (values - corr_m) / (clean_m - corr_m)
    return _result(values, cells, site, use_layers, use_pos, use_heads, direction, m, clean_m,
                   corr_m, pairs.tokens, seed,
                   {"backend": backend, "n_pairs": n, "shared_prefix": prefix.on})


def _run_chunk(be: Any, m: Metric, lengths: torch.Tensor, site: str, layer: int,
               src: torch.Tensor, cells: list[tuple[int, int, int]],
               chunk: list[tuple[int, int]], prefix: engine.Prefix) -> torch.Tensor:
    """Metric values of one forward whose rows each patch one (cell, pair) of ``layer``."""
    pair_of_row = torch.tensor([i for _, i in chunk])
    rows = torch.arange(len(chunk))
    pos = torch.tensor([cells[c][1] for c, _ in chunk])
    heads = torch.tensor([cells[c][2] for c, _ in chunk])
    fn = _patch_fn(src, rows, pair_of_row, pos, heads, lengths)
    handle = be.add_edit(layer, fn, site=site)
    try:
        logits = prefix.forward(rows=pair_of_row)
    finally:
        handle.remove()
    return m(_last_logits(logits, lengths[pair_of_row]), pair_of_row)


# --- attribution patching -------------------------------------------------------------------


def attribution_patching(model: Model, clean: Sequence[str], corrupted: Sequence[str],
                         metric: Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         site: str = "resid_pre", layers: Sequence[int] | int | None = None,
                         positions: Sequence[int] | str | None = None,
                         heads: Sequence[int] | None = None, backend: str = "hf",
                         chat: bool | None = None, seed: int = 0) -> PatchResult:
    """First-order estimate of denoising every cell: ``(a_clean - a_corrupt) . dM/da`` with
    the gradient taken at the corrupted run (one clean forward, one corrupted forward and
    backward). Same cells, shapes and normalisation as :func:`activation_patching`."""
    m = _as_metric(metric)
    pairs = _pairs(model, clean, corrupted, chat)
    width = pairs.clean["input_ids"].shape[1]
    use_layers, use_pos, use_heads = _check_options(model, site, layers, positions, heads,
                                                    "denoise", backend, width)
    be = model.backend(backend)
    n = len(pairs.lengths)
    with torch.no_grad():
        clean_acts = cache_sites(model, list(clean), [site], layers=use_layers,
                                 reduction="none", chat=chat, backend=backend)[site]
        clean_v = m(_last_logits(be.forward(pairs.clean), pairs.lengths), torch.arange(n))
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

    handles = []
    try:
        handles.append(be.add_edit(0, leaf, site="resid_pre"))
        for layer in use_layers:
            handles.append(be.add_edit(layer, grab(layer), site=site))
        with torch.enable_grad():
            logits = be.forward(pairs.corrupted)
            corr_v = m(_last_logits(logits, pairs.lengths), torch.arange(n))
            tensors = [store[l] for l in use_layers]
            grads = torch.autograd.grad(corr_v.sum(), tensors, allow_unused=True)
    finally:
        for h in reversed(handles):
            h.remove()
    clean_m, corr_m = float(clean_v.mean()), float(corr_v.detach().mean())
    scale = (clean_m - corr_m) if m.normalise else 1.0
    cells = _cells(use_layers, use_pos, use_heads)
    values = np.full((n, len(cells)), np.nan)
    mask = torch.arange(width)[None, :] < pairs.lengths[:, None]  # (n, T)
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
    return _result(values, cells, site, use_layers, use_pos, use_heads, "denoise", m, clean_m,
                   corr_m, pairs.tokens, seed, {"backend": backend, "n_pairs": n,
                                                "method": "attribution"})


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
