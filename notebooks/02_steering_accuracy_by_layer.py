# %% [markdown]
# # 02 · Steering accuracy by layer, with controls
#
# The seed's Figure 3: accuracy when the reasoning vector is added at one layer, for each
# layer, against the unsteered baseline — plus what the replication said was missing:
# a **random** vector of the same norm, a **shuffled-label** difference of means, and a
# **coefficient sweep**. Coefficients are fractions of the layer's typical residual norm
# (0.2 = a fifth of ‖h‖), so they compare across layers and models.
#
# Every accuracy has a 95% Wilson interval; every change has a paired 95% bootstrap interval
# on the same items. The task is the shipped recall set as 4-way multiple choice
# (`memorisation-mc`): both small models are far above chance there, so an effect can show.
# On the reasoning sets both sit at chance (see the README), so a *gain* in reasoning accuracy
# cannot be measured on these models at all.

# %%
from ipywidgets import SelectionSlider

from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import results_path, settings, sweep_layers
from steerlab.plots import accuracy_by_layer, delta_heatmap
from steerlab.sweep import summary, sweep, verdict
from steerlab.widgets import slider_figure

S = settings()
TASK = "memorisation-mc"
tables = {}
for name in S.models:
    model = load_model(name)
    layers = sweep_layers(name, model.n_layers, S.n_layers)
    tables[name] = sweep(model, TASK, layers, S.coeffs, ("diff_means", "random", "shuffled"),
                         n=S.n_eval, extract_n=S.n_sweep_extract, out=results_path(name, TASK))
    print(verdict(tables[name]))

# %% [markdown]
# ## Figure 3: accuracy vs steering layer (one coefficient), per model

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
