"""The interface every backend implements, and the shared hook plumbing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch

# An edit sees the residual stream after a block, (B, T, d_model), and returns a replacement
# tensor of the same shape, or None to leave it unchanged (a read-only observer).
EditFn = Callable[[torch.Tensor], "torch.Tensor | None"]


class Handle(Protocol):
    def remove(self) -> None: ...


#: When an edit applies during generation: every forward, only the forward that reads the
#: prompt (prefill), or only the decoding steps after it.
WHEN = ("all", "prompt", "generated")


class StopForward(Exception):
    """Raised by a capture hook once the last wanted layer has run, to skip the rest."""


def replace_hidden(output: Any, new: torch.Tensor) -> Any:
    """Put ``new`` where a block's output keeps its hidden states (a tensor, or a tuple's
    first element in older/other architectures such as GPT-2 or RWKV)."""
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def hidden_of(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class Phase:
    """Whether the forward running now reads the prompt or continues a generation.

    The backend's own :meth:`Backend.generate` is the authority: it counts the forwards of
    its generation (the first reads the prompt, each later one decodes a token), which
    depends on no keyword a library may rename. A forward outside it (a plain forward, or a
    generation the caller started on the HF module directly) falls back to
    :func:`continues_cache` on the forward's own arguments.
    """

    def __init__(self) -> None:
        self.generating = False
        self.forwards = 0  # forwards seen in the current generation
        self.prefill = True

    @contextmanager
    def generation(self) -> Iterator[None]:
        """Count the forwards of one ``generate`` call (nested calls are refused)."""
        if self.generating:
            raise RuntimeError("A generation is already running on this backend.")
        self.generating, self.forwards = True, 0
        try:
            yield
        finally:
            self.generating, self.forwards, self.prefill = False, 0, True

    def enter_forward(self, args: tuple, kwargs: dict[str, Any]) -> None:
        """Called before every forward of the model's top module."""
        if self.generating:
            self.prefill = self.forwards == 0
            self.forwards += 1
        else:
            self.prefill = not continues_cache(args, kwargs)

    def admits(self, when: str) -> bool:
        return admits(when, self.prefill)


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


def gated(fn: EditFn, when: str, phase: Phase) -> EditFn:
    """``fn`` where ``phase`` admits ``when``, a no-op (None) elsewhere."""
    if when not in WHEN:
        raise ValueError(f"Unsupported edit phase {when!r}: use one of {WHEN}.")
    if when == "all":
        return fn

    def edit(h: torch.Tensor) -> torch.Tensor | None:
        return fn(h) if phase.admits(when) else None

    return edit


def add_phased(top: torch.nn.Module, phase: Phase, fn: EditFn, when: str,
               register: Callable[[EditFn], Handle]) -> Handle:
    """Register ``fn`` gated by ``when`` through ``register``; for ``when != "all"`` a pre-hook
    on ``top`` (the HF module every forward starts in) keeps ``phase`` current. Both come off
    together, also when the second registration fails."""
    edit = gated(fn, when, phase)
    handles: list[Handle] = []
    try:
        if when != "all":
            handles.append(top.register_forward_pre_hook(_phase_hook(phase), with_kwargs=True))
        handles.append(register(edit))
    except BaseException:
        Handles(handles).remove()
        raise
    return Handles(handles)


def _phase_hook(phase: Phase):
    def hook(module: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        phase.enter_forward(args, kwargs)

    return hook


class Handles:
    """Several handles removed as one (last registered first; idempotent)."""

    def __init__(self, handles: list[Handle]) -> None:
        self._handles = handles

    def remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()


class Backend(ABC):
    """One way of running a model with edits on its residual stream."""

    name: str
    #: the transformers module that every forward of this backend goes through
    top: Any
    #: True when forward() may be cut short after the last captured layer
    supports_early_stop: bool = False

    @abstractmethod
    def add_edit(self, layer: int, fn: EditFn, when: str = "all") -> Handle:
        """Run ``fn`` on the residual stream after block ``layer`` in every later forward
        (``when="all"``), only in the forward that reads the prompt (``"prompt"``) or only in
        the decoding steps of a generation (``"generated"``), until the returned handle's
        ``remove()`` is called."""

    @abstractmethod
    def forward(self, enc: dict[str, torch.Tensor],
                keep: int | torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for a padded batch ``enc`` (input_ids, attention_mask).

        ``keep``: only the last ``keep`` positions (an int) or the given sorted positions (a 1-D
        tensor), (B, P, vocab); the HF backend then skips the unembedding elsewhere, which
        matters for large vocabularies (Gemma's 262k rows).
        """

    @abstractmethod
    def generate(self, enc: dict[str, torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """Token ids (B, T + new) from HF-style generation with the current edits applied."""


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counted over real tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def keep_positions(logits: torch.Tensor, keep: int | torch.Tensor | None) -> torch.Tensor:
    """Slice full (B, T, vocab) logits like ``keep`` in :meth:`Backend.forward`."""
    if keep is None:
        return logits
    if isinstance(keep, int):
        return logits[:, -keep:]
    return logits[:, keep]
