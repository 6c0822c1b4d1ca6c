"""The three backends give the same activations, steered logits and steered generations on the
real embedded SmolLM2 (fp32). Tolerances: TransformerLens runs eager attention, so its numbers
differ from sdpa's in the last bits; we allow 1e-3 absolute on activations and logits."""

import pytest
import torch
from conftest import no_hooks

from steerlab.cache import cache_activations, cache_sites
from steerlab.inference import generate
from steerlab.steering import steer
from steerlab.vectors import SteeringVector

pytestmark = pytest.mark.slow
BACKENDS = ["hf", "tlens", "nnsight"]
PROMPTS = ["What is the capital of France?", "Tom has 3 apples and buys 5 more. How many?",
           "Which is larger, 37 or 52?"]
TOL = {"atol": 1e-3, "rtol": 1e-3}


@pytest.fixture(scope="module")
def vector(smollm):
    gen = torch.Generator().manual_seed(0)
    return SteeringVector({8: 20.0 * torch.randn(576, generator=gen) / 24.0}, smollm.hf_id, 576)


def _steered_logits(model, vector, backend):
    enc = model.encode(PROMPTS)
    with torch.no_grad(), steer(model, vector, coeff=3.0, backend=backend):
        logits = model.backend(backend).forward(enc)
    return logits[enc["attention_mask"].bool()]  # real (non-pad) positions only


def test_same_activations(smollm):
    ref = cache_activations(smollm, PROMPTS, layers=[0, 8, 29], reduction="mean")
    for backend in BACKENDS[1:]:
        got = cache_activations(smollm, PROMPTS, layers=[0, 8, 29], reduction="mean",
                                backend=backend)
        torch.testing.assert_close(got.acts, ref.acts, **TOL)


def test_same_steered_logits(smollm, vector):
    ref = _steered_logits(smollm, vector, "hf")
    enc = smollm.encode(PROMPTS)
    with torch.no_grad():
        plain = smollm.backend("hf").forward(enc)[enc["attention_mask"].bool()]
    assert (ref - plain).abs().max() > 1.0  # the steering really changes the logits
    for backend in BACKENDS[1:]:
        torch.testing.assert_close(_steered_logits(smollm, vector, backend), ref, **TOL)
    assert no_hooks(smollm)


@pytest.mark.parametrize("positions", ["generated", "prompt"])
def test_same_steered_generation(smollm, vector, positions):
    """Each backend tells the prompt's forward from the decoding steps the same way."""
    outs = {}
    for backend in BACKENDS:
        with steer(smollm, vector, coeff=3.0, positions=positions, backend=backend):
            outs[backend] = generate(smollm, PROMPTS[:2], max_new_tokens=10, chat=True,
                                     backend=backend)
    assert outs["tlens"] == outs["hf"] == outs["nnsight"]
    assert generate(smollm, PROMPTS[:2], max_new_tokens=10, chat=True) != outs["hf"]
    assert no_hooks(smollm)


def test_same_plain_generation(smollm):
    """Unsteered KV-cached generation agrees across backends: catches a library that stops
    handing the cache to its layers (TransformerLens 4.3's bridge on transformers 5.24 did)."""
    outs = {b: generate(smollm, PROMPTS, max_new_tokens=12, chat=True, backend=b)
            for b in BACKENDS}
    assert outs["tlens"] == outs["hf"] == outs["nnsight"]
    assert outs["hf"][0].startswith("The capital of France is Paris")


def test_same_at_every_site(smollm):
    """Captures at every site and steering at every steerable site agree across the three
    backends on the real model (TransformerLens's hook names mapped to steerlab's sites)."""
    sites = list(smollm.sites)
    assert sites == ["resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post"]
    ref = cache_sites(smollm, PROMPTS, sites, layers=[3, 17], reduction="none")
    for backend in BACKENDS[1:]:
        got = cache_sites(smollm, PROMPTS, sites, layers=[3, 17], reduction="none",
                          backend=backend)
        for site in sites:
            torch.testing.assert_close(got[site].acts, ref[site].acts, **TOL)
    gen = torch.Generator().manual_seed(1)
    v = 4.0 * torch.randn(smollm.d_model, generator=gen)
    enc = smollm.encode(PROMPTS)
    for site in set(sites) - {"z"}:
        outs = {}
        for backend in BACKENDS:
            with torch.no_grad(), steer(smollm, v, layers=8, site=site, backend=backend):
                outs[backend] = smollm.backend(backend).forward(enc)[enc["attention_mask"].bool()]
        for backend in BACKENDS[1:]:
            torch.testing.assert_close(outs[backend], outs["hf"], **TOL)

    def knock_out_head_3(z):  # (B, T, n_heads, d_head) on every backend
        z = z.clone()
        z[..., 3, :] = 0
        return z

    outs = {}
    for backend in BACKENDS:
        be = smollm.backend(backend)
        handle = be.add_edit(8, knock_out_head_3, site="z")
        try:
            with torch.no_grad():
                outs[backend] = be.forward(enc)[enc["attention_mask"].bool()]
        finally:
            handle.remove()
    for backend in BACKENDS[1:]:
        torch.testing.assert_close(outs[backend], outs["hf"], **TOL)
    assert no_hooks(smollm)
