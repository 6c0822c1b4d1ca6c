"""The interface every backend implements, and the shared hook plumbing."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

import torch

# An edit sees the residual stream after a block, (B, T, d_model), and returns a replacement
# tensor of the same shape, or None to leave it unchanged (a read-only observer).
EditFn = Callable[[torch.Tensor], "torch.Tensor | None"]


class Handle(Protocol):
    def remove(self) -> None: ...


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


class Backend(ABC):
    """One way of running a model with edits on its residual stream."""

    name: str
    #: the transformers module that every forward of this backend goes through
    top: Any
    #: True when forward() may be cut short after the last captured layer
    supports_early_stop: bool = False

    @abstractmethod
    def add_edit(self, layer: int, fn: EditFn) -> Handle:
        """Run ``fn`` on the residual stream after block ``layer`` in every later forward,
        until the returned handle's ``remove()`` is called."""

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
