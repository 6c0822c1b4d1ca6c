"""Prompt pairs: equal lengths enforced pair by pair, the shared prefix, the capital-city
fact pairs and the model's behaviour on them (the tiny model of test_patching.py)."""

import pytest
import torch
from conftest import patch_model
from test_patching import CLEAN, CORRUPT

from steerlab.pairs import PatchInputError, prompt_pairs, shared_prefix


@pytest.fixture(scope="module")
def model():
    return patch_model()

def test_prompt_pairs_are_right_padded_and_their_shared_prefix_is_counted(model):
    p = prompt_pairs(model, ["ab", "abcd"], ["ax", "abcz"], chat=False)
    assert p.lengths.tolist() == [2, 4]
    assert p.clean["attention_mask"][0].tolist() == [1, 1, 0, 0]  # right-padded
    assert shared_prefix(p).tolist() == [1, 3]
    same = prompt_pairs(model, ["ab"], ["ab"], chat=False)
    assert shared_prefix(same).tolist() == [2]  # identical prompts share every token
    with pytest.raises(PatchInputError, match="Pair 0 has 2 clean tokens"):
        prompt_pairs(model, ["ab"], ["abc"], chat=False)
    assert torch.equal(prompt_pairs(model, CLEAN, CORRUPT, None).lengths,
                       prompt_pairs(model, CLEAN, CORRUPT, None).lengths)


def test_fact_pairs_and_behaviour(model):
    from steerlab.pairs import FactPairs, fact_pairs, pair_behaviour

    facts = [("Chad", "N"), ("Peru", "L"), ("Cuba", "H"), ("Oman", "M"), ("Iran", "T"),
             ("Mali", "B"), ("Egypt", "C")]
    pairs = fact_pairs(model, facts, template="In {} ")
    assert isinstance(pairs, FactPairs) and len(pairs.clean) == 6  # Egypt's length differs
    assert pairs.corrupted[:-1] == pairs.clean[1:] and pairs.corrupted[-1] == pairs.clean[0]
    assert pairs.incorrect[0] == pairs.correct[1]
    b = pair_behaviour(model, pairs)
    assert list(b.columns) == ["clean", "correct", "incorrect", "logit_diff_clean",
                               "logit_diff_corrupted"]
    assert b.attrs["clean_right"].n == 6
    assert b.attrs["clean_right"].acc == float((b["logit_diff_clean"] > 0).mean())
    with pytest.raises(PatchInputError, match="Fewer than 2"):
        fact_pairs(model, facts[:1])
