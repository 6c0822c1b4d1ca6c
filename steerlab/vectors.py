"""``SteeringVector``: per-layer directions with provenance; difference of means and controls.

:func:`extract_vector` is the one recipe (two prompt sets -> cache -> difference of means), with
the reference residual norms that give a coefficient its scale (:meth:`SteeringVector.added`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerlab import __version__, _io
from steerlab.activations import Activations
from steerlab.backends.base import SITES
from steerlab.errors import (
    EmptyInputError,
    InvalidVectorError,
    LayerError,
    OptionError,
    VectorMismatchError,
)
from steerlab.options import (
    APPLY_SCALE,
    COMPARE_SCALE,
    SCALES,
    Scale,
    Site,
    check,
)
from steerlab.predictors import predictors

if TYPE_CHECKING:
    from steerlab.models import Model

SITE: Site = "resid_post"  # the residual stream after a decoder block
#: sites a (d_model,) direction can live at (z is per head)
STEERABLE_SITES = tuple(s for s in SITES if s != "z")


@dataclass(frozen=True)
class SteeringVector:
    """One direction per layer, plus where it came from.

    Attributes:
        vectors: layer -> (d_model,) float32 direction.
        model_id: hub id of the model it was made for.
        d_model: residual width.
        site: where it is added (``resid_post``: after the decoder block).
        method: how it was made (``diff_means``, ``random``, ``shuffled``, ``learned``...).
        prompt_hash: hash of the prompt sets it was extracted from.
        seed: seed of any randomness involved, else None.
        meta: free-form provenance (counts, reduction, training metadata...).
        ref_norms: layer -> typical norm of the activations the vector was extracted from (the
            mean over both prompt sets): the unit of ``scale="norm"`` coefficients. Empty for
            vectors not extracted from prompts (learned, imported); attach them with
            :meth:`with_ref_norms` and :func:`reference_norms`.
    """

    vectors: dict[int, torch.Tensor]
    model_id: str
    d_model: int
    site: Site = SITE
    method: str = "diff_means"
    prompt_hash: str = ""
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    version: str = __version__
    ref_norms: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise InvalidVectorError("A steering vector needs at least one layer.")
        if self.site not in STEERABLE_SITES:
            raise InvalidVectorError(f"Unknown vector site {self.site!r}: a steering vector "
                                     f"lives at one of {', '.join(STEERABLE_SITES)}.")
        for layer, v in self.vectors.items():
            if not isinstance(layer, int) or layer < 0:
                raise LayerError(f"Layer keys must be non-negative ints, got {layer!r}.")
            if v.ndim != 1 or v.shape[0] != self.d_model:
                raise VectorMismatchError(
                    f"Layer {layer}: vector has shape {tuple(v.shape)}, expected "
                    f"({self.d_model},) for d_model={self.d_model}.")
            if not torch.isfinite(v).all():
                raise InvalidVectorError(
                    f"Layer {layer}: vector holds NaN or inf values; recompute it (e.g. from "
                    "non-empty prompt sets) or clean it with torch.nan_to_num.")

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def __getitem__(self, layer: int) -> torch.Tensor:
        if layer not in self.vectors:
            raise LayerError(f"This vector has no layer {layer}; it has layers {self.layers}.")
        return self.vectors[layer]

    def norms(self) -> dict[int, float]:
        return {l: float(v.norm()) for l, v in sorted(self.vectors.items())}

    def with_ref_norms(self, norms: dict[int, float]) -> SteeringVector:
        """A copy with ``norms`` (layer -> typical activation norm) as its reference norms."""
        return replace(self, ref_norms={int(l): float(n) for l, n in norms.items()})

    def added(self, layer: int, coeff: float, scale: Scale = APPLY_SCALE
              ) -> tuple[torch.Tensor, float]:
        """The (d_model,) vector that steering adds at ``layer`` for ``coeff`` in ``scale``
        units, and its norm: ``raw`` coeff x the vector; ``unit`` coeff x its unit direction;
        ``norm`` coeff x the unit direction x the layer's reference norm, so ``coeff=0.2``
        means a fifth of the residual stream's typical size at any layer of any model. Every
        coefficient in steerlab (steering, sweeps, the CLI, widgets, notebooks, cost) goes
        through here."""
        check("scale", scale, SCALES)
        v = self[layer]
        if scale == "raw":
            return v * coeff, float(v.norm()) * abs(coeff)
        unit = v / v.norm()
        if scale == "unit":
            return unit * coeff, abs(coeff)
        if layer not in self.ref_norms:
            raise OptionError(
                f"scale='norm' needs the layer's reference norm, but this {self.method} vector "
                f"has none for layer {layer} (it has {sorted(self.ref_norms) or 'none'}). "
                "Measure them with steerlab.extraction.reference_norms(model, prompts, layers) and "
                "attach them with vector.with_ref_norms(...), or use scale='unit' or 'raw'.")
        factor = coeff * self.ref_norms[layer]
        return unit * factor, abs(factor)

    def at_scale(self, coeff: float, scale: Scale = COMPARE_SCALE) -> SteeringVector:
        """A copy holding, at every layer, what steering at ``coeff`` in ``scale`` units adds
        there (:meth:`added`), to steer or compare with coefficient 1."""
        return replace(self, vectors={l: self.added(l, coeff, scale)[0] for l in self.layers},
                       meta={**self.meta, "coeff": coeff, "scale": scale})

    def normalized(self) -> SteeringVector:
        """A copy with every layer's vector scaled to unit norm."""
        vecs = {l: unit(v) for l, v in self.vectors.items()}
        return replace(self, vectors=vecs, meta={**self.meta, "normalized": True})

    def scaled(self, factor: float) -> SteeringVector:
        return replace(self, vectors={l: v * factor for l, v in self.vectors.items()})

    def only(self, layers: list[int] | int) -> SteeringVector:
        """A copy restricted to ``layers``."""
        layers = [layers] if isinstance(layers, int) else layers
        return replace(self, vectors={l: self[l] for l in layers})

    def stack(self) -> torch.Tensor:
        """(n_layers, d_model) in :attr:`layers` order."""
        return torch.stack([self.vectors[l] for l in self.layers])

    def check_compatible(self, model: Model, strict_model: bool = True) -> None:
        """Raise a clear error unless this vector fits ``model`` (same model, width, layers)."""
        if self.d_model != model.d_model:
            raise VectorMismatchError(
                f"Vector width {self.d_model} does not match {model.name}'s d_model "
                f"{model.d_model}: it was made for {self.model_id}. Extract a vector on this "
                "model instead (steerlab extract --model ...).")
        if strict_model and self.model_id != model.hf_id:
            raise VectorMismatchError(
                f"Vector was made for {self.model_id!r}, but the model is {model.hf_id!r}. "
                "Extract a vector on this model, or pass strict_model=False if you really "
                "mean to transfer it.")
        bad = [l for l in self.layers if l >= model.n_layers]
        if bad:
            raise LayerError(f"Vector layers {bad} out of range: {model.name} has "
                             f"{model.n_layers} layers (0..{model.n_layers - 1}).")

    def save(self, path: str | Path) -> Path:
        """Write a safetensors file (one tensor per layer) with JSON provenance; no pickle."""
        meta = {"kind": "steering_vector", "model_id": self.model_id, "d_model": self.d_model,
                "layers": self.layers, "site": self.site, "method": self.method,
                "prompt_hash": self.prompt_hash, "seed": self.seed, "meta": self.meta,
                "steerlab_version": self.version,
                "ref_norms": {str(l): n for l, n in sorted(self.ref_norms.items())}}
        tensors = {f"layer.{l}": v.float() for l, v in self.vectors.items()}
        return _io.save_tensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path, model: Model | None = None) -> SteeringVector:
        """Read a vector file; with ``model``, also check that it fits that model."""
        tensors, meta = _io.load_tensors(path, "steering_vector")
        try:
            vectors = {int(k.split(".")[1]): v for k, v in tensors.items()}
            expected = set(meta["layers"])
            d_model = int(meta["d_model"])
        except (KeyError, IndexError, ValueError) as err:
            raise InvalidVectorError(f"{path}: malformed steering-vector file ({err}).") from err
        if set(vectors) != expected:
            raise InvalidVectorError(f"{path}: metadata lists layers {sorted(expected)} but the "
                                     f"file holds {sorted(vectors)}; the file is corrupt.")
        vec = cls(vectors, meta["model_id"], d_model, meta["site"], meta["method"],
                  meta["prompt_hash"], meta["seed"], meta.get("meta", {}),
                  meta.get("steerlab_version", "?"),
                  {int(l): float(n) for l, n in meta.get("ref_norms", {}).items()})
        if model is not None:
            vec.check_compatible(model)
        return vec

    def to_gguf(self, path: str | Path, coeff: float = 1.0, scale: Scale = APPLY_SCALE, *,
                layers: list[int] | None = None) -> Path:
        """Write a llama.cpp GGUF control vector (:func:`steerlab.interop.to_gguf`)."""
        from steerlab.interop import to_gguf

        return to_gguf(self, path, coeff, scale, layers=layers)

    @classmethod
    def from_gguf(cls, path: str | Path, model: Model | None = None) -> SteeringVector:
        """Read a GGUF control vector (:func:`steerlab.interop.from_gguf`)."""
        from steerlab.interop import from_gguf

        return from_gguf(path, model)


def _hash_sets(*sets: Activations) -> str:
    h = hashlib.sha256()
    for s in sets:
        h.update("|".join(s.prompt_hashes).encode())
        h.update(b"#")
    return h.hexdigest()[:16]


def _check_pair(pos: Activations, neg: Activations) -> None:
    if pos.n_prompts == 0 or neg.n_prompts == 0:
        raise EmptyInputError("Difference of means needs at least one prompt in each set.")
    if pos.model_id != neg.model_id:
        raise VectorMismatchError(f"The two sets come from different models: "
                                  f"{pos.model_id} vs {neg.model_id}.")
    if pos.layers != neg.layers:
        raise LayerError(f"The two sets cached different layers: {pos.layers} vs {neg.layers}.")
    if pos.reduction != neg.reduction:
        raise VectorMismatchError(f"The two sets used different reductions: "
                                  f"{pos.reduction} vs {neg.reduction}.")
    if pos.reduction == "none" or pos.site == "z":
        raise VectorMismatchError(
            f"Difference of means needs one (d_model,) row per prompt; these are "
            f"reduction={pos.reduction!r} at site {pos.site!r}. Cache with reduction 'last' or "
            "'mean' at a residual, attention-output or MLP-output site.")
    if pos.site != neg.site:
        raise VectorMismatchError(f"The two sets were cached at different sites: "
                                  f"{pos.site} vs {neg.site}.")


def _ref_norms(pos: Activations, neg: Activations) -> dict[int, float]:
    """Per layer, the mean norm of the activations of both sets (the ``norm`` scale's unit)."""
    return {l: float((pos.at(l).norm(dim=-1).sum() + neg.at(l).norm(dim=-1).sum())
                     / (pos.n_prompts + neg.n_prompts)) for l in pos.layers}


def diff_of_means(pos: Activations, neg: Activations, normalize: bool = False,
                  method: str = "diff_means") -> SteeringVector:
    """Per layer, mean(pos) - mean(neg): e.g. reasoning minus memorisation.

    Args:
        pos: activations of the set the vector points towards.
        neg: activations of the set it points away from.
        normalize: scale each layer's vector to unit norm.

    Returns:
        :class:`SteeringVector` over the cached layers; ``meta["predictors"]`` holds the
        training sets' predictors of steerability per layer (:mod:`steerlab.predictors`).
    """
    _check_pair(pos, neg)
    diff = pos.acts.mean(1) - neg.acts.mean(1)  # (n_layers, d_model)
    meta: dict[str, Any] = {"n_pos": pos.n_prompts, "n_neg": neg.n_prompts,
                            "reduction": pos.reduction, "chat": pos.chat, "normalized": False}
    if pos.acts.ndim == 3:  # one vector per prompt: the training sets' predictors per layer
        meta["predictors"] = {str(l): predictors(pos.acts[i], neg.acts[i])
                              for i, l in enumerate(pos.layers)}
    vec = SteeringVector(
        {l: diff[i].clone() for i, l in enumerate(pos.layers)}, pos.model_id, pos.d_model,
        site=pos.site, method=method, prompt_hash=_hash_sets(pos, neg), meta=meta,
        ref_norms=_ref_norms(pos, neg))
    return vec.normalized() if normalize else vec


def shuffled_diff_of_means(pos: Activations, neg: Activations, seed: int = 0,
                           normalize: bool = False) -> SteeringVector:
    """Control: difference of means after randomly permuting the pos/neg labels (same sizes)."""
    _check_pair(pos, neg)
    both = torch.cat([pos.acts, neg.acts], dim=1)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(both.shape[1], generator=gen)
    a, b = perm[:pos.n_prompts], perm[pos.n_prompts:]
    diff = both[:, a].mean(1) - both[:, b].mean(1)
    vec = SteeringVector({l: diff[i].clone() for i, l in enumerate(pos.layers)}, pos.model_id,
                         pos.d_model, site=pos.site, method="shuffled",
                         prompt_hash=_hash_sets(pos, neg),
                         seed=seed, meta={"n_pos": pos.n_prompts, "n_neg": neg.n_prompts,
                                          "reduction": pos.reduction, "normalized": False},
                         ref_norms=_ref_norms(pos, neg))
    return vec.normalized() if normalize else vec


def _layer_generator(seed: int, layer: int) -> torch.Generator:
    """A generator seeded by ``(seed, layer)`` alone, whatever other layers are drawn."""
    digest = hashlib.sha256(f"random_like:{seed}:{layer}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def random_like(vector: SteeringVector, seed: int = 0) -> SteeringVector:
    """Control: a random Gaussian direction per layer with the same norm as ``vector``'s.

    Each layer's direction is drawn from a generator seeded by ``(seed, layer)``, so a layer
    gets the same direction whichever other layers ``vector`` has.
    """
    vecs = {}
    for l in vector.layers:
        r = torch.randn(vector.d_model, generator=_layer_generator(seed, l))
        vecs[l] = r / r.norm() * vector[l].norm()
    return replace(vector, vectors=vecs, method="random", seed=seed,
                   meta={**vector.meta, "matched_to": vector.method})


def match_norms(vector: SteeringVector, reference: SteeringVector) -> SteeringVector:
    """A copy of ``vector`` with each layer rescaled to ``reference``'s norm at that layer
    (a control then differs from the vector it controls for in direction only)."""
    missing = [l for l in vector.layers if l not in reference.vectors]
    if missing:
        raise LayerError(f"Cannot match norms: the reference has no layer(s) {missing}.")
    vecs = {l: unit(v) * reference[l].norm()
            for l, v in vector.vectors.items()}
    return replace(vector, vectors=vecs, meta={**vector.meta, "matched_to": reference.method})


#: the least norm a direction is divided by: a zero vector's unit direction stays zero
EPS = 1e-12


def unit(v: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``v`` over its norm (the whole tensor's, or along ``dim`` kept for broadcasting)."""
    norm = v.norm() if dim is None else v.norm(dim=dim, keepdim=True)
    return v / norm.clamp_min(EPS)


def cosines(rows: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each vector along the last axis of ``rows`` with ``direction``
    (0 where either is zero)."""
    return (rows @ direction) / (rows.norm(dim=-1) * direction.norm()).clamp_min(EPS)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two 1-D tensors (NaN when either is zero)."""
    denom = float(a.norm() * b.norm())
    return float(a.float() @ b.float()) / denom if denom > 0 else math.nan
