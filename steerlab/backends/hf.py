"""Plain PyTorch forward hooks on the transformers modules: the fast path, any HF causal LM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import (
    Backend,
    EditFn,
    Handle,
    Phase,
    add_phased,
    hidden_of,
    keep_positions,
    position_ids,
    replace_hidden,
)

if TYPE_CHECKING:
    from steerlab.models import Model


def _make_edit_hook(fn: EditFn):
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        new = fn(hidden_of(output))
        return None if new is None else replace_hidden(output, new)

    return hook


class HFBackend(Backend):
    name = "hf"
    supports_early_stop = True

    def __init__(self, model: Model) -> None:
        self.model = model
        self.top = model.hf
        self._layers = model.layers
        # RWKV and other recurrent models take no position ids
        params = _forward_params(model.hf)
        self._takes_positions = "position_ids" in params
        self._takes_keep = "logits_to_keep" in params
        self.phase = Phase()

    def add_edit(self, layer: int, fn: EditFn, when: str = "all") -> Handle:
        block = self._layers[layer]
        return add_phased(self.top, self.phase, fn, when,
                          lambda edit: block.register_forward_hook(_make_edit_hook(edit)))

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(enc, use_cache=False)
        if self._takes_positions:
            kwargs["position_ids"] = position_ids(enc["attention_mask"])
        if keep is not None and self._takes_keep:
            kwargs["logits_to_keep"] = keep
            return self.top(**kwargs).logits
        return keep_positions(self.top(**kwargs).logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        with self.phase.generation():
            return self.top.generate(**enc, **kwargs)


def _forward_params(module: torch.nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)
