"""Geometry of the two prompt sets: per-layer PCA, a linear decision boundary, cosine profiles;
and the tables the notebooks show (separability, costs, logit-lens and resource tables)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from steerlab.activations import Activations
from steerlab.vectors import SteeringVector, cosines


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

    x = torch.cat([pos.at(layer), neg.at(layer)]).cpu().numpy()  # (n_pos + n_neg, d_model)
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

    x = torch.cat([pos.at(layer), neg.at(layer)]).cpu().numpy()
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
    cos = cosines(a, v)
    return cos.cpu().numpy()


# ---- notebook 01: the prompt sets of several models ------------------------------------------

PromptSets = Mapping[str, tuple[Activations, Activations]]
"""model name -> (reasoning activations, memorisation activations), all layers cached."""


def depth_layer(layers: Sequence[int], frac: float = 0.4) -> int:
    """The cached layer at ``frac`` of the depth (``round(frac * n_layers)`` when every layer
    0..n-1 is cached, the last layer at most)."""
    if not layers:
        raise ValueError("No layers cached.")
    return layers[min(round(frac * len(layers)), len(layers) - 1)]


def depth_pcas(sets: PromptSets, frac: float = 0.4, seed: int = 0) -> dict[str, LayerPCA]:
    """:func:`layer_pca` of each model's two prompt sets at ``frac`` of its depth (Figure 1)."""
    return {name: layer_pca(pos, neg, depth_layer(pos.layers, frac), seed)
            for name, (pos, neg) in sets.items()}


def separability_table(sets: PromptSets, n_points: int = 10, seed: int = 0) -> pd.DataFrame:
    """How separable the two prompt sets are at about ``n_points`` layers spread over each
    model's depth: held-out accuracy of a logistic regression on the 2-D PCA plane
    (``pca2d_heldout``) and on the full width (``full_width_heldout``).

    Returns:
        Columns ``model, layer, pca2d_heldout, full_width_heldout``, one row per (model, layer).
    """
    rows = []
    for name, (pos, neg) in sets.items():
        layers = list(pos.layers)
        for layer in layers[::max(1, len(layers) // n_points)]:
            rows.append({"model": name, "layer": layer,
                         "pca2d_heldout": layer_pca(pos, neg, layer, seed).heldout_accuracy,
                         "full_width_heldout": linear_probe_accuracy(pos, neg, layer, seed)})
    return pd.DataFrame(rows, columns=["model", "layer", "pca2d_heldout", "full_width_heldout"])


def chat_model(sets: PromptSets) -> str:
    """The first model whose activations were read through the chat template (the
    instruction-tuned one), else the first model."""
    if not sets:
        raise ValueError("No models.")
    return next((name for name, (pos, _) in sets.items() if pos.chat), next(iter(sets)))


# ---- notebook 04: cost and benefit ------------------------------------------------------------

MB = 2**20
GSM8K_TRAIN = 7473  # problems in GSM8K's training split


class _Measured(Protocol):
    seconds: float
    peak_rss: int


def cost_table(model: str, extract: _Measured, cell: _Measured, finetune: Mapping[str, Any],
               n_extract_prompts: int, n_cell_items: int, finetune_batch: int,
               epoch_problems: int = GSM8K_TRAIN) -> pd.DataFrame:
    """The cost-benefit rows of one model (the seed's Table 1, measured on this machine).

    Args:
        model: model name (the ``model`` column).
        extract, cell: :class:`steerlab.cost.Measured` of extracting a vector (all layers) and
            of one steered sweep cell.
        finetune: :func:`steerlab.cost.full_finetune_steps` of the same model.
        n_extract_prompts: prompts the extraction read (both sets together).
        n_cell_items: evaluation items of the sweep cell.
        finetune_batch: prompts per fine-tuning step.
        epoch_problems: training problems of one epoch, for the extrapolated row.

    Returns:
        Four rows (extraction, sweep cell, one measured fine-tuning step, one extrapolated
        epoch of fine-tuning) with columns ``model, what, kind ("measured"/"extrapolated"),
        seconds, peak_rss_MB, trainable_params, optimizer_state_MB``.
    """
    ft_rss, ft_params = finetune["peak_rss_bytes"] / MB, finetune["trainable_params"]
    ft_state = finetune["optimizer_state_bytes"] / MB
    steps_epoch = epoch_problems / finetune_batch
    rows = [
        {"what": f"extract vector ({n_extract_prompts} prompts, all layers)", "kind": "measured",
         "seconds": extract.seconds, "peak_rss_MB": extract.peak_rss / MB,
         "trainable_params": 0, "optimizer_state_MB": 0},
        {"what": f"one sweep cell ({n_cell_items} items, steered)", "kind": "measured",
         "seconds": cell.seconds, "peak_rss_MB": cell.peak_rss / MB,
         "trainable_params": 0, "optimizer_state_MB": 0},
        {"what": f"full fine-tuning step (batch {finetune_batch}, AdamW)", "kind": "measured",
         "seconds": finetune["seconds_per_step"], "peak_rss_MB": ft_rss,
         "trainable_params": ft_params, "optimizer_state_MB": ft_state},
        {"what": f"full fine-tuning, 1 epoch of GSM8K train ({epoch_problems:,} problems)",
         "kind": "extrapolated", "seconds": finetune["seconds_per_step"] * steps_epoch,
         "peak_rss_MB": ft_rss, "trainable_params": ft_params, "optimizer_state_MB": ft_state},
    ]
    return pd.DataFrame([{"model": model, **r} for r in rows])


# ---- notebook 06: reading learned vectors -----------------------------------------------------


def lens_side_by_side(lens: pd.DataFrame) -> pd.DataFrame:
    """One layer's :func:`steerlab.lens.logit_lens` as a table: rank, top token and its cosine,
    bottom token and its cosine (tokens shown with ``repr``, cosines to 3 decimals).

    Columns: ``rank, top token, cos, bottom token, "cos "`` (the trailing space keeps the two
    cosine columns apart)."""
    if lens.layer.nunique() > 1:
        raise ValueError(f"One layer at a time, got layers {sorted(lens.layer.unique())}.")
    top = lens[lens.side == "top"].sort_values("rank").reset_index(drop=True)
    bottom = lens[lens.side == "bottom"].sort_values("rank").reset_index(drop=True)
    return pd.DataFrame({"rank": top["rank"], "top token": top.token.map(repr),
                         "cos": top.cosine.round(3), "bottom token": bottom.token.map(repr),
                         "cos ": bottom.cosine.round(3)})


CLUSTER_COLUMNS = ["layer", "cluster", "size", "representative", "mean_score", "cohesion"]


def cluster_view(clusters: pd.DataFrame) -> pd.DataFrame:
    """The columns of :func:`steerlab.lens.cluster_table` shown in the Table 2 figure: layer,
    cluster, size, representative tokens, mean lens score and cohesion."""
    return clusters[CLUSTER_COLUMNS]


# the paper's model (Sinii et al.): one d-vector per layer of Llama-3.1-8B
PAPER_LAYERS, PAPER_D_MODEL, PAPER_PARAMS = 32, 4096, 8.03e9


def resource_table(costs: Sequence[Mapping[str, Any]], batch_size: int = 8,
                   paper: bool = True) -> pd.DataFrame:
    """The paper's Table 3 with this machine's numbers: one row per
    :func:`steerlab.cost.training_step_costs` result, and (``paper``) a last row for the paper's
    own setting computed from its architecture (32 x 4096 vector parameters of Llama-3.1-8B,
    Adam's two fp32 moments as optimizer state; its times are not known here, so NaN).

    Columns: ``method, trainable params, % of model, optimizer state (MB),
    s / step (<batch_size> prompts), peak RSS (MB)``.
    """
    step_col = f"s / step ({batch_size} prompts)"
    rows = [{"method": c["method"], "trainable params": c["trainable_params"],
             "% of model": 100 * c["trainable_params"] / c["total_params"],
             "optimizer state (MB)": c["optimizer_state_bytes"] / MB,
             step_col: c["seconds_per_step"], "peak RSS (MB)": c["peak_rss_bytes"] / MB}
            for c in costs]
    if paper:
        n = PAPER_LAYERS * PAPER_D_MODEL
        rows.append({"method": "vectors (paper: Llama-3.1-8B)", "trainable params": n,
                     "% of model": 100 * n / PAPER_PARAMS, "optimizer state (MB)": 2 * 4 * n / MB})
    return pd.DataFrame(rows, columns=["method", "trainable params", "% of model",
                                       "optimizer state (MB)", step_col, "peak RSS (MB)"])


def step_time_note(history: pd.DataFrame) -> str:
    """One line on the RLOO step time of a training run (its
    :func:`steerlab.train_journal.history`): the median seconds per step and over how many
    steps; says so when none are recorded."""
    if "seconds" not in history or not history.seconds.notna().any():
        return "No RLOO step times recorded for this run (run notebook 05 to record one)."
    return (f"RLOO step of the recorded run (64 rollouts + backward): "
            f"{history.seconds.median():.1f} s median over {history.seconds.notna().sum()} steps")
