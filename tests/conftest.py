"""Shared fixtures: tiny random models built from configs, and the embedded SmolLM2.

The suite is device-parametric: ``pytest --device cuda`` (or ``$STEERLAB_TEST_DEVICE``) builds
every tiny model and loads the embedded model on that device (default ``cpu``). Dtypes follow
the default-dtype rule of that device (:func:`steerlab.devices.default_dtype`), so no test
forces bf16 on a CPU that only emulates it.
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
    RwkvConfig,
)

from steerlab.devices import resolve_device
from steerlab.models import Model, model_from_hf
from steerlab.sizes import char_tokenizer as char_tokenizer  # re-exported for the tests

VOCAB = 128


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default=None,
                     help="device the model tests run on: cpu (default), cuda, cuda:1, mps "
                          "(or $STEERLAB_TEST_DEVICE)")


def pytest_configure(config: pytest.Config) -> None:
    # kept in the environment: tests import this module both as ``conftest`` and as
    # ``tests.conftest`` (two module objects), and subprocesses see it too
    chosen = config.getoption("--device") or os.environ.get("STEERLAB_TEST_DEVICE") or "cpu"
    os.environ["STEERLAB_TEST_DEVICE"] = str(resolve_device(chosen))  # an absent one fails here


def test_device() -> torch.device:
    """The device of this test run (``--device`` / ``$STEERLAB_TEST_DEVICE``, default cpu)."""
    return resolve_device(os.environ.get("STEERLAB_TEST_DEVICE") or "cpu")


test_device.__test__ = False  # type: ignore[attr-defined]  # a helper, not a test


def _configs() -> dict[str, object]:
    common = {"vocab_size": VOCAB, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    return {
        "llama": LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, **common),
        "gemma3": Gemma3TextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                   sliding_window=8, **common),
        "qwen2": Qwen2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, **common),
        "gpt2": GPT2Config(n_embd=32, n_layer=4, n_head=4, n_positions=256, **common),
        "rwkv": RwkvConfig(hidden_size=32, num_hidden_layers=4, attention_hidden_size=32,
                           intermediate_size=64, context_length=256, **common),
    }


ARCHS = list(_configs())
ATTENTION_ARCHS = [a for a in ARCHS if a != "rwkv"]


def tiny_model(arch: str, seed: int = 0) -> Model:
    """A tiny fp32 model of ``arch`` (seeded: the same weights on every device) on the test
    device."""
    cfg = _configs()[arch]
    torch.manual_seed(seed)
    kwargs = {} if arch == "rwkv" else {"attn_implementation": "sdpa"}
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **kwargs)
    return model_from_hf(hf, char_tokenizer(), name=f"tiny-{arch}", device=test_device())


def patch_model(arch: str = "llama", seed: int = 3) -> Model:
    """A tiny model (by default the Llama of the patching tests, seed 3) with a tokenizer the
    TransformerLens bridge can reload by path."""
    import tempfile

    from transformers import AutoTokenizer

    m = tiny_model(arch, seed=seed)
    d = tempfile.mkdtemp()
    char_tokenizer().save_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.padding_side = "left"
    m.tokenizer = tok
    return m


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request: pytest.FixtureRequest) -> Model:
    return tiny_model(request.param)


@pytest.fixture(scope="module", params=ATTENTION_ARCHS)
def tiny_attn(request: pytest.FixtureRequest) -> Model:
    return tiny_model(request.param)


@pytest.fixture(scope="module")
def tiny_llama() -> Model:
    return tiny_model("llama")


@pytest.fixture(scope="session")
def smollm() -> Model:
    """The embedded SmolLM2-135M-Instruct in fp32 on the test device (converted once into the
    cache)."""
    from steerlab.models import load_model

    return load_model("smollm2-135m-instruct", dtype="fp32", device=test_device())


@pytest.fixture(scope="session")
def smollm_fast() -> Model:
    """The embedded SmolLM2 in the test device's default dtype (bf16 on GPUs and on CPUs with
    fast bf16, fp32 elsewhere): for accuracy checks at the speed a user gets."""
    from steerlab.models import load_model

    return load_model("smollm2-135m-instruct", device=test_device())


def no_hooks(model: Model) -> bool:
    """No forward (pre-)hook on any module, but transformers' own output recorders (which
    ``output_hidden_states=True`` installs for good since transformers 5, and which only read)."""
    return not any(not getattr(h, "__module__", "").startswith("transformers.")
                   for m in model.hf.modules()
                   for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


PROMPTS = ["Tom has 3 apples and buys 5 more.", "What is 2+2?", "Paris is the capital of",
           "A much longer prompt that needs a lot of padding in the batch, surely."]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_gguf(path, arch, tensors):
    """A GGUF file of ``arch`` holding ``tensors`` (name -> numpy array), nothing else."""
    import gguf

    w = gguf.GGUFWriter(path, arch)
    for name, array in tensors.items():
        w.add_tensor(name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
