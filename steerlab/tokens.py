"""The one rule for how an answer's text becomes tokens: the tokens it has as a continuation
of a prompt (with the leading space a word after ``Answer:`` has, unless the text starts with
whitespace or follows a chat template's turn start), and the one token an answer is scored by
(the first of them that is not whitespace alone: tokenizers that split a leading space into a
token of its own give the word's token, not the space's). Multiple-choice letters and text
options (:mod:`steerlab.evaluation`) and the patching metrics' answers
(:func:`steerlab.metrics.answer_token_ids`) all ask here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerlab.errors import OptionError

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["answer_token_id", "continuation_ids"]


def continuation_ids(model: Model, text: str, space: bool = True) -> list[int]:
    """The token ids of ``text`` following a prompt: with a leading space when ``space`` and
    the text does not start with whitespace; no special tokens."""
    lead = " " if space and not text[:1].isspace() else ""
    return list(model.tokenizer.encode(lead + text, add_special_tokens=False))


def answer_token_id(model: Model, text: str, space: bool = True) -> int:
    """The token ``text`` is scored by as an answer: the first of its
    :func:`continuation_ids` that is not whitespace alone."""
    ids = continuation_ids(model, text, space)
    words = [t for t in ids if model.tokenizer.decode([t]).strip()]
    if not words:
        raise OptionError(f"Answer {text!r} has no token that is not whitespace: "
                          "an answer needs at least one visible character.")
    return words[0]
