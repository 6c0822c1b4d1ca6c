"""Hardware ceiling: matmul throughput of this machine in bf16 and fp32, and the ideal
tokens/s of a forward pass of the model that it implies (2 FLOP per weight per token, plus
attention), so the other figures can be read as a fraction of the limit.

Usage: python bench/hardware.py [--quick] [--model NAME]
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import env_setup, machine, record, table

PART = "hardware"


def matmul_gflops(dtype: torch.dtype, n: int, seconds: float) -> float:
    """Sustained GFLOP/s of (n x n) @ (n x n) in ``dtype`` over about ``seconds``."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def model_flops_per_token(name: str, seq_len: int) -> tuple[float, dict]:
    """Forward FLOP per token: 2 x (weights touched per token: blocks + unembedding) plus the
    attention score/value products at ``seq_len`` (averaged over a causal sequence)."""
    from transformers import AutoConfig

    from steerlab.embedded import convert_embedded

    cfg = AutoConfig.from_pretrained(convert_embedded(name))
    cfg = getattr(cfg, "text_config", cfg)
    d, f, n = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or d // heads
    per_block = d * heads * hd + 2 * d * kv * hd + heads * hd * d + 3 * d * f
    unembed = d * cfg.vocab_size
    attn = 2 * 2 * heads * hd * seq_len / 2  # QK^T and AV over half the sequence on average
    flops = 2 * (n * per_block + unembed) + n * attn
    return flops, {"block_params": n * per_block, "unembed_params": unembed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default="smollm2-135m-instruct,gemma-3-270m")
    p.add_argument("--seq-len", type=int, default=50, help="typical prompt length (tokens)")
    args = p.parse_args()
    env_setup()
    print(f"== hardware ceiling ({machine()})")
    secs = 1.0 if args.quick else 3.0
    rows, peaks = [], {}
    for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        best = max(matmul_gflops(dtype, n, secs) for n in (1024, 2048))
        peaks[label] = best
        record(PART, figure="matmul_gflops", dtype=label, value=best)
        rows.append([f"matmul {label} (best of 1024^2, 2048^2)", best, "GFLOP/s"])
    for name in args.models.split(","):
        flops, parts = model_flops_per_token(name, args.seq_len)
        for label, peak in peaks.items():
            ideal = peak * 1e9 / flops
            record(PART, figure="ideal_tok_s", model=name, dtype=label, value=ideal,
                   flops_per_token=flops, seq_len=args.seq_len, **parts)
            rows.append([f"ideal forward {name} {label}", ideal, "tok/s"])
    print(table(["what", "value", "unit"], rows))
    print("(ideal = matmul peak / forward FLOP per token; a real forward also pays for norms, "
          "softmax, memory traffic and Python, so 30-60% of it is good on a CPU)")


if __name__ == "__main__":
    main()
