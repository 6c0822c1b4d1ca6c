"""The one extraction recipe (steerlab.extraction): both prompt sets cached, the difference of
means or a control of its norm, and the reference norms its ``norm`` coefficients use."""

import pytest
import torch

from steerlab import options
from steerlab.cache import cache_activations
from steerlab.errors import OptionError
from steerlab.extraction import extract_pair, extract_vector, reference_norms, vector_from_pair
from steerlab.vectors import diff_of_means

POS = ["What is 2 + 2?", "Compute 17 times 3.", "If x + 4 = 9, what is x?"]
NEG = ["What is the capital of France?", "Who wrote Hamlet?", "What colour is the sky?"]


def _vec(model):
    return extract_vector(model, (POS, NEG), [1, 2])


def test_extract_vector_equals_the_recipe_by_hand_with_reference_norms(tiny_llama):
    vec = _vec(tiny_llama)
    pos = cache_activations(tiny_llama, POS, layers=[1, 2])
    neg = cache_activations(tiny_llama, NEG, layers=[1, 2])
    by_hand = diff_of_means(pos, neg)
    for l in (1, 2):
        torch.testing.assert_close(vec[l], by_hand[l], rtol=0, atol=0)
        both = torch.cat([pos.at(l), neg.at(l)]).norm(dim=-1).mean()
        assert vec.ref_norms[l] == pytest.approx(float(both), rel=1e-6)
    assert reference_norms(tiny_llama, POS + NEG, [1])[1] == pytest.approx(vec.ref_norms[1],
                                                                           rel=1e-5)


def test_every_method_keeps_the_reference_norms_and_bad_sources_fail(tiny_llama):
    dm = _vec(tiny_llama)
    for method in options.METHODS:
        v = extract_vector(tiny_llama, (POS, NEG), [1, 2], method=method)
        assert v.ref_norms == pytest.approx(dm.ref_norms), method
    with pytest.raises(OptionError, match="method"):
        extract_vector(tiny_llama, (POS, NEG), [1], method="pca")
    with pytest.raises(OptionError, match="pair of prompt lists"):
        extract_vector(tiny_llama, POS, [1])  # type: ignore[arg-type]


def test_the_pair_and_its_vector_are_the_recipe_in_two_steps(tiny_llama):
    pos, neg = extract_pair(tiny_llama, (POS, NEG), [1, 2])
    one_call = _vec(tiny_llama)
    two_steps = vector_from_pair(pos, neg)
    for l in (1, 2):
        torch.testing.assert_close(two_steps[l], one_call[l], rtol=0, atol=0)
    mem = vector_from_pair(pos, neg, "memorisation")
    torch.testing.assert_close(mem[1], -one_call[1], rtol=0, atol=0)
