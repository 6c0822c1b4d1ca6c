"""Baked checkpoints: a vector as the bias after each block, reloaded with plain transformers
(no steerlab), computes what run-time steering computes."""

import json

import pytest
import torch
from conftest import PROMPTS, no_hooks, tiny_model
from transformers import AutoModelForCausalLM

from steerlab.bake import BAKE_FILE, bake
from steerlab.errors import OptionError
from steerlab.steering import steer
from steerlab.vectors import SteeringVector


def _vector(model, layers, site="resid_post", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({l: 2.0 * torch.randn(model.d_model, generator=gen) for l in layers},
                          model.hf_id, model.d_model, site=site,
                          ref_norms={l: 10.0 for l in layers})


def _plain_logits(path, enc):
    """Logits of the baked checkpoint loaded by transformers alone (left-padded rows at
    their real positions, as steerlab runs them: GPT-2's positions are absolute)."""
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return hf(**enc, position_ids=pos).logits


def _steered_logits(model, vector, enc, **kw):
    with torch.no_grad(), steer(model, vector, **kw):
        return model.backend("hf").forward(enc)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("scale", ["raw", "norm"])
def test_baked_checkpoint_equals_steering(tmp_path, arch, scale):
    model = tiny_model(arch)
    vec = _vector(model, [0, 2])
    enc = {k: v for k, v in model.encode(PROMPTS[:3]).items()}
    out = bake(model, vec, tmp_path / "baked", coeff=1.5, scale=scale)
    got = _plain_logits(out, enc)
    want = _steered_logits(model, vec, enc, coeff=1.5, scale=scale)
    plain = _steered_logits(model, vec, enc, coeff=0.0)
    real = enc["attention_mask"].bool()
    assert (want - plain)[real].abs().max() > 0.1  # the steering changes the logits
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    meta = json.loads((out / BAKE_FILE).read_text())
    assert meta["layers"] == [0, 2] and meta["coeff"] == 1.5 and meta["scale"] == scale
    assert no_hooks(model)


def test_resid_pre_vectors_bake_one_block_earlier(tmp_path):
    model = tiny_model("llama")
    vec = _vector(model, [2], site="resid_pre")
    enc = model.encode(PROMPTS[:2])
    out = bake(model, vec, tmp_path / "b")
    want = _steered_logits(model, vec, enc)
    torch.testing.assert_close(_plain_logits(out, enc), want, atol=1e-5, rtol=1e-5)
    assert json.loads((out / BAKE_FILE).read_text())["layers"] == [1]
    with pytest.raises(OptionError, match="embeddings"):
        bake(model, _vector(model, [0], site="resid_pre"), tmp_path / "c")


def test_what_cannot_be_baked_is_refused_and_nothing_is_left(tmp_path):
    model = tiny_model("llama")
    vec = _vector(model, [1])
    with pytest.raises(OptionError, match="every position"):
        bake(model, vec, tmp_path / "a", positions="generated")
    with pytest.raises(OptionError, match="depends on the activation"):
        bake(model, vec, tmp_path / "a", mode="project")
    with pytest.raises(OptionError, match="supported: llama, gpt2"):
        bake(tiny_model("qwen2"), _vector(tiny_model("qwen2"), [1]), tmp_path / "a")
    with pytest.raises(OptionError, match="supported"):
        bake(tiny_model("gemma3"), _vector(tiny_model("gemma3"), [1]), tmp_path / "a")
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())
    bake(model, vec, tmp_path / "a")
    with pytest.raises(OptionError, match="exists"):
        bake(model, vec, tmp_path / "a")


@pytest.mark.slow
def test_baked_smollm2_generates_what_steering_generates(smollm, tmp_path):
    """The real model: the baked checkpoint, loaded by transformers alone, decodes the same
    greedy tokens as steer() on the original, and its logits agree to float rounding."""
    gen = torch.Generator().manual_seed(1)
    vec = SteeringVector({12: 6.0 * torch.randn(576, generator=gen)}, smollm.hf_id, 576)
    out = bake(smollm, vec, tmp_path / "smol", coeff=2.0)
    enc = smollm.encode(["What is the capital of France?", "Which is larger, 37 or 52?"],
                        chat=True)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    kw = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
    with torch.no_grad():
        baked = hf.generate(**enc, **kw)
        with steer(smollm, vec, coeff=2.0):
            steered = smollm.backend("hf").generate(enc, **kw)
        logits = hf(**enc).logits
        with steer(smollm, vec, coeff=2.0):
            want = smollm.backend("hf").forward(enc)
    assert baked.tolist() == steered.tolist()
    real = enc["attention_mask"].bool()
    torch.testing.assert_close(logits[real], want[real], atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_bake_command(smollm, tmp_path, capsys):
    from steerlab.cli import main

    gen = torch.Generator().manual_seed(2)
    path = SteeringVector({5: torch.randn(576, generator=gen), 9: torch.randn(576, generator=gen)},
                          smollm.hf_id, 576).save(tmp_path / "v.safetensors")
    assert main(["bake", "--vector", str(path), "--out", str(tmp_path / "b"), "--coeff", "3",
                 "--layers", "9", "--dtype", "fp32"]) == 0
    assert "as the bias after each block" in capsys.readouterr().out
    meta = json.loads((tmp_path / "b" / BAKE_FILE).read_text())
    assert meta["layers"] == [9] and meta["coeff"] == 3.0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "b").config.mlp_bias


@pytest.mark.slow
def test_check_baked_evaluates_both_on_the_same_items(smollm, tmp_path):
    """The learned RL vectors (notebook 05's recorded checkpoint) baked and loaded by name
    answer 8 arithmetic items as steering with them does."""
    from steerlab.bake import check_baked
    from steerlab.tasks import get_task

    vec = SteeringVector.load("results/train_smollm2_arithmetic/vectors.safetensors")
    items = get_task("arithmetic").items(None, 0)[:8]
    got = check_baked(smollm, vec, "arithmetic", items=items, batch_size=8,
                      out=tmp_path / "r.json")
    assert got["items"] == 8 and got["same_verdict"] == 8 and got["same_answer"] == 8
    assert json.loads((tmp_path / "r.json").read_text())["baked_vs_steered"]["delta"] == 0.0


def test_a_non_finite_coefficient_is_refused_before_anything_is_written(tmp_path):
    model = tiny_model("llama")
    with pytest.raises(OptionError, match="finite"):
        bake(model, _vector(model, [1]), tmp_path / "a", coeff=float("nan"))
    assert not list(tmp_path.iterdir())
