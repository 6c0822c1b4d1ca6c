"""The seed models' sizes on whatever device is here, side by side in one run.

For each seed size (steerlab.sizes: random weights, the real architecture) that fits on the
device: forward tokens/s; caching every layer vs a plain forward; steering overhead (forward
and greedy generation); one layer's sweep cells (shared prefix) vs one steered evaluation per
cell; a ``resid_pre`` patching map (every layer x position); one training step of learned
vectors vs LoRA vs full fine-tuning (seconds, peak RSS, peak GPU memory). On a CPU only the 1B
size runs; ``--quick`` keeps its widths and vocabulary but only 4 of its 16 layers, and fewer
tokens.

Timings are the best of interleaved repeats (a b a b ...), the clock stopped after the GPU's
queued kernels finished.

Usage: python bench/gpu.py [--quick] [--device auto] [--sizes llama-3.2-1b,...] [--repeats N]
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from _common import env_setup, interleaved, machine, peak_rss_mib, record, table

from steerlab.cache import cache_activations
from steerlab.cells import evaluate_cells
from steerlab.cost import training_step_costs
from steerlab.devices import (
    default_dtype,
    peak_gpu_bytes,
    reset_peak_gpu,
    resolve_device,
    synchronize,
)
from steerlab.evaluation import evaluate
from steerlab.metrics import logit_diff
from steerlab.patching import activation_patching
from steerlab.sizes import SIZES, n_params, random_model
from steerlab.steering import steer
from steerlab.tasks import get_task

PART = "gpu"
#: full fine-tuning on a CPU is skipped above this estimated memory (weights, a trainable
#: copy, gradients and two AdamW moments: 5 copies of the weights)
CPU_FULL_LIMIT = 12 * 2**30


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return "Apple MPS" if dev.type == "mps" else "CPU"


def fits(size: str, dev: torch.device, dtype: torch.dtype) -> bool:
    """Room for the weights, a trainable copy and some activations."""
    need = 2.5 * n_params(size) * torch.empty(0, dtype=dtype).element_size()
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return need < free
    return size == "llama-3.2-1b"  # the CPU machines here: the smallest seed size only


def _prompts(n: int, chars: int, seed: int = 0) -> list[str]:
    """``n`` prompts of exactly ``chars`` characters = tokens (the random models' character
    tokenizer)."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz      "
    return ["".join(rng.choice(letters) for _ in range(chars - 1)) + "." for _ in range(n)]


def _synced(fn, dev: torch.device):
    def run():
        fn()
        synchronize(dev)
    return run


@torch.no_grad()
def bench_inference(model, size: str, dev: torch.device, prompts: list[str], repeats: int,
                    new_tokens: int, out: list[list]) -> None:
    be = model.backend("hf")
    enc = model.encode(prompts)
    tokens = int(enc["attention_mask"].sum())
    layer = model.n_layers // 2
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))

    def fwd():
        be.forward(enc, keep=1)  # next-token logits: what scoring and caching callers need

    def cache_all():
        cache_activations(model, prompts, batch_size=len(prompts), chat=False, progress=False)

    def steered(fn):
        def run():
            with steer(model, vec, layers=layer, coeff=1.0):
                fn()
        return run

    gen_kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "temperature": None, "top_k": None, "top_p": None,
              "pad_token_id": model.tokenizer.pad_token_id}

    def gen():
        be.generate(enc, **gen_kw)

    reset_peak_gpu(dev)
    best = interleaved({k: _synced(f, dev) for k, f in
                        {"plain": fwd, "cache": cache_all, "steered": steered(fwd)}.items()},
                       repeats)
    peak = peak_gpu_bytes(dev)
    common = {"size": size, "device": device_name(dev), "dtype": str(model.dtype)[6:],
              "layers": model.n_layers, "batch": len(prompts), "tokens": tokens}
    record(PART, figure="forward_tok_s", value=tokens / best["plain"], seconds=best["plain"],
           peak_gpu_bytes=peak, **common)
    ratio = best["plain"] / best["cache"]
    record(PART, figure="caching_ratio", value=ratio, seconds=best["cache"], **common)
    over = best["steered"] / best["plain"] - 1
    record(PART, figure="steering_overhead", what="forward", value=over, **common)
    g = interleaved({"plain": _synced(gen, dev), "steered": _synced(steered(gen), dev)},
                    max(1, repeats - 1))
    gover = g["steered"] / g["plain"] - 1
    record(PART, figure="steering_overhead", what=f"generate {new_tokens} tokens", value=gover,
           tok_s_plain=new_tokens * len(prompts) / g["plain"], **common)
    out += [[size, "forward (plain)", best["plain"], tokens / best["plain"], "-"],
            [size, f"cache all {model.n_layers} layers", best["cache"], tokens / best["cache"],
             f"plain/cache {ratio:.2f}"],
            [size, "steered forward", best["steered"], tokens / best["steered"],
             f"overhead {over:+.1%}"],
            [size, f"generate {new_tokens} tokens", g["plain"],
             new_tokens * len(prompts) / g["plain"], "-"],
            [size, f"steered generate {new_tokens}", g["steered"],
             new_tokens * len(prompts) / g["steered"], f"overhead {gover:+.1%}"]]


def bench_training(model, size: str, dev: torch.device, prompts: list[str],
                   out: list[list]) -> None:
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    for method in ("vectors", "lora", "full"):
        if method == "full" and dev.type == "cpu" and 5 * weights > CPU_FULL_LIMIT:
            print(f"[{size}: full fine-tuning skipped on the CPU: needs ~{5 * weights / 2**30:.0f}"
                  f" GiB (weights, a trainable copy, gradients, two AdamW moments), over the "
                  f"{CPU_FULL_LIMIT / 2**30:.0f} GiB limit]")
            record(PART, figure="train_step_skipped", size=size, method=method,
                   device=device_name(dev), reason=f"~{5 * weights / 2**30:.1f} GiB > "
                   f"{CPU_FULL_LIMIT / 2**30:.0f} GiB on a CPU")
            out.append([size, "train step, full", float("nan"), float("nan"), "skipped (memory)"])
            continue
        c = training_step_costs(model, prompts, method, steps=1, chat=False)
        record(PART, figure="train_step_seconds", size=size, method=method,
               device=device_name(dev), dtype=str(model.dtype)[6:], layers=model.n_layers,
               value=c["seconds_per_step"], trainable_params=c["trainable_params"],
               peak_rss_bytes=c["peak_rss_bytes"], peak_gpu_bytes=c["peak_gpu_bytes"],
               tokens=c["tokens_per_step"])
        gpu = "" if c["peak_gpu_bytes"] is None else f", GPU {c['peak_gpu_bytes'] / 2**30:.1f} GiB"
        out.append([size, f"train step, {method}", c["seconds_per_step"],
                    c["tokens_per_step"] / c["seconds_per_step"],
                    f"RSS {c['peak_rss_bytes'] / 2**30:.1f} GiB{gpu}, "
                    f"{c['trainable_params']:,} trained"])


@torch.no_grad()
def bench_sweep_and_patching(model, size: str, dev: torch.device, prompts: list[str],
                             repeats: int, out: list[list]) -> None:
    """A sweep's cells at one layer (2 vectors, cloze-scored multiple choice, items of the
    shipped recall set) decoded the fast way vs one steered evaluation each; and a full
    ``resid_pre`` patching map between pairs of prompts that differ in one character."""
    task, layer = get_task("memorisation-mc"), model.n_layers // 2
    items = task.items(len(prompts), 0)
    gen = torch.Generator().manual_seed(1)
    vecs = [torch.randn(model.d_model, generator=gen).to(dev) for _ in range(2)]
    kw = {"items": items, "chat": False, "scoring": "cloze", "batch_size": len(items),
          "progress": False}

    got: dict[str, list] = {}  # each side's predictions, to check they are the same

    def naive():
        got["naive"] = []
        for v in vecs:
            with steer(model, v, layers=layer, coeff=1.0):
                got["naive"].append(evaluate(model, task, **kw).predictions)

    def fast():
        got["fast"] = [r.predictions for r in evaluate_cells(model, task, layer, vecs, **kw)]

    corrupted = [p[:-2] + ("x" if p[-2] != "x" else "y") + p[-1] for p in prompts]
    metric = logit_diff(model, ["a"] * len(prompts), ["b"] * len(prompts), normalise=False)

    def patch_map():
        activation_patching(model, prompts, corrupted, metric, site="resid_pre",
                            batch_cells=32, progress=False, chat=False)

    reset_peak_gpu(dev)
    best = interleaved({k: _synced(f, dev) for k, f in
                        {"naive": naive, "fast": fast, "patch": patch_map}.items()}, repeats)
    common = {"size": size, "device": device_name(dev), "dtype": str(model.dtype)[6:],
              "layers": model.n_layers, "items": len(items), "cells": len(vecs)}
    ratio = best["naive"] / best["fast"]
    same = got["naive"] == got["fast"]
    record(PART, figure="sweep_cells_speedup", value=ratio, seconds=best["fast"],
           naive_seconds=best["naive"], identical=same, **common)
    record(PART, figure="patching_map_seconds", value=best["patch"],
           cells=model.n_layers * len(model.encode(prompts[:1])["input_ids"][0]) * len(prompts),
           peak_gpu_bytes=peak_gpu_bytes(dev), **{k: v for k, v in common.items()
                                                  if k != "cells"})
    out += [[size, f"sweep: {len(vecs)} cells at layer {layer}, one pass each", best["naive"],
             "-", "-"],
            [size, f"sweep: the {len(vecs)} cells sharing the prefix", best["fast"], "-",
             f"naive/fast {ratio:.2f}, {'same' if same else 'DIFFERENT'} answers"],
            [size, f"patching map, resid_pre x {model.n_layers} layers", best["patch"], "-",
             "-"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--no-training", action="store_true")
    p.add_argument("--repeats", type=int, default=None, help="default: 2 quick, 3 otherwise")
    args = p.parse_args()
    env_setup()
    dev = resolve_device(args.device)
    on_cpu = dev.type == "cpu"
    batch, chars = (4, 32) if args.quick else (8, 128) if on_cpu else (16, 512)
    repeats = args.repeats or (2 if args.quick else 3)
    new_tokens = 4 if args.quick else 8 if on_cpu else 32
    print(f"== seed sizes on {device_name(dev)} ({dev}; {machine()})")
    rows: list[list] = []
    for size in args.sizes.split(","):
        shrink = {"num_hidden_layers": 4} if args.quick else {}
        if not fits(size, dev, default_dtype(dev)):
            print(f"[{size}: does not fit on {dev}, skipped]")
            continue
        model = random_model(size, device=dev, **shrink)
        t0 = time.perf_counter()
        prompts = _prompts(batch, chars)
        bench_inference(model, size, dev, prompts, repeats, new_tokens, rows)
        bench_sweep_and_patching(model, size, dev, prompts, repeats, rows)
        if not args.no_training:
            bench_training(model, size, dev, prompts[: max(2, batch // 2)], rows)
        print(f"[{size}: {time.perf_counter() - t0:.0f} s, peak RSS {peak_rss_mib():,.0f} MiB]")
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    quick = "quick: the first 4 layers of each size, " if args.quick else ""
    print(f"\n-- {quick}batch {batch} x "
          f"{chars} tokens, random weights, default dtype, best of {repeats} interleaved")
    print(table(["size", "what", "seconds", "tok/s", "ratio / memory"], rows))


if __name__ == "__main__":
    main()
