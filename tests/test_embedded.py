"""The embedded models: conversion into the cache and loading (:mod:`steerlab.embedded`)."""

import pytest
import torch

from steerlab import embedded
from steerlab.models import load_model


@pytest.mark.slow
def test_embedded_smollm2(smollm):
    assert (smollm.n_layers, smollm.d_model, smollm.is_chat) == (30, 576, True)
    assert smollm.hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert embedded.is_converted("smollm2-135m-instruct")
    chat = smollm.format(["What is 2+2?"], chat=True)[0]
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in chat and chat.endswith("assistant\n")
    assert smollm.format(["What is 2+2?"], chat=False) == ["What is 2+2?"]
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(embedded.converted_dir("smollm2-135m-instruct"))
    for text in ["Hello world, what is 2+2?", chat, "Ünïcode ✓ and   spaces\n"]:
        assert smollm.tokenizer(text)["input_ids"] == auto(text)["input_ids"]
    bf16 = load_model("smollm2-135m-instruct", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    assert bf16.hf.config._attn_implementation == "sdpa"
