"""The learned RL vectors of notebook 05 outside steerlab, on all 400 arithmetic test items:

* ``llama_cpp``: in real llama.cpp (llama-cpp-python, ``make llama-cpp``) on the Q4_1 SmolLM2
  GGUF the embedded model is made from, unsteered and with the exported control vector
  (``results/train_smollm2_arithmetic/learned_vectors.gguf``, layers 1-29), against steerlab's
  recorded evaluations of the same items (notebook 05's ``base`` and ``layers 1-29 (GGUF
  file)``, in the dtype they were recorded in): each accuracy with its 95% interval, the gain
  with its paired interval and McNemar, and the per-item verdicts that agree. Written to
  ``results/llama_cpp_learned_smollm2.json``.
* ``baked``: the same vectors (all 30 layers) baked into a plain checkpoint
  (:func:`steerlab.bake.check_baked`: reloaded by path with transformers as a user would),
  against run-time steering, fp32. Written to ``results/baked_learned_smollm2.json``.

A run on fewer items (``--n``) writes to ``runs/serving/`` instead, leaving results/ as recorded.

Each part appends its wall time to ``bench/results.jsonl``.

Usage: python bench/serving.py [--part llama_cpp|baked|all] [--n N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import env_setup, record

from steerlab import _io
from steerlab.bake import check_baked
from steerlab.embedded import EMBEDDED
from steerlab.llamacpp import LLAMA_CPP_PYTHON, LlamaCpp, evaluate_llama_cpp
from steerlab.models import Model, load_model
from steerlab.stats import comparison_row
from steerlab.tasks import arithmetic_items, get_task
from steerlab.vectors import SteeringVector

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "results" / "train_smollm2_arithmetic"
MODEL = "smollm2-135m-instruct"
STEERED = "layers 1-29 (GGUF file)"  # notebook 05's evaluation of the exported file


def _out(name: str, n: int) -> Path:
    """results/ for a run on all 400 items; runs/serving/ for a shorter one."""
    return REPO / ("results" if n == 400 else "runs/serving") / name


def _recorded(condition: str, n: int) -> dict:
    rows = [r for r in _io.read_jsonl(RUN / "evaluations.jsonl")
            if r["condition"] == condition and r["n"] == 400]
    if len(rows) != 1:
        raise SystemExit(f"{RUN / 'evaluations.jsonl'}: expected one 400-item {condition!r} "
                         "row (run notebook 05 first)")
    row = rows[0]
    return {"dtype": row["dtype"], "correct": np.array([c == "1" for c in row["correct"]][:n]),
            "predictions": row["predictions"][:n]}


def llama_cpp(model: Model, n: int) -> dict:
    """``model``: steerlab's SmolLM2, for its tokenizer, chat rule and judge."""
    items, task = arithmetic_items("test")[:n], get_task("arithmetic")
    gguf_model = EMBEDDED[MODEL].locate()
    vector = RUN / "learned_vectors.gguf"
    t0 = time.perf_counter()
    with LlamaCpp(gguf_model) as cpp:
        base, base_pred, _ = evaluate_llama_cpp(cpp, model, task, items)
        cpp.set_vector(vector)
        steered, steered_pred, _ = evaluate_llama_cpp(cpp, model, task, items)
    seconds = time.perf_counter() - t0
    ours_base, ours = _recorded("base", n), _recorded(STEERED, n)
    out = {
        "model_gguf": gguf_model.name, "vector": str(vector.relative_to(REPO)),
        "llama_cpp_python": LLAMA_CPP_PYTHON, "task": "arithmetic", "split": "test",
        "items": len(items), "steerlab_dtype": ours["dtype"],
        "llama_cpp": {"base": comparison_row(base, base),
                      "steered": comparison_row(base, steered)},
        "steerlab": {"base": comparison_row(ours_base["correct"], ours_base["correct"]),
                     "steered": comparison_row(ours_base["correct"], ours["correct"])},
        "llama_cpp_vs_steerlab_steered": comparison_row(ours["correct"], steered),
        "same_verdict": {"base": int((base == ours_base["correct"]).sum()),
                         "steered": int((steered == ours["correct"]).sum())},
        "same_answer": {"base": sum(a == b for a, b in zip(base_pred, ours_base["predictions"],
                                                            strict=True)),
                        "steered": sum(a == b for a, b in zip(steered_pred, ours["predictions"],
                                                              strict=True))},
        "seconds": seconds}
    _io.write_text(_out("llama_cpp_learned_smollm2.json", n), json.dumps(out, indent=1) + "\n")
    record("serving", what="llama_cpp_learned_vectors", seconds=seconds, items=len(items),
           llama_cpp_gain=out["llama_cpp"]["steered"]["delta"],
           steerlab_gain=out["steerlab"]["steered"]["delta"],
           same_verdict_steered=out["same_verdict"]["steered"])
    return out


def baked(model: Model, n: int) -> dict:
    learned = SteeringVector.load(RUN / "vectors.safetensors", model)
    t0 = time.perf_counter()
    out = check_baked(model, learned, "arithmetic", items=arithmetic_items("test")[:n],
                      out=_out("baked_learned_smollm2.json", n))
    record("serving", what="baked_learned_vectors", seconds=time.perf_counter() - t0,
           items=out["items"], same_verdict=out["same_verdict"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["llama_cpp", "baked", "all"], default="all")
    ap.add_argument("--n", type=int, default=400, help="test items (400: all of them)")
    args = ap.parse_args()
    if not 1 <= args.n <= 400:
        ap.error(f"--n {args.n}: the arithmetic test split has 400 items; give 1 to 400.")
    env_setup()
    model = load_model(MODEL, dtype="fp32")  # once, for both parts
    for part, fn in (("llama_cpp", llama_cpp), ("baked", baked)):
        if args.part in (part, "all"):
            result = fn(model, args.n)
            print(json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1))


if __name__ == "__main__":
    main()
