"""Figure functions return plotly figures built from real tables; widgets wrap plain functions."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
from conftest import PROMPTS

from steerlab import figures
from steerlab.analysis import cosine_profile, layer_pca
from steerlab.cache import cache_activations
from steerlab.figures import FigureExportError, check_png_export, save_figure
from steerlab.plots import (
    accuracy_by_layer,
    cosine_profiles,
    delta_heatmap,
    pca_boundary,
    pca_panels,
)
from steerlab.vectors import diff_of_means
from steerlab.widgets import steered_text, steering_explorer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sets(tiny_llama):
    pos = cache_activations(tiny_llama, PROMPTS * 3)
    neg = cache_activations(tiny_llama, [p[::-1] for p in PROMPTS] * 3)
    return pos, neg


def _table() -> pd.DataFrame:
    rows = [{"method": "baseline", "layer": -1, "coeff": 0.0, "accuracy": 0.5, "ci_low": 0.4,
             "ci_high": 0.6, "chance": 0.25, "delta": 0.0, "delta_low": 0.0, "delta_high": 0.0,
             "n": 100, "model": "m", "task": "t"}]
    for method in ["diff_means", "random"]:
        for layer in [1, 2]:
            for coeff in [-0.2, 0.2]:
                d = 0.1 if (method == "diff_means" and coeff > 0) else -0.01
                rows.append({"method": method, "layer": layer, "coeff": coeff,
                             "accuracy": 0.5 + d, "ci_low": 0.4 + d, "ci_high": 0.6 + d,
                             "chance": 0.25, "delta": d, "delta_low": d - 0.05,
                             "delta_high": d + 0.05, "n": 100, "model": "m", "task": "t"})
    return pd.DataFrame(rows)


def test_pca_figures(sets):
    pos, neg = sets
    p = layer_pca(pos, neg, 2)
    assert p.pos.shape == (pos.n_prompts, 2) and 0 <= p.heldout_accuracy <= 1
    np.testing.assert_allclose(p.pos_centroid, p.pos.mean(0))
    fig = pca_panels({"a": p, "b": p}, data="test data")
    assert isinstance(fig, go.Figure) and len(fig.data) == 4 and len(fig.layout.annotations) >= 2
    assert "test data" in fig.layout.title.text
    fig2 = pca_boundary(p, "tiny")
    assert any(tr.name == "decision boundary" for tr in fig2.data)


def test_accuracy_and_heatmap_figures():
    table = _table()
    fig = accuracy_by_layer(table, 0.2)
    names = [tr.name for tr in fig.data]
    assert "diff_means" in names and "random" in names and "baseline 95% CI" in names
    dm = next(tr for tr in fig.data if tr.name == "diff_means")
    assert list(dm.y) == [0.6, 0.6]
    band = next(tr for tr in accuracy_by_layer(table, 0.2, bands=True).data
                if str(tr.name).startswith("controls"))
    assert list(band.x) == [1, 2, 2, 1] and list(band.y) == [0.39, 0.39, 0.59, 0.59]
    heat = delta_heatmap(table)
    assert heat.data[0].z.shape == (2, 2)
    assert any("*" in t for row in heat.data[0].text for t in row)  # significant cells marked


def test_protocol_gains_figure():
    from steerlab.plots import protocol_gains
    from steerlab.replication import SEED_REPORTED

    gains = pd.DataFrame({"method": ["diff_means", "random", "random"], "draw": [0, 0, 1],
                          "best_layer": [3, 9, 3], "gain": [0.02, 0.01, 0.03]})
    fig = protocol_gains({"m": gains}, SEED_REPORTED)
    assert [list(tr.y) for tr in fig.data] == [[0.02], [0.01, 0.03]]
    seeds = [a.text for a in fig.layout.annotations]
    assert any("Llama-3.2-1B +0.087" in t for t in seeds) and len(seeds) == 3


def test_cosine_profile(sets):
    pos, neg = sets
    vec = diff_of_means(pos, neg)
    cos = cosine_profile(vec, 2, pos)
    assert cos.shape == (4, pos.n_prompts)
    expected = torch.nn.functional.cosine_similarity(pos.acts[1], vec[2][None], dim=-1)
    np.testing.assert_allclose(cos[1], expected.numpy(), rtol=1e-5, atol=1e-6)
    fig = cosine_profiles({"tiny": (cos, cosine_profile(vec, 2, neg))}, 2)
    assert len(fig.data) == 2


def test_save_figure(tmp_path):
    fig = accuracy_by_layer(_table(), 0.2)
    paths = save_figure(fig, "99", "test", out_dir=tmp_path)
    assert (tmp_path / "99_test.html").is_file()
    if shutil.which("chromium"):
        assert (tmp_path / "99_test.png").stat().st_size > 1000 and len(paths) == 2
        assert check_png_export() == Path(shutil.which("chromium"))


def _old_pair(tmp_path):
    """A figure's HTML and PNG as an earlier run left them."""
    (tmp_path / "99_test.html").write_text("old html")
    (tmp_path / "99_test.png").write_bytes(b"old png")
    return tmp_path / "99_test.html", tmp_path / "99_test.png"


def test_no_browser_never_leaves_a_stale_png(tmp_path, monkeypatch):
    """Without a browser (the defect: HTML rewritten, an older PNG left beside it, silently),
    the HTML is written, the older PNG is removed, and a warning names the install command."""
    monkeypatch.setattr(figures, "_chromium", lambda: None)
    monkeypatch.delenv(figures.REQUIRE_PNG, raising=False)
    html, png = _old_pair(tmp_path)
    with pytest.warns(UserWarning, match="apt-get install -y chromium fonts-liberation.*removed"):
        paths = save_figure(accuracy_by_layer(_table(), 0.2), "99", "test", out_dir=tmp_path)
    assert paths == [html] and html.read_text() != "old html" and not png.exists()
    with pytest.warns(UserWarning, match="No Chromium"):  # nothing to remove: still said
        save_figure(accuracy_by_layer(_table(), 0.2), "99", "test", out_dir=tmp_path)
    with pytest.raises(FigureExportError, match="apt-get install -y chromium"):
        check_png_export()


def test_strict_run_fails_before_writing(tmp_path, monkeypatch):
    """``make run`` sets STEERLAB_REQUIRE_PNG=1: a figure that cannot get its PNG is an error
    that names the fix, and neither file of the earlier run is touched."""
    monkeypatch.setattr(figures, "_chromium", lambda: None)
    monkeypatch.setenv(figures.REQUIRE_PNG, "1")
    html, png = _old_pair(tmp_path)
    with pytest.raises(FigureExportError, match="apt-get install -y chromium fonts-liberation"):
        save_figure(accuracy_by_layer(_table(), 0.2), "99", "test", out_dir=tmp_path)
    assert html.read_text() == "old html" and png.read_bytes() == b"old png"
    assert save_figure(go.Figure(), "99", "html_only", png=False, out_dir=tmp_path) == \
        [tmp_path / "99_html_only.html"]  # asked for HTML only: no browser needed


def test_failed_export_replaces_neither_file(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "_chromium", lambda: "/usr/bin/chromium")

    def broken(self, *args, **kwargs):
        raise RuntimeError("browser crashed")

    monkeypatch.setattr(go.Figure, "write_image", broken)
    html, png = _old_pair(tmp_path)
    with pytest.raises(FigureExportError, match="browser crashed.*neither"):
        save_figure(accuracy_by_layer(_table(), 0.2), "99", "test", out_dir=tmp_path)
    assert html.read_text() == "old html" and png.read_bytes() == b"old png"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no temporary left


def test_a_png_export_that_fails_once_is_tried_again(tmp_path, monkeypatch):
    """kaleido's page is sometimes not ready on a busy CPU ("kaleido_scopes is not defined"):
    the export is tried again, with a warning, before it is an error."""
    monkeypatch.setattr(figures, "_chromium", lambda: "/usr/bin/chromium")
    calls = []

    def flaky(self, path, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("ReferenceError: kaleido_scopes is not defined")
        Path(path).write_bytes(b"new png")

    monkeypatch.setattr(go.Figure, "write_image", flaky)
    html, png = _old_pair(tmp_path)
    with pytest.warns(UserWarning, match="trying again"):
        save_figure(accuracy_by_layer(_table(), 0.2), "99", "test", out_dir=tmp_path)
    assert len(calls) == 2 and png.read_bytes() == b"new png"


def _fake_bin(tmp_path, uid, *browsers):
    """A PATH with a fake ``id`` (as user ``uid``) and fake browsers, and nothing else."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in (("id", f"echo {uid}"), *((b, "exit 0") for b in browsers)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


@pytest.mark.skipif(not Path("/bin/bash").is_file(), reason="needs bash")
def test_make_run_finds_the_browser_or_fails_at_once(tmp_path):
    """``.ci/chromium`` (``make run``'s first step, and CI's): a browser on PATH passes; none,
    and not root to install one, fails naming the command; make runs it, then a real PNG
    export, before the demo and the notebooks."""
    script = str(ROOT / ".ci" / "chromium")
    absent = subprocess.run(["/bin/bash", script], capture_output=True, text=True,
                            env={"PATH": _fake_bin(tmp_path / "a", 1000)}, check=False)
    assert absent.returncode == 1
    assert "sudo apt-get install -y chromium fonts-liberation" in absent.stderr
    found = subprocess.run(["/bin/bash", script], capture_output=True, text=True, check=False,
                           env={"PATH": _fake_bin(tmp_path / "b", 1000, "chromium-browser")})
    assert found.returncode == 0, found.stderr
    if shutil.which("make"):
        plan = subprocess.run(["make", "-n", "run"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout
        steps = [plan.index(s) for s in (".ci/chromium", "-m steerlab.figures", "steerlab demo",
                                          "steerlab notebooks")]
        assert steps == sorted(steps), plan
        assert "STEERLAB_REQUIRE_PNG := 1" in (ROOT / "Makefile").read_text()


def test_make_test_finds_the_browser_before_pytest():
    """``make test`` runs ``.ci/chromium`` before the suite, as ``make run`` does, so the browser
    tests never skip for want of Chromium under it (none found and none installable: make
    stops at once, naming the install command)."""
    if not shutil.which("make"):
        pytest.skip("needs make")
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    assert ".ci/chromium" in plan and plan.index(".ci/chromium") < plan.index("-m pytest"), plan


def test_widget_wraps_the_plain_function(tiny_llama, sets):
    vec = diff_of_means(*sets)
    box = steering_explorer(tiny_llama, vec, "Hi", layer=1, coeff=40.0, max_new_tokens=4,
                            chat=False)
    (layer_slider, coeff_slider), status, output = box.children[0].children, *box.children[1:]
    assert output.value.startswith("<pre") and "layer 1" in status.value
    first = output.value
    expected = steered_text(tiny_llama, vec, "Hi", 1, 40.0, 4, chat=False)
    assert expected in first or expected.replace("<", "&lt;") in first
    layer_slider.value = 3
    assert "layer 3" in status.value and "computing" not in status.value
    coeff_slider.value = 0.0
    assert steered_text(tiny_llama, vec, "Hi", 3, 0.0, 4, chat=False) == \
        steered_text(tiny_llama, vec, "Hi", 1, 0.0, 4, chat=False)  # coeff 0 = unsteered
