"""Checks for lesson 5: activation patching by hand -- one residual patch, the layer x position
map, and the normalised logit difference.

The oracle of every check is :func:`steerlab.patching.activation_patching` on the same prompts:
its metric sees the patched run's last-token logits, so a metric that records them gives the
library's patched logits as well as its (normalised) values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from steerlab.metrics import Metric
from steerlab.options import Direction
from steerlab.patching import activation_patching
from steerlab.teach._harness import (
    Fail,
    HookGuard,
    as_number,
    as_tensor,
    call,
    check,
    head,
    models_for,
    rel_err,
    tolerance,
)

if TYPE_CHECKING:
    from steerlab.models import Model

#: the tiny models' pair: the same number of characters (= tokens), differing at 4-6
TINY_PAIR = ("The cat sat on the mat", "The dog sat on the mat")
#: the lesson's pair for SmolLM2: both 9 tokens, answers " Paris" / " Rome"
CLEAN, CORRUPTED = "The Eiffel Tower is in the city of", "The Colosseum is in the city of"
ANSWERS = (" Paris", " Rome")


def _ids(model: Model, text: str) -> list[int]:
    return model.encode([text])["input_ids"][0].cpu().tolist()


def last_logits(model: Model, prompt: str) -> torch.Tensor:
    """(vocab,) float32 logits at the prompt's last token, unpatched."""
    with torch.no_grad():
        return model.hf(**model.encode([prompt])).logits[0, -1].float().cpu()


def answer_ids(model: Model, correct: str, incorrect: str) -> tuple[int, int]:
    """The first token of each answer (with its leading space), as
    :func:`steerlab.metrics.answer_token_ids` reads answer strings."""
    return (model.tokenizer.encode(correct, add_special_tokens=False)[0],
            model.tokenizer.encode(incorrect, add_special_tokens=False)[0])


def pair_for(model: Model) -> tuple[str, str, int, int]:
    """(clean, corrupted, correct id, incorrect id) a check uses on ``model``: on a tiny random
    model the two tokens whose logit difference the corruption moves most (a well-conditioned
    normalisation), on a real one the lesson's Paris / Rome pair."""
    if model.name.startswith("tiny-"):
        clean, corrupted = TINY_PAIR
        shift = last_logits(model, clean) - last_logits(model, corrupted)
        return clean, corrupted, int(shift.argmax()), int(shift.argmin())
    return (CLEAN, CORRUPTED, *answer_ids(model, *ANSWERS))


def subject_position(model: Model, clean: str, corrupted: str) -> int:
    """The last position where the two prompts' tokens differ (the subject's last token)."""
    a, b = _ids(model, clean), _ids(model, corrupted)
    return max(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)


class _Recorder:
    """A metric for :func:`activation_patching` that keeps every logits batch it sees (the
    clean run, the corrupted run, then the patched rows in cell order) and scores the logit
    difference of two tokens."""

    def __init__(self, correct: int, incorrect: int) -> None:
        self.correct, self.incorrect = correct, incorrect
        self.seen: list[torch.Tensor] = []

    def __call__(self, logits: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        self.seen.append(logits.detach().float().cpu().clone())
        return logits[:, self.correct] - logits[:, self.incorrect]

    @property
    def patched(self) -> torch.Tensor:
        """(cells, vocab) logits of the patched rows."""
        return torch.cat(self.seen[2:])


def oracle(model: Model, clean: str, corrupted: str, layers: Sequence[int],
           positions: Sequence[int] | None, correct: int = 0, incorrect: int = 1,
           normalise: bool = False, direction: Direction = "denoise") -> tuple[Any, _Recorder]:
    """:func:`activation_patching` of the resid_pre cells ``layers`` x ``positions`` (None: every
    position) with the logit difference ``correct - incorrect``; returns the result and the
    recorder holding the clean, corrupted and patched logits."""
    rec = _Recorder(correct, incorrect)
    res = activation_patching(model, [clean], [corrupted], Metric("logit_diff", rec, normalise),
                              site="resid_pre", layers=list(layers), positions=positions,
                              direction=direction, progress=False, chat=False)
    return res, rec


def reference_patch(model: Model, clean: str, corrupted: str, layer: int, pos: int
                    ) -> torch.Tensor:
    """(vocab,) last-token logits of the corrupted run with the clean residual stream written
    into block ``layer``'s input at position ``pos`` (steerlab's own patching)."""
    return oracle(model, clean, corrupted, [layer], [pos])[1].patched[0]


def reference_patches(model: Model, clean: str, corrupted: str, layers: Sequence[int],
                      positions: Sequence[int]) -> torch.Tensor:
    """(len(layers), len(positions), vocab) logits of :func:`reference_patch` for every cell,
    from one :func:`activation_patching` call (batched: fewer forward passes)."""
    rec = oracle(model, clean, corrupted, layers, positions)[1]
    return rec.patched.reshape(len(layers), len(positions), -1)


# ---- exercise 5.1 ---------------------------------------------------------------------------

def _cells_for(model: Model, clean: str, corrupted: str) -> list[tuple[int, int]]:
    """(layer, position) cells a check patches, where patching changes the logits and the
    neighbouring layers differ: on a tiny model the subject early and the last token later; on
    the embedded one (slower) the subject in a middle layer."""
    n, last = model.n_layers, len(_ids(model, clean)) - 1
    subj = subject_position(model, clean, corrupted)
    if model.name.startswith("tiny-"):
        return [(1, subj), (2, last)]
    return [(n * 2 // 5, subj)]


@check
def check_patch_residual(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(model, clean, corrupted, layer, pos) -> (vocab,)``: the last-token logits of
    the *corrupted* prompt run with the *clean* run's residual stream written into block
    ``layer``'s input (resid_pre) at position ``pos``, as
    :func:`steerlab.patching.activation_patching` patches it. Also fails when ``fn`` leaves a
    hook on the model."""
    done = []
    for m in models_for(model, embedded, archs=("llama", "gpt2")):
        clean, corrupted, _, _ = pair_for(m)
        for layer, pos in _cells_for(m, clean, corrupted):
            what = f"on {m.name}, your function(model, clean, corrupted, layer={layer}, pos={pos})"
            with HookGuard(m) as guard:
                got = call(fn, m, clean, corrupted, layer, pos, what=what,
                           hint="args[0] of a pre-hook is the block's input, (batch, tokens, "
                                "d_model): write one position with h[:, pos], not h[pos]")
            if guard.leaked:
                raise Fail(f"{what} left {len(guard.leaked)} hook(s) on "
                           f"{_modules(guard.leaked)} after it returned: every later forward "
                           "pass would still be patched (or keep recording). Keep each handle "
                           "and call handle.remove() in a finally block. (The check removed "
                           "them.)")
            _, rec = oracle(m, clean, corrupted, [layer], [pos])
            ref, clean_lg, corr_lg = rec.patched[0], rec.seen[0][0], rec.seen[1][0]
            if isinstance(got, torch.Tensor) and got.ndim >= 2 and got.shape[-1] == ref.shape[0]:
                raise Fail(f"{what} returned shape {tuple(got.shape)}; expected {tuple(ref.shape)}"
                           ": the logits at the last token only, logits[0, -1].")
            got = as_tensor(got, what, tuple(ref.shape))
            scale = float((ref - corr_lg).norm())  # how far the patch moves the logits

            def close(a: torch.Tensor, b: torch.Tensor, scale: float = scale,
                      tol: float = tolerance(m)) -> bool:
                return float((a - b).norm()) <= tol * scale

            if close(got, ref):
                continue
            raise Fail(f"{what}: expected logits starting {head(ref)}, got {head(got)} "
                       f"(relative error {rel_err(got, ref):.3g}); "
                       + _diagnose_patch(m, got, close, clean, corrupted, layer, pos,
                                         clean_lg, corr_lg))
        done.append(m.name)
    return ("patches the clean residual into the corrupted run exactly like steerlab's "
            "activation_patching on " + ", ".join(done) + ".")


def _diagnose_patch(m: Model, got: torch.Tensor, close: Any, clean: str, corrupted: str,
                    layer: int, pos: int, clean_lg: torch.Tensor, corr_lg: torch.Tensor) -> str:
    if close(got, clean_lg):
        return ("these are the clean run's own logits: you ran the clean prompt with its own "
                "activation (patching clean into clean changes nothing, so a map of it is all "
                "1), or you wrote the clean residual at every position instead of only h[:, "
                "pos]. Capture from the clean run, then run the corrupted prompt with it.")
    if close(got, corr_lg):
        return ("these are the corrupted run's logits, unpatched (a map of it is all 0): you "
                "wrote the corrupted run's own activation back (capture from the clean prompt), "
                "or the pre-hook's return value was lost -- it must return the new args, "
                "(new_h, *args[1:]), or edit args[0] in place.")
    alts = {"noise": "you patched the other way round: the corrupted residual into the clean "
                     "run (that is noising). Denoising runs the corrupted prompt and writes the "
                     "clean activation in."}
    if layer + 1 < m.n_layers:
        alts["up"] = (f"you patched block {layer}'s output, which is block {layer + 1}'s input: "
                       "one layer too late. resid_pre of layer l is the *input* of "
                       "model.layers[l]: use register_forward_pre_hook (a forward hook sees "
                       "the output), or hidden_states[l], not [l + 1].")
    if layer > 0:
        alts["down"] = (f"you patched block {layer - 1}'s input (resid_pre {layer - 1}): one "
                        f"layer too early. Hook model.layers[{layer}] itself; with "
                        f"output_hidden_states, block l's input is hidden_states[l] (index 0 "
                        "is the embeddings).")
    for key, why in alts.items():
        if key == "noise":
            alt = oracle(m, clean, corrupted, [layer], [pos], direction="noise")[1].patched[0]
        else:
            alt = oracle(m, clean, corrupted, [layer + (1 if key == "up" else -1)],
                         [pos])[1].patched[0]
        if close(got, alt):
            return why
    for p in (pos - 1, pos + 1):
        if 0 <= p < len(_ids(m, clean)) and close(
                got, oracle(m, clean, corrupted, [layer], [p])[1].patched[0]):
            return (f"you patched position {p}, not {pos}: write h[:, pos] (positions count "
                    "from 0, like the tokens of model.encode([prompt])).")
    return ("Hint: capture args[0] of a forward pre-hook on model.layers[layer] during the "
            "clean run; then, in a second pre-hook during the corrupted run, return "
            "(h_new, *args[1:]) where h_new is a clone of args[0] with h_new[:, pos] = "
            "clean[:, pos]; return the corrupted run's logits[0, -1].")


def _modules(names: list[str]) -> str:
    """'model.layers.1 (x22), model.layers.2 (x22)' for a list of module names."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(n if c == 1 else f"{n} (x{c})" for n, c in counts.items())


# ---- exercise 5.2 ---------------------------------------------------------------------------

def _map_layers(model: Model) -> list[int]:
    """Layers with a neighbour on both sides: two on a tiny model; on the embedded one (a
    patch costs two forwards of the participant's loop) one late layer, where the last token
    carries the answer and the subject no longer does, far from row 0 so that a loop over
    range(len(layers)) does not look like an off-by-one."""
    n = model.n_layers
    return [1, 2] if model.name.startswith("tiny-") else [n * 4 // 5]


@check
def check_patching_map(fn: Any, model: Model | None = None, embedded: bool = True) -> str:
    """Check ``fn(model, clean, corrupted, layers, metric) -> (len(layers), n_tokens)``: entry
    ``[i, p]`` is ``metric(logits)`` of the corrupted run with the clean residual patched into
    block ``layers[i]``'s input at position ``p``, for every position of the prompt; compared
    with :func:`steerlab.patching.activation_patching`'s ``.tensor`` (here with the raw logit
    difference as the metric)."""
    done = []
    for m in models_for(model, embedded):
        clean, corrupted, good, bad = pair_for(m)
        layers = _map_layers(m)
        n_tok = len(_ids(m, clean))

        def metric(logits: torch.Tensor, good: int = good, bad: int = bad) -> float:
            return float(logits[good] - logits[bad])

        what = f"on {m.name}, your function(model, clean, corrupted, layers={layers}, metric)"
        with HookGuard(m) as guard:
            got = call(fn, m, clean, corrupted, list(layers), metric, what=what)
        if guard.leaked:
            raise Fail(f"{what} left {len(guard.leaked)} hook(s) on {_modules(guard.leaked)}: "
                       "each patch must remove its hooks (handle.remove() in a finally block) "
                       "before the next one, or they pile up. (The check removed them.)")
        shape = (len(layers), n_tok)
        if isinstance(got, torch.Tensor | np.ndarray) and tuple(got.shape) == shape[::-1]:
            raise Fail(f"{what} returned shape {tuple(got.shape)}; expected {shape}: one row "
                       "per layer in `layers`, one column per position (rows are layers).")
        got = as_tensor(got, what, shape)
        res, _ = oracle(m, clean, corrupted, layers, None, good, bad)
        lo, hi = res.corrupted, res.clean

        def norm(x: torch.Tensor, lo: float = lo, hi: float = hi) -> torch.Tensor:
            return (x - lo) / (hi - lo)

        g, r = norm(got), norm(res.tensor)
        tol = tolerance(m)
        if float((g - r).abs().max()) <= tol:
            done.append(f"{m.name} ({shape[0]} layers x {shape[1]} positions)")
            continue
        raise Fail(f"{what}: " + _diagnose_map(m, g, r, norm, tol, clean, corrupted, layers,
                                               good, bad))
    return ("the layer x position map equals steerlab's activation_patching on "
            + " and ".join(done) + ".")


def _diagnose_map(m: Model, g: torch.Tensor, r: torch.Tensor, norm: Any, tol: float,
                  clean: str, corrupted: str, layers: list[int], good: int, bad: int) -> str:
    i, p = divmod(int((g - r).abs().argmax()), g.shape[1])
    where = (f"at layer {layers[i]}, position {p} expected {float(r[i, p]):.3f}, got "
             f"{float(g[i, p]):.3f} (in units where the clean run is 1 and the corrupted 0)")
    if float((g - 1).abs().max()) <= max(tol, 0.02):
        return (f"every cell is ~1, as if each patch restored the clean run fully ({where}): "
                "you patched the clean run with its own activations (run the *corrupted* "
                "prompt with the clean activation written in), or wrote every position at "
                "once instead of h[:, pos].")
    if float(g.abs().max()) <= max(tol, 0.02):
        return (f"every cell is ~0, as if nothing were patched ({where}): you wrote the "
                "corrupted run's own activations back (capture them from the *clean* prompt), "
                "or the hook's new value never reached the model (return it from the "
                "pre-hook).")
    noise = norm(oracle(m, clean, corrupted, layers, None, good, bad,
                        direction="noise")[0].tensor)
    if float((g - noise).abs().max()) <= tol:
        return (f"{where}: this is the noising map -- the corrupted residual patched into the "
                "clean run. Denoising runs the corrupted prompt with the clean activation.")
    cand = sorted({c for layer in layers for c in (layer - 1, layer, layer + 1)}
                  | set(range(len(layers))))
    cand = [c for c in cand if 0 <= c < m.n_layers]
    full = norm(oracle(m, clean, corrupted, cand, None, good, bad)[0].tensor)
    rows = {c: full[k] for k, c in enumerate(cand)}
    wrong = []
    for k, layer in enumerate(layers):
        if float((g[k] - rows[layer]).abs().max()) <= tol:
            continue
        match = [c for c in cand if c != layer and float((g[k] - rows[c]).abs().max()) <= tol]
        wrong.append((k, layer, match))
    if wrong and all(match for _, _, match in wrong):
        k, layer, match = wrong[0]
        by_index = all(kk in mt for kk, _, mt in wrong)
        shift = match[0] - layer
        if by_index and shift != -1:
            return (f"row {k} is the map of layer {k}, not of layers[{k}] = {layer}: you passed "
                    "the row number to the patch; loop over the layers themselves (for i, "
                    "layer in enumerate(layers)).")
        side = ("one layer too late: block l's output is block l+1's input" if shift == 1
                else "one layer too early" if shift == -1 else f"{shift:+d} layers off")
        also = (" (Or you passed the row number i instead of layers[i]: here they differ by "
                "one; loop with for i, layer in enumerate(layers).)" if by_index else "")
        return (f"row {k} (layers[{k}] = {layer}) equals the map of layer {match[0]}, {side}. "
                "resid_pre of layer l is the input of model.layers[l]: patch it with a "
                "forward *pre*-hook on that block (check_patch_residual names the slip)."
                + also)
    return (f"{where}. Hint: out[i, p] = metric(patch_residual(model, clean, corrupted, "
            "layers[i], p)) for every position p in range(len(model.encode([clean])"
            "['input_ids'][0])); if check_patch_residual fails, fix that first.")


# ---- exercise 5.3 ---------------------------------------------------------------------------

@check
def check_normalised_logit_diff(fn: Any, model: Model | None = None,
                                embedded: bool = True) -> str:
    """Check ``fn(logits, correct_id, incorrect_id, ld_clean, ld_corrupt) -> float``: the logit
    difference ``logits[correct_id] - logits[incorrect_id]`` rescaled to
    ``(ld - ld_corrupt) / (ld_clean - ld_corrupt)`` (clean run 1, corrupted run 0), on the clean,
    corrupted and patched logits of :func:`steerlab.patching.activation_patching` with
    ``logit_diff(..., normalise=True)``, whose values are the reference."""
    done = []
    for m in models_for(model, embedded):
        clean, corrupted, good, bad = pair_for(m)
        layers, last = [c[0] for c in _cells_for(m, clean, corrupted)], len(_ids(m, clean)) - 1
        positions = [subject_position(m, clean, corrupted), last]
        res, rec = oracle(m, clean, corrupted, layers, positions, good, bad, normalise=True)
        ld_clean, ld_corrupt = res.clean, res.corrupted
        cases = [("the clean run", rec.seen[0][0], 1.0),
                 ("the corrupted run", rec.seen[1][0], 0.0)]
        cases += [(f"the run patched at layer {row.layer}, position {row.position}",
                   rec.patched[k], float(row.value))
                  for k, row in enumerate(res.frame.itertuples())]
        for name, logits, ref in cases:
            what = (f"on {m.name}, your function(logits of {name}, {good}, {bad}, "
                    f"ld_clean={ld_clean:.3g}, ld_corrupt={ld_corrupt:.3g})")
            got = as_number(call(fn, logits.clone(), good, bad, ld_clean, ld_corrupt, what=what),
                            what)
            if abs(got - ref) <= 1e-3 * max(1.0, abs(ref)):
                continue
            ld = float(logits[good] - logits[bad])
            gap = ld_clean - ld_corrupt
            alternatives = {
                "that is the raw logit difference: you forgot to normalise -- subtract "
                "ld_corrupt and divide by (ld_clean - ld_corrupt), so the clean run scores 1 "
                "and the corrupted run 0": ld,
                "clean and corrupted are swapped (1 minus the answer): the corrupted run must "
                "score 0, the clean run 1": 1 - ref,
                "you divided by ld_clean alone: subtract the corrupted baseline, then divide "
                "by the gap ld_clean - ld_corrupt": ld / ld_clean,
                "you divided by ld_clean instead of the gap ld_clean - ld_corrupt":
                    (ld - ld_corrupt) / ld_clean,
                "you divided by the gap but did not subtract ld_corrupt first": ld / gap,
                "the difference is the wrong way round: logits[correct_id] - "
                "logits[incorrect_id]": (-ld - ld_corrupt) / gap,
            }
            hint = next((why for why, alt in alternatives.items()
                         if abs(got - alt) <= 1e-3 * max(1.0, abs(alt))),
                        "Hint: ld = logits[correct_id] - logits[incorrect_id]; return "
                        "(ld - ld_corrupt) / (ld_clean - ld_corrupt)")
            raise Fail(f"{what}: expected {ref:.4f}, got {got:.4f}; {hint}.")
        done.append(f"{m.name} ({len(cases)} runs)")
    return ("equals steerlab's normalised logit_diff (clean 1, corrupted 0) on "
            + " and ".join(done) + ".")
