"""Running the numbered notebooks, and the settings they share (smoke switch, models).

The notebooks live in ``notebooks/`` as jupytext percent scripts (``NN_name.py``, the source of
truth, readable diffs) paired with output-free ``.ipynb`` files made from them
(``steerlab notebooks --sync``). ``steerlab notebooks`` executes them in order, writes executed
copies to ``notebooks/executed/`` and the figures to ``figures/``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlab import _io
from steerlab.console import say
from steerlab.embedded import EMBEDDED
from steerlab.figures import figures_dir
from steerlab.options import Scoring, env_flag
from steerlab.spotcheck import shown

__all__ = ["figures_dir", "recompute", "results_root", "run", "settings", "smoke", "sync",
           "write_summary"]


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


def recompute() -> bool:
    """True when ``STEERLAB_RECOMPUTE=1`` (``make run-all``): the notebooks reuse no recording
    (:mod:`steerlab.recordings`) and write new ones under :func:`results_root`."""
    return env_flag("STEERLAB_RECOMPUTE")


def results_root() -> Path:
    """Where notebooks keep recordings and summaries: ``$STEERLAB_RESULTS``, else
    ``runs/recomputed/`` under :func:`recompute` (so ``results/`` keeps the recorded ones),
    else ``results/``."""
    repo = Path(__file__).resolve().parent.parent
    if os.environ.get("STEERLAB_RESULTS"):
        return Path(os.environ["STEERLAB_RESULTS"])
    return repo / "runs" / "recomputed" if recompute() else repo / "results"


def results_path(model: str, task: str) -> Path:
    """Where notebooks keep sweep results: ``results/sweep_<model>_<task>.parquet`` (the same
    files the CLI commands in the README write, so a finished sweep is reused), or
    ``results/smoke/`` under the smoke switch; :func:`results_root` names the root."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    root = results_root()
    return (root / "smoke" if smoke() else root) / f"sweep_{short}_{task}.parquet"


def summary_path(model: str, what: str) -> Path:
    """Where a notebook's summary the docs quote is recorded: ``results/<what>_<model>.json``
    (``results/smoke/`` under the smoke switch, like :func:`results_path`); its journals sit
    beside it (``.jsonl``). :func:`write_summary` writes it."""
    short = SHORT_NAMES.get(model, model.replace("/", "--"))
    return results_path(model, what).with_name(f"{what}_{short}.json")


#: how close a recomputed summary's numbers must be to the recorded ones to "match" (either)
SUMMARY_RTOL, SUMMARY_ATOL = 0.02, 0.01


def _leaves(doc: Any, at: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        return {k: v for key, val in doc.items() for k, v in _leaves(val, f"{at}.{key}").items()}
    if isinstance(doc, list):
        return {k: v for i, val in enumerate(doc) for k, v in _leaves(val, f"{at}[{i}]").items()}
    return {at.lstrip("."): doc}


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def compare_summaries(recorded: Any, new: Any) -> tuple[int, list[str]]:
    """(values compared, one line per value that differs): numbers within
    :data:`SUMMARY_RTOL` relative or :data:`SUMMARY_ATOL` absolute match, anything else
    must be equal."""
    old, now = _leaves(recorded), _leaves(new)
    differ = []
    for key in sorted(set(old) | set(now)):
        a: Any = old.get(key)
        b: Any = now.get(key)
        if _number(a) and _number(b):
            if abs(float(a) - float(b)) <= max(SUMMARY_ATOL, SUMMARY_RTOL * abs(float(a))):
                continue
        elif a == b:
            continue
        differ.append(f"{key}: recorded {a!r}, now {b!r}")
    return len(set(old) | set(now)), differ


def _plain(x: Any) -> Any:
    """What JSON cannot hold as it is: numbers (numpy's) as floats, the rest as text."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def write_summary(model: str, what: str, doc: dict[str, Any], measured: bool = False) -> Path:
    """Write a notebook's summary (:func:`summary_path`), JSON without pickle. The first run
    records it in ``results/``; once one is recorded there it is kept (``make run`` leaves
    ``results/`` as recorded: delete the file to record anew), this run's goes to
    ``runs/latest/`` (``$STEERLAB_LATEST``) and a line says how it compares
    (:func:`compare_summaries`; for a ``measured`` summary, this machine's wall times, no
    comparison). Returns the path written."""
    path = summary_path(model, what)
    text = json.dumps(doc, indent=1, default=_plain)
    if not path.is_file():
        return _io.write_text(path, text)
    latest = Path(os.environ.get("STEERLAB_LATEST") or Path(__file__).resolve().parent.parent
                  / "runs" / "latest") / path.name
    _io.write_text(latest, text)
    if measured:
        say(f"{shown(path)} is recorded; this run's wall times are in {shown(latest)}")
        return latest
    n, differ = compare_summaries(json.loads(path.read_text()), json.loads(text))
    if differ:
        say(f"{shown(path)} is recorded; this run's summary ({shown(latest)}) differs in "
            f"{len(differ)} of {n} values beyond {SUMMARY_RTOL:.0%} / {SUMMARY_ATOL}: "
            + "; ".join(differ[:4]) + (" ..." if len(differ) > 4 else ""))
    else:
        say(f"{shown(path)} is recorded; this run's summary ({shown(latest)}) matches it: "
            f"{n} values, numbers within {SUMMARY_RTOL:.0%} or {SUMMARY_ATOL}")
    return latest


def replication_dir(model: str, scoring: Scoring = "letter") -> Path:
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
    learned vector use it when it is there. Under :func:`recompute`: the run trained anew
    (:func:`run_dir`)."""
    if recompute():
        return run_dir(model, task)
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

    A reply can sit unseen until the wait's own timeout runs out when the client sends on the
    same channel meanwhile: ``Session.send`` sends through a blocking shadow of the asyncio
    socket, which uses up the edge-triggered wake-up the asyncio poll waits for
    (``bench/nbclient_stall_repro.py``). nbclient sends so whenever a cell writes into an
    ipywidgets ``Output`` (``interactive``, ``interact``): such a cell then "takes" the whole
    cell timeout and passes, or fails with a timeout (``bench/notebook_polls.py`` counts the
    stalls with and without slices). steerlab's own widgets use no ``Output``
    (``slider_figure``), so its notebooks run under plain nbconvert too; the slices keep the
    runner immune for notebooks and lessons that do. Waking up every slice finds the reply as
    soon as it is there.
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


def execute(nb: Any, cwd: Path, timeout: int = 3600,
            on_cell: Callable[[int, Any], None] | None = None) -> Any:
    """Run notebook ``nb`` (an nbformat node, changed in place: outputs, widget state) top to
    bottom in a fresh kernel with ``cwd`` as its folder; raises on a cell error or timeout.
    The one notebook runner of the project (``steerlab notebooks``, the lessons, the tests).
    ``on_cell(index, cell)`` is called after each cell has run."""
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
            if on_cell is not None:
                on_cell(index, cell)
        client.set_widgets_metadata()
    return nb


#: seconds without a line on the terminal after which the runner says where it is
HEARTBEAT = 60.0
#: a cell that runs at least this long gets its own "done" line
SLOW_CELL = 10.0
#: a line of a cell's stderr that is a Python warning (``file:line: SomeWarning: text``)
_WARNING = re.compile(r"\b\w*Warning: ")


def _elapsed(seconds: float) -> str:
    m, sec = divmod(int(seconds), 60)
    return f"{m}m{sec:02d}s" if m else f"{sec}s"


def warnings_in(cell: Any) -> list[str]:
    """The warning lines a executed cell printed (its stderr outputs)."""
    lines = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            lines += [ln.strip() for ln in out.get("text", "").splitlines()
                      if _WARNING.search(ln)]
    return lines


class _Terminal:
    """What one notebook shows on the terminal while it runs: the lines its kernel sends
    (:mod:`steerlab.console`: the sweep's cell counter, spot checks), a line for each slow
    cell (cells done / total, elapsed time), every warning a cell printed, and a heartbeat
    when nothing was said for :data:`HEARTBEAT` seconds."""

    def __init__(self, label: str, cells: int) -> None:
        import tempfile
        import threading

        self.label, self.cells, self.done = label, cells, 0
        self.t0 = self.last = self.cell_t0 = time.perf_counter()
        fd, name = tempfile.mkstemp(prefix="steerlab-console-", suffix=".log")
        os.close(fd)
        self.path = Path(name)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.file = self.path.open(encoding="utf-8")
        self.thread = threading.Thread(target=self._follow, daemon=True)

    def say(self, text: str) -> None:
        print(f"{self.label} | {text}", flush=True)
        self.last = time.perf_counter()

    def _drain(self) -> None:
        """Print the lines the kernel has sent since the last look (complete lines only)."""
        with self.lock:
            for line in self.file.read().splitlines():
                self.say(line)

    def _follow(self) -> None:
        while not self.stop.wait(1.0):
            self._drain()
            now = time.perf_counter()
            if now - self.last >= HEARTBEAT:
                self.say(f"cell {self.done + 1}/{self.cells} running for "
                         f"{_elapsed(now - self.cell_t0)}; {_elapsed(now - self.t0)} elapsed")

    def cell_done(self, index: int, cell: Any) -> None:
        if cell.get("cell_type") != "code":
            return
        self._drain()  # the cell's own lines first
        self.done += 1
        now = time.perf_counter()
        for line in warnings_in(cell):
            self.say(f"warning in cell {self.done}/{self.cells}: {line}")
        if now - self.cell_t0 >= SLOW_CELL:
            self.say(f"cell {self.done}/{self.cells} done in {_elapsed(now - self.cell_t0)}; "
                     f"{_elapsed(now - self.t0)} elapsed")
        self.cell_t0 = now

    def __enter__(self) -> _Terminal:
        from steerlab.console import ENV

        self.before = os.environ.get(ENV)
        os.environ[ENV] = str(self.path)  # the kernel inherits it
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        from steerlab.console import ENV

        self.stop.set()
        self.thread.join()
        self._drain()
        self.file.close()
        if self.before is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self.before
        self.path.unlink(missing_ok=True)


#: the longest one cell of ``steerlab notebooks`` may run: a cell that computes a recording
#: (``make run-all``, or a recording missing from ``results/``) takes hours on a 2-core CPU,
#: and the terminal shows that it is alive (:class:`_Terminal`)
CELL_TIMEOUT = 24 * 3600


def run(names: list[str] | None = None, out_dir: Path | None = None,
        timeout: int = CELL_TIMEOUT) -> list[tuple[str, float]]:
    """Execute the notebooks in order (each in its own kernel, cwd = notebooks/); print a
    line when each starts and ends, and while it runs its progress (:class:`_Terminal`);
    return (name, seconds)."""
    import nbformat

    sync()
    out = out_dir or notebooks_dir() / "executed"
    out.mkdir(parents=True, exist_ok=True)
    done = []
    todo = [p.with_suffix(".ipynb") for p in sources()
            if names is None or p.stem in names or p.stem[:2] in names]
    for i, path in enumerate(todo, start=1):
        t0 = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        cells = sum(c.cell_type == "code" for c in nb.cells)
        print(f"[{i}/{len(todo)}] {path.stem} ({cells} code cells) ...", flush=True)
        with _Terminal(f"[{i}/{len(todo)}] {path.stem[:2]}", cells) as terminal:
            execute(nb, notebooks_dir(), timeout, on_cell=terminal.cell_done)
        nbformat.write(nb, out / path.name)
        sec = time.perf_counter() - t0
        done.append((path.stem, sec))
        print(f"[{i}/{len(todo)}] {path.stem} done in {sec:.0f} s", flush=True)
    return done
