"""The one rule for the last real token of padded rows: every function that reads "the last
prompt token" (caching with ``reduction="last"``, the patching metrics, multiple-choice
scoring) asks here, whether its rows are padded on the left or on the right.
"""

from __future__ import annotations

import torch

__all__ = ["at_last", "last_positions", "mask_of"]


def last_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the index of each row's last real token in a (B, T) attention mask, padded on
    either side (a row with no real token gives ``T - 1``)."""
    return mask.shape[1] - 1 - mask.long().flip(1).argmax(1)


def mask_of(lengths: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """(B, width) bool mask of right-padded rows of ``lengths`` real tokens."""
    width = int(lengths.max()) if width is None else width
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def at_last(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, ...) the values of (B, T, ...) ``x`` at each row's last real token."""
    last = last_positions(mask).to(x.device)
    return x[torch.arange(x.shape[0], device=x.device), last]
