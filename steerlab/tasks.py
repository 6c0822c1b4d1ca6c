"""Evaluation tasks: items with gold answers, how to prompt them, and where they come from.

A :class:`Task` is either multiple choice (``kind="mc"``: options scored by log-probability) or
generative (``kind="gen"``: decode, extract the final answer, verify it). Each task also names
the prompt sets its steering vectors are extracted from; :func:`extraction_prompts` returns
them and checks they share no question with the task's evaluation items.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from steerlab.benchmarks import (
    MMLU_PRO_KNOWLEDGE,
    MMLU_PRO_REASONING,
    load_gsm8k,
    load_gsm_symbolic,
    load_mmlu_pro,
    load_popqa,
)
from steerlab.data import PromptItem, load_prompt_set, questions
from steerlab.errors import OptionError, SteerlabError
from steerlab.options import SCORINGS, Scoring, check

LETTERS = "ABCDEFGHIJ"


@dataclass(frozen=True)
class Item:
    """One evaluation item.

    Attributes:
        id: stable identifier.
        question: the question text, before any option list or template.
        answer: gold answer (for multiple choice: the correct option's text).
        aliases: other accepted answers (generative text answers).
        options: option texts (multiple choice) in display order; for generative ``choice``
            items, the candidate answers; else empty.
        answer_type: ``number`` (checked with math-verify), ``text`` (alias match) or
            ``choice`` (generative: the option named first in the completion must be gold).
    """

    id: str
    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    answer_type: str = "number"

    @property
    def answer_index(self) -> int:
        return self.options.index(self.answer)


@dataclass(frozen=True)
class Task:
    name: str
    kind: str  # "mc" or "gen"
    description: str
    source: str
    load_items: Callable[[], list[Item]] = lambda: []  # noqa: E731 - evaluation items
    extract_from: str = "shipped"  # which pair of prompt sets vectors come from
    max_new_tokens: int = 48
    scoring: Scoring = "letter"  # multiple choice: letter, text or cloze (see evaluate.evaluate)

    def __post_init__(self) -> None:
        check("task kind", self.kind, ("mc", "gen"))
        check("scoring", self.scoring, SCORINGS)
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise OptionError(f"Task {self.name!r}: max_new_tokens must be a whole number >= 1 "
                              f"(the answer's token budget), got {n!r}.")

    def items(self, n: int | None = None, seed: int = 0) -> list[Item]:
        """Evaluation items: all, or a seeded sample of ``n`` (fixed for a given seed)."""
        items = self.load_items()
        if n is None or n >= len(items):
            return list(items)
        rng = random.Random(f"{self.name}:{seed}")
        return sorted(rng.sample(items, n), key=lambda it: it.id)

    def chance(self, items: list[Item]) -> float | None:
        """Expected accuracy of uniform guessing (multiple choice only)."""
        if self.kind != "mc" or not items:
            return None
        return sum(1 / len(it.options) for it in items) / len(items)


# ---- shipped prompt sets as tasks -----------------------------------------------------------


def _numeric_distractors(answer: str, rng: random.Random, k: int = 3) -> list[str]:
    """Plausible wrong numbers near the gold one (off by small amounts, or by a factor)."""
    x = float(answer)
    integral = x == int(x)
    cands = [x + 1, x - 1, x + 2, x - 2, x + 10, x - 10, x * 2, x / 2, x + 5, x * 10, x / 10]
    out: list[str] = []
    rng.shuffle(cands)
    for c in cands:
        if c <= 0 or c == x or (integral and c != int(c)):
            continue
        text = str(int(c)) if c == int(c) else f"{c:g}"
        if text not in out:
            out.append(text)
        if len(out) == k:
            break
    return out


def _as_mc(item: PromptItem, pool: dict[str, list[str]]) -> Item:
    """Turn a shipped item into multiple choice with deterministically shuffled options."""
    rng = random.Random(item.id)
    if item.choices:
        options = list(item.choices)
    elif item.answer_type == "number":
        options = [item.answer, *_numeric_distractors(item.answer, rng)]
    else:
        others = sorted({a for a in pool[item.category] if a != item.answer})
        options = [item.answer, *rng.sample(others, 3)]
    rng.shuffle(options)
    return Item(item.id, item.question, item.answer, item.aliases, tuple(options),
                "text" if item.answer_type != "number" else "number")


def _shipped(kind: str, mc: bool) -> Callable[[], list[Item]]:
    @cache
    def load() -> tuple[Item, ...]:
        items = load_prompt_set(kind, "eval")
        pool: dict[str, list[str]] = {}
        for it in load_prompt_set(kind):
            pool.setdefault(it.category, []).append(it.answer)
        if mc:
            return tuple(_as_mc(it, pool) for it in items)
        return tuple(Item(it.id, it.question, it.answer, it.aliases, it.choices,
                          it.answer_type) for it in items)

    return lambda: list(load())


# ---- synthetic arithmetic (the learned-vector training task) --------------------------------

ARITH_MAX = 50  # operands 1..50: SmolLM2-135M-Instruct gets about a quarter right greedily
ARITH_SPLITS = {"test": 400, "dev": 100}  # the rest (3,275 problems) is the training split


@cache
def _arithmetic_split() -> dict[str, tuple[Item, ...]]:
    """Every ``a + b`` and ``a - b`` (a >= b) with operands 1..ARITH_MAX, shuffled once with a
    fixed seed and cut into disjoint test / dev / train splits (no problem in two splits)."""
    problems = [(a, "+", b) for a in range(1, ARITH_MAX + 1) for b in range(1, ARITH_MAX + 1)]
    problems += [(a, "-", b) for a in range(1, ARITH_MAX + 1) for b in range(1, a + 1)]
    random.Random("steerlab-arithmetic").shuffle(problems)
    items = [Item(f"arith-{a}{'p' if op == '+' else 'm'}{b}", f"What is {a} {op} {b}?",
                  str(a + b if op == "+" else a - b)) for a, op, b in problems]
    out: dict[str, tuple[Item, ...]] = {}
    start = 0
    for name, size in ARITH_SPLITS.items():
        out[name] = tuple(items[start:start + size])
        start += size
    out["train"] = tuple(items[start:])
    return out


def arithmetic_items(split: str = "test") -> list[Item]:
    """Synthetic 2-operand arithmetic: ``test`` (400, the task's evaluation items), ``dev``
    (100, for training curves) or ``train`` (the rest)."""
    splits = _arithmetic_split()
    if split not in splits:
        raise OptionError(f"Unknown arithmetic split {split!r}; use one of {sorted(splits)}.")
    return list(splits[split])


def training_items(task: str, split: str = "train") -> list[Item]:
    """Items to train learned vectors on (``train``) or to draw curves with (``dev``), never
    the task's evaluation items: synthetic arithmetic splits, or GSM8K train (dev = its last
    100 problems, train = the rest)."""
    if task == "arithmetic":
        return arithmetic_items(split)
    if task == "gsm8k":
        rows = load_gsm8k("train")
        items = [Item(f"gsm8k-train-{i}", r["question"], r["answer"])
                 for i, r in enumerate(rows)]
        if split not in ("train", "dev"):
            raise OptionError(f"Unknown split {split!r} for gsm8k training: train or dev.")
        return items[-100:] if split == "dev" else items[:-100]
    raise OptionError(f"No training split for task {task!r}: use arithmetic or gsm8k.")


# ---- real benchmarks ------------------------------------------------------------------------


@cache
def _mmlu_split() -> tuple[tuple[Item, ...], tuple[str, ...], tuple[str, ...]]:
    """MMLU-Pro: half of the reasoning-category questions (seeded) are held out for evaluation;
    the other half (vs the knowledge categories) is the extraction pool."""

    reasoning = load_mmlu_pro(MMLU_PRO_REASONING)
    knowledge = load_mmlu_pro(MMLU_PRO_KNOWLEDGE)
    rng = random.Random("mmlu-pro-split")
    idx = list(range(len(reasoning)))
    rng.shuffle(idx)
    half = len(idx) // 2
    eval_rows = [reasoning[i] for i in sorted(idx[:half])]
    extract_rows = [reasoning[i] for i in sorted(idx[half:])]
    items = tuple(Item(f"mmlu-pro-{r['id']}", r["question"], r["options"][r["answer_index"]],
                       (), tuple(r["options"]), "text") for r in eval_rows)
    # MMLU-Pro repeats some question texts under other ids: keep those out of the pool
    held = {r["question"].strip().lower() for r in eval_rows}
    rng2 = random.Random("mmlu-pro-extract")
    know = [r["question"] for r in knowledge if r["question"].strip().lower() not in held]
    rng2.shuffle(know)
    reason_q = [r["question"] for r in extract_rows if r["question"].strip().lower() not in held]
    rng2.shuffle(reason_q)
    return items, tuple(reason_q), tuple(know)


def _mmlu_items() -> list[Item]:
    return list(_mmlu_split()[0])


def _gsm8k_items() -> list[Item]:
    return [Item(r["id"], r["question"], r["answer"]) for r in load_gsm8k("test")]


def _gsm_symbolic_items() -> list[Item]:
    return [Item(r["id"], r["question"], r["answer"]) for r in load_gsm_symbolic("p2")]


def _popqa_items() -> list[Item]:
    return [Item(r["id"], r["question"], r["answers"][0], tuple(r["answers"][1:]), (), "text")
            for r in load_popqa()]


SHIPPED_SRC = "data/{}.jsonl, eval split (made by data/make_prompt_sets.py)"
TASKS: dict[str, Task] = {t.name: t for t in [
    Task("reasoning-mc", "mc", "Shipped reasoning questions (arithmetic word problems, "
         "comparisons, unit conversions, logic, sequences) as 2-4-way multiple choice",
         SHIPPED_SRC.format("reasoning"), _shipped("reasoning", mc=True), scoring="cloze"),
    Task("memorisation-mc", "mc", "Shipped recall questions (capitals, chemical symbols, "
         "authors, years, facts) as 4-way multiple choice",
         SHIPPED_SRC.format("memorisation"), _shipped("memorisation", mc=True),
         scoring="cloze"),
    Task("reasoning-gen", "gen", "Shipped reasoning questions, free answer (last number / "
         "boxed / ####), verified with math-verify", SHIPPED_SRC.format("reasoning"),
         _shipped("reasoning", mc=False), max_new_tokens=48),
    Task("memorisation-gen", "gen", "Shipped recall questions, free answer (alias match)",
         SHIPPED_SRC.format("memorisation"), _shipped("memorisation", mc=False),
         max_new_tokens=24),
    Task("mmlu-pro-reasoning", "mc", "MMLU-Pro test, reasoning categories (math, physics, "
         "chemistry, engineering, computer science), 10-way; held-out half",
         "MMLU-Pro test ($STEERLAB_DATA_DIR/mmlu_pro or hub TIGER-Lab/MMLU-Pro)", _mmlu_items,
         extract_from="mmlu-pro"),
    Task("gsm8k", "gen", "GSM8K test, free answer verified with math-verify",
         "GSM8K test ($STEERLAB_DATA_DIR/gsm8k or hub openai/gsm8k)", _gsm8k_items,
         max_new_tokens=160),
    Task("gsm-symbolic-p2", "gen", "GSM-Symbolic P2 (harder GSM8K variants), free answer",
         "GSM-Symbolic P2 ($STEERLAB_DATA_DIR/gsm_symbolic or hub apple/GSM-Symbolic)",
         _gsm_symbolic_items, max_new_tokens=200),
    Task("arithmetic", "gen", "Synthetic a + b / a - b with operands 1..50, free answer "
         "verified with math-verify (the learned-vector training task; test split)",
         "generated by steerlab.tasks (seeded)", lambda: arithmetic_items("test"),
         max_new_tokens=32),
    Task("popqa", "gen", "PopQA factual recall (1000-question sample), alias match",
         "PopQA ($STEERLAB_DATA_DIR/popqa or hub akariasai/PopQA)", _popqa_items,
         max_new_tokens=24),
]}

EXTRACT_SOURCES = ("shipped", "mmlu-pro", "gsm8k-popqa")


def get_task(name: str) -> Task:
    """The evaluation task called ``name`` (``steerlab tasks`` lists them); an unknown name
    fails with the list of the known ones."""
    if name not in TASKS:
        raise OptionError(f"Unknown task {name!r}; available: {', '.join(TASKS)} "
                          "(`steerlab tasks` describes them).")
    return TASKS[name]


def extraction_prompts(source: str, n: int | None = None) -> tuple[list[str], list[str]]:
    """(reasoning, memorisation) question lists to extract vectors from.

    ``shipped``: the shipped sets' extract split; ``mmlu-pro``: the non-held-out reasoning
    categories vs the knowledge categories; ``gsm8k-popqa``: GSM8K train vs PopQA.
    """

    if source == "shipped":
        return questions("reasoning", "extract", n), questions("memorisation", "extract", n)
    if source == "mmlu-pro":
        _, reason, know = _mmlu_split()
        return list(reason[:n]), list(know[:n])
    if source == "gsm8k-popqa":
        return ([r["question"] for r in load_gsm8k("train")][:n],
                [r["question"] for r in load_popqa()][:n])
    raise OptionError(f"Unknown extraction source {source!r}; use one of {EXTRACT_SOURCES}.")


def shots(task: Task, k: int = 3) -> list[tuple[str, str]]:
    """(question, answer) examples for few-shot prompts of base models, never from the task's
    evaluation items: the shipped extract split, or GSM8K train with worked solutions."""
    if task.name in ("gsm8k", "gsm-symbolic-p2"):
        return [(r["question"], r["solution"]) for r in load_gsm8k("train")[:k]]
    kind = "memorisation" if task.name in ("memorisation-gen", "popqa") else "reasoning"
    items = load_prompt_set(kind, "extract")
    step = max(1, len(items) // k)
    return [(it.question, it.answer) for it in items[::step][:k]]


def check_disjoint(extract: list[str], items: list[Item]) -> None:
    """Refuse extraction prompts that share a question with the evaluation items."""
    norm = {q.strip().lower() for q in extract}
    shared = [it.id for it in items if it.question.strip().lower() in norm]
    if shared:
        raise SteerlabError(f"{len(shared)} evaluation items (e.g. {shared[:3]}) also appear in "
                            "the extraction prompts: vectors must come from a disjoint split.")
