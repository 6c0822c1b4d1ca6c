# %% [markdown]
# # Lesson 3 · Measuring honestly
#
# *About 35 minutes, CPU only.* Steering changes what a model says; does it change whether the
# model is **right**? We score SmolLM2 on a recall task (`memorisation-mc`: multiple choice,
# 2-4 options, scored by the log-probability of each option's text), with and without a
# steering vector, and ask what the numbers can and cannot tell us. You will
#
# 1. write the 95% **Wilson interval** of an accuracy (exercise 3.1);
# 2. write a **paired bootstrap** interval for a change in accuracy on the same items
#    (exercise 3.2);
# 3. compare the steering vector with two **controls** -- a random direction of the same size,
#    and the difference of means after shuffling the labels;
# 4. see why a study with **n = 20** items tells you almost nothing.

# %%
import numpy as np

from steerlab.evaluation import evaluate
from steerlab.models import load_model
from steerlab.notebooks import smoke
from steerlab.stats import accuracy, paired_difference
from steerlab.steering import steer
from steerlab.sweeps import build_vectors
from steerlab.tasks import get_task
from steerlab.teach import NotDoneYet, check_paired_bootstrap, check_wilson_interval
from steerlab.teach.measuring import subsample_deltas

# %%
N_EVAL = 24 if smoke() else 200  # evaluation items
N_VEC = 24 if smoke() else None  # prompts per set for the vectors (None: all 250)
LAYER, COEFF = 20, 0.2  # add 0.2 x the layer's typical residual norm along each direction
model = load_model("smollm2-135m-instruct")
task = get_task("memorisation-mc")
items = task.items(N_EVAL)
base = evaluate(model, task, items)
print(f"unsteered: {base.accuracy.k}/{base.n} right; chance {base.chance:.3f}")
print(items[0].question, items[0].options, "->", base.predictions[0])

# %% [markdown]
# ## Exercise 3.1 · An accuracy needs an interval
#
# `k` right out of `n` is an estimate of the model's accuracy on items like these. Write
# `wilson_interval(k, n)` returning `(lo, hi)`, the 95% Wilson score interval (z = 1.96):
#
# centre = (p + z²/2n) / (1 + z²/n),  half-width = z / (1 + z²/n) · sqrt(p(1-p)/n + z²/4n²),
# with p = k/n. Unlike the textbook p ± 1.96·sqrt(p(1-p)/n), it does not collapse to a point
# at k = 0 or k = n, and it stays honest at small n.

# %%
def wilson_interval(k, n):
    """(lo, hi) 95% Wilson score interval of k successes in n trials."""
    # EXERCISE
    # Hint: z = 1.96; p = k / n; compute centre and half-width as above; return
    # (centre - half, centre + half), clipped to [0, 1].
    # SOLUTION
    z = 1.959963984540054
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
    # END SOLUTION


# %%
check_wilson_interval(wilson_interval)

# %%
print("steerlab:", base.accuracy)
try:
    lo, hi = wilson_interval(base.accuracy.k, base.n)
    print(f"yours:    {base.accuracy.acc:.3f} [{lo:.3f}, {hi:.3f}]")
except NotDoneYet:
    print("finish exercise 3.1 to compare")
for n in (20, 200, 2000):
    acc = accuracy([True] * round(0.6 * n) + [False] * (n - round(0.6 * n)))
    print(f"60% right on n={n:4d}: 95% interval [{acc.lo:.3f}, {acc.hi:.3f}], "
          f"width {acc.hi - acc.lo:.3f}")

# %% [markdown]
# ## Steering, and two controls
#
# We build the reasoning-minus-memorisation vector at layer 20 from prompts that share no
# question with the evaluation items (steerlab checks that), plus two controls of the same
# size: a **random** direction, and a **shuffled** difference of means (the same prompts, labels
# permuted). Each is added at 0.2 x the layer's typical residual norm, and the same items are
# scored again.

# %%
methods = ("diff_means", "random", "shuffled")
vecs = build_vectors(model, task, [LAYER], methods, extract_n=N_VEC, eval_items=items)
steered = {}
for method in methods:
    v, size = vecs.added(method, LAYER, COEFF, "norm")  # (d_model,), its norm
    with steer(model, v, layers=LAYER):
        steered[method] = evaluate(model, task, items)
    print(f"{method:>10}: |added| {size:5.1f}, accuracy {steered[method].accuracy}")

# %% [markdown]
# ## Exercise 3.2 · A paired interval for the change
#
# Both runs scored the **same** items, so most items are right (or wrong) in both, and only
# the items that changed carry information about the change. Write
# `paired_bootstrap(a, b, n_boot=10_000, seed=0)` returning `(delta, lo, hi)`: `delta =
# mean(b) - mean(a)`, and the 2.5th and 97.5th percentiles of `delta` over `n_boot` resamples
# of the *items* (draw one set of item indices per resample, use it for both `a` and `b`).

# %%
def paired_bootstrap(a, b, n_boot=10_000, seed=0):
    """(delta, lo, hi): mean(b) - mean(a) and its 95% paired bootstrap interval."""
    # EXERCISE
    # Hint: a, b = np.asarray(a, float), np.asarray(b, float); rng = np.random.default_rng(seed);
    # idx = rng.integers(0, len(a), size=(n_boot, len(a))); deltas = (b[idx] - a[idx]).mean(1);
    # lo, hi = np.percentile(deltas, [2.5, 97.5]).
    # SOLUTION
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_boot, a.size))  # (n_boot, n) item indices
    deltas = (b[idx] - a[idx]).mean(axis=1)
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return float(b.mean() - a.mean()), float(lo), float(hi)
    # END SOLUTION


# %%
check_paired_bootstrap(paired_bootstrap)

# %% [markdown]
# ### The verdict, with controls
#
# steerlab's `paired_difference` does the same bootstrap (and an exact McNemar test on the
# items that changed). A change means something only if its interval excludes 0 **and** the
# controls do not do the same: a random push of the same size that also moves accuracy says
# the effect is about pushing, not about reasoning.

# %%
for method, res in steered.items():
    d = paired_difference(base.correct, res.correct)
    verdict = "interval excludes 0" if d.lo > 0 or d.hi < 0 else "no detectable change"
    print(f"{method:>10}: {d}  -> {verdict}")

# %% [markdown]
# ## Why n = 20 misleads
#
# Suppose we had scored only 20 items. Draw many random subsets of 20 of our paired items and
# look at the change each one would have reported.

# %%
deltas = {m: subsample_deltas(base.correct, r.correct, n=min(20, base.n)) for m, r in
          steered.items()}
full = {m: r.accuracy.acc - base.accuracy.acc for m, r in steered.items()}
for m, d in deltas.items():
    print(f"{m:>10}: change on all {base.n} items {full[m]:+.3f}; on 20 items it ranges "
          f"{np.percentile(d, 5):+.2f} .. {np.percentile(d, 95):+.2f} (90% of subsets), and "
          f"{np.mean(d >= 0.1):.0%} of subsets show a gain of 10 points or more")

# %% [markdown]
# With 20 items, one item is 5 points: a "+10 points" result is two items. Compare how often a
# subset shows such a gain with what all the items say about the same vector: when the full
# paired interval includes 0, every one of those impressive small studies would have been
# reporting noise -- and the controls produce them too.
#
# ## Questions to discuss
#
# 1. The Wilson interval of 12/20 is roughly [0.39, 0.78]. What accuracy difference between
#    two runs could 20 items ever resolve?
# 2. Why is the paired interval narrower than the one you would get by comparing the two
#    Wilson intervals?
# 3. If the random control hurts accuracy as much as the reasoning vector, what have we
#    learnt about the reasoning direction?
