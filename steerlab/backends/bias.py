"""Steering vectors as biases: the module surgery behind :func:`steerlab.bake.bake`.

A vector added to the residual stream after block ``k`` at every position is exactly a bias
on that block's MLP output projection, where the block's output is
``h + attn(...) + mlp(...)`` with nothing after the MLP's last linear map: Llama-family blocks
(whose config has ``mlp_bias``, which gives the gate, up and down projections biases) and
GPT-2 (whose ``c_proj`` has one already). Gemma's blocks normalise the MLP's output
(``post_feedforward_layernorm``) and Qwen2's configs have no MLP bias: not bakeable.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch

from steerlab.backends.blocks import block_parts
from steerlab.errors import OptionError

if TYPE_CHECKING:
    from steerlab.models import Model

#: model types whose checkpoints can carry a bias after every block, as they load anywhere
BAKEABLE = ("llama", "gpt2")


def check_bakeable(model: Model) -> str:
    """The model's type when its blocks can carry a baked vector, else a clear error."""
    kind = str(getattr(model.hf.config, "model_type", "?"))
    if kind not in BAKEABLE or (kind == "llama" and not hasattr(model.hf.config, "mlp_bias")):
        raise OptionError(
            f"{model.name} is a {kind!r} model: its checkpoint cannot carry a bias after each "
            f"block that its own config loads (supported: {', '.join(BAKEABLE)}: a Llama "
            "config's mlp_bias, GPT-2's c_proj bias). Steer it at run time with steer(...), or "
            "export the vector for llama.cpp (steerlab export).")
    return kind


def with_block_biases(model: Model, biases: dict[int, torch.Tensor]) -> torch.nn.Module:
    """A copy of ``model.hf`` whose block ``k`` adds ``biases[k]`` (d_model,) to its output at
    every position: the bias of the block's MLP output projection (Llama: ``mlp_bias`` turned
    on, every other MLP bias zero; GPT-2: added to ``c_proj``'s own)."""
    kind = check_bakeable(model)
    hf = copy.deepcopy(model.hf)
    layers = dict(hf.named_modules())[
        next(name for name, m in model.hf.named_modules() if m is model.layers)]
    if kind == "llama":
        hf.config.mlp_bias = True
    for k, block in enumerate(layers):
        mlp = block_parts(block)["mlp"]
        add = biases.get(k)
        if kind == "gpt2":
            if add is not None:
                bias = mlp.get_submodule("c_proj").get_parameter("bias")
                with torch.no_grad():
                    bias.add_(add.to(bias))
            continue
        for name in ("gate_proj", "up_proj", "down_proj"):
            old = getattr(mlp, name)
            new = torch.nn.Linear(old.in_features, old.out_features, bias=True,
                                  device=old.weight.device, dtype=old.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(old.weight)
                new.bias.zero_()
                if name == "down_proj" and add is not None:
                    new.bias.copy_(add.to(new.bias))
            setattr(mlp, name, new)
    return hf
