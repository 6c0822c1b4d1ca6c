"""The phase rule: whether the forward running now reads the prompt or decodes a token.

An edit registered with ``when="prompt"`` or ``when="generated"`` runs only in forwards of
that phase (:func:`gated`). Each backend keeps one :class:`Phase` and attaches it to the
module every forward starts in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlab.backends.base import EditFn, Handle
    from steerlab.options import When


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

    @contextmanager
    def reading(self, prompt: bool) -> Iterator[None]:
        """Every forward inside reads the prompt (``True``) or decodes a token (``False``)."""
        before = self.declared
        self.declared = prompt
        try:
            yield
        finally:
            self.declared = before

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Count the forwards of one library ``generate`` call (nested calls are refused)."""
        if self.generating:
            raise RuntimeError("A generation is already running on this backend.")
        self.generating, self.forwards = True, 0
        try:
            yield
        finally:
            self.generating, self.forwards, self.prefill = False, 0, True

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

    def _enter(self, module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        self.enter_forward(args, kwargs)

    def _detach(self) -> None:
        self._users -= 1
        if self._users == 0 and self._hook is not None:
            self._hook.remove()
            self._hook = None


class _Detach:
    def __init__(self, phase: Phase) -> None:
        self._phase: Phase | None = phase

    def remove(self) -> None:
        if self._phase is not None:
            self._phase._detach()
            self._phase = None


def admits(when: str, prefill: bool) -> bool:
    """Whether an edit for ``when`` applies in a forward that does (not) read the prompt."""
    return when == "all" or (when == "prompt") == prefill


def continues_cache(args: tuple, kwargs: dict[str, Any]) -> bool:
    """True when a forward's arguments carry a non-empty KV cache or a recurrent state.

    Found by what the values are, not by keyword: any argument with a ``get_seq_length()``
    (a transformers ``Cache``; ``past_key_values=`` before transformers 5.24, ``cache=``
    since) holding tokens, a legacy tuple-of-layers cache, or a recurrent model's state
    (RWKV's ``state``, Mamba's ``cache_params``).
    """
    for key, value in (*enumerate(args), *kwargs.items()):
        if value is None or isinstance(value, torch.Tensor | bool | int | float | str):
            continue
        if hasattr(value, "get_seq_length"):
            if value.get_seq_length() > 0:
                return True
        elif key in ("state", "cache_params", "past_key_values"):
            return True
    return False


def gated(fn: EditFn, when: When, phase: Phase) -> EditFn:
    """``fn`` where ``phase`` admits ``when``, a no-op (None) elsewhere."""
    if when == "all":
        return fn

    def edit(h: torch.Tensor) -> torch.Tensor | None:
        return fn(h) if phase.admits(when) else None

    return edit
