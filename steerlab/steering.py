"""Run-time steering: add ``coeff * vector`` (or project / ablate) on the residual stream.

Every hook goes through :class:`SteeringHandle`; :func:`steer` is its context-manager form.
Hooks are removed whatever happens: normal exit, an exception in the block, a failure half-way
through registration, or KeyboardInterrupt.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from steerlab.backends.base import WHEN, Handle, Handles, Site, check_site
from steerlab.errors import InvalidVectorError, OptionError, VectorMismatchError
from steerlab.options import APPLY_SCALE, MODES, SCALES, BackendName, Mode, Scale, When, check
from steerlab.receipts import LEVELS, Level, Receipt
from steerlab.validate import check_layers
from steerlab.vectors import SITE, SteeringVector, unit

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["HONG_SITES", "MODES", "POSITIONS", "SCALES", "RowSteering", "SteeringHandle",
           "add_steering", "hong_projection", "steer"]
POSITIONS = WHEN  # the backend decides which forward reads the prompt


class SteeringHandle(Handles):
    """Registered steering hooks; ``remove()`` takes them all off (idempotent), and so does
    the end of a ``with`` block. :attr:`receipt` says what they did (None when off)."""

    def __init__(self, handles: list[Handle], receipt: Receipt | None = None) -> None:
        super().__init__(handles)
        self.receipt = receipt


def receipt_for(what: str, receipt: Level | Receipt) -> Receipt | None:
    """The receipt an intervention context writes to: ``receipt`` itself when it is one
    (several contexts may add up in one), a new one of that level, None for ``off``."""
    if isinstance(receipt, Receipt):
        return receipt
    check("receipt level", receipt, LEVELS)
    return None if receipt == "off" else Receipt(what, receipt)


def expected(v: torch.Tensor, coeff: float, mode: Mode) -> dict[str, Any]:
    """What :func:`_make_steer_fn` is asked to do, for a receipt to check it against."""
    if mode == "add":
        return {"expect": lambda h: v.to(h.device).expand_as(h)}
    r = unit(v)

    def along(h: torch.Tensor) -> torch.Tensor:
        d = r.to(h.device)
        return (h @ d).unsqueeze(-1) * d * (coeff if mode == "project" else -1.0)

    return {"expect": along, "direction": r}


def _make_steer_fn(v: torch.Tensor, coeff: float, mode: Mode):
    cache: dict[tuple[torch.dtype, torch.device], torch.Tensor] = {}
    direction = unit(v)

    def fn(h: torch.Tensor) -> torch.Tensor:
        key = (h.dtype, h.device)
        if key not in cache:
            cache[key] = (v if mode == "add" else direction).to(device=h.device, dtype=h.dtype)
        d = cache[key]  # (d_model,)
        if mode == "add":
            return h + coeff * d
        proj = (h @ d).unsqueeze(-1) * d  # (B, T, d_model): component along the direction
        if mode == "project":
            return h + coeff * proj
        return h - proj  # ablate

    return fn


class RowSteering(SteeringHandle):
    """Steering in which each row of the batch gets its own added vector (the rows of one
    batch are several sweep cells), at one ``layer`` for every row or at each row's own layer
    (a sequence, one layer per row: the rows of one batch may then be cells of several
    layers; each layer's edit adds zero to the other rows, which changes no number).
    :meth:`select` follows the rows a forward runs when that is a subset of them
    (:func:`steerlab.engine.greedy`'s ``on_rows``)."""

    def __init__(self, model: Model, rows: torch.Tensor, layer: int | Sequence[int],
                 positions: When, backend: BackendName,
                 receipt: Level | Receipt = "counts") -> None:
        if rows.ndim != 2 or rows.shape[1] != model.d_model:
            raise VectorMismatchError(f"Row vectors have shape {tuple(rows.shape)}, but "
                                      f"{model.name} needs (rows, {model.d_model}).")
        if not torch.isfinite(rows).all():
            raise InvalidVectorError("The row vectors hold NaN or inf values.")
        if positions not in POSITIONS:
            raise OptionError(f"Unsupported position mode {positions!r}: use one of "
                              f"{POSITIONS}.")
        per_row = [layer] * rows.shape[0] if isinstance(layer, int) else list(layer)
        if len(per_row) != rows.shape[0]:
            raise VectorMismatchError(f"{len(per_row)} layers for {rows.shape[0]} row "
                                      "vectors: give one layer per row (or one for all).")
        layers = check_layers(model, sorted(set(per_row)))
        at = torch.tensor(per_row)
        # each layer's rows: the row's vector where the row steers at that layer, else zero
        self.rows = {lay: torch.where((at == lay)[:, None], rows.float(), 0.0)
                     for lay in layers}
        self._index: torch.Tensor | None = None  # the rows now run (None: all)
        self._cast: dict[tuple[int, torch.dtype, torch.device], torch.Tensor] = {}
        be = model.backend(backend)
        rec = receipt_for("steered", receipt)
        noted = {"receipt": rec, "rows": lambda: self._index} if rec is not None else {}
        super().__init__([be.add_edits([
            (lay, self._edit_at(lay), {"when": positions, **noted,
                                       **({"expect": self._asked_at(lay)} if noted else {})})
            for lay in layers])], rec)

    def _asked_at(self, layer: int) -> Any:
        def asked(h: torch.Tensor) -> torch.Tensor:
            d = self.rows[layer].to(h.device)
            d = d if self._index is None else d[self._index.to(h.device)]
            return d[:, None, :].expand_as(h)

        return asked

    def _edit_at(self, layer: int) -> Any:
        def edit(h: torch.Tensor) -> torch.Tensor:
            key = (layer, h.dtype, h.device)
            if key not in self._cast:  # the same cast as steer()'s: row k adds its vector
                d = self.rows[layer].to(device=h.device, dtype=h.dtype)
                self._cast[key] = d if self._index is None else d[self._index.to(h.device)]
            d = self._cast[key]
            if d.shape[0] != h.shape[0]:
                raise VectorMismatchError(f"{d.shape[0]} row vectors for a batch of "
                                          f"{h.shape[0]} rows.")
            return h + 1.0 * d[:, None, :]

        return edit

    def __enter__(self) -> RowSteering:
        return self

    def select(self, index: torch.Tensor) -> None:
        """From now on the batch holds the rows at ``index`` (positions among the rows this
        steering was made with), in that order."""
        self._index = index.cpu()
        self._cast = {}


#: Hong et al.'s intervention: the direction applied at every layer's block input, attention
#: output and MLP output (their code, used verbatim by the seed replication)
HONG_SITES: tuple[Site, ...] = ("resid_pre", "attn_out", "mlp_out")


def _resolve(model: Model, vector: SteeringVector | torch.Tensor,
             layers: Sequence[int] | int | None, strict_model: bool,
             from_layer: int | None, coeff: float, scale: Scale,
             mode: Mode) -> dict[int, torch.Tensor]:
    """Layer -> the direction its edit uses: for ``add``, the vector to add with its
    coefficient and scale applied (:meth:`SteeringVector.added`); else the direction."""
    if isinstance(vector, SteeringVector):
        vector.check_compatible(model, strict_model=strict_model)
        if from_layer is not None:
            if from_layer not in vector.vectors:
                raise VectorMismatchError(f"from_layer={from_layer} is not in the vector; its "
                                          f"layers are {vector.layers}.")
            src = dict.fromkeys(check_layers(model, layers), from_layer)
        else:
            src = {l: l for l in check_layers(model, layers if layers is not None
                                              else vector.layers)}
        return {l: vector.added(s, coeff, scale)[0] if mode == "add" else vector[s]
                for l, s in src.items()}
    if not isinstance(vector, torch.Tensor):
        raise TypeError(f"vector must be a SteeringVector or a tensor, got {type(vector)}.")
    if layers is None and from_layer is None:
        raise OptionError("A raw tensor vector needs layers=...: which layer(s) to steer.")
    use = check_layers(model, layers)
    if vector.ndim != 1 or vector.shape[0] != model.d_model:
        raise VectorMismatchError(f"Vector has shape {tuple(vector.shape)}, but {model.name} "
                                  f"needs ({model.d_model},).")
    if not torch.isfinite(vector).all():
        raise InvalidVectorError("The vector holds NaN or inf values.")
    if mode == "add" and scale == "norm":
        raise OptionError("scale='norm' needs reference norms, which a raw tensor lacks: wrap "
                          "it in a SteeringVector with ref_norms, or use scale='raw'/'unit'.")
    d = unit(vector) if scale == "unit" else vector
    return {l: d * coeff if mode == "add" else vector for l in use}


def _sites(vector: SteeringVector | torch.Tensor, site: Site | Sequence[str] | None,
           any_site: bool) -> tuple[str, ...]:
    """The sites to steer: the vector's own unless ``site`` says otherwise; a SteeringVector
    made at one site is refused at another unless ``any_site=True``."""
    own = vector.site if isinstance(vector, SteeringVector) else SITE
    sites = (own,) if site is None else (site,) if isinstance(site, str) else tuple(site)
    if not sites:
        raise OptionError("site= is empty: name at least one site.")
    if "z" in sites:
        raise OptionError("Steering vectors are (d_model,) directions and z is per head: to edit "
                          "z, register an edit function with model.backend(...).add_edit("
                          "layer, fn, site='z').")
    other = [s for s in sites if s != own]
    if isinstance(vector, SteeringVector) and other and not any_site:
        raise VectorMismatchError(
            f"This vector was made at site {own!r}, but steering asks for {other}: directions "
            "of one site need not mean anything at another. Pass any_site=True to steer there "
            "anyway.")
    return sites


def add_steering(model: Model, vector: SteeringVector | torch.Tensor,
                 layers: Sequence[int] | int | None = None, coeff: float = 1.0,
                 positions: When = "all", mode: Mode = "add", backend: BackendName = "hf",
                 strict_model: bool = True, site: Site | Sequence[str] | None = None,
                 from_layer: int | None = None, any_site: bool = False,
                 scale: Scale = APPLY_SCALE, receipt: Level | Receipt = "counts"
                 ) -> SteeringHandle:
    """Register steering hooks and return their handle (call ``.remove()`` when done).

    Args:
        model: the model to steer.
        vector: a :class:`SteeringVector` (its layers are used unless ``layers`` is given) or a
            (d_model,) tensor (then ``layers`` is required).
        layers: layer(s) whose ``site`` is changed (with ``from_layer``: default every layer).
        coeff: ``add``: h + coeff * v, in ``scale`` units. ``project``: h + coeff * (h . v̂) v̂
            (Hong et al.'s projection scaling). ``ablate``: h - (h . v̂) v̂ (coeff unused).
        positions: ``all`` tokens; ``prompt`` only (the forward that reads the prompt);
            ``generated`` only (the decoding steps of a generation). The backend tells them
            apart by counting the forwards of its own ``generate``, not by a library keyword.
        mode: ``add``, ``project`` or ``ablate``.
        backend: ``hf``, ``tlens`` or ``nnsight``. Forwards on another backend of the same
            model are refused while this steering is on.
        strict_model: refuse vectors made for another model (width is always checked).
        site: where to steer (one site or several, :data:`~steerlab.backends.base.SITES`
            but ``z``); default: the vector's own site (``resid_post`` for a raw tensor).
        from_layer: take the direction from this layer of the vector and apply it at every
            layer in ``layers`` (Hong et al.: ``from_layer=L``, ``site=HONG_SITES``,
            ``mode="project"``; see :func:`hong_projection`).
        any_site: allow steering a vector at a site other than the one it was made at.
        scale: units of an ``add`` coefficient (:meth:`SteeringVector.added`): ``raw`` (the
            vector as it is, the default), ``unit`` (its unit direction) or ``norm`` (the unit
            direction times the layer's typical residual norm: ``coeff=0.2`` is a fifth of the
            residual stream's size, comparable across layers and models). ``project`` and
            ``ablate`` are dimensionless and take only ``raw``.
        receipt: what the handle's :attr:`~SteeringHandle.receipt` records
            (:mod:`steerlab.receipts`): ``counts`` (forwards, rows, positions; the guards
            against an edit that did not run, ran in the wrong phase or ran twice),
            ``detail`` (also each edit's realised size next to the requested one, checked),
            ``off``, or a :class:`~steerlab.receipts.Receipt` to add this steering's record to.
    """
    check("steering mode", mode, MODES)
    check("scale", scale, SCALES)
    if mode != "add" and scale != "raw":
        raise OptionError(f"scale={scale!r} applies to mode='add' only: {mode} uses the unit "
                          "direction and a dimensionless coeff. Leave scale='raw'.")
    if positions not in POSITIONS:
        raise OptionError(f"Unsupported position mode {positions!r}: use one of {POSITIONS}.")
    if not isinstance(coeff, int | float) or not math.isfinite(coeff):
        raise OptionError(f"coeff must be a finite number, got {coeff!r}.")
    sites = _sites(vector, site, any_site)
    per_layer = _resolve(model, vector, layers, strict_model, from_layer, float(coeff), scale,
                         mode)
    be = model.backend(backend)
    for s in sites:
        check_site(s, be.sites, model.name)
    strength = 1.0 if mode == "add" else float(coeff)
    rec = receipt_for("steered", receipt)
    return SteeringHandle([be.add_edits([
        (layer, _make_steer_fn(v.float(), strength, mode),
         {"when": positions, "site": s, "receipt": rec,
          **(expected(v.float(), strength, mode) if rec is not None else {})})
        for layer, v in per_layer.items() for s in sites])], rec)


@contextmanager
def steer(model: Model, vector: SteeringVector | torch.Tensor,
          layers: Sequence[int] | int | None = None, coeff: float = 1.0,
          positions: When = "all", mode: Mode = "add", backend: BackendName = "hf",
          strict_model: bool = True, site: Site | Sequence[str] | None = None,
          from_layer: int | None = None, any_site: bool = False, scale: Scale = APPLY_SCALE,
          receipt: Level | Receipt = "counts") -> Iterator[SteeringHandle]:
    """Context manager form of :func:`add_steering`; hooks come off when the block exits.

    Example:
        >>> with steer(model, vec, layers=12, coeff=4.0) as handle:
        ...     print(generate(model, ["What is 17 + 25?"], chat=True))
        >>> print(handle.receipt)  # what the steering did, forward by forward
    """
    handle = add_steering(model, vector, layers, coeff, positions, mode, backend, strict_model,
                          site, from_layer, any_site, scale, receipt)
    try:
        yield handle
    finally:
        handle.remove()


def hong_projection(model: Model, vector: SteeringVector | torch.Tensor, from_layer: int,
                    coeff: float, layers: Sequence[int] | int | None = None,
                    sites: Sequence[str] = HONG_SITES, backend: BackendName = "hf",
                    strict_model: bool = True, receipt: Level | Receipt = "counts"
                    ) -> SteeringHandle:
    """Hong et al.'s intervention exactly: with r̂ the unit direction of ``vector`` at
    ``from_layer``, ``h <- h + coeff (h . r̂) r̂`` at each of ``sites`` (default: the block
    input, the attention output and the MLP output) of every layer in ``layers`` (default:
    all), at every position including generated tokens. Their ``coeff`` is about
    ±0.05..0.15. Returns the handle (use it as a context manager)."""
    return add_steering(model, vector, layers, coeff, "all", "project", backend, strict_model,
                        tuple(sites), from_layer, any_site=True, receipt=receipt)
