"""Foundation benchmarks, measured side by side in one run.

1. Loading: cached load time of each embedded model (model + tokenizer), in a fresh process;
   the one-time import of transformers' model-loading machinery is timed separately.
2. Caching throughput: tokens/s of caching every layer's residual stream with each backend
   (hf, tlens, nnsight) vs a plain HF forward of the same model, dtype, batches and padding.

Usage: python bench/foundation.py [--model NAME] [--dtype bf16|fp32] [--n 64] [--repeats 3]
Prints a table and appends one JSON line per figure to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.embedded import EMBEDDED
from steerlab.models import load_model

RESULTS = Path(__file__).with_name("results.jsonl")

_LOAD_SNIPPET = """
import time, json
t0 = time.perf_counter()
import transformers.modeling_utils, steerlab.models as m  # library imports
t1 = time.perf_counter()
model = m.load_model({name!r})
t2 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1}}))
"""


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def record(rows: list[dict], **row: object) -> None:
    row = {"bench": "foundation", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **row}
    rows.append(row)
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")


def bench_load(rows: list[dict], name: str) -> None:
    load_model(name)  # make sure it is converted (not timed)
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _LOAD_SNIPPET.format(name=name)],
                             capture_output=True, text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    best = min(r["load_s"] for r in runs)
    record(rows, figure="cached_load_s", model=name, value=best,
           import_s=min(r["import_s"] for r in runs))
    print(f"{name:24} cached load {best:.2f} s (best of 3; imports "
          f"{min(r['import_s'] for r in runs):.1f} s not counted)")


@torch.no_grad()
def plain_forward(model, prompts: list[str], batch_size: int) -> None:
    texts = model.format(prompts, True)
    lengths = [len(ids) for ids in model.tokenizer(texts)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    for i in range(0, len(order), batch_size):
        enc = model.encode([prompts[j] for j in order[i:i + batch_size]], chat=True,
                           padding_side="right")
        model.hf(**enc, use_cache=False)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_caching(rows: list[dict], name: str, dtype: str, n: int, repeats: int,
                  batch_size: int) -> None:
    model = load_model(name, dtype=dtype)
    prompts = questions("reasoning", "extract", n // 2) + questions("memorisation", "extract",
                                                                    n // 2)
    tokens = sum(len(ids) for ids in model.tokenizer(model.format(prompts, True))["input_ids"])
    base = timed(lambda: plain_forward(model, prompts, batch_size), repeats)
    record(rows, figure="plain_forward_tok_s", model=name, dtype=dtype, value=tokens / base)
    print(f"\n{name} {dtype}: {len(prompts)} prompts, {tokens} tokens, batch {batch_size}")
    print(f"{'what':34} {'tok/s':>9} {'vs plain HF forward':>20}")
    print(f"{'plain HF forward (sdpa)':34} {tokens / base:9.0f} {1.0:20.2f}")
    for backend in ["hf", "tlens", "nnsight"]:
        model.backend(backend)  # build once, outside the timing
        sec = timed(lambda b=backend: cache_activations(model, prompts, batch_size=batch_size,
                                                         chat=True, backend=b, progress=False),
                    repeats)
        ratio = base / sec
        record(rows, figure="caching_tok_s", model=name, dtype=dtype, backend=backend,
               value=tokens / sec, ratio_vs_plain=ratio)
        print(f"{'cache all layers, ' + backend:34} {tokens / sec:9.0f} {ratio:20.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--dtype", default="bf16")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows: list[dict] = []
    print(f"machine: {machine()}\n")
    for name in EMBEDDED:
        bench_load(rows, name)
    bench_caching(rows, args.model, args.dtype, args.n, args.repeats, args.batch_size)
    if args.dtype != "fp32":
        bench_caching(rows, args.model, "fp32", args.n, args.repeats, args.batch_size)
    print(f"\nappended {len(rows)} rows to {RESULTS}")


if __name__ == "__main__":
    main()
