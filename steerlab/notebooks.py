"""Running the numbered notebooks, and the settings they share (smoke switch, models).

The notebooks live in ``notebooks/`` as jupytext percent scripts (``NN_name.py``, the source of
truth, readable diffs) paired with output-free ``.ipynb`` files made from them
(``steerlab notebooks --sync``). ``steerlab notebooks`` executes them in order, writes executed
copies to ``notebooks/executed/`` and the figures to ``figures/``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab.figures import figures_dir
from steerlab.models import EMBEDDED
from steerlab.options import env_flag

__all__ = ["figures_dir", "run", "settings", "smoke", "sync"]


def smoke() -> bool:
    """True when ``STEERLAB_SMOKE=1``: smaller data and sweeps, same code paths."""
    return env_flag("STEERLAB_SMOKE")


@dataclass(frozen=True)
class Settings:
    """What the notebooks run on; every size shrinks under the smoke switch."""

    models: list[str] = field(default_factory=lambda: list(EMBEDDED))
    n_extract: int = 200  # prompts per set for vectors and PCA
    n_eval: int = 200  # evaluation items per sweep cell
    n_sweep_extract: int | None = None  # prompts per set for sweep vectors (None: all)
    n_layers: int = 6  # steering layers per model in sweeps
    coeffs: tuple[float, ...] = (-0.4, -0.2, 0.2, 0.4)
    max_new_tokens: int = 40
    n_gen: int = 100  # items per generative sweep cell
    gen_coeffs: tuple[float, ...] = (-0.1, 0.1)  # generative sweeps: smaller pushes than recall's
    smoke: bool = False


def settings() -> Settings:
    models = os.environ.get("STEERLAB_MODELS")
    names = [m.strip() for m in models.split(",")] if models else list(EMBEDDED)
    if smoke():
        return Settings(names, n_extract=24, n_eval=24, n_sweep_extract=24, n_layers=2,
                        coeffs=(-0.3, 0.3), max_new_tokens=12, n_gen=8,
                        gen_coeffs=(0.1,), smoke=True)
    return Settings(names)


# the grids of the sweeps recorded in results/ (README): the notebooks reuse those cells
RECORDED_LAYERS = {"smollm2-135m-instruct": [3, 8, 12, 16, 20, 25],
                   "gemma-3-270m": [2, 5, 8, 11, 14, 16]}


def sweep_layers(model: str, n_layers: int, k: int) -> list[int]:
    """Steering layers for a sweep: the recorded grid for the embedded models in a full run,
    else ``k`` layers spread over the depth."""
    if not smoke() and model in RECORDED_LAYERS:
        return RECORDED_LAYERS[model]
    return spread_layers(n_layers, k)


def spread_layers(n_layers: int, k: int) -> list[int]:
    """``k`` layers spread over the depth (skipping the first and last)."""
    if k >= n_layers:
        return list(range(n_layers))
    step = (n_layers - 1) / (k + 1)
    return sorted({round(step * (i + 1)) for i in range(k)})


SHORT_NAMES = {"smollm2-135m-instruct": "smollm2", "gemma-3-270m": "gemma3"}


def results_path(model: str, task: str) -> Path:
    """Where notebooks keep sweep results: ``results/sweep_<model>_<task>.parquet`` (the same
    files the CLI commands in the README write, so a finished sweep is reused), or
    ``results/smoke/`` under the smoke switch; ``$STEERLAB_RESULTS`` moves the root."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    root = Path(os.environ.get("STEERLAB_RESULTS",
                               Path(__file__).resolve().parent.parent / "results"))
    return (root / "smoke" if smoke() else root) / f"sweep_{short}_{task}.parquet"


def summary_path(model: str, what: str) -> Path:
    """Where a notebook writes the summary the README quotes: ``results/<what>_<model>.json``
    (``results/smoke/`` under the smoke switch, like :func:`results_path`)."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return results_path(model, what).with_name(f"{what}_{short}.json")


def replication_dir(model: str, scoring: str = "letter") -> Path:
    """Where the seed-protocol replication of ``model`` is kept (``steerlab replicate --out``
    in the README): ``results/replication_<model>/`` for letter scoring,
    ``results/replication_<model>_<scoring>/`` for another (``results/smoke/...`` under the
    smoke switch)."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return results_path(model, "x").with_name(
        f"replication_{short}" + ("" if scoring == "letter" else f"_{scoring}"))


def run_dir(model: str, task: str) -> Path:
    """Where notebooks keep a learned-vector training run (checkpoints + journal):
    ``results/train_<model>_<task>/`` (``results/smoke/...`` under the smoke switch)."""
    return results_path(model, task).with_name(
        f"train_{SHORT_NAMES.get(model, model.replace('/', '--'))}_{task}")


def recorded_run(model: str, task: str) -> Path:
    """The training run recorded in the repository (``results/train_<model>_<task>/``),
    whatever ``$STEERLAB_RESULTS`` and the smoke switch say: notebooks that only read a
    learned vector use it when it is there."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return Path(__file__).resolve().parent.parent / "results" / f"train_{short}_{task}"


def notebooks_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "notebooks"


def sources() -> list[Path]:
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.py"))


def sync(check: bool = False) -> list[Path]:
    """Write ``NN_name.ipynb`` (no outputs) from each ``NN_name.py``; with ``check``, only
    report the notebooks that are out of date."""
    import jupytext
    import nbformat

    stale = []
    for src in sources():
        nb = jupytext.read(src)
        for i, cell in enumerate(nb.cells):
            cell.id = f"{src.stem[:2]}-{i:02d}"  # stable ids keep the .ipynb reproducible
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        text = nbformat.writes(nb) + "\n"
        target = src.with_suffix(".ipynb")
        if not target.is_file() or target.read_text() != text:
            stale.append(target)
            if not check:
                target.write_text(text)
    return stale


#: how long one wait on a kernel channel lasts before it looks again (seconds)
POLL_SLICE = 0.1


def _sliced_polls(channel: Any) -> None:
    """Make ``channel.get_msg(timeout=t)`` wait in slices of :data:`POLL_SLICE`.

    With pyzmq 27 / jupyter_client 8.10 under asyncio, a reply that lands while many widget
    messages arrive can sit unseen until the wait's own timeout runs out: a cell with an
    ipywidgets slider then "takes" the whole cell timeout (900 s in the tests) and passes, or
    fails with a timeout; ``bench/notebook_polls.py`` counts such stalls with and without
    slices. Waking up every slice finds the reply as soon as it is there.
    """
    from queue import Empty
    from time import monotonic

    inner = channel.get_msg

    async def get_msg(timeout: float | None = None, **kwargs: Any) -> Any:
        deadline = None if timeout is None else monotonic() + timeout
        while True:
            step = POLL_SLICE if deadline is None else max(0.0, min(POLL_SLICE,
                                                                    deadline - monotonic()))
            try:
                return await inner(timeout=step, **kwargs)
            except Empty:
                if deadline is not None and monotonic() >= deadline:
                    raise

    channel.get_msg = get_msg


def execute(nb: Any, cwd: Path, timeout: int = 3600) -> Any:
    """Run notebook ``nb`` (an nbformat node, changed in place: outputs, widget state) top to
    bottom in a fresh kernel with ``cwd`` as its folder; raises on a cell error or timeout.
    The one notebook runner of the project (``steerlab notebooks``, the lessons, the tests)."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel():
        assert client.kc is not None
        _sliced_polls(client.kc.shell_channel)
        _sliced_polls(client.kc.iopub_channel)
        info = client.wait_for_reply(client.kc.kernel_info())
        if info is not None:
            nb.metadata["language_info"] = info["content"]["language_info"]
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        client.set_widgets_metadata()
    return nb


def run(names: list[str] | None = None, out_dir: Path | None = None,
        timeout: int = 3600) -> list[tuple[str, float]]:
    """Execute the notebooks in order (each in its own kernel, cwd = notebooks/); print one
    progress line per notebook; return (name, seconds)."""
    import nbformat

    sync()
    out = out_dir or notebooks_dir() / "executed"
    out.mkdir(parents=True, exist_ok=True)
    done = []
    todo = [p.with_suffix(".ipynb") for p in sources()
            if names is None or p.stem in names or p.stem[:2] in names]
    for i, path in enumerate(todo, start=1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(todo)}] {path.stem} ...", flush=True)
        nb = nbformat.read(path, as_version=4)
        execute(nb, notebooks_dir(), timeout)
        nbformat.write(nb, out / path.name)
        sec = time.perf_counter() - t0
        done.append((path.stem, sec))
        print(f"[{i}/{len(todo)}] {path.stem} done in {sec:.0f} s", flush=True)
    return done
