"""Scoring a task: multiple choice by log-probability, generative by verified final answers.

Steering is whatever is active on the model when :func:`evaluate` runs (wrap it in
:func:`steerlab.steering.steer`). Every result carries per-item correctness, so steered and
unsteered runs on the same items give a paired difference
(:func:`steerlab.stats.paired_difference`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlab.errors import EmptyInputError, OptionError
from steerlab.inference import generate
from steerlab.stats import Accuracy, accuracy
from steerlab.tasks import LETTERS, Item, Task

if TYPE_CHECKING:
    from steerlab.models import Model

SCORINGS = ("letter", "text", "cloze")


@dataclass
class EvalResult:
    """Outcome of one evaluation pass.

    Attributes:
        correct: (n,) bool, per item, in ``item_ids`` order.
        predictions: the chosen option text (mc) or the extracted answer (gen), per item.
    """

    task: str
    model_id: str
    item_ids: list[str]
    correct: np.ndarray
    predictions: list[str]
    seconds: float
    chance: float | None = None
    extra: dict = field(default_factory=dict)

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


@torch.no_grad()
def _mc_letter_scores(model: Model, prompts: list[str], n_opts: list[int], chat: bool,
                      backend: str) -> list[np.ndarray]:
    """Log-probability of each option letter as the next token (one forward per prompt)."""
    be = model.backend(backend)
    enc = model.encode(prompts, chat=chat)
    logp = torch.log_softmax(be.forward(enc, keep=1)[:, -1].float(), dim=-1)  # (B, vocab)
    letter_ids = _letter_ids(model, max(n_opts), chat and model.is_chat)
    return [logp[i, letter_ids[:k]].numpy() for i, k in enumerate(n_opts)]


@torch.no_grad()
def _mc_text_scores(model: Model, prompts: list[str], items: list[Item], chat: bool,
                    backend: str) -> list[np.ndarray]:
    """Mean log-probability per token of each option's text after its prompt; all options of
    all items in one right-padded forward."""
    be = model.backend(backend)
    templated = chat and model.is_chat
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
    mask = (torch.arange(width)[None, :] < torch.tensor([len(s) for s in seqs])[:, None]).long()
    # logits only where an option token is predicted: positions a-1 .. b-2 of each span
    need = sorted({p for a, b in spans for p in range(a - 1, b - 1)})
    col = {p: i for i, p in enumerate(need)}
    logits = be.forward({"input_ids": ids, "attention_mask": mask}, keep=torch.tensor(need))
    logp = torch.log_softmax(logits.float(), -1)  # (n_seqs, len(need), vocab)
    flat = []
    for j, (a, b) in enumerate(spans):
        cols = torch.tensor([col[p] for p in range(a - 1, b - 1)])
        flat.append(float(logp[j, cols, ids[j, a:b]].mean()))
    out, k = [], 0
    for item in items:
        out.append(np.array(flat[k:k + len(item.options)]))
        k += len(item.options)
    return out


def cloze_prompt(item: Item, chat: bool) -> str:
    """The question alone (no option list): options are scored as its continuation."""
    return item.question if chat else f"Q: {item.question}\nA:"


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def extract_answer(text: str) -> str | None:
    """The final answer in a completion: ``\\boxed{...}``, else after ``####``, else the last
    number. None when there is none."""
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", text)
    if boxed:
        return boxed[-1].strip()
    if "####" in text:
        return text.split("####")[-1].strip().split("\n")[0].replace(",", "").strip()
    nums = _NUMBER.findall(text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def judge(item: Item, completion: str) -> tuple[bool, str]:
    """(correct, extracted answer) for a generative completion.

    Numbers are compared with math-verify (``4.50`` = ``4.5``, ``1/2`` = ``0.5``); text answers
    count when the gold answer or an alias appears as whole words in the completion.
    """
    if item.answer_type == "number":
        from math_verify import parse, verify

        pred = extract_answer(completion)
        if pred is None:
            return False, ""
        try:
            return bool(verify(parse(item.answer), parse(pred))), pred
        except Exception:  # noqa: BLE001 - an unparsable answer is a wrong answer
            return False, pred
    text = f" {_norm(completion)} "
    if item.answer_type == "choice":  # the option named first is the model's answer
        found = [(text.find(f" {_norm(o)} "), o) for o in item.options]
        named = sorted((pos, o) for pos, o in found if pos >= 0)
        pred = named[0][1] if named else ""
        return pred == item.answer, pred
    ok = any(f" {_norm(a)} " in text for a in (item.answer, *item.aliases) if _norm(a))
    return ok, completion.strip().split("\n")[0][:80]


def _first_answer(text: str) -> str:
    """Cut a base model's continuation at the start of a new few-shot example."""
    return re.split(r"\n\s*\n|\nQ:|\nQuestion:", text, maxsplit=1)[0]


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
            option text after the same prompt) or ``cloze`` (mean log-prob per token of the
            option text after the question alone); default: the task's.
        shots: (question, answer) examples prepended for base models on generative tasks.
    """
    items = list(items) if items is not None else task.items(n, seed)
    if not items:
        raise EmptyInputError(f"No items to evaluate for task {task.name}.")
    scoring = scoring or task.scoring
    if scoring not in SCORINGS:
        raise OptionError(f"Unknown scoring {scoring!r}: use one of {SCORINGS}.")
    chat = model.is_chat if chat is None else chat
    t0 = time.perf_counter()
    preds: list[str] = []
    correct: list[bool] = []
    batches = [items[i:i + batch_size] for i in range(0, len(items), batch_size)]
    show = progress if progress is not None else len(batches) > 4
    for batch in tqdm(batches, desc=f"{task.name}", disable=not show, leave=False):
        if task.kind == "mc":
            if scoring == "letter":
                scores = _mc_letter_scores(model, [mc_prompt(it, chat) for it in batch],
                                           [len(it.options) for it in batch], chat, backend)
            else:
                fmt = mc_prompt if scoring == "text" else cloze_prompt
                scores = _mc_text_scores(model, [fmt(it, chat) for it in batch], batch, chat,
                                         backend)
            for it, s in zip(batch, scores, strict=True):
                choice = it.options[int(np.argmax(s))]
                preds.append(choice)
                correct.append(choice == it.answer)
        else:
            prompts = [gen_prompt(it, shots, chat) for it in batch]
            outs = generate(model, prompts, task.max_new_tokens, chat=chat, backend=backend,
                            batch_size=len(prompts), progress=False)
            for it, out in zip(batch, outs, strict=True):
                ok, pred = judge(it, out if chat else _first_answer(out))
                preds.append(pred)
                correct.append(ok)
    return EvalResult(task.name, model.hf_id, [it.id for it in items], np.array(correct),
                      preds, time.perf_counter() - t0, task.chance(items),
                      {"chat": chat and model.is_chat, "scoring": scoring, "backend": backend})
