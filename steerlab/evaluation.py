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
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab import engine
from steerlab.answers import answer_complete, extract_letter, judge, reply
from steerlab.errors import EmptyInputError, OptionError
from steerlab.inference import generate
from steerlab.options import SCORINGS, BackendName, Scoring
from steerlab.padding import last_positions, mask_of
from steerlab.stats import Accuracy, accuracy
from steerlab.tasks import LETTERS, Item, Task
from steerlab.tokens import answer_token_id, continuation_ids

if TYPE_CHECKING:

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
    """The token of each of the first ``k`` option letters as the answer (after ``Answer:``
    with a space; at the start of a chat turn without one)."""
    return [answer_token_id(model, letter, space=not chat) for letter in LETTERS[:k]]


@dataclass
class MCBatch:
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


def _mc_letter_batch(model: Model, items: list[Item], chat: bool) -> MCBatch:
    """Log-probability of each option letter as the next token (one forward per prompt)."""
    enc = model.encode([mc_prompt(it, chat) for it in items], chat=chat)
    n_opts = [len(it.options) for it in items]
    letter_ids = _letter_ids(model, max(n_opts), chat)

    def finish(logits: torch.Tensor) -> list[np.ndarray]:
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (B, vocab)
        letters = logp[:, letter_ids].cpu()  # (B, n_letters): one copy to the host
        return [letters[i, :k].numpy() for i, k in enumerate(n_opts)]  # cpu: copied above

    last = last_positions(enc["attention_mask"])
    return MCBatch(items, enc, 1, finish, torch.arange(len(items)), last.cpu())


def _mc_text_batch(model: Model, prompts: list[str], items: list[Item], chat: bool,
                   space: bool = True) -> MCBatch:
    """Mean log-probability per token of each option's text after its prompt (``space``: with
    a leading space, :func:`steerlab.tokens.continuation_ids`); all options of all items in
    one right-padded forward."""
    templated = chat
    formatted = model.format(prompts, chat)
    seqs, spans = [], []
    for prompt, item in zip(formatted, items, strict=True):
        p_ids = model.tokenizer(prompt, add_special_tokens=not templated)["input_ids"]
        for o in item.options:
            o_ids = continuation_ids(model, o, space)
            spans.append((len(p_ids), len(p_ids) + len(o_ids)))
            seqs.append(p_ids + o_ids)
    width = max(map(len, seqs))
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=model.device)
    dev = ids.device
    lens = torch.tensor([len(s) for s in seqs], device=dev)
    mask = mask_of(lens, width).long()
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
    return MCBatch(items, {"input_ids": ids, "attention_mask": mask},
                    torch.tensor(need, device=dev),
                    finish, row_item, torch.tensor([a - 1 for a, _ in spans]))


def mc_batch(model: Model, items: list[Item], scoring: Scoring, chat: bool,
             space: bool = True) -> MCBatch:
    """One batch of multiple-choice items scored ``scoring`` way (``space``: option texts
    follow their prompt after a space)."""
    if scoring == "letter":
        return _mc_letter_batch(model, items, chat)
    fmt = mc_prompt if scoring == "text" else cloze_prompt
    return _mc_text_batch(model, [fmt(it, chat) for it in items], items, chat, space)


#: new tokens a multiple-choice answer may take with ``scoring="generate"`` (the seed's 200)
MC_GENERATE_TOKENS = 200


def _mc_generate(model: Model, items: list[Item], chat: bool, backend: BackendName
                 ) -> tuple[list[str], list[bool], list[str]]:
    """Multiple choice answered in words: greedy text after the lettered prompt, the letter
    taken from it (:func:`extract_letter`). Rows leave the batch once their text is final
    (EOS; for a base model the start of a new example, after which nothing is read).
    Returns (chosen option text or "" when the text names no letter, correct, completion)
    per item."""
    prompts = [mc_prompt(it, chat) for it in items]
    be = model.backend(backend)
    if engine.decodes(be):
        dec = model.tokenizer.decode
        toks = engine.greedy(be, model.encode(prompts, chat=chat), MC_GENERATE_TOKENS,
                             done=None if chat else
                             lambda row, t: answer_complete(dec(t, skip_special_tokens=True)))
        outs = [dec(t, skip_special_tokens=True) for t in toks]
    else:
        outs = generate(model, prompts, MC_GENERATE_TOKENS, chat=chat, backend=backend,
                        batch_size=len(items), progress=False)
    preds, correct = [], []
    for it, out in zip(items, outs, strict=True):
        letter = extract_letter(reply(out, chat), len(it.options))
        pick = it.options[LETTERS.index(letter)] if letter is not None else ""
        preds.append(pick)
        correct.append(letter is not None and LETTERS.index(letter) == it.answer_index)
    return preds, correct, outs


def mc_batches(model: Model, items: Sequence[Item], scoring: Scoring, chat: bool,
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


def evaluation_batches(model: Model, task: Task, items: Sequence[Item], scoring: Scoring,
                       chat: bool, batch_size: int) -> list[list[int]]:
    """The item indices of each batch :func:`evaluate` runs: multiple choice by prompt length
    (:func:`mc_batches`), generative tasks in item order. Evaluating one batch's items
    alone (``batch_size=len(batch)``) repeats that batch's computation exactly."""
    if task.kind == "mc":
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
             backend: BackendName = "hf", batch_size: int = 16, scoring: Scoring | None = None,
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
            mc = mc_batch(model, batch, scoring, chat)
            with torch.no_grad():
                logits = model.backend(backend).forward(mc.enc, keep=mc.keep)
            for i, p, c in zip(idx, *mc.choose(logits), strict=True):
                preds[i], correct[i] = p, c
        else:
            prompts = [gen_prompt(it, shots, chat) for it in batch]
            outs = generate(model, prompts, task.max_new_tokens, chat=chat, backend=backend,
                            batch_size=len(prompts), progress=False)
            for i, it, out in zip(idx, batch, outs, strict=True):
                correct[i], preds[i] = judge(it, reply(out, chat))
                completions[i] = out
    return EvalResult(task.name, model.hf_id, [it.id for it in items], np.array(correct),
                      preds, time.perf_counter() - t0, task.chance(items),
                      {"chat": chat, "scoring": scoring, "backend": backend},
                      completions)
