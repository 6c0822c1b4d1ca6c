# %% [markdown]
# # 01 · PCA of reasoning vs memorisation prompts
#
# The seed's Figure 1: last-token residuals of reasoning and memorisation prompts, projected
# on their first two principal components, one panel per model, with an arrow from the
# memorisation centroid to the reasoning centroid. Figure 2: a detailed view of the
# instruction-tuned model with a linear decision boundary fitted on half of the points and
# scored on the other half. A layer slider moves through the depth.

# %%
from ipywidgets import IntSlider

from steerlab.analysis import chat_model, depth_layer, depth_pcas, layer_pca, separability_table
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
                  cache_activations(model, memorisation, chat=model.is_chat))

# %% [markdown]
# ## Figure 1: one panel per model, at 40% of the depth

# %%
fig1 = pca_panels(depth_pcas(acts, frac=0.4), data=DATA)
save_figure(fig1, "01", "pca_panels")
fig1

# %% [markdown]
# ## How separable is each layer?
# Held-out accuracy of a logistic regression on the 2-D PCA plane and on the full width.

# %%
separability = separability_table(acts, n_points=10)
separability

# %% [markdown]
# ## Figure 2: the instruction-tuned model in detail, with a layer slider

# %%
CHAT = chat_model(acts)
r, m = acts[CHAT]
fig2 = pca_boundary(layer_pca(r, m, depth_layer(r.layers, 0.4)), CHAT, data=DATA)
save_figure(fig2, "01", "pca_boundary")
fig2

# %%
slider_figure(lambda layer: pca_boundary(layer_pca(r, m, layer), CHAT, data=DATA),
              layer=IntSlider(value=depth_layer(r.layers, 0.4), min=min(r.layers),
                              max=max(r.layers), continuous_update=False))


# %% [markdown]
# The separability numbers the README quotes, written by this run:

# %%

from steerlab.notebooks import write_summary

print(write_summary("all", "pca_separability",
                    {"data": DATA, "models": S.models,
                     "table": separability.to_dict("records")}))
