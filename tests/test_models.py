import time

import pytest
import torch
from conftest import tiny_model

from steerlab import devices, models
from steerlab.devices import default_dtype, parse_dtype
from steerlab.embedded import EMBEDDED
from steerlab.errors import EmptyInputError, UnknownModelError
from steerlab.models import find_layers, load_model


def test_unknown_name_fails_fast_with_help(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda timeout=2.0: False)
    t0 = time.perf_counter()
    with pytest.raises(UnknownModelError) as info:
        load_model("no-such-org/no-such-model-xyz")
    assert time.perf_counter() - t0 < 10
    msg = str(info.value)
    for name in EMBEDDED:
        assert name in msg
    assert "not reachable" in msg and "local directory" in msg


def test_missing_directory_and_empty_name():
    with pytest.raises(UnknownModelError, match="no such directory"):
        load_model("./definitely/not/here")
    with pytest.raises(UnknownModelError, match="empty"):
        load_model("")


def test_local_directory_roundtrip(tmp_path):
    tiny = tiny_model("llama")
    tiny.hf.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="fp32", device=tiny.device)
    assert loaded.n_layers == 4 and loaded.d_model == 32 and loaded.dtype == torch.float32
    assert loaded.hf.config._attn_implementation == "sdpa"
    assert not loaded.is_chat
    for a, b in zip(loaded.hf.parameters(), tiny.hf.parameters(), strict=True):
        assert torch.equal(a, b)


def test_dtype_choice(monkeypatch):
    monkeypatch.setenv("STEERLAB_DTYPE", "fp32")
    assert default_dtype() == torch.float32
    monkeypatch.delenv("STEERLAB_DTYPE")
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)
    assert default_dtype() == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: False)
    assert default_dtype() == torch.float32
    assert parse_dtype("bf16") == torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype"):
        parse_dtype("int3")


def test_find_layers_on_every_arch(tiny):
    assert len(find_layers(tiny.hf)) == tiny.n_layers == 4


def test_base_models_never_get_a_chat_template(tiny_llama):
    assert tiny_llama.format(["hi"], chat=True) == ["hi"]
    with pytest.raises(EmptyInputError):
        tiny_llama.format([])
