"""Memory: caching 10,000 prompts x all layers streamed to disk
(``cache_activations(..., out=dir)``) with bounded peak memory. Runs in a fresh process and
reports its peak RSS (goal < 2 GiB for SmolLM2), next to the size the same activations would
take in memory, and the throughput.

Prompts: the shipped reasoning and memorisation questions, cycled and numbered to make 10,000
distinct prompts (chat template applied).

Second figure: what booting the TransformerLens backend costs in memory, with the bridge's
module copy sharing the HF model's weight tensors (as steerlab does) and with a full deep
copy (as it did before), each in a fresh process, next to the size of the weights.

Usage: python bench/memory.py [--quick] [--n 10000] [--model NAME] [--only-tlens]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from _common import env_setup, machine, record, table

PART = "memory"
GOAL_GIB = 2.0

_CHILD = """
import json, resource, shutil, sys, time
from pathlib import Path
from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.models import load_model

n, name, out, shard = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = load_model(name)
base = questions("reasoning", None) + questions("memorisation", None)
prompts = [f"{base[i % len(base)]} (#{i})" for i in range(n)]
after_load = rss()
t0 = time.perf_counter()
acts = cache_activations(model, prompts, chat=True, out=out, shard_size=shard, progress=True)
sec = time.perf_counter() - t0
size = sum(p.stat().st_size for p in Path(out).glob("shard-*"))
tokens = sum(len(t) for t in model.tokenizer(model.format(prompts, True))["input_ids"])
print(json.dumps({"peak_rss_mib": rss(), "rss_after_load_mib": after_load, "seconds": sec,
                  "tokens": tokens, "disk_mib": size / 2**20, "layers": len(acts.layers),
                  "shards": len(acts.shard_files), "in_memory_mib":
                  len(acts.layers) * n * acts.d_model * 4 / 2**20}))
"""


_TLENS_CHILD = """
import copy, json, sys
import torch
from steerlab.models import load_model

def rss():  # resident now, MiB
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

model = load_model(sys.argv[1], dtype=sys.argv[3])
before = rss()
if sys.argv[2] == "shared":
    model.backend("tlens")  # steerlab's own boot
else:
    from transformer_lens.model_bridge import TransformerBridge
    TransformerBridge.boot_transformers(model.hf_id, hf_model=copy.deepcopy(model.hf),
                                        tokenizer=model.tokenizer)
weights = sum(t.numel() * t.element_size() for t in model.hf.parameters()) / 2**20
print(json.dumps({"boot_rss_mib": rss() - before, "weights_mib": weights}))
"""


def bench_tlens_boot(model: str, dtype: str) -> None:
    got = {}
    for how in ("shared", "deepcopy"):
        proc = subprocess.run([sys.executable, "-c", _TLENS_CHILD, model, how, dtype],
                              stdout=subprocess.PIPE, text=True, check=True)
        got[how] = json.loads(proc.stdout.strip().splitlines()[-1])
        record(PART, figure="tlens_boot_rss_mib", model=model, dtype=dtype, weights=how,
               value=got[how]["boot_rss_mib"], weights_mib=got[how]["weights_mib"])
    print(f"== booting the tlens backend on {model} ({dtype}; weights "
          f"{got['shared']['weights_mib']:,.0f} MiB)")
    print(table(["bridge copy", "added RSS"], [
        ["modules copied, weights shared (steerlab)", f"{got['shared']['boot_rss_mib']:,.0f} MiB"],
        ["full deep copy", f"{got['deepcopy']['boot_rss_mib']:,.0f} MiB"],
        ["ratio", f"{got['deepcopy']['boot_rss_mib'] / got['shared']['boot_rss_mib']:.1f}x"]]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None, help="prompts (default 10000; 2000 quick)")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--only-tlens", action="store_true", help="only the tlens boot figure")
    p.add_argument("--dtype", default="fp32", help="dtype of the tlens boot figure")
    args = p.parse_args()
    env_setup()
    bench_tlens_boot(args.model, args.dtype)
    if args.only_tlens:
        return
    n = args.n or (2000 if args.quick else 10000)
    print(f"== memory ({machine()}): caching {n} prompts x all layers of {args.model} to disk")
    with tempfile.TemporaryDirectory(prefix="steerlab-bench-acts-") as tmp:
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(n), args.model,
                               os.path.join(tmp, "acts"), str(args.shard_size)],
                              stdout=subprocess.PIPE, text=True, check=True)
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    peak_gib = m["peak_rss_mib"] / 1024
    met = peak_gib < GOAL_GIB
    record(PART, figure="cache_to_disk_peak_rss_gib", model=args.model, n_prompts=n,
           value=peak_gib, goal=GOAL_GIB, met=met, **m)
    print(table(["figure", "value"], [
        ["prompts x layers", f"{n:,} x {m['layers']}"],
        ["tokens", f"{m['tokens']:,}"],
        ["peak RSS (whole process)", f"{m['peak_rss_mib']:,.0f} MiB"],
        ["RSS after loading the model", f"{m['rss_after_load_mib']:,.0f} MiB"],
        ["activations on disk", f"{m['disk_mib']:,.0f} MiB in {m['shards']} shards"],
        ["same in memory (float32) would be", f"{m['in_memory_mib']:,.0f} MiB"],
        ["time / throughput", f"{m['seconds']:.0f} s / {m['tokens'] / m['seconds']:,.0f} tok/s"],
        [f"peak < {GOAL_GIB} GiB?", "yes" if met else "no"]]))


if __name__ == "__main__":
    main()
