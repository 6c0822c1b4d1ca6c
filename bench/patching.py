"""Activation patching speed: a full ``resid_pre`` layer x position denoising map done by
steerlab's ``activation_patching`` vs TransformerLens' ``patching.get_act_patch_resid_pre``,
same model, weights, dtype, prompts and metric, side by side in one run. Checks that the two
maps are the same numbers (max abs difference). Goal: steerlab >= 3x faster, same numbers.

What each side does (both timed from the prompts to the finished map):
* steerlab: ``activation_patching(model, clean, corrupted, logit_diff(...), site="resid_pre")``
  on the ``hf`` backend: caches the clean run, scores the clean and corrupted runs, fills in
  the cells before each pair's first differing token with the unpatched run's value (both
  runs are identical there in a causal model: here the 14 shared tokens before the country,
  so only 5 of 19 positions are patched for real), then patches ``batch_cells``
  (layer, position, pair) cells per forward, running the blocks before each layer once for
  all of its cells. The printout and the rows say how many cells were patched for real.
* TransformerLens: on steerlab's TransformerLens bridge of the same weights
  (``model.backend("tlens").bridge``): ``run_with_cache`` of the clean tokens, the clean and
  corrupted logits for the normaliser, then ``get_act_patch_resid_pre(bridge,
  corrupted_tokens, clean_cache, metric)``: one full forward of the whole corrupted batch
  per (layer, position).
The metric is the logit difference (first token of the pair's right answer minus the first
token of the corrupted prompt's answer) at the last token, mean over pairs, normalised so the
clean run scores 1 and the corrupted run 0; steerlab's ``logit_diff`` on its side, the same
formula written as a function of TransformerLens' logits on the other (TransformerLens reads
``logits[:, -1]``, so every prompt has the same token length; asserted).

Prompts: 16 factual-recall pairs, "Here is a simple geography fact that everyone knows: the
capital city of France is the city of" (19 tokens) against the same with the next country of
the list (every country one token); all 30 layers x 19 positions. ``--quick``: 4 pairs of a
short prompt (TransformerLens' function always patches every layer), a smoke run.

Timing: one warm-up of each side on a tiny prompt (2 pairs, 2 tokens), then ONE timed run of
each (the TransformerLens map takes minutes on a CPU; a best-of would multiply that), both
under ``torch.no_grad()``. steerlab runs with ``batch_cells=64`` (BATCH_CELLS: the fastest of
16/32/64 in an exploration on a busy machine). ``--explore`` first times steerlab alone at
16, 32 and 64 on the same setting, and ``fast=False`` (every cell patched, whole forwards) to
show how much of the speed-up is skipped cells and shared prefixes (rows marked
``explore``); the recorded run then uses the fastest of the three, unless ``--batch-cells``.
"Same numbers": max |difference| <= 0.02 on the normalised scale (bf16 rounding).

Usage: python bench/patching.py [--quick] [--explore] [--batch-cells N] [--model NAME]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import env_setup, machine, record, table

from steerlab.metrics import logit_diff
from steerlab.models import Model, load_model
from steerlab.patching import activation_patching

PART = "patching"
GOAL = 3.0
#: rows per forward for steerlab: the fastest of 16/32/64 in an exploration like ``--explore``
#: (full setting, SmolLM2 bf16, a 2-core Xeon shared with other jobs: 64 rows 38 s, 32 rows
#: 45 s, 16 rows 47 s, before cells ahead of the first differing token were skipped; later
#: runs there were dominated by the other jobs, so ``--explore`` re-picks it where measured)
BATCH_CELLS = 64
#: the most |steerlab - TransformerLens| may differ on the normalised scale (clean 1,
#: corrupted 0) to count as the same numbers: bf16 forwards of different batch shapes round
#: differently (in fp32 they agree within 2e-4, tests/test_patching.py)
SAME_TOL = 0.02

#: country -> capital (each country a single token with its leading space, each capital's
#: first token distinct); SmolLM2-135M ranks every capital's first token first in TEMPLATE
CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid",
            "Japan": "Tokyo", "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo",
            "Greece": "Athens", "Canada": "Ottawa", "Poland": "Warsaw", "Norway": "Oslo",
            "Sweden": "Stockholm", "Austria": "Vienna", "Ireland": "Dublin",
            "Portugal": "Lisbon"}
TEMPLATE = ("Here is a simple geography fact that everyone knows: the capital city of {} is "
            "the city of")
QUICK_TEMPLATE = "The capital of {} is"


def prompt_pairs(model: Model, n_pairs: int, template: str
                 ) -> tuple[list[str], list[str], list[str], list[str], int]:
    """Pair i: country i (clean) vs country i+1 (corrupted), answers their capitals. Returns
    clean, corrupted, right answers, corrupted answers and the (common) token length."""
    countries = list(CAPITALS)[:n_pairs]
    other = countries[1:] + countries[:1]
    clean = [template.format(c) for c in countries]
    corrupted = [template.format(c) for c in other]
    good = [CAPITALS[c] for c in countries]
    bad = [CAPITALS[c] for c in other]
    lengths = set(model.encode(clean + corrupted)["attention_mask"].sum(1).tolist())
    assert len(lengths) == 1, f"prompts of different token lengths: {sorted(lengths)}"
    first = [model.tokenizer.encode(" " + a, add_special_tokens=False)[0] for a in good]
    assert len(set(first)) == len(first), "two right answers share their first token"
    return clean, corrupted, good, bad, lengths.pop()


def patched_cells(model: Model, clean: list[str], corrupted: list[str]) -> int:
    """(layer, position, pair) cells steerlab patches for real: those at or after the pair's
    first differing token (the earlier ones are the same in both runs)."""
    a = model.encode(clean, padding_side="right")["input_ids"]
    b = model.encode(corrupted, padding_side="right")["input_ids"]
    differ = (a != b).int()
    first = torch.where(differ.any(1), differ.argmax(1), torch.tensor(a.shape[1]))
    return model.n_layers * int((a.shape[1] - first).sum())


def steerlab_map(model: Model, clean: list[str], corrupted: list[str], good: list[str],
                 bad: list[str], batch_cells: int, fast: bool = True):
    return activation_patching(model, clean, corrupted, logit_diff(model, good, bad),
                               site="resid_pre", batch_cells=batch_cells, progress=False,
                               fast=fast, chat=False)


def tlens_map(model: Model, clean: list[str], corrupted: list[str], good: list[str],
              bad: list[str]) -> torch.Tensor:
    """TransformerLens' own patching on its bridge of the same weights: [layer, pos]."""
    from transformer_lens import patching

    br = model.backend("tlens").bridge
    ids = [model.tokenizer.encode(" " + a, add_special_tokens=False)[0] for a in good + bad]
    right, wrong = torch.tensor(ids[:len(good)]), torch.tensor(ids[len(good):])
    rows = torch.arange(len(good))
    clean_tokens = model.encode(clean, padding_side="right")["input_ids"]
    corrupted_tokens = model.encode(corrupted, padding_side="right")["input_ids"]

    def ld(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1].float()
        return (last[rows, right] - last[rows, wrong]).mean()

    with torch.no_grad():
        clean_logits, clean_cache = br.run_with_cache(clean_tokens)
        clean_ld = ld(clean_logits)
        corrupted_ld = ld(br(corrupted_tokens, return_type="logits"))

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (ld(logits) - corrupted_ld) / (clean_ld - corrupted_ld)

    with torch.no_grad():
        return patching.get_act_patch_resid_pre(br, corrupted_tokens, clean_cache, metric)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 pairs of a 5-token prompt")
    p.add_argument("--explore", action="store_true",
                   help="first time steerlab alone at batch_cells 16, 32, 64 and fast=False; "
                        "then record with the fastest batch_cells")
    p.add_argument("--batch-cells", type=int, default=None,
                   help=f"steerlab's rows per forward (default {BATCH_CELLS})")
    p.add_argument("--model", default="smollm2-135m-instruct")
    args = p.parse_args()
    env_setup()
    model = load_model(args.model)
    dtype = str(model.dtype)[6:]
    n_pairs, template = (4, QUICK_TEMPLATE) if args.quick else (len(CAPITALS), TEMPLATE)
    clean, corrupted, good, bad, n_pos = prompt_pairs(model, n_pairs, template)
    model.backend("tlens")  # booted once, outside the timing
    n_cells = model.n_layers * n_pos * n_pairs
    n_real = patched_cells(model, clean, corrupted)
    print(f"== activation patching speed ({machine()})\n{args.model} {dtype}, resid_pre, "
          f"{model.n_layers} layers x {n_pos} positions, {n_pairs} pairs ({n_cells} "
          f"(layer, position, pair) cells; TransformerLens patches all, steerlab {n_real}: "
          f"those from the first differing token on), e.g. {clean[0]!r} -> {good[0]!r} vs "
          f"{corrupted[0]!r} -> {bad[0]!r}")
    batch_cells = args.batch_cells or BATCH_CELLS
    # warm-up of both sides on one tiny pair
    w = prompt_pairs(model, 2, "{} is")
    steerlab_map(model, *w[:4], batch_cells)
    tlens_map(model, *w[:4])
    common = {"model": args.model, "dtype": dtype, "site": "resid_pre",
              "n_layers": model.n_layers, "n_positions": n_pos, "n_pairs": n_pairs,
              "n_cells": n_cells, "quick": args.quick}
    if args.explore:
        rows, best = [], {}
        for b in (16, 32, 64, None):
            t0 = time.perf_counter()
            steerlab_map(model, clean, corrupted, good, bad, b or BATCH_CELLS, fast=b is not None)
            t = time.perf_counter() - t0
            if b is None:
                rows.append([f"fast=False (all {n_cells} cells, whole forwards, "
                             f"batch_cells={BATCH_CELLS})", t])
            else:
                best[b] = t
                rows.append([f"batch_cells={b}", t])
            record(PART, figure="patching_seconds", variant="steerlab", explore=True,
                   batch_cells=b or BATCH_CELLS, fast=b is not None, value=t, **common)
        print(table(["steerlab alone (one run each)", "seconds"], rows))
        if args.batch_cells is None:
            batch_cells = min(best, key=best.get)
            print(f"recorded run: batch_cells={batch_cells} (the fastest)")
    t0 = time.perf_counter()
    ours = steerlab_map(model, clean, corrupted, good, bad, batch_cells)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = tlens_map(model, clean, corrupted, good, bad)
    t_tl = time.perf_counter() - t0
    assert ours.tensor.shape == ref.shape == (model.n_layers, n_pos), (ours.tensor.shape,
                                                                      ref.shape)
    diff = float((ours.tensor - ref.float()).abs().max())
    span = float(ref.float().abs().max())
    speedup = t_tl / t_ours
    same = diff <= SAME_TOL
    record(PART, figure="patching_seconds", variant="steerlab", value=t_ours,
           batch_cells=batch_cells, cells_patched=n_real,
           shared_prefix=ours.meta["shared_prefix"], **common)
    record(PART, figure="patching_seconds", variant="transformer_lens", value=t_tl,
           cells_patched=n_cells, **common)
    record(PART, figure="patching_speedup", value=speedup, goal=GOAL, same=same,
           met=speedup >= GOAL and same, batch_cells=batch_cells, **common)
    record(PART, figure="patching_max_abs_diff", value=diff, max_abs_value=span, tol=SAME_TOL,
           **common)
    print(table(["resid_pre layer x position map", "seconds", "cells patched", "speed-up",
                 "max |diff|"],
                [["TransformerLens get_act_patch_resid_pre", t_tl, n_cells, 1.0, "-"],
                 [f"steerlab activation_patching (batch_cells={batch_cells})", t_ours, n_real,
                  speedup, diff]]))
    verdict = "met" if speedup >= GOAL and same else "missed"
    print(f"goal >= {GOAL}x with the same numbers: {verdict} (max |diff| {diff:.2g} <= "
          f"{SAME_TOL}? {'yes' if same else 'NO'}, on values up to {span:.2f}; unpatched raw "
          f"logit diff clean {ours.clean:.2f}, corrupted {ours.corrupted:.2f}; one timed run "
          "each after a warm-up)")


if __name__ == "__main__":
    main()
