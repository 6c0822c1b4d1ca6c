"""TransformerLens 4: a ``TransformerBridge`` around a private copy of the HF model.

The bridge swaps the model's blocks for its own components and forces eager attention, so it
gets its own deep copy: booting it never slows down or changes the plain-HF path.
Edits are TransformerLens hooks on ``blocks.{layer}.hook_resid_post`` (alias of ``hook_out``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import Backend, EditFn, Handle, Phase, add_phased, keep_positions

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


def _pass_cache_to_bridge_attention(bridge: Any) -> None:
    """Hand the KV cache to the bridge's attention under the name it reads.

    transformers >= 5.24 passes a layer its cache as ``cache=`` (``past_key_values=`` before);
    TransformerLens 4.3's bridge attention reads only ``past_key_values`` (or ``layer_past``),
    so on 5.24 every decoding step attended to itself alone and generation went to garbage.
    A pre-hook on each bridge attention component (of this backend's private copy) copies
    the cache across. ``tests/test_backends.py`` checks the bridge generates what HF does.
    """
    def hook(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            return args, {**kwargs, "past_key_values": kwargs["cache"]}
        return None

    for module in bridge.modules():
        if hasattr(module, "_update_kv_cache"):
            module.register_forward_pre_hook(hook, with_kwargs=True)


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
        self.phase = Phase()
        _pass_cache_to_bridge_attention(self.bridge)

    def _hook_point(self, layer: int) -> Any:
        block = self.bridge.blocks[layer]
        return getattr(block, "hook_resid_post", None) or block.hook_out

    def add_edit(self, layer: int, fn: EditFn, when: str = "all") -> Handle:
        hook_point = self._hook_point(layer)
        # the booted HF module still runs every forward of generate: it carries the phase hook
        return add_phased(self.top, self.phase, fn, when, lambda edit: _LensHandle(
            hook_point, hook_point.add_hook(_make_lens_hook(edit))))

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        logits = self.bridge(enc["input_ids"], attention_mask=enc["attention_mask"],
                             return_type="logits")
        return keep_positions(logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        # The booted HF model runs through the bridge's components, so its hook points fire
        # at every decoding step; HF's generate handles left padding and the KV cache.
        with self.phase.generation():
            return self.top.generate(**enc, **kwargs)
