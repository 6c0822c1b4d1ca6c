"""The prompt sets steerlab ships in ``data/`` (made by ``data/make_prompt_sets.py``).

*reasoning*: questions whose answer must be worked out; *memorisation*: questions answered by
recall. Each item has a gold answer and a split: ``extract`` (to build vectors) or ``eval``
(held out for accuracy); the splits are disjoint by construction and by test.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from itertools import zip_longest
from pathlib import Path

from steerlab.errors import OptionError

KINDS = ("reasoning", "memorisation")
SPLITS = ("extract", "eval")


@dataclass(frozen=True)
class PromptItem:
    id: str
    kind: str
    category: str
    question: str
    answer: str
    aliases: tuple[str, ...]
    answer_type: str
    choices: tuple[str, ...]
    split: str


def shipped_data_dir() -> Path:
    """``$STEERLAB_PROMPTS_DIR``, else the copy packaged in the wheel, else the repo's data/."""
    env = os.environ.get("STEERLAB_PROMPTS_DIR")
    if env:
        return Path(env)
    packaged = Path(__file__).parent / "_data"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "data"


@cache
def _read(path: Path) -> tuple[PromptItem, ...]:
    items = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                d["aliases"] = tuple(d["aliases"])
                d["choices"] = tuple(d["choices"])
                items.append(PromptItem(**d))
    return tuple(items)


def load_prompt_set(kind: str, split: str | None = None) -> list[PromptItem]:
    """Items of the shipped ``kind`` set (``reasoning`` or ``memorisation``), optionally one
    ``split`` (``extract`` or ``eval``)."""
    if kind not in KINDS:
        raise OptionError(f"Unknown prompt set {kind!r}: use one of {KINDS}.")
    if split is not None and split not in SPLITS:
        raise OptionError(f"Unknown split {split!r}: use one of {SPLITS}.")
    path = shipped_data_dir() / f"{kind}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"Prompt set {path} is missing; regenerate it with "
                                "`python data/make_prompt_sets.py`.")
    return [it for it in _read(path) if split is None or it.split == split]


def questions(kind: str, split: str | None = "extract", n: int | None = None) -> list[str]:
    """Question texts of a shipped set; with ``n``, the first ``n`` taken round-robin over the
    categories, so a small sample still covers every category."""
    items = load_prompt_set(kind, split)
    by_cat: dict[str, list[PromptItem]] = {}
    for it in items:
        by_cat.setdefault(it.category, []).append(it)
    mixed = [it for group in zip_longest(*by_cat.values()) for it in group if it is not None]
    return [it.question for it in mixed[:n]]


#: (country, capital) facts for activation patching: with the template of
#: :func:`steerlab.pairs.fact_pairs` every country is one token in SmolLM2's vocabulary, so
#: any two prompts tokenize to the same length
CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
    ("Japan", "Tokyo"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("Greece", "Athens"),
    ("England", "London"), ("Austria", "Vienna"), ("Poland", "Warsaw"), ("Ireland", "Dublin"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Portugal", "Lisbon"), ("China", "Beijing"),
    ("Canada", "Ottawa"), ("Turkey", "Ankara"), ("Hungary", "Budapest"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
    ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"), ("Chile", "Santiago"),
    ("Thailand", "Bangkok"), ("India", "Delhi"), ("Iran", "Tehran"), ("Iraq", "Baghdad"))
