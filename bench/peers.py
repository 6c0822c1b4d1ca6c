"""Against peer libraries: the same extraction + layers x coefficients sweep done with
``steering-vectors`` and ``repeng`` (bench-only installs, bench/requirements.txt) and with
steerlab, on the same model, extraction prompts (chat template applied), evaluation items,
cells and added-vector norms. Goal: steerlab faster than both.

What each library does here:
* steerlab: ``sweep(..., methods=["diff_means"])`` (extraction, baseline, shared-prefix cells).
* steering-vectors: ``train_steering_vector`` (mean of paired differences at the last token,
  batch 16), then one evaluation pass per cell under ``SteeringVector.apply``.
* repeng: ``ControlVector.train`` (its default ``pca_diff``: first principal component of the
  paired differences, batch 16), then one evaluation pass per cell under ``ControlModel``.
Neither peer has an evaluation or sweep API, so their cells are scored by steerlab's
``evaluate`` (same scoring code for all three) with the peer's own hooks doing the steering.
Each cell adds a vector of the same norm for all three (coeff x the layer's typical residual
norm, from the steerlab run), along each library's own direction.

Usage: python bench/peers.py [--quick] [--model NAME] [--n N]
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch
from _common import env_setup, machine, record, table
from sweep_speed import layer_set

from steerlab.evaluation import evaluate
from steerlab.models import Model, load_model
from steerlab.sweeps import sweep
from steerlab.tasks import extraction_prompts, get_task

PART = "peers"


def peer_sweep(name: str, model: Model, task_name: str, items: list, cells: pd.DataFrame,
               extract: Callable[[], Any], steering: Callable[[Any, int, float], Any]
               ) -> dict[str, Any]:
    """Time a peer's extraction, the baseline and one evaluation pass per cell."""
    task = get_task(task_name)
    t0 = time.perf_counter()
    directions = extract()
    t_extract = time.perf_counter() - t0
    evaluate(model, task, items=items, progress=False)  # the baseline, as every sweep does
    acc = {}
    for row in cells.itertuples():
        unit = torch.as_tensor(np.asarray(directions[row.layer]), dtype=torch.float32)
        unit = unit / unit.norm()
        with steering(unit * float(row.added_norm) * float(np.sign(row.coeff)), row.layer,
                      row.coeff):
            acc[(row.layer, row.coeff)] = evaluate(model, task, items=items,
                                                   progress=False).accuracy.acc
    total = time.perf_counter() - t0
    return {"library": name, "extract_s": t_extract, "total_s": total, "acc": acc}


def steering_vectors_peer(model: Model, pos: list[str], neg: list[str], layers: list[int]):
    import steering_vectors as sv

    def extract():
        vec = sv.train_steering_vector(model.hf, model.tokenizer, list(zip(pos, neg,
                                                                           strict=False)),
                                       layers=layers, read_token_index=-1, batch_size=16,
                                       show_progress=False)
        return {l: vec.layer_activations[l].float() for l in layers}

    def steering(v: torch.Tensor, layer: int, coeff: float):
        one = sv.SteeringVector({layer: v.to(model.dtype)}, layer_type="decoder_block")
        return one.apply(model.hf, multiplier=1.0, min_token_index=0)

    return extract, steering


def repeng_peer(model: Model, pos: list[str], neg: list[str], layers: list[int]):
    # repeng 0.4.0 pins numpy<2 only because one annotation names np.float_ (removed in numpy
    # 2.0): alias it so the module imports; nothing it runs here uses it.
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    import contextlib

    from repeng import ControlModel, ControlVector, DatasetEntry

    def extract():
        data = [DatasetEntry(positive=p, negative=n) for p, n in zip(pos, neg, strict=False)]
        vec = ControlVector.train(model.hf, model.tokenizer, data, batch_size=16,
                                  hidden_layers=layers, method="pca_diff")
        return {l: vec.directions[l] for l in layers}

    @contextlib.contextmanager
    def steering(v: torch.Tensor, layer: int, coeff: float):
        ctrl = ControlModel(model.hf, [layer])
        try:
            ctrl.set_raw_control({layer: v.to(model.dtype)})
            yield
        finally:
            ctrl.unwrap()

    return extract, steering


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--task", default="memorisation-mc")
    p.add_argument("--n", type=int, default=None, help="items (default 100; 24 with --quick)")
    p.add_argument("--coeffs", default="-0.4,0.4")
    args = p.parse_args()
    env_setup()
    model = load_model(args.model)
    task = get_task(args.task)
    n = args.n or (24 if args.quick else 100)
    layers = layer_set(model.n_layers)
    if args.quick:
        layers = layers[1::2]
    coeffs = [float(c) for c in args.coeffs.split(",")]
    extract_n = 100
    items = task.items(n, 0)
    pos, neg = extraction_prompts(task.extract_from, extract_n)
    pos_f, neg_f = model.format(pos, True), model.format(neg, True)
    print(f"== against peer libraries ({machine()})\n{args.model} {str(model.dtype)[6:]}, "
          f"{args.task}, {n} items, {len(pos)}+{len(neg)} extraction prompts, layers {layers}, "
          f"coeffs {coeffs}: {len(layers) * len(coeffs)} cells, diff-of-means direction")
    kw = {"layers": layers, "coeffs": coeffs, "methods": ["diff_means"], "n": n,
          "extract_n": extract_n, "progress": False}
    sweep(model, task, **{**kw, "layers": layers[:1], "coeffs": coeffs[:1], "n": 8,
                           "extract_n": 8})  # warm-up
    t0 = time.perf_counter()
    ours = sweep(model, task, **kw)
    t_ours = time.perf_counter() - t0
    cells = ours[ours.method == "diff_means"]
    results = [{"library": "steerlab", "total_s": t_ours, "extract_s": float("nan"),
                "acc": {(r.layer, r.coeff): r.accuracy for r in cells.itertuples()}}]
    record(PART, figure="sweep_seconds", library="steerlab", value=t_ours, n=n, layers=layers,
           coeffs=coeffs, model=args.model, task=args.task)
    failures = {}
    for name, make in (("steering-vectors", steering_vectors_peer), ("repeng", repeng_peer)):
        try:
            extract, steering = make(model, pos_f, neg_f, layers)
            res = peer_sweep(name, model, args.task, items, cells, extract, steering)
        except Exception as err:  # noqa: BLE001 - a peer that cannot run is reported, not faked
            failures[name] = f"{type(err).__name__}: {err}".split("\n")[0][:300]
            traceback.print_exc()
            record(PART, figure="peer_failed", library=name, reason=failures[name],
                   model=args.model)
            continue
        results.append(res)
        ratio = res["total_s"] / t_ours
        record(PART, figure="sweep_seconds", library=name, value=res["total_s"],
               extract_s=res["extract_s"], n=n, layers=layers, coeffs=coeffs,
               model=args.model, task=args.task)
        record(PART, figure="peer_ratio", library=name, value=ratio, goal=1.0,
               met=ratio > 1.0, model=args.model)
    rows = []
    for r in results:
        diffs = [abs(r["acc"][k] - results[0]["acc"][k]) for k in results[0]["acc"]]
        rows.append([r["library"], r["total_s"], r["extract_s"], r["total_s"] / t_ours,
                     max(diffs)])
        if r is not results[0]:  # the README quotes it: recorded, not only printed
            record(PART, figure="max_accuracy_diff", library=r["library"], value=max(diffs),
                   cells=len(diffs), model=args.model)
    print(table(["library", "extract + sweep s", "of which extract s",
                 "time / steerlab's", "max |acc - steerlab acc|"], rows))
    for name, why in failures.items():
        print(f"{name}: could not run: {why}")
    accs = pd.DataFrame({r["library"]: pd.Series(r["acc"]) for r in results})
    print("accuracy per (layer, coeff):")
    print(accs.to_string())


if __name__ == "__main__":
    main()
