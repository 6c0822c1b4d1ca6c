# %% [markdown]
# # 01 · PCA of reasoning vs memorisation prompts
#
# The seed's Figure 1: last-token residuals of reasoning and memorisation prompts, projected
# on their first two principal components, one panel per model, with an arrow from the
# memorisation centroid to the reasoning centroid. Figure 2: a detailed view of the
# instruction-tuned model with a linear decision boundary fitted on half of the points and
# scored on the other half. A layer slider moves through the depth.

# %%
import pandas as pd
from ipywidgets import IntSlider

from steerlab.analysis import layer_pca, linear_probe_accuracy
from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import settings
from steerlab.plots import pca_boundary, pca_panels
from steerlab.widgets import slider_figure

S = settings()
reasoning = questions("reasoning", "extract", S.n_extract)
memorisation = questions("memorisation", "extract", S.n_extract)
DATA = (f"{len(reasoning)} reasoning + {len(memorisation)} memorisation prompts "
        "(data/, extract split)")
acts = {}
for name in S.models:
    model = load_model(name)
    acts[name] = (cache_activations(model, reasoning, chat=model.is_chat),
                  cache_activations(model, memorisation, chat=model.is_chat), model.n_layers,
                  model.is_chat)

# %% [markdown]
# ## Figure 1: one panel per model, at 40% of the depth

# %%
pcas = {n: layer_pca(r, m, round(0.4 * L)) for n, (r, m, L, _) in acts.items()}
fig1 = pca_panels(pcas, data=DATA)
save_figure(fig1, "01", "pca_panels")
fig1

# %% [markdown]
# ## How separable is each layer?
# Held-out accuracy of a logistic regression on the 2-D PCA plane and on the full width.

# %%
rows = []
for n, (r, m, L, _) in acts.items():
    for layer in range(0, L, max(1, L // 10)):
        rows.append({"model": n, "layer": layer, "pca2d_heldout": layer_pca(r, m, layer)
                     .heldout_accuracy, "full_width_heldout": linear_probe_accuracy(r, m, layer)})
separability = pd.DataFrame(rows)
separability

# %% [markdown]
# ## Figure 2: the instruction-tuned model in detail, with a layer slider

# %%
CHAT = next((n for n, a in acts.items() if a[3]), S.models[0])
r, m, L, _ = acts[CHAT]
fig2 = pca_boundary(layer_pca(r, m, round(0.4 * L)), CHAT, data=DATA)
save_figure(fig2, "01", "pca_boundary")
fig2

# %%
slider_figure(lambda layer: pca_boundary(layer_pca(r, m, layer), CHAT, data=DATA),
              layer=IntSlider(value=round(0.4 * L), min=0, max=L - 1, continuous_update=False))
