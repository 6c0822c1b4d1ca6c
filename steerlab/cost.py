"""Measured costs: wall time and peak memory of a piece of work, and of full fine-tuning steps,
for the cost-benefit table (the seed's Table 1, with numbers from this machine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlab.models import Model


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc/self/statm``)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int  # bytes, highest resident memory seen while the work ran
    start_rss: int  # bytes, before it started
    result: Any = None

    @property
    def peak_extra(self) -> int:
        return self.peak_rss - self.start_rss


def measure(fn: Callable[[], Any], interval: float = 0.005) -> Measured:
    """Run ``fn`` and return its wall time and the peak RSS sampled every ``interval`` s."""
    start = rss_bytes()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        sec = time.perf_counter() - t0
        stop.set()
        thread.join()
    return Measured(sec, max(peak[0], rss_bytes()), start, result)


def full_finetune_steps(model: Model, prompts: list[str], steps: int = 3, lr: float = 1e-5,
                        chat: bool = True) -> dict[str, float]:
    """A few real AdamW steps of full fine-tuning (next-token loss on ``prompts``) on a copy of
    the model: trainable parameters, optimizer-state bytes, seconds per step, peak RSS."""
    import copy

    hf = copy.deepcopy(model.hf).train()
    for p in hf.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(hf.parameters(), lr=lr)
    enc = model.encode(prompts, chat=chat, padding_side="right")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)

    def step() -> None:
        loss = hf(**enc, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (allocates the optimizer state)
    def run() -> None:
        for _ in range(steps):
            step()

    m = measure(run)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t))
    n_params = sum(p.numel() for p in hf.parameters())
    return {"trainable_params": n_params, "optimizer_state_bytes": state,
            "seconds_per_step": m.seconds / steps, "peak_rss_bytes": m.peak_rss,
            "tokens_per_step": int(enc["attention_mask"].sum())}
