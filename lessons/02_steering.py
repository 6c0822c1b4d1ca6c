# %% [markdown]
# # Lesson 2 · Steering at run time
#
# *About 45 minutes, CPU only.* Lesson 1 found a direction, reasoning minus memorisation. Now
# we **add it back** while the model runs: after block `layer`, the residual stream `h` becomes
# `h + coeff * vector`, at every position -- or only while the model reads the prompt, or only
# on the tokens it generates. You will
#
# 1. write the hook that adds the vector (exercise 2.1);
# 2. wrap it in a context manager that always removes it (exercise 2.2), then **break it on
#    purpose** and watch a leaked hook keep steering a model that should be clean;
# 3. write a hook that steers only the generated tokens (exercise 2.3) and compare the three
#    position modes of `steerlab.steering.steer`;
# 4. read a steering's **receipt** to find what two buggy runs really steered (exercise 2.4).

# %%
from contextlib import contextmanager

from steerlab.cache import cache_activations
from steerlab.data import questions
from steerlab.inference import generate
from steerlab.models import load_model
from steerlab.notebooks import smoke
from steerlab.receipts import Receipt
from steerlab.steering import steer
from steerlab.teach import (
    NotDoneYet,
    check_add_vector_hook,
    check_generated_only_hook,
    check_steered_where,
    check_steering_context,
    count_hooks,
    remove_hooks,
)
from steerlab.vectors import diff_of_means

# %%
N = 8 if smoke() else 64  # prompts per set for the vector
NEW = 12 if smoke() else 40  # new tokens per generation
LAYER, COEFF = 12, 4.0
EARLY = 8  # a second layer, cached for exercise 2.4
PROMPT = "What is the capital of Japan?"
model = load_model("smollm2-135m-instruct")
R = cache_activations(model, questions("reasoning", "extract", N), layers=[EARLY, LAYER],
                      chat=True)
M = cache_activations(model, questions("memorisation", "extract", N), layers=[EARLY, LAYER],
                      chat=True)
vectors = diff_of_means(R, M)  # a SteeringVector: one direction per cached layer
vector = vectors[LAYER]  # (d_model,) float32, the raw difference of means at LAYER
print(f"|vector| at layer {LAYER}: {vector.norm():.1f}")
print("unsteered:", generate(model, [PROMPT], NEW, chat=True)[0])

# %% [markdown]
# ## Exercise 2.1 · A hook that adds a vector
#
# Write `add_vector_hook(vector, coeff)`: it returns a forward hook `hook(module, args, output)`
# that returns the block's output with `coeff * vector` added to the residual stream. Keep the
# output's form: a tensor stays a tensor, a tuple stays a tuple with the new tensor first. The
# model may run in bf16 while `vector` is float32: adding them would turn the residual stream
# float32 and break the next block, so cast the vector to `h.dtype`.

# %%
def add_vector_hook(vector, coeff):
    """A forward hook adding ``coeff * vector`` (d_model,) to a block's output."""
    # EXERCISE
    # Hint: inside, define hook(module, args, output): h = output[0] if it is a tuple, else
    # output; new = h + coeff * vector.to(h.dtype); return (new, *output[1:]) for a tuple,
    # else new. Then return hook.
    # SOLUTION
    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output  # (B, T, d_model)
        new = h + coeff * vector.to(device=h.device, dtype=h.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook
    # END SOLUTION


# %%
check_add_vector_hook(add_vector_hook, model)

# %% [markdown]
# ## Exercise 2.2 · A context manager that cannot leak
#
# Write `steering(model, vector, layer, coeff)`, a context manager: on entry it registers your
# hook on `model.layers[layer]`; on exit -- **including when the block raises** -- it removes
# it; it must not swallow the exception. With `@contextmanager`, the code after `yield` runs on
# exit only if it stands in a `finally:`.

# %%
@contextmanager
def steering(model, vector, layer, coeff):
    """Steer ``model`` inside the with-block; the hook is removed however the block ends."""
    # EXERCISE
    # Hint: handle = model.layers[layer].register_forward_hook(add_vector_hook(vector, coeff))
    # then try: yield / finally: handle.remove()
    # SOLUTION
    handle = model.layers[layer].register_forward_hook(add_vector_hook(vector, coeff))
    try:
        yield handle
    finally:
        handle.remove()
    # END SOLUTION


# %%
check_steering_context(steering, model)

# %% [markdown]
# ## Break it on purpose: the leak
#
# Here is the version people write first. It works -- until the block raises (a bug in your
# evaluation code, a Ctrl-C, a tokenizer error). Then the line after `yield` never runs, the
# hook stays on the model, and **every later call is silently steered**. Run the cell and read
# what it prints. (We use steerlab's own `add_steering` hook maker so this runs even before
# you finish exercise 2.1.)

# %%
@contextmanager
def leaky_steering(model, vector, layer, coeff):
    handle = model.layers[layer].register_forward_hook(add_vector_hook_ref(vector, coeff))
    yield handle
    handle.remove()  # skipped when the with-block raises


def add_vector_hook_ref(vector, coeff):
    try:
        return add_vector_hook(vector, coeff)
    except NotDoneYet:  # exercise 2.1 not done yet: the same hook, written out
        def hook(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            new = h + coeff * vector.to(h.dtype)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook


print("hooks before:", count_hooks(model))
try:
    with leaky_steering(model, vector, LAYER, COEFF):
        raise RuntimeError("a bug in the middle of an experiment")
except RuntimeError as err:
    print("the block failed:", err)
print("hooks after:", count_hooks(model))
print("'unsteered' generation now:", generate(model, [PROMPT], NEW, chat=True)[0])

# %% [markdown]
# The model is still steered, with no `with` block in sight. In a notebook this survives until
# the kernel restarts: every accuracy you measure next is wrong. Clean up (this removes every
# hook on the model), then try the same crash with your `steering` from exercise 2.2.

# %%
print("removed", remove_hooks(model), "hook(s)")
print("generation:", generate(model, [PROMPT], NEW, chat=True)[0])
try:
    with steering(model, vector, LAYER, COEFF):
        raise RuntimeError("the same bug")
except (RuntimeError, NotDoneYet) as err:
    print(f"the block failed ({type(err).__name__}); hooks after:", count_hooks(model))

# %% [markdown]
# ## Exercise 2.3 · Steer only what the model writes
#
# `generate` first runs one forward pass over the whole prompt (the *prefill*), then one pass
# per new token that sees a single new position and reuses the cached keys and values. Write
# `generated_only_hook(vector, coeff)`: like 2.1, but it adds the vector only in those
# decoding passes. The first new token comes from the prefill pass, so it must not change.

# %%
def generated_only_hook(vector, coeff):
    """A forward hook adding ``coeff * vector`` only in decoding steps (one new position)."""
    # EXERCISE
    # Hint: as in 2.1, but return None (no change) when h.shape[1] > 1: that forward pass is
    # reading the prompt. (This test fails for a one-token prompt; steerlab asks the KV cache.)
    # SOLUTION
    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output  # (B, T, d_model)
        if h.shape[1] > 1:  # the prefill pass over the prompt
            return None
        new = h + coeff * vector.to(device=h.device, dtype=h.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook
    # END SOLUTION


# %%
check_generated_only_hook(generated_only_hook, model)

# %% [markdown]
# ## Three position modes
#
# `steer(..., positions=...)` does all three. `prompt` changes how the model *reads* the
# question (its cached keys and values), so its effect carries into every new token;
# `generated` pushes each new token but leaves the reading alone. Compare, and try other
# coefficients (negative ones push towards memorisation) and layers.

# %%
for positions in ("all", "prompt", "generated"):
    for coeff in (COEFF, -COEFF):
        with steer(model, vector, layers=LAYER, coeff=coeff, positions=positions):
            text = generate(model, [PROMPT], NEW, chat=True)[0]
        print(f"{positions:>9} {coeff:+.0f}: {text!r}")
print("hooks left:", count_hooks(model))

# %% [markdown]
# ## Exercise 2.4 · Read the receipt
#
# A steering that did nothing looks like one that worked weakly: text comes out either way.
# So every `steer(...)` keeps a **receipt**, `handle.receipt`: per layer, how many forwards the
# edit ran in (the one that reads the prompt, then one per decoding step) and how many
# positions it changed; `receipt="detail"` adds the size of the change next to the size asked
# for, and `receipt.table()` has one row per forward and layer. Its guards raise
# `ReceiptError` when an edit misses a forward its `positions` apply to, runs in the wrong
# phase or runs twice in one forward. An edit that does exactly what its code says -- wrong
# or not -- passes them, and only reading the receipt shows what it did.
#
# Two colleagues were asked for the same run: steer layer `LAYER` on **every generated token,
# and nothing else**. Both runs print text, and no guard fires. Each has one bug. Run the cell
# and read the two receipts.

# %%
# run A: the difference of means, on the generated tokens
with steer(model, vectors, coeff=COEFF, positions="generated", receipt="detail") as handle:
    text_a = generate(model, [PROMPT], NEW, chat=True)[0]
receipt_a = handle.receipt


# run B: an edit written by hand (an edit function gets the residual stream h, (B, T, d_model),
# and returns its replacement, or None to leave it as it is), noted on a receipt of its own
def push(h):
    if h.shape[1] == 1:  # "one column: that is the prompt pass, leave it alone"
        return None
    return h + COEFF * vector.to(h.dtype)


receipt_b = Receipt("steered", "detail")
with model.backend("hf").add_edit(LAYER, push, receipt=receipt_b):
    text_b = generate(model, [PROMPT], NEW, chat=True)[0]

for name, text, receipt in (("A", text_a, receipt_a), ("B", text_b, receipt_b)):
    print(f"run {name}: {text!r}\n{receipt}\n")
receipt_b.table().head()

# %% [markdown]
# Write `steered_where(receipt)`: a dict mapping each layer where an edit changed at least one
# position to the set of phases in which it did -- `"prompt"` and/or `"decoding"`, as the
# table's `phase` column names them -- and `{}` when nothing changed. A row of the table means
# the edit *ran* in that forward; its `positions` says how many tokens it *changed* there (0
# when the edit returned None). An edit that never ran has no row at all.

# %%
def steered_where(receipt):
    """{layer: set of phases} in which the receipt's edits changed at least one position."""
    # EXERCISE
    # Hint: tab = receipt.table() (no rows when nothing ran); keep tab[tab["positions"] > 0];
    # for layer, rows in kept.groupby("layer"), the phases are set(rows["phase"]).
    # SOLUTION
    tab = receipt.table()
    changed = tab[tab["positions"] > 0]
    return {int(layer): set(rows["phase"]) for layer, rows in changed.groupby("layer")}
    # END SOLUTION


# %%
check_steered_where(steered_where, model)

# %% [markdown]
# Now let your function judge the two runs against what was asked. Which bug did each run
# have, and which line fixes it? Fix one, run it again and read its receipt.

# %%
ASKED = {LAYER: {"decoding"}}
for name, receipt in (("A", receipt_a), ("B", receipt_b)):
    try:
        got = steered_where(receipt)
    except NotDoneYet:
        print(f"run {name}: finish exercise 2.4 first")
        continue
    verdict = "as asked" if got == ASKED else f"NOT as asked ({ASKED})"
    print(f"run {name} changed {({k: sorted(v) for k, v in got.items()})}: {verdict}")

# %% [markdown]
# ## Questions to discuss
#
# 1. Why does `positions="prompt"` still change tokens long after the prompt?
# 2. A coefficient of 4 on the raw vector at layer 12 is what fraction of the residual norm
#    there? Would the same 4 be strong or weak at layer 25? (Lesson 1 printed both norms.)
# 3. steerlab registers hooks through a handle list created *before* `try`. What could leak if
#    registering the second of two hooks failed, in a version without that?
# 4. Neither run tripped a guard. Suppose instead that the backend's phase rule broke and run
#    A's `positions="generated"` edit stopped firing on decoding steps: which guard would
#    catch it, and in which forward would it raise?
