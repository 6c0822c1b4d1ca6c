"""The phase rule: whether the forward running now reads the prompt or decodes a token.

An edit registered with ``when="prompt"`` or ``when="generated"`` runs only in forwards of
that phase (:func:`gated`). Each backend keeps one :class:`Phase` and attaches it to the
module every forward starts in.

The same hook tells a receipt (:mod:`steerlab.receipts`) what each forward was, from
evidence the rule does not use: the columns the forward's cache already holds against the
width of the prompt the running generation began with (:class:`Seen`). A receipt compares the
two accounts, so a phase rule gone wrong (a library keyword that drifted, one counter per
edit, the stages of a prefill counted as decoding steps) is caught where it acts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import torch

if TYPE_CHECKING:
    from steerlab.backends.base import EditFn, Handle
    from steerlab.options import When


@dataclass(frozen=True)
class Seen:
    """What one forward of the top module was, by evidence independent of the phase rule:
    ``decoding`` when it continues a cache past the prompt's ``width`` columns (within a
    generation steerlab runs) or, outside one, continues any cache or recurrent state."""

    index: int  # the forward's number on this backend
    phase: Literal["prompt", "decoding"]
    step: int  # 0 for a forward of the prompt, k for the k-th decoding step since
    rows: int
    columns: int  # the columns this forward reads
    start: int  # the columns before them (the cache's length; 0 without a cache)
    #: (rows, columns) True at real tokens (the attention mask's last ``columns`` columns);
    #: None where the forward has no mask of that shape
    real: torch.Tensor | None = None


class Watcher(Protocol):
    """What a :class:`Phase` tells about each forward (a receipt)."""

    def begin(self, seen: Seen) -> None: ...

    def end(self) -> None: ...


class Phase:
    """Whether the forward running now reads the prompt or continues a generation.

    The code that runs a forward says so: :meth:`reading` declares every forward inside it
    the prompt's (``prompt=True``: a plain forward, each stage of a staged prefill, the lead
    and the other rows of a shared-column forward) or a decoding step's (``False``). The
    backend's :meth:`Backend.generate` hands the library's loop to :meth:`generation`, which
    counts its forwards (the first reads the prompt, each later one decodes a token). Only a
    forward that neither covers (a generation started on the HF module directly) falls back to
    :func:`continues_cache` on the forward's own arguments.
    """

    def __init__(self) -> None:
        self.generating = False
        self.forwards = 0  # forwards seen in the current generation
        self.prefill = True
        self.declared: bool | None = None  # set by :meth:`reading`
        self._users = 0  # live edits that need the phase kept current
        self._hook: Any = None
        #: the prompt's columns of the generation running now (None: no generation of ours)
        self.width: int | None = None
        self._watchers: list[Watcher] = []
        self._watching: dict[int, int] = {}  # id(watcher) -> edits that watch through it
        self._post: Any = None
        self._count = 0  # forwards seen while watched
        self._steps = 0  # decoding forwards since the last forward of a prompt

    @contextmanager
    def reading(self, prompt: bool, width: int | None = None) -> Iterator[None]:
        """Every forward inside reads the prompt (``True``) or decodes a token (``False``);
        ``width``: the prompt's columns, where forwards inside continue a cache of some of
        them (the evidence a receipt reads, :meth:`seen`)."""
        before, width_before = self.declared, self.width
        self.declared = prompt
        if width is not None:
            self.width = width
        try:
            yield
        finally:
            self.declared, self.width = before, width_before

    @contextmanager
    def generation(self, width: int | None = None) -> Iterator[None]:
        """Count the forwards of one generation (nested ones are refused) whose prompt is
        ``width`` columns wide (what a receipt's evidence compares the cache with)."""
        if self.generating:
            raise RuntimeError("A generation is already running on this backend.")
        self.generating, self.forwards, self.width = True, 0, width
        try:
            yield
        finally:
            self.generating, self.forwards, self.prefill, self.width = False, 0, True, None

    def enter_forward(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Called before every forward of the model's top module (a declared phase needs no
        tracking: :meth:`admits` reads it)."""
        if self.declared is not None:
            return
        if self.generating:
            self.prefill = self.forwards == 0
            self.forwards += 1
        else:
            self.prefill = not continues_cache(args, kwargs)

    def admits(self, when: str) -> bool:
        return admits(when, self.prefill if self.declared is None else self.declared)

    def attach(self, top: torch.nn.Module) -> Handle:
        """Keep this phase current on every forward of ``top`` (the module every forward of
        the backend starts in). One pre-hook however many edits need it: two hooks would
        count each forward twice. The returned handle detaches (the hook goes with the last)."""
        if self._users == 0:
            self._hook = top.register_forward_pre_hook(self._enter, with_kwargs=True)
        self._users += 1
        return _Detach(self)

    def watch(self, top: torch.nn.Module, watcher: Watcher) -> Handle:
        """Tell ``watcher`` about every forward of ``top``: :meth:`Watcher.begin` before it
        with what it is (:class:`Seen`), :meth:`Watcher.end` after it when it completes (a
        forward cut short, as a capture's early stop cuts it, never ends). The returned
        handle stops the telling."""
        attached = self.attach(top)
        if not self._watchers:
            self._post = top.register_forward_hook(self._exit)
        if watcher not in self._watchers:  # told once per forward however many edits it has
            self._watchers.append(watcher)
        self._watching[id(watcher)] = self._watching.get(id(watcher), 0) + 1
        return _Unwatch(self, watcher, attached)

    def seen(self, args: tuple, kwargs: dict[str, Any]) -> Seen:
        """The evidence on one forward (its arguments) of what it is."""
        ids = kwargs.get("input_ids", kwargs.get("inputs_embeds", args[0] if args else None))
        rows, columns = (tuple(ids.shape[:2]) if isinstance(ids, torch.Tensor)
                         and ids.ndim >= 2 else (0, 0))
        before = cached_columns(args, kwargs)
        if self.width is not None and before is not None and before >= 0:
            decoding = before >= self.width
        else:  # a recurrent state has no length: any state continues a sequence
            decoding = before is not None and before != 0
        self._steps = self._steps + 1 if decoding else 0
        self._count += 1
        mask = kwargs.get("attention_mask")
        real = (mask[:, -columns:].bool() if isinstance(mask, torch.Tensor) and mask.ndim == 2
                and mask.shape[0] == rows and mask.shape[1] >= columns > 0 else None)
        return Seen(self._count, "decoding" if decoding else "prompt", self._steps, rows,
                    columns, max(before or 0, 0), real)

    def _enter(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        self.enter_forward(args, kwargs)
        if self._watchers:
            seen = self.seen(args, kwargs)
            for watcher in list(self._watchers):
                watcher.begin(seen)

    def _exit(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        for watcher in list(self._watchers):
            watcher.end()

    def _detach(self) -> None:
        self._users -= 1
        if self._users == 0 and self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _unwatch(self, watcher: Watcher) -> None:
        left = self._watching.pop(id(watcher), 1) - 1
        if left:
            self._watching[id(watcher)] = left
        elif watcher in self._watchers:
            self._watchers.remove(watcher)
        if not self._watchers and self._post is not None:
            self._post.remove()
            self._post = None


class _Detach:
    def __init__(self, phase: Phase) -> None:
        self._phase: Phase | None = phase

    def remove(self) -> None:
        if self._phase is not None:
            self._phase._detach()
            self._phase = None


class _Unwatch:
    def __init__(self, phase: Phase, watcher: Watcher, attached: Handle) -> None:
        self._phase: Phase | None = phase
        self._watcher, self._attached = watcher, attached

    def remove(self) -> None:
        if self._phase is not None:
            try:
                self._phase._unwatch(self._watcher)
            finally:
                self._phase = None
                self._attached.remove()


def admits(when: str, prefill: bool) -> bool:
    """Whether an edit for ``when`` applies in a forward that does (not) read the prompt."""
    return when == "all" or (when == "prompt") == prefill


def continues_cache(args: tuple, kwargs: dict[str, Any]) -> bool:
    """True when a forward's arguments carry a non-empty KV cache or a recurrent state.

    Found by what the values are, not by keyword (:func:`cached_columns`): any argument with
    a ``get_seq_length()`` (a transformers ``Cache``; ``past_key_values=`` before
    transformers 5.24, ``cache=`` since) holding tokens, a legacy tuple-of-layers cache, or
    a recurrent model's state (RWKV's ``state``, Mamba's ``cache_params``).
    """
    return cached_columns(args, kwargs) not in (None, 0)


def cached_columns(args: tuple, kwargs: dict[str, Any]) -> int | None:
    """The columns a forward's cache already holds (a ``get_seq_length()`` value; a legacy
    tuple cache's key length), -1 for a recurrent state (no length), None without either."""
    for key, value in (*enumerate(args), *kwargs.items()):
        if value is None or isinstance(value, torch.Tensor | bool | int | float | str):
            continue
        if hasattr(value, "get_seq_length"):
            return int(value.get_seq_length())
        if key == "past_key_values" and isinstance(value, tuple | list) and value:
            return int(value[0][0].shape[-2])
        if key in ("state", "cache_params"):
            return -1
    return None


def gated(fn: EditFn, when: When, phase: Phase) -> EditFn:
    """``fn`` where ``phase`` admits ``when``, a no-op (None) elsewhere."""
    if when == "all":
        return fn

    def edit(h: torch.Tensor) -> torch.Tensor | None:
        return fn(h) if phase.admits(when) else None

    return edit
