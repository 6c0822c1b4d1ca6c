"""Scoring a task: multiple choice by log-probability, generative by verified final answers.

Steering is whatever is active on the model when :func:`evaluate` runs (wrap it in
:func:`steerlab.steering.steer`). Every result carries per-item correctness, so steered and
unsteered runs on the same items give a paired difference
(:func:`steerlab.stats.paired_difference`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab.answers import answer_complete, extract_letter, first_answer, judge
from steerlab.answers import extract_answer as extract_answer  # re-exported (older imports)
from steerlab.errors import EmptyInputError, OptionError
from steerlab.inference import generate
from steerlab.options import SCORINGS
from steerlab.stats import Accuracy, accuracy
from steerlab.tasks import LETTERS, Item, Task

if TYPE_CHECKING:
    from pathlib import Path

    from steerlab.models import Model



@dataclass
class EvalResult:
    """Outcome of one evaluation pass.

    Attributes:
        correct: (n,) bool, per item, in ``item_ids`` order.
        predictions: the chosen option text (mc) or the extracted answer (gen), per item.
        completions: generative tasks: each item's decoded completion as generated (before
            any cut at a new few-shot example), to audit the extraction; empty for mc.
    """

    task: str
    model_id: str
    item_ids: list[str]
    correct: np.ndarray
    predictions: list[str]
    seconds: float
    chance: float | None = None
    extra: dict = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> Accuracy:
        return accuracy(self.correct)

    @property
    def n(self) -> int:
        return len(self.correct)


def mc_prompt(item: Item, chat: bool) -> str:
    """Question, lettered options, and a cue for the answer letter."""
    opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(item.options))
    if chat:  # the assistant turn starts right after the template's generation prompt
        return f"{item.question}\n{opts}\nAnswer with the letter of the correct option only."
    return f"Question: {item.question}\n{opts}\nAnswer:"


def _letter_ids(model: Model, k: int, chat: bool) -> list[int]:
    ids = []
    for letter in LETTERS[:k]:
        toks = model.tokenizer.encode(letter if chat else f" {letter}", add_special_tokens=False)
        ids.append(toks[-1])
    return ids


@dataclass
class _MCBatch:
    """One batch of multiple-choice items ready for a forward: inputs, which logit positions
    to keep, and how to turn those logits into per-option scores."""

    items: list[Item]
    enc: dict[str, torch.Tensor]
    keep: int | torch.Tensor
    finish: Callable[[torch.Tensor], list[np.ndarray]]
    #: per row of ``enc``: the item it scores (an index into ``items``) and the position of
    #: that item's last prompt token (where an edit "at the prompt's end" goes)
    row_item: torch.Tensor
    prompt_last: torch.Tensor

    def choose(self, logits: torch.Tensor) -> tuple[list[str], list[bool]]:
        """(chosen option, correct) per item from this batch's logits."""
        preds, correct = [], []
        for it, s in zip(self.items, self.finish(logits), strict=True):
            choice = it.options[int(np.argmax(s))]
            preds.append(choice)
            correct.append(choice == it.answer)
        return preds, correct


def _mc_letter_batch(model: Model, items: list[Item], chat: bool) -> _MCBatch:
    """Log-probability of each option letter as the next token (one forward per prompt)."""
    enc = model.encode([mc_prompt(it, chat) for it in items], chat=chat)
    n_opts = [len(it.options) for it in items]
    letter_ids = _letter_ids(model, max(n_opts), chat)

    def finish(logits: torch.Tensor) -> list[np.ndarray]:
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B, vocab)
        letters = logp[:, letter_ids].cpu()  # (B, n_letters): one copy to the host
        return [letters[i, :k].numpy() for i, k in enumerate(n_opts)]  # cpu: copied above

    mask = enc["attention_mask"]
    width = mask.shape[1]
    last = width - 1 - mask.flip(1).argmax(1)  # the last real token, left or right padded
    return _MCBatch(items, enc, 1, finish, torch.arange(len(items)), last.cpu())


def _mc_text_batch(model: Model, prompts: list[str], items: list[Item], chat: bool) -> _MCBatch:
    """Mean log-probability per token of each option's text after its prompt; all options of
    all items in one right-padded forward."""
    templated = chat
    formatted = model.format(prompts, chat)
    seqs, spans = [], []
    for prompt, item in zip(formatted, items, strict=True):
        p_ids = model.tokenizer(prompt, add_special_tokens=not templated)["input_ids"]
        for o in item.options:
            o_ids = model.tokenizer.encode(" " + o, add_special_tokens=False)
            spans.append((len(p_ids), len(p_ids) + len(o_ids)))
            seqs.append(p_ids + o_ids)
    width = max(map(len, seqs))
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=model.device)
    dev = ids.device
    lens = torch.tensor([len(s) for s in seqs], device=dev)
    mask = (torch.arange(width, device=dev)[None, :] < lens[:, None]).long()
    # logits only where an option token is predicted: positions a-1 .. b-2 of each span
    need = sorted({p for a, b in spans for p in range(a - 1, b - 1)})
    col = {p: i for i, p in enumerate(need)}
    # every option token as (row, kept position, token id), on the model's device
    rows = torch.tensor([j for j, (a, b) in enumerate(spans) for _ in range(a, b)], device=dev)
    cols = torch.tensor([col[p] for a, b in spans for p in range(a - 1, b - 1)], device=dev)
    toks = torch.cat([ids[j, a:b] for j, (a, b) in enumerate(spans)])

    def finish(logits: torch.Tensor) -> list[np.ndarray]:
        # log-softmax only the rows an option token is read from (not every kept position of
        # every sequence): the same row-wise numbers, a fraction of the work
        logp = torch.log_softmax(logits[rows, cols].float(), -1)  # (n option tokens, vocab)
        got = logp[torch.arange(len(toks), device=logp.device), toks].cpu()  # one host copy
        flat, at = [], 0
        for a, b in spans:
            flat.append(float(got[at:at + b - a].mean()))
            at += b - a
        out, k = [], 0
        for item in items:
            out.append(np.array(flat[k:k + len(item.options)]))
            k += len(item.options)
        return out

    row_item = torch.tensor([i for i, item in enumerate(items) for _ in item.options])
    return _MCBatch(items, {"input_ids": ids, "attention_mask": mask},
                    torch.tensor(need, device=dev),
                    finish, row_item, torch.tensor([a - 1 for a, _ in spans]))


def _mc_batch(model: Model, items: list[Item], scoring: str, chat: bool) -> _MCBatch:
    if scoring == "letter":
        return _mc_letter_batch(model, items, chat)
    fmt = mc_prompt if scoring == "text" else cloze_prompt
    return _mc_text_batch(model, [fmt(it, chat) for it in items], items, chat)


#: new tokens a multiple-choice answer may take with ``scoring="generate"`` (the seed's 200)
MC_GENERATE_TOKENS = 200


def _mc_generate(model: Model, items: list[Item], chat: bool, backend: str
                 ) -> tuple[list[str], list[bool], list[str]]:
    """Multiple choice answered in words: greedy text after the lettered prompt, the letter
    taken from it (:func:`extract_letter`). Rows leave the batch once their text is final
    (EOS; for a base model the start of a new example, after which nothing is read).
    Returns (chosen option text or "" when the text names no letter, correct, completion)
    per item."""
    prompts = [mc_prompt(it, chat) for it in items]
    be = model.backend(backend)
    if be.supports_greedy:
        dec = model.tokenizer.decode
        toks = be.greedy(model.encode(prompts, chat=chat), MC_GENERATE_TOKENS, done=None if chat
                         else lambda row, t: answer_complete(dec(t, skip_special_tokens=True)))
        outs = [dec(t, skip_special_tokens=True) for t in toks]
    else:
        outs = generate(model, prompts, MC_GENERATE_TOKENS, chat=chat, backend=backend,
                        batch_size=len(items), progress=False)
    preds, correct = [], []
    for it, out in zip(items, outs, strict=True):
        letter = extract_letter(out if chat else first_answer(out), len(it.options))
        pick = it.options[LETTERS.index(letter)] if letter is not None else ""
        preds.append(pick)
        correct.append(letter is not None and LETTERS.index(letter) == it.answer_index)
    return preds, correct, outs


def mc_batches(model: Model, items: Sequence[Item], scoring: str, chat: bool,
               batch_size: int) -> list[list[int]]:
    """Item indices in batches of similar prompt length (a stable sort by token count, then
    chunks of ``batch_size``): a left-padded batch costs its longest prompt times its rows,
    so grouping lengths cuts the padding (MMLU-Pro prompts run from 100 to 800 tokens).
    Results are put back in item order by the caller."""
    fmt = mc_prompt if scoring in ("letter", "text", "generate") else cloze_prompt
    texts = model.format([fmt(it, chat) for it in items], chat)
    lens = [len(ids) for ids in model.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    if scoring in ("text", "cloze"):  # every option follows its prompt in the same forward
        lens = [n + max(len(o) for o in it.options) // 3 for n, it in zip(lens, items,
                                                                          strict=True)]
    order = sorted(range(len(items)), key=lens.__getitem__)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def evaluation_batches(model: Model, task: Task, items: Sequence[Item], scoring: str,
                       chat: bool, batch_size: int, batching: str = "length"
                       ) -> list[list[int]]:
    """The item indices of each batch :func:`evaluate` runs: multiple choice by prompt length
    (:func:`mc_batches`; ``batching="items"``: consecutive items, as evaluations recorded
    before length batching ran), generative tasks in item order. Evaluating one batch's items
    alone (``batch_size=len(batch)``) repeats that batch's computation exactly."""
    if task.kind == "mc" and batching == "length":
        return mc_batches(model, items, scoring, chat, batch_size)
    return [list(range(i, min(i + batch_size, len(items))))
            for i in range(0, len(items), batch_size)]


def cloze_prompt(item: Item | str, chat: bool) -> str:
    """The question alone (no option list): options are scored as its continuation. Takes an
    item or a bare question (e.g. an extraction prompt put in the same format)."""
    question = item if isinstance(item, str) else item.question
    return question if chat else f"Q: {question}\nA:"


def gen_prompt(item: Item, shots: Sequence[tuple[str, str]], chat: bool) -> str:
    if chat:
        return item.question
    prefix = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in shots)
    return f"{prefix}Q: {item.question}\nA:"


def evaluate(model: Model, task: Task, items: Sequence[Item] | None = None,
             n: int | None = None, seed: int = 0, chat: bool | None = None,
             backend: str = "hf", batch_size: int = 16, scoring: str | None = None,
             shots: Sequence[tuple[str, str]] = (), progress: bool | None = None) -> EvalResult:
    """Accuracy of ``model`` (with any active steering) on ``task``.

    Args:
        items: the items to score (default: ``task.items(n, seed)``).
        chat: apply the chat template (default: when the model is a chat model).
        scoring: multiple choice only: ``letter`` (log-prob of the option letter after the
            question and its lettered options), ``text`` (mean log-prob per token of the
            option text after the same prompt), ``cloze`` (mean log-prob per token of the
            option text after the question alone) or ``generate`` (up to
            :data:`MC_GENERATE_TOKENS` greedy tokens after the lettered prompt, the letter
            extracted from the text as MMLU-Pro's evaluation does; the completions are
            kept); default: the task's.
        shots: (question, answer) examples prepended for base models on generative tasks.
    """
    items = list(items) if items is not None else task.items(n, seed)
    if not items:
        raise EmptyInputError(f"No items to evaluate for task {task.name}.")
    scoring = scoring or task.scoring
    if scoring not in SCORINGS:
        raise OptionError(f"Unknown scoring {scoring!r}: use one of {SCORINGS}.")
    chat = model.uses_chat(chat)
    t0 = time.perf_counter()
    preds: list[str] = [""] * len(items)
    correct: list[bool] = [False] * len(items)
    completions: list[str] = [""] * len(items) \
        if task.kind != "mc" or scoring == "generate" else []
    batches = evaluation_batches(model, task, items, scoring, chat, batch_size)
    show = progress if progress is not None else len(batches) > 4
    for idx in tqdm(batches, desc=f"{task.name}", disable=not show, leave=False):
        batch = [items[i] for i in idx]
        if task.kind == "mc" and scoring == "generate":
            for i, p, c, out in zip(idx, *_mc_generate(model, batch, chat, backend),
                                    strict=True):
                preds[i], correct[i], completions[i] = p, c, out
        elif task.kind == "mc":
            mc = _mc_batch(model, batch, scoring, chat)
            with torch.no_grad():
                logits = model.backend(backend).forward(mc.enc, keep=mc.keep)
            for i, p, c in zip(idx, *mc.choose(logits), strict=True):
                preds[i], correct[i] = p, c
        else:
            prompts = [gen_prompt(it, shots, chat) for it in batch]
            outs = generate(model, prompts, task.max_new_tokens, chat=chat, backend=backend,
                            batch_size=len(prompts), progress=False)
            for i, it, out in zip(idx, batch, outs, strict=True):
                correct[i], preds[i] = judge(it, out if chat else first_answer(out))
                completions[i] = out
    return EvalResult(task.name, model.hf_id, [it.id for it in items], np.array(correct),
                      preds, time.perf_counter() - t0, task.chance(items),
                      {"chat": chat, "scoring": scoring, "backend": backend},
                      completions)


def can_share_prefix(task: Task, backend: str, model: Model) -> bool:
    """True when :func:`evaluate_cells` takes a fast path: a multiple-choice task on a
    backend that can replay a recorded prefix (``hf``), or a generative task on one with a
    greedy loop (``hf``, models with a KV cache), and no other hooks or edits on the
    model."""
    be = model.backend(backend)
    able = be.supports_prefix_replay if task.kind == "mc" else be.supports_greedy
    return able and not be.has_foreign_hooks()


#: the most rows (items x cells) one generative decoding batch of :func:`evaluate_cells`
#: holds: on a CPU a decoding step's cost per row keeps falling up to a few hundred rows
#: (``bench/sweep_speed.py``), while the KV cache grows with every row
DECODE_ROWS = 512


def cells_per_batch(batch_size: int) -> int:
    """How many cells :func:`evaluate_cells` decodes together for item batches of
    ``batch_size`` (:data:`DECODE_ROWS` rows at most, one cell at least)."""
    return max(1, DECODE_ROWS // max(batch_size, 1))


def _gen_cells(model: Model, task: Task, layers: Sequence[int], vectors: Sequence[torch.Tensor],
               items: list[Item], chat: bool, backend: str, batch_size: int,
               shots: Sequence[tuple[str, str]], positions: str) -> list[EvalResult]:
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
    from steerlab.steering import RowSteering

    be = model.backend(backend)
    if not vectors:
        return []
    dec = model.tokenizer.decode

    def done(row: int, toks: list[int]) -> bool:
        return not chat and answer_complete(dec(toks, skip_special_tokens=True))

    prompts = [gen_prompt(it, shots, chat) for it in items]
    texts = [[""] * len(items) for _ in vectors]
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
                toks = be.greedy(enc, task.max_new_tokens, done=done,
                                 on_rows=steering.select, repeat=k, shared_until=until)
            for r, t in enumerate(toks):
                i, c = divmod(r, k)
                texts[first + c][start + i] = dec(t, skip_special_tokens=True)
    seconds = (time.perf_counter() - t0) / len(vectors)
    results = []
    for outs in texts:
        judged = [judge(it, out if chat else first_answer(out)) for it, out in zip(
            items, outs, strict=True)]
        results.append(EvalResult(
            task.name, model.hf_id, [it.id for it in items], np.array([ok for ok, _ in judged]),
            [p for _, p in judged], seconds, task.chance(items),
            {"chat": chat, "scoring": "generate", "backend": backend,
             "cells_per_batch": min(step, len(vectors)), "positions": positions}, outs))
    return results


@torch.no_grad()
def evaluate_cells(model: Model, task: Task, layer: int | Sequence[int],
                   vectors: Sequence[torch.Tensor],
                   items: Sequence[Item] | None = None, n: int | None = None, seed: int = 0,
                   chat: bool | None = None, backend: str = "hf", batch_size: int = 16,
                   scoring: str | None = None, progress: bool | None = None,
                   reuse: dict[int, tuple[int, Any]] | None = None,
                   shots: Sequence[tuple[str, str]] = (), positions: str = "all"
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
    read once (:meth:`~steerlab.backends.base.Backend.forward_shared`). Same batches, the same
    positions, mask and key lengths as the one-pass-per-vector loop, so the logits are its
    logits up to the rounding of smaller matrix products (the same answers item by item on
    the tiny models and on SmolLM2, tested).

    Fast path (generative tasks, ``hf`` backend, models with a KV cache): the vectors, of
    one layer or of several, decode together, one row per (item, vector), and rows leave the
    batch as their answers complete (:func:`_gen_cells`); the same greedy tokens up to the
    rounding of a different batch size (tested equal item by item in fp32). Multiple-choice
    tasks run their layers in ascending order. ``shots``: a base model's few-shot examples;
    ``positions``: where the vectors act (``all``, ``generated``: then the prompt is read
    once for all vectors). The ``tlens``/``nnsight`` backends and models that already carry
    hooks fall back to one pass per vector.

    ``reuse``: pass the same (initially empty) dict to successive calls with increasing
    ``layer`` on the same items: each batch's recorded output is kept there, and the next call
    runs only the blocks between the two layers to reach its own.
    """
    from steerlab.steering import steer

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
                       positions=positions):
                results.append(evaluate(model, task, **kw))
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
    batches = mc_batches(model, items, scoring, chat, batch_size)  # as evaluate() batches
    show = progress if progress is not None else len(batches) > 4
    for b, idx in enumerate(tqdm(batches, desc=f"{task.name} L{layer}", disable=not show,
                                 leave=False)):
        batch = [items[i] for i in idx]
        t0 = time.perf_counter()
        mc = _mc_batch(model, batch, scoring, chat)
        prev = reuse.get(b) if reuse is not None else None
        # continue from an earlier layer's output where there is one
        start = prev if prev is not None and prev[0] < layer else None
        recorded = be.record(mc.enc, layer, start)
        if reuse is not None:
            reuse[b] = (layer, recorded)
        shared = (time.perf_counter() - t0) / max(len(vectors), 1)
        for k, v in enumerate(vectors):
            t1 = time.perf_counter()
            with be.replaying(layer, recorded), steer(model, v, layers=layer, coeff=1.0,
                                                      backend=backend, positions=positions):
                logits = be.forward_shared(mc.enc, keep=mc.keep)
            for i, p, c in zip(idx, *mc.choose(logits), strict=True):
                preds[k][i], correct[k][i] = p, c
            seconds[k] += shared + time.perf_counter() - t1
    ids = [it.id for it in items]
    extra = {"chat": chat, "scoring": scoring, "backend": backend,
             "shared_prefix": True}
    return [EvalResult(task.name, model.hf_id, ids, np.array(correct[k]), preds[k], seconds[k],
                       task.chance(items), dict(extra)) for k in range(len(vectors))]


if TYPE_CHECKING:
    import pandas as pd

    from steerlab.vectors import SteeringVector


def condition_fingerprint(vec: SteeringVector | None) -> dict[str, Any] | None:
    """What identifies a condition's vector in an evaluation journal: its method, layers and
    per-layer norms to 3 significant digits (the last bits of a vector extracted on another
    CPU may differ; a different vector differs in these)."""
    if vec is None:
        return None
    return {"method": vec.method, "layers": list(vec.layers),
            "norms": [f"{float(n):.3g}" for n in vec.norms().values()]}


def condition_key(model: Model, task: str, items: Sequence[Item], batch_size: int,
                  name: str, vec: SteeringVector | None) -> str:
    """The journal key of one condition of :func:`compare_conditions`: model, dtype, task,
    items, batching, the condition's name and :func:`condition_fingerprint`."""
    import hashlib
    import json

    d = {"model": model.hf_id, "dtype": str(model.dtype).removeprefix("torch."),
         "task": task, "items": [it.id for it in items], "batch_size": batch_size,
         "condition": name, "vector": condition_fingerprint(vec)}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def evaluate_condition(model: Model, task: Task, items: Sequence[Item] | None,
                       vec: SteeringVector | None, batch_size: int) -> EvalResult:
    """One condition of :func:`compare_conditions`: ``vec`` added at its layers with
    coefficient 1 (``None``: the unsteered model), greedy, ``batch_size`` items per batch."""
    from steerlab.steering import steer

    if vec is None:
        return evaluate(model, task, items=items, batch_size=batch_size)
    with steer(model, vec, coeff=1.0):
        return evaluate(model, task, items=items, batch_size=batch_size)


def compare_conditions(model: Model, conditions: dict[str, SteeringVector | None],
                       task: str = "arithmetic", items: Sequence[Item] | None = None,
                       baseline: str = "base", batch_size: int = 50,
                       seed: int = 0, out: str | Path | None = None) -> pd.DataFrame:
    """Accuracy of ``model`` on the same items under each condition (a vector added at its
    layers with coefficient 1, or ``None`` for the unsteered model), against ``baseline``.

    ``out``: a JSON-lines journal; each condition's evaluation (per-item correctness, answers
    and completions, the model's dtype) is appended when done, and a condition found there
    under the same :func:`condition_key` is read back instead of evaluated again.

    Returns:
        One row per condition, in ``conditions`` order: ``condition``, the
        :data:`~steerlab.stats.COMPARISON_COLUMNS` of a sweep row
        (:func:`steerlab.stats.comparison_row`: ``accuracy`` with its 95% Wilson interval
        ``ci_low``/``ci_high``, ``baseline`` the baseline condition's accuracy, ``delta`` with
        its paired-bootstrap interval ``delta_low``/``delta_high`` and McNemar ``p_mcnemar``;
        ``seed`` seeds the bootstrap) and ``seconds``.

    Raises:
        OptionError: ``baseline`` is not one of the conditions.
    """
    import pandas as pd

    from steerlab import _io
    from steerlab.console import say
    from steerlab.stats import comparison_row
    from steerlab.tasks import get_task

    if baseline not in conditions:
        raise OptionError(f"The baseline {baseline!r} must be one of the conditions "
                          f"{list(conditions)}: add it (e.g. {{{baseline!r}: None, ...}} for "
                          "the unsteered model) or pass baseline= one of them.")
    t = get_task(task)
    its = list(items) if items is not None else t.items()
    recorded = {r["key"]: r for r in _io.read_jsonl(out)} if out is not None else {}
    results: dict[str, EvalResult] = {}
    for k, (name, vec) in enumerate(conditions.items(), start=1):
        key = condition_key(model, t.name, its, batch_size, name, vec)
        if key in recorded:
            results[name] = journal_result(recorded[key], its)
            continue
        t0 = time.perf_counter()
        say(f"evaluating condition {k}/{len(conditions)} {name!r} ({len(its)} items)")
        results[name] = evaluate_condition(model, t, its, vec, batch_size)
        say(f"  {name!r}: accuracy {results[name].correct.mean():.3f}, "
            f"{time.perf_counter() - t0:.0f} s")
        if out is not None:
            _io.append_jsonl(out, {
                "key": key, "condition": name, "model": model.hf_id,
                "dtype": str(model.dtype).removeprefix("torch."), "task": t.name,
                "n": len(its), "batch_size": batch_size,
                "vector": condition_fingerprint(vec), "seconds": results[name].seconds,
                "correct": "".join("1" if c else "0" for c in results[name].correct),
                "predictions": list(results[name].predictions),
                "completions": list(results[name].completions)})
    base = results[baseline].correct
    return pd.DataFrame([{"condition": name, **comparison_row(base, res.correct, seed=seed),
                          "seconds": res.seconds} for name, res in results.items()])


def journal_result(row: dict[str, Any], items: Sequence[Item]) -> EvalResult:
    """The :class:`EvalResult` of an evaluation journal row of :func:`compare_conditions`."""
    correct = np.array([c == "1" for c in row["correct"]])
    if len(correct) != len(items):
        raise OptionError(f"A journal row of {row.get('condition')!r} has {len(correct)} items, "
                          f"the evaluation {len(items)}.")
    return EvalResult(row["task"], row["model"], [it.id for it in items], correct,
                      list(row.get("predictions", [])), float(row["seconds"]),
                      extra={"dtype": row.get("dtype")},
                      completions=list(row.get("completions", [])))
