"""The seed's missing control scored on *generated* answers: kind patching into arithmetic.

:func:`steerlab.kinds.kind_patching` scores multiple choice by cloze; the seed's claim is about
generated reasoning. Here the target is a free-answer task the model is above chance on
(:data:`GEN_TARGETS`: synthetic arithmetic for SmolLM2). At each layer, the residual stream
after the block at the target prompt's last token is edited, once, while the prompt is read
(``when="prompt"``), and the answer is then decoded greedily and judged by the project's
verifier (:func:`steerlab.answers.judge`). The conditions (:data:`GEN_KIND_CONDITIONS`):

* ``patch_reasoning``: a reasoning prompt's activation written in (one source prompt per
  item, seeded);
* ``patch_same``: another prompt of the target's own kind written in (another arithmetic
  question: "any swap of the prompt's state", the swap control);
* ``patch_recall``: a recall (memorisation) prompt's activation written in;
* ``diff_means`` / ``random`` / ``shuffled``: the reasoning-minus-recall difference of means,
  a seeded random direction and the label-shuffled difference, each added at the size of the
  change ``patch_reasoning`` makes at that layer (edits as large as a patch, differing in
  direction only).

Source prompts are read in the targets' own format (the same chat template or ``Q: ...\\nA:``
frame), so a patched state is read where it is written. Every cell is compared with the
unsteered answers on the same items (paired bootstrap interval, McNemar p, Holm across the
layers of each condition), and :func:`kind_patching_gen_summary` compares conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlab import _io
from steerlab.activations import Activations
from steerlab.answers import judge, reply
from steerlab.cache import cache_activations
from steerlab.devices import dtype_name
from steerlab.errors import EmptyInputError, OptionError
from steerlab.evaluation import gen_prompt
from steerlab.inference import generate_encoded
from steerlab.kinds import Batched, cell_name, journal_dtype, recorded_batches
from steerlab.options import BackendName
from steerlab.receipts import Receipt
from steerlab.stats import accuracy, comparison_row, holm
from steerlab.tasks import Item, arithmetic_items, check_disjoint, extraction_prompts, get_task
from steerlab.validate import check_layers
from steerlab.vectors import diff_of_means, random_like, shuffled_diff_of_means, unit

if TYPE_CHECKING:
    from steerlab.models import Model

__all__ = ["GEN_KIND_CONDITIONS", "GEN_TARGETS", "kind_gen_config", "kind_patching_gen",
           "kind_patching_gen_summary", "plan_kind_patching_gen"]

#: free-answer targets and where their same-kind (swap control) prompts come from: never
#: the evaluated items (the arithmetic dev split is disjoint from its test split)
GEN_TARGETS: dict[str, Callable[[], list[str]]] = {
    "arithmetic": lambda: [it.question for it in arithmetic_items("dev")]}
#: the conditions, in table order (see the module doc)
GEN_KIND_CONDITIONS = ("patch_reasoning", "patch_same", "patch_recall", "diff_means", "random",
                       "shuffled")
_PATCHES = ("patch_reasoning", "patch_same", "patch_recall")


@dataclass
class GenKindPlan(Batched):
    """What :func:`kind_patching_gen` computes, prepared once: the target items, the source
    prompts and their activations, each item's source per patch condition, the directions at
    their sizes, and the journal key (the same key means the same cells)."""

    model: Model
    backend: BackendName
    target: str
    items: list[Item]
    layers: list[int]
    chat: bool
    batch_size: int
    max_new_tokens: int
    seed: int
    sources: dict[str, list[str]]
    pick: dict[str, torch.Tensor]
    source_acts: dict[str, Activations]
    vectors: dict[str, dict[int, torch.Tensor]]
    config: dict[str, Any]



def _prompt(question: str, chat: bool) -> str:
    """A question in the targets' generation format (no few-shot examples)."""
    return gen_prompt(Item("", question, ""), (), chat)


def _inputs(model: Model, target: str, layers: Sequence[int] | int | None, n: int | None,
            seed: int, source: str, n_source: int | None, backend: BackendName, batch_size: int,
            chat: bool | None, max_new_tokens: int | None
            ) -> tuple[dict[str, Any], list[Item], dict[str, list[str]]]:
    """The run's config (see :func:`kind_gen_config`), its items and its source prompts per
    patch condition, every argument checked before anything runs."""
    if target not in GEN_TARGETS:
        raise OptionError(f"Unknown target {target!r}: generative kind patching targets one of "
                          f"{list(GEN_TARGETS)} (a free-answer task with same-kind prompts "
                          "outside its items).")
    use_layers = check_layers(model, layers)
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")
    task = get_task(target)
    budget = task.max_new_tokens if max_new_tokens is None else max_new_tokens
    if budget < 1:
        raise OptionError(f"max_new_tokens must be >= 1, got {budget}.")
    items = task.items(n, seed)
    if not items:
        raise EmptyInputError(f"No items to evaluate for task {target}.")
    reason_q, recall_q = extraction_prompts(source, n_source)
    same_q = GEN_TARGETS[target]()[:n_source]
    check_disjoint(reason_q + recall_q + same_q, items)
    sources = {"patch_reasoning": reason_q, "patch_same": same_q, "patch_recall": recall_q}
    config = {"model": model.hf_id, "dtype": dtype_name(model.dtype), "target": target,
              "items": [it.id for it in items], "layers": use_layers, "seed": seed,
              "source": source, "n_source": {c: len(q) for c, q in sources.items()},
              "chat": model.uses_chat(chat), "batch_size": batch_size, "max_new_tokens": budget,
              "backend": backend}
    return config, list(items), sources


def kind_gen_config(model: Model, target: str = "arithmetic",
                    layers: Sequence[int] | int | None = None, n: int | None = 100,
                    seed: int = 0, source: str = "shipped", n_source: int | None = None,
                    backend: BackendName = "hf", batch_size: int = 16, chat: bool | None = None,
                    max_new_tokens: int | None = None) -> dict[str, Any]:
    """What identifies a :func:`kind_patching_gen` run (same arguments), checked, before
    anything runs; its hash is the journal key (:func:`steerlab.kinds.config_key`)."""
    return _inputs(model, target, layers, n, seed, source, n_source, backend, batch_size, chat,
                   max_new_tokens)[0]


def recorded_dtype(model: Model, out: str | Path, **kwargs: Any) -> str | None:
    """The dtype the journal ``out`` recorded the :func:`kind_patching_gen` run ``kwargs`` in
    (whatever ``model``'s own dtype), or None when it holds no batch of that run."""
    return journal_dtype(out, kind_gen_config(model, **kwargs))


def plan_kind_patching_gen(model: Model, target: str = "arithmetic",
                           layers: Sequence[int] | int | None = None, n: int | None = 100,
                           seed: int = 0, source: str = "shipped", n_source: int | None = None,
                           backend: BackendName = "hf", batch_size: int = 16,
                           chat: bool | None = None, max_new_tokens: int | None = None
                           ) -> GenKindPlan:
    """The :class:`GenKindPlan` of :func:`kind_patching_gen` (same arguments): the sources'
    activations and the directions, after every argument is checked."""
    config, items, sources = _inputs(model, target, layers, n, seed, source, n_source, backend,
                                     batch_size, chat, max_new_tokens)
    use_layers, chat_, budget = config["layers"], config["chat"], config["max_new_tokens"]
    with torch.no_grad():
        acts = {c: cache_activations(model, [_prompt(q, chat_) for q in qs], use_layers,
                                     chat=chat_, backend=backend, progress=False)
                for c, qs in sources.items()}
        own = cache_activations(model, [_prompt(it.question, chat_) for it in items],
                                use_layers, chat=chat_, backend=backend, progress=False)
    rng = np.random.default_rng(seed)
    pick = {c: torch.from_numpy(rng.permutation(len(items)) % len(sources[c])) for c in _PATCHES}
    mean = diff_of_means(acts["patch_reasoning"], acts["patch_recall"])
    directions = {"diff_means": mean, "random": random_like(mean, seed=seed),
                  "shuffled": shuffled_diff_of_means(acts["patch_reasoning"],
                                                     acts["patch_recall"], seed=seed)}
    vectors: dict[str, dict[int, torch.Tensor]] = {}
    for layer in use_layers:  # the size of a reasoning patch at this layer
        size = (acts["patch_reasoning"].at(layer)[pick["patch_reasoning"]].float()
                - own.at(layer).float()).norm(dim=-1).mean()
        for name, vec in directions.items():
            vectors.setdefault(name, {})[layer] = unit(vec[layer].float()) * size
    return GenKindPlan(model, backend, target, list(items), use_layers, chat_, batch_size,
                       budget, seed, sources, pick, acts, vectors, config)


def _last_prompt_edit(vals: torch.Tensor, replace: bool
                      ) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[float]]:
    """An edit writing (``replace``) or adding ``vals[r]`` at the last position of each row r
    of a left-padded prompt, and the list it appends the norm of each row's change to."""
    sizes: list[float] = []

    def fn(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        v = vals.to(device=h.device, dtype=h.dtype)
        new = v if replace else h[:, -1] + v
        sizes.extend((new.float() - h[:, -1].float()).norm(dim=-1).cpu().tolist())
        h[:, -1] = new
        return h

    return fn, sizes


def gen_kind_cells(plan: GenKindPlan, start: int, cells: Sequence[tuple[int, str]],
                   base: bool = True) -> dict[str, dict[str, list[Any]]]:
    """The batch of ``plan``'s items that begins at item ``start``: the unsteered answers
    (when ``base``) and each (layer, condition) of ``cells``. Returns, per ``"base"`` and per
    ``"<layer>:<condition>"``, each item's judged answer, whether it is correct, its
    completion, and (cells) the norm of the change the edit made."""
    model, be = plan.model, plan.model.backend(plan.backend)
    batch = plan.items[start:start + plan.batch_size]
    enc = model.encode([_prompt(it.question, plan.chat) for it in batch], chat=plan.chat)
    rows = torch.arange(start, start + len(batch))

    def judged(outs: list[str]) -> dict[str, list[Any]]:
        marks = [judge(it, reply(out, plan.chat))
                 for it, out in zip(batch, outs, strict=True)]
        return {"correct": [ok for ok, _ in marks], "answer": [a for _, a in marks],
                "completion": outs}

    out: dict[str, dict[str, list[Any]]] = {}
    with torch.no_grad():
        if base:
            out["base"] = judged(generate_encoded(model, enc, plan.max_new_tokens,
                                                  plan.backend))
        for layer, cond in cells:
            if cond in plan.pick:
                vals = plan.source_acts[cond].at(layer)[plan.pick[cond][rows]]
                fn, sizes = _last_prompt_edit(vals, replace=True)
            else:
                fn, sizes = _last_prompt_edit(
                    plan.vectors[cond][layer].expand(len(batch), -1), replace=False)
            receipt = Receipt("patched")
            with be.add_edits([(layer, fn, {"when": "prompt", "receipt": receipt})]):
                outs = generate_encoded(model, enc, plan.max_new_tokens, plan.backend)
            if len(sizes) != len(batch):  # once per row, in the prompt's forward only
                raise AssertionError(f"The edit at layer {layer} changed {len(sizes)} rows "
                                     f"for a batch of {len(batch)}: {receipt}")
            out[cell_name(layer, cond)] = {**judged(outs), "norm": sizes}
    return out


def kind_patching_gen(model: Model, target: str = "arithmetic",
                      layers: Sequence[int] | int | None = None, n: int | None = 100,
                      seed: int = 0, source: str = "shipped", n_source: int | None = None,
                      backend: BackendName = "hf", batch_size: int = 16,
                      chat: bool | None = None, max_new_tokens: int | None = None,
                      progress: bool | None = None, out: str | Path | None = None
                      ) -> pd.DataFrame:
    """Reasoning, same-kind and recall prompts' states written into ``target``'s prompts, and
    the directions added at the same size, layer by layer, scored on greedy answers (see the
    module doc).

    ``out``: a JSONL journal; each batch's results are appended as it finishes under the
    run's key, and batches it holds are read back, not computed (a killed run resumes where
    it stopped; :func:`steerlab.recordings_controls.recorded_kind_patching_gen` reads a
    recording back in its own dtype and spot-checks it).

    Returns:
        One row per (layer, condition): target, condition, layer, the
        :data:`~steerlab.stats.COMPARISON_COLUMNS` against the unsteered answers on the same
        items, ``p_holm`` (Holm over the layers of that condition), ``edit_norm`` and
        ``correct`` (per-item outcomes). ``.attrs``: model, dtype, target, n, the unsteered
        accuracy with its interval, seed, source sizes, item ids, the journal key, and per
        patch condition the source prompt each item got.
    """
    plan = plan_kind_patching_gen(model, target, layers, n, seed, source, n_source, backend,
                                  batch_size, chat, max_new_tokens)
    return run_kind_patching_gen(plan, progress, out)


def run_kind_patching_gen(plan: GenKindPlan, progress: bool | None = None,
                          out: str | Path | None = None) -> pd.DataFrame:
    """:func:`kind_patching_gen` of a prepared :class:`GenKindPlan` (the same table)."""
    target = plan.target
    cells = [(l, c) for l in plan.layers for c in GEN_KIND_CONDITIONS]
    done = recorded_batches(plan.key, out) if out is not None else {}
    todo = [s for s in plan.starts if s not in done]
    show = progress if progress is not None else len(todo) > 1
    results = dict(done)
    for start in tqdm(todo, desc=f"generative kind patching {target}", disable=not show,
                      leave=False):
        row = {"key": plan.key, "config": plan.config, "start": start,
               **gen_kind_cells(plan, start, cells)}
        if out is not None:
            _io.append_jsonl(out, row)
        results[start] = row
    return gen_frame(plan, [results[s] for s in plan.starts])


def gen_frame(plan: GenKindPlan, batches: list[dict[str, Any]]) -> pd.DataFrame:
    """The table of :func:`kind_patching_gen` from its batches, in item order."""
    base_correct = [c for b in batches for c in b["base"]["correct"]]
    rows = []
    for layer, cond in [(l, c) for l in plan.layers for c in GEN_KIND_CONDITIONS]:
        name = cell_name(layer, cond)
        got = np.array([c for b in batches for c in b[name]["correct"]], dtype=bool)
        norm = [x for b in batches for x in b[name]["norm"]]
        rows.append({"target": plan.target, "condition": cond, "layer": layer,
                     **comparison_row(base_correct, got, seed=plan.seed),
                     "edit_norm": float(np.mean(norm)), "correct": got.tolist()})  # cpu: numpy
    frame = pd.DataFrame(rows)
    frame["p_holm"] = np.nan
    for _, idx in frame.groupby("condition", sort=False).groups.items():
        frame.loc[idx, "p_holm"] = holm(frame.loc[idx, "p_mcnemar"].to_numpy())
    base = accuracy(base_correct)
    frame.attrs.update({
        "model": plan.model.hf_id, "dtype": plan.config["dtype"], "target": plan.target,
        "n": len(plan.items), "unsteered": [base.acc, base.lo, base.hi],
        "chance": get_task(plan.target).chance(plan.items), "seed": plan.seed,
        "chat": plan.chat, "n_source": plan.config["n_source"],
        "max_new_tokens": plan.max_new_tokens, "item_ids": [it.id for it in plan.items],
        "key": plan.key, "sources": {c: [plan.sources[c][int(j)] for j in plan.pick[c]]
                                     for c in plan.pick}})
    return frame


def kind_patching_gen_summary(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per layer of a :func:`kind_patching_gen` frame, paired differences between conditions
    on the same items (``delta`` = first minus second, 95% bootstrap interval, McNemar p,
    Holm over layers per comparison): ``patch_reasoning`` vs ``patch_same`` (does a reasoning
    prompt's state do more than any other arithmetic prompt's?), vs ``patch_recall`` (more
    than a recall prompt's?), vs ``diff_means`` (more than an edit of its size along the mean
    direction?), and ``diff_means`` vs ``random`` and vs ``shuffled``."""
    rows = []
    for layer, g in frame.groupby("layer", sort=True):
        by = {str(r.condition): np.array(r.correct) for r in g.itertuples()}
        for a, b in (("patch_reasoning", "patch_same"), ("patch_reasoning", "patch_recall"),
                     ("patch_reasoning", "diff_means"), ("diff_means", "random"),
                     ("diff_means", "shuffled")):
            row = comparison_row(by[b], by[a], seed=seed)
            rows.append({"layer": int(layer), "comparison": f"{a} - {b}",
                         "delta": row["delta"], "delta_low": row["delta_low"],
                         "delta_high": row["delta_high"], "p_mcnemar": row["p_mcnemar"]})
    out = pd.DataFrame(rows)
    out["p_holm"] = np.nan
    for _, idx in out.groupby("comparison", sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_mcnemar"].to_numpy())
    return out
