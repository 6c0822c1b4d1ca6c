"""Geometry of the two prompt sets: per-layer PCA, a linear decision boundary, cosine profiles."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerlab.cache import Activations
from steerlab.vectors import SteeringVector


@dataclass(frozen=True)
class LayerPCA:
    """2-D PCA of one layer's activations of two prompt sets (fitted on both together).

    Attributes:
        layer: model layer.
        pos, neg: (n_pos, 2) and (n_neg, 2) projected points.
        pos_centroid, neg_centroid: (2,) centroids in the PCA plane.
        explained: (2,) explained variance ratio of the two components.
        heldout_accuracy: accuracy of a logistic regression on the 2-D points, fitted on a
            seeded half and scored on the other half (how linearly separable the plane is).
        boundary: (w0, w1, b) of that classifier's line w . x + b = 0 in the PCA plane.
    """

    layer: int
    pos: np.ndarray
    neg: np.ndarray
    pos_centroid: np.ndarray
    neg_centroid: np.ndarray
    explained: np.ndarray
    heldout_accuracy: float
    boundary: tuple[float, float, float]


def layer_pca(pos: Activations, neg: Activations, layer: int, seed: int = 0) -> LayerPCA:
    """PCA of ``layer``'s activations of both sets, with a held-out linear boundary."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos.at(layer), neg.at(layer)]).numpy()  # (n_pos + n_neg, d_model)
    y = np.r_[np.ones(pos.n_prompts), np.zeros(neg.n_prompts)]
    pca = PCA(n_components=2, random_state=seed)
    z = pca.fit_transform(x)  # (n, 2)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(y))
    train, test = idx[: len(y) // 2], idx[len(y) // 2:]
    clf = LogisticRegression(max_iter=1000).fit(z[train], y[train])
    acc = float((clf.predict(z[test]) == y[test]).mean())
    w = clf.coef_[0]
    zp, zn = z[: pos.n_prompts], z[pos.n_prompts:]
    return LayerPCA(layer, zp, zn, zp.mean(0), zn.mean(0), pca.explained_variance_ratio_, acc,
                    (float(w[0]), float(w[1]), float(clf.intercept_[0])))


def linear_probe_accuracy(pos: Activations, neg: Activations, layer: int,
                          seed: int = 0) -> float:
    """Held-out accuracy of a logistic regression on the full-width activations."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos.at(layer), neg.at(layer)]).numpy()
    y = np.r_[np.ones(pos.n_prompts), np.zeros(neg.n_prompts)]
    idx = np.random.default_rng(seed).permutation(len(y))
    train, test = idx[: len(y) // 2], idx[len(y) // 2:]
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(x[train], y[train])
    return float((clf.predict(x[test]) == y[test]).mean())


def cosine_profile(vector: SteeringVector, vector_layer: int, acts: Activations) -> np.ndarray:
    """(n_layers_cached, n_prompts) cosine similarity between the vector of ``vector_layer`` and
    each cached layer's activation of each prompt."""
    v = vector[vector_layer].float()
    a = acts.acts.float()  # (L, n, d)
    cos = (a @ v) / (a.norm(dim=-1) * v.norm()).clamp_min(1e-12)
    return cos.numpy()
