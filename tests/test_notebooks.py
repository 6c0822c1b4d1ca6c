"""Every numbered notebook executes top to bottom in smoke mode (same code paths, small data),
and the stored .ipynb files match their .py sources and carry no outputs."""

import json
import os
import time
from pathlib import Path

import nbformat
import pytest

from steerlab.notebook_runner import execute, notebooks_dir, sources, sync

NOTEBOOKS = [p.stem for p in sources()]


def _keep_dir() -> Path:
    path = notebooks_dir().parent / "build" / "docs" / "executed-smoke"
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_ipynb_in_sync_and_without_outputs():
    assert NOTEBOOKS[:5] == ["00_quickstart", "01_pca_reasoning_vs_memorisation",
                             "02_steering_accuracy_by_layer", "03_cosine_profiles",
                             "04_cost_benefit"]
    assert sync(check=True) == [], "run `steerlab notebooks --sync`"
    for name in NOTEBOOKS:
        nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes_in_smoke_mode(name, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_SMOKE", "1")
    monkeypatch.setenv("STEERLAB_FIGURES", str(tmp_path / "figures"))
    monkeypatch.setenv("STEERLAB_RESULTS", str(tmp_path / "results"))
    nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
    execute(nb, notebooks_dir(), timeout=900)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    written = list((tmp_path / "figures").glob(f"{name[:2]}_*.html"))  # every notebook saves
    assert written, f"{name} wrote no figure"
    if os.path.exists("/usr/bin/chromium"):
        assert list((tmp_path / "figures").glob(f"{name[:2]}_*.png"))
    # kept for the documentation site: `make docs` renders this smoke run instead of a new one
    # (docs/_tools/notebooks.py; notebooks/executed/, where `make run` writes, is left alone)
    nb.metadata["steerlab_run"] = {"mode": "smoke", "by": "tests/test_notebooks.py",
                                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    nbformat.write(nb, _keep_dir() / f"{name}.ipynb")


def test_a_recorded_summary_is_kept_and_the_new_one_compared(tmp_path, monkeypatch, capsys):
    from steerlab.notebooks import compare_summaries, write_summary

    monkeypatch.setenv("STEERLAB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("STEERLAB_LATEST", str(tmp_path / "latest"))
    monkeypatch.delenv("STEERLAB_SMOKE", raising=False)
    doc = {"gap": 0.1457, "table": [{"layer": 3, "acc": 0.90}], "dtype": "bfloat16"}
    first = write_summary("m", "thing", doc)
    assert first == tmp_path / "results" / "thing_m.json"
    again = write_summary("m", "thing", {**doc, "gap": 0.1454})  # the same within tolerance
    assert again == tmp_path / "latest" / "thing_m.json"
    assert "matches it: 4 values" in capsys.readouterr().out
    assert json.loads(first.read_text())["gap"] == 0.1457  # the recorded one is kept
    write_summary("m", "thing", {**doc, "table": [{"layer": 3, "acc": 0.80}], "dtype": "x"})
    said = capsys.readouterr().out
    assert "differs in 2 of 4 values" in said and "table[0].acc" in said
    n, differ = compare_summaries({"a": [1, 2]}, {"a": [1]})
    assert n == 2 and differ == ["a[1]: recorded 2, now None"]
    n, differ = compare_summaries({"c": [{"seconds": 339.0, "acc": 0.5}], "gen_seconds": 1},
                                  {"c": [{"seconds": 52.0, "acc": 0.5}], "gen_seconds": 9})
    assert n == 1 and differ == []  # wall times are not results
    write_summary("m", "timing", {"seconds": 1.0}, measured=True)
    write_summary("m", "timing", {"seconds": 9.0}, measured=True)
    assert "wall times" in capsys.readouterr().out
