"""Many steering cells of a sweep at once: :func:`evaluate_cells` gives, for each (vector,
layer), what :func:`~steerlab.evaluation.evaluate` gives under ``steer(model, vector,
layers=layer)``, sharing the work the cells have in common (a recorded prefix on multiple
choice; one decoding batch of rows per item and vector on generative tasks), with a one-pass
fallback where a backend or a hooked model cannot share it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab import engine
from steerlab.answers import answer_complete, judge, reply
from steerlab.errors import EmptyInputError, OptionError
from steerlab.evaluation import EvalResult, evaluate, gen_prompt, mc_batch, mc_batches
from steerlab.options import SCORINGS, BackendName, Scoring, When
from steerlab.receipt_totals import add_up, describe
from steerlab.receipts import Receipt
from steerlab.steering import RowSteering, steer
from steerlab.tasks import Item, Task

if TYPE_CHECKING:
    from steerlab.models import Model


def can_share_prefix(task: Task, backend: BackendName, model: Model) -> bool:
    """True when :func:`evaluate_cells` takes a fast path: a multiple-choice task on a
    backend that can replay a recorded prefix (``hf``), or a generative task on one with a
    greedy loop (``hf``, models with a KV cache), and no other hooks or edits on the
    model."""
    return engine.shares(model.backend(backend), "replay" if task.kind == "mc" else "greedy")


#: the most rows (items x cells) one generative decoding batch of :func:`evaluate_cells`
#: holds: on a CPU a decoding step's cost per row keeps falling up to a few hundred rows
#: (``bench/sweep_speed.py``), while the KV cache grows with every row
DECODE_ROWS = 512


def cells_per_batch(batch_size: int) -> int:
    """How many cells :func:`evaluate_cells` decodes together for item batches of
    ``batch_size`` (:data:`DECODE_ROWS` rows at most, one cell at least)."""
    return max(1, DECODE_ROWS // max(batch_size, 1))


def _gen_cells(model: Model, task: Task, layers: Sequence[int], vectors: Sequence[torch.Tensor],
               items: list[Item], chat: bool, backend: BackendName, batch_size: int,
               shots: Sequence[tuple[str, str]], positions: When) -> list[EvalResult]:
    """Cells decoded together: each item batch (the batches ``evaluate`` makes) becomes
    ``len(vectors)`` rows per prompt, row ``i * K + k`` steered by vector ``k`` at
    ``layers[k]`` (one edit per layer, adding zero to the rows of other layers), and every row
    leaves the batch once its answer is complete (EOS; for a base model also the start of a
    new few-shot example, :func:`answer_complete`, after which nothing it generates is
    judged). The item batches stay the naive loop's, so each row's prompt and padding are
    the same as in one pass per cell; only the batch is wider (:data:`DECODE_ROWS` rows at
    most: more cells are decoded in turn). With ``positions="generated"`` the prompt's forward
    is unsteered, so each prompt is read once for all cells; otherwise each block of it runs
    once for the cells steered below it each and once for all the others (``greedy``'s
    ``shared_until``), and the tokens all prompts begin with are read by a few lead prompts
    only (``HFBackend._prefill_rows``)."""
    be = model.backend(backend)
    if not vectors:
        return []
    dec = model.tokenizer.decode

    def done(row: int, toks: list[int]) -> bool:
        return not chat and answer_complete(dec(toks, skip_special_tokens=True))

    prompts = [gen_prompt(it, shots, chat) for it in items]
    texts = [[""] * len(items) for _ in vectors]
    receipts: list[list[list[dict[str, Any]]]] = [[] for _ in vectors]  # per cell, per batch
    t0 = time.perf_counter()
    step = cells_per_batch(batch_size)
    for first in range(0, len(vectors), step):
        part = range(first, min(first + step, len(vectors)))
        k = len(part)
        per_cell = torch.stack([vectors[c].float() for c in part])  # row i*k + c gets c
        at = [layers[c] for c in part]
        # the prompt's forward up to a cell's steering layer is the unsteered one: shared
        # whole when the vectors act on generated tokens only, else up to each cell's layer
        until = None if positions == "generated" else at
        for start in range(0, len(items), batch_size):
            enc = model.encode(prompts[start:start + batch_size], chat=chat)
            rows = enc["input_ids"].shape[0]
            with RowSteering(model, per_cell.repeat(rows, 1), at * rows, positions,
                             backend) as steering:
                toks = engine.greedy(be, enc, task.max_new_tokens, done=done,
                                     on_rows=steering.select, repeat=k, shared_until=until)
            assert steering.receipt is not None
            for c in range(k):  # each cell's rows, at its own layer
                receipts[first + c].append(steering.receipt.totals(
                    rows=range(c, rows * k, k), layers=[at[c]]))
            for r, t in enumerate(toks):
                i, c = divmod(r, k)
                texts[first + c][start + i] = dec(t, skip_special_tokens=True)
    seconds = (time.perf_counter() - t0) / len(vectors)
    results = []
    for outs, rec in zip(texts, receipts, strict=True):
        judged = [judge(it, reply(out, chat)) for it, out in zip(
            items, outs, strict=True)]
        results.append(EvalResult(
            task.name, model.hf_id, [it.id for it in items], np.array([ok for ok, _ in judged]),
            [p for _, p in judged], seconds, task.chance(items),
            {"chat": chat, "scoring": "generate", "backend": backend,
             "cells_per_batch": min(step, len(vectors)), "positions": positions,
             "receipt": describe("steered", add_up(rec))}, outs))
    return results


@torch.no_grad()
def evaluate_cells(model: Model, task: Task, layer: int | Sequence[int],
                   vectors: Sequence[torch.Tensor],
                   items: Sequence[Item] | None = None, n: int | None = None, seed: int = 0,
                   chat: bool | None = None, backend: BackendName = "hf", batch_size: int = 16,
                   scoring: Scoring | None = None, progress: bool | None = None,
                   reuse: dict[int, tuple[int, Any]] | None = None,
                   shots: Sequence[tuple[str, str]] = (), positions: When = "all"
                   ) -> list[EvalResult]:
    """Results of steering with each of ``vectors`` (added with coefficient 1 at every
    position) at ``layer`` (one layer for all, or a sequence with each vector's own layer),
    the same as ``evaluate`` under ``steer(model, v, layers=l)`` for each ``(v, l)`` in turn,
    but cheaper.

    Fast path (multiple-choice tasks, ``hf`` backend): nothing before block ``layer`` depends
    on the vector, so each batch runs blocks ``0..layer`` once, records block ``layer``'s
    output, and every vector then runs only the blocks after it (plus the unembedding at the
    scored positions). Within each of those forwards the columns every row shares (a chat
    template's system prompt, few-shot examples, at the start of right-padded option rows) are
    read once (:class:`steerlab.engine.Prefix`). Same batches, the same
    positions, mask and key lengths as the one-pass-per-vector loop, so the logits are its
    logits up to the rounding of smaller matrix products (the same answers item by item on
    the tiny models and on SmolLM2, tested).

    Fast path (generative tasks, ``hf`` backend, models with a KV cache): the vectors, of
    one layer or of several, decode together, one row per (item, vector), and rows leave the
    batch as their answers complete (:func:`_gen_cells`); the same greedy tokens up to the
    rounding of a different batch size (tested equal item by item in fp32). Multiple-choice
    tasks run their layers in ascending order. ``shots``: a base model's few-shot examples;
    ``positions``: where the vectors act (``all``; ``prompt``; ``generated``: then a
    generation reads each prompt once for all vectors, and multiple choice, whose one forward
    reads the prompt, is unsteered), as under ``steer(..., positions=...)``. The
    ``tlens``/``nnsight`` backends and models that already carry hooks fall back to one pass
    per vector. The oracle tests compare every path item by item with plain transformers.

    ``reuse``: pass the same (initially empty) dict to successive calls with increasing
    ``layer`` on the same items: each batch's recorded output is kept there, and the next call
    runs only the blocks between the two layers to reach its own.
    """
    items = list(items) if items is not None else task.items(n, seed)
    if not items:
        raise EmptyInputError(f"No items to evaluate for task {task.name}.")
    at = [layer] * len(vectors) if isinstance(layer, int) else list(layer)
    if len(at) != len(vectors):
        raise OptionError(f"{len(at)} layers for {len(vectors)} vectors: give one layer per "
                          "vector (or one for all).")
    chat = model.uses_chat(chat)
    kw: dict[str, Any] = {"items": items, "chat": chat, "backend": backend,
                          "batch_size": batch_size, "scoring": scoring, "progress": progress,
                          "shots": shots}
    if not can_share_prefix(task, backend, model) or (task.kind == "mc" and (
            scoring or task.scoring) == "generate"):  # answers in words: one pass each
        results = []
        for v, lay in zip(vectors, at, strict=True):
            with steer(model, v, layers=lay, coeff=1.0, backend=backend,
                       positions=positions) as handle:
                res = evaluate(model, task, **kw)
            res.extra["receipt"] = str(handle.receipt)
            results.append(res)
        return results
    if task.kind != "mc":
        return _gen_cells(model, task, at, vectors, items, chat, backend, batch_size, shots,
                          positions)
    if not isinstance(layer, int):  # multiple choice: one layer at a time, reusing the last
        by_layer: dict[int, list[int]] = {}
        for k, lay in enumerate(at):
            by_layer.setdefault(lay, []).append(k)
        reuse = {} if reuse is None else reuse
        out: list[EvalResult | None] = [None] * len(vectors)
        for lay in sorted(by_layer):
            got = evaluate_cells(model, task, lay, [vectors[k] for k in by_layer[lay]],
                                 reuse=reuse, positions=positions, **kw)
            for k, res in zip(by_layer[lay], got, strict=True):
                out[k] = res
        return [r for r in out if r is not None]
    scoring = scoring or task.scoring
    if scoring not in SCORINGS:
        raise OptionError(f"Unknown scoring {scoring!r}: use one of {SCORINGS}.")
    be = model.backend(backend)
    preds = [[""] * len(items) for _ in vectors]
    correct = [[False] * len(items) for _ in vectors]
    seconds = [0.0] * len(vectors)
    receipts_of = [Receipt("steered") for _ in vectors]  # each cell's, over the batches
    batches = mc_batches(model, items, scoring, chat, batch_size)  # as evaluate() batches
    show = progress if progress is not None else len(batches) > 4
    for b, idx in enumerate(tqdm(batches, desc=f"{task.name} L{layer}", disable=not show,
                                 leave=False)):
        batch = [items[i] for i in idx]
        t0 = time.perf_counter()
        mc = mc_batch(model, batch, scoring, chat)
        # continue from an earlier layer's output where there is one
        prefix = engine.Prefix(be, mc.enc, start=reuse.get(b) if reuse is not None else None)
        recorded = prefix.reach(layer)
        if reuse is not None and recorded is not None:
            reuse[b] = recorded
        shared = (time.perf_counter() - t0) / max(len(vectors), 1)
        for k, v in enumerate(vectors):
            t1 = time.perf_counter()
            with steer(model, v, layers=layer, coeff=1.0, backend=backend, positions=positions,
                       receipt=receipts_of[k]):
                logits = prefix.forward(keep=mc.keep, shared=True)
            for i, p, c in zip(idx, *mc.choose(logits), strict=True):
                preds[k][i], correct[k][i] = p, c
            seconds[k] += shared + time.perf_counter() - t1
    ids = [it.id for it in items]
    extra = {"chat": chat, "scoring": scoring, "backend": backend,
             "shared_prefix": True}
    return [EvalResult(task.name, model.hf_id, ids, np.array(correct[k]), preds[k], seconds[k],
                       task.chance(items), {**extra, "receipt": str(receipts_of[k])})
            for k in range(len(vectors))]
