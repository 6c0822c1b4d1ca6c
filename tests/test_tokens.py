"""The one answer-token rule (:mod:`steerlab.tokens`)."""

from types import SimpleNamespace

import pytest

from steerlab.errors import OptionError
from steerlab.tokens import answer_token_id, continuation_ids


class SplitSpace:
    """A tokenizer that gives a leading space a token of its own (id 0), one token per
    other character (its code point): the case where the first token is whitespace alone."""

    def encode(self, text, add_special_tokens=False):
        assert not add_special_tokens
        return [0 if c == " " else ord(c) for c in text]

    def decode(self, ids):
        return "".join(" " if i == 0 else chr(i) for i in ids)


def test_continuation_has_one_leading_space_unless_chat_or_already_spaced():
    m = SimpleNamespace(tokenizer=SplitSpace())
    assert continuation_ids(m, "42") == [0, ord("4"), ord("2")]
    assert continuation_ids(m, " 42") == [0, ord("4"), ord("2")]
    assert continuation_ids(m, "42", space=False) == [ord("4"), ord("2")]


def test_answer_token_is_the_first_visible_one():
    m = SimpleNamespace(tokenizer=SplitSpace())
    assert answer_token_id(m, "42") == ord("4")  # not the space's token
    assert answer_token_id(m, "B", space=False) == ord("B")
    with pytest.raises(OptionError, match="whitespace"):
        answer_token_id(m, "   ")


def test_real_tokenizer_letters_and_words(tiny_llama):
    tok = tiny_llama.tokenizer
    for letter in "ABCD":
        assert answer_token_id(tiny_llama, letter) == tok.encode(
            f" {letter}", add_special_tokens=False)[-1]
    assert continuation_ids(tiny_llama, "Paris") == tok.encode(" Paris", add_special_tokens=False)
    # this tokenizer gives the space a token of its own: answers are read by their first letter
    assert tok.encode(" Paris", add_special_tokens=False)[0] != answer_token_id(tiny_llama, "Paris")
    assert answer_token_id(tiny_llama, "Paris") == tok.encode("P", add_special_tokens=False)[0]
