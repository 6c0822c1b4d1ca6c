# %% [markdown]
# # 06 · Reading vectors: logit lens, token clusters, and what training costs
#
# Sinii et al. read each learned vector through the unembedding: the cosine similarity of the
# layer's vector with every row of the unembedding matrix, top tokens per layer, and then
# group those tokens into themes (their Table 2). Here the same for the vectors learned in
# notebook 05 (SmolLM2-135M-Instruct, synthetic arithmetic), next to the
# difference-of-means vector, with a layer slider, and the resource table (their Table 3)
# measured on this machine.

# %%
from steerlab.analysis import cluster_view, resource_table, step_time_note
from steerlab.cache import cache_activations
from steerlab.cost import training_step_costs
from steerlab.data import questions
from steerlab.figures import save_figure
from steerlab.lens import cluster_table, layer_cosines, logit_lens
from steerlab.models import load_model
from steerlab.notebooks import recorded_run, run_dir, settings
from steerlab.plots import (
    cluster_table_figure,
    layer_cosine_figure,
    logit_lens_figure,
    resource_table_figure,
)
from steerlab.train import TrainConfig, train_rloo
from steerlab.train_journal import history
from steerlab.vectors import SteeringVector, diff_of_means

S = settings()
MODEL = "smollm2-135m-instruct"
model = load_model(MODEL)
R_q = questions("reasoning", "extract", S.n_extract)
M_q = questions("memorisation", "extract", S.n_extract)
dom = diff_of_means(cache_activations(model, R_q, chat=True),
                    cache_activations(model, M_q, chat=True))
ckpt = recorded_run(MODEL, "arithmetic") / "vectors.safetensors"
RUN = ckpt.parent if ckpt.is_file() else run_dir(MODEL, "arithmetic")
if ckpt.is_file():
    learned = SteeringVector.load(ckpt, model)
    source = f"recorded run, step {learned.meta['step']}"
else:  # an installed copy without results/: train a toy vector (smoke size) here
    learned = train_rloo(model, TrainConfig(steps=2, prompts_per_step=4, samples=4,
                                            max_new_tokens=12, eval_every=0),
                         RUN).vector
    source = "2-step toy run"
    if min(learned.norms().values()) == 0:
        print("The toy run drew no correct answer, so its vectors are still zero: reading the "
              "difference-of-means vector instead. Run notebook 05 in full for real vectors.")
        learned, source = dom, "difference of means (no learned run available)"
print(f"vectors read below: {source}; layers 0..{max(learned.layers)}")

# %% [markdown]
# ## Logit lens of one layer (slider)
# Top and bottom tokens by cosine with the unembedding rows (special and unused tokens
# skipped). Move the slider to read another layer.

# %%
K = 15


def lens_figure(layer: int):
    return logit_lens_figure(logit_lens(learned, model, layers=layer, k=K), MODEL,
                             data=f"trained on synthetic arithmetic ({source})")


from ipywidgets import IntSlider

from steerlab.widgets import slider_figure

slider_figure(lens_figure, layer=IntSlider(value=model.n_layers // 2, min=0,
                                           max=model.n_layers - 1, description="layer"))

# %% [markdown]
# ## Table 2: themes of the top tokens at three depths
# Each layer's top-50 tokens are embedded with the model's own unembedding rows (unit
# length) and clustered with k-means (k by silhouette, 2..8); a cluster is named by its five
# most central tokens. No external service is involved.

# %%
show_layers = [2, model.n_layers // 2, model.n_layers - 3]
TOP = 50 if not S.smoke else 12
clusters = cluster_table(learned, model, layers=show_layers, k=TOP)
fig = cluster_table_figure(clusters, MODEL, data=f"synthetic arithmetic, {source}", k=TOP)
save_figure(fig, "06", "cluster_table")
cluster_view(clusters)

# %%
save_figure(lens_figure(show_layers[1]), "06", "logit_lens_mid_layer")

# %% [markdown]
# ## Learned vector vs the difference-of-means vector
# Cosine similarity per layer between the learned vector and the reasoning-minus-memorisation
# difference of means (shipped prompt sets, last token). In 576 dimensions two random
# directions have |cosine| of about 0.04.

# %%
cos = layer_cosines(learned, dom)
fig = layer_cosine_figure(cos, title=(
    f"cosine(learned vector, difference of means) per layer · {MODEL}<br>learned on synthetic "
    f"arithmetic, diff-of-means from {len(R_q)}+{len(M_q)} shipped prompts"))
save_figure(fig, "06", "learned_vs_diff_of_means")
cos.round(3).T

# %% [markdown]
# ## Resource table (the paper's Table 3, with this machine's numbers)
# A few real optimizer steps of each method on the same batch (8 prompts, next-token loss):
# steering vectors (Adam, model frozen), LoRA rank 8 on every MLP down-projection (peft),
# and full fine-tuning (AdamW, all weights). The RLOO step time comes from the recorded run.
# The paper's own setting is given by its parameter count (one d-vector per layer:
# Llama-3.1-8B 32 x 4096 = 131,072 parameters, 0.0016% of the model, as its abstract
# states); we could not reach its hardware table offline and do not quote numbers from it.

# %%
batch = questions("reasoning", "extract", 8)
steps = 1 if S.smoke else 3
costs = [training_step_costs(model, batch, method, steps=steps)
         for method in ("vectors", "lora", "full")]
table = resource_table(costs, batch_size=len(batch))
print(step_time_note(history(RUN)))
fig = resource_table_figure(table, MODEL, dtype=model.dtype,
                            data=f"batch of {len(batch)} shipped prompts")
save_figure(fig, "06", "resource_table")
table.round(4)


# %% [markdown]
# The cluster table, the layer cosines and the resource table the README quotes, written by
# this run (to `results/` the first time; once recorded there, to `runs/latest/`: the
# resource table's wall times differ from run to run):

# %%

from steerlab.notebooks import write_summary

print(write_summary(MODEL, "lens_and_resources", {
    "vectors": source, "clusters": clusters.to_dict("records"),
    "layer_cosines": cos.to_dict("records"), "resources": table.to_dict("records")},
    measured=True))
