"""Patching metrics: one value per row from the logits at each prompt's last real token.

A :class:`Metric` sees those logits, (rows, vocab), and the index of the pair each row belongs
to, and returns one value per row. :func:`logit_diff` is normalised so the clean run scores 1
and the corrupted run 0 (the IOI convention), from the batch means. An answer given as text
is scored by its first token (:func:`answer_token_ids`, the one answer-token rule).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from steerlab.errors import OptionError
from steerlab.padding import at_last, mask_of
from steerlab.tokens import answer_token_id

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["Metric", "answer_logprob", "answer_prob", "answer_token_ids", "as_metric",
           "last_logits", "logit_diff"]


@dataclass
class Metric:
    """A per-row metric on last-token logits.

    ``fn(logits (R, vocab) float32, pairs (R,) long) -> (R,)``; ``normalise``: report
    ``(v - mean corrupted) / (mean clean - mean corrupted)``, so clean = 1 and corrupted = 0.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    normalise: bool = False

    def __call__(self, logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """One value per row, on the host (a few numbers per forward: the one copy back)."""
        out = self.fn(logits.float(), pairs.to(logits.device))
        if not isinstance(out, torch.Tensor) or out.shape != pairs.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise OptionError(f"Metric {self.name!r} returned {got}; it must return one value "
                              f"per row, shape {tuple(pairs.shape)} (not a mean over rows).")
        return out.cpu()


def answer_token_ids(model: Model, answers: Sequence[str | int]) -> torch.Tensor:
    """One token id per answer: an int as is, a string by :func:`steerlab.tokens.
    answer_token_id` (the one answer-token rule: its first word token as a continuation, with
    the leading space a continuation has)."""
    ids = [a if isinstance(a, int) else answer_token_id(model, a) for a in answers]
    return torch.tensor(ids, dtype=torch.long)


def logit_diff(model: Model, correct: Sequence[str | int], incorrect: Sequence[str | int],
               normalise: bool = True) -> Metric:
    """logit(correct) - logit(incorrect) per pair (one answer per pair, token ids or strings
    whose first token is used), normalised so clean = 1 and corrupted = 0 by default."""
    good, bad = answer_token_ids(model, correct), answer_token_ids(model, incorrect)
    if len(good) != len(bad):
        raise OptionError(f"{len(good)} correct answers but {len(bad)} incorrect ones.")

    def fn(logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(pairs), device=logits.device)
        g, b = good.to(logits.device)[pairs], bad.to(logits.device)[pairs]
        return logits[rows, g] - logits[rows, b]

    return Metric("logit_diff" + (" (normalised)" if normalise else ""), fn, normalise)


def answer_logprob(model: Model, answers: Sequence[str | int]) -> Metric:
    """Log-probability of each pair's answer token."""
    ids = answer_token_ids(model, answers)

    def fn(logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(pairs), device=logits.device)
        return torch.log_softmax(logits, -1)[rows, ids.to(logits.device)[pairs]]

    return Metric("answer_logprob", fn)


def answer_prob(model: Model, answers: Sequence[str | int]) -> Metric:
    """Probability of each pair's answer token."""
    lp = answer_logprob(model, answers)
    return Metric("answer_prob", lambda lg, p: lp.fn(lg, p).exp())


def as_metric(metric: Metric | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Metric:
    """``metric`` as a :class:`Metric` (a plain callable gets its name)."""
    if isinstance(metric, Metric):
        return metric
    if not callable(metric):
        raise OptionError("metric must be a steerlab.metrics.Metric or a callable "
                          "(logits (rows, vocab), pair index (rows,)) -> (rows,).")
    return Metric(getattr(metric, "__name__", "metric"), metric)


def last_logits(logits: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(rows, vocab) float32 logits at each row's last real token of right-padded rows of
    ``lengths`` tokens."""
    return at_last(logits, mask_of(lengths, logits.shape[1])).float()
