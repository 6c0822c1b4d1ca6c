"""The adapter protocol: both kinds implement it, save and restore their weights, keep the
checkpoint format older runs wrote, and are what training and the cost table use."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from steerlab import _io, adapters, cost
from steerlab.adapters import (
    ADAPTER_CLASSES,
    ADAPTERS,
    Adapter,
    LearnedVectors,
    LoraAdapter,
    make_adapter,
)
from steerlab.cost import training_step_costs
from steerlab.devices import dtype_name
from steerlab.errors import OptionError, SteerlabError
from steerlab.train import TrainConfig
from steerlab.train_journal import checkpoint_step, load_checkpoint, save_checkpoint
from steerlab.vectors import SteeringVector
from tests.conftest import no_hooks, tiny_model

KINDS = {"vectors": LearnedVectors, "lora": LoraAdapter}


def _make(kind: str, model) -> Adapter:
    return make_adapter(kind, model, rank=2)


def _randomise(adapter: Adapter, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def _adam(adapter: Adapter) -> torch.optim.Adam:
    """An Adam over the adapter with one step taken, so it has state to checkpoint."""
    opt = torch.optim.Adam(adapter.trainable_parameters(), lr=0.1)
    for p in adapter.trainable_parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


def test_every_adapter_implements_the_protocol():
    assert tuple(c.kind for c in ADAPTER_CLASSES) == ADAPTERS == tuple(KINDS)
    assert len({c.file_name for c in ADAPTER_CLASSES}) == len(ADAPTER_CLASSES)
    for cls in ADAPTER_CLASSES:
        assert issubclass(cls, Adapter) and issubclass(cls, torch.nn.Module)
        assert not cls.__abstractmethods__, (cls, cls.__abstractmethods__)
        assert cls.file_name.endswith(".safetensors") and cls.file_kind
    model = tiny_model("llama")
    for kind, cls in KINDS.items():
        adapter = _make(kind, model)
        assert type(adapter) is cls and isinstance(adapter, Adapter)
        assert adapter.trainable_parameters()
        assert all(p.requires_grad for p in adapter.trainable_parameters())
    with pytest.raises(OptionError, match="Unknown adapter 'prefix'.*vectors"):
        make_adapter("prefix", model)


def test_the_protocol_is_enforced():
    class Half(Adapter):  # no checkpoint methods, no steering vector
        kind, file_name, file_kind = "half", "half.safetensors", "half"

        def target(self, model):
            return model

        def attached(self, model):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_vectors_attach_detach_and_become_a_steering_vector():
    model = tiny_model("llama")
    vecs = LearnedVectors(model, [1, 3])
    assert vecs.target(model) is model
    _randomise(vecs, 0)
    ids = torch.tensor([[3, 5, 7, 9]])
    enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    plain = model.backend("hf").forward(enc)
    with vecs.attached(model):
        moved = model.backend("hf").forward(enc)
        assert not no_hooks(model)
    assert no_hooks(model)
    assert not torch.allclose(plain, moved)
    torch.testing.assert_close(model.backend("hf").forward(enc), plain)
    sv = vecs.to_steering_vector(model, {"step": 3}, seed=1)
    assert sv.layers == [1, 3] and sv.method == "learned" and sv.meta == {"step": 3}
    torch.testing.assert_close(sv.stack(), vecs.vectors.detach())


def test_lora_works_on_a_private_copy_and_is_no_vector():
    model = tiny_model("llama")
    lora = LoraAdapter(model, 2)
    assert lora.target(model) is lora.model and lora.model is not model
    with lora.attached(lora.model):  # always on: attaching adds nothing
        assert no_hooks(lora.model)
    assert lora.to_steering_vector(model) is None
    assert sum(p.numel() for p in lora.trainable_parameters()) == model.n_layers * 2 * (64 + 32)


@pytest.mark.parametrize("kind", list(KINDS))
def test_checkpoint_round_trip(kind, tmp_path):
    model = tiny_model("llama")
    a = _make(kind, model)
    _randomise(a, 1)
    path = tmp_path / a.file_name
    a.save_checkpoint(path, a.target(model), {"config_key": "abc", "step": 7}, seed=0)
    assert type(a).stored_meta(path)["step"] == 7
    b = _make(kind, model)
    stored = b.read_checkpoint(path, b.target(model))
    assert (stored.config_key, stored.step) == ("abc", 7)
    assert not all(torch.equal(x, y) for x, y in
                   zip(a.trainable_parameters(), b.trainable_parameters(), strict=True))
    stored.restore()
    for x, y in zip(a.trainable_parameters(), b.trainable_parameters(), strict=True):
        torch.testing.assert_close(x, y)


def test_lora_checkpoint_of_another_rank_is_refused_by_name(tmp_path):
    model = tiny_model("llama")
    a = LoraAdapter(model, 2)
    path = tmp_path / a.file_name
    a.save_checkpoint(path, a.model, {"step": 1})
    with pytest.raises(SteerlabError, match="shape.*lora_rank"):
        LoraAdapter(model, 4).read_checkpoint(path, model).restore()


def _old_save_checkpoint(out: Path, adapter, opt, model, cfg: TrainConfig, step: int) -> None:
    """What train.py wrote before the adapters moved to steerlab/adapters.py (copied from
    it): the format every recorded run directory has."""
    meta = {"config": asdict(cfg), "config_key": cfg.key(), "step": step,
            "task": cfg.task, "trainer": "rloo"}
    if isinstance(adapter, LearnedVectors):
        vecs = {l: adapter.vectors[i].detach().clone()
                for i, l in enumerate(adapter.layer_ids)}
        SteeringVector(vecs, model.hf_id, model.d_model, method="learned", seed=cfg.seed,
                       meta=meta).save(out / "vectors.safetensors")
    else:
        named = {n: p.detach() for n, p in adapter.named_parameters() if p.requires_grad}
        _io.save_tensors(out / "lora.safetensors", named, {**meta, "kind": "lora_adapter"})
    state = {f"{pid}.{k}": torch.as_tensor(v)
             for pid, s in opt.state_dict()["state"].items() for k, v in s.items()}
    _io.save_tensors(out / "optimizer.safetensors", state,
                     {"kind": "adam_state", "step": step, "config_key": cfg.key()})


def _read(path: Path, kind: str) -> tuple[dict[str, torch.Tensor], dict]:
    return _io.load_tensors(path, kind)


@pytest.mark.parametrize("kind", list(KINDS))
def test_checkpoints_of_older_runs_still_load(kind, tmp_path):
    cfg = TrainConfig(adapter=kind, lora_rank=2)
    model = tiny_model("llama")
    old = _make(kind, model)
    _randomise(old, 2)
    old_opt = _adam(old)
    _old_save_checkpoint(tmp_path, old, old_opt, old.target(model), cfg, step=5)
    new = _make(kind, model)
    new_opt = torch.optim.Adam(new.trainable_parameters(), lr=0.1)
    assert load_checkpoint(tmp_path, new, new_opt, new.target(model), cfg) == 5
    for x, y in zip(old.trainable_parameters(), new.trainable_parameters(), strict=True):
        torch.testing.assert_close(x, y)
    assert checkpoint_step(tmp_path) == 5
    if kind == "lora":  # the parameter names a recorded run's file holds
        names = _read(tmp_path / "lora.safetensors", "lora_adapter")[0]
        assert all(n.startswith("peft.base_model.model.") and "lora_" in n for n in names)


@pytest.mark.parametrize("kind", list(KINDS))
def test_checkpoints_are_written_in_the_older_format(kind, tmp_path):
    """The new writer and the old one give the same files (tensors and metadata), but for the
    dtype the new one records (what a reused run is replayed in)."""
    cfg = TrainConfig(adapter=kind, lora_rank=2)
    model = tiny_model("llama")
    a = _make(kind, model)
    _randomise(a, 3)
    opt = _adam(a)
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    _old_save_checkpoint(tmp_path / "old", a, opt, a.target(model), cfg, step=4)
    save_checkpoint(tmp_path / "new", a, opt, a.target(model), cfg, step=4)
    for name, file_kind in ((a.file_name, a.file_kind), ("optimizer.safetensors", "adam_state")):
        (t_old, m_old), (t_new, m_new) = (_read(tmp_path / d / name, file_kind)
                                          for d in ("old", "new"))
        if name == a.file_name:  # the run's dtype, recorded beside the rest since runs have one
            where = m_new.get("meta", m_new)
            assert where.pop("dtype") == dtype_name(model.dtype), name
        assert m_new == m_old, name
        assert set(t_new) == set(t_old) and all(torch.equal(t_new[k], t_old[k]) for k in t_old)


def test_the_cost_table_trains_the_same_adapters(monkeypatch):
    made: list[str] = []
    real = adapters.make_adapter

    def spy(kind, *a, **k):
        made.append(kind)
        return real(kind, *a, **k)

    monkeypatch.setattr(cost, "make_adapter", spy)  # where the cost table makes them
    model = tiny_model("llama")
    for method in ("vectors", "lora"):
        c = training_step_costs(model, ["What is 2 + 2?"], method, steps=1, chat=False,
                                lora_rank=2)
        assert c["trainable_params"] == sum(
            p.numel() for p in real(method, model, rank=2).trainable_parameters())
    assert made == ["vectors", "lora"]
    assert no_hooks(model)
