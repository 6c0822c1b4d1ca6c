"""The seed replication's missing controls: activation patching between prompt kinds.

:func:`kind_patching` writes reasoning-prompt states into memorisation prompts (or the
reverse) layer by layer, against difference-of-means steering at the same layer, the swap
control (another prompt of the same kind) and the random and shuffled directions, all at the
same size and place; :func:`kind_patching_summary` and :func:`kind_patching_verdict` read the
table (notebook 07, section 6).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from steerlab import _io, engine
from steerlab.activations import Activations
from steerlab.cache import cache_activations
from steerlab.devices import dtype_name
from steerlab.errors import EmptyInputError, OptionError
from steerlab.evaluation import cloze_prompt, mc_batch
from steerlab.options import BackendName, Site
from steerlab.receipts import Receipt
from steerlab.stats import accuracy, comparison_row, interval_side
from steerlab.tasks import check_disjoint, extraction_prompts, get_task
from steerlab.validate import check_layers
from steerlab.vectors import diff_of_means, random_like, shuffled_diff_of_means, unit

if TYPE_CHECKING:
    from steerlab.models import Model
    from steerlab.tasks import Item

#: the multiple-choice tasks :func:`kind_patching` can target, and the kind of prompt each is
KIND_TARGETS = {"memorisation-mc": "memorisation", "reasoning-mc": "reasoning"}
#: its conditions, in table order: the other kind's activation written in (``patch_other``),
#: another prompt of the target's own kind written in (``patch_same``, the swap control), the
#: difference of means added at its own norm (``mean_patch``: the *average* other-kind patch),
#: and three directions added at the size of the other-kind patches (the mean norm of the
#: change ``patch_other`` makes at that layer): the difference of means (``diff_means``), a
#: seeded random direction (``random``) and the label-shuffled difference (``shuffled``)
KIND_CONDITIONS = ("patch_other", "patch_same", "mean_patch", "diff_means", "random", "shuffled")


class Batched:
    """A kind-patching plan's journal key and item batches (its ``config``, ``items`` and
    ``batch_size``)."""

    config: dict[str, Any]
    items: list[Item]
    batch_size: int

    @property
    def key(self) -> str:
        """The journal key: :func:`config_key` of the config."""
        return config_key(self.config)

    @property
    def starts(self) -> list[int]:
        """The first item of each batch."""
        return list(range(0, len(self.items), self.batch_size))


@dataclass
class KindPlan(Batched):
    """What :func:`kind_patching` computes, prepared once: the target items in batches, the
    source prompts and their activations, each item's source per patch condition, the
    directions at their sizes, and the journal key (model, dtype, items, layers, sources,
    batching: the same key means the same cells)."""

    model: Model
    backend: BackendName
    target: str
    kind: str
    items: list[Item]
    layers: list[int]
    chat: bool
    batch_size: int
    seed: int
    source: str
    src_q: dict[str, list[str]]
    pick: dict[str, torch.Tensor]
    source_acts: dict[str, Activations]
    vectors: dict[str, dict[int, torch.Tensor]]
    site: Site
    config: dict[str, Any]



def _inputs(model: Model, target: str, layers: Sequence[int] | int | None, n: int | None,
            seed: int, source: str, n_source: int | None, backend: BackendName, batch_size: int,
            chat: bool | None) -> tuple[dict[str, Any], list[Item], list[str], list[str]]:
    """The run's config (see :func:`kind_config`), its target items and its reasoning and
    memorisation source prompts, every argument checked before anything runs."""
    if target not in KIND_TARGETS:
        raise OptionError(f"Unknown target {target!r}: kind_patching targets one of "
                          f"{list(KIND_TARGETS)} (a shipped multiple-choice set of one kind).")
    use_layers = check_layers(model, layers)
    if batch_size < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}.")
    items = get_task(target).items(n, seed)
    if not items:
        raise EmptyInputError(f"No items to evaluate for task {target}.")
    reason_q, memo_q = extraction_prompts(source, n_source)
    check_disjoint(reason_q + memo_q, items)
    config = {"model": model.hf_id, "dtype": dtype_name(model.dtype), "target": target,
              "n": n, "items": [it.id for it in items], "layers": use_layers, "seed": seed,
              "source": source, "n_source": [len(reason_q), len(memo_q)],
              "chat": model.uses_chat(chat), "batch_size": batch_size, "backend": backend}
    return config, list(items), reason_q, memo_q


def kind_config(model: Model, target: str = "memorisation-mc",
                layers: Sequence[int] | int | None = None, n: int | None = None, seed: int = 0,
                source: str = "shipped", n_source: int | None = None, backend: BackendName = "hf",
                batch_size: int = 16, chat: bool | None = None) -> dict[str, Any]:
    """What identifies a :func:`kind_patching` run (same arguments), checked, before anything
    runs: model, dtype, target, item ids, layers, seed, source and its sizes, chat, batching,
    backend. Its hash is the journal key."""
    return _inputs(model, target, layers, n, seed, source, n_source, backend, batch_size,
                   chat)[0]


def config_key(config: dict[str, Any]) -> str:
    """The journal key of a run's config (:func:`kind_config` and the like): a hash of it."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def journal_dtype(out: str | Path, config: dict[str, Any]) -> str | None:
    """The dtype of the journal ``out``'s rows whose ``config`` is ``config`` but for its
    dtype (the run recorded in another dtype than the model's now), or None."""
    want = {k: v for k, v in config.items() if k != "dtype"}
    for row in _io.read_jsonl(out):
        if {k: v for k, v in row.get("config", {}).items() if k != "dtype"} == want:
            return str(row["config"]["dtype"])
    return None


def recorded_dtype(model: Model, out: str | Path, **kwargs: Any) -> str | None:
    """The dtype the journal ``out`` recorded the :func:`kind_patching` run ``kwargs`` in
    (whatever ``model``'s own dtype), or None when it holds no batch of that run."""
    return journal_dtype(out, kind_config(model, **kwargs))


def plan_kind_patching(model: Model, target: str = "memorisation-mc",
                       layers: Sequence[int] | int | None = None, n: int | None = None,
                       seed: int = 0, source: str = "shipped", n_source: int | None = None,
                       backend: BackendName = "hf", batch_size: int = 16,
                       chat: bool | None = None) -> KindPlan:
    """The :class:`KindPlan` of :func:`kind_patching` (same arguments): items, sources and
    their activations, the directions; the input checked before anything runs."""
    config, items, reason_q, memo_q = _inputs(model, target, layers, n, seed, source,
                                              n_source, backend, batch_size, chat)
    use_layers, chat_ = config["layers"], config["chat"]
    kind = KIND_TARGETS[target]
    other_q, same_q = (reason_q, memo_q) if kind == "memorisation" else (memo_q, reason_q)
    # the sources in the targets' own format, so the patched state is read where it is written
    with torch.no_grad():
        other = cache_activations(model, [cloze_prompt(q, chat_) for q in other_q], use_layers,
                                  chat=chat_, backend=backend, progress=False)
        same = cache_activations(model, [cloze_prompt(q, chat_) for q in same_q], use_layers,
                                 chat=chat_, backend=backend, progress=False)
        own = cache_activations(model, [cloze_prompt(it, chat_) for it in items], use_layers,
                                chat=chat_, backend=backend, progress=False)
    rng = np.random.default_rng(seed)
    pick = {"patch_other": torch.from_numpy(rng.permutation(len(items)) % len(other_q)),
            "patch_same": torch.from_numpy(rng.permutation(len(items)) % len(same_q))}
    mean = diff_of_means(other, same)
    directions = {"diff_means": mean, "random": random_like(mean, seed=seed),
                  "shuffled": shuffled_diff_of_means(other, same, seed=seed)}
    vectors: dict[str, dict[int, torch.Tensor]] = {"mean_patch": dict(mean.vectors)}
    for layer in use_layers:  # the size of an other-kind patch at this layer
        size = (other.at(layer)[pick["patch_other"]].float() - own.at(layer).float()
                ).norm(dim=-1).mean()
        for name, vec in directions.items():
            v = vec[layer].float()
            vectors.setdefault(name, {})[layer] = unit(v) * size
    return KindPlan(model, backend, target, kind, items, use_layers, chat_, batch_size, seed,
                    source, {"patch_other": other_q, "patch_same": same_q}, pick,
                    {"patch_other": other, "patch_same": same}, vectors, other.site, config)


def kind_cells(plan: KindPlan, start: int, cells: Sequence[tuple[int, str]],
               base: bool = True) -> dict[str, dict[str, list[Any]]]:
    """The batch of ``plan``'s items that begins at item ``start``: the unsteered run (when
    ``base``) and each (layer, condition) of ``cells``. Returns, per ``"base"`` and per
    ``"<layer>:<condition>"``, each item's chosen option (its index), whether it is correct,
    and (cells) the norm of the change the edit made (the mean over the item's option rows).
    Cells of one layer share the blocks before it (recorded once, replayed per condition)."""
    model, be = plan.model, plan.model.backend(plan.backend)
    batch = plan.items[start:start + plan.batch_size]
    out: dict[str, dict[str, list[Any]]] = {}
    with torch.no_grad():
        mc = mc_batch(model, batch, "cloze", plan.chat)

        def scored(logits: torch.Tensor) -> dict[str, list[Any]]:
            chosen, correct = mc.choose(logits)
            return {"chosen": [it.options.index(c) for it, c in zip(batch, chosen, strict=True)],
                    "correct": correct}

        if base:
            out["base"] = scored(be.forward(mc.enc, keep=mc.keep))
        item_idx = mc.row_item + start  # each row's item in ``plan.items``
        prefix = engine.Prefix(be, mc.enc)
        for layer in sorted({l for l, _ in cells}):
            prefix.reach(layer)  # blocks 0..layer run once for all conditions (from the last)
            for cond in [c for l, c in cells if l == layer]:
                if cond in plan.pick:
                    vals = plan.source_acts[cond].at(layer)[plan.pick[cond][item_idx]]
                    replace = True
                else:
                    vals = plan.vectors[cond][layer].expand(len(item_idx), -1)
                    replace = False
                fn, sizes = _last_token_edit(vals, mc.prompt_last, replace)
                with be.add_edits([(layer, fn, {"site": plan.site,
                                                "receipt": Receipt("patched")})]):
                    logits = prefix.forward(keep=mc.keep)
                # one size per item: the mean over its option rows
                per_row = torch.tensor(sizes, dtype=torch.float64)
                total = torch.zeros(len(batch), dtype=torch.float64).index_add_(
                    0, mc.row_item, per_row)
                count = torch.bincount(mc.row_item, minlength=len(batch))
                out[cell_name(layer, cond)] = {**scored(logits),
                                               "norm": (total / count).cpu().tolist()}
    return out


def cell_name(layer: int, condition: str) -> str:
    """The journal name of one kind-patching cell."""
    return f"{layer}:{condition}"


def recorded_batches(key: str, out: str | Path) -> dict[int, dict[str, Any]]:
    """The batches of the run ``key`` that the journal ``out`` holds, by first item."""
    return {r["start"]: r for r in _io.read_jsonl(out) if r.get("key") == key}


def kind_patching(model: Model, target: str = "memorisation-mc",
                  layers: Sequence[int] | int | None = None, n: int | None = None,
                  seed: int = 0, source: str = "shipped", n_source: int | None = None,
                  backend: BackendName = "hf", batch_size: int = 16, chat: bool | None = None,
                  progress: bool | None = None, out: str | Path | None = None) -> pd.DataFrame:
    """The seed replication's missing controls: reasoning-prompt activations patched into
    memorisation prompts (``target="memorisation-mc"``), or memorisation activations into
    reasoning prompts (``"reasoning-mc"``), layer by layer, against difference-of-means
    steering at the same layer and the random and shuffled controls.

    Every condition edits the same place: the residual stream after block ``layer`` at the
    target prompt's last token (where the vectors are extracted), before the options are
    scored (cloze: mean log-probability of each option's text after the question). Each target
    item is paired with a source prompt of the extraction split (seeded); ``patch_other``
    writes the other kind's activation there, ``patch_same`` another prompt of the target's
    own kind (so "any swap of the prompt's state" is separated from "a swap towards the other
    kind"), ``mean_patch`` adds mean(other) - mean(same) of those source activations (what
    the other-kind patches change on average), and ``diff_means`` / ``random`` / ``shuffled``
    add that direction, a seeded random one or the label-permuted difference, each scaled to
    the mean norm of the change the ``patch_other`` patches make at that layer (so they are
    edits as large as a patch, differing from each other in direction only).

    ``out``: a JSONL journal. Each batch's results are appended as it finishes, under the
    key of the run (model, dtype, items, layers, sources, batching); batches it holds are
    read back, not computed, so a killed run resumes where it stopped and a recorded run is
    read back whole (:func:`steerlab.recordings_controls.recorded_kind_patching` reads it in
    its own dtype and spot-checks it).

    Returns:
        One row per (layer, condition): target, source_kind, condition, layer, the
        :data:`~steerlab.stats.COMPARISON_COLUMNS` against the unsteered run on the same items
        (paired bootstrap interval, McNemar p), ``edit_norm`` (mean over items of the norm of
        the change the edit made to the residual) and ``correct`` (per-item outcomes, for
        comparisons between conditions). ``.attrs``: model, dtype, target, n, chance,
        unsteered accuracy (with its interval), source, seed, item ids, the journal key, and
        per patch condition the source prompt each item got (``sources``).
    """
    plan = plan_kind_patching(model, target, layers, n, seed, source, n_source, backend,
                              batch_size, chat)
    return run_kind_patching(plan, progress, out)


def run_kind_patching(plan: KindPlan, progress: bool | None = None,
                      out: str | Path | None = None) -> pd.DataFrame:
    """:func:`kind_patching` of a prepared :class:`KindPlan` (the same table)."""
    model, target, seed = plan.model, plan.target, plan.seed
    cells = [(l, c) for l in plan.layers for c in KIND_CONDITIONS]
    done = recorded_batches(plan.key, out) if out is not None else {}
    todo = [s for s in plan.starts if s not in done]
    show = progress if progress is not None else len(todo) * len(plan.layers) > 4
    results = dict(done)
    for start in tqdm(todo, desc=f"kind patching {target}", disable=not show, leave=False):
        row = {"key": plan.key, "config": plan.config, "start": start,
               **kind_cells(plan, start, cells)}
        if out is not None:
            _io.append_jsonl(out, row)
        results[start] = row
    batches = [results[s] for s in plan.starts]
    base_correct = [c for b in batches for c in b["base"]["correct"]]
    rows = []
    for layer, cond in cells:
        name = cell_name(layer, cond)
        got = np.array([c for b in batches for c in b[name]["correct"]], dtype=bool)
        norm = [x for b in batches for x in b[name]["norm"]]
        rows.append({"target": target, "source_kind": "memorisation"
                     if plan.kind == "reasoning" else "reasoning", "condition": cond,
                     "layer": layer, **comparison_row(base_correct, got, seed=seed),
                     "edit_norm": float(np.mean(norm)),
                     "correct": got.tolist()})  # cpu: a numpy array
    frame = pd.DataFrame(rows)
    task = get_task(target)
    base = accuracy(base_correct)
    frame.attrs.update({"model": model.hf_id, "dtype": plan.config["dtype"], "target": target,
                        "n": len(plan.items), "chance": task.chance(plan.items),
                        "unsteered": [base.acc, base.lo, base.hi], "source": plan.source,
                        "seed": seed, "chat": plan.chat,
                        "n_source": [len(plan.src_q[c]) for c in ("patch_other", "patch_same")],
                        "item_ids": [it.id for it in plan.items], "key": plan.key,
                        "sources": {c: [plan.src_q[c][int(j)] for j in plan.pick[c]]
                                    for c in plan.pick}})
    return frame


def _last_token_edit(vals: torch.Tensor, last: torch.Tensor, replace: bool
                     ) -> tuple[Callable[[torch.Tensor], torch.Tensor], list[float]]:
    """An edit writing (``replace``) or adding ``vals[r]`` at position ``last[r]`` of each row
    r, and the list it appends the norm of each row's change to."""
    sizes: list[float] = []

    def fn(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()
        rows = torch.arange(h.shape[0], device=h.device)
        pos = last.to(h.device)
        v = vals.to(device=h.device, dtype=h.dtype)
        new = v if replace else h[rows, pos] + v
        sizes.extend((new.float() - h[rows, pos].float()).norm(dim=-1).cpu().tolist())
        h[rows, pos] = new
        return h

    return fn, sizes


def kind_patching_summary(frame: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per layer of a :func:`kind_patching` frame, the comparisons that say what it shows:
    ``patch_other`` vs ``patch_same`` (does the other kind's state do more than any other
    prompt's?), ``patch_other`` vs ``diff_means`` (does a patch do more than an edit of its
    size along the mean direction?) and ``diff_means`` vs ``random`` and vs ``shuffled`` (is
    the mean direction special at that size?), each a paired difference on the same items
    with its 95% bootstrap interval and McNemar p (:func:`steerlab.stats.comparison_row`;
    ``delta`` = first minus second)."""

    rows = []
    for layer, g in frame.groupby("layer", sort=True):
        by = {str(r.condition): np.array(r.correct) for r in g.itertuples()}
        for a, b in (("patch_other", "patch_same"), ("patch_other", "diff_means"),
                     ("diff_means", "random"), ("diff_means", "shuffled")):
            row = comparison_row(by[b], by[a], seed=seed)
            rows.append({"layer": int(layer), "comparison": f"{a} - {b}",
                         "delta": row["delta"], "delta_low": row["delta_low"],
                         "delta_high": row["delta_high"], "p_mcnemar": row["p_mcnemar"]})
    return pd.DataFrame(rows)


def kind_patching_verdict(frame: pd.DataFrame, seed: int = 0) -> str:
    """Plain-words lines for a :func:`kind_patching` frame: per condition, at how many layers
    the paired 95% interval of the change excludes zero (and the largest change), then the
    between-condition comparisons of :func:`kind_patching_summary` that exclude zero."""
    a = frame.attrs
    lines = [f"{a['model']} on {a['target']}: unsteered {a['unsteered'][0]:.3f} "
             f"[{a['unsteered'][1]:.3f}, {a['unsteered'][2]:.3f}] (n={a['n']}, chance "
             f"{a['chance']:.2f}); {frame['source_kind'].iloc[0]} states written in"]
    n_layers = frame["layer"].nunique()
    for cond, g in frame.groupby("condition", sort=False):
        side = interval_side(g["delta_low"], g["delta_high"])
        down, up = int((side < 0).sum()), int((side > 0).sum())
        big = g.loc[g["delta"].abs().idxmax()]
        lines.append(f"  {cond:11s} significantly down at {down}, up at {up} of {n_layers} "
                     f"layers; largest change {big.delta:+.3f} [{big.delta_low:+.3f}, "
                     f"{big.delta_high:+.3f}] at layer {int(big.layer)} (edit norm "
                     f"{big.edit_norm:.1f})")
    summary = kind_patching_summary(frame, seed=seed)
    for comp, g in summary.groupby("comparison", sort=False):
        sig = g[interval_side(g["delta_low"], g["delta_high"]) != 0]
        where = ", ".join(f"layer {int(r.layer)}: {r.delta:+.3f} [{r.delta_low:+.3f}, "
                          f"{r.delta_high:+.3f}]" for r in sig.itertuples()) or "none"
        lines.append(f"  {comp}: interval excludes 0 at {len(sig)} of {n_layers} layers "
                     f"({where})")
    return "\n".join(lines)
