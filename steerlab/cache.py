"""Running prompts and collecting per-layer residual streams (reductions, batching, padding)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import torch
from tqdm.auto import tqdm

from steerlab import _io
from steerlab.backends.base import StopForward
from steerlab.errors import LayerError, OptionError
from steerlab.models import check_prompts

if TYPE_CHECKING:
    from steerlab.models import Model

REDUCTIONS = ("last", "mean")


def prompt_hash(prompt: str) -> str:
    """Short, stable identity of one prompt (sha256 of its UTF-8 text, 16 hex digits)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def check_layers(model: Model, layers: Sequence[int] | int | None) -> list[int]:
    """Sorted unique layer indices, all in ``0 .. n_layers - 1``; ``None`` means every layer."""
    n = model.n_layers
    if layers is None:
        return list(range(n))
    if isinstance(layers, int):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise LayerError("The layer list is empty: pass at least one layer, or None for all.")
    bad = [l for l in layers if not isinstance(l, int) or isinstance(l, bool) or not 0 <= l < n]
    if bad:
        raise LayerError(f"Layer(s) {bad} out of range: {model.name} has {n} layers, so valid "
                         f"layers are 0..{n - 1}.")
    return sorted(set(layers))


@dataclass(frozen=True)
class Activations:
    """Residual-stream activations of a prompt set.

    Attributes:
        acts: (n_layers, n_prompts, d_model) float32, one row per prompt, in prompt order.
        layers: the model layers the first axis stands for.
        model_id: hub id of the model that made them.
        reduction: ``"last"`` (last prompt token) or ``"mean"`` (mean over prompt tokens).
        prompt_hashes: :func:`prompt_hash` of each prompt, in order.
        chat: whether the chat template was applied.
    """

    acts: torch.Tensor
    layers: tuple[int, ...]
    model_id: str
    reduction: str
    prompt_hashes: tuple[str, ...]
    chat: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_prompts(self) -> int:
        return self.acts.shape[1]

    @property
    def d_model(self) -> int:
        return self.acts.shape[2]

    def at(self, layer: int) -> torch.Tensor:
        """(n_prompts, d_model) activations at model layer ``layer``."""
        if layer not in self.layers:
            raise LayerError(f"Layer {layer} was not cached; cached layers: {list(self.layers)}.")
        return self.acts[self.layers.index(layer)]

    def select(self, index: Sequence[int] | torch.Tensor) -> Activations:
        """A copy holding only the prompts at ``index``."""
        idx = torch.as_tensor(index, dtype=torch.long)
        hashes = tuple(self.prompt_hashes[i] for i in idx.tolist())
        return Activations(self.acts[:, idx], self.layers, self.model_id, self.reduction,
                           hashes, self.chat, dict(self.meta))

    def save(self, path: str | Path) -> Path:
        meta = {"kind": "activations", "layers": list(self.layers), "model_id": self.model_id,
                "reduction": self.reduction, "prompt_hashes": list(self.prompt_hashes),
                "chat": self.chat, "meta": self.meta}
        return _io.save_tensors(path, {"acts": self.acts}, meta)

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        tensors, meta = _io.load_tensors(path, "activations")
        return cls(tensors["acts"], tuple(meta["layers"]), meta["model_id"], meta["reduction"],
                   tuple(meta["prompt_hashes"]), meta["chat"], meta.get("meta", {}))


def _reduce(h: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """(B, T, d) right-padded residuals -> (B, d) float32."""
    h = h.float()
    if reduction == "last":
        last = mask.long().sum(-1) - 1  # (B,)
        return h[torch.arange(h.shape[0]), last]
    m = mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
    return (h * m).sum(1) / m.sum(1)


def _make_capture_fn(store: dict[int, torch.Tensor], layer: int, mask: torch.Tensor,
                     reduction: str, stop: bool):
    def fn(h: torch.Tensor) -> None:
        store[layer] = _reduce(h.detach(), mask, reduction)
        if stop:
            raise StopForward
        return None

    return fn


@torch.no_grad()
def _cached_batches(model: Model, prompts: list[str], layers: list[int], reduction: str,
                    batch_size: int, chat: bool, backend: str, progress: bool | None
                    ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(prompt indices, (n_layers, B, d_model) float32) per length-sorted batch."""
    be = model.backend(backend)
    texts = model.format(prompts, chat)
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    show = progress if progress is not None else len(batches) > 1
    for idx in tqdm(batches, desc=f"caching {len(prompts)} prompts", disable=not show):
        enc = model.encode([prompts[i] for i in idx], chat=chat, padding_side="right")
        store: dict[int, torch.Tensor] = {}
        handles = []
        try:
            for layer in layers:
                stop = be.supports_early_stop and layer == layers[-1]
                fn = _make_capture_fn(store, layer, enc["attention_mask"], reduction, stop)
                handles.append(be.add_edit(layer, fn))
            with contextlib.suppress(StopForward):
                be.forward(enc)
        finally:
            for handle in handles:
                handle.remove()
        yield idx, torch.stack([store[layer] for layer in layers])


@overload
def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = ...,
                      reduction: str = ..., batch_size: int = ..., chat: bool = ...,
                      backend: str = ..., progress: bool | None = ..., out: None = ...,
                      shard_size: int = ...) -> Activations: ...


@overload
def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = ...,
                      reduction: str = ..., batch_size: int = ..., chat: bool = ...,
                      backend: str = ..., progress: bool | None = ..., *, out: str | Path,
                      shard_size: int = ...) -> ShardedActivations: ...


def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = None,
                      reduction: str = "last", batch_size: int = 16, chat: bool = False,
                      backend: str = "hf", progress: bool | None = None,
                      out: str | Path | None = None,
                      shard_size: int = 1024) -> Activations | ShardedActivations:
    """Residual stream after each chosen layer, reduced per prompt.

    Prompts are sorted by length and right-padded in batches (pad tokens come after the prompt,
    so in a causal model they cannot change its residuals), then put back in the caller's order.

    Args:
        model: a loaded :class:`~steerlab.models.Model`.
        prompts: the prompt strings.
        layers: layer indices (default: all).
        reduction: ``"last"`` token or ``"mean"`` over prompt tokens.
        batch_size: prompts per forward pass.
        chat: apply the chat template (chat models only; base models ignore it).
        backend: ``"hf"``, ``"tlens"`` or ``"nnsight"``.
        progress: show a progress bar (default: when there is more than one batch).
        out: a directory: stream the activations to disk in shards of ``shard_size`` prompts
            instead of holding them in memory (memory stays bounded by one shard, whatever the
            number of prompts), and return a :class:`ShardedActivations` reading them back.

    Returns:
        :class:`Activations` with ``acts`` of shape (n_layers, n_prompts, d_model), or with
        ``out``, :class:`ShardedActivations` over the same numbers.
    """
    prompts = check_prompts(prompts)
    layers = check_layers(model, layers)
    if reduction not in REDUCTIONS:
        raise OptionError(f"Unknown reduction {reduction!r}: use one of {REDUCTIONS}.")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")
    meta = {"backend": backend, "dtype": str(model.dtype).removeprefix("torch.")}
    hashes = tuple(prompt_hash(p) for p in prompts)
    batches = _cached_batches(model, prompts, layers, reduction, batch_size, chat, backend,
                              progress)
    if out is not None:
        return _stream_to_disk(Path(out), batches, shard_size, tuple(layers), model.hf_id,
                               reduction, hashes, chat and model.is_chat, meta)
    acts = torch.empty(len(layers), len(prompts), model.d_model)
    for idx, got in batches:
        acts[:, idx] = got
    return Activations(acts, tuple(layers), model.hf_id, reduction, hashes,
                       chat and model.is_chat, meta)


INDEX = "index.json"


@dataclass(frozen=True)
class ShardedActivations:
    """Activations streamed to a directory by ``cache_activations(..., out=dir)``.

    The directory holds ``shard-NNNNN.safetensors`` files (``acts``: (n_layers, k, d_model)
    float32 for k prompts, ``index``: their positions in the prompt list) and ``index.json``
    (written last, so a directory without it is an unfinished run). Read it back whole
    (:meth:`load`), one layer at a time (:meth:`at`), or shard by shard (:meth:`shards`).
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

    @property
    def n_prompts(self) -> int:
        return len(self.prompt_hashes)

    @classmethod
    def open(cls, path: str | Path) -> ShardedActivations:
        path = Path(path)
        index = path / INDEX
        if not index.is_file():
            raise FileNotFoundError(f"No {INDEX} in {path}: not a finished activation cache.")
        m = json.loads(index.read_text())
        return cls(path, tuple(m["layers"]), m["model_id"], m["reduction"],
                   tuple(m["prompt_hashes"]), m["chat"], m["d_model"], tuple(m["shards"]),
                   m.get("meta", {}))

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
        out = torch.empty(self.n_prompts, self.d_model)
        for name in self.shard_files:
            with safe_open(str(self.path / name), framework="pt") as f:
                out[f.get_tensor("index")] = f.get_slice("acts")[i]
        return out

    def load(self) -> Activations:
        """All of it in memory, as :class:`Activations`."""
        acts = torch.empty(len(self.layers), self.n_prompts, self.d_model)
        for index, got in self.shards():
            acts[:, index] = got
        return Activations(acts, self.layers, self.model_id, self.reduction,
                           self.prompt_hashes, self.chat, dict(self.meta))


def _stream_to_disk(path: Path, batches: Iterator[tuple[list[int], torch.Tensor]],
                    shard_size: int, layers: tuple[int, ...], model_id: str, reduction: str,
                    hashes: tuple[str, ...], chat: bool, meta: dict[str, Any]
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
    d_model = 0

    def flush() -> None:
        name = f"shard-{len(names):05d}.safetensors"
        save_file({"acts": torch.cat(buf, dim=1).contiguous(),
                   "index": torch.tensor(buf_idx, dtype=torch.long)}, str(path / name))
        names.append(name)
        buf.clear()
        buf_idx.clear()

    for idx, got in batches:
        d_model = got.shape[-1]
        buf.append(got)
        buf_idx.extend(idx)
        if len(buf_idx) >= shard_size:
            flush()
    if buf:
        flush()
    index = {"layers": list(layers), "model_id": model_id, "reduction": reduction,
             "prompt_hashes": list(hashes), "chat": chat, "d_model": d_model,
             "shards": names, "meta": meta}
    tmp = path / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, path / INDEX)
    return ShardedActivations(path, layers, model_id, reduction, hashes, chat, d_model,
                              tuple(names), meta)
