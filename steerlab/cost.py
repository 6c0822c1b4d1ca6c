"""Measured costs: wall time and peak memory of a piece of work, and of full fine-tuning steps,
for the cost-benefit table (the seed's Table 1, with numbers from this machine).

Memory is the process's resident memory (RSS) and, when the work runs on a CUDA GPU, the peak
GPU memory torch allocated (``torch.cuda.max_memory_allocated``; None elsewhere)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from steerlab.adapters import make_adapter
from steerlab.devices import peak_gpu_bytes, reset_peak_gpu, synchronize
from steerlab.errors import OptionError

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
    #: bytes, peak GPU memory torch allocated while the work ran (CUDA only; None elsewhere)
    peak_gpu: int | None = None

    @property
    def peak_extra(self) -> int:
        return self.peak_rss - self.start_rss


def measure(fn: Callable[[], Any], interval: float = 0.005,
            device: torch.device | None = None) -> Measured:
    """Run ``fn`` and return its wall time and the peak RSS sampled every ``interval`` s; on a
    CUDA ``device`` also the peak GPU memory allocated, the clock stopped after its queued
    kernels finished."""
    reset_peak_gpu(device)
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
        synchronize(device)
    finally:
        sec = time.perf_counter() - t0
        stop.set()
        thread.join()
    return Measured(sec, max(peak[0], rss_bytes()), start, result, peak_gpu_bytes(device))


def training_step_costs(model: Model, prompts: list[str], method: str = "full",
                        steps: int = 3, lr: float = 1e-5, chat: bool | None = None,
                        lora_rank: int = 8) -> dict[str, Any]:
    """A few real optimizer steps (next-token loss on ``prompts``, one batch) and what they
    cost: trainable parameters, optimizer-state bytes, seconds per step, peak RSS and (on a
    CUDA GPU) peak GPU memory allocated (``peak_gpu_bytes``, None elsewhere).

    ``method``: ``full`` (AdamW on every weight of a copy of the model), ``vectors`` (AdamW on
    one vector per layer added to the residual stream, the model frozen: Sinii et al.'s
    bias-only adaptation, :class:`steerlab.adapters.LearnedVectors`) or ``lora``
    (rank-``lora_rank`` adapters on each MLP down-projection of a copy, via ``peft``:
    :class:`steerlab.adapters.LoraAdapter`).
    """
    from contextlib import nullcontext


    if method not in ("full", "vectors", "lora"):
        raise OptionError(f"Unknown method {method!r}: full, vectors or lora.")
    enc = model.encode(prompts, chat=chat, padding_side="right")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    ctx: Any = nullcontext()
    grads = [p.requires_grad for p in model.parameters()]
    if method == "full":
        run_on = model.trainable_copy()
        params = run_on.parameters()
    else:  # the adapters steerlab.train trains (steerlab.adapters)

        if method == "vectors":
            model.freeze()
        adapter = make_adapter(method, model, rank=lora_rank)
        run_on = adapter.target(model)  # lora: a private copy of the model
        if method == "lora":
            run_on.train_mode(True)
        params = adapter.trainable_parameters()
        ctx = adapter.attached(run_on)
    opt = torch.optim.AdamW(params, lr=lr)
    be = run_on.backend("hf")

    def step() -> None:
        logits = be.forward(enc)
        loss = torch.nn.functional.cross_entropy(  # next-token loss, as transformers' own
            logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def run() -> None:
        for _ in range(steps):
            step()

    try:
        with ctx:
            step()  # warm-up (allocates the optimizer state)
            m = measure(run, device=model.device)
    finally:
        if method == "vectors":
            for p, g in zip(model.parameters(), grads, strict=True):
                p.requires_grad_(g)
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                if torch.is_tensor(t) and t.ndim > 0)
    return {"method": method, "trainable_params": sum(p.numel() for p in params),
            "total_params": sum(p.numel() for p in model.parameters()),
            "optimizer_state_bytes": state, "seconds_per_step": m.seconds / steps,
            "peak_rss_bytes": m.peak_rss, "peak_gpu_bytes": m.peak_gpu,
            "tokens_per_step": int(enc["attention_mask"].sum())}


def full_finetune_steps(model: Model, prompts: list[str], steps: int = 3, lr: float = 1e-5,
                        chat: bool | None = None) -> dict[str, Any]:
    """A few real AdamW steps of full fine-tuning (see :func:`training_step_costs`)."""
    return training_step_costs(model, prompts, "full", steps, lr, chat)
