"""Cached activations: :class:`Activations` in memory, :class:`ShardedActivations` streamed
to a directory of safetensors shards (:func:`write_shards`), and :func:`prompt_hash`, the
identity of a prompt they record. :mod:`steerlab.cache` makes them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from steerlab import _io
from steerlab.errors import LayerError, OptionError
from steerlab.options import Reduction, Site
from steerlab.padding import mask_of

__all__ = ["INDEX", "Activations", "ShardedActivations", "prompt_hash", "write_shards"]


def prompt_hash(prompt: str) -> str:
    """Short, stable identity of one prompt (sha256 of its UTF-8 text, 16 hex digits)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


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
    reduction: Reduction
    prompt_hashes: tuple[str, ...]
    chat: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    site: Site = "resid_post"
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

    def mean_norms(self) -> dict[int, float]:
        """Layer -> the mean norm of the prompts' activations there (per-prompt reductions
        only): the reference norms of :meth:`SteeringVector.with_ref_norms`."""
        if self.acts.ndim != 3:
            raise OptionError("mean_norms needs one vector per prompt (reduction 'last' or "
                              f"'mean'), not {self.reduction!r}.")
        return {l: float(self.at(l).norm(dim=-1).mean()) for l in self.layers}

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
    reduction: Reduction
    prompt_hashes: tuple[str, ...]
    chat: bool
    d_model: int
    shard_files: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    site: Site = "resid_post"
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
        return mask_of(self.lengths)

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

        for name in self.shard_files:
            t = load_file(str(self.path / name))
            yield t["index"], t["acts"]

    def at(self, layer: int) -> torch.Tensor:
        """(n_prompts, d_model) at model layer ``layer``, reading only that layer's rows."""

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


def write_shards(path: Path, batches: Iterator[tuple[list[int], torch.Tensor]],
                    shard_size: int, layers: tuple[int, ...], model_id: str, reduction: Reduction,
                    hashes: tuple[str, ...], chat: bool, meta: dict[str, Any],
                    site: Site = "resid_post", lengths: torch.Tensor | None = None
                    ) -> ShardedActivations:
    """Write ``batches`` ((prompt positions, (n_layers, k, ...) activations) each) to
    ``path`` as shards of ``shard_size`` prompts, then ``index.json`` (last: a directory
    without it is an unfinished run); earlier shards there are removed first."""

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
