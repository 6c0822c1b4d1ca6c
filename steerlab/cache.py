"""Running prompts and collecting activations at sites (reductions, batching, padding).

Any set of (site, layer) pairs is cached in one forward per batch (:func:`cache_sites`);
:func:`cache_activations` is its one-site form. Reductions: ``last`` (the last prompt token),
``mean`` (over prompt tokens) and ``none`` (every prompt token: ``acts`` is padded to
(n_layers, n_prompts, T, ...) with ``mask`` (n_prompts, T) saying which positions are real;
``T`` is the longest prompt, pads are zeros after each prompt).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch
from tqdm.auto import tqdm

from steerlab.activations import Activations, ShardedActivations, prompt_hash, write_shards
from steerlab.backends.base import POINTS, SITE_POINTS, SITES, check_site
from steerlab.backends.blocks import StopForward
from steerlab.devices import dtype_name
from steerlab.errors import OptionError, ReceiptError
from steerlab.options import REDUCTIONS, BackendName, Reduction, Site
from steerlab.padding import at_last, mask_of
from steerlab.receipt_totals import add_up, describe
from steerlab.receipts import Receipt
from steerlab.validate import check_layers, check_prompts

if TYPE_CHECKING:
    from steerlab.models import Model



def _reduce(h: torch.Tensor, mask: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """(B, T, ...) right-padded activations -> (B, ...) float32 (``none``: (B, T, ...) with
    zeros at pads)."""
    h = h.float()
    if reduction == "last":
        return at_last(h, mask)
    m = mask.to(h.dtype).view(*mask.shape, *([1] * (h.ndim - 2)))  # (B, T, 1...)
    if reduction == "none":
        return h * m
    return (h * m).sum(1) / m.sum(1)


def _make_capture_fn(store: dict[tuple[str, int], torch.Tensor], key: tuple[str, int],
                     mask: torch.Tensor, reduction: Reduction, stop: bool):
    def fn(h: torch.Tensor) -> None:
        store[key] = _reduce(h.detach(), mask, reduction)
        if stop:
            raise StopForward
        return None

    return fn


def _execution_order(pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """(site, layer) pairs in the order a forward reaches them (the last one may stop it)."""
    point = {p: i for i, p in enumerate(POINTS)}
    return sorted(pairs, key=lambda sl: (sl[1], point[SITE_POINTS[sl[0]][-1]]))


@torch.no_grad()
def _cached_batches(model: Model, prompts: list[str], pairs: Sequence[tuple[str, int]],
                    reduction: Reduction, batch_size: int, chat: bool, backend: BackendName,
                    progress: bool | None, meta: dict[str, Any]
                    ) -> Iterator[tuple[list[int], dict[tuple[str, int], torch.Tensor]]]:
    """(prompt indices, {(site, layer): (B, ...) float32 on the model's device}) per
    length-sorted batch; once all are read, ``meta["receipt"]`` says where the captures ran
    (:func:`steerlab.receipts.describe`: forwards, rows, positions per layer and site)."""
    be = model.backend(backend)
    texts = model.format(prompts, chat)
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    show = progress if progress is not None else len(batches) > 1
    ordered = _execution_order(pairs)
    noted = []
    for idx in tqdm(batches, desc=f"caching {len(prompts)} prompts", disable=not show):
        enc = model.encode([prompts[i] for i in idx], chat=chat, padding_side="right")
        store: dict[tuple[str, int], torch.Tensor] = {}
        rec = Receipt("captured")
        captures = [(layer, _make_capture_fn(
            store, (site, layer), enc["attention_mask"], reduction,
            be.supports_early_stop and (site, layer) == ordered[-1]),
            {"site": site, "receipt": rec}) for site, layer in ordered]
        with be.add_edits(captures), contextlib.suppress(StopForward):
            be.forward(enc)
        missing = [f"{site} layer {layer}" for site, layer in ordered if (site, layer) not in store]
        if missing:
            raise ReceiptError(f"The capture at {', '.join(missing)} returned nothing: the "
                               f"forward never reached it ({rec.forwards} forwards seen). Is "
                               "another edit stopping the forward early, or a layer replayed?")
        noted.append(rec.totals())
        yield idx, store
    meta["receipt"] = describe("captured", add_up(noted))


def _check_sites(model: Model, sites: dict[str, Sequence[int] | int | None] | Sequence[str],
                 layers: Sequence[int] | int | None, backend: BackendName
                 ) -> dict[Site, list[int]]:
    if isinstance(sites, str):
        sites = [sites]
    if not isinstance(sites, dict):
        sites = {s: layers for s in sites}
    if not sites:
        raise OptionError(f"No sites to cache: name at least one of {', '.join(SITES)}.")
    have = model.backend(backend).sites
    return {check_site(s, have, model.name): check_layers(model, ls) for s, ls in sites.items()}


def cache_sites(model: Model, prompts: Sequence[str],
                sites: dict[str, Sequence[int] | int | None] | Sequence[str],
                layers: Sequence[int] | int | None = None, reduction: Reduction = "last",
                batch_size: int = 16, chat: bool | None = None, backend: BackendName = "hf",
                progress: bool | None = None) -> dict[Site, Activations]:
    """Activations at several sites in one forward per batch: ``sites`` is a list of site
    names (each at ``layers``) or a ``{site: layers}`` dict. Returns ``{site: Activations}``
    (see :func:`cache_activations` for the other arguments)."""
    prompts, chat = check_prompts(prompts), model.uses_chat(chat)
    per_site = _check_sites(model, sites, layers, backend)
    _check_run(reduction, batch_size)
    pairs = [(s, l) for s, ls in per_site.items() for l in ls]
    meta = _meta(model, backend)
    batches = _cached_batches(model, prompts, pairs, reduction, batch_size, chat, backend,
                              progress, meta)
    return _collect(model, prompts, per_site, reduction, chat, meta, batches)


def _check_run(reduction: Reduction, batch_size: int) -> None:
    if reduction not in REDUCTIONS:
        raise OptionError(f"Unknown reduction {reduction!r}: use one of {REDUCTIONS}.")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")


def _lengths(model: Model, prompts: list[str], chat: bool) -> torch.Tensor:
    """Tokens per prompt as :meth:`Model.encode` makes them."""
    enc_lens = [int(m.sum()) for m in (model.encode([p], chat=chat)["attention_mask"]
                                      for p in prompts)]
    return torch.tensor(enc_lens)


def _meta(model: Model, backend: BackendName) -> dict[str, Any]:
    """What an :class:`Activations` records of its run (the capture receipt is added once
    every batch was read)."""
    return {"backend": backend, "dtype": dtype_name(model.dtype)}


def _collect(model: Model, prompts: list[str], per_site: dict[Site, list[int]],
             reduction: Reduction, chat: bool, meta: dict[str, Any],
             batches: Iterator[tuple[list[int], dict[tuple[str, int], torch.Tensor]]]
             ) -> dict[Site, Activations]:
    """Batches -> one in-memory :class:`Activations` per site."""
    hashes = tuple(prompt_hash(p) for p in prompts)
    n = len(prompts)
    acts: dict[str, torch.Tensor] = {}
    mask = torch.zeros(n, 0, dtype=torch.bool)
    if reduction == "none":
        lens = _lengths(model, prompts, chat)
        mask = mask_of(lens)
    for idx, store in batches:
        for site, layers in per_site.items():
            # (L, B, [Tb,] ...): reduced on the model's device, one copy to the host per batch
            got = torch.stack([store[(site, l)] for l in layers]).cpu()
            if site not in acts:
                shape = got.shape[2:] if reduction != "none" else (mask.shape[1], *got.shape[3:])
                acts[site] = torch.zeros(len(layers), n, *shape)
            if reduction == "none":
                acts[site][:, idx, :got.shape[2]] = got
            else:
                acts[site][:, idx] = got
    return {s: Activations(acts[s], tuple(ls), model.hf_id, reduction, hashes,
                           chat, dict(meta), s,
                           mask if reduction == "none" else None)
            for s, ls in per_site.items()}


@overload
def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = ...,
                      reduction: Reduction = ..., batch_size: int = ..., chat: bool | None = ...,
                      backend: BackendName = ..., progress: bool | None = ..., out: None = ...,
                      shard_size: int = ..., site: Site = ...) -> Activations: ...


@overload
def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = ...,
                      reduction: Reduction = ..., batch_size: int = ..., chat: bool | None = ...,
                      backend: BackendName = ..., progress: bool | None = ..., *, out: str | Path,
                      shard_size: int = ..., site: Site = ...) -> ShardedActivations: ...


def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = None,
                      reduction: Reduction = "last", batch_size: int = 16,
                      chat: bool | None = None, backend: BackendName = "hf",
                      progress: bool | None = None,
                      out: str | Path | None = None,
                      shard_size: int = 1024,
                      site: Site = "resid_post") -> Activations | ShardedActivations:
    """Activations at ``site`` after (or in) each chosen layer, reduced per prompt.

    Prompts are sorted by length and right-padded in batches (pad tokens come after the prompt,
    so in a causal model they cannot change its activations), then put back in the caller's
    order.

    Args:
        model: a loaded :class:`~steerlab.models.Model`.
        prompts: the prompt strings.
        layers: layer indices (default: all).
        reduction: ``"last"`` token, ``"mean"`` over prompt tokens, or ``"none"`` (every
            prompt token, padded, with ``mask``).
        batch_size: prompts per forward pass.
        chat: apply the chat template (default: follow the model, :meth:`Model.uses_chat`).
        backend: ``"hf"``, ``"tlens"`` or ``"nnsight"``.
        progress: show a progress bar (default: when there is more than one batch).
        out: a directory: stream the activations to disk in shards of ``shard_size`` prompts
            instead of holding them in memory (memory stays bounded by one shard, whatever the
            number of prompts), and return a :class:`ShardedActivations` reading them back.
        site: where to read (:data:`~steerlab.backends.base.SITES`; default the residual
            stream after the block). Several sites in one pass: :func:`cache_sites`.

    Returns:
        :class:`Activations` with ``acts`` of shape (n_layers, n_prompts, d_model) (``none``:
        (n_layers, n_prompts, T, d_model)), or with ``out``, :class:`ShardedActivations`
        over the same numbers.
    """
    prompts, chat = check_prompts(prompts), model.uses_chat(chat)
    per_site = _check_sites(model, [site], layers, backend)
    _check_run(reduction, batch_size)
    pairs = [(site, l) for l in per_site[site]]
    meta = _meta(model, backend)
    batches = _cached_batches(model, prompts, pairs, reduction, batch_size, chat, backend,
                              progress, meta)
    if out is None:
        return _collect(model, prompts, per_site, reduction, chat, meta, batches)[site]
    hashes = tuple(prompt_hash(p) for p in prompts)
    one = ((idx, torch.stack([store[pair] for pair in pairs]).cpu()) for idx, store in batches)
    lengths = _lengths(model, prompts, chat) if reduction == "none" else None
    return write_shards(Path(out), one, shard_size, tuple(per_site[site]), model.hf_id,
                           reduction, hashes, chat, meta, site, lengths)


