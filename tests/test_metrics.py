"""Patching metrics: the answer-token rule, one value per row, the last real token's logits."""

import pytest
import torch
from conftest import tiny_model

from steerlab.errors import OptionError
from steerlab.metrics import (
    Metric,
    answer_logprob,
    answer_prob,
    answer_token_ids,
    as_metric,
    last_logits,
    logit_diff,
)


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama")


def test_answers_are_read_by_their_first_visible_token_after_a_space(model):
    """The tiny tokenizer gives a leading space a token of its own: each answer is read by its
    first letter's token, not by the space every answer shares (so answers differ)."""
    enc = model.tokenizer.encode
    assert enc(" ab", add_special_tokens=False)[0] == enc(" cd", add_special_tokens=False)[0]
    assert answer_token_ids(model, [7, "ab", " cd"]).tolist() == [
        7, enc("a", add_special_tokens=False)[0], enc("c", add_special_tokens=False)[0]]


def test_metrics_give_one_value_per_row_of_the_right_pair():
    logits = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 5.0], [1.0, 4.0, 0.0]])
    pairs = torch.tensor([0, 1, 1])  # rows 1 and 2 both belong to pair 1
    m = Metric("diff", lambda lg, p: lg[torch.arange(len(p)), p] - lg[:, 2])
    assert m(logits, pairs).tolist() == [0.0 - 3.0, 0.0 - 5.0, 4.0 - 0.0]


def test_logit_diff_logprob_and_prob_agree_with_their_definitions(model):
    logits = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    pairs = torch.tensor([1, 0, 1])
    good, bad = [3, 5], [4, 6]
    d = logit_diff(model, good, bad)
    assert d.normalise and "normalised" in d.name
    want = torch.stack([logits[r, good[p]] - logits[r, bad[p]] for r, p in enumerate(pairs)])
    torch.testing.assert_close(d(logits, pairs), want)
    lp = answer_logprob(model, good)(logits, pairs)
    ref = torch.log_softmax(logits, -1)[torch.arange(3), torch.tensor(good)[pairs]]
    torch.testing.assert_close(lp, ref)
    torch.testing.assert_close(answer_prob(model, good)(logits, pairs), ref.exp())
    with pytest.raises(OptionError, match="2 correct answers but 1 incorrect"):
        logit_diff(model, good, bad[:1])


def test_a_metric_that_averages_rows_is_refused():
    m = as_metric(lambda lg, p: lg.mean())
    with pytest.raises(OptionError, match="one value per row"):
        m(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(OptionError, match="callable"):
        as_metric(3)  # type: ignore[arg-type]
    assert as_metric(m) is m


def test_last_logits_are_at_each_rows_last_real_token():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    got = last_logits(logits, torch.tensor([2, 4]))
    torch.testing.assert_close(got, torch.stack([logits[0, 1], logits[1, 3]]))
