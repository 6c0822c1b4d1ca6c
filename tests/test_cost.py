"""Training-step costs for the resource table: counts that must be exact, and no side effects."""

from __future__ import annotations

import pytest
import torch

from steerlab.cost import measure, training_step_costs
from steerlab.errors import OptionError
from tests.conftest import no_hooks, tiny_model

PROMPTS = ["What is 2 + 2?", "Name a colour."]


def test_vector_training_counts_and_leaves_the_model_as_it_was():
    model = tiny_model("llama")
    before = {n: (p.detach().clone(), p.requires_grad) for n, p in model.hf.named_parameters()}
    c = training_step_costs(model, PROMPTS, "vectors", steps=2, chat=False)
    d, L = model.d_model, model.n_layers
    assert c["trainable_params"] == L * d
    assert c["optimizer_state_bytes"] == 2 * 4 * L * d  # Adam: two fp32 moments per parameter
    assert c["total_params"] == sum(p.numel() for p in model.hf.parameters())
    for n, p in model.hf.named_parameters():  # weights untouched, flags restored, no hooks
        assert torch.equal(p, before[n][0]) and p.requires_grad == before[n][1]
    assert no_hooks(model)


def test_full_and_lora_counts():
    model = tiny_model("llama")
    full = training_step_costs(model, PROMPTS, "full", steps=1, chat=False)
    assert full["trainable_params"] == full["total_params"]
    assert full["optimizer_state_bytes"] == 2 * 4 * full["total_params"]
    lora = training_step_costs(model, PROMPTS, "lora", steps=1, chat=False, lora_rank=2)
    assert lora["trainable_params"] == model.n_layers * 2 * (64 + 32)  # r x (in + out)
    with pytest.raises(OptionError, match="Unknown method"):
        training_step_costs(model, PROMPTS, "prefix")


def test_measure_reports_time_memory_and_result():
    m = measure(lambda: sum(range(10_000)))
    assert m.result == sum(range(10_000)) and m.seconds >= 0 and m.peak_rss >= m.start_rss > 0


def test_gpu_memory_is_reported_on_cuda_only():
    model = tiny_model("llama")
    m = measure(lambda: model.backend("hf").forward(model.encode(PROMPTS)),
                device=model.device)
    c = training_step_costs(model, PROMPTS, "vectors", steps=1, chat=False)
    if model.device.type == "cuda":
        assert m.peak_gpu is not None and m.peak_gpu > 0 and c["peak_gpu_bytes"] > 0
    else:
        assert m.peak_gpu is None and c["peak_gpu_bytes"] is None
