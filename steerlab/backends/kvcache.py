"""KV caches for the HF backend's fast paths: the decoding buffer each step of
:meth:`~steerlab.backends.hf_fast.HFFastPath.greedy` writes its token into, and the keys and values
of the columns all rows of a batch begin with, computed for a few lead rows and handed to the
others (:meth:`~steerlab.backends.hf_fast.HFFastPath.forward_shared`,
:meth:`~steerlab.backends.hf.HFBackend._prefill_rows`). Cache objects are transformers'
``DynamicCache``; only this package's backends touch them.
"""

from __future__ import annotations

from typing import Any

import torch

#: rows :meth:`HFFastPath.forward_shared` runs whole (2: a lone row's forward rounded
#: differently from the same row's in a batch, on SmolLM2 in fp32; two rows did not)
LEAD_ROWS = 2


def decoding_cache(config: Any, extra: int) -> Any:
    """A ``DynamicCache`` for :meth:`HFFastPath.greedy` whose full-attention layers keep their
    keys and values in a buffer sized at the first write for ``extra`` more tokens, so each
    decoding step writes its token in place. ``DynamicLayer`` concatenates instead, copying
    the layer's whole cache at every step (what the generative row of
    ``bench/sweep_speed.py`` gained from this is in the README). The attention reads the same
    numbers (a view of the buffer); sliding-window and other layers are kept as they are."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):  # the library's own layer, storage aside
        def lazy_initialization(self, key_states: torch.Tensor,
                                value_states: torch.Tensor) -> None:
            super().lazy_initialization(key_states, value_states)
            self.length = 0
            self._k = key_states.new_empty(*key_states.shape[:2], 0, key_states.shape[-1])
            self._v = value_states.new_empty(*value_states.shape[:2], 0,
                                             value_states.shape[-1])

        def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = self._k[:, :, :self.length], self._v[:, :, :self.length]
            self.keys, self.values = keys, values
            return keys, values

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
                   **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self._k.shape[-2]:  # the first write (or more than foreseen): grow
                k, v = self._k, self._v
                self._k = k.new_empty(*key_states.shape[:2], end + extra, k.shape[-1])
                self._v = v.new_empty(*value_states.shape[:2], end + extra, v.shape[-1])
                self._k[:, :, :self.length] = k[:, :, :self.length]
                self._v[:, :, :self.length] = v[:, :, :self.length]
            self._k[:, :, self.length:end] = key_states
            self._v[:, :, self.length:end] = value_states
            self.length = end
            return self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.get_seq_length() > 0:
                self._k = self._k.repeat_interleave(repeats, dim=0)
                self._v = self._v.repeat_interleave(repeats, dim=0)
                self._views()

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.get_seq_length() == 0:
                return
            n = len(indices)
            if n <= self._k.shape[0]:  # fewer rows: move only those whose place changes,
                moved = (indices != torch.arange(n, device=indices.device)).nonzero()[:, 0]
                src = indices[moved]  # (gathered before any is overwritten)
                self._k[moved], self._v[moved] = self._k[src], self._v[src]
                self._k, self._v = self._k[:n], self._v[:n]  # and keep the buffer
            else:
                self._k, self._v = self._k[indices], self._v[indices]
            self._views()

        def crop(self, tokens_to_remove: int) -> None:
            raise NotImplementedError("greedy's decoding cache is never cropped")

    cache = DynamicCache(config=config)
    cache.layers = [PreallocatedLayer() if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


def leads(ids: torch.Tensor, mask: torch.Tensor, least: int
           ) -> tuple[list[int], list[int], torch.Tensor, int] | None:
    """How :meth:`HFBackend._prefill_rows` splits a left-padded batch: (lead prompts, the
    others, each other's lead as an index into the leads, the first column every other
    prompt runs). A lead has each padding length that occurs (so its first columns are an
    other's, token for token), and there are at least ``least`` of them (a lone row's
    forward rounds differently). None when the batch is not left-padded, no token is
    shared, or no prompt would be left to share them."""
    prompts, width = ids.shape
    counts = (mask == 0).sum(1)  # (B,) left pads per row
    cols = torch.arange(width, device=mask.device)
    if not torch.equal(mask.bool(), cols[None, :] >= counts[:, None]):
        return None  # not left-padded
    pads: list[int] = counts.cpu().tolist()
    shared = width - max(pads)  # the shortest prompt's length
    for i in range(prompts):  # the longest run of tokens every prompt begins with
        same = (ids[i, pads[i]:pads[i] + shared] == ids[0, pads[0]:pads[0] + shared]).long()
        shared = int(same.cumprod(0).sum())
    first: dict[int, int] = {}
    for i, p in enumerate(pads):
        first.setdefault(p, i)
    lead = sorted(first.values())
    lead += [i for i in range(prompts) if i not in lead][:max(least - len(lead), 0)]
    lead.sort()
    others = [i for i in range(prompts) if i not in lead]
    if not others or shared < 1:
        return None
    start = min(min(pads[i] + shared for i in others), width - 1)  # each row runs a column
    if start < 1:
        return None
    lead_of = torch.tensor([lead.index(first[pads[i]]) for i in others])
    return lead, others, lead_of, start


def fill_past(part: Any, cache: Any, src: torch.Tensor, start: int,
              blocks: range | None = None) -> None:
    """Give the empty cache ``part`` (one row per entry of ``src``) the first ``start``
    columns of the keys and values of rows ``src`` of ``cache`` at ``blocks`` (default:
    every layer), and every other layer, or one ``cache`` never saw (a replayed block), a
    stand-in of that length: those blocks are replayed or not run, so only the cache's
    length is read there (for the mask)."""
    seen = next(layer for layer in cache.layers if layer.is_initialized)
    shape = seen.keys.shape
    src = src.to(seen.keys.device)
    for b, layer in enumerate(part.layers):
        held = cache.layers[b]
        if held.is_initialized and (blocks is None or b in blocks):
            part.update(held.keys[src, :, :start], held.values[src, :, :start], b)
        else:  # a zero-stride view: no memory
            layer.keys = layer.values = seen.keys.new_zeros(()).expand(
                len(src), shape[1], start, shape[-1])
            layer.is_initialized = True
            if hasattr(layer, "cumulative_length"):  # a sliding layer's length
                layer.cumulative_length = start


def common_start(enc: dict[str, torch.Tensor]) -> int:
    """How many leading columns all rows of ``enc`` share (same token, same mask)."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    same = ((ids == ids[:1]) & (mask == mask[:1])).all(0)  # (T,)
    return int(same.long().cumprod(0).sum())


def take(output: Any, rows: torch.Tensor, start: int) -> Any:
    """A block's recorded output (a tensor or a tuple led by one) cut to ``rows`` and the
    columns from ``start`` on."""
    if isinstance(output, torch.Tensor):
        return output[rows.to(output.device), start:]
    return (take(output[0], rows, start), *output[1:])
