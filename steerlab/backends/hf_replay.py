"""Prefix record and replay, the HF backend's side of :mod:`steerlab.engine`'s recorded
prefix: :meth:`HFReplay.record` runs a batch up to a block and keeps that block's output;
:meth:`HFReplay.replaying` makes the blocks up to it return the recorded output instead of
computing it, so each later forward pays only for the blocks after it. While
:meth:`HFReplay._viewing` is in force a replayed prefix returns only some rows and columns
(the shared columns' parts, :meth:`~steerlab.backends.hf_fast.HFFastPath.forward_shared`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.blocks import StopForward
from steerlab.backends.kvcache import take


class HFReplay:
    """Record and replay of the HF backend (the attributes below are its own)."""

    _layers: Any
    _view: tuple[torch.Tensor, int] | None

    if TYPE_CHECKING:
        def forward(self, enc: dict[str, torch.Tensor],
                    keep: int | torch.Tensor | None = None) -> torch.Tensor: ...

    @contextmanager
    def _viewing(self, rows: torch.Tensor, start: int) -> Iterator[None]:
        """While in force, a replayed prefix returns only ``rows`` and columns ``start:``."""
        before = self._view
        self._view = (rows, start)
        try:
            yield
        finally:
            self._view = before

    def record(self, enc: dict[str, torch.Tensor], layer: int,
               start: tuple[int, Any] | None = None) -> Any:
        seen: dict[str, Any] = {}

        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            seen["out"] = output
            raise StopForward

        with contextlib.ExitStack() as stack:
            if start is not None:
                if start[0] >= layer:
                    raise ValueError(f"Cannot resume at layer {start[0]} to reach {layer}.")
                stack.enter_context(self.replaying(*start))
            handle = self._layers[layer].register_forward_hook(hook)
            stack.callback(handle.remove)
            with contextlib.suppress(StopForward):
                self.forward(enc)
        return seen["out"]

    @contextmanager
    def replaying(self, layer: int, output: Any) -> Iterator[None]:
        blocks = list(self._layers)[:layer + 1]

        def recorded(*args: Any, **kwargs: Any) -> Any:
            if self._view is None:
                return output
            rows, start = self._view
            return take(output, rows, start)

        # a library may keep its own wrapper as the block's instance ``forward`` (nnsight
        # does): put back exactly what was there, not the class's method
        saved = [block.__dict__.get("forward") for block in blocks]
        try:
            for block in blocks:
                block.forward = recorded
            yield
        finally:
            for block, before in zip(blocks, saved, strict=True):
                if before is None:
                    block.__dict__.pop("forward", None)
                else:
                    block.forward = before
