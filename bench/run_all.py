"""All performance benchmarks, one after the other (``make bench``), then a summary of the goals.

Each part is its own script (runnable alone, each with ``--quick``), run here in a fresh
process; all rows of one run share a run id in bench/results.jsonl.

  hardware     matmul GFLOP/s (bf16, fp32) and the ideal tokens/s of each model
  overhead     caching vs a plain HF forward per backend; steered vs plain forward/generate
  sweep        naive one-pass-per-cell sweep vs steerlab's sweep (same per-item results)
  peers        steering-vectors and repeng: same extraction + sweep (bench/requirements.txt)
  loading      first load (GGUF conversion) and cached load of each embedded model
  memory       10,000 prompts x all layers streamed to disk, peak RSS
  gpu          the seed models' sizes (random weights) on the device present: forward,
               caching, steering, one training step per method (the 1B size only on a CPU)

Usage: python bench/run_all.py [--quick] [--parts a,b] [--lock FILE]
  --lock FILE  take an exclusive flock on FILE around each part (so benchmarks never overlap
               other heavy jobs that use the same lock, without holding it for the whole run)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from _common import RESULTS, machine, table

HERE = Path(__file__).parent
PARTS = {"hardware": "hardware.py", "overhead": "overhead.py", "sweep": "sweep_speed.py",
         "peers": "peers.py", "loading": "loading.py", "memory": "memory.py",
         "patching": "patching.py", "gpu": "gpu.py"}


@contextmanager
def locked(path: str | None):
    if path is None:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def summary(run: str) -> str:
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("run") == run]
    out = []
    for r in rows:
        if "met" not in r and r.get("figure") != "peer_failed":
            continue
        what = {"caching_ratio": f"caching / plain forward, {r.get('backend')} {r.get('dtype')}",
                "steering_overhead": f"steering overhead, {r.get('what')}",
                "sweep_speedup": "sweep speed-up vs naive (identical results: "
                                 f"{r.get('identical')})",
                "peer_ratio": f"{r.get('library')} time / steerlab time",
                "patching_speedup": "patching map vs TransformerLens (same numbers: "
                                    f"{r.get('same')})",
                "cache_to_disk_peak_rss_gib": f"peak RSS caching {r.get('n_prompts')} prompts "
                                              "to disk (GiB)",
                "peer_failed": f"{r.get('library')}: could not run"}.get(r["figure"],
                                                                          r["figure"])
        if r["figure"] == "peer_failed":
            out.append([what, r.get("reason", "")[:60], "-", "missed"])
            continue
        goal = r.get("goal")
        value = r["value"]
        shown = f"{value:+.1%}" if r["figure"] == "steering_overhead" else f"{value:.2f}"
        sense = {"steering_overhead": "<=", "cache_to_disk_peak_rss_gib": "<"}.get(
            r["figure"], ">=" if r["figure"] != "peer_ratio" else ">")
        goal_s = f"{sense} {goal:.0%}" if r["figure"] == "steering_overhead" else \
            f"{sense} {goal}"
        out.append([what, shown, goal_s, "met" if r["met"] else "missed"])
    return table(["goal", "measured", "target", "status"], out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--parts", default=",".join(PARTS))
    p.add_argument("--lock", default=None)
    args = p.parse_args()
    run = os.environ.get("STEERLAB_BENCH_RUN") or time.strftime("%Y%m%dT%H%M%S")
    env = {**os.environ, "STEERLAB_BENCH_RUN": run, "TOKENIZERS_PARALLELISM": "false"}
    print(f"steerlab benchmarks, run {run}{' (quick)' if args.quick else ''}\nmachine: "
          f"{machine()}\n", flush=True)
    t_all = time.perf_counter()
    seconds = {}
    for part in args.parts.split(","):
        cmd = [sys.executable, str(HERE / PARTS[part])] + (["--quick"] if args.quick else [])
        with locked(args.lock):
            t0 = time.perf_counter()
            code = subprocess.run(cmd, env=env).returncode
            seconds[part] = time.perf_counter() - t0
        print(f"[{part}: {seconds[part]:.0f} s{'' if code == 0 else f', FAILED ({code})'}]\n",
              flush=True)
    print(f"== summary of run {run} ({time.perf_counter() - t_all:.0f} s in all; "
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")")
    print(summary(run))


if __name__ == "__main__":
    main()
