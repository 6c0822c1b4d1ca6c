"""The bench scripts import, and the run summary reads a run's goals back from the results."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_every_part_imports_and_has_help():
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import run_all, importlib; "
            "[importlib.import_module(p[:-3]) for p in run_all.PARTS.values()]")
    subprocess.run([sys.executable, "-c", code, str(BENCH)], check=True, timeout=300)


def test_summary_lists_goals_of_one_run_only(bench_path, tmp_path, monkeypatch):
    import _common
    import run_all

    results = tmp_path / "results.jsonl"
    monkeypatch.setattr(_common, "RESULTS", results)
    monkeypatch.setattr(run_all, "RESULTS", results)
    monkeypatch.setenv("STEERLAB_BENCH_RUN", "r1")
    _common.record("overhead", figure="caching_ratio", backend="hf", dtype="bf16", value=1.2,
                   goal=0.95, met=True)
    _common.record("overhead", figure="steering_overhead", what="forward", value=0.05,
                   goal=0.03, met=False)
    _common.record("peers", figure="peer_failed", library="repeng", reason="boom")
    _common.record("overhead", figure="plain_forward_tok_s", value=100.0)  # not a goal
    monkeypatch.setenv("STEERLAB_BENCH_RUN", "r2")
    _common.record("sweep", figure="sweep_speedup", value=3.0, goal=2.0, met=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["run"] for r in rows] == ["r1"] * 4 + ["r2"]
    text = run_all.summary("r1")
    assert "caching / plain forward, hf bf16" in text and "1.20" in text
    assert "+5.0%" in text and "missed" in text
    assert "repeng: could not run" in text
    assert "sweep" not in text and "100" not in text


def test_table_aligns_columns(bench_path):
    import _common

    lines = _common.table(["a", "value"], [["x", 1234.5], ["longer", 0.5]]).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[2].endswith("1,234") and lines[3].endswith("0.5")
