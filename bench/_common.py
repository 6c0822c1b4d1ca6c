"""Shared plumbing of the bench scripts: machine description, results file, timing, tables.

Every figure goes to ``bench/results.jsonl`` as one JSON line with the bench part, the time,
the run id (``$STEERLAB_BENCH_RUN``, set by run_all.py so one run's rows can be found again)
and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results.jsonl")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_amx() -> bool:
    """True when the CPU has AMX tiles: there bf16 matrix products take other kernels by
    their shape, so a wider batch moves a row's last bits (fp32 is unaffected)."""
    from steerlab.devices import cpu_flags

    return "amx_bf16" in cpu_flags()


def machine() -> str:
    import torch

    return (f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}")


def run_id() -> str:
    return os.environ.get("STEERLAB_BENCH_RUN") or time.strftime("%Y%m%dT%H%M%S")


def record(part: str, rows: list[dict] | None = None, **row: Any) -> dict:
    """Append one figure to results.jsonl (and to ``rows``)."""
    from steerlab.devices import cpu_has_fast_bf16

    row = {"bench": part, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "run": run_id(),
           "machine": cpu_name(), "cpu_fast_bf16": cpu_has_fast_bf16(), "cpu_amx": cpu_amx(),
           **row}
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    if rows is not None:
        rows.append(row)
    return row


def best_of(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> float:
    """Best wall time of ``repeats`` calls (after one untimed warm-up call)."""
    if warmup:
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Best time of each function, calls interleaved (a b c a b c ...) so slow drifts of the
    machine hit every variant alike; one warm-up round first."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table."""
    cells = [[str(h) for h in headers]] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w)
                       in enumerate(zip(r, widths, strict=True))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def env_setup() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def extraction_sets(n: int) -> tuple[list[str], list[str]]:
    """The shipped extraction prompts: ``n`` reasoning and ``n`` memorisation questions."""
    from steerlab.data import questions

    return questions("reasoning", "extract", n), questions("memorisation", "extract", n)
