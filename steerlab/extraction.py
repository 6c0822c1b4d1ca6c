"""Steering vectors from a model: cache two prompt sets and take a vector (the difference of
means, or a control of its norm), or the reference norms a learned vector's ``norm``
coefficients are measured in. The vectors themselves are :mod:`steerlab.vectors`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from steerlab.activations import Activations
from steerlab.cache import cache_activations
from steerlab.errors import OptionError
from steerlab.options import METHODS, BackendName, Reduction, Site, check
from steerlab.tasks import check_disjoint, extraction_prompts
from steerlab.vectors import (
    SITE,
    SteeringVector,
    diff_of_means,
    match_norms,
    random_like,
    shuffled_diff_of_means,
)

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["extract_pair", "extract_vector", "reference_norms", "vector_from_pair"]


def extract_pair(model: Model, source: str | tuple[Sequence[str], Sequence[str]],
                 layers: Sequence[int] | int | None = None, *, n: int | None = None,
                 site: Site = SITE, reduction: Reduction = "last", chat: bool | None = None,
                 batch_size: int = 16, backend: BackendName = "hf", exclude: Sequence[Any] = (),
                 progress: bool | None = None) -> tuple[Activations, Activations]:
    """The cached activations of both prompt sets of ``source``: an extraction source name
    (:data:`steerlab.tasks.EXTRACT_SOURCES`, first ``n`` of each) or a ``(positive,
    negative)`` pair of prompt lists. ``exclude``: evaluation items the extraction prompts must
    not overlap (a clear error names the shared ones). ``chat`` follows the
    model by default (:meth:`~steerlab.models.Model.uses_chat`), as evaluation does."""

    if isinstance(source, str):
        pos_q, neg_q = extraction_prompts(source, n)
    elif isinstance(source, tuple) and len(source) == 2:
        pos_q, neg_q = list(source[0])[:n], list(source[1])[:n]
    else:
        raise OptionError("source must name an extraction set (e.g. 'shipped', 'mmlu-pro') or "
                          f"be a (positive, negative) pair of prompt lists, got {type(source)}.")
    if exclude:
        check_disjoint(pos_q + neg_q, list(exclude))
    kw: dict[str, Any] = {"layers": layers if not isinstance(layers, int) else [layers],
                          "reduction": reduction, "chat": chat, "batch_size": batch_size,
                          "backend": backend, "site": site, "progress": progress}
    return cache_activations(model, pos_q, **kw), cache_activations(model, neg_q, **kw)


def extract_vector(model: Model, source: str | tuple[Sequence[str], Sequence[str]],
                   layers: Sequence[int] | int | None = None, *, method: str = "diff_means",
                   seed: int = 0, n: int | None = None, site: Site = SITE,
                   reduction: Reduction = "last", chat: bool | None = None, batch_size: int = 16,
                   backend: BackendName = "hf", exclude: Sequence[Any] = (),
                   progress: bool | None = None) -> SteeringVector:
    """The steering-vector recipe in one call: cache both prompt sets of ``source`` at
    ``site`` (see :func:`extract_pair`) and take the difference of means (``method=
    "diff_means"``), or a control of the same norm per layer (``random``, ``shuffled``), or the
    opposite direction (``memorisation``: negative minus positive). The vector carries the
    reference norms its ``scale="norm"`` coefficients are measured in.

    Example:
        >>> vec = extract_vector(model, "shipped", layers=[12])
        >>> with steer(model, vec, coeff=0.2, scale="norm"): ...
    """

    check("method", method, METHODS)
    pos, neg = extract_pair(model, source, layers, n=n, site=site, reduction=reduction,
                            chat=chat, batch_size=batch_size, backend=backend, exclude=exclude,
                            progress=progress)
    return vector_from_pair(pos, neg, method, seed)


def vector_from_pair(pos: Activations, neg: Activations, method: str = "diff_means",
                     seed: int = 0) -> SteeringVector:
    """``method``'s vector from cached activations: ``diff_means`` (pos - neg), ``random`` (a
    seeded Gaussian direction per layer), ``shuffled`` (difference of means under permuted
    labels), both with the difference of means' norm per layer, or ``memorisation``
    (neg - pos)."""
    if method == "memorisation":
        return diff_of_means(neg, pos, method="memorisation")
    dm = diff_of_means(pos, neg)
    if method == "random":
        return random_like(dm, seed=seed)
    if method == "shuffled":
        return match_norms(shuffled_diff_of_means(pos, neg, seed=seed), dm)
    return dm


def reference_norms(model: Model, prompts: Sequence[str], layers: Sequence[int] | int | None = None,
                    site: Site = SITE, chat: bool | None = None, reduction: Reduction = "last",
                    backend: BackendName = "hf") -> dict[int, float]:
    """Layer -> mean norm of the ``reduction`` activations of ``prompts`` at ``site``: the
    reference norms of :meth:`SteeringVector.with_ref_norms` for a vector that was not
    extracted from prompts (e.g. a learned one)."""

    acts = cache_activations(model, prompts, layers if not isinstance(layers, int) else [layers],
                             reduction=reduction, chat=chat, site=site, backend=backend)
    return acts.mean_norms()
