import pytest
import torch
from conftest import PROMPTS

from steerlab.cache import (
    Activations,
    ShardedActivations,
    cache_activations,
    check_layers,
    prompt_hash,
)
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


def test_save_load_roundtrip(tiny_llama, tmp_path):
    acts = cache_activations(tiny_llama, PROMPTS, layers=[1, 3])
    path = acts.save(tmp_path / "acts.safetensors")
    back = Activations.load(path)
    assert torch.equal(back.acts, acts.acts)
    assert (back.layers, back.prompt_hashes, back.reduction) == (
        acts.layers, acts.prompt_hashes, acts.reduction)
    sub = acts.select([3, 0])
    assert sub.prompt_hashes == (acts.prompt_hashes[3], acts.prompt_hashes[0])


def test_bad_inputs(tiny_llama):
    with pytest.raises(EmptyInputError, match="empty"):
        cache_activations(tiny_llama, [])
    with pytest.raises(EmptyInputError, match="empty"):
        cache_activations(tiny_llama, ["fine", "  "])
    with pytest.raises(LayerError, match="valid layers are 0..3"):
        cache_activations(tiny_llama, PROMPTS, layers=[4])
    with pytest.raises(LayerError):
        check_layers(tiny_llama, [-1])
    with pytest.raises(OptionError, match="reduction"):
        cache_activations(tiny_llama, PROMPTS, reduction="max")


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


def test_layers_of_any_integer_type(tiny_llama):
    """numpy's integers (a layer taken from an array) are layers; bools and floats are not."""
    import numpy as np

    from steerlab.cache import check_layers

    assert check_layers(tiny_llama, [np.int64(2), np.int32(1), 2]) == [1, 2]
    assert check_layers(tiny_llama, np.int64(3)) == [3]
    for bad in ([True], [1.0], ["1"]):
        with pytest.raises(LayerError, match="not whole numbers"):
            check_layers(tiny_llama, bad)
    with pytest.raises(LayerError, match="neither a layer nor a list"):
        check_layers(tiny_llama, 1.5)
