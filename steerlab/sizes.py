"""The seed models' sizes without the hub: their architectures written down, built with random
weights, so speed and memory can be measured at real size on any machine.

:data:`SIZES` holds each seed model's transformers config (layers, widths, heads, vocabulary,
rope, tying) as published with its weights; :func:`random_model` builds one (or a shrunken
copy, for tests) as a :class:`~steerlab.models.Model`, and :func:`n_params` counts its weights
on the meta device without allocating them. With the hub, the real weights load by name as
always (``load_model("meta-llama/Llama-3.2-1B-Instruct")``).

Limitation: a random model has no real tokenizer (the real ones live on the hub). It gets
:func:`char_tokenizer`, one token per printable ASCII character (ids 0..98, a corner of the
real vocabulary): prompts of N characters are N tokens, which is all a speed or memory
measurement needs; its text output is noise, and it has no chat template.
"""

from __future__ import annotations

from typing import Any

import torch

from steerlab.devices import default_dtype, parse_dtype, resolve_device
from steerlab.errors import OptionError
from steerlab.models import Model, model_from_hf

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}

_LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}

#: (transformers architecture, config) of each seed model, from its published config.json
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama-3.2-1b": ("llama", {  # meta-llama/Llama-3.2-1B(-Instruct)
        "num_hidden_layers": 16, "hidden_size": 2048, "intermediate_size": 8192,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "vocab_size": 128256, "tie_word_embeddings": True, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072,
        "rope_parameters": {**_LLAMA3_ROPE, "factor": 32.0}}),
    "qwen2.5-1.5b": ("qwen2", {  # Qwen/Qwen2.5-1.5B(-Instruct); DeepSeek-R1-Distill-Qwen-1.5B
        "num_hidden_layers": 28, "hidden_size": 1536, "intermediate_size": 8960,
        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
        "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}}),
    "llama-3.1-8b": ("llama", {  # meta-llama/Llama-3.1-8B(-Instruct)
        "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 14336,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 128256, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072,
        "rope_parameters": {**_LLAMA3_ROPE, "factor": 8.0}}),
}


def char_tokenizer() -> Any:
    """A character-level tokenizer (printable ASCII, ids 4..98; pad 0, bos 1, eos 2, unk 3),
    built offline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for c in map(chr, range(32, 127)):
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def config(size: str, **overrides: Any) -> Any:
    """The transformers config of seed size ``size`` (:data:`SIZES`), fields in ``overrides``
    replaced (e.g. ``num_hidden_layers=2`` for a shrunken copy)."""
    from transformers import AutoConfig

    if size not in SIZES:
        raise OptionError(f"Unknown size {size!r}: use one of {', '.join(SIZES)}.")
    arch, fields = SIZES[size]
    return AutoConfig.for_model(arch, **{**fields, **_IDS, **overrides})


def n_params(size: str, **overrides: Any) -> int:
    """Weights of seed size ``size`` (tied embeddings counted once), counted on the meta device:
    nothing is allocated."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(config(size, **overrides))
    return sum(p.numel() for p in hf.parameters())


def random_model(size: str, device: str | torch.device | None = None,
                 dtype: str | torch.dtype | None = None, seed: int = 0,
                 **overrides: Any) -> Model:
    """Seed size ``size`` with random weights (seeded), as a :class:`Model` on ``device``.

    Args:
        size: a key of :data:`SIZES` (``llama-3.2-1b``, ``qwen2.5-1.5b``, ``llama-3.1-8b``).
        device: as in :func:`steerlab.models.load_model` (default ``$STEERLAB_DEVICE``/auto).
        dtype: default: the device's fast dtype (:func:`steerlab.devices.default_dtype`).
        overrides: config fields to replace (a shrunken copy for tests).

    The weights are built directly on ``device`` in ``dtype`` (an 8B model in bf16 needs
    16 GB there, nothing on the CPU). See the module doc for the tokenizer's limitation.

    Example:
        >>> m = random_model("llama-3.2-1b", device="cpu", num_hidden_layers=2)
        >>> m.n_layers, m.d_model
        (2, 2048)
    """
    from transformers import AutoModelForCausalLM

    cfg = config(size, **overrides)
    dev = resolve_device(device)
    torch_dtype = parse_dtype(dtype) if dtype is not None else default_dtype(dev)
    torch.manual_seed(seed)
    with torch.device(dev):
        hf = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype,
                                              attn_implementation="sdpa")
    return model_from_hf(hf, char_tokenizer(), name=f"random-{size}")
