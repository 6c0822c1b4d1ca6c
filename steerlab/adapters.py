"""Trainable adapters on a frozen model: one protocol, two kinds.

An :class:`Adapter` is a small ``nn.Module`` holding the only weights that train while the model
stays frozen. Every adapter

* names the model it runs on (:meth:`Adapter.target`: the caller's model, or a private copy);
* is switched on with :meth:`Adapter.attached` (a context manager; whatever it added comes off
  on exit, whatever happens);
* lists its weights with ``parameters()`` / :meth:`Adapter.trainable_parameters`;
* writes and reads its checkpoint file (:attr:`Adapter.file_name`, safetensors, no pickle) with
  :meth:`Adapter.save_checkpoint` / :meth:`Adapter.read_checkpoint`;
* turns into a :class:`~steerlab.vectors.SteeringVector` where it is one
  (:meth:`Adapter.to_steering_vector`).

The two kinds (:data:`ADAPTERS`, :func:`make_adapter`):

``vectors`` (:class:`LearnedVectors`)
    Sinii et al. 2025's bias-only adaptation: one trainable d_model vector per chosen layer,
    added to the residual stream after that layer, at every position (through the ``hf``
    backend's edits). Checkpoint: a steering-vector file, ``vectors.safetensors``.
``lora`` (:class:`LoraAdapter`)
    The paper's comparison: rank-r LoRA (``peft``) on every MLP down-projection of a private
    copy of the model. Checkpoint: its trainable tensors by parameter name,
    ``lora.safetensors``.

The file formats are those :mod:`steerlab.train` has always written, so older run directories
still resume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from steerlab import _io
from steerlab.errors import OptionError, SteerlabError
from steerlab.receipts import Receipt
from steerlab.validate import check_layers
from steerlab.vectors import SteeringVector

if TYPE_CHECKING:
    from steerlab.models import Model

ADAPTERS = ("vectors", "lora")


def freeze(model: Model) -> None:
    """All model weights to ``requires_grad=False`` (steering vectors train alone)."""
    model.freeze()


@dataclass(frozen=True)
class AdapterCheckpoint:
    """An adapter file read but not yet applied: check :attr:`meta` (the run's ``config_key``
    and ``step``) first, then :meth:`restore` copies its weights into the adapter."""

    meta: dict[str, Any]
    _restore: Callable[[], None]

    @property
    def config_key(self) -> str | None:
        key = self.meta.get("config_key")
        return None if key is None else str(key)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    def restore(self) -> None:
        self._restore()


class Adapter(nn.Module, ABC):
    """The adapter protocol (see the module doc). Subclasses set :attr:`kind`,
    :attr:`file_name` and :attr:`file_kind` and implement the abstract methods."""

    kind: ClassVar[str]  # its name in :data:`ADAPTERS` (``TrainConfig.adapter``)
    file_name: ClassVar[str]  # the checkpoint file in a run directory
    file_kind: ClassVar[str]  # the ``kind`` recorded in that file's steerlab metadata

    @abstractmethod
    def target(self, model: Model) -> Model:
        """The model to train and evaluate with this adapter attached (``model`` itself, or
        the adapter's private copy of it)."""

    @abstractmethod
    def attached(self, model: Model) -> AbstractContextManager[None]:
        """A context manager inside which :meth:`target` runs with the adapter (gradients flow
        to it); what it added to the model comes off on exit, whatever happens."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (those with ``requires_grad``), in
        ``parameters()`` order."""
        return [p for p in self.parameters() if p.requires_grad]

    @abstractmethod
    def to_steering_vector(self, model: Model, meta: dict[str, Any] | None = None,
                           seed: int | None = None) -> SteeringVector | None:
        """The adapter as a steering vector (``None`` for adapters that are not one)."""

    @abstractmethod
    def save_checkpoint(self, path: Path, model: Model, meta: dict[str, Any],
                        seed: int | None = None) -> None:
        """Write the adapter's weights and ``meta`` to ``path`` (safetensors)."""

    @abstractmethod
    def read_checkpoint(self, path: Path, model: Model) -> AdapterCheckpoint:
        """Read ``path`` (written by :meth:`save_checkpoint`) without applying it yet."""

    @classmethod
    @abstractmethod
    def stored_meta(cls, path: Path) -> dict[str, Any]:
        """The run metadata (``config_key``, ``step``, ...) of a checkpoint file; reads only."""


class LearnedVectors(Adapter):
    """One trainable (d_model,) float32 vector per chosen layer, added after that layer."""

    kind = "vectors"
    file_name = "vectors.safetensors"
    file_kind = "steering_vector"

    def __init__(self, model: Model, layers: Sequence[int] | None = None) -> None:
        super().__init__()
        self.layer_ids = check_layers(model, list(layers) if layers is not None else None)
        self.model_id = model.hf_id
        self.vectors = nn.Parameter(torch.zeros(len(self.layer_ids), model.d_model,
                                                device=model.device))

    def target(self, model: Model) -> Model:
        return model

    @contextmanager
    def attached(self, model: Model) -> Iterator[None]:
        """Add the vectors to ``model``'s residual stream inside the block (gradients flow to
        them); the edits come off on exit, whatever happens. :attr:`receipt` counts where
        they were added."""
        be = model.backend("hf")
        self.receipt = Receipt("learned vectors added")
        with be.add_edits([(layer, self._edit(i), {"receipt": self.receipt})
                           for i, layer in enumerate(self.layer_ids)]):
            yield

    def _edit(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(h: torch.Tensor) -> torch.Tensor:
            return h + self.vectors[i].to(device=h.device, dtype=h.dtype)

        return fn

    def to_steering_vector(self, model: Model, meta: dict[str, Any] | None = None,
                           seed: int | None = None) -> SteeringVector:
        vecs = {l: self.vectors[i].detach().clone() for i, l in enumerate(self.layer_ids)}
        return SteeringVector(vecs, model.hf_id, model.d_model, method="learned", seed=seed,
                              meta=meta or {})

    def load_vector(self, vec: SteeringVector) -> None:
        """Copy ``vec``'s per-layer vectors into this adapter (same layers required)."""
        if vec.layers != self.layer_ids:
            raise SteerlabError(f"Checkpoint has layers {vec.layers}, run wants "
                                f"{self.layer_ids}: train with layers={tuple(vec.layers)} to "
                                "continue it, or use another out_dir.")
        with torch.no_grad():
            self.vectors.copy_(vec.stack())

    def save_checkpoint(self, path: Path, model: Model, meta: dict[str, Any],
                        seed: int | None = None) -> None:
        self.to_steering_vector(model, meta, seed=seed).save(path)

    def read_checkpoint(self, path: Path, model: Model) -> AdapterCheckpoint:
        vec = SteeringVector.load(path, model)
        return AdapterCheckpoint(vec.meta, lambda: self.load_vector(vec))

    @classmethod
    def stored_meta(cls, path: Path) -> dict[str, Any]:
        _, meta = _io.load_tensors(path, cls.file_kind)
        return dict(meta.get("meta", meta))  # a vector file keeps the run's meta in "meta"


class LoraAdapter(Adapter):
    """The paper's comparison: rank-r LoRA on every MLP down-projection (``peft``), the base
    weights frozen. Works on a private copy of the model (``.model``), so the caller's model is
    never rewritten by peft."""

    kind = "lora"
    file_name = "lora.safetensors"
    file_kind = "lora_adapter"

    def __init__(self, model: Model, rank: int = 8) -> None:
        super().__init__()
        self.model, self.peft = model.lora_copy(rank)

    def target(self, model: Model) -> Model:
        return self.model  # train and evaluate the private, adapted copy

    @contextmanager
    def attached(self, model: Model) -> Iterator[None]:
        yield  # the adapters live in self.model, always on

    def to_steering_vector(self, model: Model, meta: dict[str, Any] | None = None,
                           seed: int | None = None) -> None:
        return None  # LoRA rewrites weights: there is no vector to add

    def save_checkpoint(self, path: Path, model: Model, meta: dict[str, Any],
                        seed: int | None = None) -> None:
        named = {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}
        _io.save_tensors(path, named, {**meta, "kind": self.file_kind})

    def read_checkpoint(self, path: Path, model: Model) -> AdapterCheckpoint:
        tensors, meta = _io.load_tensors(path, self.file_kind)
        return AdapterCheckpoint(meta, lambda: self._load_tensors(path, tensors))

    def _load_tensors(self, path: Path, tensors: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        unknown = sorted(set(tensors) - set(params))
        if unknown:
            raise SteerlabError(f"{path} holds LoRA weights this adapter does not have "
                                f"({unknown[:3]}...): it was trained on another model or "
                                "another lora_rank; use another out_dir or delete it.")
        with torch.no_grad():
            for n, t in tensors.items():
                if params[n].shape != t.shape:
                    raise SteerlabError(f"{path}: {n} has shape {tuple(t.shape)}, this "
                                        f"adapter's {tuple(params[n].shape)} (another "
                                        "lora_rank?); use another out_dir or delete it.")
                params[n].copy_(t)

    @classmethod
    def stored_meta(cls, path: Path) -> dict[str, Any]:
        _, meta = _io.load_tensors(path, cls.file_kind)
        return meta


ADAPTER_CLASSES: tuple[type[Adapter], ...] = (LearnedVectors, LoraAdapter)


def make_adapter(kind: str, model: Model, layers: Sequence[int] | None = None,
                 rank: int = 8) -> Adapter:
    """A fresh adapter of ``kind`` (one of :data:`ADAPTERS`) for ``model``: ``layers`` for
    ``vectors`` (default: all), ``rank`` for ``lora``."""
    if kind == "vectors":
        return LearnedVectors(model, layers)
    if kind == "lora":
        return LoraAdapter(model, rank)
    raise OptionError(f"Unknown adapter {kind!r}: use one of {ADAPTERS}.")
