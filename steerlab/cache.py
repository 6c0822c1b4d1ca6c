"""Running prompts and collecting activations at sites (reductions, batching, padding).

Any set of (site, layer) pairs is cached in one forward per batch (:func:`cache_sites`);
:func:`cache_activations` is its one-site form. Reductions: ``last`` (the last prompt token),
``mean`` (over prompt tokens) and ``none`` (every prompt token: ``acts`` is padded to
(n_layers, n_prompts, T, ...) with ``mask`` (n_prompts, T) saying which positions are real;
``T`` is the longest prompt, pads are zeros after each prompt).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch
from tqdm.auto import tqdm

from steerlab import _io
from steerlab.backends.base import POINTS, SITE_POINTS, SITES, check_site
from steerlab.backends.blocks import StopForward
from steerlab.devices import dtype_name
from steerlab.errors import LayerError, OptionError
from steerlab.models import check_prompts
from steerlab.options import REDUCTIONS

if TYPE_CHECKING:
    from steerlab.models import Model



def prompt_hash(prompt: str) -> str:
    """Short, stable identity of one prompt (sha256 of its UTF-8 text, 16 hex digits)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def _as_index(layer: object) -> object:
    """A layer given as any integer type (numpy's included) as an ``int``; anything else (a
    bool, a float, a string) as it is, for the error to name."""
    if isinstance(layer, bool):
        return layer
    try:
        return operator.index(layer)  # type: ignore[arg-type]
    except TypeError:
        return layer


def check_layers(model: Model, layers: Sequence[int] | int | None) -> list[int]:
    """Sorted unique layer indices, all in ``0 .. n_layers - 1``; ``None`` means every layer."""
    n = model.n_layers
    if layers is None:
        return list(range(n))
    single = _as_index(layers)
    try:
        given: list[object] = [single] if isinstance(single, int) else list(layers)  # type: ignore[arg-type]
    except TypeError:
        raise LayerError(f"layers={layers!r} is neither a layer nor a list of layers: pass "
                         f"block indices 0..{n - 1} of {model.name}, or None for all.") from None
    if not given:
        raise LayerError("The layer list is empty: pass at least one layer, or None for all.")
    found = [_as_index(l) for l in given]
    odd = [l for l in found if not isinstance(l, int) or isinstance(l, bool)]
    if odd:
        raise LayerError(f"Layer(s) {odd} are not whole numbers: a layer is a block index, "
                         f"0..{n - 1} for {model.name}.")
    index = [l for l in found if isinstance(l, int)]
    bad = [l for l in index if not 0 <= l < n]
    if bad:
        raise LayerError(f"Layer(s) {bad} out of range: {model.name} has {n} layers, so valid "
                         f"layers are 0..{n - 1}.")
    layers = index
    return sorted(set(layers))


@dataclass(frozen=True)
class Activations:
    """Activations of a prompt set at one site.

    Attributes:
        acts: float32, in prompt order: (n_layers, n_prompts, d_model) for ``last``/``mean``;
            (n_layers, n_prompts, T, d_model) for ``none``; at site ``z`` the last axis is
            (n_heads, d_head) instead of d_model.
        layers: the model layers the first axis stands for.
        model_id: hub id of the model that made them.
        reduction: ``"last"`` (last prompt token), ``"mean"`` (mean over prompt tokens) or
            ``"none"`` (every prompt token, padded; see ``mask``).
        prompt_hashes: :func:`prompt_hash` of each prompt, in order.
        chat: whether the chat template was applied.
        site: where they were read (:data:`steerlab.backends.base.SITES`).
        mask: ``none`` only: (n_prompts, T) bool, True at each prompt's real tokens.
    """

    acts: torch.Tensor
    layers: tuple[int, ...]
    model_id: str
    reduction: str
    prompt_hashes: tuple[str, ...]
    chat: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    site: str = "resid_post"
    mask: torch.Tensor | None = None

    @property
    def n_prompts(self) -> int:
        return self.acts.shape[1]

    @property
    def d_model(self) -> int:
        return self.acts.shape[-1]

    @property
    def lengths(self) -> torch.Tensor | None:
        """``none`` only: (n_prompts,) number of real tokens of each prompt."""
        return None if self.mask is None else self.mask.sum(-1)

    def at(self, layer: int) -> torch.Tensor:
        """(n_prompts, d_model) activations at model layer ``layer``."""
        if layer not in self.layers:
            raise LayerError(f"Layer {layer} was not cached; cached layers: {list(self.layers)}.")
        return self.acts[self.layers.index(layer)]

    def select(self, index: Sequence[int] | torch.Tensor) -> Activations:
        """A copy holding only the prompts at ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        hashes = tuple(self.prompt_hashes[i] for i in idx.cpu().tolist())
        mask = None if self.mask is None else self.mask[idx]
        return Activations(self.acts[:, idx], self.layers, self.model_id, self.reduction,
                           hashes, self.chat, dict(self.meta), self.site, mask)

    def save(self, path: str | Path) -> Path:
        meta = {"kind": "activations", "layers": list(self.layers), "model_id": self.model_id,
                "reduction": self.reduction, "prompt_hashes": list(self.prompt_hashes),
                "chat": self.chat, "meta": self.meta, "site": self.site}
        tensors = {"acts": self.acts}
        if self.mask is not None:
            tensors["mask"] = self.mask
        return _io.save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        tensors, meta = _io.load_tensors(path, "activations")
        return cls(tensors["acts"], tuple(meta["layers"]), meta["model_id"], meta["reduction"],
                   tuple(meta["prompt_hashes"]), meta["chat"], meta.get("meta", {}),
                   meta.get("site", "resid_post"), tensors.get("mask"))


def _reduce(h: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, T, ...) right-padded activations -> (B, ...) float32 (``none``: (B, T, ...) with
    zeros at pads)."""
    h = h.float()
    if reduction == "last":
        last = mask.long().sum(-1) - 1  # (B,)
        return h[torch.arange(h.shape[0], device=h.device), last]
    m = mask.to(h.dtype).view(*mask.shape, *([1] * (h.ndim - 2)))  # (B, T, 1...)
    if reduction == "none":
        return h * m
    return (h * m).sum(1) / m.sum(1)


def _make_capture_fn(store: dict[tuple[str, int], torch.Tensor], key: tuple[str, int],
                     mask: torch.Tensor, reduction: str, stop: bool):
    def fn(h: torch.Tensor) -> None:
        store[key] = _reduce(h.detach(), mask, reduction)
        if stop:
            raise StopForward
        return None

    return fn


def _execution_order(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """(site, layer) pairs in the order a forward reaches them (the last one may stop it)."""
    point = {p: i for i, p in enumerate(POINTS)}
    return sorted(pairs, key=lambda sl: (sl[1], point[SITE_POINTS[sl[0]][-1]]))


@torch.no_grad()
def _cached_batches(model: Model, prompts: list[str], pairs: list[tuple[str, int]],
                    reduction: str, batch_size: int, chat: bool, backend: str,
                    progress: bool | None
                    ) -> Iterator[tuple[list[int], dict[tuple[str, int], torch.Tensor]]]:
    """(prompt indices, {(site, layer): (B, ...) float32 on the model's device}) per
    length-sorted batch."""
    be = model.backend(backend)
    texts = model.format(prompts, chat)
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    show = progress if progress is not None else len(batches) > 1
    ordered = _execution_order(pairs)
    for idx in tqdm(batches, desc=f"caching {len(prompts)} prompts", disable=not show):
        enc = model.encode([prompts[i] for i in idx], chat=chat, padding_side="right")
        store: dict[tuple[str, int], torch.Tensor] = {}
        captures = [(layer, _make_capture_fn(
            store, (site, layer), enc["attention_mask"], reduction,
            be.supports_early_stop and (site, layer) == ordered[-1]), {"site": site})
            for site, layer in ordered]
        with be.add_edits(captures), contextlib.suppress(StopForward):
            be.forward(enc)
        yield idx, store


def _check_sites(model: Model, sites: dict[str, Sequence[int] | int | None] | Sequence[str],
                 layers: Sequence[int] | int | None, backend: str
                 ) -> dict[str, list[int]]:
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
                layers: Sequence[int] | int | None = None, reduction: str = "last",
                batch_size: int = 16, chat: bool | None = None, backend: str = "hf",
                progress: bool | None = None) -> dict[str, Activations]:
    """Activations at several sites in one forward per batch: ``sites`` is a list of site
    names (each at ``layers``) or a ``{site: layers}`` dict. Returns ``{site: Activations}``
    (see :func:`cache_activations` for the other arguments)."""
    prompts, chat = check_prompts(prompts), model.uses_chat(chat)
    per_site = _check_sites(model, sites, layers, backend)
    _check_run(reduction, batch_size)
    pairs = [(s, l) for s, ls in per_site.items() for l in ls]
    batches = _cached_batches(model, prompts, pairs, reduction, batch_size, chat, backend,
                              progress)
    return _collect(model, prompts, per_site, reduction, chat, backend, batches)


def _check_run(reduction: str, batch_size: int) -> None:
    if reduction not in REDUCTIONS:
        raise OptionError(f"Unknown reduction {reduction!r}: use one of {REDUCTIONS}.")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")


def _lengths(model: Model, prompts: list[str], chat: bool) -> torch.Tensor:
    """Tokens per prompt as :meth:`Model.encode` makes them."""
    enc_lens = [int(m.sum()) for m in (model.encode([p], chat=chat)["attention_mask"]
                                      for p in prompts)]
    return torch.tensor(enc_lens)


def _collect(model: Model, prompts: list[str], per_site: dict[str, list[int]], reduction: str,
             chat: bool, backend: str,
             batches: Iterator[tuple[list[int], dict[tuple[str, int], torch.Tensor]]]
             ) -> dict[str, Activations]:
    """Batches -> one in-memory :class:`Activations` per site."""
    meta = {"backend": backend, "dtype": dtype_name(model.dtype)}
    hashes = tuple(prompt_hash(p) for p in prompts)
    n = len(prompts)
    acts: dict[str, torch.Tensor] = {}
    mask = torch.zeros(n, 0, dtype=torch.bool)
    if reduction == "none":
        lens = _lengths(model, prompts, chat)
        mask = torch.arange(int(lens.max()))[None, :] < lens[:, None]
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
                      reduction: str = ..., batch_size: int = ..., chat: bool | None = ...,
                      backend: str = ..., progress: bool | None = ..., out: None = ...,
                      shard_size: int = ..., site: str = ...) -> Activations: ...


@overload
def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = ...,
                      reduction: str = ..., batch_size: int = ..., chat: bool | None = ...,
                      backend: str = ..., progress: bool | None = ..., *, out: str | Path,
                      shard_size: int = ..., site: str = ...) -> ShardedActivations: ...


def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = None,
                      reduction: str = "last", batch_size: int = 16,
                      chat: bool | None = None, backend: str = "hf", progress: bool | None = None,
                      out: str | Path | None = None,
                      shard_size: int = 1024,
                      site: str = "resid_post") -> Activations | ShardedActivations:
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
    batches = _cached_batches(model, prompts, pairs, reduction, batch_size, chat, backend,
                              progress)
    if out is None:
        return _collect(model, prompts, per_site, reduction, chat, backend, batches)[site]
    meta = {"backend": backend, "dtype": dtype_name(model.dtype)}
    hashes = tuple(prompt_hash(p) for p in prompts)
    one = ((idx, torch.stack([store[pair] for pair in pairs]).cpu()) for idx, store in batches)
    lengths = _lengths(model, prompts, chat) if reduction == "none" else None
    return _stream_to_disk(Path(out), one, shard_size, tuple(per_site[site]), model.hf_id,
                           reduction, hashes, chat, meta, site, lengths)


INDEX = "index.json"


@dataclass(frozen=True)
class ShardedActivations:
    """Activations streamed to a directory by ``cache_activations(..., out=dir)``.

    The directory holds ``shard-NNNNN.safetensors`` files (``acts``: (n_layers, k, d_model)
    float32 for k prompts, ``index``: their positions in the prompt list; reduction ``none``:
    (n_layers, k, T_shard, d_model) and ``lengths`` too) and ``index.json`` (written last, so
    a directory without it is an unfinished run). Read it back whole (:meth:`load`), one layer
    at a time (:meth:`at`), or shard by shard (:meth:`shards`).
    """

    path: Path
    layers: tuple[int, ...]
    model_id: str
    reduction: str
    prompt_hashes: tuple[str, ...]
    chat: bool
    d_model: int
    shard_files: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    site: str = "resid_post"
    #: trailing shape of one prompt's activation at one layer: (d_model,), (T, d_model), ...
    item_shape: tuple[int, ...] = ()
    #: ``none`` only: (n_prompts,) real tokens per prompt
    lengths: torch.Tensor | None = None

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_hashes)

    @property
    def mask(self) -> torch.Tensor | None:
        if self.lengths is None:
            return None
        return torch.arange(int(self.lengths.max()))[None, :] < self.lengths[:, None]

    def _shape(self) -> tuple[int, ...]:
        return self.item_shape or (self.d_model,)

    def _place(self, out: torch.Tensor, index: torch.Tensor, got: torch.Tensor) -> None:
        """Put a shard's rows (k, ...) at ``index`` of ``out`` (n, ...), padding T."""
        if self.reduction == "none":
            out[index, :got.shape[1]] = got
        else:
            out[index] = got

    @classmethod
    def open(cls, path: str | Path) -> ShardedActivations:
        path = Path(path)
        index = path / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"No {INDEX} in {path}: not a finished activation cache.")
        m = json.loads(index.read_text())
        lengths = m.get("lengths")
        return cls(path, tuple(m["layers"]), m["model_id"], m["reduction"],
                   tuple(m["prompt_hashes"]), m["chat"], m["d_model"], tuple(m["shards"]),
                   m.get("meta", {}), m.get("site", "resid_post"),
                   tuple(m.get("item_shape", [m["d_model"]])),
                   None if lengths is None else torch.tensor(lengths))

    def shards(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(prompt positions (k,), acts (n_layers, k, d_model)) per shard, one in memory."""
        from safetensors.torch import load_file

        for name in self.shard_files:
            t = load_file(str(self.path / name))
            yield t["index"], t["acts"]

    def at(self, layer: int) -> torch.Tensor:
        """(n_prompts, d_model) at model layer ``layer``, reading only that layer's rows."""
        from safetensors import safe_open

        if layer not in self.layers:
            raise LayerError(f"Layer {layer} was not cached; cached layers: {list(self.layers)}.")
        i = self.layers.index(layer)
        out = torch.zeros(self.n_prompts, *self._shape())
        for name in self.shard_files:
            with safe_open(str(self.path / name), framework="pt") as f:
                self._place(out, f.get_tensor("index"), f.get_slice("acts")[i])
        return out

    def load(self) -> Activations:
        """All of it in memory, as :class:`Activations`."""
        acts = torch.zeros(len(self.layers), self.n_prompts, *self._shape())
        for index, got in self.shards():
            if self.reduction == "none":
                acts[:, index, :got.shape[2]] = got
            else:
                acts[:, index] = got
        return Activations(acts, self.layers, self.model_id, self.reduction,
                           self.prompt_hashes, self.chat, dict(self.meta), self.site,
                           self.mask)


def _stream_to_disk(path: Path, batches: Iterator[tuple[list[int], torch.Tensor]],
                    shard_size: int, layers: tuple[int, ...], model_id: str, reduction: str,
                    hashes: tuple[str, ...], chat: bool, meta: dict[str, Any],
                    site: str = "resid_post", lengths: torch.Tensor | None = None
                    ) -> ShardedActivations:
    from safetensors.torch import save_file

    if shard_size < 1:
        raise OptionError(f"shard_size must be >= 1, got {shard_size}.")
    path.mkdir(parents=True, exist_ok=True)
    (path / INDEX).unlink(missing_ok=True)
    for old in path.glob("shard-*.safetensors"):
        old.unlink()
    names: list[str] = []
    buf_idx: list[int] = []
    buf: list[torch.Tensor] = []
    item: tuple[int, ...] = ()

    def flush() -> None:
        name = f"shard-{len(names):05d}.safetensors"
        parts = buf
        if reduction == "none":  # batches differ in T: pad each to the shard's longest
            width = max(b.shape[2] for b in buf)
            parts = [torch.nn.functional.pad(b, (0, 0) * (b.ndim - 3) + (0, width - b.shape[2]))
                     for b in buf]
        save_file({"acts": torch.cat(parts, dim=1).contiguous(),
                   "index": torch.tensor(buf_idx, dtype=torch.long)}, str(path / name))
        names.append(name)
        buf.clear()
        buf_idx.clear()

    for idx, got in batches:  # got: (L, B, ...)
        item = tuple(got.shape[2:])
        buf.append(got)
        buf_idx.extend(idx)
        if len(buf_idx) >= shard_size:
            flush()
    if buf:
        flush()
    if reduction == "none":
        assert lengths is not None
        item = (int(lengths.max()), *item[1:])
    index = {"layers": list(layers), "model_id": model_id, "reduction": reduction,
             "prompt_hashes": list(hashes), "chat": chat, "d_model": item[-1],
             "shards": names, "meta": meta, "site": site, "item_shape": list(item),
             "lengths": None if lengths is None else lengths.cpu().tolist()}
    _io.write_text(path / INDEX, json.dumps(index))
    return ShardedActivations(path, layers, model_id, reduction, hashes, chat, item[-1],
                              tuple(names), meta, site, item, lengths)
