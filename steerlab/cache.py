"""Running prompts and collecting per-layer residual streams (reductions, batching, padding)."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
def cache_activations(model: Model, prompts: Sequence[str], layers: Sequence[int] | None = None,
                      reduction: str = "last", batch_size: int = 16, chat: bool = False,
                      backend: str = "hf", progress: bool | None = None) -> Activations:
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

    Returns:
        :class:`Activations` with ``acts`` of shape (n_layers, n_prompts, d_model).
    """
    prompts = check_prompts(prompts)
    layers = check_layers(model, layers)
    if reduction not in REDUCTIONS:
        raise OptionError(f"Unknown reduction {reduction!r}: use one of {REDUCTIONS}.")
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")
    be = model.backend(backend)
    texts = model.format(prompts, chat)
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    out = torch.empty(len(layers), len(prompts), model.d_model)
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
        out[:, idx] = torch.stack([store[layer] for layer in layers])
    return Activations(out, tuple(layers), model.hf_id, reduction,
                       tuple(prompt_hash(p) for p in prompts), chat and model.is_chat,
                       {"backend": backend, "dtype": str(model.dtype).removeprefix("torch.")})
