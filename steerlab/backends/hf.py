"""Plain PyTorch hooks on the transformers modules: the fast path, any HF causal LM.

Points: ``block_in`` is a forward pre-hook on the decoder block, ``block_out`` a forward hook
on it; ``attn_out`` and ``mlp_out`` are forward hooks on the attention and MLP modules;
``o_in`` a pre-hook on the attention's output projection; ``mid_in`` a pre-hook on the norm
before the MLP. This backend alone shares work between cells: its side of
:class:`steerlab.engine.FastPath` is :class:`~steerlab.backends.hf_fast.HFFastPath`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import Backend, EditFn, Handle, Point, When, register_all
from steerlab.backends.blocks import (
    block_parts,
    hidden_of,
    keep_positions,
    points_of,
    position_ids,
    replace_hidden,
)
from steerlab.backends.hf_fast import HFFastPath
from steerlab.backends.phase import gated
from steerlab.errors import OptionError

if TYPE_CHECKING:
    from steerlab.models import Model


def _output_hook(fn: EditFn):
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        new = fn(hidden_of(output))
        return None if new is None else replace_hidden(output, new)

    return hook


def _input_hook(fn: EditFn):
    """A pre-hook editing a module's first input, positional or ``hidden_states=``."""
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
        if args:
            new = fn(args[0])
            return None if new is None else ((new, *args[1:]), kwargs)
        new = fn(kwargs["hidden_states"])
        return None if new is None else (args, {**kwargs, "hidden_states": new})

    return hook


class HFBackend(Backend, HFFastPath):
    name = "hf"
    supports_early_stop = True

    def __init__(self, model: Model) -> None:
        self.top = model.hf
        self._layers = model.layers
        self._parts = [block_parts(b) for b in self._layers]
        # RWKV and other recurrent models take no position ids
        params = _forward_params(model.hf)
        self._takes_positions = "position_ids" in params
        self._takes_keep = "logits_to_keep" in params
        # the KV cache's keyword (``cache`` from transformers 5.2x, ``past_key_values`` before)
        self._cache_kw = next((k for k in ("cache", "past_key_values") if k in params), None)
        # a recurrent state (RWKV's ``state``, Mamba's ``cache_params``): the mask is ignored,
        # so left pads would enter the recurrence (see _realigned, _generate_rows)
        self._recurrent = not self._cache_kw and bool({"state", "cache_params"} & params)
        #: (order, back) while a recurrent forward runs on its rows' real tokens moved first
        self._realign: tuple[torch.Tensor, torch.Tensor] | None = None
        #: (rows, first column) a replayed prefix is cut to, while a part of a batch runs
        self._view: tuple[torch.Tensor, int] | None = None
        self._sliding: float | None = None  # see _window
        super().__init__(model)

    def _points(self) -> frozenset[Point]:
        return points_of(self._parts[0])

    def _register(self, layer: int, point: Point, fn: EditFn) -> Callable[[], Handle]:
        block, parts = self._layers[layer], self._parts[layer]
        if self._recurrent:
            fn = self._in_caller_columns(fn)
        if point == "block_in":
            return lambda: block.register_forward_pre_hook(_input_hook(fn), with_kwargs=True)
        if point == "block_out":
            return lambda: block.register_forward_hook(_output_hook(fn))
        module = parts[{"attn_out": "attn", "mlp_out": "mlp", "mid_norm": "mid_norm",
                        "mid_in": "mid_norm", "o_in": "o_proj"}[point]]
        if point in ("attn_out", "mlp_out"):
            return lambda: module.register_forward_hook(_output_hook(fn))
        return lambda: module.register_forward_pre_hook(_input_hook(fn), with_kwargs=True)

    def _add_points(self, layer: int, points: list[tuple[Point, EditFn]], when: When
                    ) -> Handle:
        steps = [] if when == "all" else [lambda: self.phase.attach(self.top)]
        steps += [self._register(layer, p, gated(fn, when, self.phase)) for p, fn in points]
        return register_all(steps)

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        self.check_sole()
        if self._recurrent and not _real_first(enc["attention_mask"]):
            return self._realigned(enc, keep)
        kwargs: dict[str, Any] = dict(enc, use_cache=False)
        if self._takes_positions:
            kwargs["position_ids"] = position_ids(enc["attention_mask"])
        with self.phase.reading(prompt=True):
            if keep is not None and self._takes_keep:
                kwargs["logits_to_keep"] = keep
                return self.top(**kwargs).logits
            return keep_positions(self.top(**kwargs).logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        self.check_sole()
        if self._recurrent and enc["input_ids"].shape[0] > 1:
            return self._generate_rows(enc, **kwargs)
        with self.phase.generation(width=enc["input_ids"].shape[1]):
            return self.top.generate(**enc, **kwargs)

    def _realigned(self, enc: dict[str, torch.Tensor],
                   keep: int | torch.Tensor | None) -> torch.Tensor:
        """A recurrent model's forward of a left-padded batch: each row's real tokens are
        moved to its first columns (its pads after them, where they reach no real token), and
        the logits moved back. Every edit sees and returns the caller's columns
        (:meth:`_in_caller_columns`), so positions mean what they mean in the batch given."""
        mask = enc["attention_mask"]
        order = torch.argsort((mask == 0).to(torch.int8), dim=1, stable=True)
        back = torch.argsort(order, dim=1)
        self._realign = (order, back)
        try:
            with self.phase.reading(prompt=True):
                logits = self.top(input_ids=enc["input_ids"].gather(1, order),
                                  attention_mask=mask.gather(1, order), use_cache=False).logits
        finally:
            self._realign = None
        return keep_positions(_columns(logits, back), keep)

    def _in_caller_columns(self, fn: EditFn) -> EditFn:
        def edit(h: torch.Tensor) -> torch.Tensor | None:
            if self._realign is None:
                return fn(h)
            order, back = self._realign
            new = fn(_columns(h, back.to(h.device)))
            return None if new is None else _columns(new, order.to(h.device))

        return edit

    def _generate_rows(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """A recurrent model's generation, one row at a time on its real tokens: its decoding
        state is kept per batch in a way that mixes rows (transformers' RWKV adds a (B, H)
        token-shift state to (B, 1, H) hidden states, a (B, B, H) broadcast), and its pads
        would enter the recurrence. Returns the rows' prompts as given, then their new tokens
        (padded on the right, as ``generate`` pads rows that end early)."""
        if kwargs.get("return_dict_in_generate"):
            raise OptionError("return_dict_in_generate is not supported for a batch on a "
                              "recurrent model (it generates one row at a time): pass one row.")
        ids, mask = enc["input_ids"], enc["attention_mask"]
        pad = kwargs.get("pad_token_id", self.model.tokenizer.pad_token_id)
        new = []
        for r in range(ids.shape[0]):
            real = mask[r].bool()
            with self.phase.generation(width=int(real.sum())):
                out = self.top.generate(input_ids=ids[r, real][None],
                                        attention_mask=mask[r, real][None], **kwargs)
            new.append(out[0, int(real.sum()):])
        width = max(len(t) for t in new)
        tail = ids.new_full((ids.shape[0], width), 0 if pad is None else pad)
        for r, t in enumerate(new):
            tail[r, :len(t)] = t
        return torch.cat([ids, tail], 1)

    def has_foreign_hooks(self) -> bool:
        live = self.model._live_edits.get(self.name, 0)
        return live > 0 or any(_user_hooks(m) for m in self.top.modules())

def _real_first(mask: torch.Tensor) -> bool:
    """True when no row has a pad before a real token (right-padded or unpadded)."""
    return bool((mask[:, 1:] <= mask[:, :-1]).all())


def _columns(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``t`` (B, T, ...) with row ``b``'s columns taken at ``index[b]`` (B, T)."""
    at = index.view(*index.shape, *[1] * (t.ndim - 2)).expand_as(t)
    return t.gather(1, at)


def _user_hooks(module: torch.nn.Module) -> list[Any]:
    """The forward (pre-)hooks on ``module`` that may change what it computes: all but
    transformers' own output recorders (installed for good by ``output_hidden_states=True``
    since transformers 5; they only read)."""
    hooks = [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]
    return [h for h in hooks if not getattr(h, "__module__", "").startswith("transformers.")]


def _forward_params(module: torch.nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(module.forward).parameters)
