"""nnsight 0.8: edits are applied inside ``trace``/``generate`` contexts.

nnsight has no persistent hooks: ``add_edit`` records the edit, and every ``forward`` or
``generate`` replays all recorded edits inside its trace (at every decoding step for
``generate``, through ``tracer.iter``). The handle's ``remove()`` forgets the edit. Points are
envoys: a block's ``.input`` / ``.output``, the attention's and MLP's ``.output``, the output
projection's and the pre-MLP norm's ``.input``; they are visited in execution order, as
nnsight requires.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import POINTS, Backend, EditFn, Handle, Point, When
from steerlab.backends.blocks import (
    block_parts,
    hidden_of,
    keep_positions,
    points_of,
    replace_hidden,
)
from steerlab.backends.phase import admits

if TYPE_CHECKING:
    from steerlab.models import Model

_Edit = tuple[int, Point, EditFn, When]
#: which block part holds each point (None: the block itself), and whether it is the input
_WHERE: dict[str, tuple[str | None, bool]] = {
    "block_in": (None, True), "o_in": ("o_proj", True), "attn_out": ("attn", False),
    "mid_in": ("mid_norm", True), "mlp_out": ("mlp", False), "block_out": (None, False)}


class _EditHandle:
    def __init__(self, edits: list[_Edit], items: list[_Edit]) -> None:
        self._edits, self._items = edits, items

    def remove(self) -> None:
        for item in self._items:
            if item in self._edits:
                self._edits.remove(item)
        self._items = []


class NNsightBackend(Backend):
    name = "nnsight"

    def __init__(self, model: Model) -> None:
        from nnsight import TransformersModel

        self.top = model.hf
        self.lm = TransformersModel(model.hf, tokenizer=model.tokenizer)
        self._edits: list[_Edit] = []
        layers = model.layers
        self._layers_path = next(name for name, m in model.hf.named_modules() if m is layers)
        block = layers[0]
        names = {id(m): n for n, m in block.named_modules()}
        self._part_paths = {k: names[id(m)] for k, m in block_parts(block).items()}
        super().__init__(model)

    def _points(self) -> frozenset[Point]:
        return points_of(block_parts(self.model.layers[0]))

    def _envoy(self, layer: int, part: str | None) -> Any:
        envoy = self.lm
        path = self._layers_path.split(".") + [str(layer)]
        if part is not None:
            path += self._part_paths[part].split(".")
        for name in path:
            envoy = envoy[int(name)] if name.isdigit() else getattr(envoy, name)
        return envoy

    def _add_points(self, layer: int, points: list[tuple[Point, EditFn]], when: When
                    ) -> Handle:
        items = [(layer, point, fn, when) for point, fn in points]
        self._edits.extend(items)
        return _EditHandle(self._edits, items)

    def _apply_edits(self, prefill: bool = True) -> None:
        """Apply the edits this forward admits: ``prefill`` is True for a plain forward and
        for the first step of ``tracer.iter`` (the one that reads the prompt). Edits at one
        point run in the order they were added, and the point is read and written once."""
        order = {p: i for i, p in enumerate(POINTS)}
        edits = sorted(self._edits, key=lambda e: (e[0], order[e[1]]))  # stable: added order
        admitted = [e for e in edits if admits(e[3], prefill)]
        if not admitted and edits:
            # a step with nothing to edit must still wait on a module, or tracer.iter[:]
            # never advances to the next step (it would spin until a timeout)
            _ = self._envoy(edits[0][0], None).output
        groups: dict[tuple[int, Point], list[EditFn]] = {}
        for layer, point, fn, _when in admitted:
            groups.setdefault((layer, point), []).append(fn)
        for (layer, point), fns in groups.items():
            part, is_input = _WHERE[point]
            envoy = self._envoy(layer, part)
            value = envoy.input if is_input else envoy.output
            h = value if is_input else hidden_of(value)
            changed = False
            for fn in fns:
                new = fn(h)
                if new is not None:
                    h, changed = new, True
            if changed:
                if is_input:
                    envoy.input = h
                else:
                    envoy.output = replace_hidden(value, h)

    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        self.check_sole()
        with self.lm.trace(dict(enc)):
            self._apply_edits()
            logits = self.lm.output.logits.save()
        return keep_positions(logits, keep)

    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> Any:
        self.check_sole()
        with warnings.catch_warnings():
            # an open `tracer.iter[:]` loop ends with a "never reached" warning by design
            warnings.filterwarnings("ignore", message=".*was never reached.*")
            with self.phase.generation(width=enc["input_ids"].shape[1]), \
                    self.lm.generate(**kwargs) as tracer:
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
