# %% [markdown]
# # 02 · Reasoning accuracy by layer, with controls
#
# The seed's Figure 3: accuracy when the reasoning vector is added at one layer, for each
# layer, against the unsteered baseline — plus what the replication said was missing:
# a **random** vector of the same norm, a **shuffled-label** difference of means, and a
# **coefficient sweep**. Coefficients are fractions of the layer's typical residual norm
# (0.1 = a tenth of ‖h‖), so they compare across layers and models.
#
# Every accuracy has a 95% Wilson interval; every change has a paired 95% bootstrap interval
# on the same items. Three parts:
#
# 1. **Reasoning accuracy by layer** on a task where both embedded models are clearly above
#    chance: synthetic two-operand arithmetic (`arithmetic`, free answer checked with
#    math-verify; SmolLM2 with its chat template, Gemma-3-270M base with three worked
#    examples). On MMLU-Pro both models sit at chance (README), so no *gain* could show there.
# 2. **The seed's protocol**: the best layer picked on the very items it is reported on. How
#    large a "best-layer gain" does it yield from directions that carry no signal?
# 3. **Recall accuracy by layer** (`memorisation-mc`), the second panel: far above chance for
#    both models.

# %%
from ipywidgets import SelectionSlider

from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import replication_dir, results_path, settings, sweep_layers
from steerlab.plots import accuracy_by_layer, delta_heatmap, protocol_gains
from steerlab.recordings import recorded_protocol, recorded_sweep
from steerlab.replication import (
    SEED_REPORTED,
    answer_letters,
    best_layer_gains,
    gain_distribution,
    gold_letters,
    protocol_layers,
)
from steerlab.reports import summary, verdict
from steerlab.sweep_plan import SweepConfig
from steerlab.widgets import slider_figure

S = settings()
METHODS = ("diff_means", "random", "shuffled")
REASONING = "arithmetic"
reasoning = {}
for name in S.models:
    model = load_model(name)
    layers = sweep_layers(name, model.n_layers, S.n_layers)
    # a recorded sweep is read back in its own dtype and spot-checked; a missing one computed
    model, reasoning[name] = recorded_sweep(
        name, SweepConfig(REASONING, layers, S.gen_coeffs, METHODS, n=S.n_gen,
                          extract_n=S.n_sweep_extract), results_path(name, REASONING), model=model)
    print(verdict(reasoning[name]))

# %% [markdown]
# ## 1. Reasoning accuracy vs steering layer, with the controls' band
#
# The grey band spans the 95% intervals of the random and shuffled directions (the same
# norm as the reasoning vector) at each layer: what a direction with no reasoning signal
# reaches there. A reasoning-vector point above both the unsteered band and the control band
# would be a gain; the verdicts above say (Holm-adjusted) whether any cell is one.

# %%
for name, table in reasoning.items():
    for coeff in S.gen_coeffs:  # towards the reasoning side (+) and away from it (-)
        fig = accuracy_by_layer(table, coeff, bands=True,
                                title=f"{name}: {REASONING} accuracy vs steering layer, coeff "
                                f"{coeff:+g}·‖h‖ (n={int(table.n.iloc[0])}, greedy)")
        save_figure(fig, "02", f"reasoning_by_layer_{name}_{coeff:+g}".replace(".", "p"))
        fig.show()

# %%
FIRST = S.models[0]
slider_figure(lambda coeff: accuracy_by_layer(reasoning[FIRST], coeff, bands=True,
                                              title=f"{FIRST}, {REASONING}: coeff {coeff:g}"),
              coeff=SelectionSlider(options=list(S.gen_coeffs), value=max(S.gen_coeffs),
                                    description="coeff", continuous_update=False))

# %% [markdown]
# ## 2. The seed's protocol: a "best-layer gain" from no signal
#
# Hong et al.'s all-sites projection `h <- h + a (h . r̂) r̂` (a = 0.1) from each layer in
# turn, MMLU-Pro reasoning items, the best layer picked **on the same items** — for the
# reasoning direction and for random and shuffled directions, over several item draws. Here
# it is first scored by the log-probability of the answer letter (one forward per item, the
# full scale on a CPU), then as the seed scored it (200 generated tokens, the letter
# extracted), at a smaller scale. The recorded runs are `steerlab replicate` (README); these
# cells reuse their journals (in the dtype they were recorded in, one random cell of each
# computed again as a spot check), or run them.

# %%
gains, letters = {}, {}
for name in S.models:
    model = load_model(name)
    every, n, draws = (6, 100, 2) if not S.smoke else (model.n_layers, S.n_gen, 1)
    layers = protocol_layers(model, every)
    model, proto = recorded_protocol(name, replication_dir(name), draws, model=model, n=n,
                                     layers=layers,
                                     extract_n=100 if not S.smoke else S.n_sweep_extract)
    gains[name] = best_layer_gains(proto)
    letters[name] = answer_letters(proto, gold_letters(draws, n))
    print(f"{name}: best of {len(layers)} layers on the same {n} items, {draws} draws")
    print(gain_distribution(gains[name]).to_string(index=False))
fig = protocol_gains(gains, SEED_REPORTED, title="The seed's protocol: best-layer gain, per "
                     "direction and draw<br><sup>MMLU-Pro reasoning, letter scoring, best layer "
                     "picked on the evaluation items; dashed: what the seed reported</sup>")
save_figure(fig, "02", "protocol_gains")
fig.show()

# %% [markdown]
# The same protocol scored as the seed scored it: up to 200 greedy tokens per item, steered
# at every position, the answer letter extracted from the text (MMLU-Pro's extraction; `-`:
# no letter named). Slower, so fewer items per draw (50); the recorded run is in the README.
# There (fp32, every 6th layer, a = 0.1, 2 draws) no direction's best layer beats the unsteered
# run on either model: scored from the text, the protocol's "gain" is gone, and on
# Gemma-3-270M the all-sites projection breaks the text itself (no letter named).

# %%
gen_gains, gen_letters = {}, {}
for name in S.models:
    model = load_model(name)
    every, n, draws = (6, 50, 2) if not S.smoke else (model.n_layers, S.n_gen, 1)
    model, proto = recorded_protocol(name, replication_dir(name, "generate"), draws,
                                     model=model, n=n, layers=protocol_layers(model, every),
                                     scoring="generate",
                                     extract_n=100 if not S.smoke else S.n_sweep_extract)
    gen_gains[name] = best_layer_gains(proto)
    gen_letters[name] = answer_letters(proto, gold_letters(draws, n))
    print(f"{name}, generated answers: best of {len(protocol_layers(model, every))} layers on "
          f"the same {n} items, {draws} draws")
    print(gain_distribution(gen_gains[name]).to_string(index=False))
fig = protocol_gains(gen_gains, SEED_REPORTED, title="The seed's protocol with generated "
                     "answers: best-layer gain, per direction and draw<br><sup>MMLU-Pro "
                     "reasoning, 200 greedy tokens, letter extracted, best layer picked on the "
                     "evaluation items; dashed: what the seed reported</sup>")
save_figure(fig, "02", "protocol_gains_generate")
fig.show()

# %% [markdown]
# Which letters the model answered, unsteered and at each direction's best layer, next to
# the gold letters of the same items (`changed`: the share of items whose letter the steering
# moved). A model that answers one letter most of the time scores about that letter's share
# of the gold answers, whatever it reads.

# %%
letters[FIRST].round(3)

# %%
gen_letters[FIRST].round(3)

# %% [markdown]
# ## 3. Recall accuracy vs steering layer (the second panel)
#
# The shipped recall set as 4-way multiple choice (`memorisation-mc`), where both models are
# far above chance: here an effect of steering on answers can show either way.

# %%
TASK = "memorisation-mc"
tables = {}
for name in S.models:
    model = load_model(name)
    layers = sweep_layers(name, model.n_layers, S.n_layers)
    model, tables[name] = recorded_sweep(
        name, SweepConfig(TASK, layers, S.coeffs, METHODS, n=S.n_eval,
                          extract_n=S.n_sweep_extract), results_path(name, TASK), model=model)
    print(verdict(tables[name]))

# %%
figs = {}
for name, table in tables.items():
    coeff = max(S.coeffs)
    figs[name] = accuracy_by_layer(table, coeff, title=f"{name}: {TASK} accuracy vs steering "
                                   f"layer, coeff {coeff:g}·‖h‖ (n={int(table.n.iloc[0])})")
    save_figure(figs[name], "02", f"accuracy_by_layer_{name}")
    figs[name].show()

# %% [markdown]
# ## Coefficient slider

# %%
FIRST = S.models[0]
slider_figure(lambda coeff: accuracy_by_layer(tables[FIRST], coeff,
                                              title=f"{FIRST}: coeff {coeff:g}"),
              coeff=SelectionSlider(options=list(S.coeffs), value=max(S.coeffs),
                                    description="coeff", continuous_update=False))

# %% [markdown]
# ## Heatmap: layer x coefficient, change vs unsteered (diff-of-means vector)

# %%
for name, table in tables.items():
    fig = delta_heatmap(table, "diff_means", title=f"{name}, {TASK}: Δ accuracy vs unsteered "
                        f"(reasoning vector, n={int(table.n.iloc[0])})<br><sup>* = paired 95% "
                        "bootstrap CI excludes 0</sup>")
    save_figure(fig, "02", f"heatmap_{name}")
    fig.show()

# %% [markdown]
# ## The numbers

# %%
summary(tables[FIRST])
