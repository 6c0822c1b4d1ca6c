"""compare_conditions: every condition on the same items against a baseline, in the sweep's
row schema."""

from __future__ import annotations

import pytest

from steerlab.adapters import LearnedVectors
from steerlab.errors import OptionError
from steerlab.tasks import arithmetic_items
from tests.conftest import no_hooks, tiny_model


def test_compare_conditions_pairs_every_condition_with_the_baseline():
    from steerlab.conditions import compare_conditions

    model = tiny_model("llama")
    items = arithmetic_items("test")[:4]
    vec = LearnedVectors(model).to_steering_vector(model)  # zero vectors: same as base
    table = compare_conditions(model, {"base": None, "zero": vec}, items=items)
    assert list(table.condition) == ["base", "zero"] and (table.n == 4).all()
    assert table.accuracy.iloc[0] == table.accuracy.iloc[1]
    assert (table.delta == 0).all() and (table.p_mcnemar == 1.0).all()
    assert (table.baseline == table.accuracy.iloc[0]).all()
    assert no_hooks(model)
    with pytest.raises(OptionError, match="baseline"):
        compare_conditions(model, {"zero": vec}, items=items)


def test_compare_conditions_rows_are_sweep_rows(monkeypatch):
    """Same schema as a sweep row (column names and order) and the same numbers that
    ``sweep_journal.journal_row`` computes from the same correctness vectors and seed."""
    import importlib

    import numpy as np


    ev = importlib.import_module("steerlab.conditions")
    from steerlab.conditions import compare_conditions
    from steerlab.evaluation import EvalResult
    from steerlab.reports import COLUMNS
    from steerlab.sweep_journal import SweepKey, journal_row

    model = tiny_model("llama")
    rng = np.random.default_rng(0)
    correct = {"base": rng.random(80) < 0.3, "up": rng.random(80) < 0.6,
               "down": rng.random(80) < 0.1}
    results = {k: EvalResult("arithmetic", model.hf_id, [str(i) for i in range(80)], v, [],
                             float(i)) for i, (k, v) in enumerate(correct.items())}
    order = iter(results.values())
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: next(order))
    vec = LearnedVectors(model).to_steering_vector(model)
    table = compare_conditions(model, {"base": None, "up": vec, "down": vec}, seed=5)
    shared = [c for c in COLUMNS if c in table.columns]
    assert list(table.columns) == ["condition", *shared]
    assert shared == ["n", "accuracy", "ci_low", "ci_high", "baseline", "delta", "delta_low",
                      "delta_high", "p_mcnemar", "seconds"]
    cfg = SweepKey(model.hf_id, "float32", "arithmetic", 80, 5, "norm", "x", None, "last",
                   False, None, "hf", (0,), 0, "add", "layer")
    for (name, res), row in zip(results.items(), table.to_dict("records"), strict=True):
        want = journal_row(cfg, name, 0, 1.0, 0.0, res, results["base"], res.seconds, None)
        assert row["condition"] == name
        assert {c: row[c] for c in shared} == {c: want[c] for c in shared}, name
    assert table.delta.iloc[1] > 0 > table.delta.iloc[2]
    assert no_hooks(model)


def test_a_recorded_condition_is_found_whatever_the_last_bits_of_its_vector(tmp_path):
    """A vector extracted again on another CPU differs in its last bits, so a norm rounded to
    3 digits can round the other way: the journal still finds the condition (norms compared to
    1%), while a vector of another size is another condition and is evaluated."""
    import torch

    from steerlab import _io
    from steerlab.conditions import compare_conditions
    from steerlab.vectors import SteeringVector

    model = tiny_model("llama")
    items = arithmetic_items("dev")[:4]
    d = model.d_model
    v = torch.zeros(d)
    v[0] = 1.2349  # "1.23" to 3 digits; 1.2351 is "1.24"
    vec = SteeringVector({1: v}, model.hf_id, d)
    out = tmp_path / "evals.jsonl"
    compare_conditions(model, {"base": None, "v": vec}, items=items, batch_size=4, out=out)
    assert len(_io.read_jsonl(out)) == 2
    near = SteeringVector({1: v * (1.2351 / 1.2349)}, model.hf_id, d)
    compare_conditions(model, {"base": None, "v": near}, items=items, batch_size=4, out=out)
    assert len(_io.read_jsonl(out)) == 2  # read back, nothing evaluated
    far = SteeringVector({1: v * 1.05}, model.hf_id, d)
    compare_conditions(model, {"base": None, "v": far}, items=items, batch_size=4, out=out)
    assert len(_io.read_jsonl(out)) == 3  # another vector: evaluated and recorded
