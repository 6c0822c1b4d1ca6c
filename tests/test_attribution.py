"""Attribution patching against finite differences, and screen-then-verify against activation
patching (the tiny model and prompts of test_patching.py)."""

import pytest
import torch
from conftest import no_hooks, patch_model
from test_patching import BAD, CLEAN, CORRUPT, GOOD, _metric

from steerlab.attribution import attribution_patching, screen_and_verify
from steerlab.patching import ALL, activation_patching


@pytest.fixture(scope="module")
def model():
    return patch_model()

def test_attribution_matches_finite_differences(model):
    """The estimate is the directional derivative of the metric along a_clean - a_corrupt:
    moving a small step eps along it must change the metric by eps times the estimate."""
    m = _metric(model)
    est = attribution_patching(model, CLEAN, CORRUPT, m, site="resid_pre", layers=[1, 3])
    clean_acts = {}
    from steerlab.cache import cache_activations

    acts = cache_activations(model, CLEAN, layers=[1, 3], reduction="none", site="resid_pre")
    for l in (1, 3):
        clean_acts[l] = acts.at(l)
    enc = model.encode(CORRUPT, padding_side="right")
    be = model.backend("hf")
    eps = 1e-3

    def run(edit_layer=None, pos=None):
        handle = None
        if edit_layer is not None:
            src = clean_acts[edit_layer]

            def fn(h):
                h = h.clone()
                h[:, pos] = h[:, pos] + eps * (src[:, pos] - h[:, pos])
                return h

            handle = be.add_edit(edit_layer, fn, site="resid_pre")
        try:
            with torch.no_grad():
                lg = be.forward(enc)[:, -1].double()
        finally:
            if handle:
                handle.remove()
        rows = torch.arange(3)
        good = torch.tensor([ord(c) - 32 + 4 for c in GOOD])
        bad = torch.tensor([ord(c) - 32 + 4 for c in BAD])
        return (lg[rows, good] - lg[rows, bad]).mean()

    base = run()
    scale = 1.0
    for l, p in ((1, 3), (3, 5), (1, 9)):
        fd = float((run(l, p) - base) / eps / scale)
        got = float(est.frame.query("layer == @l and position == @p")["value"].iloc[0])
        assert got == pytest.approx(fd, abs=2e-3, rel=2e-2), (l, p)
    assert no_hooks(model)


def test_screen_and_verify_ranks_the_top_cells(model):
    table = screen_and_verify(model, CLEAN, CORRUPT, _metric(model), top_k=6,
                              site="resid_pre")
    assert len(table) == 6
    assert {"attribution", "patched", "rank_attribution", "rank_patched"} <= set(table.columns)
    real = activation_patching(model, CLEAN, CORRUPT, _metric(model), progress=False).frame
    for row in table.itertuples():
        ref = real.query("layer == @row.layer and position == @row.position")["value"]
        assert row.patched == pytest.approx(float(ref.iloc[0]), abs=1e-5)
    assert -1 <= table.attrs["spearman"] <= 1


def test_attribution_on_heads_and_a_frozen_model(model):
    for p in model.hf.parameters():
        p.requires_grad_(False)
    try:
        est = attribution_patching(model, CLEAN, CORRUPT, _metric(model), site="z",
                                   positions=ALL)
    finally:
        for p in model.hf.parameters():
            p.requires_grad_(True)
    assert est.tensor.shape == (model.n_layers, 4)
    assert est.tensor.abs().sum() > 0
    assert no_hooks(model)
