"""Overheads against plain PyTorch, measured side by side in one run.

1. Caching: caching every layer's residual stream (last token) with each backend (hf plain
   hooks, TransformerLens, nnsight) vs a plain HF forward of the same model, dtype, batches
   and padding. Ratio = plain time / caching time (goal >= 0.95).
2. Steering: a steered vs an unsteered forward (logits of a batch) and generation (greedy,
   batch of 16), same settings, hf backend (goal: overhead <= 3%).

Timings are the best of several interleaved repeats (a b a b ...).

3. ``--profile``: the steered forward under ``torch.profiler`` (which operators it adds to a
   plain forward) and its cost in this thread's CPU time with one torch thread (interleaved
   pairs; CPU time is what the work costs, whatever else the machine runs).

4. ``--receipts``: what a receipt costs (:mod:`steerlab.receipts`): a steered forward and a
   steered generation with ``receipt="off"``, ``"counts"`` (the default) and ``"detail"``, in
   this thread's CPU time with one torch thread, interleaved (off counts detail off ...);
   goals: counts <= 1% over off, detail <= 5%.

Usage: python bench/overhead.py [--quick] [--model NAME] [--dtypes bf16,fp32]
       [--only-steering] [--profile] [--receipts]
"""

from __future__ import annotations

import argparse

import torch
from _common import env_setup, extraction_sets, interleaved, machine, record, table
from foundation import plain_forward

from steerlab.cache import cache_activations
from steerlab.models import load_model
from steerlab.steering import steer

PART = "overhead"
CACHING_GOAL = 0.95
STEERING_GOAL = 0.03
RECEIPT_GOALS = {"counts": 0.01, "detail": 0.05}


def bench_caching(name: str, dtype: str, n: int, repeats: int, batch_size: int,
                  backends: list[str]) -> None:
    model = load_model(name, dtype=dtype)
    pos, neg = extraction_sets(n // 2)
    prompts = pos + neg
    tokens = sum(len(ids) for ids in model.tokenizer(model.format(prompts, True))["input_ids"])
    for b in backends:
        model.backend(b)  # built once, outside the timing
    fns = {"plain": lambda: plain_forward(model, prompts, batch_size)}
    for b in backends:
        fns[b] = lambda b=b: cache_activations(model, prompts, batch_size=batch_size, chat=True,
                                               backend=b, progress=False)
    best = interleaved(fns, repeats)
    rows = [["plain HF forward (sdpa)", tokens / best["plain"], 1.0, "-"]]
    record(PART, figure="plain_forward_tok_s", model=name, dtype=dtype,
           value=tokens / best["plain"], n_prompts=len(prompts), tokens=tokens)
    for b in backends:
        ratio = best["plain"] / best[b]
        record(PART, figure="caching_ratio", model=name, dtype=dtype, backend=b, value=ratio,
               tok_s=tokens / best[b], goal=CACHING_GOAL, met=ratio >= CACHING_GOAL)
        rows.append([f"cache all {model.n_layers} layers, {b}", tokens / best[b], ratio,
                     "yes" if ratio >= CACHING_GOAL else "no"])
    print(f"\n-- caching overhead: {name} {dtype}, {len(prompts)} prompts, {tokens} tokens, "
          f"batch {batch_size}, best of {repeats}")
    print(table(["what", "tok/s", "ratio vs plain", f">= {CACHING_GOAL}?"], rows))


@torch.no_grad()
def bench_steering(name: str, dtype: str, repeats: int, new_tokens: int) -> None:
    model = load_model(name, dtype=dtype)
    pos, neg = extraction_sets(8)
    prompts = pos + neg  # 16 prompts, one batch
    layer = model.n_layers // 2
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    be = model.backend("hf")
    enc = model.encode(prompts, chat=True)
    gen_kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "temperature": None, "top_k": None, "top_p": None,
              "pad_token_id": model.tokenizer.pad_token_id}

    def steered(fn):
        def run():
            with steer(model, vec, layers=layer, coeff=1.0):
                fn()
        return run

    def fwd():
        be.forward(enc)

    def gen():
        be.generate(enc, **gen_kw)

    rows = []
    for what, fn, tokens in (("forward", fwd, int(enc["attention_mask"].sum())),
                             (f"generate {new_tokens} tokens", gen, new_tokens * len(prompts))):
        best = interleaved({"plain": fn, "steered": steered(fn)}, repeats)
        overhead = best["steered"] / best["plain"] - 1
        record(PART, figure="steering_overhead", model=name, dtype=dtype, what=what,
               value=overhead, plain_s=best["plain"], steered_s=best["steered"],
               tok_s_plain=tokens / best["plain"], goal=STEERING_GOAL,
               met=overhead <= STEERING_GOAL)
        rows.append([what, best["plain"], best["steered"], f"{overhead:+.1%}",
                     "yes" if overhead <= STEERING_GOAL else "no"])
    print(f"\n-- steering overhead: {name} {dtype}, batch of {len(prompts)}, add at layer "
          f"{layer}, hf backend, best of {repeats} interleaved")
    print(table(["what", "plain s", "steered s", "overhead", f"<= {STEERING_GOAL:.0%}?"], rows))


def _one_thread_setup(name: str, dtype: str) -> tuple:
    """One torch thread from here on (the caller restores it); the model, a batch of 16
    chat prompts, a random vector and the hf backend."""
    torch.set_num_threads(1)
    model = load_model(name, dtype=dtype)
    pos, neg = extraction_sets(8)
    enc = model.encode(pos + neg, chat=True)
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(0))
    return model, enc, vec, model.backend("hf")


@torch.no_grad()
def profile_steering(name: str, dtype: str, pairs: int) -> None:
    import time

    from torch.profiler import ProfilerActivity, profile

    threads = torch.get_num_threads()
    model, enc, vec, be = _one_thread_setup(name, dtype)

    def fwd():
        be.forward(enc)

    def steered():
        with steer(model, vec, layers=model.n_layers // 2, coeff=1.0):
            fwd()

    ops = {}
    for what, fn in (("plain", fwd), ("steered", steered)):
        fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        ops[what] = {e.key: e.count for e in prof.key_averages()}
    extra = {k: n - ops["plain"].get(k, 0) for k, n in ops["steered"].items()
             if n != ops["plain"].get(k, 0)}
    cpu: dict[str, list[float]] = {"plain": [], "steered": []}
    for _ in range(pairs):
        for what, fn in (("plain", fwd), ("steered", steered)):
            t0 = time.thread_time()
            fn()
            cpu[what].append(time.thread_time() - t0)
    torch.set_num_threads(threads)
    med = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
    best = {k: min(v) for k, v in cpu.items()}
    over_min, over_med = best["steered"] / best["plain"] - 1, med["steered"] / med["plain"] - 1
    record(PART, figure="steering_overhead_cpu_time", model=name, dtype=dtype, what="forward",
           value=over_med, min_overhead=over_min, pairs=pairs, plain_cpu_s=med["plain"],
           steered_cpu_s=med["steered"], extra_ops=sum(extra.values()),
           plain_ops=sum(ops["plain"].values()), extra_op_kinds=extra)
    print(f"\n-- steered forward, profiled: {name} {dtype}, 1 torch thread, {pairs} interleaved "
          f"pairs; {sum(extra.values())} operators added to {sum(ops['plain'].values())}: "
          + ", ".join(f"{k.removeprefix('aten::')} x{n}" for k, n in sorted(extra.items())))
    print(table(["", "plain CPU s", "steered CPU s", "overhead"],
                [["median", med["plain"], med["steered"], f"{over_med:+.1%}"],
                 ["best", best["plain"], best["steered"], f"{over_min:+.1%}"]]))


@torch.no_grad()
def profile_receipts(name: str, dtype: str, pairs: int, new_tokens: int) -> None:
    """CPU time of steering with each receipt level (one torch thread, interleaved)."""
    import time

    threads = torch.get_num_threads()
    model, enc, vec, be = _one_thread_setup(name, dtype)
    gen_kw = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
              "temperature": None, "top_k": None, "top_p": None,
              "pad_token_id": model.tokenizer.pad_token_id}
    work = {"forward": lambda: be.forward(enc),
            f"generate {new_tokens} tokens": lambda: be.generate(enc, **gen_kw)}
    rows = []
    for what, fn in work.items():
        cpu: dict[str, list[float]] = {"off": [], "counts": [], "detail": []}

        def run(level: str, fn=fn) -> None:
            with steer(model, vec, layers=model.n_layers // 2, coeff=1.0, receipt=level):
                fn()

        for level in cpu:
            run(level)  # warm
        for _ in range(pairs):
            for level in cpu:
                t0 = time.thread_time()
                run(level)
                cpu[level].append(time.thread_time() - t0)
        med = {k: sorted(v)[len(v) // 2] for k, v in cpu.items()}
        for level in ("counts", "detail"):
            over = med[level] / med["off"] - 1
            goal = RECEIPT_GOALS[level]
            record(PART, figure="receipt_overhead_cpu_time", model=name, dtype=dtype,
                   what=what, level=level, value=over, pairs=pairs, off_cpu_s=med["off"],
                   cpu_s=med[level], goal=goal, met=over <= goal,
                   min_overhead=min(cpu[level]) / min(cpu["off"]) - 1)
            rows.append([what, level, med["off"], med[level], f"{over:+.2%}",
                         "yes" if over <= goal else "no"])
    torch.set_num_threads(threads)
    print(f"\n-- receipts: {name} {dtype}, batch of {len(enc['input_ids'])}, add at one layer, 1 "
          f"torch thread, median of {pairs} interleaved rounds (CPU time)")
    print(table(["what", "receipt", "off CPU s", "CPU s", "overhead", "within goal?"], rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dtypes", default=None, help="default: bf16,fp32 (bf16 with --quick)")
    p.add_argument("--backends", default="hf,tlens,nnsight")
    p.add_argument("--only-steering", action="store_true", help="skip the caching part")
    p.add_argument("--profile", action="store_true", help="also profile the steered forward")
    p.add_argument("--receipts", action="store_true",
                   help="only the cost of receipts (off / counts / detail)")
    args = p.parse_args()
    env_setup()
    dtypes = (args.dtypes or ("bf16" if args.quick else "bf16,fp32")).split(",")
    repeats = 3 if args.quick else 5
    print(f"== overhead vs plain PyTorch ({machine()})")
    if args.receipts:
        profile_receipts(args.model, dtypes[0], 5 if args.quick else 11, 8 if args.quick else 16)
        return
    for dtype in [] if args.only_steering else dtypes:
        bench_caching(args.model, dtype, 32 if args.quick else 64, repeats, 16,
                      args.backends.split(","))
    bench_steering(args.model, dtypes[0], repeats, 16 if args.quick else 32)
    if args.profile:
        profile_steering(args.model, dtypes[0], 6 if args.quick else 12)


if __name__ == "__main__":
    main()
