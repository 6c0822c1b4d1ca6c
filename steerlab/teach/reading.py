"""Checks for lesson 4: the logit lens of a vector (cosine with every unembedding row) and its
top tokens. References are computed here with plain torch, independent of any lens module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from steerlab.teach._harness import Fail, as_tensor, call, check, models_for, rel_err

if TYPE_CHECKING:
    from steerlab.models import Model


def unembedding(model: Model) -> torch.Tensor:
    """(vocab, d_model) float32 unembedding matrix (the output embedding's weight)."""
    return model.hf.get_output_embeddings().weight.detach().float()


def reference_cosines(model: Model, vector: torch.Tensor) -> torch.Tensor:
    """(vocab,) cosine of ``vector`` with each unembedding row."""
    w = unembedding(model)
    return torch.nn.functional.normalize(w, dim=1) @ (vector.float() / vector.float().norm())


def _vector(model: Model, seed: int = 0) -> torch.Tensor:
    return 5.0 * torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))


@check
def check_unembedding_cosines(fn: Any, model: Model | None = None,
                              embedded: bool = True) -> str:
    """Check ``fn(model, vector) -> (vocab,)``: the cosine of ``vector`` (d_model,) with every
    row of ``model.hf.get_output_embeddings().weight``, on a tiny random model and the
    embedded one."""
    done = []
    for m in models_for(model, embedded):
        vector = _vector(m)
        w = unembedding(m)
        what = f"on {m.name}, your function(model, vector)"
        got = call(fn, m, vector.clone(), what=what)
        got = as_tensor(got, what, (w.shape[0],))
        ref = reference_cosines(m, vector)
        tol = 1e-4 if m.dtype == torch.float32 else 2e-2
        if rel_err(got, ref) <= tol:
            done.append(f"{m.name} ({w.shape[0]:,} rows)")
            continue
        v = vector.float()
        alternatives = {
            "raw dot products: divide by the vector's norm and by each row's norm": w @ v,
            "you normalised the vector but not the rows: each row has its own norm, and a "
            "cosine divides by it": w @ (v / v.norm()),
            "you normalised the rows but not the vector: divide by its norm too":
                torch.nn.functional.normalize(w, dim=1) @ v,
        }
        hint = next((why for why, alt in alternatives.items() if rel_err(got, alt) <= tol),
                    "Hint: F.normalize(W, dim=1) @ (v / v.norm()) with W = "
                    "model.hf.get_output_embeddings().weight.float()")
        raise Fail(f"{what}: expected values in [-1, 1] starting {ref[:3].cpu().tolist()}, got "
                   f"{got[:3].cpu().tolist()} (max |value| {float(got.abs().max()):.3g}); {hint}.")
    return "cosines with every unembedding row match on " + " and ".join(done) + "."


def _as_strings(got: Any, k: int, what: str) -> list[str]:
    if got is None:
        raise Fail(f"{what} returned None; expected a list of {k} token strings.")
    if isinstance(got, torch.Tensor):
        got = got.cpu().tolist()
    if isinstance(got, str) or not hasattr(got, "__len__"):
        raise Fail(f"{what} returned {type(got).__name__} {got!r:.60}; expected a list of {k} "
                   "token strings.")
    got = list(got)
    if len(got) != k:
        raise Fail(f"{what} returned {len(got)} items; expected k={k}.")
    if not all(isinstance(t, str) for t in got):
        raise Fail(f"{what} returned {got[:3]!r}...; expected strings: turn each token id into "
                   "text with model.tokenizer.decode([i]).")
    return got


@check
def check_top_tokens(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(model, scores, k) -> list[str]``: the ``k`` tokens with the highest
    ``scores`` (vocab,), highest first, each as ``model.tokenizer.decode([id])`` (the raw
    ``convert_ids_to_tokens`` form is accepted too)."""
    done = []
    for m in models_for(model, embedded):
        k = 8
        scores = torch.randn(unembedding(m).shape[0], generator=torch.Generator().manual_seed(3))
        what = f"on {m.name}, your function(model, scores, k={k})"
        got = _as_strings(call(fn, m, scores.clone(), k, what=what), k, what)
        order = scores.argsort(descending=True).cpu().tolist()

        def forms(ids: list[int], m: Model = m) -> list[list[str]]:
            return [[m.tokenizer.decode([i]) for i in ids],
                    [str(t) for t in m.tokenizer.convert_ids_to_tokens(ids)]]

        if got in forms(order[:k]):
            done.append(m.name)
            continue
        expected = forms(order[:k])[0]
        if got in forms(order[::-1][:k]):
            raise Fail(f"{what}: expected {expected!r}, got the {k} *lowest*-scoring tokens: "
                       "sort in descending order (scores.topk(k) does).")
        if any(sorted(got) == sorted(f) for f in forms(order[:k])):
            raise Fail(f"{what}: the right tokens in the wrong order: highest score first.")
        raise Fail(f"{what}: expected {expected!r}, got {got!r}. Hint: ids = "
                   "scores.topk(k).indices; [model.tokenizer.decode([i]) for i in ids].")
    return f"the top-{k} tokens, highest first, on " + " and ".join(done) + "."
