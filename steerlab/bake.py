"""Bake steering vectors into an ordinary Hugging Face checkpoint that any server loads.

``bake(model, vector, out, coeff, scale)`` writes a checkpoint in which each layer's vector (at
``coeff`` in ``scale`` units, :meth:`~steerlab.vectors.SteeringVector.added`) is the bias of
that block's MLP output projection (:mod:`steerlab.backends.bias`): loaded with
``AutoModelForCausalLM.from_pretrained(out)`` and no steerlab, it computes what
``steer(model, vector, coeff=coeff, scale=scale)`` computes (``positions="all"``,
``mode="add"``), up to float rounding. Only additions at every position bake: a bias cannot
depend on the token's phase (``positions="prompt"``/``"generated"``) or on the activation
itself (``mode="project"``/``"ablate"``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerlab import _io
from steerlab.backends.bias import with_block_biases
from steerlab.conditions import evaluate_condition
from steerlab.devices import dtype_name
from steerlab.errors import OptionError, VectorMismatchError
from steerlab.evaluation import evaluate
from steerlab.models import load_model
from steerlab.options import APPLY_SCALE, Mode, Scale, When
from steerlab.stats import comparison_row
from steerlab.steering import steer
from steerlab.tasks import get_task
from steerlab.validate import check_layers

if TYPE_CHECKING:
    import torch

    from steerlab.models import Model
    from steerlab.tasks import Item
    from steerlab.vectors import SteeringVector

__all__ = ["BAKE_FILE", "bake", "block_biases", "check_baked"]

#: the provenance file a baked checkpoint carries next to its weights
BAKE_FILE = "steerlab_bake.json"


def block_biases(model: Model, vector: SteeringVector, coeff: float = 1.0,
                 scale: Scale = APPLY_SCALE, layers: Sequence[int] | None = None,
                 positions: When = "all", mode: Mode = "add") -> dict[int, torch.Tensor]:
    """Block -> the (d_model,) vector its output gains: the vector's layers (or ``layers``)
    at ``coeff`` in ``scale`` units; ``resid_pre`` of block k is the output of block k-1."""
    if positions != "all":
        raise OptionError(f"positions={positions!r} cannot be baked: a bias acts at every "
                          "position of every forward, prompt and generated tokens alike. "
                          "Steer at run time with steer(..., positions=...) instead.")
    if not isinstance(coeff, int | float) or not math.isfinite(coeff):
        raise OptionError(f"coeff must be a finite number, got {coeff!r}.")
    if mode != "add":
        raise OptionError(f"mode={mode!r} cannot be baked: it changes h by a multiple of "
                          "(h . r), which depends on the activation, and a bias is constant. "
                          "Steer at run time with steer(..., mode=...) instead.")
    vector.check_compatible(model)
    use = check_layers(model, list(layers) if layers is not None else vector.layers)
    missing = [l for l in use if l not in vector.vectors]
    if missing:
        raise VectorMismatchError(f"The vector has no layer {missing[0]}; its layers are "
                                  f"{vector.layers}.")
    if vector.site not in ("resid_post", "resid_pre"):
        raise OptionError(f"A vector made at site {vector.site!r} cannot be baked: only a "
                          "residual-stream vector (resid_post, or resid_pre of block k >= 1, "
                          "which is block k-1's output) is a bias after a block.")
    shift = 1 if vector.site == "resid_pre" else 0
    if shift and 0 in use:
        raise OptionError("resid_pre of block 0 is the embeddings' output, which no block "
                          "bias reaches: leave layer 0 out (layers=...).")
    return {l - shift: vector.added(l, coeff, scale)[0] for l in use}


def bake(model: Model, vector: SteeringVector, out: str | Path, coeff: float = 1.0,
         scale: Scale = APPLY_SCALE, layers: Sequence[int] | None = None,
         positions: When = "all", mode: Mode = "add") -> Path:
    """Write ``model`` with ``vector`` baked in to the new directory ``out`` (see the module
    doc); refuses an ``out`` that exists. Returns ``out``. The directory appears whole or not
    at all (written next to it, then renamed)."""
    out = Path(out)
    if out.exists():
        raise OptionError(f"{out} exists: bake writes a new checkpoint directory; remove it or "
                          "pick another --out.")
    biases = block_biases(model, vector, coeff, scale, layers, positions, mode)
    baked = with_block_biases(model, biases)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        baked.save_pretrained(tmp)  # type: ignore[operator]
        model.tokenizer.save_pretrained(tmp)
        # what steerlab's load_model reads back: the model it is, and the chat rule's answer
        (tmp / "steerlab.json").write_text(json.dumps(
            {"hf_id": f"{model.hf_id}+baked", "chat": model.is_chat}))
        (tmp / BAKE_FILE).write_text(json.dumps({
            "base_model": model.hf_id, "method": vector.method, "site": vector.site,
            "layers": sorted(biases), "coeff": coeff, "scale": scale,
            "added_norms": {str(k): float(v.norm()) for k, v in sorted(biases.items())},
            "vector_meta": vector.meta}, indent=1, default=str))
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_baked(model: Model, vector: SteeringVector, task: str = "arithmetic",
                items: Sequence[Item] | None = None, batch_size: int = 50,
                out: str | Path | None = None, coeff: float = 1.0,
                scale: Scale = APPLY_SCALE) -> dict[str, Any]:
    """Evaluate ``vector`` steered at run time and baked into a checkpoint (written to a
    temporary directory, loaded back by name as any user would) on the same ``items`` of
    ``task`` (default: its evaluation items), greedy, in ``model``'s dtype: each accuracy with
    its interval, the baked one against the steered one (paired difference, McNemar), and
    the items whose verdicts agree. ``out``: the JSON file to write it to (atomically)."""
    the_task = get_task(task)
    use = list(items) if items is not None else the_task.items(None, 0)
    with steer(model, vector, coeff=coeff, scale=scale):
        steered = evaluate(model, the_task, items=use, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        path = bake(model, vector, Path(tmp) / "baked", coeff=coeff, scale=scale)
        baked_model = load_model(str(path), dtype=model.dtype, device=model.device)
        baked = evaluate_condition(baked_model, the_task, use, None, batch_size)
    agree = int((steered.correct == baked.correct).sum())
    result = {"model": model.hf_id, "dtype": dtype_name(model.dtype), "task": task,
              "vector": {"method": vector.method, "layers": vector.layers, "coeff": coeff,
                         "scale": scale},
              "steered": comparison_row(steered.correct, steered.correct),
              "baked_vs_steered": comparison_row(steered.correct, baked.correct),
              "same_verdict": agree, "same_answer": sum(
                  a == b for a, b in zip(steered.predictions, baked.predictions, strict=True)),
              "items": len(use)}
    if out is not None:
        _io.write_text(out, json.dumps(result, indent=1))
    return result
