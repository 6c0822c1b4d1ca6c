"""Per-item steerability (steerlab.reliability): slopes against a hand computation under
steer(), the anti-steerable fraction's interval against a planted truth, and the report."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import no_hooks

from steerlab import _io
from steerlab.errors import OptionError
from steerlab.evaluation import mc_batch
from steerlab.reliability import Reliability, reliability_report
from steerlab.steerability import Steerability, _fit, steerability
from steerlab.steering import steer
from steerlab.tasks import get_task
from steerlab.vectors import SteeringVector

TASK = "memorisation-mc"


def _vector(model, layers=(1, 2), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({l: 3.0 * torch.randn(model.d_model, generator=gen) for l in layers},
                          model.hf_id, model.d_model, ref_norms={l: 4.0 for l in layers})


def _by_hand(model, vec, layer, coeff, items, scoring):
    """Gold-option log-probability against the others, one plain steered forward per item."""
    out = []
    for it in items:
        mc = mc_batch(model, [it], scoring, chat=False)
        with torch.no_grad(), steer(model, vec, layers=layer, coeff=coeff, scale="norm"):
            logits = model.backend("hf").forward(mc.enc, keep=mc.keep)
        (scores,) = mc.finish(logits)
        s = torch.log_softmax(torch.as_tensor(scores, dtype=torch.float64), 0)
        out.append(float(s[it.options.index(it.answer)]))
    return np.array(out)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
def test_slopes_equal_finite_differences_under_steer(tiny_llama, scoring):
    m = tiny_llama
    vec = _vector(m)
    items = get_task(TASK).items(6, 0)
    two = steerability(m, vec, 2, TASK, coeffs=(-0.5, 0.5), items=items, scoring=scoring,
                       batch_size=4)
    want = (_by_hand(m, vec, 2, 0.5, items, scoring)
            - _by_hand(m, vec, 2, -0.5, items, scoring)) / 1.0
    np.testing.assert_allclose(two.frame["slope"], want, rtol=1e-4, atol=1e-6)
    assert two.frame["lo"].isna().all()  # two coefficients: no interval
    grid = (-0.5, 0.0, 0.25, 0.5)
    st = steerability(m, vec, 2, TASK, coeffs=grid, items=items, scoring=scoring, batch_size=4)
    y = np.stack([_by_hand(m, vec, 2, c, items, scoring) for c in grid])
    np.testing.assert_allclose(st.responses, y, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(st.frame["slope"], np.polyfit(grid, y, 1)[0], rtol=1e-4,
                               atol=1e-6)
    assert (st.frame["lo"] <= st.frame["slope"]).all()
    assert (st.frame["slope"] <= st.frame["hi"]).all()
    assert np.ptp(st.frame["slope"]) > 0  # items respond differently: a mix-up would show
    assert no_hooks(m)


def test_the_anti_steerable_interval_covers_the_planted_fraction():
    """Synthetic responses: 30% of 400 items fall with the coefficient, 50% rise, 20% are
    flat, all with noise; the fractions' intervals cover 0.3 and 0.5."""
    rng = np.random.default_rng(0)
    coeffs = np.array([-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3])
    n = 400
    truth = np.r_[np.full(120, -4.0), np.full(200, 4.0), np.zeros(80)]
    y = truth[None, :] * coeffs[:, None] + rng.normal(0, 0.05, (len(coeffs), n))
    slope, lo, hi = _fit(coeffs, y)
    st = Steerability(pd.DataFrame({"item": range(n), "slope": slope, "lo": lo, "hi": hi,
                                    "response0": y[3]}), y, 1, tuple(coeffs), "norm", "x", "t")
    f = st.fractions()
    assert f["anti_low"] <= 0.3 <= f["anti_high"]
    assert f["steerable_low"] <= 0.5 <= f["steerable_high"]
    # the flat items' intervals cover zero about 95% of the time
    flat = (lo[320:] <= 0) & (hi[320:] >= 0)
    assert flat.mean() > 0.85


def test_report_has_the_vector_its_references_and_predictors_and_refuses_bad_input(tiny_llama):
    m = tiny_llama
    vec = _vector(m)
    shuffled = _vector(m, seed=7)
    rep = reliability_report(m, vec, TASK, layers=[1], random=2, n=5,
                             references={"shuffled": shuffled}, coeffs=(-0.2, 0.0, 0.2),
                             batch_size=8)
    tab = rep.table
    assert list(tab["method"]) == [vec.method, "random", "random", "shuffled"]
    assert {"steerable", "anti_steerable", "anti_low", "anti_high", "lens_peak",
            "lens_coherence"} <= set(tab.columns)
    assert tab["lens_peak"].notna().sum() == 1  # the vector's row only
    assert len(rep.slopes) == 4 * 5
    # the reference is read at the vector's size (direction only differs)
    ref = rep.slopes[rep.slopes["method"] == "shuffled"]
    alone = steerability(m, shuffled.with_ref_norms(vec.ref_norms), 1, TASK, n=5,
                         coeffs=(-0.2, 0.0, 0.2), batch_size=8)
    np.testing.assert_allclose(ref["slope"], alone.frame["slope"], rtol=1e-5, atol=1e-7)
    assert "layer 1: steerable" in rep.verdict()
    assert rep._repr_html_().startswith("<p>")
    with pytest.raises(OptionError, match="distinct"):
        steerability(m, vec, 1, TASK, coeffs=(0.1, 0.1), n=3)
    with pytest.raises(OptionError, match="scoring"):
        steerability(m, vec, 1, "arithmetic", scoring="letter", n=3)
    with pytest.raises(OptionError, match="other names"):
        reliability_report(m, vec, TASK, references={vec.method: shuffled}, n=3)
    assert no_hooks(m)


def test_free_answer_slopes_equal_the_gold_answers_log_probability_under_steer(tiny_llama):
    """On a free-answer task the response is the mean log-probability per token of the gold
    answer right after the prompt (teacher-forced), here by hand: one plain steered forward
    per item on the unpadded prompt followed by the answer."""
    m = tiny_llama
    vec = _vector(m)
    items = get_task("arithmetic").items(5, 0)
    grid = (-0.5, 0.0, 0.5)
    st = steerability(m, vec, 2, "arithmetic", coeffs=grid, items=items, batch_size=2)
    want = np.zeros((len(grid), len(items)))
    for k, c in enumerate(grid):
        for i, it in enumerate(items):
            prompt = m.tokenizer(f"Q: {it.question}\nA:")["input_ids"]
            answer = m.tokenizer.encode(" " + it.answer, add_special_tokens=False)
            ids = torch.tensor([prompt + answer])
            with torch.no_grad(), steer(m, vec, layers=2, coeff=c, scale="norm"):
                logits = m.backend("hf").forward({"input_ids": ids,
                                                  "attention_mask": torch.ones_like(ids)})
            logp = torch.log_softmax(logits[0].float(), -1)
            at = range(len(prompt) - 1, len(prompt) + len(answer) - 1)
            want[k, i] = float(np.mean([float(logp[p, t]) for p, t in zip(at, answer,
                                                                           strict=True)]))
    np.testing.assert_allclose(st.responses, want, rtol=1e-4, atol=1e-5)
    assert "gold answer" in st.response
    assert np.ptp(st.frame["slope"]) > 0


def test_a_killed_report_resumes_and_reads_back_the_same(tiny_llama, tmp_path, monkeypatch):
    m = tiny_llama
    vec = _vector(m)
    out = tmp_path / "rel.jsonl"
    kw = {"layers": [1, 2], "n": 5, "coeffs": (-0.2, 0.0, 0.2), "batch_size": 3}
    whole = reliability_report(m, vec, TASK, **kw)
    import steerlab.reliability as rel

    real, calls = rel.gold_responses, []

    def dying(*a, **k):  # one call per layer, for all its cells: killed in the second
        if len(calls) == 1:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(rel, "gold_responses", dying)
    with pytest.raises(KeyboardInterrupt):
        reliability_report(m, vec, TASK, out=out, **kw)
    assert len(_io.read_jsonl(out)) == 2  # layer 1's two cells
    calls.clear()
    monkeypatch.setattr(rel, "gold_responses", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = reliability_report(m, vec, TASK, out=out, **kw)
    assert len(calls) == 1 and len(_io.read_jsonl(out)) == 4
    pd.testing.assert_frame_equal(again.table, whole.table)
    saved = Reliability.load(again.save(tmp_path / "rep.json"))
    pd.testing.assert_frame_equal(saved.table, again.table, check_dtype=False)
    fig = again.figure()
    assert len(fig.data) >= 4 and "Is this vector reliable" in fig.layout.title.text


def test_the_report_runs_for_learned_and_imported_gguf_vectors(tiny_llama, tmp_path):
    from steerlab.adapters import LearnedVectors
    from steerlab.interop import from_gguf, to_gguf

    m = tiny_llama
    adapter = LearnedVectors(m, layers=[1, 2])
    with torch.no_grad():
        gen = torch.Generator().manual_seed(4)
        for p in adapter.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    learned = adapter.to_steering_vector(m)
    kw = {"layers": [1, 2], "n": 4, "coeffs": (-1.0, 0.0, 1.0), "scale": "raw",
          "batch_size": 4}
    rep = reliability_report(m, learned, "arithmetic", **kw)
    assert set(rep.table["method"]) == {learned.method, "random"}
    assert rep.meta["response"].startswith("mean log-probability")
    path = to_gguf(learned, tmp_path / "v.gguf")
    imported = from_gguf(path, m)
    again = reliability_report(m, imported, "arithmetic", **kw)
    np.testing.assert_allclose(again.slopes["slope"], rep.slopes["slope"], rtol=1e-4,
                               atol=1e-6)
    assert no_hooks(m)


@pytest.mark.slow
def test_reliability_command(smollm, tmp_path, capsys):
    from steerlab.cli import main

    gen = torch.Generator().manual_seed(3)
    path = SteeringVector({12: 10 * torch.randn(576, generator=gen)}, smollm.hf_id, 576,
                          ref_norms={12: 50.0}).save(tmp_path / "v.safetensors")
    assert main(["reliability", "--vector", str(path), "--n", "8", "--coeffs=-0.1,0,0.1",
                 "--dtype", "fp32", "--out", str(tmp_path / "r.csv"),
                 "--figure", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "anti_steerable" in out and "random" in out and "layer 12: steerable" in out
    assert len(pd.read_csv(tmp_path / "r.csv")) == 2
    assert "plotly" in (tmp_path / "r.html").read_text()[:200000].lower()


def test_non_finite_coefficients_are_refused(tiny_llama):
    with pytest.raises(OptionError, match="finite"):
        steerability(tiny_llama, _vector(tiny_llama), 1, TASK, coeffs=(0.0, float("inf")), n=3)
