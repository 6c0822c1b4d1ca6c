"""Plain PyTorch forward hooks on the transformers modules: the fast path, any HF causal LM."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import (
    Backend,
    EditFn,
    Handle,
    Handles,
    Phase,
    gated,
    hidden_of,
    keep_positions,
    position_ids,
    replace_hidden,
)

if TYPE_CHECKING:
    from steerlab.models import Model


def phase_hook(phase: Phase):
    """A forward pre-hook (with kwargs) that tells ``phase`` which forward is starting."""
    def hook(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        phase.enter_forward(args, kwargs)

    return hook


def add_module_edit(top: torch.nn.Module, block: torch.nn.Module, fn: EditFn, when: str,
                    phase: Phase) -> Handle:
    """``fn`` on ``block``'s output; for ``when != "all"`` a pre-hook on ``top`` keeps
    ``phase`` current. Both hooks come off together (also if the second fails)."""
    edit = gated(fn, when, phase)
    handles: list[Handle] = []
    try:
        if when != "all":
            handles.append(top.register_forward_pre_hook(phase_hook(phase), with_kwargs=True))
        handles.append(block.register_forward_hook(_make_edit_hook(edit)))
    except BaseException:
        Handles(handles).remove()
        raise
    return Handles(handles)


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
        return add_module_edit(self.top, self._layers[layer], fn, when, self.phase)

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
