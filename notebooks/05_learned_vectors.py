# %% [markdown]
# # 05 · Learned steering vectors: bias-only RL (Sinii et al. 2025)
#
# One trainable vector per layer is added to the residual stream after every block, at every
# position; **all weights stay frozen**. The vectors are trained with **RLOO**: for each
# prompt, draw N completions at temperature 1, reward 1 when the final answer is right
# (the evaluation's verifier: `\boxed{}`, `####` or the last number, checked with
# math-verify), advantage = reward minus the mean reward of the other N-1 samples, policy
# gradient on the vectors only.
#
# **Scale of this reproduction.** The paper trains 1.5B-8B models on GSM8K/MATH on GPUs. Here:
# SmolLM2-135M-Instruct on a 2-core CPU, on synthetic arithmetic (`What is 37 - 27?`,
# operands 1..50; disjoint train / dev / test splits made by `steerlab.tasks`), where the
# unsteered model is right about a sixth to a quarter of the time (GSM8K: 1%, nothing to
# learn from). Gemma-3-270M base copies the first operand on this task (0%, FIELD-NOTES), so
# RLOO would get no reward: it is not trained here.
#
# **How this notebook runs.** By default it reuses the recorded run in
# `results/train_smollm2_arithmetic/` (made with `steerlab train --out
# results/train_smollm2_arithmetic`, 60 steps, ~20 min here) and the recorded evaluations in
# its `evaluations.jsonl`, with the model in the dtype the run was trained in, and
# spot-checks both (`steerlab.recordings`: one randomly drawn training step and one randomly
# drawn evaluated condition are computed again and compared with the journals).
# `STEERLAB_RECOMPUTE=1` (`make run-all`) trains and evaluates everything anew under `runs/`.
# Under the smoke switch it trains a 2-step toy run instead.

# %%
import os

import numpy as np
import pandas as pd

from steerlab.data import questions
from steerlab.extraction import extract_pair, vector_from_pair
from steerlab.figures import save_figure
from steerlab.inference import generate
from steerlab.notebooks import run_dir, settings
from steerlab.plots import condition_bars, training_curves
from steerlab.recordings import Evaluations, recorded_training
from steerlab.tasks import arithmetic_items
from steerlab.train import TrainConfig
from steerlab.vectors import random_like

S = settings()
MODEL = "smollm2-135m-instruct"
FULL = os.environ.get("STEERLAB_TRAIN_FULL", "0") == "1"
if S.smoke:
    cfg = TrainConfig(steps=2, prompts_per_step=2, samples=2, max_new_tokens=8, eval_every=1,
                      eval_n=8)
else:
    cfg = TrainConfig()  # 60 steps x 8 prompts x 8 samples, lr 1e-2, 32 new tokens
out = run_dir(MODEL, "arithmetic")
recorded = (out / "vectors.safetensors").is_file()
print(f"config: {cfg}\nrun directory: {out} ({'recorded run found' if recorded else 'new'})")
if not (S.smoke or FULL or recorded):
    print("No recorded run and STEERLAB_TRAIN_FULL is not set: training anyway (~20 min).")
model, run = recorded_training(MODEL, cfg, out)  # in the run's dtype; spot-checked
evals = Evaluations(out / "evaluations.jsonl")  # this notebook's evaluations, recorded
learned = run.vector
hist = run.history
hist.drop(columns=["sample"], errors="ignore").tail(8).round(3)

# %% [markdown]
# ## Training curves
# Left: the mean reward of each step's 64 sampled completions (noisy: each step draws other
# problems) and its running mean. Right: greedy accuracy on the 100 dev problems, measured
# every 10 steps (the test problems are never looked at during training).

# %%
seconds = hist["seconds"].sum() if "seconds" in hist else float("nan")
fig = training_curves(hist, cfg.eval_n, title=(
    f"RLOO training of per-layer steering vectors · {MODEL} (frozen)<br>synthetic arithmetic "
    f"train split · {cfg.prompts_per_step}x{cfg.samples} samples/step · "
    f"{seconds / 60:.1f} min on this CPU"))
save_figure(fig, "05", "training_curves")
fig

# %% [markdown]
# ## Held-out test accuracy, with the controls
# Four conditions on the same test problems (greedy decoding, 32 new tokens):
# * **base**: the unsteered model;
# * **learned**: the RLOO vectors at every layer (the final checkpoint, no selection);
# * **random**: random directions with the learned vectors' per-layer norms (does any
#   perturbation of this size help?);
# * **diff-of-means**: the reasoning-minus-memorisation vector of notebooks 01-03 at one layer,
#   its layer and coefficient (in units of that layer's mean residual norm) chosen on the dev
#   split, so it gets the same tuning data the learned vectors had.

# %%
dev = arithmetic_items("dev")[:cfg.eval_n]
test = arithmetic_items("test")[:S.n_eval if S.smoke else None]
R_q = questions("reasoning", "extract", S.n_extract)
M_q = questions("memorisation", "extract", S.n_extract)
layers = [4, 10, 16, 22] if not S.smoke else [10]
coeffs = [0.05, 0.1, 0.2] if not S.smoke else [0.1]
# coefficients in units of the layer's mean residual norm on the reasoning prompts (the
# reference this notebook's recorded numbers were made with; extract_vector's default
# reference is the mean over both prompt sets, a few percent different)
pos, neg = extract_pair(model, (R_q, M_q), layers)  # read once for the vector and its norms
dom = vector_from_pair(pos, neg).with_ref_norms(pos.mean_norms())
grid = {f"L{l} x{c:+g}": dom.only(l).at_scale(c, "norm") for l in layers for c in coeffs}
tuning = evals.compare(model, {"base": None, **grid}, items=dev)
best = tuning.iloc[1:].sort_values("accuracy", ascending=False).iloc[0].condition
print(f"diff-of-means picked on dev: {best}")
tuning.round(3)

# %%
conditions = {"base": None, "learned": learned, "random (same norms)": random_like(learned),
              f"diff-of-means ({best})": grid[best]}
results = evals.compare(model, conditions, items=test)
results.round(3)

# %%
fig = condition_bars(results, title=(
    f"Held-out synthetic arithmetic (test split, n={len(test)}) · {MODEL}, greedy<br>labels: "
    "paired difference to base [95% bootstrap]"))
save_figure(fig, "05", "test_accuracy")
fig

# %%
row = results.set_index("condition").loc["learned"]
gain = (f"{row.delta:+.3f} [{row.delta_low:+.3f}, {row.delta_high:+.3f}], "
        f"McNemar p={row.p_mcnemar:.2g}")
if row.delta_low > 0:
    verdict = f"The learned vectors raise held-out accuracy: {gain}."
elif row.delta_high < 0:
    verdict = f"The learned vectors lower held-out accuracy: {gain}."
else:
    verdict = f"No significant change from the learned vectors: {gain}."
print(("[smoke run: toy sizes, not a result] " if S.smoke else "") + verdict)

# %%
# the numbers the README's training and test tables quote, written by this run

from steerlab.notebooks import write_summary
from steerlab.train_journal import training_summary

print(write_summary(MODEL, "learned_vectors", {
    "model": model.hf_id, "smoke": S.smoke, "n_test": len(test), "n_dev": len(dev),
    "training": training_summary(hist), "dev_tuning": tuning.to_dict("records"),
    "picked": best, "test": results.to_dict("records"), "verdict": verdict}))

# %% [markdown]
# ## What changed in the answers
# Greedy answers of the base and the steered model to the first test problems.

# %%
from steerlab.steering import steer

prompts = [it.question for it in test[:6]]
base_out = generate(model, prompts, 32, chat=True, progress=False)
with steer(model, learned):
    steered_out = generate(model, prompts, 32, chat=True, progress=False)
pd.DataFrame({"question": prompts, "gold": [it.answer for it in test[:6]],
              "base": base_out, "learned vectors": steered_out})

# %%
lengths = pd.DataFrame({"base": [len(t) for t in base_out],
                        "learned": [len(t) for t in steered_out]})
print("mean answer length in characters:", lengths.mean().round(1).to_dict(),
      "| learned vector norms by layer:",
      np.round(list(learned.norms().values()), 2).tolist())

# %% [markdown]
# ## The learned vectors in llama.cpp
# The recorded final checkpoint (`results/train_smollm2_arithmetic/vectors.safetensors`),
# exported as a GGUF control vector: `llama-cli --control-vector FILE` (and Ollama, which
# runs llama.cpp) adds `direction.k` to the output of block k at every position, as `steer`
# does here with coefficient 1.
#
# **Layer 0 does not travel.** RLOO trained a vector after every block, block 0 included, but
# llama.cpp cannot steer block 0's output (it rejects `direction.0`). `to_gguf` refuses the
# vector unless told which layers to write: `layers=` 1..29 here, a choice the file records
# (`meta["dropped_layers"]` on import). The file is read back and compared tensor by tensor.

# %%

import torch

from steerlab.embedded import EMBEDDED
from steerlab.interop import llama_cpp_command
from steerlab.notebooks import recorded_run, write_summary
from steerlab.vectors import SteeringVector

ckpt = recorded_run(MODEL, "arithmetic") / "vectors.safetensors"
final = SteeringVector.load(ckpt, model) if ckpt.is_file() else learned
travel = [l for l in final.layers if l != 0]  # llama.cpp cannot steer block 0
gguf_file = final.to_gguf(run_dir(MODEL, "arithmetic") / "learned_vectors.gguf", layers=travel)
back = SteeringVector.from_gguf(gguf_file, model)
exact = back.layers == travel and all(torch.equal(back[l], final[l]) for l in travel)
assert exact, "the GGUF file does not give the exported tensors back"
REPO = recorded_run(MODEL, "arithmetic").parents[1]  # paths below are shown relative to it
gguf_shown = gguf_file.relative_to(REPO) if gguf_file.is_relative_to(REPO) else gguf_file
model_gguf = EMBEDDED[MODEL].locate()  # the SmolLM2 GGUF the embedded model is made from
command = llama_cpp_command(gguf_shown, model_gguf.name)
print(f"wrote {gguf_shown} ({gguf_file.stat().st_size / 1024:.0f} KiB): layers "
      f"{travel[0]}-{travel[-1]} of the step-{final.meta.get('step')} checkpoint, left out "
      f"{back.meta['dropped_layers']}; read back: the same tensors\n\nllama.cpp, from the "
      f"checkout (the model file is {model_gguf}):\n  {command}")

# %% [markdown]
# **What leaving layer 0 out costs**: greedy accuracy on the same test problems with the
# vectors as the file holds them (layers 1-29, read back from the file) against all 30 layers,
# paired bootstrap interval of the difference and McNemar's test. Written to
# `results/learned_vectors_gguf_smollm2.json`, which the README quotes.

# %%
ALL, FILE = f"all {len(final.layers)} layers", f"layers {travel[0]}-{travel[-1]} (GGUF file)"
cost = evals.compare(model, {ALL: final, FILE: back}, items=test, baseline=ALL)
row = cost.set_index("condition").loc[FILE]
summary = {"model": model.hf_id, "smoke": S.smoke, "checkpoint": str(ckpt.relative_to(REPO)),
           "step": final.meta.get("step"), "gguf": str(gguf_shown),
           "layers_exported": travel, "layers_left_out": back.meta["dropped_layers"],
           "round_trip_exact": exact, "llama_cpp": command, "test_items": int(row.n),
           "accuracy_all_layers": row.baseline, "accuracy_gguf_layers": row.accuracy,
           "delta": row.delta, "delta_low": row.delta_low, "delta_high": row.delta_high,
           "p_mcnemar": row.p_mcnemar, "conditions": cost.to_dict("records")}
out_json = write_summary(MODEL, "learned_vectors_gguf", summary)
print(("[smoke run: toy sizes, not a result] " if S.smoke else "")
      + f"without layer 0: {row.accuracy:.3f} vs {row.baseline:.3f} with all layers (n="
      f"{int(row.n)}), paired {row.delta:+.3f} [{row.delta_low:+.3f}, {row.delta_high:+.3f}], "
      f"McNemar p={row.p_mcnemar:.2g} -> {out_json.name}")
cost.round(3)

# %% [markdown]
# **Spot check.** The evaluations above that were read back from `evaluations.jsonl`: one of
# them, drawn at random, is evaluated again on one batch of its items and compared with the
# journal item by item (an error if any answer differs).

# %%
evals.spot_check(model)
