"""The fast paths' room: work shared between the cells of a sweep, a patching run or kind
patching, written once.

Three kinds of sharing make the sweeps and patching 2.7-15x faster than one pass per cell:

* **a recorded prefix** (:class:`Prefix`): nothing before block ``layer`` depends on an edit
  at ``layer``, so each batch runs blocks ``0..layer`` once and every cell runs only the
  blocks after it, the recorded output replayed in place of the blocks before;
* **shared columns** (``Prefix.forward(shared=True)``): the leading tokens every row of a
  batch shares (a chat template's system prompt, few-shot examples) are read once;
* **greedy decoding with rows retired** (:func:`greedy`): one row per (item, cell), rows
  leave the batch as their answers complete, a staged prefill reads each prompt once up to
  the layer its cells steer from.

Only a backend that implements :class:`FastPath` (the ``hf`` backend) shares work; on the
others each helper here runs the plain forward, so callers write one code path. Whether a
fast path may run is one test (:func:`shares`): the backend has it, and nothing but the
caller's own edits hooks the model (a foreign hook would see the shared work once, not once
per cell). Nothing outside this module names the protocol's methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from steerlab.backends import Backend
from steerlab.backends.blocks import hidden_of, replace_hidden
from steerlab.errors import OptionError

__all__ = ["FastPath", "Prefix", "decodes", "greedy", "shares"]

#: the fast paths a backend may offer
Path = Literal["replay", "greedy"]


@runtime_checkable
class FastPath(Protocol):
    """What a backend implements to share work between cells (the ``hf`` backend does)."""

    def fast_paths(self) -> frozenset[str]:
        """Which of ``"replay"`` (:meth:`record` / :meth:`replaying` / :meth:`forward_shared`)
        and ``"greedy"`` (:meth:`greedy`) this backend offers for its model."""
        ...

    def record(self, enc: dict[str, torch.Tensor], layer: int,
               start: tuple[int, Any] | None = None) -> Any:
        """Block ``layer``'s output on ``enc``, running no block after it; ``start`` =
        (earlier layer, its recorded output) resumes from there instead of the embeddings."""
        ...

    def replaying(self, layer: int, output: Any) -> AbstractContextManager[None]:
        """Inside: blocks ``0..layer`` hand back ``output`` (block ``layer``'s recorded
        output) without computing; their edits still run on it."""
        ...

    def forward_shared(self, enc: dict[str, torch.Tensor],
                       keep: int | torch.Tensor) -> torch.Tensor:
        """``forward(enc, keep)``, reading the leading columns all rows share once."""
        ...

    def greedy(self, enc: dict[str, torch.Tensor], max_new_tokens: int,
               stop: set[int] | None = None,
               done: Callable[[int, list[int]], bool] | None = None,
               on_rows: Callable[[torch.Tensor], None] | None = None,
               repeat: int = 1, shared_until: int | Sequence[int] | None = None
               ) -> list[list[int]]:
        """Greedy decoding in which each row leaves the batch once it is finished."""
        ...


def decodes(be: Backend) -> bool:
    """True when ``be`` has the greedy loop (rows retired as they finish), whatever hooks the
    model: one batch decoded with the edits live, nothing shared between cells."""
    return isinstance(be, FastPath) and "greedy" in be.fast_paths()


def shares(be: Backend, path: Path) -> bool:
    """The one test of whether work may be shared between cells now: ``be`` offers ``path``
    and nothing but the caller's own edits (registered after this test) hooks the model."""
    return isinstance(be, FastPath) and path in be.fast_paths() and not be.has_foreign_hooks()


class Prefix:
    """Blocks ``0..layer`` of one batch ``enc``, run once and replayed for every cell edited
    after them.

    :meth:`reach` records block ``layer``'s output (continuing from the layer recorded last
    when that one is below); :meth:`forward` then runs the blocks after it with whatever edits
    are live. Where the backend cannot replay, or ``share`` is False, nothing is recorded and
    :meth:`forward` is a plain forward: the same numbers, computed in full. ``start``: a
    ``(layer, output)`` recorded earlier on the same batch (:attr:`state` of another prefix)."""

    def __init__(self, be: Backend, enc: dict[str, torch.Tensor], share: bool = True,
                 start: tuple[int, Any] | None = None) -> None:
        self.be, self.enc = be, enc
        self.on = share and shares(be, "replay")
        self.state: tuple[int, Any] | None = start if self.on else None

    def reach(self, layer: int) -> tuple[int, Any] | None:
        """Record block ``layer``'s output (nothing when not sharing); returns :attr:`state`."""
        if self.on:
            assert isinstance(self.be, FastPath)
            prev = self.state if self.state is not None and self.state[0] < layer else None
            self.state = (layer, self.be.record(self.enc, layer, prev))
        return self.state

    def clear(self) -> None:
        """Forget the recording: the next :meth:`forward` runs every block."""
        self.state = None

    def forward(self, keep: int | torch.Tensor | None = None, rows: torch.Tensor | None = None,
                shared: bool = False) -> torch.Tensor:
        """Logits of the batch (``rows``: of those rows of it, in that order) with the live
        edits, the recorded blocks replayed; ``shared``: the columns all rows share read once
        (``keep`` required)."""
        enc = self.enc if rows is None else {k: v[rows.to(v.device)] for k, v in self.enc.items()}
        if self.state is None:
            return self.be.forward(enc, keep=keep)
        assert isinstance(self.be, FastPath)
        layer, output = self.state
        if rows is not None:
            hidden = hidden_of(output)
            output = replace_hidden(output, hidden[rows.to(hidden.device)])
        with self.be.replaying(layer, output):
            if shared and keep is not None:
                return self.be.forward_shared(enc, keep=keep)
            return self.be.forward(enc, keep=keep)


def greedy(be: Backend, enc: dict[str, torch.Tensor], max_new_tokens: int,
           done: Callable[[int, list[int]], bool] | None = None,
           on_rows: Callable[[torch.Tensor], None] | None = None, repeat: int = 1,
           shared_until: int | Sequence[int] | None = None) -> list[list[int]]:
    """Greedy new tokens per row of ``enc`` (``repeat`` rows per prompt), each row leaving the
    batch once finished (EOS, ``max_new_tokens``, or ``done(row, new_tokens)``); ``on_rows``
    hears which rows are still in the batch; ``shared_until``: the layer up to which the
    prompt's forward is the same for a prompt's repeats (see the HF backend's ``greedy``).
    For backends where :func:`decodes` holds."""
    if not isinstance(be, FastPath) or "greedy" not in be.fast_paths():
        raise OptionError(f"Backend {be.name!r} has no greedy loop (the HF backend with a "
                          "KV-cache model has one); check engine.decodes first.")
    return be.greedy(enc, max_new_tokens, done=done, on_rows=on_rows, repeat=repeat,
                     shared_until=shared_until)

