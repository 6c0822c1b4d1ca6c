"""Reading steering vectors: logit lens, token clusters, comparisons, foreign vector files.

* :func:`logit_lens`: cosine similarity of a layer's vector with every row of the unembedding
  matrix, top-k and bottom-k tokens as a DataFrame (Sinii et al. 2025, Sec. 5).
* :func:`cluster_tokens` / :func:`cluster_table`: group a layer's top tokens into themes without
  any external service: embed each token with the model's own unembedding (or embedding) rows,
  cluster with scikit-learn, name each cluster by its most central tokens (their Table 2).
* :func:`lens_coherence`: whether a vector's top tokens stand out from a random direction's
  and are about one thing (a cheap predictor of steerability, :mod:`steerlab.reliability`).
* :func:`layer_cosines`: per-layer cosine between two vectors (learned vs difference of means).
* :func:`from_state_dict`: vectors trained elsewhere (e.g. the paper's per-layer
  ``...layers.12.steering_vector`` parameters) mapped onto layers by name, with width checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from steerlab.errors import InvalidVectorError, LayerError, OptionError, VectorMismatchError
from steerlab.vectors import EPS, SteeringVector, cosines, unit

if TYPE_CHECKING:
    from steerlab.models import Model

SPACES = ("unembedding", "embedding")
_UNUSED = re.compile(r"^<unused\d+>$|^<\|?reserved|^\[multimodal\]$")


def unembedding(model: Model) -> torch.Tensor:
    """(vocab, d_model) float32 unembedding rows (the LM head's weight)."""
    return model.unembedding()


def _embedding(model: Model, space: str) -> torch.Tensor:
    if space not in SPACES:
        raise OptionError(f"Unknown token space {space!r}: use one of {SPACES}.")
    if space == "unembedding":
        return unembedding(model)
    return model.embedding()


def _token_text(model: Model, ids: Sequence[int]) -> list[str]:
    return [model.tokenizer.decode([int(i)]) for i in ids]


def _excluded(model: Model) -> torch.Tensor:
    """(vocab,) bool mask of tokens a lens should skip: control tokens, unused/reserved tokens,
    and rows beyond the tokenizer's vocabulary (padding rows of the matrix).

    Control tokens are ``all_special_ids`` plus every token added with ``special=True``
    (``all_special_ids`` misses most of them: SmolLM2's ``<repo_name>``, ``<jupyter_code>``...,
    Gemma's ``<start_of_turn>``). Added tokens that are *not* special are kept: in the
    tokenizers here they are ordinary text (Gemma's newline runs and HTML tags).
    """
    w = unembedding(model)
    bad = torch.zeros(w.shape[0], dtype=torch.bool)
    tok = model.tokenizer
    n_tok = len(tok)
    if n_tok < w.shape[0]:
        bad[n_tok:] = True
    added = getattr(tok, "added_tokens_decoder", {})
    control = {int(i) for i, t in added.items() if getattr(t, "special", False)}
    for i in control | set(tok.all_special_ids):
        if 0 <= i < w.shape[0]:
            bad[i] = True
    for text, i in tok.get_vocab().items():
        if i < w.shape[0] and _UNUSED.match(text):
            bad[i] = True
    return bad.to(w.device)  # built on the CPU (many single writes), moved once


def token_cosines(model: Model, direction: torch.Tensor, space: str = "unembedding"
                  ) -> torch.Tensor:
    """(vocab,) cosine similarity of ``direction`` with every token row of ``space``."""
    w = _embedding(model, space)
    d = direction.detach().float().flatten().to(w.device)
    if d.shape[0] != w.shape[1]:
        raise VectorMismatchError(f"Direction has width {d.shape[0]}, but {model.name}'s "
                                  f"{space} rows have width {w.shape[1]}.")
    if not torch.isfinite(d).all() or float(d.norm()) == 0.0:
        raise InvalidVectorError("The direction is zero or holds NaN/inf: nothing to read.")
    return cosines(w, d)


def logit_lens(vector: SteeringVector | torch.Tensor, model: Model,
               layers: Sequence[int] | int | None = None, k: int = 20,
               skip_special: bool = True, space: str = "unembedding") -> pd.DataFrame:
    """Top-k and bottom-k tokens of each layer's vector by cosine with the unembedding rows.

    Args:
        vector: a :class:`SteeringVector` (checked against ``model``) or a (d_model,) tensor.
        layers: which of its layers (default: all of them).
        k: tokens per side.
        skip_special: leave out special, unused and reserved tokens.
        space: ``unembedding`` (the paper's logit lens) or ``embedding``.

    Returns:
        Columns ``layer, side ("top"/"bottom"), rank (1 = most extreme), token_id, token,
        cosine``.
    """
    vocab = unembedding(model).shape[0]
    if not 1 <= k <= vocab // 2:
        raise OptionError(f"k must be in 1..{vocab // 2} ({model.name} has {vocab} tokens), "
                          f"got {k}.")
    per_layer = _directions(vector, model, layers)
    bad = _excluded(model) if skip_special else None
    rows = []
    for layer, d in per_layer.items():
        cos = token_cosines(model, d, space)  # (vocab,) on the model's device
        host = cos.cpu()  # one copy to read the chosen tokens' cosines from
        for side, sign in (("top", 1.0), ("bottom", -1.0)):
            score = cos * sign
            if bad is not None:
                score = score.masked_fill(bad, -np.inf)
            idx = torch.topk(score, k).indices.cpu().tolist()
            for rank, (i, text) in enumerate(zip(idx, _token_text(model, idx), strict=True), 1):
                rows.append({"layer": layer, "side": side, "rank": rank, "token_id": i,
                             "token": text, "cosine": float(host[i])})
    return pd.DataFrame(rows)


def _directions(vector: SteeringVector | torch.Tensor, model: Model,
                layers: Sequence[int] | int | None) -> dict[int, torch.Tensor]:
    if isinstance(vector, SteeringVector):
        vector.check_compatible(model, strict_model=False)
        use = [layers] if isinstance(layers, int) else list(layers or vector.layers)
        return {l: vector[l] for l in use}
    if not isinstance(vector, torch.Tensor) or vector.ndim != 1:
        raise OptionError("vector must be a SteeringVector or a (d_model,) tensor.")
    layer = layers if isinstance(layers, int) else -1
    return {layer: vector}


def cluster_tokens(model: Model, token_ids: Sequence[int], n_clusters: int | None = None,
                   space: str = "unembedding", seed: int = 0, n_central: int = 5,
                   scores: Sequence[float] | None = None) -> pd.DataFrame:
    """Group tokens into themes: k-means on their unit-normalised ``space`` rows.

    Args:
        token_ids: the tokens (e.g. a layer's top 50 from :func:`logit_lens`).
        n_clusters: number of clusters; default: the best silhouette score for 2..8.
        n_central: tokens that name a cluster (closest to its centroid).
        scores: optional per-token scores (e.g. lens cosines) averaged per cluster.

    Returns:
        One row per cluster, largest first: ``cluster, size, representative`` (the central
        tokens joined by " | "), ``tokens`` (all, by closeness to the centroid),
        ``mean_score``, ``cohesion`` (mean cosine of members with the centroid).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    ids = [int(i) for i in token_ids]
    if len(ids) < 2:
        raise OptionError(f"Need at least 2 tokens to cluster, got {len(ids)}.")
    x = unit(_embedding(model, space)[ids], dim=1).cpu().numpy()
    if n_clusters is None:
        best = (-2.0, 2)
        for c in range(2, min(8, len(ids) - 1) + 1):
            lab = KMeans(c, n_init=10, random_state=seed).fit_predict(x)
            if len(set(lab)) > 1:
                best = max(best, (float(silhouette_score(x, lab, metric="cosine")), c))
        n_clusters = best[1]
    if not 1 <= n_clusters <= len(ids):
        raise OptionError(f"n_clusters must be in 1..{len(ids)}, got {n_clusters}.")
    km = KMeans(n_clusters, n_init=10, random_state=seed).fit(x)
    texts = _token_text(model, ids)
    rows = []
    for c in range(n_clusters):
        members = np.flatnonzero(km.labels_ == c)
        cen = km.cluster_centers_[c] / max(np.linalg.norm(km.cluster_centers_[c]), EPS)
        sims = x[members] @ cen
        order = members[np.argsort(-sims)]
        names = [texts[i] for i in order]
        rows.append({"size": len(members), "representative": " | ".join(
            repr(t) for t in names[:n_central]), "tokens": names,
            "mean_score": float(np.mean([scores[int(i)] for i in members])) if scores else np.nan,
            "cohesion": float(sims.mean())})
    out = pd.DataFrame(rows).sort_values("size", ascending=False, kind="stable")
    out.insert(0, "cluster", range(len(out)))
    return out.reset_index(drop=True)


def cluster_table(vector: SteeringVector, model: Model, layers: Sequence[int] | None = None,
                  k: int = 50, n_clusters: int | None = None, side: str = "top",
                  seed: int = 0) -> pd.DataFrame:
    """The paper's Table 2 for ``vector``: for each layer, its top-``k`` lens tokens grouped into
    clusters, one row per (layer, cluster) with the representative tokens."""
    if side not in ("top", "bottom"):
        raise OptionError(f"side must be 'top' or 'bottom', got {side!r}.")
    lens = logit_lens(vector, model, layers, k=k)
    parts = []
    for layer, grp in lens[lens.side == side].groupby("layer", sort=True):
        cl = cluster_tokens(model, grp.token_id.tolist(), n_clusters, seed=seed,  # cpu: pandas
                            scores=grp.cosine.tolist())  # cpu: a pandas column
        cl.insert(0, "layer", layer)
        parts.append(cl)
    return pd.concat(parts, ignore_index=True)


def _top_k(cos: torch.Tensor, bad: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` highest cosines outside ``bad`` and their token ids."""
    top = torch.topk(cos.masked_fill(bad, -np.inf), k)
    return top.values, top.indices


def _pairwise(rows: torch.Tensor) -> float:
    """Mean cosine between distinct rows."""
    u = unit(rows.float(), dim=-1)
    g = u @ u.T
    k = g.shape[0]
    return float((g.sum() - g.diagonal().sum()) / (k * (k - 1)))


def lens_coherence(vector: SteeringVector, model: Model, layers: Sequence[int] | None = None,
                   k: int = 20, draws: int = 8, seed: int = 0) -> dict[int, dict[str, float]]:
    """Whether each layer's vector reads as coherent tokens under the logit lens, against
    random directions read the same way (``draws`` Gaussian directions, seeded):

    * ``lens_peak``: the mean cosine of the vector's top-``k`` tokens over the same for the
      random directions (above 1: the vector points at particular tokens more than chance);
    * ``lens_coherence``: the mean pairwise cosine of those ``k`` tokens' unembedding rows
      minus the same for the random directions' top tokens (above 0: the tokens the vector
      points at are about one thing more than chance would give).

    A cheap predictor for :mod:`steerlab.reliability` (special and unused tokens skipped)."""
    if not 2 <= k <= 1000:
        raise OptionError(f"k must be in 2..1000, got {k}.")
    if draws < 1:
        raise OptionError(f"draws must be >= 1, got {draws}.")
    w = unembedding(model)
    bad = _excluded(model)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(draws, w.shape[1], generator=gen).to(w.device)
    chance_peak, chance_pair = [], []
    for d in noise:
        vals, idx = _top_k(token_cosines(model, d), bad, k)
        chance_peak.append(float(vals.mean()))
        chance_pair.append(_pairwise(w[idx]))
    peak0, pair0 = float(np.mean(chance_peak)), float(np.mean(chance_pair))
    out = {}
    for layer, d in _directions(vector, model, layers).items():
        vals, idx = _top_k(token_cosines(model, d), bad, k)
        out[layer] = {"lens_peak": float(vals.mean()) / max(peak0, EPS),
                      "lens_coherence": _pairwise(w[idx]) - pair0}
    return out


def layer_cosines(a: SteeringVector, b: SteeringVector) -> pd.DataFrame:
    """Cosine between two vectors at each layer both have (e.g. learned vs difference of
    means), with their norms."""
    if a.d_model != b.d_model:
        raise VectorMismatchError(f"Widths differ: {a.d_model} vs {b.d_model}.")
    shared = sorted(set(a.layers) & set(b.layers))
    if not shared:
        raise VectorMismatchError(f"No layer in common: {a.layers} vs {b.layers}.")
    rows = []
    for l in shared:
        x, y = a[l].float(), b[l].float()
        den = float(x.norm() * y.norm())
        rows.append({"layer": l, "cosine": float(x @ y) / den if den > 0 else np.nan,
                     "norm_a": float(x.norm()), "norm_b": float(y.norm())})
    return pd.DataFrame(rows)


LAYER_KEY = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def from_state_dict(state: Mapping[str, torch.Tensor] | str | Path, model: Model,
                    suffix: str = "steering_vector", model_id: str | None = None
                    ) -> SteeringVector:
    """A :class:`SteeringVector` from per-layer parameters trained elsewhere.

    Keys ending in ``suffix`` with a layer index (``model.layers.12.steering_vector``,
    ``base_model.model.layers.3.mlp.steering_vector``, ``h.5.steering_vector``) become that
    layer's vector. ``state`` may be a dict or a file (``.safetensors``; ``.pt``/``.bin`` are
    read with ``torch.load(weights_only=True)``, never unpickling code).

    Raises a clear error for no matching key, a layer out of range, a wrong width, a layer
    given twice, or NaN/inf.
    """
    if not isinstance(state, Mapping):
        state = _read_state(Path(state))
    found: dict[int, torch.Tensor] = {}
    for key, t in state.items():
        if not key.endswith(suffix):
            continue
        m = LAYER_KEY.search(key)
        if m is None:
            raise InvalidVectorError(f"Key {key!r} ends in {suffix!r} but names no layer "
                                     "(expected e.g. 'model.layers.12.steering_vector').")
        layer = int(m.group(1))
        if layer in found:
            raise InvalidVectorError(f"Layer {layer} appears twice (e.g. {key!r}).")
        v = torch.as_tensor(t).detach().float().flatten()
        if v.shape[0] != model.d_model:
            raise VectorMismatchError(f"{key}: width {v.shape[0]}, but {model.name} has "
                                      f"d_model {model.d_model}: trained for another model?")
        found[layer] = v
    if not found:
        sample = list(state)[:5]
        raise InvalidVectorError(f"No key ends in {suffix!r} (first keys: {sample}); pass "
                                 "suffix= to name the vectors' parameter.")
    bad = [l for l in found if l >= model.n_layers]
    if bad:
        raise LayerError(f"Layers {sorted(bad)} out of range: {model.name} has {model.n_layers} "
                         "layers; the vectors were trained for a deeper model.")
    return SteeringVector(found, model_id or model.hf_id, model.d_model, method="learned",
                          meta={"imported_from": "state_dict", "suffix": suffix})


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"No vector file at {path}.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - corrupt files raise many kinds
        raise InvalidVectorError(f"{path} could not be read as a state dict ({err}); it is "
                                 "truncated, corrupt, or not a tensor file.") from err
    if not isinstance(obj, Mapping):
        raise InvalidVectorError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    return dict(obj)
