# %% [markdown]
# # 08 · Is this vector reliable? Per-item steerability, and the seed's control on generated answers
#
# Every sweep in notebooks 02-05 reports whether a vector moves the *mean* accuracy. Tan et
# al. 2024 ("Analyzing the generalization and reliability of steering vectors") show that a
# mean hides what a user most needs to know: for many behaviours a large share of inputs move
# *against* the vector. This notebook measures it per item (`steerlab.reliability`):
#
# * for one vector, one layer and a small grid of coefficients around zero (here -0.15 to
#   +0.15 of the layer's typical residual norm), each item's **response**: for multiple choice
#   the log-probability of its gold option against the others, for a free answer the mean
#   log-probability per token of its gold answer right after the prompt;
# * each item's **slope** of the response over the coefficients, with a 95% t-interval from
#   the fit; an item is **steerable** when its interval lies above zero, **anti-steerable**
#   when below; each fraction with its 95% Wilson interval over the items;
# * the same for a norm-matched **random** direction and the **label-shuffled** difference of
#   means, read at the same size: a vector is reliable where it steers clearly more items than
#   they do;
# * beside it the vector's **cheap predictors**: from its training sets (consistency of the
#   training differences, d' of the projections, a held-out linear probe's accuracy) and from
#   its logit lens (do its top tokens stand out from a random direction's, and are they about
#   one thing?), so one can see whether they would have picked the layers that steer.
#
# Section 3 adds the seed's missing control on **generated** answers: reasoning, arithmetic
# and recall prompts' states written into arithmetic prompts, against the mean direction and
# its controls at the same size, judged by the verifier.
#
# The full runs are recordings (`results/reliability_*.jsonl`, `results/kind_patching_gen_*`,
# about 25 minutes to compute on 2 CPU cores):
# read back in the dtype they were recorded in, and one randomly drawn cell and batch of each
# is computed again and compared item by item (`steerlab.recordings_controls`).

# %%
import json

import pandas as pd

from steerlab.extraction import extract_pair, reference_norms, vector_from_pair
from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import (
    recorded_run,
    settings,
    spread_layers,
    summary_path,
    write_summary,
)
from steerlab.recordings_controls import recorded_kind_patching_gen, recorded_reliability
from steerlab.steerability import DEFAULT_COEFFS
from steerlab.tasks import arithmetic_items, get_task
from steerlab.vectors import SteeringVector, shuffled_diff_of_means

S = settings()
# evaluation items per report: 100 on SmolLM2, 50 on Gemma-3-270M (twice the compute per
# item; a report of 3 layers x 3 directions x 7 coefficients takes about 8 min on 2 cores)
N = {"smollm2-135m-instruct": 100, "gemma-3-270m": 50}
N_DEFAULT = 8 if S.smoke else 100
N_EXTRACT = 24 if S.smoke else 200  # extraction prompts per set
N_LAYERS = 2 if S.smoke else 3
COEFFS = (-0.1, 0.0, 0.1) if S.smoke else DEFAULT_COEFFS
TASK, SCORING = "reasoning-mc", "letter"  # the gold letter against the others: one row per item
print(f"{TASK} ({get_task(TASK).description}), {SCORING} scoring; coefficients {COEFFS} x the "
      f"layer's typical residual norm; vectors from {N_EXTRACT} shipped extraction prompts "
      "per set")

# %% [markdown]
# ## 1. The reasoning vector on both embedded models
#
# The difference of means of reasoning minus recall prompts (the seed's direction, extracted
# as in notebook 02 from the shipped extraction split, disjoint from the evaluation items) at
# three layers spread over the depth, on the shipped reasoning questions as multiple choice
# (letter scoring: the options listed, the gold letter's log-probability against the other
# letters). References: one norm-matched random direction and the label-shuffled difference
# of means.

# %%
reports, models = {}, {}
for name in S.models:
    model = load_model(name)
    n = N_DEFAULT if S.smoke else N.get(name, N_DEFAULT)
    layers = spread_layers(model.n_layers, N_LAYERS)
    pos, neg = extract_pair(model, "shipped", layers, n=N_EXTRACT,
                            exclude=get_task(TASK).items(n, 0))
    vec = vector_from_pair(pos, neg)
    shuffled = shuffled_diff_of_means(pos, neg, seed=0)
    journal = summary_path(name, "reliability").with_suffix(".jsonl")
    model, reports[name] = recorded_reliability(
        name, vec, TASK, journal, model=model, layers=layers, coeffs=COEFFS, n=n,
        scoring=SCORING, references={"shuffled": shuffled}, random=1)
    models[name] = model
    print(reports[name].verdict(), end="\n\n")

# %%
for name, rep in reports.items():
    fig = rep.figure()
    save_figure(fig, "08", f"reliability_{name.split('-')[0]}")
fig

# %% [markdown]
# **How to read it.** Left: each item's slope, per layer, for the vector and its references
# (a box per method: where the box straddles zero, items disagree). Middle: the steerable
# (solid) and anti-steerable (dotted) fractions with their intervals. Right: the predictors,
# each divided by its largest value across layers, against the measured steerable fraction
# (black): a predictor that rises and falls with the black line would have picked the layers
# that steer. The verdicts above say, per layer, whether the vector steers more items than the
# best reference; where they say "not separated", the vector is not shown to be better than a
# direction of the same size with no meaning.

# %%
table = pd.concat([rep.table.assign(model=name) for name, rep in reports.items()],
                  ignore_index=True)
cols = ["model", "layer", "method", "steerable", "steerable_low", "steerable_high",
        "anti_steerable", "anti_low", "anti_high", "mean_slope", "consistency", "d_prime",
        "probe_acc", "lens_peak", "lens_coherence"]
table[[c for c in cols if c in table.columns]].round(3)

# %% [markdown]
# ## 2. The learned RL vectors (notebook 05) on SmolLM2's arithmetic
#
# Notebook 05 trained one vector per layer with RLOO on synthetic arithmetic; together, at
# every layer, they raise accuracy. Here each layer's learned vector is measured **alone**, as
# a direction, on the arithmetic test items (free answers: the response is the gold answer's
# log-probability), in the same units (its layer's typical residual norm on the training
# questions) against a random direction. A learned vector trained to act with the others
# need not steer alone: this asks whether any single layer's direction does.

# %%
LEARN_MODEL = "smollm2-135m-instruct"
run = recorded_run(LEARN_MODEL, "arithmetic")
learned_layers = spread_layers(30, N_LAYERS)
learned = SteeringVector.load(run / "vectors.safetensors")
lmodel = models.get(LEARN_MODEL) or load_model(LEARN_MODEL)  # loaded above when listed
train_q = [it.question for it in arithmetic_items("train")[:N_EXTRACT]]
learned = learned.with_ref_norms(reference_norms(lmodel, train_q, learned_layers))
lmodel, learned_report = recorded_reliability(
    LEARN_MODEL, learned, "arithmetic", summary_path(LEARN_MODEL, "reliability_learned"
                                                     ).with_suffix(".jsonl"),
    model=lmodel, layers=learned_layers, coeffs=COEFFS, n=N_DEFAULT, random=1)
print(learned_report.verdict())
fig = learned_report.figure()
save_figure(fig, "08", "reliability_learned")
fig

# %% [markdown]
# Read this beside notebook 05's answers. The response measures the gold answer as the
# reply's *first* tokens, while the reward the vectors were trained on checks only the final
# number: vectors that teach a template opening with a restatement ("To find 36 - 11, ...")
# move the answer later, so each layer alone can come out anti-steerable on this response
# while all of them together raise accuracy. A per-item response says something about a
# vector only where it measures what the vector was trained to change.

# %% [markdown]
# ## 3. The seed's control on generated answers
#
# Notebook 07 patched reasoning states into recall questions and scored multiple choice by
# cloze. The seed's claim is about *generated* reasoning, so here the target is free-answer
# arithmetic, where SmolLM2 is above zero: at each layer, the residual after the block at the
# prompt's last token is overwritten once while the prompt is read, then the answer is decoded
# greedily and checked by math-verify. Conditions (`steerlab.kinds_gen`): a reasoning
# prompt's state (`patch_reasoning`), another arithmetic question's (`patch_same`, the swap
# control), a recall prompt's (`patch_recall`), and the reasoning-minus-recall mean direction,
# a random and a shuffled one added at the size of the reasoning patches. Each cell against the
# unsteered answers on the same items (paired 95% bootstrap interval, McNemar p, Holm over the
# layers of each condition), then conditions against each other.

# %%
from steerlab.control_plots import kind_patching_figure  # noqa: E402
from steerlab.kinds_gen import kind_patching_gen_summary  # noqa: E402

GEN_LAYERS = spread_layers(30, N_LAYERS)
GEN_N = 16 if S.smoke else 100
GEN_SOURCES = 16 if S.smoke else 100
GEN_TOKENS = 8 if S.smoke else None  # None: the task's 32
gen_journal = summary_path(LEARN_MODEL, "kind_patching_gen").with_suffix(".jsonl")
lmodel, gen = recorded_kind_patching_gen(LEARN_MODEL, gen_journal, model=lmodel,
                                         layers=GEN_LAYERS, n=GEN_N, n_source=GEN_SOURCES,
                                         max_new_tokens=GEN_TOKENS)
a = gen.attrs
print(f"unsteered arithmetic accuracy {a['unsteered'][0]:.3f} [{a['unsteered'][1]:.3f}, "
      f"{a['unsteered'][2]:.3f}] (n={a['n']}, greedy, {a['max_new_tokens']} new tokens)")
fig = kind_patching_figure([gen], title=(
    f"{LEARN_MODEL}: states and directions written into arithmetic prompts, judged on "
    f"generated answers<br><sup>{GEN_N} arithmetic test items, {GEN_SOURCES} source prompts "
    f"per condition; edit after block L at the last prompt token; {lmodel.dtype}</sup>"
    .replace("torch.", "")))
save_figure(fig, "08", "kind_patching_gen")
gen[["layer", "condition", "accuracy", "delta", "delta_low", "delta_high", "p_mcnemar",
       "p_holm", "edit_norm"]].round(3)

# %%
summary = kind_patching_gen_summary(gen)
summary.round(3)

# %% [markdown]
# **What it shows** is in the tables above, from this run's numbers: a condition helps or
# hurts where its interval excludes zero and its Holm-adjusted p is below 0.05. If no row
# passes, the honest reading is that at this size (100 items, accuracy near 0.1) patching a
# reasoning prompt's state into an arithmetic prompt does nothing measurable that another
# prompt's state, or a direction of the same size, does not.

# %%
out = write_summary(LEARN_MODEL, "reliability", {
    "task": TASK, "scoring": SCORING, "coeffs": list(COEFFS), "n_extract": N_EXTRACT,
    "reasoning_vector": {name: {"meta": rep.meta, "table": json.loads(
        rep.table.round(4).to_json(orient="records"))} for name, rep in reports.items()},
    "learned": {"meta": learned_report.meta, "table": json.loads(
        learned_report.table.round(4).to_json(orient="records"))},
    "kind_patching_gen": {"attrs": {k: v for k, v in gen.attrs.items() if k != "sources"},
                          "cells": gen.drop(columns="correct").round(4).to_dict("records"),
                          "comparisons": summary.round(4).to_dict("records")}})
print(out)
