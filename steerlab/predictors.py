"""Cheap predictors of whether a difference-of-means vector will steer, from its training sets
alone (Tan et al. 2024; Braun et al. 2025): computed at extraction and stored with the vector
(``meta["predictors"]``), so a reliability report can set them beside the measured
steerability, layer by layer.

Per layer, with ``v`` the vector and ``v̂`` its direction:

* ``consistency``: the mean cosine to ``v`` of each training example's difference to the
  other set's mean (``p_i - mean(neg)`` and ``mean(pos) - n_j``): near 1 when every example
  points the vector's way, near 0 when the mean hides disagreeing examples;
* ``d_prime``: the separation of the two sets' projections on ``v̂`` (difference of their
  means over their pooled standard deviation);
* ``probe_acc``: the held-out accuracy of a linear probe (shrinkage LDA fitted on the even
  examples of each set, tested on the odd ones): whether the two sets are linearly separable
  at that layer at all, in any direction.
"""

from __future__ import annotations

import torch

__all__ = ["predictors"]


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) / (a.norm(dim=-1) * b.norm()).clamp_min(1e-12)


def _probe_accuracy(pos: torch.Tensor, neg: torch.Tensor, shrink: float = 0.1) -> float:
    """Held-out accuracy of shrinkage LDA: fitted on the even rows, tested on the odd ones."""
    tr_p, te_p, tr_n, te_n = pos[0::2], pos[1::2], neg[0::2], neg[1::2]
    if min(len(tr_p), len(te_p), len(tr_n), len(te_n)) == 0:
        return float("nan")
    mu_p, mu_n = tr_p.mean(0), tr_n.mean(0)
    centred = torch.cat([tr_p - mu_p, tr_n - mu_n])
    cov = centred.T @ centred / max(len(centred) - 2, 1)
    d = cov.shape[0]
    ridge = shrink * float(cov.trace()) / d + 1e-6  # > 0 even for sets without spread
    cov = (1 - shrink) * cov + ridge * torch.eye(d, dtype=cov.dtype)
    w = torch.linalg.solve(cov, mu_p - mu_n)
    cut = float((mu_p + mu_n) @ w) / 2
    right = int(((te_p @ w) > cut).sum()) + int(((te_n @ w) <= cut).sum())
    return right / (len(te_p) + len(te_n))


def predictors(pos: torch.Tensor, neg: torch.Tensor) -> dict[str, float]:
    """The predictors of one layer from its two training sets, (n_pos, d) and (n_neg, d)."""
    p, n = pos.double(), neg.double()
    v = p.mean(0) - n.mean(0)
    if float(v.norm()) == 0.0:
        nan = float("nan")
        return {"consistency": nan, "d_prime": nan, "probe_acc": nan}
    diffs = torch.cat([p - n.mean(0), p.mean(0) - n])
    unit = v / v.norm()
    sp, sn = p @ unit, n @ unit
    pooled = ((sp.var(unbiased=True) + sn.var(unbiased=True)) / 2).sqrt() if min(
        len(sp), len(sn)) > 1 else torch.tensor(float("nan"))
    return {"consistency": float(_cos(diffs, v).mean()),
            "d_prime": float((sp.mean() - sn.mean()) / pooled.clamp_min(1e-12)),
            "probe_acc": _probe_accuracy(p, n)}
