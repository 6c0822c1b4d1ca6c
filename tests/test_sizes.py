"""The seed models' sizes: parameter counts of the written-down configs (on the meta device,
nothing allocated) and a real, shrunken build that runs."""

import pytest
import torch
from conftest import test_device

from steerlab.errors import OptionError
from steerlab.sizes import SIZES, config, n_params, random_model

#: the published parameter counts of the seed models (tied embeddings counted once)
PUBLISHED = {"llama-3.2-1b": 1_235_814_400, "qwen2.5-1.5b": 1_543_714_304,
             "llama-3.1-8b": 8_030_261_248}


@pytest.mark.parametrize("size", list(SIZES))
def test_configs_have_the_published_parameter_counts(size):
    assert n_params(size) == PUBLISHED[size]


def test_config_fields():
    c = config("llama-3.2-1b")
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size, c.num_attention_heads,
            c.num_key_value_heads, c.vocab_size, c.tie_word_embeddings) == \
        (16, 2048, 8192, 32, 8, 128256, True)
    assert c.rope_parameters["rope_theta"] == 500000.0
    q = config("qwen2.5-1.5b")
    assert (q.model_type, q.num_hidden_layers, q.num_key_value_heads, q.vocab_size) == \
        ("qwen2", 28, 2, 151936)
    assert config("llama-3.1-8b").tie_word_embeddings is False
    with pytest.raises(OptionError, match="Unknown size"):
        config("gpt-5")


def test_a_shrunken_random_model_builds_and_runs():
    small = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
             "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
             "vocab_size": 512}
    m = random_model("llama-3.2-1b", device=test_device(), dtype="fp32", **small)
    assert (m.n_layers, m.d_model, m.dtype, m.device) == (2, 64, torch.float32, test_device())
    assert sum(p.numel() for p in m.parameters()) == n_params("llama-3.2-1b", **small)
    assert m.eos_ids == [2] and not m.is_chat
    logits = m.backend("hf").forward(m.encode(["Hello", "a longer prompt"]))
    assert logits.shape == (2, 15, 512) and torch.isfinite(logits).all()
    again = random_model("llama-3.2-1b", device=test_device(), dtype="fp32", **small)
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), again.parameters(),
                                                   strict=True))  # seeded
