"""nnsight 0.8: edits are applied inside ``trace``/``generate`` contexts.

nnsight has no persistent hooks: ``add_edit`` records the edit, and every ``forward`` or
``generate`` replays all recorded edits inside its trace (at every decoding step for
``generate``, through ``tracer.iter``). The handle's ``remove()`` forgets the edit.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import (
    WHEN,
    Backend,
    EditFn,
    Handle,
    admits,
    hidden_of,
    keep_positions,
    replace_hidden,
)

if TYPE_CHECKING:
    from steerlab.models import Model


class _EditHandle:
    def __init__(self, edits: list[tuple[int, EditFn, str]], item: tuple[int, EditFn, str]
                 ) -> None:
        self._edits, self._item = edits, item

    def remove(self) -> None:
        if self._item in self._edits:
            self._edits.remove(self._item)


class NNsightBackend(Backend):
    name = "nnsight"

    def __init__(self, model: Model) -> None:
        from nnsight import TransformersModel

        self.model = model
        self.top = model.hf
        self.lm = TransformersModel(model.hf, tokenizer=model.tokenizer)
        self._edits: list[tuple[int, EditFn, str]] = []
        layers = model.layers
        self._layers_path = next(name for name, m in model.hf.named_modules() if m is layers)

    def _layer_envoy(self, layer: int) -> Any:
        envoy = self.lm
        for part in self._layers_path.split("."):
            envoy = getattr(envoy, part)
        return envoy[layer]

    def add_edit(self, layer: int, fn: EditFn, when: str = "all") -> Handle:
        if when not in WHEN:
            raise ValueError(f"Unsupported edit phase {when!r}: use one of {WHEN}.")
        item = (layer, fn, when)
        self._edits.append(item)
        return _EditHandle(self._edits, item)

    def _apply_edits(self, prefill: bool = True) -> None:
        """Apply the edits this forward admits: ``prefill`` is True for a plain forward and
        for the first step of ``tracer.iter`` (the one that reads the prompt)."""
        # nnsight needs modules visited in execution order
        edits = sorted(self._edits, key=lambda e: e[0])
        admitted = [e for e in edits if admits(e[2], prefill)]
        if not admitted and edits:
            # a step with nothing to edit must still wait on a module, or tracer.iter[:]
            # never advances to the next step (it would spin until a timeout)
            _ = self._layer_envoy(edits[0][0]).output
        for layer, fn, _when in admitted:
            envoy = self._layer_envoy(layer)
            out = envoy.output
            new = fn(hidden_of(out))
            if new is not None:
                envoy.output = replace_hidden(out, new)

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        with self.lm.trace(dict(enc)):
            self._apply_edits()
            logits = self.lm.output.logits.save()
        return keep_positions(logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        with warnings.catch_warnings():
            # an open `tracer.iter[:]` loop ends with a "never reached" warning by design
            warnings.filterwarnings("ignore", message=".*was never reached.*")
            with self.lm.generate(**kwargs) as tracer:
                with tracer.invoke(dict(enc)):
                    if self._edits:
                        for step in tracer.iter[:]:
                            self._apply_edits(prefill=_step_index(step) == 0)
                with tracer.invoke():
                    ids = tracer.result.save()
        return ids


def _step_index(step: Any) -> int:
    """The generation step ``tracer.iter`` yields (an int in nnsight 0.8)."""
    if isinstance(step, int):
        return step
    raise TypeError(f"nnsight's tracer.iter yielded {type(step).__name__}, not a step index: "
                    "this nnsight version changed its iteration API; pin nnsight to the "
                    "range in pyproject.toml.")
