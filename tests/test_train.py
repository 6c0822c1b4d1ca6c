"""RLOO training of per-layer steering vectors with the model frozen (tiny random models)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab import _io
from steerlab.adapters import LearnedVectors
from steerlab.errors import OptionError, SteerlabError
from steerlab.tasks import arithmetic_items, get_task, training_items
from steerlab.train import (
    TrainConfig,
    completion_logprobs,
    rloo_advantages,
    rollout,
    train_rloo,
)
from steerlab.train_journal import history
from steerlab.vectors import SteeringVector
from tests.conftest import no_hooks, tiny_model

FAST = {"prompts_per_step": 3, "samples": 4, "max_new_tokens": 6, "eval_every": 0,
        "lr": 0.05}

def has_seven(item, completion: str) -> float:
    """A reward a random tiny model earns sometimes, so RLOO has signal to learn from."""
    return float("7" in completion)


def variety(item, completion: str) -> float:
    """A reward that differs between almost any two samples (the share of distinct characters),
    so every RLOO group has a signal whatever the sampler draws (torch releases draw different
    samples from one seed: a sparse reward can leave whole steps without one)."""
    return len(set(completion)) / max(len(completion), 1)


def test_arithmetic_splits_are_disjoint_and_the_task_uses_test():
    test, dev, train = (arithmetic_items(s) for s in ("test", "dev", "train"))
    assert (len(test), len(dev)) == (400, 100) and len(train) > 3000
    qs = [{it.question for it in s} for s in (test, dev, train)]
    assert not (qs[0] & qs[1]) and not (qs[0] & qs[2]) and not (qs[1] & qs[2])
    assert [it.id for it in get_task("arithmetic").items()] == [it.id for it in test]
    for it in test[:50]:
        a, op, b = it.question.removeprefix("What is ").removesuffix("?").split()
        assert int(it.answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    with pytest.raises(OptionError, match="split"):
        training_items("arithmetic", "valid")


def test_rloo_advantage_is_reward_minus_mean_of_the_others():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = rloo_advantages(r, samples=4)
    torch.testing.assert_close(adv, torch.tensor([1, -1 / 3, -1 / 3, -1 / 3, 0, 0, 0, 0.0]))
    assert float(rloo_advantages(torch.tensor([1.0, 0.0]), 2).sum()) == 0.0


def test_completion_logprobs_match_unpadded_forward():
    model = tiny_model("llama")
    items = arithmetic_items("train")[:2]
    cfg = TrainConfig(**FAST)
    ro = rollout(model, items, cfg, seed=0, chat=False, reward_fn=has_seven)
    lp = completion_logprobs(model, ro["enc"], ro["new"], ro["mask"])
    for i in range(len(lp)):  # each row alone, no padding, full logits
        prompt = ro["enc"]["input_ids"][i][ro["enc"]["attention_mask"][i].bool()]
        new = ro["new"][i][ro["mask"][i]]
        ids = torch.cat([prompt, new]).unsqueeze(0)
        with torch.no_grad():
            logp = torch.log_softmax(model.hf(ids).logits[0].float(), -1)
        ref = logp[len(prompt) - 1:-1].gather(-1, new.unsqueeze(-1)).sum()
        assert float(lp[i].detach()) == pytest.approx(float(ref), abs=1e-4)


def test_vectors_train_alone_and_hooks_come_off():
    model = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    run = train_rloo(model, TrainConfig(steps=3, **FAST), progress=False, reward_fn=has_seven)
    assert all(not p.requires_grad for p in model.hf.parameters())
    assert all(torch.equal(p, before[n]) for n, p in model.hf.named_parameters())
    assert no_hooks(model)
    assert run.vector is not None and run.vector.method == "learned"
    assert run.vector.layers == list(range(model.n_layers))
    assert sum(run.vector.norms().values()) > 0  # the vectors moved
    assert list(run.history.step) == [1, 2, 3]
    assert run.vector.meta["config"]["samples"] == 4


def test_hooks_come_off_when_a_forward_fails():
    model = tiny_model("llama")
    vecs = LearnedVectors(model)
    with pytest.raises(RuntimeError), vecs.attached(model):
        model.hf(torch.zeros(1, 3, 3, dtype=torch.long))  # wrong rank -> error inside
    assert no_hooks(model)


def test_rloo_raises_the_reward_it_is_trained_on():
    rises = []
    for seed in range(4):  # one seed's draw can be unlucky (torch 2.6's sampler: +0.06 at 0)
        model = tiny_model("llama")
        with torch.no_grad():  # random init gives near-uniform logits that no vector can move
            model.hf.lm_head.weight.mul_(6)
        cfg = TrainConfig(steps=24, prompts_per_step=4, samples=4, max_new_tokens=8, lr=0.1,
                          eval_every=0, seed=seed)
        hist = train_rloo(model, cfg, progress=False, reward_fn=has_seven).history
        rises.append(hist.reward[-6:].mean() - hist.reward[:6].mean())
    # untrained, the mean rise over 4 seeds is 0 +- ~0.02: 0.15 is a rise, not noise
    assert np.mean(rises) > 0.15, rises


def test_resume_gives_the_same_vectors_as_one_run(tmp_path):
    cfg = TrainConfig(steps=4, **FAST)
    one = train_rloo(tiny_model("llama"), cfg, progress=False, reward_fn=variety).vector
    train_rloo(tiny_model("llama"), cfg, tmp_path, progress=False, reward_fn=variety, steps=2)
    run = train_rloo(tiny_model("llama"), cfg, tmp_path, progress=False, reward_fn=variety)
    two = run.vector
    assert one is not None and two is not None
    for l in one.layers:
        torch.testing.assert_close(one[l], two[l])
    assert list(run.history.step) == [1, 2, 3, 4]
    saved = SteeringVector.load(tmp_path / "vectors.safetensors")
    assert saved.meta["step"] == 4 and saved.meta["config_key"] == cfg.key()
    with pytest.raises(SteerlabError, match="another configuration"):
        train_rloo(tiny_model("llama"), cfg, tmp_path, progress=False, lr=0.5)


def test_bad_configs_are_refused():
    with pytest.raises(OptionError, match="samples"):
        TrainConfig(samples=1)
    with pytest.raises(OptionError, match="adapter"):
        TrainConfig(adapter="prefix")
    with pytest.raises(OptionError, match="No training split"):
        train_rloo(tiny_model("llama"), TrainConfig(task="popqa", **FAST), progress=False)


def test_lora_variant_trains_a_private_copy(tmp_path):
    model = tiny_model("llama")
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    cfg = TrainConfig(steps=2, adapter="lora", lora_rank=2, **FAST)
    run = train_rloo(model, cfg, tmp_path, progress=False, reward_fn=has_seven)
    assert run.vector is None and (tmp_path / "lora.safetensors").is_file()
    assert set(dict(model.hf.named_parameters())) == set(before)  # caller's model untouched
    trainable = [n for n, p in run.adapter.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "down_proj" in n for n in trainable)
    assert sum(p.numel() for n, p in run.adapter.named_parameters() if p.requires_grad) == (
        model.n_layers * 2 * (64 + 32))  # rank 2 x (in 64 + out 32) per down_proj


def test_completion_logprobs_are_of_the_tempered_distribution_sampled_from():
    model = tiny_model("llama")
    cfg = TrainConfig(**{**FAST, "temperature": 0.5})
    ro = rollout(model, arithmetic_items("train")[:2], cfg, seed=0, chat=False,
                 reward_fn=has_seven)
    lp = completion_logprobs(model, ro["enc"], ro["new"], ro["mask"], cfg.temperature)
    for i in range(len(lp)):
        prompt = ro["enc"]["input_ids"][i][ro["enc"]["attention_mask"][i].bool()]
        new = ro["new"][i][ro["mask"][i]]
        with torch.no_grad():
            logits = model.hf(torch.cat([prompt, new]).unsqueeze(0)).logits[0].float()
        logp = torch.log_softmax(logits / 0.5, -1)
        ref = logp[len(prompt) - 1:-1].gather(-1, new.unsqueeze(-1)).sum()
        assert float(lp[i].detach()) == pytest.approx(float(ref), abs=1e-4)


def _stable_history(run) -> list[dict]:
    return run.history.drop(columns=["seconds", "gen_seconds"]).to_dict("records")


def test_a_kill_between_checkpoint_writes_resumes_like_one_run(tmp_path, monkeypatch):
    cfg = TrainConfig(steps=4, **FAST)
    one = train_rloo(tiny_model("llama"), cfg, progress=False, reward_fn=variety)
    assert (one.history.loss != 0).all()  # every step moves the vectors
    real = _io.save_tensors
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # step 2's second file: its first one is already written
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(_io, "save_tensors", dying)
    with pytest.raises(KeyboardInterrupt):
        train_rloo(tiny_model("llama"), cfg, tmp_path, progress=False, reward_fn=variety)
    monkeypatch.setattr(_io, "save_tensors", real)
    run = train_rloo(tiny_model("llama"), cfg, tmp_path, progress=False, reward_fn=variety)
    assert one.vector is not None and run.vector is not None
    for l in one.vector.layers:
        torch.testing.assert_close(run.vector[l], one.vector[l])
    assert _stable_history(run) == _stable_history(one)
    assert SteeringVector.load(tmp_path / "vectors.safetensors").meta["step"] == 4
    assert list(history(tmp_path).step) == [1, 2, 3, 4]


def test_vectors_and_adam_state_of_different_steps_are_refused(tmp_path):
    import shutil

    cfg = TrainConfig(steps=2, **FAST)
    train_rloo(tiny_model("llama"), cfg, tmp_path / "one", progress=False,
               reward_fn=has_seven, steps=1)
    train_rloo(tiny_model("llama"), cfg, tmp_path / "two", progress=False, reward_fn=has_seven)
    shutil.copy(tmp_path / "one" / "optimizer.safetensors", tmp_path / "two")  # the old bug
    with pytest.raises(SteerlabError, match="inconsistent.*step 2.*step 1"):
        train_rloo(tiny_model("llama"), cfg, tmp_path / "two", progress=False,
                   reward_fn=has_seven, steps=3)


@pytest.mark.slow
def test_recorded_learned_vectors_beat_the_base_model(smollm_fast):
    """The vectors recorded in results/ (steerlab train, 60 steps) still load and still raise
    held-out accuracy on real weights: a regression test of loading, hooks and evaluation."""
    from steerlab.conditions import compare_conditions
    from steerlab.notebooks import recorded_run

    path = recorded_run("smollm2-135m-instruct", "arithmetic") / "vectors.safetensors"
    vec = SteeringVector.load(path, smollm_fast)
    assert vec.method == "learned" and vec.meta["step"] == 60
    table = compare_conditions(smollm_fast, {"base": None, "learned": vec},
                               items=arithmetic_items("test")[:100]).set_index("condition")
    assert table.loc["learned", "delta_low"] > 0, table
    assert no_hooks(smollm_fast)
