# %% [markdown]
# # Lesson 4 · Reading a vector
#
# *About 25 minutes, CPU only.* A steering vector is 576 numbers. What does it *mean*? One
# cheap reading is the **logit lens**: compare the vector with every row of the unembedding
# matrix (the matrix that turns the last residual stream into a score per token). Tokens whose
# rows point the same way are the ones the vector would make more likely if it reached the
# output unchanged. You will
#
# 1. write the cosine of a vector with every unembedding row (exercise 4.1);
# 2. turn scores into the top tokens (exercise 4.2);
# 3. read the reasoning vector layer by layer **next to a random control**, and group its top
#    tokens into clusters.

# %%
import torch
from sklearn.cluster import KMeans

from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.models import load_model
from steerlab.notebooks import smoke
from steerlab.teach import NotDoneYet, check_top_tokens, check_unembedding_cosines
from steerlab.teach.reading import reference_cosines, unembedding
from steerlab.vectors import diff_of_means, random_like

# %%
N = 8 if smoke() else 100  # prompts per set
LAYERS = [3, 12, 20, 27]
model = load_model("smollm2-135m-instruct")
R = cache_activations(model, questions("reasoning", "extract", N), layers=LAYERS, chat=True)
M = cache_activations(model, questions("memorisation", "extract", N), layers=LAYERS, chat=True)
vec = diff_of_means(R, M)  # reasoning minus memorisation, one (d_model,) vector per layer
control = random_like(vec, seed=0)  # random directions with the same norms
W = model.hf.get_output_embeddings().weight
print("unembedding:", tuple(W.shape), W.dtype, "| tied to the input embedding:",
      W is model.hf.get_input_embeddings().weight)

# %% [markdown]
# ## Exercise 4.1 · Cosine with every unembedding row
#
# Write `unembedding_cosines(model, vector)`: a float tensor of shape `(vocab,)` whose entry
# `i` is the cosine between `vector` (d_model,) and row `i` of
# `model.hf.get_output_embeddings().weight` (vocab, d_model). Work in float32: the model's
# weights may be bf16. A cosine divides by **both** norms -- the vector's and each row's.

# %%
def unembedding_cosines(model, vector):
    """(vocab,) cosine of ``vector`` with each unembedding row."""
    # EXERCISE
    # Hint: W = model.hf.get_output_embeddings().weight.float(); divide each row by its norm
    # (W.norm(dim=1, keepdim=True)) and the vector by its norm; one matrix-vector product.
    # SOLUTION
    w = model.hf.get_output_embeddings().weight.detach().float()  # (vocab, d_model)
    rows = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    v = vector.float()
    return rows @ (v / v.norm())
    # END SOLUTION


# %%
check_unembedding_cosines(unembedding_cosines, model)

# %% [markdown]
# ## Exercise 4.2 · The top tokens
#
# Write `top_tokens(model, scores, k)`: the `k` tokens with the highest `scores` (vocab,),
# highest first, each as text (`model.tokenizer.decode([token_id])`).

# %%
def top_tokens(model, scores, k):
    """The ``k`` highest-scoring tokens as strings, highest first."""
    # EXERCISE
    # Hint: scores.topk(k).indices gives the ids, highest first; decode each one alone.
    # SOLUTION
    ids = scores.topk(k).indices.tolist()
    return [model.tokenizer.decode([i]) for i in ids]
    # END SOLUTION


# %%
check_top_tokens(top_tokens, model)

# %% [markdown]
# ## 1. The reasoning vector through the lens, next to a random one
#
# From here on we use the reference implementation (`steerlab.teach.reading`), so this runs
# before you finish. For each layer: the largest cosine, and the tokens at both ends. The
# random control matters: with 49,152 rows in 576 dimensions, *some* rows always line up with
# *any* direction by chance (about 0.1-0.15 here). A reading means something only where the
# real vector's cosines clearly beat the control's. (`�` is a token holding part of a
# multi-byte character.)

# %%
def ends(scores, k=10):
    top = [model.tokenizer.decode([i]) for i in scores.topk(k).indices.tolist()]
    bottom = [model.tokenizer.decode([i]) for i in (-scores).topk(k).indices.tolist()]
    return top, bottom


for layer in LAYERS:
    cos, cos_rand = reference_cosines(model, vec[layer]), reference_cosines(model, control[layer])
    top, bottom = ends(cos)
    print(f"layer {layer:2d}: max cosine {cos.max():.3f} (random control {cos_rand.max():.3f})")
    print(f"   top:    {top}")
    print(f"   bottom: {bottom}")

# %% [markdown]
# Try your own `unembedding_cosines` and `top_tokens` here, or another layer. The lens is
# most trustworthy near the output: a middle layer's residual stream still has to pass
# through many blocks (and the final norm) before it meets the unembedding.

# %%
try:
    print(top_tokens(model, unembedding_cosines(model, vec[LAYERS[-1]]), 15))
except NotDoneYet:
    print("finish exercises 4.1 and 4.2 to read the vector with your own code")

# %% [markdown]
# ## 2. Clusters of top tokens
#
# Fifteen tokens are easy to over-read. Take the top 150 instead, represent each token by its
# (unit) unembedding row, and group them with k-means: each cluster is a theme the vector
# points to, named by the tokens nearest its centre.

# %%
def token_clusters(scores, n_tokens=150, n_clusters=5, per_cluster=8):
    ids = scores.topk(n_tokens).indices
    rows = torch.nn.functional.normalize(unembedding(model)[ids], dim=1).numpy()
    km = KMeans(n_clusters=n_clusters, n_init=10, random_state=0).fit(rows)
    for c in range(n_clusters):
        members = (km.labels_ == c).nonzero()[0]
        dist = ((rows[members] - km.cluster_centers_[c]) ** 2).sum(1)
        central = [model.tokenizer.decode([int(ids[i])]) for i in members[dist.argsort()]]
        print(f"  cluster {c} ({len(members):3d} tokens): {central[:per_cluster]}")


layer = LAYERS[-1]
print(f"reasoning vector, layer {layer}:")
token_clusters(reference_cosines(model, vec[layer]))
print(f"random control, layer {layer}:")
token_clusters(reference_cosines(model, control[layer]))

# %% [markdown]
# ## Questions to discuss
#
# 1. Do the top tokens of the reasoning vector look like "reasoning" (numbers, "therefore",
#    "step")? Would you have said the same about the random control's clusters if nobody told
#    you it was random?
# 2. Why does the sign matter? What do the bottom tokens say?
# 3. SmolLM2 ties its unembedding to its input embedding. What would the same cosines with the
#    *input* embedding mean for a model that does not?
