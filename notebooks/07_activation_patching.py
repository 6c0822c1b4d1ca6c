# %% [markdown]
# # 07 · Activation patching: where does a model keep a fact?
#
# The design card asks for patching; the seed replication names "reasoning and memorisation
# activation patching" among the controls it never ran. This notebook builds the first half:
# **where in SmolLM2 a recalled fact lives**, by denoising activation patching
# (`steerlab.patching`): run a *corrupted* prompt ("... capital city of Italy ..."), write the
# *clean* run's activation ("... of France ...") at one (site, layer, position) and see how
# much of the clean answer's logit difference (Paris vs Rome) comes back: 1 = all of it,
# 0 = none. Intervals are bootstraps across prompt pairs. Data: `steerlab.data.CAPITALS`,
# template `steerlab.pairs.FACT_TEMPLATE`, each pair's corrupted prompt names the next
# country.

# %%

from ipywidgets import Dropdown, IntSlider

from steerlab.attribution import screen_and_verify
from steerlab.control_plots import head_heatmap, patching_heatmaps
from steerlab.data import CAPITALS
from steerlab.figures import save_figure
from steerlab.metrics import logit_diff
from steerlab.models import load_model
from steerlab.notebooks import settings, spread_layers, summary_path, write_summary
from steerlab.pairs import fact_pairs, pair_behaviour
from steerlab.patching import ALL, activation_patching
from steerlab.widgets import slider_figure

S = settings()
MODEL = S.models[0]
model = load_model(MODEL)
N_PAIRS = 4 if S.smoke else 16
LAYERS = spread_layers(model.n_layers, 4) if S.smoke else None  # None: every layer
pairs = fact_pairs(model, CAPITALS, n=N_PAIRS)
metric = logit_diff(model, pairs.correct, pairs.incorrect)
DATA = f"{len(pairs.clean)} capital-city pairs (steerlab.data.CAPITALS)"
print(model.name, "|", DATA, "| e.g.", repr(pairs.clean[0]), "vs", repr(pairs.corrupted[0]))

# %% [markdown]
# ## 1. Does the model know these facts?
#
# Patching maps only mean something where the clean run is right and the corrupted run is
# pulled the other way. Measured first:

# %%
behaviour = pair_behaviour(model, pairs, chat=False)  # completions: no chat template
right, flipped = behaviour.attrs["clean_right"], behaviour.attrs["corrupted_flipped"]
print(f"clean prompts preferring the right capital: {right.acc:.3f} [{right.lo:.3f}, "
      f"{right.hi:.3f}] (n={right.n})")
print(f"corrupted prompts preferring the corrupting capital: {flipped.acc:.3f} "
      f"[{flipped.lo:.3f}, {flipped.hi:.3f}]")
behaviour.round(2)

# %% [markdown]
# ## 2. Layer x position maps at three sites
#
# `resid_pre` (the residual stream entering each block), `attn_out` and `mlp_out` (what each
# block's attention and MLP add). Denoising the residual at the subject's position in early
# layers restores the answer; late in the network the information has moved to the last
# position.

# %%
maps = {site: activation_patching(model, pairs.clean, pairs.corrupted, metric, site=site,
                                  layers=LAYERS, chat=False)
        for site in ("resid_pre", "attn_out", "mlp_out")}
fig = patching_heatmaps(list(maps.values()), title=(
    f"{model.name}: denoising activation patching, normalised logit difference (clean = 1, "
    f"corrupted = 0)<br><sup>{DATA}; mean over pairs</sup>"))
save_figure(fig, "07", "patching_maps")
fig

# %% [markdown]
# ## 3. Which attention heads carry it?
#
# Each head's output (`z`) patched at every position at once, per layer and head.

# %%
heads = activation_patching(model, pairs.clean, pairs.corrupted, metric, site="z",
                            layers=LAYERS, positions=ALL, chat=False)
fig = head_heatmap(heads, title=f"{model.name}: patching each head's output (all positions)"
                   f"<br><sup>{DATA}; normalised logit difference</sup>")
save_figure(fig, "07", "head_map")
fig

# %% [markdown]
# One pair at a time, one site at a time:

# %%
slider_figure(lambda site, example: patching_heatmaps(
    [maps[site]], title=f"{model.name}, pair {example}: {pairs.clean[example]!r}",
    example=example),
    site=Dropdown(options=list(maps), value="resid_pre"),
    example=IntSlider(value=0, min=0, max=len(pairs.clean) - 1, continuous_update=False))

# %% [markdown]
# ## 4. Attribution patching as a screen
#
# The first-order estimate `(a_clean - a_corrupt) · dM/da` costs one forward and one backward
# for the whole map; the top cells are then patched for real. Where the two disagree, the
# metric is far from linear in that activation (large patches, saturated softmax).

# %%
check = screen_and_verify(model, pairs.clean, pairs.corrupted, metric,
                          top_k=4 if S.smoke else 10, site="resid_pre", layers=LAYERS,
                          chat=False)
print(f"rank agreement of the top cells (Spearman): {check.attrs['spearman']:+.2f}")
check.round(3)

# %% [markdown]
# ## 5. What this run measured
#
# Written to `results/patching_capitals_<model>.json` (the README quotes it): the behaviour
# check, each site's strongest cell, and the screen's agreement.

# %%
summary = {"model": model.hf_id, "data": DATA, "template": pairs.clean[0],
           "n_pairs": len(pairs.clean), "layers": LAYERS or "all",
           "clean_right": [right.acc, right.lo, right.hi],
           "corrupted_flipped": [flipped.acc, flipped.lo, flipped.hi],
           "strongest": {site: r.strongest() for site, r in {**maps, "z": heads}.items()},
           "screen_spearman": check.attrs["spearman"],
           "screen_cells": check[["layer", "position", "attribution", "patched"]]
           .round(4).to_dict("records")}
out = write_summary(MODEL, "patching_capitals", summary)
print(out)
for site, cell in summary["strongest"].items():
    print(f"{site:9s} strongest: layer {cell['layer']}, position {cell['position']} "
          f"({cell['token']!r}), head {cell['head']}: {cell['value']:.2f} "
          f"[{cell['ci_low']:.2f}, {cell['ci_high']:.2f}]")

# %% [markdown]
# ## 6. The seed's missing controls: reasoning and memorisation activation patching
#
# The seed steers with the difference of means of reasoning and memorisation activations and
# never asks whether *patching* those activations does the same. Here, on the shipped
# multiple-choice recall questions (`memorisation-mc`, cloze scoring, where SmolLM2 is well
# above chance) and reasoning questions (`reasoning-mc`, where it is at chance), the residual
# stream after block L at the prompt's last token (where the vectors are extracted) is edited
# before the options are scored (`steerlab.kinds.kind_patching`):
#
# * `patch_other`: the state of a prompt of the *other* kind written in (reasoning into
#   recall, or the reverse), each item paired with a seeded extraction-split prompt;
# * `patch_same`: the state of another prompt of the *same* kind written in (the swap
#   control: any prompt's state replaces this one's);
# * `mean_patch`: the difference of means of those source states added (what the other-kind
#   patches change on average: the seed's vector, at its own norm);
# * `diff_means`, `random`, `shuffled`: the difference-of-means direction, a random direction
#   and the label-shuffled difference, each added at the size of the other-kind patches (the
#   mean norm of the change `patch_other` makes at that layer), so they differ in direction only.
#
# Each point is the paired change against the unsteered model on the same items, with its 95%
# bootstrap interval. The full run (2 x 100 items x 4 layers x 6 conditions, about 7 minutes
# on 2 CPU cores) is a recording: its journal (`results/kind_patching_<model>.jsonl`) is read
# back in the dtype it was recorded in, and one randomly drawn batch of one cell is computed
# again and compared item by item (`steerlab.recordings_controls.recorded_kind_patching`); a
# missing batch is computed.

# %%
from steerlab.control_plots import kind_patching_figure
from steerlab.kinds import kind_patching_summary, kind_patching_verdict
from steerlab.recordings_controls import recorded_kind_patching

KIND_LAYERS = spread_layers(model.n_layers, 2 if S.smoke else 4)
KIND_N = 16 if S.smoke else 100
KIND_SOURCES = 16 if S.smoke else 100  # source prompts per kind (extraction split)
KIND_JOURNAL = summary_path(MODEL, "kind_patching").with_suffix(".jsonl")
kinds = {}
for target in ("memorisation-mc", "reasoning-mc"):
    kind_model, kinds[target] = recorded_kind_patching(
        MODEL, target, KIND_JOURNAL, model=model, layers=KIND_LAYERS, n=KIND_N,
        n_source=KIND_SOURCES)
KIND_DATA = (f"shipped eval items ({KIND_N} per task), {KIND_SOURCES} extract-split source "
             "prompts per kind, cloze scoring")
fig = kind_patching_figure(list(kinds.values()), title=(
    f"{model.name}: reasoning and memorisation activation patching vs difference-of-means "
    f"steering and controls<br><sup>{KIND_DATA}; edit after block L at the last prompt "
    f"token; {kind_model.dtype}</sup>".replace("torch.", "")))
save_figure(fig, "07", "kind_patching")
for frame in kinds.values():
    print(kind_patching_verdict(frame), end="\n\n")
fig

# %% [markdown]
# **What it shows** is printed above from this run's numbers; read it with these questions.
# Does writing in the other kind's state hurt more than writing in any other prompt's state
# (`patch_other - patch_same`)? Does a patch do more than an edit of the same size along the
# mean direction (`patch_other - diff_means`)? Is the mean direction more harmful or more
# helpful than a random or shuffled one of that size (`diff_means - random / shuffled`)? The
# recorded full run is summarised in the README. The per-layer comparisons:

# %%
pd_summary = {t: kind_patching_summary(f) for t, f in kinds.items()}
kind_out = write_summary(MODEL, "kind_patching", {
    "model": model.hf_id, "data": KIND_DATA, "layers": KIND_LAYERS, "n": KIND_N,
    "n_source": KIND_SOURCES,
    "targets": {t: {"attrs": {k: v for k, v in f.attrs.items() if k != "sources"},
                    "cells": f.drop(columns="correct").round(4).to_dict("records"),
                    "comparisons": pd_summary[t].round(4).to_dict("records")}
                for t, f in kinds.items()}})
print(kind_out)
pd_summary["memorisation-mc"].round(3)
