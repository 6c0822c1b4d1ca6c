"""Checks for lesson 2: a steering hook, a context manager that cannot leak it, and steering
only the generated tokens."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from steerlab.cache import cache_activations
from steerlab.inference import forward_logits, generate
from steerlab.steering import steer
from steerlab.teach._harness import Fail, HookGuard, call, check, models_for, rel_err, tolerance
from steerlab.teach.caching import _layer_for, _prompts_for

if TYPE_CHECKING:
    from steerlab.models import Model


def probe_vector(model: Model, layer: int, frac: float = 0.25, seed: int = 0) -> torch.Tensor:
    """(d_model,) float32 random direction whose norm is ``frac`` of the model's typical
    last-token residual norm at ``layer`` (so the same ``frac`` means the same push anywhere)."""
    acts = cache_activations(model, _prompts_for(model), layers=[layer], chat=False).at(layer)
    r = torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))
    return r / r.norm() * frac * float(acts.norm(dim=-1).mean())


def _logits(model: Model, prompts: list[str], what: str) -> torch.Tensor:
    out = call(forward_logits, model, prompts, chat=False, what=what,
               hint="an error about dtypes means the residual stream changed dtype: add "
                    "vector.to(h.dtype), not the float32 vector itself")
    return out.float()


def _with_hook(fn: Any, name: str, m: Model, layer: int, vector: torch.Tensor, coeff: float,
               run: Callable[[], Any]) -> Any:
    """Build the participant's hook ``fn(vector, coeff)``, register it on block ``layer`` of
    ``m``, and return ``run()``; the hook is removed afterwards whatever happens."""
    hook = call(fn, vector.clone(), coeff, what=f"your {name}(vector, coeff)")
    if not callable(hook):
        raise Fail(f"{name}(vector, coeff) returned {type(hook).__name__}; expected a function "
                   "hook(module, args, output) (define it inside and return it).")
    with HookGuard(m):
        handle = m.layers[layer].register_forward_hook(hook)
        try:
            return run()
        finally:
            handle.remove()


def _compare_logits(m: Model, got: torch.Tensor, prompts: list[str], vector: torch.Tensor,
                    layer: int, coeff: float, what: str) -> None:
    """Fail unless ``got`` equals the logits of steerlab's steering, naming the likely slip."""
    with steer(m, vector, layers=layer, coeff=coeff):
        ref = forward_logits(m, prompts, chat=False).float()
    if rel_err(got, ref) <= tolerance(m):
        return
    base = forward_logits(m, prompts, chat=False).float()
    alternatives = {
        "the logits are unchanged, as if nothing were added: return the new output from the "
        "hook (a forward hook's return value replaces the module's output)": base,
    }
    for c, why in ((1.0, f"you added the vector once, ignoring coeff={coeff}"),
                   (-coeff, "you subtracted: the new residual is h + coeff * vector")):
        with steer(m, vector, layers=layer, coeff=c):
            alternatives[why] = forward_logits(m, prompts, chat=False).float()
    for why, alt in alternatives.items():
        if rel_err(got, alt) <= tolerance(m):
            raise Fail(f"{what}: {why}.")
    raise Fail(f"{what}: the logits differ from h + {coeff} * vector at layer {layer} "
               f"(relative error {rel_err(got, ref):.3g}). Hint: h = output[0] if "
               "isinstance(output, tuple) else output; new = h + coeff * vector.to(h.dtype); "
               "return it in the same form (a tuple stays a tuple).")


@check
def check_add_vector_hook(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(vector, coeff) -> hook`` where ``hook(module, args, output)`` returns the
    block's output with ``coeff * vector`` added to the residual stream. The hook is registered
    on a tiny Llama, a tiny GPT-2 and the embedded model and compared with
    :func:`steerlab.steering.steer`."""
    done = []
    for m in models_for(model, embedded, archs=("llama", "gpt2")):
        layer, prompts, coeff = _layer_for(m), _prompts_for(m), 2.5
        vector = probe_vector(m, layer)
        what = f"on {m.name}, with your hook on layer {layer}"
        got = _with_hook(fn, "add_vector_hook", m, layer, vector, coeff,
                         partial(_logits, m, prompts, what))
        _compare_logits(m, got, prompts, vector, layer, coeff, what)
        done.append(m.name)
    return "adds coeff * vector exactly like steerlab.steer on " + ", ".join(done) + "."


class _Probe(Exception):
    """Raised by the check inside the participant's with-block."""


@check
def check_steering_context(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(model, vector, layer, coeff)``, a context manager that steers inside its
    block and removes its hook on the way out -- also when the block raises (it must let the
    exception through)."""
    done = []
    for m in models_for(model, embedded):
        layer, prompts, coeff = _layer_for(m), _prompts_for(m), 2.5
        vector = probe_vector(m, layer)
        what = f"on {m.name}, your steering(model, vector, {layer}, {coeff})"
        cm = call(fn, m, vector.clone(), layer, coeff, what=what)
        if not (hasattr(cm, "__enter__") and hasattr(cm, "__exit__")):
            raise Fail(f"{what} returned {type(cm).__name__}, not a context manager: decorate "
                       "the function with @contextmanager and `yield` where the block runs.")
        with HookGuard(m) as normal:
            call(cm.__enter__, what=f"{what}, entering the with-block,")
            try:
                got = _logits(m, prompts, f"{what}, inside the with-block")
            finally:
                call(cm.__exit__, None, None, None, what=f"{what}, leaving the with-block,")
        if normal.leaked:
            raise Fail(f"{what}: after a normal exit {len(normal.leaked)} hook(s) stayed on "
                       f"{normal.leaked}: remove the handle when the block ends.")
        _compare_logits(m, got, prompts, vector, layer, coeff, f"{what}, inside the block")
        propagated = False
        with HookGuard(m) as crash:
            try:
                with call(fn, m, vector.clone(), layer, coeff, what=what):
                    raise _Probe("raised by the check inside your with-block")
            except _Probe:
                propagated = True
        if crash.leaked:
            raise Fail(f"{what}: when the with-block raised an exception, {len(crash.leaked)} "
                       f"hook(s) stayed on {crash.leaked}, so the model would stay steered "
                       "for ever after. Put `yield` inside try: ... finally: handle.remove(). "
                       "(The check removed them.)")
        if not propagated:
            raise Fail(f"{what}: an exception raised inside the with-block vanished: do not "
                       "catch it (try/finally, no except), or the caller never learns it failed.")
        done.append(m.name)
    return ("steers inside the block and leaves no hook behind, after a normal exit and after "
            "an exception, on " + ", ".join(done) + ".")


@check
def check_generated_only_hook(fn: Any, model: Model | None = None,
                              embedded: bool = True) -> str:
    """Check ``fn(vector, coeff) -> hook`` that adds ``coeff * vector`` only in the decoding
    steps (one new token per forward, reusing the KV cache), not while the prompt is read:
    greedy generations must equal ``steer(..., positions="generated")``."""
    done = []
    for m in models_for(model, embedded):
        tiny = m.name.startswith("tiny-")
        layer = _layer_for(m)
        prompts = _prompts_for(m, 2) if tiny else ["What is the capital of Japan?"]
        vector, coeff, n_new = probe_vector(m, layer, frac=1.0 if tiny else 0.5), 2.0, 8
        what = f"on {m.name}, generating with your hook on layer {layer}"
        got = _with_hook(fn, "generated_only_hook", m, layer, vector, coeff,
                         partial(call, generate, m, prompts, n_new, chat=not tiny, what=what))
        outs = {"base": generate(m, prompts, n_new, chat=not tiny)}
        for pos in ("generated", "all", "prompt"):
            with steer(m, vector, layers=layer, coeff=coeff, positions=pos):
                outs[pos] = generate(m, prompts, n_new, chat=not tiny)
        if got == outs["generated"]:
            done.append(m.name)
            continue
        why = {"all": "your hook also steered the forward pass that reads the prompt, so even "
                      "the first new token changed",
               "base": "nothing was steered: the hook never changed a decoding step",
               "prompt": "you steered the prompt pass and not the decoding steps: the other "
                         "way round"}
        hint = next((w for k, w in why.items() if got == outs[k]),
                    "the text differs from steering only the generated tokens")
        raise Fail(f"{what}: expected {outs['generated']!r}, got {got!r}: {hint}. Hint: in a "
                   "decoding step the block sees one new position, h.shape[1] == 1; while "
                   "reading the prompt it sees all of them.")
    return "steers only the generated tokens, like positions='generated', on " + \
        ", ".join(done) + "."
