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

from steerlab.analysis import cost_table
from steerlab.cost import full_finetune_steps, measure
from steerlab.data import questions
from steerlab.evaluation import evaluate
from steerlab.extraction import extract_vector
from steerlab.figures import save_figure
from steerlab.models import load_model
from steerlab.notebooks import settings
from steerlab.steering import steer
from steerlab.tasks import get_task

S = settings()
parts = []
for name in S.models:
    model = load_model(name)
    R_q = questions("reasoning", "extract", S.n_extract)
    M_q = questions("memorisation", "extract", S.n_extract)
    ext = measure(lambda: extract_vector(model, (R_q, M_q)))
    vec = ext.result
    layer = round(0.4 * model.n_layers)
    task = get_task("memorisation-mc")

    def one_cell():
        with steer(model, vec, layers=layer, coeff=0.2, scale="norm"):  # one sweep cell
            return evaluate(model, task, n=S.n_eval)

    cell = measure(one_cell)
    ft_batch = questions("reasoning", "extract", 8)
    ft = full_finetune_steps(model, ft_batch, steps=1 if S.smoke else 3)
    parts.append(cost_table(name, ext, cell, ft, n_extract_prompts=2 * len(R_q),
                            n_cell_items=cell.result.n, finetune_batch=len(ft_batch)))
costs = pd.concat(parts, ignore_index=True)
DATA = (f"{len(R_q)}+{len(M_q)} shipped extract prompts, {S.n_eval} memorisation-mc items per "
        f"cell, fine-tuning on a batch of {len(ft_batch)} reasoning prompts")
costs.round(2)

# %%
from steerlab.plots import cost_benefit_figure

fig = cost_benefit_figure(costs, data=DATA)
save_figure(fig, "04", "cost_benefit")
fig


# %% [markdown]
# The cost table the README quotes, written by this run (to `results/` the first time; once
# one is recorded there, to `runs/latest/`: wall times differ from run to run):

# %%

from steerlab.notebooks import write_summary

print(write_summary("all", "cost_benefit", {"data": DATA, "table": costs.to_dict("records")},
                    measured=True))
