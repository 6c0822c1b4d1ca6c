"""Vectors that travel as GGUF control vectors (llama.cpp's, repeng's), out and in; the peers'
own vector objects and files are :mod:`steerlab.peers`.

GGUF indexes a direction by the 0-based decoder block whose **output** it is added to, at
every position: steerlab's ``resid_post`` layer k.

* llama.cpp (``common_control_vector_load_one`` in ``common/common.cpp``): 1-D F32 tensors
  ``direction.{k}`` of length n_embd; ``direction.k`` is added after block k's last residual
  add (``build_cvec(cur, il)``). ``k = 0`` is rejected, any tensor of another name or type fails
  the load, and the strength comes from the command line (``--control-vector-scaled FILE:S``).
  The metadata (``general.architecture = "controlvector"``, ``controlvector.model_hint``,
  ``controlvector.layer_count``) is written by convention and not read.
* repeng 0.4.0's ``export_gguf`` writes ``directions[k]`` (added to block k's output) as
  ``direction.{k}``.

Example:
    >>> vec.to_gguf("reasoning.gguf", coeff=4.0)   # llama-cli --control-vector reasoning.gguf
    >>> SteeringVector.from_gguf("from_repeng.gguf", model)
"""

from __future__ import annotations

import json
import math
import shlex
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from steerlab import _io
from steerlab.errors import InvalidVectorError, LayerError, OptionError, VectorMismatchError
from steerlab.options import APPLY_SCALE, SCALES, Scale, Site, check
from steerlab.vectors import SITE, SteeringVector

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["ARCH", "IMPORTED", "from_gguf", "llama_cpp_command", "to_gguf"]

ARCH = "controlvector"
KEY = "steerlab."  # prefix of steerlab's own metadata keys (llama.cpp ignores them)
FORMAT = 1  # version of the steerlab.* key layout
IMPORTED = "imported"


def _exportable(vector: SteeringVector, to: str) -> None:
    """Raise unless ``vector`` lives where ``to`` adds its directions (block outputs)."""
    if vector.site != SITE:
        raise VectorMismatchError(
            f"This vector lives at site {vector.site!r}, but {to} adds its directions to the "
            f"output of a block ({SITE!r}); a direction of one site need not mean anything at "
            f"another. Extract the vector at site={SITE!r} to export it.")


def to_gguf(vector: SteeringVector, path: str | Path, coeff: float = 1.0,
            scale: Scale = APPLY_SCALE, *, layers: Sequence[int] | None = None) -> Path:
    """Write ``vector`` as a llama.cpp GGUF control vector, atomically.

    The file holds ``direction.{k}`` = what steering at ``coeff`` in ``scale`` units adds at
    layer k (:meth:`SteeringVector.added`), as (d_model,) float32, so ``llama-cli
    --control-vector FILE`` steers like ``steer(model, vector, coeff=coeff, scale=scale)``
    (every position, prompt included; llama.cpp has no position control, and only adds: it
    cannot project or ablate). steerlab's provenance and the per-layer factor that was baked in
    travel in ``steerlab.*`` metadata keys, so :func:`from_gguf` gives the unscaled vector back.

    Args:
        vector: a ``resid_post`` vector; with layer 0 (llama.cpp cannot steer block 0), only
            when ``layers`` leaves it out.
        path: the ``.gguf`` file to write (replaced whole, never half-written).
        coeff: the strength baked into the tensors (non-zero, finite).
        scale: units of ``coeff``: ``raw``, ``unit`` or ``norm``.
        layers: export only these of the vector's layers (default: all of them). Leaving
            layers out is a stated choice: the file then steers less than the vector does; the
            layers left out are recorded as ``meta["dropped_layers"]``, which :func:`from_gguf`
            gives back.

    Returns:
        ``path``.

    Example:
        >>> learned.to_gguf("learned.gguf", layers=learned.layers[1:])  # all but layer 0
    """
    import gguf

    check("scale", scale, SCALES)
    if not isinstance(coeff, int | float) or not math.isfinite(coeff) or coeff == 0:
        raise OptionError(f"coeff must be a finite, non-zero number, got {coeff!r} (a zero "
                          "vector could not be scaled back on import).")
    _exportable(vector, "llama.cpp")
    vector = _exported_layers(vector, layers)
    baked, factors = {}, {}
    for layer in vector.layers:
        added, norm = vector.added(layer, float(coeff), scale)  # (d_model,)
        if not torch.isfinite(added).all():
            raise InvalidVectorError(
                f"Layer {layer}: coeff={coeff} x the vector overflows float32 (inf values); "
                "use a smaller coeff.")
        baked[layer] = added.detach().float().cpu().numpy()
        factors[str(layer)] = (float(coeff) if scale == "raw"  # the coefficient itself
                               else math.copysign(norm, coeff) / float(vector[layer].norm()))
    path = Path(path)
    with _io.atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCH)
        writer.add_string(f"{ARCH}.model_hint", vector.model_id)
        writer.add_uint32(f"{ARCH}.layer_count", len(baked))
        _add_provenance(writer, vector, coeff, scale, factors)
        for layer, array in baked.items():
            writer.add_tensor(f"direction.{layer}", array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def _exported_layers(vector: SteeringVector, layers: Sequence[int] | None) -> SteeringVector:
    """``vector`` restricted to ``layers`` (the layers left out named in ``meta``), checked."""
    if layers is None:
        if 0 in vector.vectors:
            raise LayerError(
                "llama.cpp rejects direction.0: block 0's output cannot be steered there. Leave "
                f"layer 0 out on purpose (layers={[l for l in vector.layers if l != 0]}; the "
                "file then steers less than the vector does), or steer block 0's output as "
                "resid_pre of layer 1 in steerlab.")
        return vector
    if isinstance(layers, str | bytes) or not isinstance(layers, Sequence) or not layers:
        raise LayerError(f"layers must be a non-empty list of the vector's layers, got "
                         f"{layers!r}.")
    chosen = list(layers)
    if any(not isinstance(l, int | np.integer) or isinstance(l, bool) for l in chosen):
        raise LayerError(f"layers must be ints, got {chosen!r}.")
    missing = sorted({int(l) for l in chosen} - set(vector.layers))
    if missing:
        raise LayerError(f"layers {missing} are not in the vector (its layers: "
                         f"{vector.layers}).")
    if len(set(chosen)) != len(chosen):
        raise LayerError(f"layers {chosen!r} name a layer twice.")
    if 0 in chosen:
        raise LayerError("layers includes 0, but llama.cpp rejects direction.0: block 0's "
                         "output cannot be steered there. Leave layer 0 out.")
    dropped = sorted(set(vector.layers) - {int(l) for l in chosen})
    meta = {**vector.meta, "dropped_layers": dropped} if dropped else vector.meta
    return replace(vector.only(sorted(int(l) for l in chosen)), meta=meta)


def llama_cpp_command(path: str | Path, model_file: str | Path = "MODEL.gguf",
                      scale: float | None = None) -> str:
    """The ``llama-cli`` command line that steers ``model_file`` with the control vector at
    ``path`` (with ``scale``, ``--control-vector-scaled FILE:SCALE``, today's llama.cpp
    syntax, which multiplies the file's directions by it on load; llama.cpp before 2025 took
    the scale as a second word); paths are shell-quoted where needed."""
    flag = (f"--control-vector {shlex.quote(str(path))}" if scale is None
            else f"--control-vector-scaled {shlex.quote(f'{path}:{scale:g}')}")
    return f"llama-cli -m {shlex.quote(str(model_file))} {flag}"


def _add_provenance(writer: Any, vector: SteeringVector, coeff: float, scale: Scale,
                    factors: dict[str, float]) -> None:
    writer.add_uint32(KEY + "format", FORMAT)
    writer.add_string(KEY + "model_id", vector.model_id)
    writer.add_uint32(KEY + "d_model", vector.d_model)
    writer.add_string(KEY + "site", vector.site)
    writer.add_string(KEY + "method", vector.method)
    writer.add_string(KEY + "prompt_hash", vector.prompt_hash)
    if vector.seed is not None:
        writer.add_int64(KEY + "seed", vector.seed)
    writer.add_string(KEY + "meta", json.dumps(vector.meta))
    writer.add_string(KEY + "version", vector.version)
    writer.add_string(KEY + "ref_norms", json.dumps(
        {str(l): n for l, n in sorted(vector.ref_norms.items())}))
    writer.add_float64(KEY + "coeff", float(coeff))
    writer.add_string(KEY + "scale", scale)
    #: layer -> the factor direction.k = factor x the vector was written with
    writer.add_string(KEY + "factors", json.dumps(factors))


def _read(path: Path) -> tuple[dict[str, Any], dict[int, np.ndarray]]:
    """(metadata key -> value, layer -> (n_embd,) float32) of a control-vector file, checked
    the way llama.cpp checks it."""
    import gguf

    if not path.is_file():
        raise FileNotFoundError(f"No GGUF control-vector file at {path}.")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # noqa: BLE001 - gguf raises several kinds on a bad file
        raise InvalidVectorError(f"{path} is not a readable GGUF file ({err}).") from err
    fields = {name: f.contents() for name, f in reader.fields.items()
              if not name.startswith("GGUF.")}
    arch = fields.get("general.architecture")
    if arch is not None and arch != ARCH:
        raise InvalidVectorError(
            f"{path} is a GGUF {arch!r} file, not a control vector (general.architecture = "
            f"{ARCH!r}): it holds a model, not steering directions.")
    directions: dict[int, np.ndarray] = {}
    for t in reader.tensors:
        head, _, tail = t.name.partition(".")
        if head != "direction" or not tail.isdigit():
            raise InvalidVectorError(f"{path}: tensor {t.name!r} is not named direction.<k> "
                                     "(llama.cpp refuses such a file).")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise InvalidVectorError(
                f"{path}: {t.name} is {t.tensor_type.name} of shape {tuple(t.shape)}; a "
                "control vector holds 1-D F32 tensors only.")
        directions[int(tail)] = np.array(t.data, dtype=np.float32)  # a copy, off the mmap
    if not directions:
        raise InvalidVectorError(f"{path} holds no direction tensors.")
    widths = {a.shape[0] for a in directions.values()}
    if len(widths) > 1:
        raise InvalidVectorError(f"{path}: direction tensors of different lengths {widths}.")
    return fields, directions


def from_gguf(path: str | Path, model: Model | None = None, *,
              unscale: bool = True) -> SteeringVector:
    """Read a GGUF control vector (written by steerlab, repeng, llama.cpp's tools...).

    A file steerlab wrote comes back with its provenance and, with ``unscale`` (default), the
    vector as it was before :func:`to_gguf` baked the coefficient in (exact for a ``raw``
    coefficient that is a power of two, else within float32 rounding); ``unscale=False`` keeps
    what llama.cpp would add. Any other file imports with ``method="imported"``, ``model_id``
    from ``controlvector.model_hint`` (or ``model.hf_id`` when ``model`` is given) and the
    source file in ``meta``.

    Args:
        path: the ``.gguf`` file.
        model: check the width and the layers against this model (a clear error otherwise).
        unscale: divide the baked-in coefficient back out (steerlab files only).
    """
    path = Path(path)
    fields, directions = _read(path)
    width = next(iter(directions.values())).shape[0]
    hint = str(fields.get(f"{ARCH}.model_hint", ""))
    if model is not None:
        _check_fits(path, directions, width, model, hint)
    if 0 in directions:
        warnings.warn(f"{path} has direction.0, which llama.cpp rejects; steerlab reads it as "
                      "resid_post of layer 0.", stacklevel=2)
    tensors = {l: torch.from_numpy(a) for l, a in sorted(directions.items())}
    if KEY + "format" not in fields:
        meta = {"source": "gguf", "file": str(path), "model_hint": hint,
                "layer_count": fields.get(f"{ARCH}.layer_count")}
        model_id = model.hf_id if model is not None else hint or "unknown"
        return SteeringVector(tensors, model_id, width, SITE, IMPORTED, meta=meta)
    try:
        factors = {int(l): float(f) for l, f in json.loads(fields[KEY + "factors"]).items()}
        meta = json.loads(fields[KEY + "meta"])
        ref_norms = {int(l): float(n) for l, n in json.loads(fields[KEY + "ref_norms"]).items()}
        d_model = int(fields[KEY + "d_model"])
    except (KeyError, ValueError) as err:
        raise InvalidVectorError(f"{path}: malformed steerlab metadata ({err!r}).") from err
    if d_model != width or set(factors) != set(tensors):
        raise InvalidVectorError(
            f"{path}: steerlab metadata says d_model {d_model}, layers {sorted(factors)}, but "
            f"the tensors have width {width}, layers {sorted(tensors)}; the file was edited.")
    if unscale:
        tensors = {l: (v.double() / factors[l]).float() for l, v in tensors.items()}
    else:
        meta = {**meta, "coeff": fields[KEY + "coeff"], "scale": fields[KEY + "scale"]}
    seed = fields.get(KEY + "seed")
    text = {k: str(fields.get(KEY + k, "")) for k in  # GGUFWriter drops empty strings
            ("model_id", "site", "method", "prompt_hash", "version")}
    site = cast(Site, text["site"])  # SteeringVector refuses a site it cannot steer
    return SteeringVector(tensors, text["model_id"], d_model, site, text["method"],
                          text["prompt_hash"], None if seed is None else int(seed), meta,
                          text["version"], ref_norms)


def _check_fits(source: object, directions: dict[int, Any], width: int, model: Model,
                made_for: str) -> None:
    if width != model.d_model:
        raise VectorMismatchError(
            f"{source}: the directions have width {width}, but {model.name} has d_model "
            f"{model.d_model}; they were made for {made_for or 'another model'}. Import them "
            "with the model they were made for.")
    bad = sorted(l for l in directions if not 0 <= l < model.n_layers)
    if bad:
        raise LayerError(
            f"{source}: directions for block(s) {bad}, but {model.name} has {model.n_layers} "
            f"blocks (0..{model.n_layers - 1}); they were made for a deeper model "
            f"({made_for or 'unknown'}).")
