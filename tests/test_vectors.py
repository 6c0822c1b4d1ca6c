import pytest
import torch
from conftest import PROMPTS, tiny_model

from steerlab.cache import cache_activations
from steerlab.errors import (
    EmptyInputError,
    InvalidVectorError,
    LayerError,
    VectorMismatchError,
)
from steerlab.vectors import (
    SteeringVector,
    diff_of_means,
    random_like,
    shuffled_diff_of_means,
)


@pytest.fixture(scope="module")
def sets(tiny_llama):
    return (cache_activations(tiny_llama, PROMPTS[:2]),
            cache_activations(tiny_llama, PROMPTS[2:]))


def test_diff_of_means_is_exact(sets):
    pos, neg = sets
    vec = diff_of_means(pos, neg)
    for i, layer in enumerate(pos.layers):
        expected = pos.acts[i].mean(0) - neg.acts[i].mean(0)
        assert torch.equal(vec[layer], expected)
    unit = diff_of_means(pos, neg, normalize=True)
    for layer in unit.layers:
        torch.testing.assert_close(unit[layer].norm(), torch.tensor(1.0))
        torch.testing.assert_close(unit[layer], vec[layer] / vec[layer].norm())
    assert vec.meta["n_pos"] == 2 and vec.prompt_hash


def test_controls(sets):
    pos, neg = sets
    vec = diff_of_means(pos, neg)
    rnd = random_like(vec, seed=3)
    assert rnd.method == "random" and rnd.seed == 3
    for layer in vec.layers:
        torch.testing.assert_close(rnd[layer].norm(), vec[layer].norm())
        assert not torch.allclose(rnd[layer], vec[layer])
    assert torch.equal(random_like(vec, seed=3).stack(), rnd.stack())
    assert not torch.equal(random_like(vec, seed=4).stack(), rnd.stack())
    shuf = shuffled_diff_of_means(pos, neg, seed=1)
    assert shuf.method == "shuffled"
    assert torch.equal(shuffled_diff_of_means(pos, neg, seed=1).stack(), shuf.stack())


def test_save_load_roundtrip_no_pickle(sets, tiny_llama, tmp_path):
    vec = diff_of_means(*sets)
    path = vec.save(tmp_path / "v.safetensors")
    raw = path.read_bytes()
    assert b"pickle" not in raw[:2000] and raw[8:9] == b"{"  # safetensors JSON header
    back = SteeringVector.load(path, model=tiny_llama)
    assert torch.equal(back.stack(), vec.stack())
    assert (back.model_id, back.d_model, back.method, back.prompt_hash, back.layers) == (
        vec.model_id, vec.d_model, vec.method, vec.prompt_hash, vec.layers)
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind


def test_refuses_other_model_and_width(sets, tmp_path):
    vec = diff_of_means(*sets)
    path = vec.save(tmp_path / "v.safetensors")
    other = tiny_model("qwen2")  # same width, other model
    with pytest.raises(VectorMismatchError, match="made for 'tiny-llama'"):
        SteeringVector.load(path, model=other)
    wide = SteeringVector({0: torch.ones(64)}, "tiny-llama", 64)
    with pytest.raises(VectorMismatchError, match="width 64 does not match"):
        wide.check_compatible(tiny_model("llama"))
    with pytest.raises(VectorMismatchError, match=r"expected \(32,\)"):
        SteeringVector({0: torch.ones(31)}, "m", 32)


def test_rejects_nan_and_bad_layers():
    with pytest.raises(InvalidVectorError, match="NaN or inf"):
        SteeringVector({1: torch.tensor([1.0, float("nan")])}, "m", 2)
    with pytest.raises(InvalidVectorError, match="NaN or inf"):
        SteeringVector({1: torch.tensor([1.0, float("inf")])}, "m", 2)
    vec = SteeringVector({9: torch.ones(32)}, "tiny-llama", 32)
    with pytest.raises(LayerError, match="out of range"):
        vec.check_compatible(tiny_model("llama"))


def test_corrupt_and_truncated_files(sets, tmp_path):
    path = diff_of_means(*sets).save(tmp_path / "v.safetensors")
    data = path.read_bytes()
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidVectorError, match="truncated or corrupt"):
        SteeringVector.load(trunc)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InvalidVectorError, match="truncated or corrupt"):
        SteeringVector.load(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.ones(3)}, str(foreign))
    with pytest.raises(InvalidVectorError, match="not written by steerlab"):
        SteeringVector.load(foreign)
    with pytest.raises(FileNotFoundError):
        SteeringVector.load(tmp_path / "missing.safetensors")


def test_empty_sets(sets):
    pos, neg = sets
    with pytest.raises(EmptyInputError, match="at least one prompt"):
        diff_of_means(pos.select([]), neg)


def test_random_control_of_a_layer_does_not_depend_on_the_layer_list(sets):
    vec = diff_of_means(*sets)
    full = random_like(vec, seed=3)
    for layer in vec.layers:
        assert torch.equal(random_like(vec.only([layer]), seed=3)[layer], full[layer])
    units = [full[l] / full[l].norm() for l in full.layers]
    assert not torch.allclose(units[0], units[1])  # each layer draws its own direction
