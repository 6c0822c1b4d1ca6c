"""Activation patching against TransformerLens' own ``patching`` functions (run on the
TransformerLens bridge of the same tiny model, fp32), across backends, batched and unbatched;
hooks never left behind. The tiny model and prompts here are shared with test_attribution.py
and test_pairs.py."""


import numpy as np
import pytest
import torch
from conftest import no_hooks, patch_model

from steerlab.metrics import answer_logprob, logit_diff
from steerlab.pairs import PatchInputError
from steerlab.patching import ALL, activation_patching

CLEAN = ["The cat is", "A dog ran.", "My hat is!"]
CORRUPT = ["The cow is", "A pig ran.", "My car is!"]
GOOD, BAD = ["a", "b", "c"], ["x", "y", "z"]
TOL = {"atol": 2e-4, "rtol": 1e-4}


@pytest.fixture(scope="module")
def model():
    return patch_model()


def _metric(model, normalise=False):
    """The raw logit difference (a random tiny model's clean and corrupted runs differ
    little, so normalising by their gap would only amplify float noise in comparisons)."""
    return logit_diff(model, [ord(c) - 32 + 4 for c in GOOD], [ord(c) - 32 + 4 for c in BAD],
                      normalise=normalise)


def _tl_maps(model, site, direction="denoise"):
    """TransformerLens' patching functions on its bridge of the same weights."""
    from transformer_lens import patching

    br = model.backend("tlens").bridge
    enc_c = model.encode(CLEAN, padding_side="right")["input_ids"]
    enc_x = model.encode(CORRUPT, padding_side="right")["input_ids"]
    good = torch.tensor([ord(c) - 32 + 4 for c in GOOD])
    bad = torch.tensor([ord(c) - 32 + 4 for c in BAD])
    rows = torch.arange(len(GOOD))

    def ld(logits):
        return logits[rows, -1, good] - logits[rows, -1, bad]

    src, run = (enc_c, enc_x) if direction == "denoise" else (enc_x, enc_c)
    _, cache = br.run_with_cache(src)

    def metric(logits):
        return ld(logits).mean()

    fn = {"resid_pre": patching.get_act_patch_resid_pre,
          "attn_out": patching.get_act_patch_attn_out,
          "mlp_out": patching.get_act_patch_mlp_out,
          "z": patching.get_act_patch_attn_head_out_by_pos,
          "z_all": patching.get_act_patch_attn_head_out_all_pos}[site]
    return fn(br, run, cache, metric)


@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "mlp_out"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_layer_by_position_maps_equal_transformer_lens(model, site, direction):
    ours = activation_patching(model, CLEAN, CORRUPT, _metric(model), site=site,
                               direction=direction, progress=False)
    ref = _tl_maps(model, site, direction)
    assert ours.tensor.shape == ref.shape == (model.n_layers, len(ours.positions))
    torch.testing.assert_close(ours.tensor, ref.float(), **TOL)
    assert ours.tensor.abs().max() > 0.05 * abs(ours.clean - ours.corrupted)  # not all ~0
    assert no_hooks(model)


def test_per_head_maps_equal_transformer_lens(model):
    by_pos = activation_patching(model, CLEAN, CORRUPT, _metric(model), site="z",
                                 progress=False)
    ref = _tl_maps(model, "z")  # [layer, pos, head]
    torch.testing.assert_close(by_pos.tensor, ref.float(), **TOL)
    all_pos = activation_patching(model, CLEAN, CORRUPT, _metric(model), site="z",
                                  positions=ALL, progress=False)
    torch.testing.assert_close(all_pos.tensor, _tl_maps(model, "z_all").float(), **TOL)
    assert all_pos.tensor.shape == (model.n_layers, 4)


def test_denoising_the_whole_residual_restores_the_clean_run(model):
    res = activation_patching(model, CLEAN, CORRUPT, _metric(model, normalise=True),
                              positions=ALL, progress=False)
    torch.testing.assert_close(res.tensor, torch.ones(model.n_layers), atol=1e-5, rtol=0)
    assert res.frame["ci_low"].le(res.frame["value"]).all()
    assert res.frame["values"].map(len).eq(3).all()


def test_batched_equals_unbatched_and_fast_equals_plain(model):
    m = _metric(model)
    ref = activation_patching(model, CLEAN, CORRUPT, m, site="resid_pre", batch_cells=1,
                              fast=False, progress=False)
    for kw in ({"batch_cells": 7}, {"batch_cells": 64}, {"batch_cells": 5, "fast": False}):
        got = activation_patching(model, CLEAN, CORRUPT, m, site="resid_pre", progress=False,
                                  **kw)
        torch.testing.assert_close(got.tensor, ref.tensor, atol=1e-5, rtol=0)
    assert ref.meta["shared_prefix"] is False
    assert activation_patching(model, CLEAN, CORRUPT, m, layers=[2], progress=False
                               ).meta["shared_prefix"]


@pytest.mark.parametrize("site", ["resid_pre", "mlp_out", "z"])
def test_backends_agree(model, site):
    m = _metric(model)
    kw = {"site": site, "layers": [0, 2], "positions": [2, -1], "progress": False}
    ref = activation_patching(model, CLEAN, CORRUPT, m, **kw)
    for backend in ("tlens", "nnsight"):
        got = activation_patching(model, CLEAN, CORRUPT, m, backend=backend, **kw)
        torch.testing.assert_close(got.tensor, ref.tensor, **TOL)
    assert no_hooks(model) and not model.backend("nnsight")._edits


def test_other_metrics_and_noise(model):
    lp = answer_logprob(model, [ord(c) - 32 + 4 for c in GOOD])
    res = activation_patching(model, CLEAN, CORRUPT, lp, layers=[1], positions=[-1],
                              direction="noise", progress=False)
    assert res.tensor.shape == (1, 1) and res.direction == "noise"
    assert np.isfinite(res.frame["value"]).all()


def test_bad_input_fails_early_and_names_the_pair(model):
    with pytest.raises(PatchInputError, match="Pair 1 has 10 clean tokens.*but 11 corrupted"):
        activation_patching(model, CLEAN, [CORRUPT[0], CORRUPT[1] + "!", CORRUPT[2]],
                            _metric(model))
    with pytest.raises(PatchInputError, match="3 clean prompts but 2 corrupted"):
        activation_patching(model, CLEAN, CORRUPT[:2], _metric(model))
    with pytest.raises(Exception, match="heads= needs site='z'"):
        activation_patching(model, CLEAN, CORRUPT, _metric(model), heads=[0])
    with pytest.raises(Exception, match="out of range"):
        activation_patching(model, CLEAN, CORRUPT, _metric(model), positions=[10])
    assert no_hooks(model)


@pytest.mark.parametrize("backend", ["hf", "nnsight"])
def test_no_hooks_left_when_the_metric_fails_half_way(model, backend):
    calls = {"n": 0}
    inner = _metric(model)

    def flaky(logits, pairs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return inner(logits, pairs)

    with pytest.raises(KeyboardInterrupt):
        activation_patching(model, CLEAN, CORRUPT, flaky, batch_cells=4, backend=backend,
                            progress=False)
    assert no_hooks(model)
    assert not any(model._live_edits.values())


def test_prefix_replay_leaves_other_libraries_wrappers_in_place(model):
    """The hf backend's replay swaps blocks' forward for a moment; it must put back what was
    there (nnsight keeps its own wrapper as the instance forward), or nnsight stops seeing
    the blocks' inputs."""
    m = _metric(model)
    model.backend("nnsight").forward(model.encode(CLEAN))  # nnsight wraps the modules
    before = [b.__dict__.get("forward") for b in model.layers]
    ref = activation_patching(model, CLEAN, CORRUPT, m, layers=[3], progress=False)
    assert ref.meta["shared_prefix"]
    assert [b.__dict__.get("forward") for b in model.layers] == before
    got = activation_patching(model, CLEAN, CORRUPT, m, layers=[0, 3], backend="nnsight",
                              progress=False)
    torch.testing.assert_close(got.tensor[1], ref.tensor[0], **TOL)


def test_patching_figures(model):
    from steerlab.control_plots import head_heatmap, patching_heatmaps

    m = _metric(model, normalise=True)
    maps = [activation_patching(model, CLEAN, CORRUPT, m, site=s, layers=[0, 3],
                                positions=[0, 4, -1], progress=False)
            for s in ("resid_pre", "mlp_out")]
    fig = patching_heatmaps(maps, title="tiny: maps")
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
    assert np.asarray(fig.data[0].z).shape == (2, 3)
    assert fig.data[0].x[0].startswith("0: 'T'") and list(fig.data[0].y) == [0, 3]
    np.testing.assert_allclose(np.asarray(fig.data[1].z, dtype=float),
                               maps[1].tensor.numpy(), rtol=1e-6)
    one = patching_heatmaps(maps[:1], example=2)
    assert np.asarray(one.data[0].z)[1, 2] == pytest.approx(
        maps[0].frame.query("layer == 3 and position == 9")["values"].iloc[0][2])
    heads = activation_patching(model, CLEAN, CORRUPT, m, site="z", layers=[1, 2],
                                positions=ALL, progress=False)
    hf = head_heatmap(heads, title="tiny: heads")
    assert np.asarray(hf.data[0].z).shape == (2, 4)
    best = heads.strongest()
    assert best["site"] == "z" and best["value"] == pytest.approx(float(heads.tensor.max()))
