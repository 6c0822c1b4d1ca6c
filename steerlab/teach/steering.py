"""Checks for lesson 2: a steering hook, a context manager that cannot leak it, steering only
the generated tokens, and reading a receipt (what a steering actually changed)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from steerlab.cache import cache_activations
from steerlab.inference import forward_logits, generate
from steerlab.receipts import Receipt
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


# ---- exercise 2.4: reading a receipt ----------------------------------------------------------

PHASES = ("prompt", "decoding")


def receipt_setups(model: Model, n_new: int = 4) -> list[tuple[str, Receipt]]:
    """Real receipts of steerings on ``model``, each with what was done (the cases
    :func:`check_steered_where` grades): plain, prompt-only and generated-only steering, two
    layers, one forward without generation, a hand-written edit that returns None on every
    decoding step, an edit that never changes anything next to one that does, and a steering
    whose with-block ended before the generation."""
    layer = _layer_for(model)
    v = probe_vector(model, layer)
    be = model.backend("hf")
    enc = model.encode(_prompts_for(model, 2))

    def gen() -> None:
        be.generate(enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False,
                    pad_token_id=model.tokenizer.pad_token_id)

    def fwd() -> None:
        with torch.no_grad():
            be.forward(enc)

    out = []
    for pos in ("all", "generated", "prompt"):
        with steer(model, v, layers=layer, coeff=1.0, positions=pos, receipt="detail") as h:
            gen()
        assert h.receipt is not None
        out.append((f"steer(model, v, layers={layer}, positions={pos!r}) around a generation",
                    h.receipt))
    with steer(model, v, layers=[layer - 1, layer], positions="generated") as h:
        gen()
    assert h.receipt is not None
    out.append((f"steer(model, v, layers=[{layer - 1}, {layer}], positions='generated') "
                 "around a generation", h.receipt))
    with steer(model, v, layers=layer, receipt="detail") as h:
        fwd()
    assert h.receipt is not None
    out.append((f"steer(model, v, layers={layer}) around one forward (no generation)",
                h.receipt))

    def prompt_only(h: torch.Tensor) -> torch.Tensor | None:
        return None if h.shape[1] == 1 else h + v.to(h.dtype)

    rec = Receipt("steered", "detail")
    with be.add_edits([(layer, prompt_only, {"receipt": rec})]):
        gen()
    out.append((f"a hand-written edit at layer {layer} that returns None when it sees one "
                "column (every decoding step), around a generation", rec))
    rec = Receipt("steered", "detail")
    with (be.add_edits([(layer - 1, lambda h: None, {"receipt": rec})]),
          steer(model, v, layers=layer, positions="generated", receipt=rec)):
        gen()
    out.append((f"an edit at layer {layer - 1} that always returns None, and steer(model, v, "
                f"layers={layer}, positions='generated'), on one receipt, around a generation",
                rec))
    with steer(model, v, layers=layer) as h:
        pass
    gen()  # after the with-block: nothing steered
    assert h.receipt is not None
    out.append((f"steer(model, v, layers={layer}) whose with-block ended before the "
                "generation ran", h.receipt))
    return out


def steered_phases(receipt: Receipt) -> dict[int, set[str]]:
    """The reference answer of exercise 2.4: layer -> the phases (``prompt``, ``decoding``)
    in which an edit at that layer changed at least one position."""
    out: dict[int, set[str]] = {}
    for g in receipt.totals():
        for phase in PHASES:
            if g[f"{phase}_positions"] > 0:
                out.setdefault(int(g["layer"]), set()).add(phase)
    return out


def _as_phases(got: Any, what: str) -> dict[int, set[str]]:
    """The participant's answer as {layer: set of phases}, or :class:`Fail` saying why not."""
    example = "e.g. {12: {'prompt', 'decoding'}}, or {} when nothing was steered"
    if not isinstance(got, dict):
        raise Fail(f"{what} returned {type(got).__name__} {got!r:.60}; expected a dict "
                   f"{{layer: set of phases}}, {example}.")
    out: dict[int, set[str]] = {}
    for key, value in got.items():
        if isinstance(key, bool) or not isinstance(key, int | str) and not hasattr(
                key, "__index__"):
            raise Fail(f"{what} has the key {key!r}; expected layer numbers as keys, {example}.")
        try:
            layer = int(key)
        except ValueError:
            raise Fail(f"{what} has the key {key!r}; expected layer numbers as keys, "
                       f"{example}.") from None
        if isinstance(value, str) or not isinstance(value, Iterable):
            raise Fail(f"{what} maps layer {layer} to {value!r}; expected a set of phase names "
                       f"(even for one phase: {{'prompt'}}), {example}.")
        phases = {str(p) for p in value}
        unknown = sorted(phases - set(PHASES))
        if unknown:
            raise Fail(f"{what} names the phase(s) {unknown} at layer {layer}: a receipt names "
                       "them as its table's `phase` column does, 'prompt' (a forward that "
                       "reads the prompt) and 'decoding' (one generated token each).")
        if phases:
            out.setdefault(layer, set()).update(phases)
    return out


def _diagnose_phases(receipt: Receipt, got: dict[int, set[str]],
                     ref: dict[int, set[str]]) -> str:
    """Why ``got`` differs from ``ref`` on ``receipt``: the first wrong layer and phase."""
    runs: dict[tuple[int, str], int] = {}
    whens: dict[int, set[str]] = {}
    for g in receipt.totals():
        for phase, key in zip(PHASES, ("prompt_forwards", "decoding_steps"), strict=True):
            runs[g["layer"], phase] = runs.get((g["layer"], phase), 0) + g[key]
    for info in receipt.edits:
        whens.setdefault(info.layer, set()).add(info.when)
    for layer in sorted(set(got) | set(ref)):
        for phase in PHASES:
            mine, right = phase in got.get(layer, ()), phase in ref.get(layer, ())
            if mine == right:
                continue
            n = runs.get((layer, phase), 0)
            forwards = "forward(s) of the prompt" if phase == "prompt" else "decoding step(s)"
            if right:
                return (f"your answer leaves out {phase!r} at layer {layer}, where an edit "
                        f"changed positions (table rows with phase {phase!r} and positions > "
                        "0): list every layer and every phase that has one")
            if n:
                return (f"you list {phase!r} at layer {layer}: the edit there ran in {n} "
                        f"{forwards} but changed nothing in them (positions is 0 in those "
                        "rows: it returned None). A row means the edit ran, not that it "
                        "steered: count only rows with positions > 0")
            if layer in whens:
                return (f"you list {phase!r} at layer {layer}, but the receipt has no "
                        f"{phase!r} row there: the edit was asked for (when="
                        f"{sorted(whens[layer])}) but never ran in such a forward. A receipt "
                        "records what ran, not what was asked: read its table, not its edits")
            return (f"you list layer {layer}, where the receipt has no edit at all: read the "
                    "layers from the table's rows")
    return "the answer differs from the receipt"


@check
def check_steered_where(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(receipt) -> {layer: set of phases}``: for each layer where an edit changed
    at least one position, the phases (``prompt``, ``decoding``) in which it did, on real
    receipts (:func:`receipt_setups`): a row of the receipt's table whose ``positions`` is 0
    ran but changed nothing, and an edit that never ran has no row."""
    done = []
    for m in models_for(model, embedded):
        setups = receipt_setups(m)
        for desc, receipt in setups:
            what = f"on {m.name}, your steered_where(receipt) for {desc}"
            got = _as_phases(call(fn, receipt, what=what,
                                  hint="a receipt with no rows (nothing ran) has a table() "
                                       "with its columns and no rows: return {} for it"),
                              what)
            ref = steered_phases(receipt)
            if got != ref:
                shown = {k: sorted(v) for k, v in sorted(got.items())}
                right = {k: sorted(v) for k, v in sorted(ref.items())}
                raise Fail(f"{what} returned {shown}, expected {right}: "
                           f"{_diagnose_phases(receipt, got, ref)}. The receipt reads: "
                           f"{receipt.summary()!r}")
        done.append(f"{m.name} ({len(setups)} receipts)")
    return "reads which layers and phases each receipt steered, on " + ", ".join(done) + "."
