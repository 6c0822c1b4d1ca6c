"""The validation of arguments many functions take (layers, prompts), written once: each
returns the argument in its one canonical form or raises an error that names what was wrong
and how to fix it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING

from steerlab.errors import EmptyInputError, LayerError

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["check_layers", "check_prompts"]


def _as_index(layer: object) -> object:
    """A layer given as any integer type (numpy's included) as an ``int``; anything else (a
    bool, a float, a string) as it is, for the error to name."""
    if isinstance(layer, bool):
        return layer
    try:
        return operator.index(layer)  # type: ignore[arg-type]
    except TypeError:
        return layer


def check_layers(model: Model, layers: Sequence[int] | int | None) -> list[int]:
    """Sorted unique layer indices, all in ``0 .. n_layers - 1``; ``None`` means every layer."""
    n = model.n_layers
    if layers is None:
        return list(range(n))
    single = _as_index(layers)
    try:
        given: list[object] = [single] if isinstance(single, int) else list(layers)  # type: ignore[arg-type]
    except TypeError:
        raise LayerError(f"layers={layers!r} is neither a layer nor a list of layers: pass "
                         f"block indices 0..{n - 1} of {model.name}, or None for all.") from None
    if not given:
        raise LayerError("The layer list is empty: pass at least one layer, or None for all.")
    found = [_as_index(l) for l in given]
    odd = [l for l in found if not isinstance(l, int) or isinstance(l, bool)]
    if odd:
        raise LayerError(f"Layer(s) {odd} are not whole numbers: a layer is a block index, "
                         f"0..{n - 1} for {model.name}.")
    index = [l for l in found if isinstance(l, int)]
    bad = [l for l in index if not 0 <= l < n]
    if bad:
        raise LayerError(f"Layer(s) {bad} out of range: {model.name} has {n} layers, so valid "
                         f"layers are 0..{n - 1}.")
    layers = index
    return sorted(set(layers))


def check_prompts(prompts: Sequence[str] | str) -> list[str]:
    """The prompts as a list (one string is one prompt); an empty list, or an empty or
    non-string prompt, is an :class:`~steerlab.errors.EmptyInputError` naming its position."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts:
        raise EmptyInputError("The prompt list is empty: pass at least one prompt string.")
    bad = [i for i, p in enumerate(prompts) if not isinstance(p, str) or not p.strip()]
    if bad:
        raise EmptyInputError(f"Prompts at positions {bad[:5]} are empty or not strings: "
                              "every prompt must be a non-empty string.")
    return prompts
