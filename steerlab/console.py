"""What long work inside a notebook shows on the terminal that runs it.

``steerlab notebooks`` (:func:`steerlab.notebook_runner.run`) runs each notebook in a kernel of its
own, whose output goes into the executed notebook, not to the terminal. The runner sets
``$STEERLAB_CONSOLE`` to a file before it starts the kernel; :func:`say` and the bars of
:func:`progress` append lines to it, and the runner prints them as they arrive (with the
notebook's cell counter and elapsed time). Outside such a run (``$STEERLAB_CONSOLE`` unset)
:func:`say` is a plain ``print`` and :func:`progress` a plain ``tqdm`` bar.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tqdm.auto import tqdm

__all__ = ["ENV", "progress", "say", "tell"]

#: the environment variable naming the file the runner reads
ENV = "STEERLAB_CONSOLE"
#: the fewest seconds between two lines of one progress bar on the console
EVERY = 20.0


def tell(text: str) -> None:
    """Append ``text`` to the runner's console file (nothing outside a run)."""
    path = os.environ.get(ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text.rstrip("\n") + "\n")


def say(text: str) -> None:
    """Print ``text`` (into the notebook) and send it to the terminal of the run."""
    print(text, flush=True)
    tell(text)


class _ConsoleBar(tqdm):  # type: ignore[misc]
    """A tqdm bar that also tells the console its count and elapsed time, at most every
    :data:`EVERY` seconds and when it closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._told = time.monotonic()
        self._moved = False
        if not self.disable and (self.total is None or self.n < self.total):
            tell(f"{self.desc}: {self.n}/{self.total} started")

    def _tell(self) -> None:
        elapsed = self.format_interval(self.format_dict["elapsed"])
        post = f" ({self.postfix})" if self.postfix else ""
        tell(f"{self.desc}: {self.n}/{self.total}{post}, {elapsed} elapsed")
        self._told = time.monotonic()

    def update(self, n: float | None = 1) -> bool | None:
        shown = super().update(n)
        self._moved = True
        if not self.disable and time.monotonic() - self._told >= EVERY:
            self._tell()
        return shown

    def close(self) -> None:
        if not self.disable and self._moved and not getattr(self, "_closed_told", False):
            self._closed_told = True
            self._tell()
        super().close()


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """A ``tqdm`` bar (same arguments) whose count and elapsed time also reach the terminal
    of a ``steerlab notebooks`` run."""
    return _ConsoleBar(*args, **kwargs)
