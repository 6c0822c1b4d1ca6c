"""Checks for lesson 1: caching the residual stream, and the difference of means."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.teach._harness import (
    Fail,
    HookGuard,
    as_tensor,
    call,
    check,
    cos,
    head,
    models_for,
    rel_err,
    tolerance,
)
from steerlab.vectors import diff_of_means

if TYPE_CHECKING:
    from steerlab.models import Model

# different lengths on purpose: a batch of them needs padding
TINY_PROMPTS = ["Tom has 3 apples and buys 5 more.", "What is 2+2?", "Paris is the capital of",
                "A longer prompt, so that a batch of these prompts needs padding."]


def _layer_for(model: Model) -> int:
    return min(12, model.n_layers - 2)


def _prompts_for(model: Model, n: int = 4) -> list[str]:
    if model.name.startswith("tiny-"):
        return TINY_PROMPTS[:n]
    half = (n + 1) // 2
    return questions("reasoning", "extract", half) + questions("memorisation", "extract", half)


def _diagnose_residual(model: Model, prompts: list[str], layer: int, got: torch.Tensor,
                       ref: torch.Tensor) -> str:
    """Why ``got`` differs from the last-token residual after block ``layer``."""
    tol = tolerance(model)
    if layer > 0:
        before = cache_activations(model, prompts, layers=[layer - 1], chat=False).at(layer - 1)
        if rel_err(got, before) < tol:
            return (f"your rows equal the residual stream after block {layer - 1}, one block "
                    f"too early: hook the output of model.layers[{layer}] (hidden_states"
                    f"[{layer}] from output_hidden_states, or a pre-hook, is its input).")
    mean = cache_activations(model, prompts, layers=[layer], reduction="mean",
                             chat=False).at(layer)
    if rel_err(got, mean) < tol:
        return "your rows are the mean over the prompt's tokens: take the last token, h[:, -1]."
    row_err = [rel_err(g, r) for g, r in zip(got, ref, strict=True)]
    good = [i for i, e in enumerate(row_err) if e < tol]
    if good:
        lengths = [len(model.tokenizer(p)["input_ids"]) for p in prompts]
        bad = [i for i in range(len(prompts)) if i not in good]
        return (f"rows {good} are right but rows {bad} are not (prompt lengths {lengths}): "
                "padding changed the shorter prompts' residuals or moved their last token. Run "
                "one prompt at a time, model.encode([p]), so there is no padding.")
    return (f"every row is off (relative error {max(row_err):.2f}, cosine with the expected "
            f"first row {cos(got[0], ref[0]):.2f}). Hint: hook model.layers[layer], take "
            "output[0] if output is a tuple else output, keep h[0, -1] for each prompt.")


@check
def check_last_token_residual(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(model, prompts, layer) -> (n_prompts, d_model)``: the residual stream after
    block ``layer`` at each prompt's last token (no chat template), as
    :func:`steerlab.cache.cache_activations` gives it. Runs on a tiny random model, then on the
    embedded model (or ``model``); also fails when ``fn`` leaves a hook behind."""
    done = []
    for m in models_for(model, embedded):
        prompts, layer = _prompts_for(m), _layer_for(m)
        with HookGuard(m) as guard:
            got = call(fn, m, prompts, layer, what=f"on {m.name}, your function")
        if guard.leaked:
            raise Fail(f"on {m.name} your function left {len(guard.leaked)} hook(s) on "
                       f"{guard.leaked} after it returned: every later forward pass would still "
                       "run them. Keep the handle from register_forward_hook and call "
                       "handle.remove() in a finally block. (The check removed them.)")
        shape = (len(prompts), m.d_model)
        got = as_tensor(got, f"on {m.name}, your function", shape)
        ref = cache_activations(m, prompts, layers=[layer], chat=False).at(layer)
        if rel_err(got, ref) > tolerance(m):
            raise Fail(f"on {m.name} (layer {layer}, {len(prompts)} prompts) expected row 0 to "
                       f"start {head(ref[0])}, got {head(got[0])}: "
                       + _diagnose_residual(m, prompts, layer, got, ref))
        done.append(f"{m.name} layer {layer}")
    return "matches steerlab's cache_activations on " + " and ".join(done) + "."


@check
def check_mean_difference(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(pos, neg) -> (d_model,)``: mean of ``pos`` rows minus mean of ``neg`` rows,
    for ``pos`` (n_pos, d_model) and ``neg`` (n_neg, d_model) with n_pos != n_neg. Inputs are
    real last-token activations (a tiny random model, then the embedded one), compared with
    :func:`steerlab.vectors.diff_of_means`."""
    done = []
    for m in models_for(model, embedded):
        layer = _layer_for(m)
        if m.name.startswith("tiny-"):
            pos_p, neg_p = TINY_PROMPTS[:3], TINY_PROMPTS[3:] + ["Berlin is in"]
        else:
            pos_p = questions("reasoning", "extract", 6)
            neg_p = questions("memorisation", "extract", 4)
        pos = cache_activations(m, pos_p, layers=[layer], chat=False)
        neg = cache_activations(m, neg_p, layers=[layer], chat=False)
        ref = diff_of_means(pos, neg)[layer]
        what = f"on {m.name}, your function(pos {tuple(pos.at(layer).shape)}, neg " \
               f"{tuple(neg.at(layer).shape)})"
        got = call(fn, pos.at(layer).clone(), neg.at(layer).clone(), what=what,
                   hint="the two sets have different numbers of prompts: average each one "
                        "over its prompts first, then subtract.")
        if isinstance(got, torch.Tensor) and got.ndim == 1 and got.shape[0] in (len(pos_p),
                                                                                 len(neg_p)):
            raise Fail(f"{what} returned shape {tuple(got.shape)}, one number per prompt: you "
                       "averaged over the wrong axis. Average over prompts, .mean(dim=0), to "
                       f"keep one number per residual dimension ({m.d_model}).")
        got = as_tensor(got, what, (m.d_model,))
        if rel_err(got, ref) <= 1e-4:
            done.append(m.name)
            continue
        c = cos(got, ref)
        hint = ("it points the opposite way (cosine -1): pos minus neg, not neg minus pos."
                if c < -0.999 else
                f"the direction is right but the norm is {float(got.norm()):.3g} instead of "
                f"{float(ref.norm()):.3g}: do not normalise; steering coefficients are "
                "calibrated on the raw difference." if c > 0.999 else
                f"cosine with the expected vector is {c:.2f}. Hint: pos.mean(dim=0) - "
                "neg.mean(dim=0); the two sets can have different numbers of prompts.")
        raise Fail(f"{what}: expected {head(ref)}, got {head(got)}; {hint}")
    return "equals steerlab's diff_of_means on " + " and ".join(done) + "."
