"""Shared fixtures: tiny random models built from configs, and the embedded SmolLM2."""

from __future__ import annotations

import os

import pytest
import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    RwkvConfig,
)

from steerlab.models import Model, model_from_hf

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
VOCAB = 128


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (printable ASCII), built offline."""
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for c in map(chr, range(32, 127)):
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


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
    cfg = _configs()[arch]
    torch.manual_seed(seed)
    kwargs = {} if arch == "rwkv" else {"attn_implementation": "sdpa"}
    hf = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **kwargs)
    return model_from_hf(hf, char_tokenizer(), name=f"tiny-{arch}")


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
    """The embedded SmolLM2-135M-Instruct in fp32 (converted once into the cache)."""
    from steerlab.models import load_model

    return load_model("smollm2-135m-instruct", dtype="fp32")


@pytest.fixture(scope="session")
def smollm_bf16() -> Model:
    """The embedded SmolLM2 in bf16 (the default dtype here): for accuracy checks."""
    from steerlab.models import load_model

    return load_model("smollm2-135m-instruct", dtype="bf16")


def no_hooks(model: Model) -> bool:
    """No forward (pre-)hook on any module, but transformers' own output recorders (which
    ``output_hidden_states=True`` installs for good since transformers 5, and which only read)."""
    return not any(not getattr(h, "__module__", "").startswith("transformers.")
                   for m in model.hf.modules()
                   for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))


PROMPTS = ["Tom has 3 apples and buys 5 more.", "What is 2+2?", "Paris is the capital of",
           "A much longer prompt that needs a lot of padding in the batch, surely."]

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
