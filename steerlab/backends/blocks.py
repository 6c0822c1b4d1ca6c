"""What a transformers decoder block holds and hands back: its parts (attention, MLP, the
norm before the MLP, the attention's output projection), the points they offer, its output's
hidden states, and the position and slicing helpers the backends share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlab.backends.base import Point
    from steerlab.models import Model


class StopForward(Exception):
    """Raised by a capture hook once the last wanted layer has run, to skip the rest."""


def replace_hidden(output: Any, new: torch.Tensor) -> Any:
    """Put ``new`` where a block's output keeps its hidden states (a tensor, or a tuple's
    first element in older/other architectures such as GPT-2 or RWKV)."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def head_shape(model: Model) -> tuple[int, int] | None:
    """(n_heads, d_head) of the model's attention, or None (RWKV and other attention-free
    architectures)."""
    cfg = model.hf.config
    n = getattr(cfg, "num_attention_heads", None)
    if not isinstance(n, int) or n < 1:
        return None
    d = getattr(cfg, "head_dim", None)
    return n, int(d) if isinstance(d, int) and d > 0 else int(cfg.hidden_size) // n


#: child-module names of the parts of a transformers decoder block, by architecture family
ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
#: the norm that reads resid_mid (Gemma's pre_feedforward first: its post_attention_layernorm
#: normalises the attention output instead)
MID_NORM_NAMES = ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2", "ln2")
O_PROJ_NAMES = ("o_proj", "c_proj", "out_proj", "dense")


def block_parts(block: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The submodules of one HF decoder block that hold points: ``attn``, ``mlp``,
    ``mid_norm`` and ``o_proj``, where the block has them."""
    children = dict(block.named_children())
    parts: dict[str, torch.nn.Module] = {}
    for key, names in (("attn", ATTN_NAMES), ("mlp", MLP_NAMES), ("mid_norm", MID_NORM_NAMES)):
        found = next((children[n] for n in names if n in children), None)
        if found is not None:
            parts[key] = found
    if "attn" in parts:
        inner = dict(parts["attn"].named_children())
        o = next((inner[n] for n in O_PROJ_NAMES if n in inner), None)
        if o is not None:
            parts["o_proj"] = o
    return parts


def points_of(parts: dict[str, torch.nn.Module]) -> frozenset[Point]:
    have: set[Point] = {"block_in", "block_out"}
    for part, point in (("attn", "attn_out"), ("mlp", "mlp_out"), ("mid_norm", "mid_in"),
                        ("o_proj", "o_in")):
        if part in parts:
            have.add(point)  # type: ignore[arg-type]
    return frozenset(have)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted over real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def keep_positions(logits: torch.Tensor, keep: int | torch.Tensor | None) -> torch.Tensor:
    """Slice full (B, T, vocab) logits like ``keep`` in :meth:`Backend.forward`."""
    if keep is None:
        return logits
    if isinstance(keep, int):
        return logits[:, -keep:]
    return logits[:, keep]
