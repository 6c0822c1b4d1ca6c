"""Recordings are read back in their own dtype and spot-checked; a recording that does not
reproduce fails loudly (tiny random models)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import tiny_model

from steerlab import _io
from steerlab.recordings import Evaluations, check_sweep, check_training, recorded_sweep
from steerlab.recordings_controls import check_kind_patching, recorded_kind_patching
from steerlab.spotcheck import SpotCheckError
from steerlab.sweep_journal import journal_path
from steerlab.sweep_plan import SweepConfig
from steerlab.sweeps import missing_cells, recorded_dtype, sweep
from steerlab.tasks import arithmetic_items
from steerlab.train import TrainConfig, replayable, train_rloo
from steerlab.train_journal import run_dtype

sweep_mod = importlib.import_module("steerlab.sweeps")
kinds_mod = importlib.import_module("steerlab.kinds")
recordings_mod = importlib.import_module("steerlab.recordings")  # where it loads models
controls_mod = importlib.import_module("steerlab.recordings_controls")

CFG = SweepConfig("memorisation-mc", [1, 2], [0.5], ("diff_means", "random"), n=8,
                  extract_n=6, batch_size=4)
TRAIN = TrainConfig(steps=2, prompts_per_step=3, samples=4, max_new_tokens=6, eval_every=0,
                    lr=0.05)


def _flip(path) -> None:
    """Invert every recorded per-item answer of the journal at ``path``."""
    rows = _io.read_jsonl(path)
    for r in rows:
        r["correct"] = "".join("0" if c == "1" else "1" for c in r["correct"])
    _io.write_jsonl(path, rows)


def _in(model, dtype):
    model.hf.to(dtype)
    return model


def test_a_recorded_sweep_is_read_in_its_dtype_and_spot_checked(tmp_path, monkeypatch,
                                                                 capsys):
    out = tmp_path / "sweep.parquet"
    sweep(tiny_model("llama"), CFG, out=out, progress=False)  # recorded in float32
    bf16 = _in(tiny_model("llama"), torch.bfloat16)  # a machine whose default is bf16
    assert recorded_dtype(bf16, CFG, out) == "float32"
    assert missing_cells(bf16, CFG, out) == 5  # none in bf16: only the fp32 rows are there
    loads = []

    def load_model(name, dtype=None, **kw):
        loads.append(dtype)
        return _in(tiny_model("llama"), torch.float32 if dtype == "float32" else torch.bfloat16)

    monkeypatch.setattr(recordings_mod, "load_model", load_model)

    def no_cells(*a, **k):
        raise AssertionError("a recorded sweep was computed again")

    monkeypatch.setattr(sweep_mod, "evaluate_cells", no_cells)
    model, table = recorded_sweep(bf16.name, CFG, out, progress=False, model=bf16)
    assert loads == ["float32"] and model.dtype == torch.float32
    assert len(table) == 5
    said = capsys.readouterr().out
    assert "in float32" in said and "spot check passed" in said


def test_a_spot_check_of_an_altered_sweep_fails(tmp_path):
    model = tiny_model("llama")
    out = tmp_path / "sweep.parquet"
    sweep(model, CFG, out=out, progress=False)
    assert check_sweep(model, CFG, out, seed=3).ok
    _flip(journal_path(out))
    with pytest.raises(SpotCheckError, match="FAILED"):
        check_sweep(model, CFG, out, seed=3)


def test_a_spot_check_of_a_sweep_with_other_vectors_fails(tmp_path):
    """A steered cell is recomputed with its vector extracted again: a recording made with
    another vector (here: its recorded norm altered) does not pass."""
    model = tiny_model("llama")
    out = tmp_path / "sweep.parquet"
    sweep(model, CFG, out=out, progress=False)
    rows = _io.read_jsonl(journal_path(out))
    for r in rows:
        r["added_norm"] *= 1.5
    _io.write_jsonl(journal_path(out), rows)
    failed = 0
    for seed in range(12):  # draws that hit a steered cell fail, the baseline's pass
        try:
            check_sweep(model, CFG, out, seed=seed)
        except SpotCheckError as err:
            failed += 1
            assert "added norm" in str(err)
    assert failed


def test_evaluations_are_read_back_and_spot_checked(tmp_path, monkeypatch, capsys):
    model = tiny_model("llama")
    items = arithmetic_items("test")[:6]
    vec = train_rloo(model, TrainConfig(steps=1, prompts_per_step=2, samples=2,
                                        max_new_tokens=4, eval_every=0), progress=False).vector
    conditions = {"base": None, "learned": vec}
    journal = tmp_path / "evaluations.jsonl"
    first = Evaluations(journal).compare(model, conditions, items, batch_size=4)
    assert len(_io.read_jsonl(journal)) == 2 and Evaluations(journal).spot_check(model) is None
    ev = importlib.import_module("steerlab.conditions")  # where a condition is evaluated
    real = ev.evaluate
    calls = []
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = Evaluations(journal)
    table = again.compare(model, conditions, items, batch_size=4)
    assert calls == []  # read back
    assert table.drop(columns="seconds").equals(first.drop(columns="seconds"))
    assert again.spot_check(model, seed=1).ok and calls  # one batch evaluated again
    assert "spot check passed" in capsys.readouterr().out
    _flip(journal)
    altered = Evaluations(journal)
    altered.compare(model, conditions, items, batch_size=4)
    with pytest.raises(SpotCheckError):
        altered.spot_check(model, seed=1)


KIND = {"layers": [1, 2], "n": 8, "n_source": 10, "batch_size": 3}


def test_kind_patching_is_journalled_resumed_read_back_and_spot_checked(tmp_path, monkeypatch,
                                                                        capsys):
    journal = tmp_path / "kind.jsonl"
    plain = kinds_mod.kind_patching(tiny_model("llama"), "memorisation-mc", **KIND)
    real = kinds_mod.kind_cells
    calls = []

    def dying(*a, **k):  # a kill after the second batch was written
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(kinds_mod, "kind_cells", dying)
    with pytest.raises(KeyboardInterrupt):
        kinds_mod.kind_patching(tiny_model("llama"), "memorisation-mc", out=journal, **KIND)
    assert [r["start"] for r in _io.read_jsonl(journal)] == [0, 3]
    calls.clear()
    counted = lambda *a, **k: calls.append(1) or real(*a, **k)  # noqa: E731
    monkeypatch.setattr(kinds_mod, "kind_cells", counted)
    monkeypatch.setattr(controls_mod, "kind_cells", counted)  # the spot check's
    resumed = kinds_mod.kind_patching(tiny_model("llama"), "memorisation-mc", out=journal, **KIND)
    assert len(calls) == 1  # only the third batch was computed
    assert [r["start"] for r in _io.read_jsonl(journal)] == [0, 3, 6]
    cols = [c for c in plain.columns if c != "correct"]
    assert resumed[cols].equals(plain[cols]) and list(resumed.correct) == list(plain.correct)

    # read back whole in the recorded dtype (float32) on a bf16 machine, then spot-checked
    bf16 = _in(tiny_model("llama"), torch.bfloat16)
    assert kinds_mod.recorded_dtype(bf16, journal, target="memorisation-mc", **KIND) == "float32"
    loads = []

    def load_model(name, dtype=None, **kw):
        loads.append(dtype)
        return _in(tiny_model("llama"), torch.float32 if dtype == "float32" else torch.bfloat16)

    monkeypatch.setattr(recordings_mod, "load_model", load_model)
    calls.clear()
    model, again = recorded_kind_patching(bf16.name, "memorisation-mc", journal,
                                          progress=False, model=bf16, **KIND)
    assert loads == ["float32"] and model.dtype == torch.float32
    assert len(calls) == 1  # the spot check's one cell, nothing else
    assert again[cols].equals(plain[cols])
    said = capsys.readouterr().out
    assert "in float32" in said and "spot check passed" in said

    rows = _io.read_jsonl(journal)  # an altered journal fails the check
    for r in rows:
        for cell in r.values():
            if isinstance(cell, dict) and "correct" in cell:
                cell["correct"] = [not c for c in cell["correct"]]
    _io.write_jsonl(journal, rows)
    with pytest.raises(SpotCheckError, match="FAILED"):
        check_kind_patching(model, "memorisation-mc", journal, KIND, seed=2)


def test_a_training_run_records_its_dtype_and_its_first_step_replays(tmp_path):
    from tests.test_train import has_seven

    model = tiny_model("llama")
    train_rloo(model, TRAIN, tmp_path, progress=False, reward_fn=has_seven)
    assert run_dtype(tmp_path) == "float32"
    assert replayable(tmp_path) == [("step", 1)]
    assert check_training(model, tmp_path, seed=0, reward_fn=has_seven).ok
    rows = _io.read_jsonl(tmp_path / "journal.jsonl")
    rows[0]["loss"] += 0.5
    rows[0]["sample"] = "not what it sampled"
    _io.write_jsonl(tmp_path / "journal.jsonl", rows)
    with pytest.raises(SpotCheckError, match="sample"):
        check_training(model, tmp_path, seed=0, reward_fn=has_seven)


def test_the_recorded_run_knows_its_dtype():
    from steerlab.notebooks import recorded_run

    assert run_dtype(recorded_run("smollm2-135m-instruct", "arithmetic")) == "float32"


def test_the_runner_prints_console_lines_cells_and_warnings(capsys, monkeypatch):
    from steerlab import console, notebook_runner

    monkeypatch.setattr(notebook_runner, "SLOW_CELL", 0.0)
    with notebook_runner._Terminal("[1/1] 99", cells=2) as terminal:
        console.say("sweep arithmetic: 3/10")
        terminal.cell_done(0, {"cell_type": "code", "outputs": [
            {"output_type": "stream", "name": "stderr",
             "text": "x.py:3: UserWarning: recorded in float32\n  warn()\n"}]})
        terminal.cell_done(1, {"cell_type": "markdown"})
    out = capsys.readouterr().out
    assert "[1/1] 99 | sweep arithmetic: 3/10" in out
    assert "warning in cell 1/2: x.py:3: UserWarning: recorded in float32" in out
    assert "cell 1/2 done" in out
    assert out.index("sweep arithmetic: 3/10") < out.index("cell 1/2 done")  # its cell's line
    assert console.ENV not in __import__("os").environ


def test_journal_rows_carry_the_dtype(tmp_path):
    model = tiny_model("llama")
    journal = tmp_path / "e.jsonl"
    Evaluations(journal).compare(model, {"base": None}, arithmetic_items("test")[:2],
                                 batch_size=2)
    assert json.loads(journal.read_text().splitlines()[0])["dtype"] == "float32"


def test_summaries_are_kept_once_recorded_and_recompute_moves_the_root(tmp_path,
                                                                        monkeypatch):
    from steerlab import notebooks

    monkeypatch.delenv("STEERLAB_SMOKE", raising=False)
    monkeypatch.setenv("STEERLAB_RESULTS", str(tmp_path))
    monkeypatch.setenv("STEERLAB_LATEST", str(tmp_path / "latest"))
    first = notebooks.write_summary("all", "cost_benefit", {"s": 1.0}, measured=True)
    assert first == tmp_path / "cost_benefit_all.json"
    later = notebooks.write_summary("all", "cost_benefit", {"s": 2.0}, measured=True)
    assert later.parent.name == "latest" and later.name == first.name
    assert json.loads(first.read_text()) == {"s": 1.0}
    assert notebooks.summary_path("all", "cosine_profiles") == tmp_path / "cosine_profiles_all.json"
    monkeypatch.delenv("STEERLAB_RESULTS")
    monkeypatch.setenv("STEERLAB_RECOMPUTE", "1")
    assert notebooks.results_root().parts[-2:] == ("runs", "recomputed")
    assert notebooks.recorded_run("smollm2-135m-instruct", "arithmetic").parent \
        == notebooks.results_root()


def test_reliability_and_generative_kind_patching_recordings_are_spot_checked(tmp_path,
                                                                              capsys):
    from steerlab.vectors import SteeringVector

    model = tiny_model("llama")
    gen = torch.Generator().manual_seed(2)
    vec = SteeringVector({l: 3 * torch.randn(model.d_model, generator=gen) for l in (1, 2)},
                         model.hf_id, model.d_model, ref_norms={1: 4.0, 2: 4.0})
    rel_kw = {"layers": [1, 2], "n": 6, "coeffs": (-0.2, 0.0, 0.2), "batch_size": 4}
    journal = tmp_path / "rel.jsonl"
    _, first = controls_mod.recorded_reliability(model.name, vec, "memorisation-mc", journal,
                                                 progress=False, model=model, **rel_kw)
    assert "not recorded" in capsys.readouterr().out
    _, again = controls_mod.recorded_reliability(model.name, vec, "memorisation-mc", journal,
                                                 progress=False, model=model, **rel_kw)
    assert "spot check passed" in capsys.readouterr().out
    assert again.table.equals(first.table)
    rows = _io.read_jsonl(journal)
    for r in rows:
        r["responses"] = [[x + 0.5 for x in row] for row in r["responses"]]
    _io.write_jsonl(journal, rows)
    with pytest.raises(SpotCheckError, match="response"):
        controls_mod.check_reliability(model, vec, "memorisation-mc", journal, rel_kw, seed=1)

    gen_kw = {"layers": [1], "n": 4, "n_source": 4, "batch_size": 2, "max_new_tokens": 3}
    gen_journal = tmp_path / "gen.jsonl"
    controls_mod.recorded_kind_patching_gen(model.name, gen_journal, progress=False,
                                            model=model, **gen_kw)
    controls_mod.recorded_kind_patching_gen(model.name, gen_journal, progress=False,
                                            model=model, **gen_kw)
    assert "spot check passed" in capsys.readouterr().out
    rows = _io.read_jsonl(gen_journal)
    for r in rows:
        for cell in r.values():
            if isinstance(cell, dict) and "answer" in cell:
                cell["answer"] = ["tampered"] * len(cell["answer"])
    _io.write_jsonl(gen_journal, rows)
    with pytest.raises(SpotCheckError, match="answer"):
        controls_mod.check_kind_patching_gen(model, gen_journal, gen_kw, seed=3)
