# %% [markdown]
# # Lesson 1 · Caching the residual stream, and the difference of means
#
# *About 30 minutes, CPU only.* We open up a small instruction-tuned model (SmolLM2-135M-Instruct,
# shipped on PyPI, runs on a laptop) and read its **residual stream**: the vector each decoder
# block adds its work to, one per token position. By the end you will have
#
# 1. written a forward hook that copies the residual stream after one block (exercise 1.1),
#    and compared it with `steerlab.cache.cache_activations`;
# 2. written the **difference of means** of two prompt sets (exercise 1.2): the steering vector
#    of Hong et al. (2025), "reasoning minus memorisation";
# 3. measured how stable that vector is when you change the prompts it comes from.
#
# Each exercise is a function with a stub that raises `NotDoneYet`. Replace the stub, then run
# the check cell below it: it runs your function on a tiny random model and on SmolLM2 and
# says what it expected, what came back, and a hint. `STEERLAB_SMOKE=1` makes every cell
# smaller (for a slow laptop); the code is the same.

# %%
import time

import torch

from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.models import load_model
from steerlab.notebooks import smoke
from steerlab.teach import (
    NotDoneYet,
    check_last_token_residual,
    check_mean_difference,
    count_hooks,
)
from steerlab.vectors import cosine, diff_of_means

# %%
N = 8 if smoke() else 64  # prompts per set
LAYER = 12  # a middle layer of SmolLM2's 30
model = load_model("smollm2-135m-instruct")
print(model.name, "|", model.n_layers, "layers | d_model", model.d_model, "|", model.dtype)

# %% [markdown]
# ## 1. What a block hands on
#
# `model.layers` is the list of decoder blocks (`model.hf` is the transformers model itself).
# A **forward hook** is a function `hook(module, args, output)` that PyTorch calls after the
# module's forward; whatever it returns (if not `None`) replaces the output. A block's output
# is the residual stream after it, shape `(batch, tokens, d_model)` -- in transformers 5 a
# plain tensor for most models, a tuple whose first element is that tensor for some others.
#
# `register_forward_hook` returns a handle; the hook stays until `handle.remove()`. Hooks are
# global state on the model, so always remove them in `finally`.

# %%
seen = {}


def peek(module, args, output):
    h = output[0] if isinstance(output, tuple) else output
    seen["type"], seen["shape"] = type(output).__name__, tuple(h.shape)


handle = model.layers[LAYER].register_forward_hook(peek)
try:
    with torch.no_grad():
        model.hf(**model.encode(["What is the capital of Japan?"]))
finally:
    handle.remove()
print(seen, "| hooks left on the model:", count_hooks(model))

# %% [markdown]
# ## Exercise 1.1 · The last token's residual stream
#
# Write `last_token_residual(model, prompts, layer)`: for each prompt, the residual stream
# after block `layer` at the prompt's **last token**, stacked into a float32 tensor of shape
# `(n_prompts, d_model)`. No chat template: encode with `model.encode([prompt])`.
#
# Why the last token? In a causal model it is the only position that has read the whole
# prompt, and it is where the next token is decided.

# %%
def last_token_residual(model, prompts, layer):
    """(n_prompts, d_model) float32 residual stream after block ``layer``, last token."""
    # EXERCISE
    # Hint: register a hook on model.layers[layer] that appends h[0, -1].float() to a list;
    # run model.hf(**model.encode([p])) for one prompt at a time, under torch.no_grad();
    # remove the handle in a `finally:` block; return torch.stack(rows).
    # SOLUTION
    rows = []

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output  # (1, T, d_model)
        rows.append(h[0, -1].detach().float())

    handle = model.layers[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            for prompt in prompts:
                model.hf(**model.encode([prompt]))
    finally:
        handle.remove()
    return torch.stack(rows)
    # END SOLUTION


# %%
check_last_token_residual(last_token_residual, model)

# %% [markdown]
# ### Yours against steerlab's
#
# `cache_activations` does the same thing in batches. Batching needs padding; steerlab pads on
# the **right** (after the prompt), where a causal model cannot let pad tokens touch the
# prompt's residuals, and reads each row at its own last real token. It also stops the
# forward pass after the last layer it needs. (If your function is still the stub, this cell
# only times steerlab's.)

# %%
prompts = questions("reasoning", "extract", N)
t0 = time.perf_counter()
theirs = cache_activations(model, prompts, layers=[LAYER], chat=False).at(LAYER)
t_lib = time.perf_counter() - t0
try:
    t0 = time.perf_counter()
    mine = last_token_residual(model, prompts, LAYER)
    t_mine = time.perf_counter() - t0
    worst = ((mine - theirs).norm(dim=1) / theirs.norm(dim=1)).max()
    print(f"yours: {t_mine:.2f} s one at a time; steerlab: {t_lib:.2f} s batched; largest "
          f"relative difference of a row: {worst:.4f}")
except NotDoneYet:
    print(f"steerlab: {len(prompts)} prompts in {t_lib:.2f} s; finish exercise 1.1 to compare.")

# %% [markdown]
# ## Exercise 1.2 · The difference of means
#
# Given last-token activations of a *positive* set (`pos`, shape `(n_pos, d_model)`) and a
# *negative* set (`neg`, `(n_neg, d_model)`), return the mean of `pos` minus the mean of `neg`,
# shape `(d_model,)`. The two sets need not have the same size. Do not normalise: steering
# coefficients are calibrated on this raw vector.

# %%
def mean_difference(pos, neg):
    """(d_model,) mean(pos) - mean(neg) over prompts."""
    # EXERCISE
    # Hint: average each set over its prompts (dim=0), then subtract.
    # SOLUTION
    return pos.mean(dim=0) - neg.mean(dim=0)
    # END SOLUTION


# %%
check_mean_difference(mean_difference, model)

# %% [markdown]
# ## 2. The reasoning direction, layer by layer
#
# From here on we use steerlab's functions (so this notebook runs even before you finish).
# We cache the last token of `N` reasoning and `N` memorisation questions at **every** layer,
# with the chat template (as the model sees a question), and take the difference of means per
# layer. Its norm grows with depth, like the residual stream itself: a raw coefficient means
# different things at different layers.

# %%
reasoning = questions("reasoning", "extract", N)
memorisation = questions("memorisation", "extract", N)
R = cache_activations(model, reasoning, chat=True)
M = cache_activations(model, memorisation, chat=True)
vec = diff_of_means(R, M)
resid = R.acts.norm(dim=-1).mean(dim=1)  # (n_layers,) typical residual norm per layer
for layer in range(0, model.n_layers, 3):
    print(f"layer {layer:2d}: |vector| {vec.norms()[layer]:7.1f}   |h| {resid[layer]:7.1f}")

# %% [markdown]
# ## 3. How stable is the direction?
#
# A vector from 64 prompts is an estimate. Split each set in two halves, take the difference of
# means on each half, and compare the two directions: a cosine near 1 means the prompts agree
# on the direction; a low cosine means it is mostly noise of the particular prompts.

# %%
half = R.n_prompts // 2
first = diff_of_means(R.select(range(half)), M.select(range(half)))
second = diff_of_means(R.select(range(half, R.n_prompts)), M.select(range(half, M.n_prompts)))
for layer in range(0, model.n_layers, 3):
    print(f"layer {layer:2d}: split-half cosine {cosine(first[layer], second[layer]):.3f}")

# %% [markdown]
# ## Questions to discuss
#
# 1. Your function ran one prompt at a time. Batch the prompts instead, padded on the right
#    (`model.encode(prompts, padding_side="right")`): what does `h[:, -1]` read for the
#    shorter prompts? And with the default left padding? (Try both; the check says which rows
#    differ.)
# 2. `output_hidden_states=True` also returns residuals. Which index is "after block 12"?
# 3. Is the direction already stable at layer 0? What would that say about *what* separates
#    the two prompt sets (meaning, or just wording)?
