"""The notebooks under the headless tools users run them with (nbclient, ``jupyter nbconvert
--execute``, papermill), not only under ``steerlab notebooks``.

A headless runner mimics an ipywidgets ``Output`` widget by sending its outputs back to the kernel
on the shell channel while it waits there for the cell's reply; that send can hide the reply
until the cell timeout runs out (``bench/nbclient_stall_repro.py``). ``slider_figure`` therefore
uses no ``Output`` widget: its figure is a plain output, redrawn through a display handle.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from steerlab.notebook_runner import execute, notebooks_dir

PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"

CELLS = [
    "import plotly.graph_objects as go\n"
    "from ipywidgets import IntSlider\n"
    "from steerlab.widgets import slider_figure\n"
    "sf = slider_figure(lambda layer: go.Figure(go.Scatter(y=[layer, 1])),\n"
    "                   layer=IntSlider(value=2, min=0, max=4))\n"
    "sf",
    "sf.controls['layer'].value = 3  # as a person moving the slider would",
]


def test_slider_figure_needs_no_frontend(tmp_path: Path) -> None:
    """Under plain nbclient (no steerlab polling): the figure is an ordinary output next to the
    controls' widget, no ``Output`` widget is opened (so nbclient never sends on the shell
    channel), and moving a control redraws the figure in place."""
    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    first = nb.cells[0].outputs
    assert [o.output_type for o in first] == ["display_data", "display_data"], first
    assert WIDGET in first[0].data
    assert first[1].data[PLOTLY]["data"][0]["y"] == [3, 1], "the figure was not redrawn"
    assert not nb.cells[1].outputs
    models = {state.get("_model_name") for state in client.widget_state.values()}
    assert "IntSliderModel" in models and "OutputModel" not in models, models
    assert not client.comm_objects, "an Output widget: nbclient will send on the shell channel"


def test_slider_figure_fails_where_it_is_called() -> None:
    """A figure that cannot be made fails the cell that makes the slider (so a headless run
    fails), not only its display."""
    from ipywidgets import IntSlider

    from steerlab.widgets import slider_figure

    with pytest.raises(ZeroDivisionError):
        slider_figure(lambda layer: layer / 0, layer=IntSlider(value=2, min=0, max=4))


#: the cheapest numbered notebook with a ``slider_figure``: in smoke mode under
#: ``steerlab notebooks`` on two loaded cores, 01 took 168 s, 06 358 s, 07 791 s (02 longer)
WIDGET_NOTEBOOK = "01_pca_reasoning_vs_memorisation"


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_widget_notebook_under_plain_nbconvert(tmp_path: Path, monkeypatch) -> None:
    """``jupyter nbconvert --to notebook --execute`` runs a widget notebook in smoke mode within
    twice the project's runner's time on the same notebook (measured here, on the same machine)
    plus 60 s of slack for nbconvert's own start-up, and no ``Output`` widget was opened (the
    stall is a race: notebook 01 with the old ``interactive`` sliders finished in time in 3 of
    3 runs, but always opened one)."""
    name = WIDGET_NOTEBOOK
    for key, value in {"STEERLAB_SMOKE": "1", "STEERLAB_FIGURES": str(tmp_path / "figures"),
                       "STEERLAB_RESULTS": str(tmp_path / "results")}.items():
        monkeypatch.setenv(key, value)  # the runner's kernel and nbconvert's both see them
    nb = nbformat.read(notebooks_dir() / f"{name}.ipynb", as_version=4)
    t0 = time.perf_counter()
    execute(nb, notebooks_dir(), timeout=900)
    runner = time.perf_counter() - t0
    bound = 2 * runner + 60
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           "--output-dir", str(tmp_path / "out"), str(notebooks_dir() / f"{name}.ipynb")]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=bound)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"`jupyter nbconvert --execute` on {name} still running after {bound:.0f} s "
                    f"(2 x the runner's {runner:.0f} s + 60 s): a cell waits on the kernel's "
                    f"reply (stderr tail: {(e.stderr or b'')[-2000:]!r})")
    nbconvert = time.perf_counter() - t0
    print(f"{name} in smoke mode: steerlab runner {runner:.1f} s, "
          f"plain nbconvert {nbconvert:.1f} s (bound {bound:.0f} s)")
    assert done.returncode == 0, done.stderr[-3000:]
    executed = nbformat.read(tmp_path / "out" / f"{name}.ipynb", as_version=4)
    figures = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
               if PLOTLY in o.get("data", {})]
    assert figures, "the executed notebook shows no plotly figure"
    state = executed.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {widget["model_name"] for widget in state.values()}
    assert "IntSliderModel" in models and "OutputModel" not in models, models  # see above
