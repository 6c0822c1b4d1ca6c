# %% [markdown]
# # 04 · Cost and benefit, measured on this machine
#
# The seed's Table 1 argued that run-time steering is cheap next to fine-tuning. Here are the
# numbers on this machine (a 2-core CPU): seconds and peak memory to extract a vector and to
# run one sweep cell, next to **measured** full fine-tuning steps of the same model (AdamW,
# all weights) and an **extrapolation** of those steps to one epoch over GSM8K's 7,473
# training problems (labelled as such).

# %%
import pandas as pd

from steerlab.cache import cache_activations
from steerlab.cost import full_finetune_steps, measure
from steerlab.data import questions
from steerlab.evaluate import evaluate
from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import settings
from steerlab.steering import steer
from steerlab.tasks import get_task
from steerlab.vectors import diff_of_means

S = settings()
MB = 2**20
rows = []
for name in S.models:
    model = load_model(name)
    chat = model.is_chat
    R_q = questions("reasoning", "extract", S.n_extract)
    M_q = questions("memorisation", "extract", S.n_extract)
    ext = measure(lambda: diff_of_means(cache_activations(model, R_q, chat=chat),
                                        cache_activations(model, M_q, chat=chat)))
    vec = ext.result
    layer = round(0.4 * model.n_layers)
    task = get_task("memorisation-mc")

    def one_cell():
        with steer(model, vec.normalized(), layers=layer, coeff=0.2 * float(vec[layer].norm())):
            return evaluate(model, task, n=S.n_eval)

    cell = measure(one_cell)
    ft_batch = questions("reasoning", "extract", 8)
    ft = full_finetune_steps(model, ft_batch, steps=1 if S.smoke else 3, chat=chat)
    steps_epoch = 7473 / len(ft_batch)
    rows += [
        {"model": name, "what": f"extract vector ({2 * len(R_q)} prompts, all layers)",
         "kind": "measured", "seconds": ext.seconds, "peak_rss_MB": ext.peak_rss / MB,
         "trainable_params": 0, "optimizer_state_MB": 0},
        {"model": name, "what": f"one sweep cell ({cell.result.n} items, steered)",
         "kind": "measured", "seconds": cell.seconds, "peak_rss_MB": cell.peak_rss / MB,
         "trainable_params": 0, "optimizer_state_MB": 0},
        {"model": name, "what": f"full fine-tuning step (batch {len(ft_batch)}, AdamW)",
         "kind": "measured", "seconds": ft["seconds_per_step"],
         "peak_rss_MB": ft["peak_rss_bytes"] / MB, "trainable_params": ft["trainable_params"],
         "optimizer_state_MB": ft["optimizer_state_bytes"] / MB},
        {"model": name, "what": "full fine-tuning, 1 epoch of GSM8K train (7,473 problems)",
         "kind": "extrapolated", "seconds": ft["seconds_per_step"] * steps_epoch,
         "peak_rss_MB": ft["peak_rss_bytes"] / MB, "trainable_params": ft["trainable_params"],
         "optimizer_state_MB": ft["optimizer_state_bytes"] / MB},
    ]
costs = pd.DataFrame(rows)
costs.round(2)

# %%
import plotly.express as px

fig = px.bar(costs, x="seconds", y="what", color="kind", facet_col="model", orientation="h",
             log_x=True, title="Seconds on this machine (2-core CPU): steering vs full "
             "fine-tuning (log scale; extrapolated bars are labelled)",
             template="plotly_white", height=420, width=1100)
save_figure(fig, "04", "cost_benefit")
fig
