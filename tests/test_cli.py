import subprocess
import sys

import pytest

from steerlab.cli import main
from steerlab.vectors import SteeringVector


def test_models_lists_embedded(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma-3-270m" in out and "converted" in out


def test_unknown_model_is_a_clean_error(capsys, monkeypatch):
    from steerlab import models

    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    assert main(["extract", "--model", "nobody/nothing", "--out", "x.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "smollm2-135m-instruct" in err and "Traceback" not in err


def test_console_script_installed():
    out = subprocess.run([sys.executable, "-m", "steerlab.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert "extract" in out and "demo" in out


@pytest.mark.slow
def test_extract_writes_a_loadable_vector(tmp_path, smollm, capsys):
    out = tmp_path / "reasoning.safetensors"
    assert main(["extract", "--model", "smollm2-135m-instruct", "--dtype", "fp32", "--n", "12",
                 "--layers", "3,12", "--out", str(out)]) == 0
    vec = SteeringVector.load(out, model=smollm)
    assert vec.layers == [3, 12] and vec.method == "diff_means"
    assert vec.meta["n_pos"] == 12 and vec.meta["chat"] is True
    assert "saved" in capsys.readouterr().out


def test_every_command_that_loads_a_model_takes_device(capsys):
    from steerlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    with_model = {name: p for name, p in sub.choices.items()
                  if any("--model" in a.option_strings for a in p._actions)}
    assert len(with_model) >= 4
    for name, p in with_model.items():
        assert any("--device" in a.option_strings for a in p._actions), name
    assert main(["extract", "--device", "cuda:99", "--out", "x.safetensors"]) == 2
    err = capsys.readouterr().err
    assert "cuda:99" in err and "Traceback" not in err


@pytest.mark.parametrize("scoring", ["letter", "generate"])
def test_replicate_writes_its_summary(tmp_path, tiny_llama, monkeypatch, capsys, scoring):
    """The command end to end on a tiny model (shipped items in place of MMLU-Pro): gains,
    answered letters, the honest protocol and its letters, all in replication.json."""
    import json

    from steerlab import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: tiny_llama)
    assert main(["replicate", "--model", "tiny", "--task", "reasoning-mc", "--layers", "1,2",
                 "--n", "6", "--draws",
                 "2", "--extract-n", "6", "--honest", "--n-dev", "6", "--n-test", "6",
                 "--out", str(tmp_path), "--scoring", scoring]) == 0
    out = capsys.readouterr().out
    assert "best-layer gain by direction" in out and "answered letters on test" in out
    summary = json.loads((tmp_path / "replication.json").read_text())
    assert len(summary["gains"]) == 6 and summary["honest"]["test"]["n"] == 6
    assert {r["condition"] for r in summary["answered_letters"]} >= {"gold", "unsteered"}
    assert summary["honest"]["test_letters"]["steered"]["top"] in "ABCD-"  # -: no letter
    assert summary["scoring"] == scoring and f"{scoring} scoring" in out
