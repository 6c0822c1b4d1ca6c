"""Running the numbered notebooks: ``steerlab notebooks`` executes them in order, each in a
kernel of its own, with progress, slow cells and warnings on the terminal.

The notebooks live in ``notebooks/`` as jupytext percent scripts (``NN_name.py``, the source of
truth, readable diffs) paired with output-free ``.ipynb`` files made from them (:func:`sync`,
``steerlab notebooks --sync``). :func:`run` writes executed copies to ``notebooks/executed/``
and the figures to ``figures/``; what the notebooks share is :mod:`steerlab.notebooks`.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["execute", "notebooks_dir", "run", "sources", "sync"]


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
