"""One definition of each concept: the coefficient's scale, the chat rule, the options (Literal
aliases and CLI choices) and the sweep's config object (the extraction recipe:
tests/test_extraction.py)."""

import argparse
import typing

import pytest
import torch
from conftest import PROMPTS, no_hooks
from test_extraction import _vec

from steerlab import options
from steerlab.cli import build_parser
from steerlab.errors import OptionError
from steerlab.inference import forward_logits
from steerlab.models import model_from_hf
from steerlab.steering import steer
from steerlab.sweep_plan import SweepConfig
from steerlab.sweeps import sweep
from steerlab.vectors import SteeringVector


def test_scale_units_mean_what_they_say_and_steering_uses_them(tiny_llama):
    vec = _vec(tiny_llama)
    v = vec[2]
    raw, n_raw = vec.added(2, 0.5, "raw")
    unit, n_unit = vec.added(2, 0.5, "unit")
    norm, n_norm = vec.added(2, 0.5, "norm")
    torch.testing.assert_close(raw, 0.5 * v)
    assert float(unit.norm()) == pytest.approx(0.5) == n_unit
    assert float(norm.norm()) == pytest.approx(0.5 * vec.ref_norms[2], rel=1e-5)
    assert n_raw == pytest.approx(0.5 * float(v.norm()))
    assert n_norm == pytest.approx(0.5 * vec.ref_norms[2])
    # steering at scale="norm" equals steering the vector it adds with coeff 1, raw
    with steer(tiny_llama, vec, layers=2, coeff=0.5, scale="norm"):
        a = forward_logits(tiny_llama, PROMPTS)
    with steer(tiny_llama, norm, layers=2, coeff=1.0):
        b = forward_logits(tiny_llama, PROMPTS)
    with steer(tiny_llama, vec.at_scale(0.5, "norm").only(2), coeff=1.0):
        c = forward_logits(tiny_llama, PROMPTS)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert no_hooks(tiny_llama)


def test_scale_errors_are_clear(tiny_llama, tmp_path):
    vec = _vec(tiny_llama)
    bare = SteeringVector(dict(vec.vectors), vec.model_id, vec.d_model, method="learned")
    with pytest.raises(OptionError, match="reference norm.*with_ref_norms"):
        bare.added(1, 0.2, "norm")
    with pytest.raises(OptionError, match="scale"):
        vec.added(1, 0.2, "fraction")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="mode='add' only"):
        steer(tiny_llama, vec, layers=1, coeff=0.1, mode="project", scale="norm").__enter__()
    with pytest.raises(OptionError, match="reference norms"):
        steer(tiny_llama, vec[1], layers=1, coeff=0.1, scale="norm").__enter__()
    assert no_hooks(tiny_llama)
    back = SteeringVector.load(vec.save(tmp_path / "v.safetensors"))
    assert back.ref_norms == vec.ref_norms  # the reference norms travel with the file


def test_one_chat_rule(tiny_llama):
    chat = model_from_hf(tiny_llama.hf, tiny_llama.tokenizer, is_chat=True)
    for m in (tiny_llama, chat):
        assert m.uses_chat(None) is m.is_chat
        assert m.uses_chat(False) is False
        assert m.uses_chat(True) is m.is_chat  # a model without a template never gets one


def test_options_are_literals_and_the_cli_takes_its_choices_from_them():
    for alias, values in [(options.Scale, options.SCALES), (options.Mode, options.MODES),
                          (options.BackendName, options.BACKENDS),
                          (options.Site, options.SITES), (options.Scoring, options.SCORINGS)]:
        assert typing.get_args(alias) == values
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for cmd in ("extract", "sweep", "demo"):
        acts = {a.dest: a for a in sub.choices[cmd]._actions}
        assert tuple(acts["backend"].choices) == options.BACKENDS, cmd
        assert {"model", "dtype"} <= set(acts), cmd
    assert tuple({a.dest: a for a in sub.choices["sweep"]._actions}["scale"].choices) \
        == options.SCALES
    for cmd in ("eval", "train"):
        assert "model" in {a.dest for a in sub.choices[cmd]._actions}


def test_sweep_config_validates_early_and_equals_the_keyword_form(tiny_llama, monkeypatch):
    with pytest.raises(OptionError, match="scale"):
        SweepConfig("memorisation-mc", [1], [0.1], scale="fraction")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="method"):
        SweepConfig("memorisation-mc", [1], [0.1], methods=["pca"])  # type: ignore[list-item]
    with pytest.raises(OptionError, match="Unknown sweep option"):
        sweep(tiny_llama, "memorisation-mc", [1], [0.1], coefs=[1])
    with pytest.raises(OptionError, match="not both"):
        sweep(tiny_llama, SweepConfig("memorisation-mc", [1], [0.1]), [1], [0.1])
    kw = {"methods": ["diff_means"], "n": 6, "extract_n": 4, "batch_size": 4}
    a = sweep(tiny_llama, SweepConfig("memorisation-mc", [1], [0.5], **kw), progress=False)
    b = sweep(tiny_llama, "memorisation-mc", [1], [0.5], progress=False, **kw)
    assert a.drop(columns="seconds").equals(b.drop(columns="seconds"))


def test_public_names_survive_importing_every_submodule():
    import importlib
    import pkgutil

    import steerlab

    for info in pkgutil.walk_packages(steerlab.__path__, "steerlab."):
        if ".teach" in info.name or info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)
    for name in steerlab.__all__:
        if name == "__version__":
            continue
        obj = getattr(steerlab, name)
        owner = importlib.import_module(steerlab._API[name])
        assert obj is getattr(owner, name), name
    assert callable(steerlab.sweep) and callable(steerlab.evaluate)
    assert hasattr(importlib.import_module("steerlab.sweeps"), "SweepConfig")


def test_cli_export_and_import_round_trip(tiny_llama, tmp_path, capsys):
    from steerlab.cli import main

    vec = _vec(tiny_llama)
    src = vec.save(tmp_path / "v.safetensors")
    assert main(["export", "--vector", str(src), "--gguf", str(tmp_path / "v.gguf"),
                 "--coeff", "2"]) == 0
    assert "--control-vector" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "v.gguf"), "--out", str(tmp_path / "b.safetensors")]) == 0
    back = SteeringVector.load(tmp_path / "b.safetensors")
    assert back.layers == vec.layers
    for l in vec.layers:
        torch.testing.assert_close(back[l], vec[l], rtol=0, atol=0)  # coeff 2: exact unscale
    assert main(["export", "--vector", str(tmp_path / "missing.safetensors"), "--gguf",
                 str(tmp_path / "x.gguf")]) == 2
