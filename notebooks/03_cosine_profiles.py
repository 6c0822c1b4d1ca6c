# %% [markdown]
# # 03 · Cosine profiles
#
# The seed's Figure 4: cosine similarity between the reasoning vector (taken at one layer) and
# every layer's activations, for reasoning and for memorisation prompts. Held-out prompts are
# used (the *eval* split), so the vector never saw them.

# %%
from steerlab.analysis import cosine_profile
from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import settings
from steerlab.plots import cosine_profiles
from steerlab.vectors import diff_of_means

S = settings()
profiles, vector_layers = {}, {}
for name in S.models:
    model = load_model(name)
    chat = model.is_chat
    vec = diff_of_means(
        cache_activations(model, questions("reasoning", "extract", S.n_extract), chat=chat),
        cache_activations(model, questions("memorisation", "extract", S.n_extract), chat=chat))
    held_r = cache_activations(model, questions("reasoning", "eval", S.n_extract), chat=chat)
    held_m = cache_activations(model, questions("memorisation", "eval", S.n_extract), chat=chat)
    vector_layers[name] = round(0.4 * model.n_layers)
    profiles[name] = (cosine_profile(vec, vector_layers[name], held_r),
                      cosine_profile(vec, vector_layers[name], held_m))
    print(name, "gap (reasoning - memorisation) at the vector's layer:",
          round(float(profiles[name][0][vector_layers[name]].mean()
                      - profiles[name][1][vector_layers[name]].mean()), 3))

# %%
fig = cosine_profiles(profiles, vector_layers,
                      title="Cosine of the reasoning vector with each layer's last-token "
                      f"activations (held-out prompts, {S.n_extract} per set)")
save_figure(fig, "03", "cosine_profiles")
fig


# %% [markdown]
# The gaps the README quotes, written by this run (per model: the vector's layer, and the
# mean cosine over held-out reasoning and memorisation prompts at every layer):

# %%

from steerlab.notebooks import write_summary

print(write_summary("all", "cosine_profiles", {
    "n_per_set": S.n_extract,
    "models": {name: {"vector_layer": vector_layers[name],
                      "gap_at_vector_layer": float(profiles[name][0][vector_layers[name]].mean()
                                                   - profiles[name][1][vector_layers[name]].mean()),
                      "reasoning_mean": [float(p.mean()) for p in profiles[name][0]],
                      "memorisation_mean": [float(p.mean()) for p in profiles[name][1]]}
               for name in S.models}}))
