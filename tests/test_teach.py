"""Teaching material: notebooks rebuild byte for byte from the lesson sources, every check
passes on the lesson's solution, says "not done yet" on the stub, fails on plausible wrong
answers with the right message, never crashes, and the notebooks execute."""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager

import nbformat
import numpy as np
import pytest
import torch

from steerlab import teach
from steerlab.cli import main
from steerlab.teach import build
from steerlab.teach._harness import HookGuard, tiny

LESSONS = {p.stem: p for p in build.sources()}


def solution(lesson: str, name: str):
    return build.exercise_functions(LESSONS[lesson], "solutions")[name]


# ---- the generator --------------------------------------------------------------------------

def test_five_lessons_and_committed_notebooks_are_up_to_date():
    assert list(LESSONS) == ["01_caching", "02_steering", "03_measuring", "04_reading",
                             "05_patching"]
    assert build.build(check=True) == [], "run `steerlab teach build`"
    assert main(["teach", "build", "--check"]) == 0


def test_rebuild_is_deterministic_and_matches_the_committed_files(tmp_path):
    written = build.build(out_dir=tmp_path)
    assert len(written) == 2 * len(LESSONS)
    for path in written:
        assert path.read_text() == (build.lessons_dir() / path.name).read_text()
    assert build.build(out_dir=tmp_path) == []  # a second build changes nothing
    nb = nbformat.read(tmp_path / "01_caching_exercises.ipynb", as_version=4)
    ids = [c.id for c in nb.cells]
    assert ids[:3] == ["01-e00", "01-e01", "01-e02"] and len(set(ids)) == len(ids)


@pytest.mark.parametrize("lesson", list(LESSONS))
def test_exercises_hold_stubs_and_hints_solutions_hold_answers(lesson):
    src = LESSONS[lesson].read_text()
    n_ex = src.count("# EXERCISE")
    assert n_ex >= 2
    for variant in build.VARIANTS:
        nb = nbformat.read(build.target(LESSONS[lesson], variant), as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
        assert "# EXERCISE" not in code and "# SOLUTION" not in code
        assert code.count(build.STUB) == (n_ex if variant == "exercises" else 0)
        assert code.count("# Hint:") == (n_ex if variant == "exercises" else 0)
    # every solution line is gone from the exercises, and the stub is what raises
    stubs = build.exercise_functions(LESSONS[lesson], "exercises")
    assert len(stubs) == n_ex
    for fn in stubs.values():
        with pytest.raises(teach.NotDoneYet):
            out = fn(*([None] * len(inspect.signature(fn).parameters)))
            out.__enter__()  # a context manager runs its body only on entry


def test_split_cell_and_its_errors():
    cell = ("def f(x):\n    # EXERCISE\n    # Hint: double it\n    # SOLUTION\n    y = 2 * x\n"
            "    return y\n    # END SOLUTION\n\n\nf(1)")
    out = build.split_cell(cell)
    assert out["exercises"] == "def f(x):\n    # Hint: double it\n    raise NotDoneYet()\n\n\nf(1)"
    assert out["solutions"] == "def f(x):\n    y = 2 * x\n    return y\n\n\nf(1)"
    bad = {"# EXERCISE\n# SOLUTION\nx = 1": "not closed",
           "# SOLUTION\nx = 1\n# END SOLUTION": "'# EXERCISE' was expected",
           "# EXERCISE\nx = 1\n# SOLUTION\n# END SOLUTION": "only comment lines",
           "    # EXERCISE\n    # SOLUTION\n# END SOLUTION": "same indentation"}
    for text, msg in bad.items():
        with pytest.raises(build.LessonFormatError, match=msg):
            build.split_cell(text)


# ---- plausible wrong answers, one list per exercise -----------------------------------------

def _hidden_states_off_by_one(model, prompts, layer):
    with torch.no_grad():
        return torch.stack([model.hf(**model.encode([p]), output_hidden_states=True)
                            .hidden_states[layer][0, -1].float() for p in prompts])


def _capture(model, prompts, layer, pick, batched=False, leak=False):
    rows = []

    def hook(module, args, output):
        rows.append(pick(output[0] if isinstance(output, tuple) else output))

    handle = model.layers[layer].register_forward_hook(hook)
    with torch.no_grad():
        for batch in ([prompts] if batched else [[p] for p in prompts]):
            model.hf(**model.encode(batch, padding_side="right"))
    if not leak:
        handle.remove()
    return torch.cat(rows).float()


def _add_hook(sign=1.0, use_coeff=True, ret=True, where=lambda h: True):
    def make(vector, coeff):
        def hook(module, args, output):
            if not where(output):
                return None
            new = output + sign * (coeff if use_coeff else 1.0) * vector.to(output.dtype)
            return new if ret else None

        return hook

    return make


def _context(remove_on_error=True, swallow=False):
    make = _add_hook()

    @contextmanager
    def steering(model, vector, layer, coeff):
        handle = model.layers[layer].register_forward_hook(make(vector, coeff))
        if not remove_on_error:
            yield
            handle.remove()
            return
        try:
            yield
        except Exception:
            if not swallow:
                raise
        finally:
            handle.remove()

    return steering


def _where_like(kind):
    """steered_where with one slip: every row counted (ran, not changed), the layers and
    phases read from what was asked (the edits' ``when``), phases renamed, one layer only,
    or a list of layers."""
    asked_for = {"all": {"prompt", "decoding"}, "prompt": {"prompt"}, "generated": {"decoding"}}

    def fn(receipt):
        if kind == "asked":
            out = {}
            for edit in receipt.edits:
                out.setdefault(edit.layer, set()).update(asked_for[edit.when])
            return out
        tab = receipt.table()  # an empty receipt's table has the columns, no rows
        kept = tab if kind == "every_row" else tab[tab["positions"] > 0]
        out = {int(layer): set(rows["phase"]) for layer, rows in kept.groupby("layer")}
        if kind == "renamed":
            return {k: {"generated" if p == "decoding" else p for p in v} for k, v in out.items()}
        if kind == "first_layer":
            return dict(list(out.items())[:1])
        return sorted(out) if kind == "list" else out

    return fn


def _wilson_like(z=1.959963984540054, wald=False, scale=1.0, swap=False):
    def fn(k, n):
        p = k / n
        if wald:
            half = z * np.sqrt(p * (1 - p) / n)
            return max(0.0, p - half), min(1.0, p + half)
        d = 1 + z * z / n
        c, h = (p + z * z / (2 * n)) / d, z / d * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = max(0.0, c - h) * scale, min(1.0, c + h) * scale
        return (hi, lo) if swap else (lo, hi)

    return fn


def _bootstrap_like(paired=True, sign=1.0, pct=(2.5, 97.5)):
    def fn(a, b, n_boot=10_000, seed=0):
        a, b = np.asarray(a, float), np.asarray(b, float)
        rng = np.random.default_rng(seed)
        i = rng.integers(0, a.size, (n_boot, a.size))
        j = i if paired else rng.integers(0, a.size, (n_boot, a.size))
        lo, hi = np.percentile(sign * (b[j] - a[i]).mean(1), pct)
        return sign * (b.mean() - a.mean()), min(lo, hi), max(lo, hi)

    return fn


def _cosines_like(norm_rows=True, norm_vec=True):
    def fn(model, vector):
        w = model.hf.get_output_embeddings().weight.float()
        if norm_rows:
            w = w / w.norm(dim=1, keepdim=True)
        return w @ (vector / vector.norm() if norm_vec else vector)

    return fn


def _patch_like(src="clean", run="corrupted", hook="pre", shift=0, pos_shift=0, all_pos=False,
                ret=True, leak=False, full=False):
    """patch_residual with one slip: the source or target run, a forward hook (the block's
    output) or the block before, another position, every position, a lost return value, a
    hook left behind, or every position's logits."""
    def fn(model, clean, corrupted, layer, pos):
        prompts = {"clean": clean, "corrupted": corrupted}
        block = model.layers[layer + shift]
        store = {}

        def tensor(args_or_out):
            return args_or_out[0] if isinstance(args_or_out, tuple) else args_or_out

        def edit(h):
            h = h.clone()
            t = slice(None) if all_pos else slice(pos + pos_shift, pos + pos_shift + 1)
            h[:, t] = store["h"][:, t]
            return h

        def wrap(x, h):
            return (h, *x[1:]) if isinstance(x, tuple) else h

        def grab_in(m, a):
            store["h"] = tensor(a).detach().clone()

        def grab_out(m, a, o):
            store["h"] = tensor(o).detach().clone()

        def write_in(m, a):
            return wrap(a, edit(tensor(a))) if ret else None

        def write_out(m, a, o):
            return wrap(o, edit(tensor(o)))

        if hook == "pre":
            grab = block.register_forward_pre_hook(grab_in)
            register, write_fn = block.register_forward_pre_hook, write_in
        else:
            grab = block.register_forward_hook(grab_out)
            register, write_fn = block.register_forward_hook, write_out
        with torch.no_grad():
            model.hf(**model.encode([prompts[src]]))
            grab.remove()
            handle = register(write_fn)
            logits = model.hf(**model.encode([prompts[run]])).logits
        if not leak:
            handle.remove()
        return logits[0].float() if full else logits[0, -1].float()

    return fn


def _map_like(patch=None, transpose=False, by_index=False, drop_last=False):
    patch = patch or _patch_like()

    def fn(model, clean, corrupted, layers, metric):
        n = model.encode([clean])["input_ids"].shape[1] - (1 if drop_last else 0)
        out = torch.zeros(len(layers), n)
        for i, layer in enumerate(layers):
            for p in range(n):
                out[i, p] = metric(patch(model, clean, corrupted, i if by_index else layer, p))
        return out.T if transpose else out

    return fn


def _normalised_like(kind):
    def fn(logits, good, bad, ld_clean, ld_corrupt):
        ld = float(logits[good] - logits[bad])
        return {"raw": ld, "swapped": (ld - ld_clean) / (ld_corrupt - ld_clean),
                "by_clean": ld / ld_clean, "gap_clean": (ld - ld_corrupt) / ld_clean,
                "no_shift": ld / (ld_clean - ld_corrupt),
                "sign": (-ld - ld_corrupt) / (ld_clean - ld_corrupt),
                "vector": logits - ld_corrupt}[kind]

    return fn


CASES = {  # lesson, exercise function, check, [(wrong answer, words its message must hold)]
    "last_token_residual": ("01_caching", teach.check_last_token_residual, [
        (_hidden_states_off_by_one, "one block too early"),
        (lambda m, ps, l: _capture(m, ps, l, lambda h: h.mean(1)), "mean over the prompt"),
        (lambda m, ps, l: _capture(m, ps, l, lambda h: h[:, -1], batched=True), "padding"),
        (lambda m, ps, l: _capture(m, ps, l, lambda h: h[:, -1], leak=True), "left 1 hook"),
        (lambda m, ps, l: _capture(m, ps, l, lambda h: h[:, 0]), "every row is off"),
        (lambda m, ps, l: _capture(m, ps, l, lambda h: h[:, -1]).long(), "dtype torch.int64"),
    ]),
    "mean_difference": ("01_caching", teach.check_mean_difference, [
        (lambda p, n: n.mean(0) - p.mean(0), "opposite way"),
        (lambda p, n: torch.nn.functional.normalize(p.mean(0) - n.mean(0), dim=0),
         "do not normalise"),
        (lambda p, n: (p - n).mean(0), "different numbers of prompts"),
        (lambda p, n: p.mean(1), "wrong axis"),
        (lambda p, n: None, "forget `return`"),
    ]),
    "add_vector_hook": ("02_steering", teach.check_add_vector_hook, [
        (_add_hook(ret=False), "unchanged"),
        (_add_hook(use_coeff=False), "ignoring coeff"),
        (_add_hook(sign=-1.0), "you subtracted"),
        (lambda v, c: 42, "expected a function hook"),
    ]),
    "steering": ("02_steering", teach.check_steering_context, [
        (_context(remove_on_error=False), "hook(s) stayed on"),
        (_context(swallow=True), "vanished"),
        (lambda m, v, l, c: None, "not a context manager"),
    ]),
    "generated_only_hook": ("02_steering", teach.check_generated_only_hook, [
        (_add_hook(), "also steered the forward pass that reads the prompt"),
        (_add_hook(where=lambda h: h.shape[1] > 1), "the other way round"),
        (_add_hook(where=lambda h: False), "nothing was steered"),
    ]),
    "steered_where": ("02_steering", teach.check_steered_where, [
        (_where_like("every_row"), "A row means the edit ran, not that it steered"),
        (_where_like("asked"), "records what ran, not what was asked"),
        (_where_like("renamed"), "'prompt' (a forward that reads the prompt) and 'decoding'"),
        (_where_like("first_layer"), "your answer leaves out 'decoding' at layer"),
        (_where_like("list"), "expected a dict {layer: set of phases}"),
    ]),
    "wilson_interval": ("03_measuring", teach.check_wilson_interval, [
        (_wilson_like(wald=True), "Wald"),
        (_wilson_like(z=1.6448536), "90%"),
        (_wilson_like(swap=True), "swapped"),
        (_wilson_like(scale=100.0), "percent"),
        (lambda k, n: k / n, "expected 2"),
    ]),
    "paired_bootstrap": ("03_measuring", teach.check_paired_bootstrap, [
        (_bootstrap_like(paired=False), "as wide as the paired one"),
        (_bootstrap_like(sign=-1.0), "sign is flipped"),
        (_bootstrap_like(pct=(25, 75)), "too narrow"),
    ]),
    "unembedding_cosines": ("04_reading", teach.check_unembedding_cosines, [
        (_cosines_like(norm_rows=False, norm_vec=False), "raw dot products"),
        (_cosines_like(norm_rows=False), "not the rows"),
        (_cosines_like(norm_vec=False), "but not the vector"),
        (lambda m, v: m.hf.get_output_embeddings().weight.float().T @ torch.ones(128),
         "returned shape"),
    ]),
    "top_tokens": ("04_reading", teach.check_top_tokens, [
        (lambda m, s, k: [m.tokenizer.decode([i]) for i in (-s).topk(k).indices.tolist()],
         "lowest"),
        (lambda m, s, k: s.topk(k).indices.tolist(), "expected strings"),
        (lambda m, s, k: [m.tokenizer.decode([i]) for i in s.topk(k).indices.tolist()][::-1],
         "wrong order"),
    ]),
    "patch_residual": ("05_patching", teach.check_patch_residual, [
        (_patch_like(run="clean"), "clean run's own logits"),
        (_patch_like(src="corrupted"), "corrupted run's logits, unpatched"),
        (_patch_like(src="corrupted", run="clean"), "other way round"),
        (_patch_like(hook="post"), "one layer too late"),
        (_patch_like(shift=-1), "one layer too early"),
        (_patch_like(ret=False), "return value was lost"),
        (_patch_like(all_pos=True), "every position"),
        (_patch_like(pos_shift=1), "you patched position"),
        (_patch_like(leak=True), "left 1 hook(s)"),
        (_patch_like(full=True), "the last token only"),
    ]),
    "patching_map": ("05_patching", teach.check_patching_map, [
        (_map_like(_patch_like(run="clean")), "every cell is ~1"),
        (_map_like(_patch_like(src="corrupted")), "every cell is ~0"),
        (_map_like(_patch_like(src="corrupted", run="clean")), "noising map"),
        (_map_like(_patch_like(hook="post")), "one layer too late"),
        (_map_like(_patch_like(shift=-1)), "one layer too early"),
        (_map_like(by_index=True), "row number"),
        (_map_like(transpose=True), "rows are layers"),
        (_map_like(drop_last=True), "returned shape"),
        (_map_like(_patch_like(leak=True)), "hook(s) on"),
    ]),
    "normalised_logit_diff": ("05_patching", teach.check_normalised_logit_diff, [
        (_normalised_like("raw"), "forgot to normalise"),
        (_normalised_like("swapped"), "swapped"),
        (_normalised_like("by_clean"), "divided by ld_clean alone"),
        (_normalised_like("gap_clean"), "instead of the gap"),
        (_normalised_like("no_shift"), "did not subtract ld_corrupt"),
        (_normalised_like("sign"), "wrong way round"),
        (_normalised_like("vector"), "expected one number"),
    ]),
}
MODEL_FREE = {"wilson_interval", "paired_bootstrap"}


def _run(name, fn):
    check = CASES[name][1]
    return check(fn) if name in MODEL_FREE else check(fn, embedded=False)


@pytest.mark.parametrize("name", list(CASES))
def test_check_passes_on_solution_and_says_not_done_yet_on_stub(name, capsys):
    lesson = CASES[name][0]
    res = _run(name, solution(lesson, name))
    assert res.passed, res.message
    stub = build.exercise_functions(LESSONS[lesson], "exercises")[name]
    res = _run(name, stub)
    assert not res.passed and res.not_done and res.message.startswith("not done yet")
    assert f"{name}() still raises NotDoneYet" in capsys.readouterr().out  # printed, too


@pytest.mark.parametrize("name,i", [(n, i) for n, c in CASES.items() for i in range(len(c[2]))])
def test_check_fails_on_a_plausible_wrong_answer_with_the_right_message(name, i):
    wrong, words = CASES[name][2][i]
    res = _run(name, wrong)
    assert not res.passed and not res.not_done
    assert res.message.startswith("failed:") and words in res.message, res.message


def _raises(*args, **kwargs):
    raise KeyError("oops")


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("answer", [_raises, lambda *a, **k: "nonsense", lambda *a, **k: {1: 2},
                                    lambda *a, **k: torch.full((3,), float("nan")), 7])
def test_checks_never_crash(name, answer):
    res = _run(name, answer)
    assert not res.passed and res.message.startswith("failed:")
    if answer is _raises:
        assert "raised KeyError: 'oops' at line" in res.message


def test_checks_leave_no_hooks_behind():
    model = tiny("llama")
    _run("steering", _context(remove_on_error=False))
    _run("last_token_residual", CASES["last_token_residual"][2][3][0])
    _run("patch_residual", _patch_like(leak=True))
    _run("patching_map", _map_like(_patch_like(leak=True)))
    assert teach.count_hooks(model) == 0 and teach.count_hooks(tiny("gpt2")) == 0


def test_hook_helpers():
    model = tiny("gpt2")
    with HookGuard(model) as guard:
        model.layers[1].register_forward_hook(lambda *a: None)
        model.hf.register_forward_pre_hook(lambda *a: None)
        assert teach.count_hooks(model) == 2
    assert teach.count_hooks(model) == 0 and sorted(guard.leaked) == ["(top)", "transformer.h.1"]
    model.layers[0].register_forward_hook(lambda *a: None)
    assert teach.remove_hooks(model) == 1 and teach.count_hooks(model) == 0


def test_subsample_deltas_are_paired_subsets():
    from steerlab.teach.measuring import paired_outcomes, subsample_deltas

    a, b = paired_outcomes()
    d = subsample_deltas(a, b, n=20, repeats=500)
    assert d.shape == (500,) and np.all(np.abs(d * 20 - np.round(d * 20)) < 1e-9)
    np.testing.assert_allclose(subsample_deltas(a, b, n=a.size, repeats=3), b.mean() - a.mean())
    assert d.std() > 0


# ---- on the embedded model, and the notebooks themselves ------------------------------------

@pytest.mark.slow
def test_solutions_pass_on_the_embedded_model(smollm_fast):
    for name, (lesson, check, _) in CASES.items():
        if name not in MODEL_FREE:
            res = check(solution(lesson, name), smollm_fast)
            assert res.passed and smollm_fast.name in res.message, res.message
    assert teach.count_hooks(smollm_fast) == 0


@pytest.mark.slow
@pytest.mark.parametrize("lesson", list(LESSONS))
@pytest.mark.parametrize("variant", build.VARIANTS)
def test_lesson_notebook_executes_in_smoke_mode(lesson, variant, monkeypatch):
    monkeypatch.setenv("STEERLAB_SMOKE", "1")
    nb, _ = build.execute(build.target(LESSONS[lesson], variant), timeout=900)
    text = build.outputs_text(nb)
    n_ex = LESSONS[lesson].read_text().count("# EXERCISE")
    if variant == "solutions":
        assert text.count(" passed: ") == n_ex and "not done yet" not in text
    else:
        assert text.count(" not done yet: ") == n_ex and " passed: " not in text
    assert not re.search(r"check_\w+ failed:", text)
