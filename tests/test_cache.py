import pytest
import torch
from conftest import PROMPTS

from steerlab.activations import prompt_hash
from steerlab.cache import cache_activations
from steerlab.errors import EmptyInputError, LayerError, OptionError


@pytest.mark.parametrize("reduction", ["last", "mean"])
def test_batched_equals_one_at_a_time(tiny, reduction):
    batched = cache_activations(tiny, PROMPTS, reduction=reduction, batch_size=3)
    single = torch.cat([cache_activations(tiny, [p], reduction=reduction).acts for p in PROMPTS],
                       dim=1)
    torch.testing.assert_close(batched.acts, single, atol=1e-5, rtol=1e-5)


def test_values_match_hidden_states(tiny_attn):
    """Layer l's cache is HF's hidden_states[l + 1] (output of block l) at the last token."""
    acts = cache_activations(tiny_attn, PROMPTS[:1], reduction="last")
    enc = tiny_attn.encode(PROMPTS[:1])
    with torch.no_grad():
        hs = tiny_attn.hf(**enc, output_hidden_states=True).hidden_states
    for i, layer in enumerate(acts.layers[:-1]):  # the last entry may be post-final-norm in HF
        torch.testing.assert_close(acts.acts[i, 0], hs[layer + 1][0, -1].float())
    mean = cache_activations(tiny_attn, PROMPTS[:1], layers=[1], reduction="mean")
    torch.testing.assert_close(mean.acts[0, 0], hs[2][0].float().mean(0))


def test_shape_metadata_and_order(tiny_llama):
    acts = cache_activations(tiny_llama, PROMPTS, layers=[2, 0], batch_size=2)
    assert acts.acts.shape == (2, len(PROMPTS), tiny_llama.d_model)
    assert acts.layers == (0, 2)
    assert acts.prompt_hashes == tuple(prompt_hash(p) for p in PROMPTS)
    assert acts.reduction == "last" and acts.model_id == tiny_llama.hf_id
    # row order is the caller's order even though batches are sorted by length
    alone = cache_activations(tiny_llama, [PROMPTS[3]], layers=[0, 2])
    torch.testing.assert_close(acts.acts[:, 3], alone.acts[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(acts.at(2), acts.acts[1])
    with pytest.raises(LayerError, match="not cached"):
        acts.at(1)


def test_bad_inputs(tiny_llama):
    with pytest.raises(EmptyInputError, match="empty"):
        cache_activations(tiny_llama, [])
    with pytest.raises(EmptyInputError, match="empty"):
        cache_activations(tiny_llama, ["fine", "  "])
    with pytest.raises(LayerError, match="valid layers are 0..3"):
        cache_activations(tiny_llama, PROMPTS, layers=[4])
    with pytest.raises(OptionError, match="reduction"):
        cache_activations(tiny_llama, PROMPTS, reduction="max")
