"""Activations in memory and streamed to disk (:mod:`steerlab.activations`)."""

import pytest
import torch
from conftest import PROMPTS

from steerlab.activations import Activations, ShardedActivations
from steerlab.cache import cache_activations
from steerlab.errors import LayerError, OptionError


def test_save_load_roundtrip(tiny_llama, tmp_path):
    acts = cache_activations(tiny_llama, PROMPTS, layers=[1, 3])
    path = acts.save(tmp_path / "acts.safetensors")
    back = Activations.load(path)
    assert torch.equal(back.acts, acts.acts)
    assert (back.layers, back.prompt_hashes, back.reduction) == (
        acts.layers, acts.prompt_hashes, acts.reduction)
    sub = acts.select([3, 0])
    assert sub.prompt_hashes == (acts.prompt_hashes[3], acts.prompt_hashes[0])


def test_streamed_to_disk_equals_in_memory(tiny_llama, tmp_path):
    prompts = [f"Prompt number {i} {'x' * (i % 7)}" for i in range(23)]
    mem = cache_activations(tiny_llama, prompts, layers=[0, 3], batch_size=4)
    disk = cache_activations(tiny_llama, prompts, layers=[0, 3], batch_size=4,
                             out=tmp_path / "acts", shard_size=8)
    assert isinstance(disk, ShardedActivations)
    assert len(disk.shard_files) == 3  # 8 + 8 + 7 prompts (whole batches per shard)
    assert disk.n_prompts == 23 and disk.layers == (0, 3)
    assert disk.prompt_hashes == mem.prompt_hashes
    assert torch.equal(disk.load().acts, mem.acts)
    assert torch.equal(disk.at(3), mem.at(3))
    again = ShardedActivations.open(tmp_path / "acts")
    assert torch.equal(again.at(0), mem.at(0))
    seen = sorted(i for index, acts in again.shards() for i in index.tolist())
    assert seen == list(range(23))
    with pytest.raises(LayerError, match="not cached"):
        again.at(1)


def test_streaming_replaces_an_old_cache_and_unfinished_dirs_do_not_open(tiny_llama, tmp_path):
    out = tmp_path / "acts"
    cache_activations(tiny_llama, PROMPTS * 5, layers=[1], out=out, shard_size=2)
    small = cache_activations(tiny_llama, PROMPTS, layers=[1], out=out, shard_size=100)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.safetensors"]
    assert ShardedActivations.open(out).n_prompts == len(PROMPTS) == small.n_prompts
    (out / "index.json").unlink()
    with pytest.raises(FileNotFoundError, match="index.json"):
        ShardedActivations.open(out)
    with pytest.raises(OptionError, match="shard_size"):
        cache_activations(tiny_llama, PROMPTS, out=out, shard_size=0)
