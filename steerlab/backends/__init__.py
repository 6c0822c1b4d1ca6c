"""Backends: the only places that know how each library hooks a residual stream.

Every backend offers the same small interface (:class:`~steerlab.backends.base.Backend`):
``add_edit(layer, fn)`` to read or replace the residual stream after a decoder block,
``forward(enc)`` for logits and ``generate(enc, ...)`` for token ids. Caching and steering are
written once against that interface, so they work on all three.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerlab.backends.base import Backend, EditFn, Handle
from steerlab.errors import OptionError
from steerlab.options import BACKENDS

if TYPE_CHECKING:
    from steerlab.models import Model


__all__ = ["BACKENDS", "Backend", "EditFn", "Handle", "make_backend"]


def make_backend(name: str, model: Model) -> Backend:
    """Build backend ``name`` for ``model`` (``hf``: plain PyTorch hooks, the fast path;
    ``tlens``: TransformerLens 4 ``TransformerBridge``; ``nnsight``: nnsight 0.8)."""
    if name == "hf":
        from steerlab.backends.hf import HFBackend

        return HFBackend(model)
    if name == "tlens":
        from steerlab.backends.tlens import TLensBackend

        return TLensBackend(model)
    if name == "nnsight":
        from steerlab.backends.nnsight import NNsightBackend

        return NNsightBackend(model)
    raise OptionError(f"Unknown backend {name!r}: choose one of {', '.join(BACKENDS)}.")
