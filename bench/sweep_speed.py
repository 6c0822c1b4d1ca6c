"""Sweep speed: a layers x coefficients x methods accuracy sweep done naively (one full
evaluation pass per cell, ``sweep(..., fast=False)``) vs steerlab's sweep (``fast=True``:
each batch runs the blocks before the steering layer once for all of that layer's cells).
Same model, items, vectors and cells; both include extracting the vectors and the baseline.
For a generative task the fast sweep decodes all of a layer's cells in one batch (a row per
item and cell) and drops rows as their answers complete. Checks that every cell's per-item
correctness is identical (goals: >= 2x multiple choice, >= 3x generative, identical).

Usage: python bench/sweep_speed.py [--quick] [--model NAME] [--task T] [--n N]
       [--layers 8,15,22] [--coeffs -0.3,0.3] [--methods diff_means,random]

The generative goal's configuration (issue 15): ``--task arithmetic --layers 8,15,22
--coeffs=-0.3,-0.15,0.15,0.3`` (3 layers x 4 coefficients x 2 methods, 100 items).
"""

from __future__ import annotations

import argparse
import time

from _common import env_setup, machine, record, table

from steerlab.models import load_model
from steerlab.sweeps import sweep
from steerlab.tasks import get_task

PART = "sweep"
GOALS = {"mc": 2.0, "gen": 3.0}  # multiple choice; generative


def layer_set(n_layers: int) -> list[int]:
    """The README's sweep layers for SmolLM2 (3, 8, 12, 16, 20, 25 of 30), scaled to depth."""
    return sorted({round(f * n_layers) for f in (0.1, 0.27, 0.4, 0.53, 0.67, 0.83)})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--task", default="memorisation-mc")
    p.add_argument("--n", type=int, default=None, help="items (default 100; 24 with --quick)")
    p.add_argument("--layers", default=None, help="default: the README sweep's, by depth")
    p.add_argument("--coeffs", default="-0.4,0.4")
    p.add_argument("--methods", default="diff_means,random")
    args = p.parse_args()
    env_setup()
    model = load_model(args.model)
    n = args.n or (24 if args.quick else 100)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else \
        layer_set(model.n_layers)
    if args.quick:
        layers = layers[1::2] or layers
    coeffs = [float(c) for c in args.coeffs.split(",")]
    methods = args.methods.split(",")
    kw = {"layers": layers, "coeffs": coeffs, "methods": methods, "n": n, "extract_n": 100,
          "progress": True}
    cells = len(layers) * len(coeffs) * len(methods)
    print(f"== sweep speed ({machine()})\n{args.model} {str(model.dtype)[6:]}, {args.task}, "
          f"{n} items, layers {layers}, coeffs {coeffs}, methods {methods}: {cells} cells")
    sweep(model, args.task, **{**kw, "layers": layers[:1], "coeffs": coeffs[:1],
                               "methods": methods[:1], "n": 8, "extract_n": 8,
                               "progress": False})  # warm-up
    t0 = time.perf_counter()
    naive = sweep(model, args.task, fast=False, **kw)
    t_naive = time.perf_counter() - t0
    t0 = time.perf_counter()
    fast = sweep(model, args.task, **kw)
    t_fast = time.perf_counter() - t0
    same = bool((naive["correct"].to_numpy() == fast["correct"].to_numpy()).all())
    # how many (cell, item) answers differ, when any do
    differ = {"differing_answers": sum(x != y for a, b in zip(naive["correct"], fast["correct"],
                                                              strict=True)
                                       for x, y in zip(a, b, strict=True)),
              "answers": int(len(naive) * n)}
    texts = {}  # generative: the decoded answers too, cell by cell
    if "completions" in naive.columns:
        texts = {"identical_text": all(list(a) == list(b) for a, b in zip(
            naive["completions"], fast["completions"], strict=True)),
                 "differing_texts": sum(x != y for a, b in zip(
                     naive["completions"], fast["completions"], strict=True)
                     for x, y in zip(a, b, strict=True))}
    moved = int((naive["correct"] != naive["correct"].iloc[0]).sum())
    speedup = t_naive / t_fast
    kind = get_task(args.task).kind
    scoring = get_task(args.task).scoring if kind == "mc" else "generate"
    goal = GOALS[kind]
    how = "shared prefix" if kind == "mc" else "cells decoded together"
    common = {"model": args.model, "task": args.task, "n": n, "layers": layers,
              "coeffs": coeffs, "methods": methods, "cells": cells, "scoring": scoring,
              "dtype": str(model.dtype)[6:]}
    record(PART, figure="sweep_seconds", variant="naive", value=t_naive, **common)
    record(PART, figure="sweep_seconds", variant="steerlab", value=t_fast, **common)
    # where the time goes: the steered cells alone (the sweeps' own per-cell seconds) and
    # the unsteered baseline; the rest of each total is the vector extraction
    parts = {f"{side}_{what}_seconds": float(t[sel(t)]["seconds"].sum())
             for side, t in (("naive", naive), ("steerlab", fast))
             for what, sel in (("cells", lambda t: t.method != "baseline"),
                               ("baseline", lambda t: t.method == "baseline"))}
    record(PART, figure="sweep_speedup", value=speedup, identical=same, goal=goal,
           met=speedup >= goal and same, cells_changed_by_steering=moved,
           cells_speedup=parts["naive_cells_seconds"] / parts["steerlab_cells_seconds"],
           **parts, **differ, **texts, **common)
    print(table(["sweep", "seconds", "s / cell", "speed-up", "same per-item correctness"],
                [["naive: one full pass per cell", t_naive, t_naive / cells, 1.0, "-"],
                 [f"steerlab sweep ({how})", t_fast, t_fast / cells, speedup,
                  "yes" if same else "NO"]]))
    verdict = "met" if speedup >= goal and same else "missed"
    print(f"steered cells alone: {parts['naive_cells_seconds']:.0f} s vs "
          f"{parts['steerlab_cells_seconds']:.0f} s "
          f"({parts['naive_cells_seconds'] / parts['steerlab_cells_seconds']:.2f}x); "
          f"baseline {parts['naive_baseline_seconds']:.0f} s / "
          f"{parts['steerlab_baseline_seconds']:.0f} s; extraction is the rest")
    if not same:
        print(f"answers that differ: {differ['differing_answers']} of {differ['answers']}")
    if texts:
        print(f"identical decoded text in every cell: {'yes' if texts['identical_text'] else 'NO'}"
              + ("" if texts["identical_text"] else
                 f" ({texts['differing_texts']} of {differ['answers']} texts differ)"))
    print(f"goal >= {goal}x with identical accuracies: {verdict}"
          f" ({moved} of {cells} cells changed some answer, so the comparison is not vacuous)")
    acc = fast[fast.method != "baseline"][["method", "layer", "coeff", "accuracy", "delta"]]
    print(acc.to_string(index=False))


if __name__ == "__main__":
    main()
