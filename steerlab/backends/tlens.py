"""TransformerLens 4: a ``TransformerBridge`` around a private copy of the HF model.

The bridge swaps the model's blocks for its own components and forces eager attention, so it
gets its own copy of the module tree: booting it never slows down or changes the plain-HF
path. The copy shares the weight tensors with the HF model (a deep copy with the parameters
and buffers memoised), so the bridge costs module objects, not a second set of weights
(``bench/memory.py`` measures both). steerlab never asks the bridge to fold or process
weights, which would write into the shared tensors.
Points are TransformerLens hook points of the bridge's block: ``hook_in`` (``hook_resid_pre``),
``hook_out`` (``hook_resid_post``), ``attn.hook_out`` (``hook_attn_out``), ``mlp.hook_out``
(``hook_mlp_out``), ``attn.o.hook_in`` (``attn.hook_z``, flattened over heads) and
``ln2.hook_in``. The last is TransformerLens's ``hook_resid_mid``: editing it alone changes
what the MLP reads but not the residual it is added to, so steerlab's ``resid_mid`` also adds
the change at ``hook_out`` (see :mod:`steerlab.backends.base`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import POINTS, Backend, EditFn, Handle, Point, When, register_all
from steerlab.backends.blocks import keep_positions
from steerlab.backends.phase import gated

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


#: the bridge block's hook point for each point (dotted path from ``blocks[layer]``)
_HOOKS: dict[str, str] = {"block_in": "hook_in", "o_in": "attn.o.hook_in",
                          "attn_out": "attn.hook_out", "mid_in": "ln2.hook_in",
                          "mlp_out": "mlp.hook_out", "block_out": "hook_out"}


def _find(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


class TLensBackend(Backend):
    name = "tlens"

    def __init__(self, model: Model) -> None:
        from transformer_lens.model_bridge import TransformerBridge

        hf = model.hf
        shared = {id(t): t for t in (*hf.parameters(), *hf.buffers())}
        hf_copy = copy.deepcopy(hf, shared)  # new modules, the same weight tensors
        if not getattr(hf_copy.config, "architectures", None):
            # a model built from a config names no architecture, and TransformerLens 4.3 maps
            # some model types (gemma3_text) to none: the class says which it is
            hf_copy.config.architectures = [type(hf).__name__]
        self.bridge = TransformerBridge.boot_transformers(
            model.hf_id, hf_model=hf_copy, tokenizer=model.tokenizer
        )
        self.top = hf_copy
        _pass_cache_to_bridge_attention(self.bridge)
        super().__init__(model)

    def _points(self) -> frozenset[Point]:
        block = self.bridge.blocks[0]
        return frozenset(p for p in POINTS if _find(block, _HOOKS[p]) is not None)

    def hook_point(self, layer: int, point: Point) -> Any:
        return _find(self.bridge.blocks[layer], _HOOKS[point])

    def _add_points(self, layer: int, points: list[tuple[Point, EditFn]], when: When
                    ) -> Handle:
        # the booted HF module still runs every forward of generate: it carries the phase hook
        steps: list[Callable[[], Handle]] = (
            [] if when == "all" else [lambda: self.phase.attach(self.top)])
        for point, fn in points:
            steps.append(self._register(self.hook_point(layer, point), gated(fn, when, self.phase)))
        return register_all(steps)

    @staticmethod
    def _register(hp: Any, edit: EditFn) -> Callable[[], Handle]:
        return lambda: _LensHandle(hp, hp.add_hook(_make_lens_hook(edit)))

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        self.check_sole()
        with self.phase.reading(prompt=True):
            logits = self.bridge(enc["input_ids"], attention_mask=enc["attention_mask"],
                                 return_type="logits")
        return keep_positions(logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        # The booted HF model runs through the bridge's components, so its hook points fire
        # at every decoding step; HF's generate handles left padding and the KV cache.
        self.check_sole()
        with self.phase.generation(width=enc["input_ids"].shape[1]):
            return self.top.generate(**enc, **kwargs)
