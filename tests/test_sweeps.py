import importlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import no_hooks, tiny_model

from steerlab.errors import OptionError, SteerlabError
from steerlab.evaluation import evaluate
from steerlab.options import SCALES
from steerlab.steering import steer
from steerlab.sweep_journal import SweepKey, answered, journal_path, load_vectors, save_vectors
from steerlab.sweeps import build_vectors, sweep
from steerlab.tasks import Task, check_disjoint, extraction_prompts, get_task

sweep_mod = importlib.import_module("steerlab.sweeps")  # the module (steerlab.sweeps: the function)

METHODS = ["diff_means", "random", "shuffled", "memorisation"]
KW = {"layers": [1, 2], "coeffs": [0.0, 0.5], "methods": METHODS, "n": 8, "extract_n": 6,
      "progress": False}

def _stable(table: pd.DataFrame) -> pd.DataFrame:
    """The numbers of a table: without the time and the receipts, which describe how each
    cell was computed (one pass, or the engine's shared forwards)."""
    return table.drop(columns=["seconds", "receipt"], errors="ignore").reset_index(drop=True)


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


def test_killed_naive_sweep_resumes_without_recomputing(tiny_llama, tmp_path, monkeypatch):
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
        sweep(tiny_llama, "memorisation-mc", out=out, fast=False, **KW)
    finished = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    # baseline, two steered cells, and the coeff-0 cells before the kill (they cost nothing)
    assert [r["method"] for r in finished] == ["baseline"] + ["diff_means"] * 4 + ["random"]
    assert len(pd.read_parquet(out)) >= 3
    calls["n"] = -1000  # no more deaths
    monkeypatch.setattr(sweep_mod, "evaluate", lambda *a, **k: (calls.__setitem__(
        "n", calls["n"] + 1), real(*a, **k))[1])
    resumed = sweep(tiny_llama, "memorisation-mc", out=out, fast=False, **KW)
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


def _naive_cells(model, task, layers, coeffs, methods, vecs, scale, items, scoring=None):
    """The reference: one full evaluation pass per cell, steering with a plain hook."""
    out = {}
    for m in methods:
        for l in layers:
            for c in coeffs:
                vec, _ = vecs.added(m, l, c, scale)
                with steer(model, vec, layers=l, coeff=1.0):
                    out[(m, l, c)] = evaluate(model, task, items=items, scoring=scoring,
                                              batch_size=4, progress=False)
    return out


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "rwkv"])
@pytest.mark.parametrize("scoring", ["letter", "text", "cloze"])
def test_fast_sweep_matches_naive_loop_item_by_item(arch, scoring):
    model = tiny_model(arch)
    task = get_task("memorisation-mc")
    layers, coeffs, methods = [0, 2], [-3.0, 3.0], ["diff_means", "random"]
    items = task.items(12, 0)
    vecs = build_vectors(model, task, layers, methods, extract_n=6, batch_size=4,
                         eval_items=items)
    naive = _naive_cells(model, task, layers, coeffs, methods, vecs, "norm", items, scoring)
    table = sweep(model, task, layers, coeffs, methods, n=12, extract_n=6, scoring=scoring,
                  batch_size=4, progress=False)
    moved = 0
    for (m, l, c), ref in naive.items():
        row = table[(table.method == m) & (table.layer == l) & (table.coeff == c)].iloc[0]
        assert row["correct"] == "".join("1" if x else "0" for x in ref.correct), (m, l, c)
        assert row["accuracy"] == ref.accuracy.acc
        moved += row["correct"] != table[table.method == "baseline"].iloc[0]["correct"]
    assert moved > 0  # the steering really changed answers, so the comparison means something
    # the baseline (the zero vector's cell of the first layer) is the unsteered evaluation
    plain = evaluate(model, task, items=items, scoring=scoring, batch_size=4, progress=False)
    base = table[table.method == "baseline"].iloc[0]
    assert base["correct"] == "".join("1" if x else "0" for x in plain.correct)
    assert base["answered"] == answered(items, plain.predictions)
    assert no_hooks(model)


def test_killed_fast_sweep_resumes_and_reuses_vectors(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "results.parquet"
    full = sweep(tiny_llama, "memorisation-mc", **KW)
    real_cells = sweep_mod.evaluate_cells
    real_build = sweep_mod.build_vectors
    calls = {"cells": [], "build": 0}

    def cells(model, task, layer, vectors, **kw):
        calls["cells"].append(layer)
        if calls["cells"] == [1, 2]:
            raise KeyboardInterrupt  # killed while the second layer's cells were running
        return real_cells(model, task, layer, vectors, **kw)

    def build(*a, **k):
        calls["build"] += 1
        return real_build(*a, **k)

    monkeypatch.setattr(sweep_mod, "evaluate_cells", cells)
    monkeypatch.setattr(sweep_mod, "build_vectors", build)
    with pytest.raises(KeyboardInterrupt):
        sweep(tiny_llama, "memorisation-mc", out=out, **KW)
    finished = [json.loads(line) for line in journal_path(out).read_text().splitlines()]
    assert {r["layer"] for r in finished} == {-1, 1}  # layer 1 done, layer 2 not
    assert calls["build"] == 1
    vec_files = sorted(p.name for p in journal_path(out).with_name(
        journal_path(out).name + ".vectors").iterdir())
    assert len(vec_files) == len(METHODS)
    resumed = sweep(tiny_llama, "memorisation-mc", out=out, **KW)
    assert calls["cells"] == [1, 2, 2]  # only layer 2 was evaluated again
    assert calls["build"] == 1  # the saved vectors were reused
    pd.testing.assert_frame_equal(_stable(resumed), _stable(full))
    again = sweep(tiny_llama, "memorisation-mc", out=out, **KW)  # finished: no work at all
    assert calls["cells"] == [1, 2, 2] and calls["build"] == 1
    pd.testing.assert_frame_equal(_stable(again), _stable(full))


def test_saved_vectors_are_ignored_for_another_layer_set(tiny_llama, tmp_path):
    task = get_task("memorisation-mc")
    vecs = build_vectors(tiny_llama, task, [1, 2], ["diff_means", "random"], extract_n=6,
                         eval_items=task.items(8, 0))
    journal = tmp_path / "j.jsonl"
    save_vectors(vecs, journal, "abc")
    back = load_vectors(journal, "abc", [1, 2], ["diff_means", "random"])
    assert back is not None and back.layer_norms == pytest.approx(vecs.layer_norms)
    assert torch.equal(back.vectors["random"][2], vecs.vectors["random"][2])
    assert load_vectors(journal, "abc", [1], ["diff_means"]) is None  # random differs by set
    assert load_vectors(journal, "other", [1, 2], ["diff_means"]) is None
    assert load_vectors(journal, "abc", [1, 2], ["shuffled"]) is None


@pytest.mark.slow
def test_fast_sweep_matches_naive_loop_on_smollm2(smollm_fast):
    kw = {"layers": [3, 15], "coeffs": [-0.4, 0.4], "methods": ["diff_means", "random"],
          "n": 48, "extract_n": 40, "batch_size": 8, "progress": False}
    naive = sweep(smollm_fast, "memorisation-mc", fast=False, **kw)
    fast = sweep(smollm_fast, "memorisation-mc", **kw)
    pd.testing.assert_frame_equal(_stable(fast), _stable(naive))  # incl. per-item correctness
    assert (naive["correct"] != naive["correct"].iloc[0]).any()  # steering changed answers


@pytest.mark.slow
@pytest.mark.parametrize("chat", [True, False])
def test_fast_generative_sweep_matches_naive_loop_on_smollm2(smollm, chat):
    """fp32 SmolLM2 on arithmetic, as a chat model (rows end at EOS) and as a base model with
    few-shot examples (rows also end where a new example starts): per-item answers equal."""
    kw = {"layers": [9], "coeffs": [-0.3, 0.3], "methods": ["diff_means", "random"],
          "n": 12, "extract_n": 20, "batch_size": 8, "progress": False, "chat": chat}
    naive = sweep(smollm, "arithmetic", fast=False, **kw)
    fast = sweep(smollm, "arithmetic", **kw)
    pd.testing.assert_frame_equal(_stable(fast).drop(columns="completions"),
                                  _stable(naive).drop(columns="completions"))
    assert (naive["correct"] != naive["correct"].iloc[0]).any()  # steering changed answers
    if not chat:  # completions stop where the answer is complete: same judged text
        from steerlab.answers import first_answer

        for a, b in zip(fast["completions"], naive["completions"], strict=True):
            assert [first_answer(x) for x in a] == [first_answer(x) for x in b]


def test_a_torn_journal_line_does_not_swallow_the_next_record(tiny_llama, tmp_path,
                                                              monkeypatch):
    out = tmp_path / "results.jsonl"
    kw = {**KW, "layers": [1], "coeffs": [0.5, 1.0], "methods": ["diff_means"]}
    full = sweep(tiny_llama, "memorisation-mc", out=out, **kw)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:30])  # killed while writing the last cell
    sweep(tiny_llama, "memorisation-mc", out=out, **kw)  # redoes that cell, appends it

    def no_work(*a, **k):
        raise AssertionError("a finished sweep evaluated a cell again")

    monkeypatch.setattr(sweep_mod, "evaluate", no_work)
    monkeypatch.setattr(sweep_mod, "evaluate_cells", no_work)
    again = sweep(tiny_llama, "memorisation-mc", out=out, **kw)  # the redone cell was kept
    pd.testing.assert_frame_equal(_stable(again), _stable(full))
    assert [json.loads(line)["coeff"] for line in out.read_text().splitlines()] == [
        0.0, 0.5, 1.0]  # the fragment is gone, every line is a whole record


def test_every_control_matches_the_vectors_norm_per_layer_under_every_scale(tiny_llama):
    task = get_task("memorisation-mc")
    vecs = build_vectors(tiny_llama, task, [1, 2], METHODS, extract_n=6,
                         eval_items=task.items(8, 0))
    for scale in SCALES:
        for layer in (1, 2):
            _, ref = vecs.added("diff_means", layer, 0.7, scale)
            for method in METHODS:
                vec, norm = vecs.added(method, layer, 0.7, scale)
                assert norm == pytest.approx(ref, rel=1e-5), (scale, layer, method)
                assert float(vec.norm()) == pytest.approx(norm, rel=1e-5), (scale, method)


def test_sweeps_over_other_layers_do_not_share_journal_rows(tiny_llama, tmp_path,
                                                            monkeypatch):
    out = tmp_path / "results.jsonl"
    kw = {**KW, "coeffs": [0.5], "methods": ["diff_means", "random"]}
    sweep(tiny_llama, "memorisation-mc", out=out, **{**kw, "layers": [1, 2]})
    calls = []
    real = sweep_mod.evaluate_cells

    def cells(model, task, layer, vectors, **k):
        calls.append(layer)
        return real(model, task, layer, vectors, **k)

    monkeypatch.setattr(sweep_mod, "evaluate_cells", cells)
    table = sweep(tiny_llama, "memorisation-mc", out=out, **{**kw, "layers": [2]})
    assert calls == [2]  # its own cells: the [1, 2] sweep's rows are another config's
    assert table["config"].nunique() == 1 and set(table["layer"]) == {-1, 2}


@pytest.mark.parametrize("fast", [True, False])
def test_generative_sweep_gives_base_models_few_shot_examples(tiny_llama, tmp_path,
                                                              monkeypatch, fast):
    from steerlab.tasks import shots

    task = get_task("reasoning-gen")
    seen = []
    made: list = []

    def spy(real):
        def call(*a, **k):
            seen.append(k.get("shots"))
            res = real(*a, **k)
            made.extend([r.completions for r in res] if isinstance(res, list)
                        else [res.completions])
            return res
        return call

    monkeypatch.setattr(sweep_mod, "evaluate", spy(sweep_mod.evaluate))
    monkeypatch.setattr(sweep_mod, "evaluate_cells", spy(sweep_mod.evaluate_cells))
    out = tmp_path / "gen.jsonl"
    sweep(tiny_llama, task, [1], [0.5], ["diff_means"], n=2, extract_n=6, out=out,
          progress=False, fast=fast)
    assert not tiny_llama.is_chat
    # the baseline and the one steered cell: one call each, or (fast) one call for both, the
    # baseline being the zero vector's cell
    assert seen == [shots(task)] * (1 if fast else 2)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["completions"] for r in rows] == made and len(made) == 2
    assert all(len(c) == 2 for c in made)


@pytest.mark.parametrize("mode,scope", [("project", "all"), ("project", "layer"),
                                        ("ablate", "all")])
def test_projection_sweeps_equal_steered_evaluations(tiny_llama, mode, scope):
    """Each projection cell is the evaluation under the steering it names: Hong et al.'s
    all-sites form (direction of the swept layer at every layer's block input, attention and
    MLP outputs) or one layer's residual; a different key from the additive sweep's."""
    from steerlab.steering import HONG_SITES

    task = get_task("memorisation-mc")
    items = task.items(8, 0)
    methods = ["diff_means", "random"]
    table = sweep(tiny_llama, task, [1, 2], [-0.1, 3.0], methods, n=8, extract_n=6,
                  mode=mode, scope=scope, progress=False)
    vecs = build_vectors(tiny_llama, task, [1, 2], methods, extract_n=6, eval_items=items)
    steered = table[table.method != "baseline"]
    assert len(steered) == 2 * 2 * (1 if mode == "ablate" else 2)
    assert steered["added_norm"].isna().all()
    for row in steered.itertuples():
        how = ({"layers": None, "from_layer": row.layer, "site": HONG_SITES, "any_site": True}
               if scope == "all" else {"layers": row.layer})
        with steer(tiny_llama, vecs.vectors[row.method][row.layer], mode=mode,
                   coeff=row.coeff, **how):
            ref = evaluate(tiny_llama, task, items=items)
        assert row.correct == "".join("1" if x else "0" for x in ref.correct)
    keys = {SweepKey("m", "f", "t", 1, 0, "norm", "s", None, "last", False, None,
                                  "hf", (1,), 0, m, s).key()
            for m, s in (("add", "layer"), ("project", "all"), ("project", "layer"))}
    assert len(keys) == 3
    assert no_hooks(tiny_llama)


def test_holm_column_verdict_and_report_command(tmp_path, capsys):
    """Every sweep table carries raw and Holm-adjusted p (per method, steered cells only),
    the verdict counts what survives the adjustment, and `steerlab report` rebuilds both
    from a recorded results file."""
    from steerlab.cli import main
    from steerlab.reports import read_table, verdict, with_holm
    from steerlab.stats import holm

    rows = [{"model": "m", "task": "t", "method": "baseline", "layer": -1, "coeff": 0.0,
             "n": 100, "accuracy": 0.5, "ci_low": 0.4, "ci_high": 0.6, "baseline": 0.5,
             "delta": 0.0, "delta_low": 0.0, "delta_high": 0.0, "p_mcnemar": 1.0,
             "chance": 0.25}]
    ps = {"diff_means": [0.01, 0.02, 0.5], "random": [0.04, 0.9, 0.3]}
    for method, pv in ps.items():
        for layer, p in enumerate(pv):
            up = 0.1 if p < 0.05 else 0.0
            rows.append({**rows[0], "method": method, "layer": layer, "coeff": 0.2,
                         "accuracy": 0.5 + up, "delta": up, "delta_low": up / 4 if up else -0.05,
                         "delta_high": up + 0.05, "p_mcnemar": p})
    table = with_holm(pd.DataFrame(rows))
    assert table.loc[0, "p_holm"] == 1.0
    for method, pv in ps.items():
        np.testing.assert_allclose(table[table.method == method]["p_holm"], holm(pv))
    text = verdict(table)
    assert "after Holm over its 3 cells (p < 0.05): 2 up, 0 down" in text  # 0.03, 0.04
    assert "after Holm over its 3 cells (p < 0.05): 0 up, 0 down" in text  # random: 0.12
    path = tmp_path / "s.parquet"
    pd.DataFrame(rows).to_parquet(path)  # an older file without p_holm
    assert "p_holm" in read_table(path).columns
    out = tmp_path / "s.txt"
    assert main(["report", str(path), "--out", str(out)]) == 0
    assert text in out.read_text() and "p_holm" in out.read_text()
    with pytest.raises(FileNotFoundError, match="--out file"):
        read_table(tmp_path / "missing.parquet")


def test_a_sweep_recorded_in_another_dtype_is_named_when_it_is_computed_again(tmp_path):
    """The default dtype follows the machine, so a results file recorded elsewhere may hold
    the same sweep in another dtype: the run says so (and how to reuse it) instead of
    silently computing it all again."""
    import warnings

    out = tmp_path / "s.jsonl"
    kw = {"layers": [1], "coeffs": [0.5], "methods": ["diff_means"], "n": 4, "extract_n": 4,
          "progress": False, "out": out}
    sweep(tiny_model("llama"), "memorisation-mc", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same dtype: reused, no warning
        sweep(tiny_model("llama"), "memorisation-mc", **kw)
    half = tiny_model("llama")
    half.hf.to(torch.bfloat16)
    with pytest.warns(UserWarning, match=r"recorded in float32; the model here is bfloat16.*"
                                         r"STEERLAB_DTYPE=float32"):
        table = sweep(half, "memorisation-mc", **kw)
    assert len(table) == 2  # computed in bf16: baseline + the cell


def test_report_reads_a_journal_cut_by_a_kill(tmp_path, capsys):
    """A journal's last line cut short (the kill came mid-write) is skipped, as the sweep
    itself skips it on resuming; the report shows the whole rows."""
    from steerlab.cli import main
    from steerlab.reports import read_table

    rows = [{"config": "k", "model": "m", "task": "t", "method": m, "layer": l, "coeff": c,
             "n": 50, "accuracy": a, "ci_low": a - 0.1, "ci_high": a + 0.1, "baseline": 0.5,
             "delta": a - 0.5, "delta_low": a - 0.6, "delta_high": a - 0.4, "p_mcnemar": p,
             "chance": 0.25}
            for m, l, c, a, p in [("baseline", -1, 0.0, 0.5, 1.0),
                                  ("diff_means", 1, 0.5, 0.6, 0.04)]]
    path = tmp_path / "s.journal.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"config": "k", "meth')
    table = read_table(path)
    assert list(table["method"]) == ["baseline", "diff_means"]
    assert main(["report", str(path)]) == 0
    assert "diff_means" in capsys.readouterr().out
