# %% [markdown]
# # Lesson 5 · Activation patching
#
# *About 40 minutes, CPU only.* Lessons 1-4 *added* directions to the residual stream. Now we
# ask **where** a piece of knowledge travels through the model. SmolLM2 completes "The Eiffel
# Tower is in the city of" with " Paris" and "The Colosseum is in the city of" with " Rome".
# Run the Colosseum prompt (the *corrupted* run), but at one block and one token position
# write in the residual stream of the Eiffel Tower prompt (the *clean* run). If " Paris" comes
# back, that (layer, position) carries what the model needs to say Paris. One such patch per
# cell gives a layer x position map: **activation patching** (here *denoising*). You will
#
# 1. write one patch with two forward *pre*-hooks (exercise 5.1);
# 2. loop it over layers and positions into a map (exercise 5.2);
# 3. write the normalised logit difference that puts every map on one scale, clean = 1 and
#    corrupted = 0 (exercise 5.3), and compare your map with
#    `steerlab.patching.activation_patching`;
# 4. screen the same map with **attribution patching** -- a first-order estimate of every cell
#    from one backward pass -- and see where it can be trusted.

# %%
import pandas as pd
import torch

from steerlab.attribution import attribution_patching, screen_and_verify
from steerlab.inference import next_token_logits
from steerlab.metrics import logit_diff
from steerlab.models import load_model
from steerlab.notebooks import smoke
from steerlab.patching import activation_patching
from steerlab.teach import (
    NotDoneYet,
    check_normalised_logit_diff,
    check_patch_residual,
    check_patching_map,
    count_hooks,
)
from steerlab.teach.patching import answer_ids, last_logits, reference_patches

# %%
LAYERS = [0, 24] if smoke() else list(range(0, 30, 3))  # the blocks a map covers
OWN = LAYERS[-1:] if smoke() else LAYERS[::2]  # rows your own map redoes (2 forwards a cell)
MID, LATE = 12, 24  # two blocks we look at closely
TOP_K = 4 if smoke() else 10  # cells attribution patching hands on to real patching
CLEAN = "The Eiffel Tower is in the city of"
CORRUPTED = "The Colosseum is in the city of"
ANSWER, WRONG = " Paris", " Rome"
model = load_model("smollm2-135m-instruct")


def token_strings(prompt):
    return [model.tokenizer.decode([i]) for i in model.encode([prompt])["input_ids"][0]]


tokens = token_strings(CLEAN)
print(model.name, "|", model.n_layers, "layers |", model.dtype)
print("clean:    ", tokens)
print("corrupted:", token_strings(CORRUPTED))

# %% [markdown]
# ## 1. Does the model know the answer?
#
# Patching only makes sense on a behaviour the model has: on the clean prompt it must prefer
# the clean answer, on the corrupted prompt the other one. We measure the **logit difference**
# `logit(" Paris") - logit(" Rome")` at the last token (each answer is one token, with its
# leading space). Patching also writes position *p* of one run into position *p* of the other,
# so the two prompts of a pair must have **the same number of tokens** -- check, and choose
# pairs that do (" Colosseum" is three tokens, like " Eiffel Tower"; " Big Ben" is not).

# %%
PAIRS = [(CLEAN, CORRUPTED, ANSWER, WRONG),
         ("The Brandenburg Gate is in the city of", CORRUPTED, " Berlin", WRONG),
         ("The Statue of Liberty is in the city of", CLEAN, " New", ANSWER)]
prompts = sorted({p for pair in PAIRS for p in pair[:2]})
final = dict(zip(prompts, next_token_logits(model, prompts), strict=True))  # one batch
for clean, corrupted, right, wrong in PAIRS:
    good, bad = answer_ids(model, right, wrong)
    n = [len(token_strings(p)) for p in (clean, corrupted)]
    print(f"tokens {n[0]} vs {n[1]}" + ("" if n[0] == n[1] else "  <- not patchable"))
    for prompt, sign in ((clean, 1), (corrupted, -1)):
        lg = final[prompt]
        top = model.tokenizer.decode([int(lg.argmax())])
        ld = float(lg[good] - lg[bad])
        verdict = "right" if sign * ld > 0 else "WRONG"
        print(f"   {prompt!r:42} top {top!r:10} logit({right!r}) - logit({wrong!r}) = "
              f"{ld:+6.2f} ({verdict})")

GOOD, BAD = answer_ids(model, ANSWER, WRONG)
LD_CLEAN, LD_CORRUPT = (float(lg[GOOD] - lg[BAD])  # each prompt alone, as patching runs it
                        for lg in (last_logits(model, CLEAN), last_logits(model, CORRUPTED)))

# %% [markdown]
# ## 2. A pre-hook sees a block's input
#
# Lessons 1 and 2 used *forward hooks*, `hook(module, args, output)`, which see a block's
# **output**. A **forward pre-hook**, `hook(module, args)`, runs *before* the block and sees
# its **input**: `args[0]` is the residual stream entering block `l`, shape
# `(batch, tokens, d_model)` -- the site `resid_pre` of layer `l`. If the pre-hook returns a
# tuple, that tuple replaces the block's positional arguments. Careful with the numbering:
# block `l`'s input is block `l-1`'s output, and in `output_hidden_states` it is
# `hidden_states[l]` (index 0 holds the embeddings).

# %%
seen = {}


def peek(module, args):
    seen["args"] = len(args)
    seen["input"] = args[0].detach().clone()


handle = model.layers[MID].register_forward_pre_hook(peek)
try:
    with torch.no_grad():
        out = model.hf(**model.encode([CLEAN]), output_hidden_states=True)
finally:
    handle.remove()
print("positional args:", seen["args"], "| block input:", tuple(seen["input"].shape))
for k in (MID - 1, MID, MID + 1):
    diff = (out.hidden_states[k] - seen["input"]).abs().max()
    print(f"   max |hidden_states[{k}] - input of block {MID}| = {float(diff):.3g}")
print("hooks left on the model:", count_hooks(model))

# %% [markdown]
# ## Exercise 5.1 · One residual patch
#
# Write `patch_residual(model, clean, corrupted, layer, pos)`: run the **clean** prompt and
# keep block `layer`'s input; then run the **corrupted** prompt with that input written in at
# position `pos` only (every other position keeps the corrupted run's value). Return the
# corrupted run's logits at its last token, shape `(vocab,)`, float32. Two pre-hooks on
# `model.layers[layer]`, each removed in `finally` -- a patch left on the model would quietly
# patch every later run.

# %%
def patch_residual(model, clean, corrupted, layer, pos):
    """(vocab,) last-token logits of ``corrupted`` with the clean run's residual stream written
    into block ``layer``'s input at position ``pos``."""
    # EXERCISE
    # Hint: 1) a pre-hook on model.layers[layer] that stores args[0].detach().clone() while
    # model.hf(**model.encode([clean])) runs (under torch.no_grad()); remove it. 2) a pre-hook
    # that returns (h, *args[1:]) with h = args[0].clone() and h[:, pos] = stored[:, pos] while
    # the corrupted prompt runs; remove it in finally. Return .logits[0, -1].float().
    # SOLUTION
    store = {}

    def grab(module, args):
        store["h"] = args[0].detach().clone()  # (1, T, d_model): block `layer`'s input

    def write(module, args):
        h = args[0].clone()
        h[:, pos] = store["h"][:, pos]
        return (h, *args[1:])  # replaces the block's positional arguments

    with torch.no_grad():
        handle = model.layers[layer].register_forward_pre_hook(grab)
        try:
            model.hf(**model.encode([clean]))
        finally:
            handle.remove()
        handle = model.layers[layer].register_forward_pre_hook(write)
        try:
            logits = model.hf(**model.encode([corrupted])).logits
        finally:
            handle.remove()
    return logits[0, -1].float()
    # END SOLUTION


# %%
check_patch_residual(patch_residual, model)

# %% [markdown]
# Four patches, with steerlab's own version (`reference_patches`, so this runs before you
# finish): a token of the subject (" iffel") and the last token (" of"), each in a middle
# block and in a late one. Which ones bring " Paris" back?

# %%
SUBJECT, LAST = tokens.index("iffel"), len(tokens) - 1
patched = reference_patches(model, CLEAN, CORRUPTED, [MID, LATE], [SUBJECT, LAST])
print(f"unpatched: clean {LD_CLEAN:+.2f}, corrupted {LD_CORRUPT:+.2f}")
for i, layer in enumerate((MID, LATE)):
    for j, pos in enumerate((SUBJECT, LAST)):
        lg = patched[i, j]
        print(f"patch block {layer:2d}'s input at {tokens[pos]!r:8}: top "
              f"{model.tokenizer.decode([int(lg.argmax())])!r:8} logit difference "
              f"{float(lg[GOOD] - lg[BAD]):+6.2f}")

# %% [markdown]
# ## Exercise 5.2 · The layer x position map
#
# Write `patching_map(model, clean, corrupted, layers, metric)`: a float tensor of shape
# `(len(layers), n_tokens)` whose entry `[i, p]` is `metric(logits)` for the patch at block
# `layers[i]`, position `p`, for every position of the prompt. `metric` turns a `(vocab,)`
# logits vector into one number. Rows are layers (the order of `layers`), columns positions.

# %%
def patching_map(model, clean, corrupted, layers, metric):
    """(len(layers), n_tokens): ``metric`` of the corrupted run patched at each cell."""
    # EXERCISE
    # Hint: n = model.encode([clean])["input_ids"].shape[1]; out = torch.zeros(len(layers), n);
    # for i, layer in enumerate(layers), for p in range(n):
    # out[i, p] = metric(patch_residual(model, clean, corrupted, layer, p)).
    # SOLUTION
    n = model.encode([clean])["input_ids"].shape[1]
    out = torch.zeros(len(layers), n)
    for i, layer in enumerate(layers):
        for p in range(n):
            out[i, p] = metric(patch_residual(model, clean, corrupted, layer, p))
    return out
    # END SOLUTION


# %%
check_patching_map(patching_map, model)

# %% [markdown]
# Here is the map with the raw logit difference as the metric (steerlab's
# `activation_patching` with `normalise=False`). Its numbers are in logits: the corrupted run
# sits at about -9 and the clean run at about +3, so a cell of 0.5 means little until you
# remember both ends -- and another pair has other ends.

# %%
def show(values, title):
    frame = pd.DataFrame(values.numpy(), index=[f"block {l:2d}" for l in LAYERS], columns=tokens)
    print(title)
    print(frame.round(2).to_string())


raw = activation_patching(model, [CLEAN], [CORRUPTED],
                          logit_diff(model, [ANSWER], [WRONG], normalise=False), layers=LAYERS,
                          chat=False)
show(raw.tensor, f"logit difference after patching (clean run {raw.clean:+.2f}, corrupted run "
                 f"{raw.corrupted:+.2f})")

# %% [markdown]
# ## Exercise 5.3 · The normalised logit difference
#
# Write `normalised_logit_diff(logits, correct_id, incorrect_id, ld_clean, ld_corrupt)`:
# `ld = logits[correct_id] - logits[incorrect_id]`, rescaled to
# `(ld - ld_corrupt) / (ld_clean - ld_corrupt)`, a plain float. The clean run scores 1, the
# corrupted run 0, and a cell reads as "the fraction of the clean behaviour this patch brings
# back" -- the scale of `steerlab.metrics.logit_diff` (and of the IOI paper).

# %%
def normalised_logit_diff(logits, correct_id, incorrect_id, ld_clean, ld_corrupt):
    """(ld - ld_corrupt) / (ld_clean - ld_corrupt) for ld = logit(correct) - logit(incorrect)."""
    # EXERCISE
    # Hint: ld = logits[correct_id] - logits[incorrect_id]; subtract the corrupted run's value
    # and divide by the gap between the two runs; return float(...).
    # SOLUTION
    ld = logits[correct_id] - logits[incorrect_id]
    return float((ld - ld_corrupt) / (ld_clean - ld_corrupt))
    # END SOLUTION


# %%
check_normalised_logit_diff(normalised_logit_diff, model)

# %% [markdown]
# ## 3. Your map next to steerlab's
#
# `activation_patching(model, clean, corrupted, metric, layers=...)` does the same patches,
# batched (several cells per forward pass, and the blocks before a layer run once for all of
# its cells), for many prompt pairs at once, with a bootstrap interval per cell in `.frame`.
# `.tensor` is the `[layer, pos]` map. With `logit_diff` (normalised by default) it should
# equal your map.

# %%
metric = logit_diff(model, [ANSWER], [WRONG])  # normalised: clean run 1, corrupted run 0
real = activation_patching(model, [CLEAN], [CORRUPTED], metric, layers=LAYERS, chat=False)
show(real.tensor, "fraction of the clean logit difference restored (denoising)")
try:
    mine = patching_map(model, CLEAN, CORRUPTED, OWN, lambda lg: normalised_logit_diff(
        lg, GOOD, BAD, LD_CLEAN, LD_CORRUPT))
    gap = float((mine - real.tensor[[LAYERS.index(l) for l in OWN]]).abs().max())
    print(f"your map: largest difference from steerlab's {gap:.2g} (in bf16, batched and "
          "one-at-a-time forwards round differently)")
except NotDoneYet:
    print("finish exercises 5.1-5.3 to draw the map with your own code")
print("hooks left on the model:", count_hooks(model))

# %% [markdown]
# **Reading the map.** Through the first two thirds of the blocks, only the subject's tokens
# (" iffel", " Tower") matter: patching one of them brings most of " Paris" back, and the
# last token does nothing -- the model has not yet moved what it knows about the subject to
# where it will answer. Late, the picture flips: the last token alone restores the answer,
# and the subject tokens no longer matter. In between, attention copied the subject's
# information to the last position (in the full run, between blocks 21 and 24). Two
# cautions: a bright cell in block 0 says little -- there the patch simply swaps the input
# token -- and a map is the answer to *this* metric on *this* pair.
#
# **Denoising and noising.** `direction="noise"` asks the opposite question: run the *clean*
# prompt and write the *corrupted* activation in. A cell whose noising drops the score to 0
# is *necessary*; a cell whose denoising brings it to 1 is *sufficient*. They need not agree:
# here noising " iffel" alone leaves about half of the clean score, because " Tower" still
# says which landmark it is.

# %%
noise = activation_patching(model, [CLEAN], [CORRUPTED], metric, layers=LAYERS,
                            direction="noise", chat=False)
show(noise.tensor, "clean run with the corrupted activation written in (1 = unharmed)")

# %% [markdown]
# ## 4. Attribution patching: the same map from one backward pass
#
# Real patching costs one forward per cell. **Attribution patching** estimates every cell at
# once to first order: `(a_clean - a_corrupt) · d metric / d a`, the gradient taken once at the
# corrupted run -- one clean forward, one corrupted forward and one backward, however many
# cells. Here it is next to the real map.

# %%
est = attribution_patching(model, [CLEAN], [CORRUPTED], metric, layers=LAYERS, chat=False)
show(est.tensor, "attribution patching (first-order estimate)")
show(real.tensor, "activation patching (real)")
err = (est.tensor - real.tensor).abs()
r = torch.corrcoef(torch.stack([est.tensor.flatten(), real.tensor.flatten()]))[0, 1]
print(f"correlation over all cells: {float(r):.2f}")
worst = divmod(int(err.argmax()), len(tokens))
print(f"worst cell: block {LAYERS[worst[0]]}, {tokens[worst[1]]!r}: estimate "
      f"{float(est.tensor[worst]):+.2f}, real {float(real.tensor[worst]):+.2f}")

# %% [markdown]
# `screen_and_verify` uses the estimate as a **screen**: it takes the `TOP_K` cells of largest
# |estimate|, patches each of them for real, and reports how well the two rankings agree
# (Spearman correlation of the ranks in `.attrs["spearman"]`). Read both numbers below: whether
# the screen *picked* the cells that matter, and whether it *ordered* them.

# %%
sv = screen_and_verify(model, [CLEAN], [CORRUPTED], metric, top_k=TOP_K, layers=LAYERS,
                       chat=False)
print(sv[["layer", "position", "token", "attribution", "patched", "rank_attribution",
          "rank_patched"]].round(2).to_string())
print(f"rank agreement (Spearman) on the {TOP_K} screened cells: {sv.attrs['spearman']:.2f}")
top_real = set(real.frame.reindex(real.frame["value"].abs().sort_values(ascending=False).index)
               .head(TOP_K).apply(lambda r: (r.layer, r.position), axis=1))
found = len(top_real & set(zip(sv["layer"], sv["position"], strict=True)))
print(f"the screen found {found} of the {TOP_K} cells that matter most when patched for real")

# %% [markdown]
# **When to trust the first-order estimate.** It is the tangent line of the metric at the
# corrupted run, so it is good where the patch is a *small* step -- the clean and corrupted
# activations are close and the metric is near-linear between them (positions and blocks the
# corruption only nudges, the last token late in the model) -- and poor where the step is
# large or crosses a nonlinearity (a norm, an attention pattern that switches, a saturated
# metric): block 0 at the subject's tokens, where the two prompts hold different tokens
# altogether, is where it misses most, sometimes with the wrong sign. Use it to *screen* many
# cells cheaply, then patch the cells it picks for real, and trust its ranking only as far as
# that verification agrees.
#
# ## Questions to discuss
#
# 1. Patching the last token does nothing in block 12 and restores most of the answer in block
#    24. What happened in between, and which component would you patch next to find out?
# 2. Why is a bright cell at the subject's tokens in block 0 uninformative?
# 3. Why does the check insist on the corrupted run? What would a map of the clean run patched
#    with its own activations look like -- and one of the corrupted run patched with its own?
# 4. Normalising divides by `ld_clean - ld_corrupt`. What goes wrong for a pair the model
#    barely gets right (a gap near 0)?
# 5. The Spearman correlation above is computed only on cells the screen picked. Why can it be
#    low even when the screen picked the right cells?
