# %% [markdown]
# # 00 · Quickstart: steer a language model in five steps
#
# A 30-minute bootcamp slot. We take a small instruction-tuned model that runs on a laptop CPU
# (SmolLM2-135M-Instruct, shipped on PyPI), find a **reasoning direction** in its residual
# stream, and add it back while the model writes.
#
# 1. two prompt sets: questions that need *reasoning* vs questions answered from *memory*;
# 2. cache the residual stream after every layer, at each prompt's last token;
# 3. difference of means per layer = the steering vector (Hong et al. 2025);
# 4. add `coeff * vector` after one layer while generating;
# 5. explore layer and coefficient with sliders;
# 6. see, token by token, how far steering pushes the residual along the vector;
# 7. read the steering's receipt: where the vector was added, and by how much.
#
# `STEERLAB_SMOKE=1` shrinks everything for slow machines; the code path is the same.

# %%
from IPython.display import HTML, display

from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.figures import save_figure
from steerlab.inference import generate
from steerlab.models import load_model
from steerlab.notebooks import settings
from steerlab.steering import steer
from steerlab.tokenview import token_projection_figure, token_projections, token_view_html
from steerlab.vectors import diff_of_means
from steerlab.widgets import steered_text, steering_explorer

S = settings()
MODEL = "smollm2-135m-instruct" if "smollm2-135m-instruct" in S.models else S.models[0]
model = load_model(MODEL)
print(model.name, model.n_layers, "layers, d_model", model.d_model, model.dtype)

# %% [markdown]
# ## 1. Two prompt sets
# Shipped in `data/` (made by `data/make_prompt_sets.py`); we use their *extract* split and
# keep the *eval* split for measuring accuracy later.

# %%
reasoning = questions("reasoning", "extract", S.n_extract)
memorisation = questions("memorisation", "extract", S.n_extract)
print(len(reasoning), "reasoning, e.g.", reasoning[:2])
print(len(memorisation), "memorisation, e.g.", memorisation[:2])

# %% [markdown]
# ## 2. Cache the residual stream
# `cache_activations` returns an `Activations` object: `acts` has shape
# `(n_layers, n_prompts, d_model)`. The chat template is applied, as the model will see it.

# %%
R = cache_activations(model, reasoning, chat=True)
M = cache_activations(model, memorisation, chat=True)
R.acts.shape, M.acts.shape

# %% [markdown]
# ## 3. Difference of means
# One vector per layer: mean(reasoning) - mean(memorisation). Its norm grows with depth, like
# the residual stream itself.

# %%
vec = diff_of_means(R, M)
{layer: round(norm, 1) for layer, norm in vec.norms().items()}

# %% [markdown]
# ## 4. Steer one generation
# `steered_text` wraps `with steer(model, vec, layers=layer, coeff=coeff, scale="norm"):
# generate(...)`: coefficients are fractions of the layer's typical residual norm;
# the hooks come off when the block ends, whatever happens.

# %%
PROMPT = "What is the capital of Japan?"
LAYER = round(0.4 * model.n_layers)
print("unsteered:", steered_text(model, vec, PROMPT, LAYER, 0.0, S.max_new_tokens))
print("coeff +0.5:", steered_text(model, vec, PROMPT, LAYER, 0.5, S.max_new_tokens))
print("coeff -0.5:", steered_text(model, vec, PROMPT, LAYER, -0.5, S.max_new_tokens))

# %% [markdown]
# ## 5. Explore
# Move the sliders: the generation re-runs for the chosen layer and coefficient. Things to
# try: which layers change the *style* (step-by-step talk) without breaking the text? What
# does a negative coefficient do? Where does the output collapse?

# %%
steering_explorer(model, vec, PROMPT, layer=LAYER, coeff=0.5, max_new_tokens=S.max_new_tokens)

# %% [markdown]
# ## 6. Token view
# Each token of the prompt (chat template included) coloured by the projection of its residual
# after layer `LAYER` onto the vector's unit direction there: without steering, and with the
# vector added four layers earlier at a quarter of the residual stream's typical size
# (`scale="norm"`). Steering at the read layer itself would only shift every token by the same
# amount (`coeff x |v|`); reading later shows what the blocks in between make of the push.
# Hover a token for its value (the colours clip at the 95th percentile, so the first token, an
# attention sink with a far larger residual, does not wash out the rest).

# %%
view = token_projections(model, PROMPT, vec, layer=LAYER, coeff=0.25, scale="norm",
                         steer_layer=LAYER - 4)
display(HTML(token_view_html(view)))
fig = token_projection_figure(view)
save_figure(fig, "00", "token_view")
fig

# %% [markdown]
# ## 7. The receipt: what the steering did
# Every `steer(...)` keeps a receipt of where its edit ran; `receipt="detail"` also measures
# it. The summary line counts the forward that read the prompt (every prompt token, chat
# template included) and one forward per decoding step (one new token each), and gives the
# mean size of the change per token, `||Δh||`, next to the size the request implies (`coeff`
# times the layer's typical residual norm, `scale="norm"`); the table has one row per forward
# (`first`/`last`: the token columns changed). Its guards raise `ReceiptError` when an edit
# misses a forward it applies to, runs in the wrong phase (a `positions="prompt"` edit on a
# decoding step) or twice in one forward, or changes the activations by another amount than
# asked: a steering that silently did nothing cannot pass for a weak one.

# %%
with steer(model, vec, layers=LAYER, coeff=0.5, scale="norm", receipt="detail") as handle:
    text = generate(model, [PROMPT], S.max_new_tokens)[0]
print("coeff +0.5:", text.strip())
print(handle.receipt)
handle.receipt.table().head()

# %% [markdown]
# Steering changes *how* the model talks. Whether it changes *accuracy* is measured, with
# intervals and controls, in `02_steering_accuracy_by_layer`.
