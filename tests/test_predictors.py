"""The training sets' predictors of steerability (steerlab.predictors), on sets built to have
known answers, and stored with a difference-of-means vector."""

import math

import torch
from conftest import PROMPTS

from steerlab.cache import cache_activations
from steerlab.predictors import predictors
from steerlab.vectors import diff_of_means


def _sets(shift, n=60, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.zeros(d)
    mu[0] = shift
    return (mu + torch.randn(n, d, generator=gen), -mu + torch.randn(n, d, generator=gen))


def test_well_separated_sets_score_high_and_identical_ones_do_not():
    far = predictors(*_sets(4.0))
    assert far["probe_acc"] == 1.0 and far["d_prime"] > 6 and far["consistency"] > 0.6
    # d' of two unit-variance Gaussians 2 * shift apart along v is 2 * shift = 8
    assert abs(far["d_prime"] - 8.0) < 1.5
    same = predictors(*_sets(0.0))
    assert 0.3 <= same["probe_acc"] <= 0.7 and same["consistency"] < far["consistency"]
    # the difference of means of two draws of one distribution still separates the very
    # examples it was fitted on a little; less than any real separation
    assert same["d_prime"] < 1.5
    zero = predictors(torch.ones(4, 3), torch.ones(4, 3))
    assert all(math.isnan(x) for x in zero.values())


def test_difference_of_means_stores_them_per_layer(tiny_llama):
    pos = cache_activations(tiny_llama, PROMPTS[:4], layers=[1, 2])
    neg = cache_activations(tiny_llama, PROMPTS[4:8] if len(PROMPTS) >= 8 else
                            [p + " no" for p in PROMPTS[:4]], layers=[1, 2])
    vec = diff_of_means(pos, neg)
    assert set(vec.meta["predictors"]) == {"1", "2"}
    assert vec.meta["predictors"]["1"] == predictors(pos.acts[0], neg.acts[0])
