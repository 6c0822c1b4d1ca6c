"""The peers' steering vectors in and out of steerlab: repeng's ``ControlVector``,
steering-vectors' ``SteeringVector``, IBM activation-steering's ``.svec`` files and
EasySteer's GGUF vectors.

* repeng 0.4.0: ``ControlModel`` swaps ``model.layers[k]`` for a ``ControlModule`` that adds
  ``coeff * directions[k]`` to the block's output (``control.py``); ``ControlVector.train``
  reads ``hidden_states[k + 1]``, the output of block k (``extract.py``,
  ``batched_get_hiddens``): steerlab's ``resid_post`` layer k.
* steering-vectors 0.12: ``layer_type="decoder_block"`` hooks the output of the k-th module the
  guessed ``model.layers.{num}`` template matches and adds ``multiplier * layer_activations[k]``
  (``steering_vector.py``); negative keys index from the end, as Python lists do:
  ``resid_post`` layer k.
* IBM activation-steering: ``SteeringVector.save`` writes JSON, ``{"model_type": ...,
  "directions": {k: [floats]}, "explained_variances": {k: float}}``, to a ``.svec`` file
  (``steering_vector.py``); ``MalleableModel.steer`` wraps ``model.layers[k]`` in a
  ``LeashLayer`` that changes the hidden states *before* calling the layer
  (``leash_layer.py``): block k's input, steerlab's ``resid_pre`` layer k. Its default
  operator adds ``behavior_vector_strength * directions[k]``; with its default
  ``use_ooi_preventive_normalization`` it then rescales tokens whose norm grew, and it edits
  only the batch's first row (``hidden_states[0]``): ``steer(model, vec, coeff=s)`` equals it
  for one prompt with that normalization off.
* EasySteer (``StatisticalControlVector.export_gguf``, ``easysteer/extraction/result.py``):
  a GGUF control vector (``general.architecture = "controlvector"``, ``direction.{k}`` F32)
  whose ``controlvector.easysteer`` key holds JSON ``{"version": 1, "component": ...,
  "metadata": ...}`` and ``controlvector.method`` the extraction method. Its ``direct``
  algorithm (``vllm/steer_vectors/layers.py``, ``DecoderLayerWithSteerVector``) adds
  ``scale * direction[k]`` to decoder layer k's complete output (vLLM's ``hidden_states +
  residual``): steerlab's ``resid_post`` layer k, block 0 included. A ``component`` of
  ``attention_heads`` (added inside attention) or ``router_logits`` is not a block output and
  is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab import __version__, _io
from steerlab.errors import InvalidVectorError, LayerError, VectorMismatchError
from steerlab.interop import ARCH, IMPORTED, _check_fits, _exportable, _read
from steerlab.vectors import SITE, SteeringVector

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["from_easysteer", "from_repeng", "from_steering_vectors", "from_svec",
           "to_easysteer", "to_repeng", "to_steering_vectors", "to_svec"]

#: the GGUF key that holds EasySteer's own metadata (JSON) and the layout version it reads
EASYSTEER_KEY, EASYSTEER_VERSION = f"{ARCH}.easysteer", 1


def _by_block(source: str, directions: Any, model: Model, made_for: str
              ) -> dict[int, torch.Tensor]:
    """Layer -> (d_model,) float32 copy, with negative keys counted from the end (both peers
    index their block list as a Python list does), checked against ``model``."""
    if not isinstance(directions, dict) or not directions:
        raise InvalidVectorError(f"The {source} vector holds no directions.")
    out: dict[int, torch.Tensor] = {}
    for key, value in directions.items():
        if not isinstance(key, int | np.integer) or isinstance(key, bool):
            raise LayerError(f"{source} layer keys must be ints, got {key!r}.")
        layer = int(key) + model.n_layers if key < 0 else int(key)
        v = (value.detach().float().cpu().clone() if isinstance(value, torch.Tensor)
             else torch.from_numpy(np.array(value, dtype=np.float32)))
        if v.ndim != 1:
            raise VectorMismatchError(f"{source} layer {key}: expected a (d_model,) direction, "
                                      f"got shape {tuple(v.shape)}.")
        if layer in out:
            raise LayerError(f"{source} layers {key} and {layer} are the same block of "
                             f"{model.name}; keep one.")
        out[layer] = v
    _check_fits(source, out, next(iter(out.values())).shape[0], model, made_for)
    return dict(sorted(out.items()))


def from_repeng(control_vector: Any, model: Model) -> SteeringVector:
    """A repeng ``ControlVector`` as a steerlab vector for ``model``: ``directions[k]`` is what
    ``ControlModel`` adds to block k's output at ``coeff=1``, so it becomes ``resid_post`` layer
    k unchanged (sign included); ``steer(model, vec, coeff=c)`` equals
    ``ControlModel(...).set_control(control_vector, c)``."""
    directions: Any = getattr(control_vector, "directions", None)
    kind = str(getattr(control_vector, "model_type", ""))
    vectors = _by_block("repeng", directions, model, kind)
    meta: dict[str, Any] = {"source": "repeng", "model_type": kind}
    if any(k < 0 for k in directions):
        meta["source_layers"] = [int(k) for k in directions]
    return SteeringVector(vectors, model.hf_id, model.d_model, SITE, IMPORTED, meta=meta,
                          version=__version__)


def _repeng() -> Any:
    import numpy

    # repeng 0.4.0 names np.float_ (gone in numpy 2) in one annotation, which runs at import:
    # alias it so the module imports; nothing repeng runs uses it (see bench/peers.py).
    if not hasattr(numpy, "float_"):
        numpy.float_ = numpy.float64  # type: ignore[attr-defined]
    import repeng

    return repeng


def to_repeng(vector: SteeringVector, model_type: str | None = None) -> Any:
    """``vector`` as a repeng ``ControlVector`` (``directions[k]`` = layer k, float32 numpy);
    ``model_type`` defaults to the one a repeng import recorded, else the vector's model id.
    A vector imported with :func:`from_repeng` comes back equal to the original."""
    _exportable(vector, "repeng's ControlModel")
    repeng = _repeng()
    kind = model_type or vector.meta.get("model_type") or vector.model_id
    dirs = {l: vector[l].detach().float().cpu().numpy().copy() for l in vector.layers}
    return repeng.ControlVector(model_type=kind, directions=dirs)


def from_steering_vectors(steering_vector: Any, model: Model) -> SteeringVector:
    """A steering-vectors ``SteeringVector`` as a steerlab vector for ``model``: with
    ``layer_type="decoder_block"``, ``layer_activations[k]`` is added to block k's output
    (``multiplier`` 1), so it becomes ``resid_post`` layer k unchanged; ``steer(model, vec,
    coeff=m)`` equals ``steering_vector.apply(model, multiplier=m)``. Other layer types (an
    MLP's or attention's output, a norm's) are refused rather than guessed."""
    kind = getattr(steering_vector, "layer_type", None)
    if kind != "decoder_block":
        raise VectorMismatchError(
            f"steering-vectors layer_type {kind!r} is not supported: only 'decoder_block' "
            f"(a block's output, steerlab's {SITE!r}) maps onto a steerlab site for sure. "
            "Train it with layer_type='decoder_block'.")
    acts: Any = getattr(steering_vector, "layer_activations", None)
    vectors = _by_block("steering-vectors", acts, model, "")
    meta: dict[str, Any] = {"source": "steering-vectors", "layer_type": kind}
    if any(k < 0 for k in acts):
        meta["source_layers"] = [int(k) for k in acts]
    return SteeringVector(vectors, model.hf_id, model.d_model, SITE, IMPORTED, meta=meta,
                          version=__version__)


def to_steering_vectors(vector: SteeringVector) -> Any:
    """``vector`` as a steering-vectors ``SteeringVector`` (``decoder_block`` layers)."""
    import steering_vectors

    _exportable(vector, "steering-vectors' decoder_block layers")
    return steering_vectors.SteeringVector(
        {l: vector[l].detach().float().clone() for l in vector.layers}, "decoder_block")


def from_svec(path: str | Path, model: Model) -> SteeringVector:
    """An IBM activation-steering ``.svec`` file as a steerlab vector for ``model``:
    ``directions[k]`` becomes ``resid_pre`` layer k (see the module doc); its model type
    and explained variances travel in ``meta``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        dirs = {int(k): v for k, v in data["directions"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InvalidVectorError(f"{path} is not an activation-steering .svec file (JSON with "
                                 f"'directions' by layer): {e}") from None
    kind = str(data.get("model_type", ""))
    vectors = _by_block(f"{path.name} (.svec)", dirs, model, kind)
    if any(not torch.isfinite(v).all() for v in vectors.values()):
        raise InvalidVectorError(f"{path} holds NaN or inf values.")
    meta: dict[str, Any] = {"source": "activation-steering", "model_type": kind,
                            "explained_variances": {
                                str(k): float(v) for k, v in
                                data.get("explained_variances", {}).items()}}
    return SteeringVector(vectors, model.hf_id, model.d_model, "resid_pre", IMPORTED,
                          meta=meta, version=__version__)


def to_svec(vector: SteeringVector, path: str | Path, model_type: str | None = None) -> Path:
    """``vector`` (made at ``resid_pre``, where activation-steering adds it) as a ``.svec``
    file that ``activation_steering.SteeringVector.load`` reads; written atomically."""
    if vector.site != "resid_pre":
        raise VectorMismatchError(
            f"activation-steering adds its directions to a block's input (resid_pre); this "
            f"vector was made at {vector.site!r}. A resid_post vector of layer k is the "
            "resid_pre of layer k+1: make or import it at resid_pre.")
    path = Path(path)
    kinds = vector.meta.get("explained_variances", {})
    data = {"model_type": model_type or vector.meta.get("model_type") or vector.model_id,
            "directions": {str(l): vector[l].detach().float().cpu().tolist()
                           for l in vector.layers},
            "explained_variances": {str(l): kinds.get(str(l)) for l in vector.layers}}
    return _io.write_text(path, json.dumps(data))


def from_easysteer(path: str | Path, model: Model) -> SteeringVector:
    """An EasySteer GGUF vector (``StatisticalControlVector.export_gguf``) as a steerlab vector
    for ``model``: ``direction.k`` becomes ``resid_post`` layer k unchanged, so ``steer(model,
    vec, coeff=s)`` equals EasySteer's ``direct`` algorithm at ``scale=s`` on every position
    (its ``apply`` position choices are run-time options, as steerlab's ``positions`` are).
    EasySteer's method, model hint and metadata travel in ``meta``; a vector of another
    ``component`` than ``hidden_states`` is refused. A file without EasySteer's key (repeng's,
    llama.cpp's) imports the same way; :func:`steerlab.interop.from_gguf` reads those too."""
    path = Path(path)
    fields, directions = _read(path)
    native, component = fields.get(EASYSTEER_KEY), None
    if native is not None:
        try:
            data = json.loads(native)
            version, component = data["version"], data.get("component")
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidVectorError(f"{path}: {EASYSTEER_KEY} is not EasySteer's metadata "
                                     f"JSON ({e!r}).") from None
        if version != EASYSTEER_VERSION:
            raise InvalidVectorError(f"{path}: EasySteer metadata version {version!r}; this "
                                     f"steerlab reads version {EASYSTEER_VERSION}.")
    if component not in (None, "hidden_states"):
        raise VectorMismatchError(
            f"{path} holds EasySteer {component!r} directions; only 'hidden_states' (a decoder "
            f"layer's output, steerlab's {SITE!r}) is a site steerlab steers. Extract the "
            "vector from the hidden states to use it here.")
    hint = str(fields.get(f"{ARCH}.model_hint", ""))
    vectors = _by_block(f"{path.name} (EasySteer)", dict(directions), model, hint)
    if any(not torch.isfinite(v).all() for v in vectors.values()):
        raise InvalidVectorError(f"{path} holds NaN or inf values.")
    meta: dict[str, Any] = {"source": "easysteer", "file": str(path), "model_hint": hint,
                            "easysteer_method": str(fields.get(f"{ARCH}.method", "unknown")),
                            "component": component}
    if native is not None:
        meta["easysteer"] = native  # their JSON as written, so a round trip keeps it whole
    return SteeringVector(vectors, model.hf_id, model.d_model, SITE, IMPORTED, meta=meta,
                          version=__version__)


def to_easysteer(vector: SteeringVector, path: str | Path, model_type: str | None = None,
                 method: str | None = None) -> Path:
    """``vector`` (``resid_post``) as the GGUF file EasySteer's
    ``StatisticalControlVector.import_gguf`` reads, with ``component = "hidden_states"`` so its
    ``to_spec`` needs no target; the directions as they are (EasySteer's ``scale`` is chosen at
    run time), block 0 included. Written atomically. ``model_type`` and ``method`` default to
    what an EasySteer import recorded, else the vector's model id and method."""
    import gguf

    _exportable(vector, "EasySteer's direct algorithm")
    native = vector.meta.get("easysteer") or json.dumps(
        {"version": EASYSTEER_VERSION, "component": "hidden_states", "metadata": None},
        separators=(",", ":"))
    path = Path(path)
    with _io.atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint",
                          model_type or vector.meta.get("model_hint") or vector.model_id)
        writer.add_string(f"{ARCH}.method",
                          method or vector.meta.get("easysteer_method") or vector.method)
        writer.add_uint32(f"{ARCH}.layer_count", len(vector.layers))
        writer.add_string(EASYSTEER_KEY, native)
        for layer in vector.layers:
            writer.add_tensor(f"direction.{layer}",
                              vector[layer].detach().float().cpu().numpy().copy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
