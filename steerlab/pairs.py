"""Prompt pairs for patching: clean and corrupted prompts encoded pair by pair (each pair the
same length), and the capital-city fact pairs the patching notebook and lesson use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch

from steerlab.errors import EmptyInputError
from steerlab.metrics import last_logits, logit_diff
from steerlab.options import BackendName
from steerlab.stats import accuracy
from steerlab.validate import check_prompts

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["FACT_TEMPLATE", "FactPairs", "PatchInputError", "PromptPairs", "fact_pairs",
           "pair_behaviour", "prompt_pairs", "shared_prefix"]


class PatchInputError(EmptyInputError):
    """Clean and corrupted prompts that cannot be patched pair by pair."""


@dataclass
class PromptPairs:
    """Clean and corrupted prompts encoded pair by pair, each pair the same length."""

    clean: dict[str, torch.Tensor]      # right-padded input_ids / attention_mask, (n, T)
    corrupted: dict[str, torch.Tensor]
    lengths: torch.Tensor               # (n,) tokens per pair (the same in both prompts)
    tokens: list[str]                   # the first clean prompt's tokens (axis labels)


def prompt_pairs(model: Model, clean: Sequence[str], corrupted: Sequence[str],
           chat: bool | None) -> PromptPairs:
    """Encode ``clean`` and ``corrupted`` right-padded, refusing pairs whose lengths differ
    (patching writes position p of one run into position p of the other)."""
    clean, corrupted = check_prompts(clean), check_prompts(corrupted)
    if len(clean) != len(corrupted):
        raise PatchInputError(f"{len(clean)} clean prompts but {len(corrupted)} corrupted ones: "
                              "patching needs one corrupted prompt per clean prompt.")
    a = model.encode(clean, chat=chat, padding_side="right")
    b = model.encode(corrupted, chat=chat, padding_side="right")
    la, lb = a["attention_mask"].sum(1), b["attention_mask"].sum(1)
    bad = (la != lb).nonzero().flatten().cpu().tolist()
    if bad:
        i = bad[0]
        raise PatchInputError(
            f"Pair {i} has {int(la[i])} clean tokens ({clean[i]!r}) but {int(lb[i])} corrupted "
            f"tokens ({corrupted[i]!r}): activation patching writes position p of one run into "
            "position p of the other, so each pair must tokenize to the same length. Reword "
            "one prompt (e.g. swap a name for one of the same token length).")
    width = int(la.max())
    a = {k: v[:, :width] for k, v in a.items()}
    b = {k: v[:, :width] for k, v in b.items()}
    ids = a["input_ids"][0, :int(la[0])].cpu().tolist()
    tokens = [model.tokenizer.decode([t]) for t in ids]
    return PromptPairs(a, b, la.cpu(), tokens)


def shared_prefix(pairs: PromptPairs) -> torch.Tensor:
    """(n,) number of leading tokens each clean prompt shares with its corrupted one."""
    diff = (pairs.clean["input_ids"] != pairs.corrupted["input_ids"]).cpu()  # (n, T)
    width = diff.shape[1]
    first = torch.where(diff.any(1), diff.float().argmax(1), torch.full((len(diff),), width))
    return torch.minimum(first, pairs.lengths)


@dataclass
class FactPairs:
    """Clean and corrupted prompts with each pair's right and corrupting answer."""

    clean: list[str]
    corrupted: list[str]
    correct: list[str]
    incorrect: list[str]


FACT_TEMPLATE = "Fact: the capital city of {} is the city of"


def fact_pairs(model: Model, facts: Sequence[tuple[str, str]], n: int | None = None,
               template: str = FACT_TEMPLATE) -> FactPairs:
    """Pairs for factual-recall patching: clean = ``template`` with subject i, corrupted =
    with subject i + 1 (cyclically); answers: object i vs object i + 1. Only subjects whose
    prompt has the most common token length are kept (patching needs equal lengths)."""
    lengths = [len(model.tokenizer(template.format(s))["input_ids"]) for s, _ in facts]
    common = max(set(lengths), key=lengths.count)
    use = [f for f, length in zip(facts, lengths, strict=True) if length == common]
    if n is not None:
        use = use[:n]
    if len(use) < 2:
        raise PatchInputError(f"Fewer than 2 facts tokenize to the same length with {template!r}.")
    nxt = use[1:] + use[:1]
    return FactPairs([template.format(s) for s, _ in use], [template.format(s) for s, _ in nxt],
                     [o for _, o in use], [o for _, o in nxt])


def pair_behaviour(model: Model, pairs: FactPairs, chat: bool | None = None,
                   backend: BackendName = "hf") -> pd.DataFrame:
    """Does the model get the facts right at all? Per pair: logit(correct) - logit(incorrect)
    on the clean and on the corrupted prompt. ``.attrs``: the share of clean prompts that
    prefer the right answer and of corrupted prompts that prefer the corrupting one, each an
    :class:`steerlab.stats.Accuracy` with its 95% Wilson interval."""

    m = logit_diff(model, pairs.correct, pairs.incorrect, normalise=False)
    p = prompt_pairs(model, pairs.clean, pairs.corrupted, chat)
    be = model.backend(backend)
    n = len(p.lengths)
    with torch.no_grad():
        clean = m(last_logits(be.forward(p.clean), p.lengths), torch.arange(n)).cpu().numpy()
        corr = m(last_logits(be.forward(p.corrupted), p.lengths), torch.arange(n)).cpu().numpy()
    out = pd.DataFrame({"clean": pairs.clean, "correct": pairs.correct,
                        "incorrect": pairs.incorrect, "logit_diff_clean": clean,
                        "logit_diff_corrupted": corr})
    out.attrs["clean_right"] = accuracy(clean > 0)
    out.attrs["corrupted_flipped"] = accuracy(corr < 0)
    return out
