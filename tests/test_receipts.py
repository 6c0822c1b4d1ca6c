"""Receipts: what an intervention did, checked against a hand computation, and the guards
checked against re-creations of the phase and hook bugs steerlab (and its peers) have met."""

import pytest
import torch
from conftest import ATTENTION_ARCHS, PROMPTS, no_hooks, patch_model, tiny_model

from steerlab.backends import phase as phase_module
from steerlab.backends.phase import Phase
from steerlab.errors import OptionError, ReceiptError, ReceiptWarning
from steerlab.receipts import Receipt
from steerlab.steering import hong_projection, steer

NEW = 4


def _vec(model, seed=0, scale=3.0):
    return scale * torch.randn(model.d_model, generator=torch.Generator().manual_seed(seed))


def _gen(model, backend="hf", prompts=PROMPTS[:2]):
    """Greedy NEW tokens for each prompt, none ending early (so the steps are countable)."""
    enc = model.encode(prompts)
    model.backend(backend).generate(enc, max_new_tokens=NEW, min_new_tokens=NEW,
                                    do_sample=False, pad_token_id=0)
    return enc


def _capture(model, enc, layer):
    """resid_post of ``layer`` on ``enc``, unsteered (the hand computation's input)."""
    got = {}
    be = model.backend("hf")

    def keep(h):
        got["h"] = h.detach().clone()

    with torch.no_grad(), be.add_edits([(layer, keep)]):
        be.forward(enc)
    return got["h"]


def test_added_vector_receipt_equals_the_hand_computation(tiny_llama):
    """fp32: every real token of the forward is changed by exactly coeff x ||v||, and the
    generation's decoding steps are counted one by one."""
    m = tiny_llama
    v = _vec(m)
    enc = m.encode(PROMPTS[:2])
    rows, cols = enc["input_ids"].shape
    with steer(m, v, layers=2, coeff=1.5, receipt="detail") as h:
        m.backend("hf").forward(enc)
    (g,) = h.receipt.totals()
    assert (g["layer"], g["site"], g["prompt_forwards"], g["decoding_steps"]) == (
        2, "resid_post", 1, 0)
    real = int(enc["attention_mask"].sum())
    assert real < rows * cols  # the rows are padded: pads are not positions
    assert g["positions"] == g["prompt_positions"] == real
    want = float((1.5 * v).norm())
    assert g["mean_norm"] == pytest.approx(want, rel=1e-6)
    assert g["mean_asked"] == pytest.approx(want, rel=1e-6)
    tab = h.receipt.table()
    assert list(tab[["forward", "phase", "step", "rows", "first", "last"]].iloc[0])[1:] == [
        "prompt", 0, rows, 0, cols - 1]
    # a generation: one forward of the prompt, then NEW - 1 decoding steps of one column
    with steer(m, v, layers=2, coeff=1.5, receipt="detail", positions="generated") as h:
        width = _gen(m)["input_ids"].shape[1]
    (g,) = h.receipt.totals()
    assert (g["prompt_forwards"], g["decoding_steps"], g["prompt_positions"]) == (0, NEW - 1, 0)
    assert g["decoding_positions"] == (NEW - 1) * rows
    tab = h.receipt.table()
    assert list(tab["step"]) == list(range(1, NEW))
    assert list(tab["first"]) == [width + k for k in range(NEW - 1)]  # column of each token
    assert "0 prompt positions" in str(h.receipt)
    assert no_hooks(m)


def test_projection_receipt_reports_the_component_it_scaled(tiny_llama):
    """A projection changes each token by |coeff| |h·r̂|: the receipt's mean change, the
    asked size and the mean |h·r̂| equal those computed by hand from the captured h."""
    m = tiny_llama
    v = _vec(m, 1)
    enc = m.encode(PROMPTS[:3])
    h = _capture(m, enc, 1)
    comp = (h @ (v / v.norm())).abs()  # (B, T)
    with steer(m, v, layers=1, coeff=0.5, mode="project", receipt="detail") as hd:
        m.backend("hf").forward(enc)
    (g,) = hd.receipt.totals()
    changed = (comp > 0) & enc["attention_mask"].bool()  # real tokens it moved
    assert g["positions"] == int(changed.sum())
    assert g["mean_proj"] == pytest.approx(float(comp[changed].mean()), rel=1e-5)
    assert g["mean_norm"] == pytest.approx(float(0.5 * comp[changed].mean()), rel=1e-4)
    assert g["mean_asked"] == pytest.approx(g["mean_norm"], rel=1e-4)
    # ablation removes the whole component: change = |h·r̂|
    with steer(m, v, layers=1, mode="ablate", receipt="detail") as hd:
        m.backend("hf").forward(enc)
    (g,) = hd.receipt.totals()
    assert g["mean_norm"] == pytest.approx(g["mean_proj"], rel=1e-4)


def test_one_receipt_adds_up_several_contexts_and_levels_are_checked(tiny_llama):
    m = tiny_llama
    rec = Receipt("cell", "counts")
    enc = m.encode(PROMPTS[:2])
    for _ in range(3):
        with steer(m, _vec(m), layers=1, receipt=rec):
            m.backend("hf").forward(enc)
    (g,) = rec.totals()
    assert g["prompt_forwards"] == 3
    with steer(m, _vec(m), layers=1, receipt="off") as h:
        m.backend("hf").forward(enc)
    assert h.receipt is None
    with pytest.raises(OptionError, match="receipt level"):
        steer(m, _vec(m), layers=1, receipt="loud").__enter__()
    assert no_hooks(m)


@pytest.mark.parametrize("backend", ["hf", "nnsight"])
@pytest.mark.parametrize("site", ["resid_pre", "attn_out", "resid_mid", "mlp_out",
                                  "resid_post"])
@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_a_correct_run_raises_nothing_and_counts_its_phases(tiny_llama, backend, site,
                                                             positions):
    """Every backend, site and positions mode, in detail: no guard fires, the phases the edit
    ran in are those asked for, and the change is the one asked for."""
    m = tiny_llama
    with steer(m, _vec(m), layers=1, coeff=1.0, site=site, any_site=True,
               positions=positions, backend=backend, receipt="detail") as h:
        _gen(m, backend)
    (g,) = h.receipt.totals()
    assert (g["prompt_forwards"] > 0) == (positions != "generated")
    assert (g["decoding_steps"] > 0) == (positions != "prompt")
    assert g["mean_norm"] == pytest.approx(g["mean_asked"], rel=1e-5)
    assert no_hooks(m)


@pytest.mark.parametrize("mode", ["project", "ablate"])
def test_projections_and_all_site_projection_raise_nothing(tiny_llama, mode):
    m = tiny_llama
    with steer(m, _vec(m), layers=[0, 2], coeff=0.3, mode=mode, receipt="detail") as h:
        _gen(m)
    assert len(h.receipt.totals()) == 2
    hp = hong_projection(m, _vec(m), from_layer=1, coeff=0.1, receipt="detail")
    with hp:
        _gen(m)
    assert {g["site"] for g in hp.receipt.totals()} == {"resid_pre", "attn_out", "mlp_out"}
    assert len(hp.receipt.totals()) == 3 * m.n_layers
    assert no_hooks(m)


# --- the guards, each against a re-created past bug --------------------------------------

def test_guard_catches_the_cache_keyword_drift(tiny_llama, monkeypatch):
    """transformers 5.24 renamed the cache keyword, and a phase rule that read the old name
    saw every forward as the prompt's: ``positions="generated"`` steered nothing. Re-created:
    the rule reads a keyword no forward carries (and ignores the generation's count)."""
    monkeypatch.setattr(Phase, "enter_forward", lambda self, args, kwargs: setattr(
        self, "prefill", kwargs.get("past_key_value") is None))
    m = tiny_llama
    with (pytest.raises(ReceiptError, match="did not run in forward .*decoding step 1"),
          steer(m, _vec(m), layers=1, positions="generated")):
        _gen(m)
    assert no_hooks(m)


def test_guard_catches_one_phase_hook_per_edit(tiny_llama, monkeypatch):
    """One phase pre-hook per edit counted every forward twice, so after the first edit a
    prompt-only edit saw the prompt's forward as a decoding step. Re-created: attach()
    registers a new hook for every edit."""
    def attach(self, top):
        return top.register_forward_pre_hook(self._enter, with_kwargs=True)

    monkeypatch.setattr(Phase, "attach", attach)
    m = tiny_llama
    with (pytest.raises(ReceiptError, match="did not run in forward .*of the prompt"),
          steer(m, _vec(m), layers=[1, 2], positions="prompt")):
        _gen(m)
    assert no_hooks(m)


def test_guard_catches_the_staged_prefill_counted_as_decoding(tiny_llama, monkeypatch):
    """The staged prefill of cells of several layers runs the prompt in several forwards; a
    rule that counts forwards saw every stage after the first as a decoding step, and
    ``evaluate_cells(positions="prompt")`` returned unsteered text. Re-created: the
    engine's declarations of the prompt's forwards are ignored."""
    from contextlib import nullcontext

    from steerlab.cells import evaluate_cells
    from steerlab.tasks import get_task

    monkeypatch.setattr(Phase, "reading", lambda self, prompt: nullcontext())
    m = tiny_llama
    task = get_task("reasoning-gen")
    vecs = [_vec(m, 2), _vec(m, 3)]
    with pytest.raises(ReceiptError, match="of the prompt|ran in forward .*: it applies only"):
        evaluate_cells(m, task, [0, 2], vecs, n=3, positions="prompt")
    assert no_hooks(m)
    monkeypatch.undo()
    evaluate_cells(m, task, [0, 2], vecs, n=3, positions="prompt")  # correct: silent


def test_guard_catches_a_doubled_edit(tiny_llama, monkeypatch):
    """A vector added twice (CAA's hook registered twice; a hook point that fires twice per
    forward): the same edit runs twice in one forward. Re-created: the HF backend
    registers every hook twice."""
    from steerlab.backends.hf import HFBackend

    register = HFBackend._register

    def twice(self, layer, point, fn):
        first, second = register(self, layer, point, fn), register(self, layer, point, fn)

        def both():
            a, b = first(), second()
            from steerlab.backends.base import Handles
            return Handles([a, b])

        return both

    monkeypatch.setattr(HFBackend, "_register", twice)
    m = tiny_llama
    with (pytest.raises(ReceiptError, match="ran twice in forward"),
          steer(m, _vec(m), layers=1)):
        m.backend("hf").forward(m.encode(PROMPTS[:2]))
    assert no_hooks(m)


def test_size_guard_catches_a_slip_inside_the_hook(tiny_llama, monkeypatch):
    """An edit that adds the vector twice inside one hook (or broadcasts it wrongly) runs
    once per forward, so only its size shows it: ``detail`` compares the change with the
    request, within the dtype's rounding."""
    import steerlab.steering as steering

    make = steering._make_steer_fn
    monkeypatch.setattr(steering, "_make_steer_fn",
                        lambda v, coeff, mode: make(v, 2 * coeff, mode))
    m = tiny_llama
    enc = m.encode(PROMPTS[:2])
    with steer(m, _vec(m), layers=1, receipt="counts"):  # counts do not look at sizes
        m.backend("hf").forward(enc)
    with (pytest.raises(ReceiptError, match="where the request implies"),
          steer(m, _vec(m), layers=1, receipt="detail")):
        m.backend("hf").forward(enc)
    lenient = Receipt("steered", "detail", "warn")  # leniency where asked for
    with pytest.warns(ReceiptWarning), steer(m, _vec(m), layers=1, receipt=lenient):
        m.backend("hf").forward(enc)
    assert no_hooks(m)


def test_evidence_is_not_the_phase_rule():
    """The receipt's account of a forward comes from its cache against the prompt's width,
    not from the rule's declarations or counts."""
    p = Phase()

    class Cache:
        def __init__(self, n):
            self.n = n

        def get_seq_length(self):
            return self.n

    ids = torch.zeros(2, 5, dtype=torch.long)
    with p.generation(width=5), p.reading(prompt=True):
        assert p.seen((), {"input_ids": ids, "cache": Cache(0)}).phase == "prompt"
        assert p.seen((), {"input_ids": ids[:, :2], "cache": Cache(3)}).phase == "prompt"
        s = p.seen((), {"input_ids": ids[:, :1], "cache": Cache(5)})
        assert (s.phase, s.step, s.start, s.rows, s.columns) == ("decoding", 1, 5, 2, 1)
    # outside a generation of ours: any filled cache continues a sequence
    assert p.seen((), {"input_ids": ids, "past_key_values": Cache(4)}).phase == "decoding"
    assert phase_module.cached_columns((), {"state": [1]}) == -1


# --- the same receipts on every backend ----------------------------------------------------

CELLS = ([("add", site, pos) for site in ("resid_pre", "attn_out", "resid_mid", "mlp_out",
                                          "resid_post") for pos in ("all", "prompt", "generated")]
         + [(mode, "resid_post", "all") for mode in ("project", "ablate", "hong")])


def _receipt_and_text(model, backend, mode, site, positions, vector, prompts):
    enc = model.encode(prompts)
    kw = {"max_new_tokens": NEW, "min_new_tokens": NEW, "do_sample": False,
          "pad_token_id": model.tokenizer.pad_token_id or 0}
    if mode == "hong":
        ctx = hong_projection(model, vector, from_layer=1, coeff=0.1, backend=backend,
                              receipt="detail")
    else:
        ctx = steer(model, vector, layers=1, coeff=0.5 if mode == "project" else 1.0,
                    mode=mode, site=site, any_site=True, positions=positions,
                    backend=backend, receipt="detail")
    with ctx as handle:
        ids = model.backend(backend).generate(enc, **kw)
    return handle.receipt, ids[:, enc["input_ids"].shape[1]:].tolist()


def _agree(got, ref, cell, backend, rtol):
    """Receipts of two backends: the same phases, rows and positions, the same sizes."""
    a, b = got.totals(), ref.totals()
    assert len(a) == len(b), (cell, backend)
    for x, y in zip(a, b, strict=True):
        for k in ("layer", "site", "prompt_forwards", "decoding_steps", "rows", "positions",
                  "prompt_positions", "decoding_positions"):
            assert x[k] == y[k], f"{backend} vs hf disagree on {k} in cell {cell}"
        for k in ("mean_norm", "mean_asked"):
            assert x[k] == pytest.approx(y[k], rel=rtol), \
                f"{backend} vs hf disagree on {k} in cell {cell}"


@pytest.fixture(scope="module", params=ATTENTION_ARCHS)
def tiny_lens(request):
    """A tiny model of each attention architecture with its tokenizer saved to a directory,
    which TransformerLens's bridge reloads by path (it boots only tokenizers it can load)."""
    return patch_model(request.param, seed=0)


@pytest.mark.parametrize("cell", CELLS, ids=["-".join(c) for c in CELLS])
def test_every_backend_receipts_agree_on_a_tiny_model(tiny_lens, cell):
    """hf, nnsight and TransformerLens on each tiny architecture: the same phases, rows, positions
    and generated tokens; sizes to 1e-5 (nnsight runs the HF modules) and 1e-4 (the bridge's
    eager attention rounds differently)."""
    mode, site, positions = cell
    v = _vec(tiny_lens, 5)
    ref, ref_ids = _receipt_and_text(tiny_lens, "hf", mode, site, positions, v, PROMPTS[:2])
    for backend, rtol in (("nnsight", 1e-5), ("tlens", 1e-4)):
        got, got_ids = _receipt_and_text(tiny_lens, backend, mode, site, positions, v,
                                         PROMPTS[:2])
        _agree(got, ref, cell, backend, rtol)
        assert got_ids == ref_ids, (cell, backend)
    assert no_hooks(tiny_lens)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS, ids=["-".join(c) for c in CELLS])
def test_every_backend_receipts_agree_on_smollm2(smollm, cell):
    """The real model on all three backends: receipts and generated tokens agree;
    TransformerLens's eager attention rounds differently, so sizes agree to 1e-3."""
    mode, site, positions = cell
    v = 8.0 * torch.randn(smollm.d_model, generator=torch.Generator().manual_seed(5))
    prompts = ["What is the capital of France?", "Which is larger, 37 or 52?"]
    ref, ref_ids = _receipt_and_text(smollm, "hf", mode, site, positions, v, prompts)
    for backend in ("tlens", "nnsight"):
        got, got_ids = _receipt_and_text(smollm, backend, mode, site, positions, v, prompts)
        _agree(got, ref, cell, backend, 1e-3)
        assert got_ids == ref_ids, (cell, backend)
    assert no_hooks(smollm)


def test_patching_receipt_counts_the_patched_positions(tiny_llama):
    """Activation patching at one position per cell: each row of each forward changes one
    token (where the clean and corrupted activations differ), at its cell's layer."""
    from steerlab.metrics import logit_diff
    from steerlab.patching import activation_patching

    clean = ["The cat is", "A dog ran.", "My hat is!"]
    corrupt = ["The cow is", "A pig ran.", "My car is!"]
    metric = logit_diff(tiny_llama, [68, 69, 70], [71, 72, 73])
    res = activation_patching(tiny_llama, clean, corrupt, metric, site="resid_post",
                              layers=[1, 2], positions=[5, 6])
    tab = res.receipt.table()
    assert set(tab["layer"]) == {1, 2} and set(tab["phase"]) == {"prompt"}
    # every (layer, position) cell x pair is one row; each row changes at most its one token
    assert int(tab["rows"].sum()) == 2 * 2 * 3
    assert (tab["positions"] <= tab["rows"]).all() and tab["positions"].sum() > 0
    assert set(tab["first"]).issubset({5, 6}) and set(tab["last"]).issubset({5, 6})
    assert no_hooks(tiny_llama)


@pytest.mark.parametrize("task", ["memorisation-mc", "reasoning-gen"])
def test_every_sweep_cell_carries_its_receipt(tiny_llama, tmp_path, task):
    """The journal row of every steered cell says what its steering did: at its own layer,
    in the forwards its task runs (multiple choice: prompt forwards only)."""
    import json

    from steerlab.sweep_journal import journal_path
    from steerlab.sweeps import sweep

    out = tmp_path / "s.parquet"
    sweep(tiny_llama, task, layers=[1, 2], coeffs=[0.0, 0.5], methods=["diff_means", "random"],
          n=4, extract_n=6, progress=False, out=out)
    rows = [json.loads(x) for x in journal_path(out).read_text().splitlines()]
    steered = [r for r in rows if r["method"] != "baseline" and r["coeff"] != 0]
    assert len(steered) == 4
    for r in steered:
        line = r["receipt"]
        assert line.startswith(f"steered layer {r['layer']} resid_post at "), line
        assert "never ran" not in line and " 0 prompt forwards and 0 decoding" not in line
        if task == "memorisation-mc":
            assert " and 0 decoding steps" in line
        else:
            assert " 0 decoding steps" not in line
    assert all("receipt" not in r for r in rows if r["coeff"] == 0)


def test_cached_activations_carry_the_receipt_of_their_captures(tmp_path):
    """Every capture ran once per batch's forward, read only; the in-memory and the sharded
    activations say so in their meta."""
    from steerlab.cache import cache_activations

    model = tiny_model("llama")
    prompts = ["hello there", "a b c d e f", "xyz"]
    for out in (None, tmp_path / "shards"):
        acts = cache_activations(model, prompts, layers=[1, 2], batch_size=2, out=out,
                                 progress=False)
        lines = acts.meta["receipt"].splitlines()
        assert len(lines) == 2 and lines[0].startswith("captured layer 1 resid_post at 2 "
                                                       "prompt forwards and 0 decoding steps")
        assert all("read only" in line for line in lines)
