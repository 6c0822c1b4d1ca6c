import json

import pandas as pd
import pytest

import steerlab.sweep as sweep_mod
from steerlab.errors import OptionError, SteerlabError
from steerlab.sweep import journal_path, sweep
from steerlab.tasks import Task, check_disjoint, extraction_prompts, get_task

METHODS = ["diff_means", "random", "shuffled", "memorisation"]
KW = {"layers": [1, 2], "coeffs": [0.0, 0.5], "methods": METHODS, "n": 8, "extract_n": 6,
      "progress": False}


def _stable(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns=["seconds"]).reset_index(drop=True)


def test_table_columns_and_baseline(tiny_llama):
    table = sweep(tiny_llama, "memorisation-mc", **KW)
    assert len(table) == 1 + 4 * 2 * 2
    for col in ["model", "task", "method", "layer", "coeff", "n", "accuracy", "ci_low",
                "ci_high", "delta", "delta_low", "delta_high", "seconds"]:
        assert col in table.columns
    assert (table["ci_low"] <= table["accuracy"]).all()
    assert (table["accuracy"] <= table["ci_high"]).all()
    zero = table[table["coeff"] == 0.0]
    assert (zero["delta"] == 0).all() and (zero["accuracy"] == zero["baseline"]).all()


def test_same_seed_same_table(tiny_llama):
    a = sweep(tiny_llama, "memorisation-mc", seed=3, **KW)
    b = sweep(tiny_llama, "memorisation-mc", seed=3, **KW)
    pd.testing.assert_frame_equal(_stable(a), _stable(b))


def test_killed_sweep_resumes_without_recomputing(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "results.parquet"
    full = sweep(tiny_llama, "memorisation-mc", **KW)
    calls = {"n": 0}
    real = sweep_mod.evaluate

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_mod, "evaluate", dying)
    with pytest.raises(KeyboardInterrupt):
        sweep(tiny_llama, "memorisation-mc", out=out, **KW)
    finished = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    # baseline, two steered cells, and the coeff-0 cells before the kill (they cost nothing)
    assert [r["method"] for r in finished] == ["baseline"] + ["diff_means"] * 4 + ["random"]
    assert len(pd.read_parquet(out)) >= 3
    calls["n"] = -1000  # no more deaths
    monkeypatch.setattr(sweep_mod, "evaluate", lambda *a, **k: (calls.__setitem__(
        "n", calls["n"] + 1), real(*a, **k))[1])
    resumed = sweep(tiny_llama, "memorisation-mc", out=out, **KW)
    steered_cells = 4 * 2  # methods x layers with coeff 0.5
    assert calls["n"] + 1000 == steered_cells - 2  # only the unfinished cells were evaluated
    pd.testing.assert_frame_equal(_stable(resumed), _stable(full))
    on_disk = pd.read_parquet(out)
    assert len(on_disk) == len(full)
    assert not on_disk.duplicated(["method", "layer", "coeff"]).any()


def test_vectors_come_from_a_disjoint_split(tiny_llama):
    pos, neg = extraction_prompts("shipped")
    check_disjoint(pos + neg, get_task("memorisation-mc").items())
    leaky = Task("leaky", "mc", "", "", lambda: get_task("memorisation-mc").items()[:4])
    items = leaky.items()
    from steerlab.tasks import Item

    clash = [Item("z", pos[0], "a", (), ("a", "b"))]
    with pytest.raises(SteerlabError, match="disjoint"):
        check_disjoint(pos, items + clash)


def test_bad_sweep_options(tiny_llama):
    with pytest.raises(OptionError, match="method"):
        sweep(tiny_llama, "memorisation-mc", [1], [1.0], methods=["magic"], progress=False)
    with pytest.raises(OptionError, match="scale"):
        sweep(tiny_llama, "memorisation-mc", [1], [1.0], scale="huge", progress=False)
