"""Notebook runner stalls: widget cells run through nbclient with its own channel waits
("plain", as under ``jupyter nbconvert --execute``) and with steerlab's sliced waits
(``steerlab.notebook_runner.execute``), side by side.

A notebook of one set-up cell and ``--cells`` slider cells over a plotly figure runs
``--runs`` times each way with a ``--timeout`` per cell; a cell that takes longer than 3 s
counts as a stall (an unstalled slider cell takes ~0.02 s). The cells are either an
``ipywidgets.interactive`` (its figure goes through an ``Output`` widget, which nbclient answers
on the shell channel mid-cell: the stall, ``bench/nbclient_stall_repro.py``) or
``steerlab.widgets.slider_figure`` (no ``Output``), the latter under plain waits only.
``--load N`` keeps N busy-looping processes running meanwhile (the stalls come with a loaded
machine, as in CI while a kernel computes).
Prints the counts and the wall times, and appends them to bench/results.jsonl.

Usage: python bench/notebook_polls.py [--cells 40] [--runs 3] [--timeout 20] [--load 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import machine, record, table

PART = "notebook_polls"
SETUP = """
import numpy as np, plotly.graph_objects as go
from IPython.display import display
from ipywidgets import IntSlider, interactive
from steerlab.widgets import slider_figure
def make(layer):
    return go.Figure(go.Scatter(x=np.random.rand(500), y=np.random.rand(500), mode="markers"),
                     layout={"title": f"L{layer}"})
def with_output(**sliders):  # slider_figure as it was: interactive, figure through an Output
    return interactive(lambda **kw: display(make(**kw)), **sliders)
with_output(layer=IntSlider(value=3, min=0, max=9))  # warm-up: first display imports
slider_figure(make, layer=IntSlider(value=3, min=0, max=9))
"""
SLIDER = "layer=IntSlider(value=3, min=0, max=9, continuous_update=False)"
CELLS = {"interactive": f"with_output({SLIDER})", "slider_figure": f"slider_figure(make, {SLIDER})"}
#: (waits, widget) pairs measured: the Output pattern both ways, steerlab's widget plainly
WAYS = [("plain", "interactive"), ("sliced", "interactive"), ("plain", "slider_figure")]


def _notebook(cells: int, widget: str):
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(SETUP)] + [new_code_cell(CELLS[widget])] * cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    return nb


def _run(cells: int, timeout: int, sliced: bool, widget: str,
         cwd: Path) -> tuple[int, int, float]:
    """(stalled cells, cells that raised, seconds) of one run."""
    from nbclient import NotebookClient

    from steerlab.notebook_runner import _sliced_polls

    nb = _notebook(cells, widget)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    stalls = errors = 0
    t0 = time.perf_counter()
    with client.setup_kernel():
        assert client.kc is not None
        if sliced:
            _sliced_polls(client.kc.shell_channel)
            _sliced_polls(client.kc.iopub_channel)
        for i, cell in enumerate(nb.cells):
            t = time.perf_counter()
            try:
                client.execute_cell(cell, i)
            except Exception:  # noqa: BLE001 - a timeout is what is being counted
                errors += 1
            stalls += i > 0 and time.perf_counter() - t > 3.0
    return stalls, errors, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=40)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=int, default=20)
    p.add_argument("--load", type=int, default=2, help="busy processes running meanwhile")
    args = p.parse_args()
    import subprocess
    import sys

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
               for _ in range(args.load)]
    print(f"== notebook polls ({machine()}): {args.runs} runs x {args.cells} slider cells, "
          f"{args.timeout} s cell timeout, {args.load} busy processes")
    rows = []
    try:
        _compare(args, rows)
    finally:
        for b in burners:
            b.kill()
    print(table(["waits", "widget", "run", "stalled cells", "timeouts raised", "wall"], rows))


def _compare(args: argparse.Namespace, rows: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            for how, widget in WAYS:
                stalls, errors, sec = _run(args.cells, args.timeout, how == "sliced", widget,
                                           Path(tmp))
                record(PART, figure="stalled_widget_cells", how=how, widget=widget, repeat=run,
                       cells=args.cells, timeout_s=args.timeout, load=args.load,
                       value=stalls, errors=errors, seconds=sec)
                rows.append([how, widget, run, f"{stalls}/{args.cells}", errors, f"{sec:.1f} s"])
                print(rows[-1], flush=True)


if __name__ == "__main__":
    main()
