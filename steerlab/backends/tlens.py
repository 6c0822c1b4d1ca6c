"""TransformerLens 4: a ``TransformerBridge`` around a private copy of the HF model.

The bridge swaps the model's blocks for its own components and forces eager attention, so it
gets its own deep copy: booting it never slows down or changes the plain-HF path.
Edits are TransformerLens hooks on ``blocks.{layer}.hook_resid_post`` (alias of ``hook_out``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import Backend, EditFn, Handle, keep_positions

if TYPE_CHECKING:
    from steerlab.models import Model


class _LensHandle:
    def __init__(self, hook_point: Any, lens_handle: Any) -> None:
        self._hook_point = hook_point
        self._lens_handle = lens_handle

    def remove(self) -> None:
        self._lens_handle.hook.remove()
        if self._lens_handle in self._hook_point.fwd_hooks:
            self._hook_point.fwd_hooks.remove(self._lens_handle)


def _make_lens_hook(fn: EditFn):
    def hook(activation: torch.Tensor, hook: Any) -> torch.Tensor | None:
        return fn(activation)

    return hook


class TLensBackend(Backend):
    name = "tlens"

    def __init__(self, model: Model) -> None:
        from transformer_lens.model_bridge import TransformerBridge

        self.model = model
        hf_copy = copy.deepcopy(model.hf)
        self.bridge = TransformerBridge.boot_transformers(
            model.hf_id, hf_model=hf_copy, tokenizer=model.tokenizer
        )
        self.top = hf_copy

    def _hook_point(self, layer: int) -> Any:
        block = self.bridge.blocks[layer]
        return getattr(block, "hook_resid_post", None) or block.hook_out

    def add_edit(self, layer: int, fn: EditFn) -> Handle:
        hook_point = self._hook_point(layer)
        return _LensHandle(hook_point, hook_point.add_hook(_make_lens_hook(fn)))

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        logits = self.bridge(enc["input_ids"], attention_mask=enc["attention_mask"],
                             return_type="logits")
        return keep_positions(logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        # The booted HF model runs through the bridge's components, so its hook points fire
        # at every decoding step; HF's generate handles left padding and the KV cache.
        return self.top.generate(**enc, **kwargs)
