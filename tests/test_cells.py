"""evaluate_cells: a sweep's cells at once equal one steered evaluation each (item by
item), with per-row steering and the greedy loop's shared prompt; see test_oracle.py for the
same paths against plain transformers."""


import pytest
import torch
from conftest import no_hooks, tiny_model

from steerlab.cells import evaluate_cells
from steerlab.errors import LayerError, OptionError, VectorMismatchError
from steerlab.evaluation import evaluate
from steerlab.steering import steer
from steerlab.tasks import get_task


def test_evaluate_cells_predictions_equal_steered_evaluate(tiny_llama):
    task = get_task("reasoning-mc")
    items = task.items(10, 1)
    gen = torch.Generator().manual_seed(1)
    vecs = [torch.randn(tiny_llama.d_model, generator=gen) * s for s in (0.3, 4.0)]
    fast = evaluate_cells(tiny_llama, task, 1, vecs, items=items, batch_size=3)
    for v, f in zip(vecs, fast, strict=True):
        assert f.extra["shared_prefix"]
        with steer(tiny_llama, v, layers=1, coeff=1.0):
            ref = evaluate(tiny_llama, task, items=items, batch_size=3)
        assert f.predictions == ref.predictions
        assert (f.correct == ref.correct).all()
    assert no_hooks(tiny_llama)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2", "rwkv"])
@pytest.mark.parametrize("positions", ["all", "generated"])
def test_generative_cells_decode_together_with_the_answers_of_one_pass_each(arch, positions):
    """All of a layer's cells in one batch (a row per item and vector; rows leave as their
    answers complete; with positions="generated" the prompt is read once): the same answers
    and the same judged text, item by item, as one steered evaluation per vector."""
    from steerlab.answers import first_answer
    from steerlab.tasks import shots

    model = tiny_model(arch)
    task = get_task("reasoning-gen")
    items, few = task.items(5, 2), shots(task)[:1]  # one: the tiny gpt2 has 256 positions
    gen = torch.Generator().manual_seed(3)
    vecs = [torch.randn(model.d_model, generator=gen) * s for s in (0.0, 2.0, 8.0)]
    fast = evaluate_cells(model, task, 1, vecs, items=items, batch_size=2, shots=few,
                          positions=positions)
    assert ("cells_per_batch" in fast[0].extra) == (arch != "rwkv")  # rwkv: no KV cache
    seen = set()
    for v, f in zip(vecs, fast, strict=True):
        with steer(model, v, layers=1, coeff=1.0, positions=positions):
            ref = evaluate(model, task, items=items, batch_size=2, shots=few)
        assert f.predictions == ref.predictions
        assert (f.correct == ref.correct).all()
        assert [first_answer(c) for c in f.completions] == [first_answer(c)
                                                             for c in ref.completions]
        seen.add(tuple(ref.completions))
    assert len(seen) >= 2  # steering changed the text: the comparison means something
    # the zero vector's cell is the unsteered evaluation (a fast sweep's baseline)
    plain = evaluate(model, task, items=items, batch_size=2, shots=few)
    assert fast[0].predictions == plain.predictions
    assert [first_answer(c) for c in fast[0].completions] == [first_answer(c)
                                                             for c in plain.completions]
    assert no_hooks(model)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2"])
def test_greedy_shares_the_prompt_up_to_a_layer_exactly(arch):
    """``shared_until=L``: blocks 0..L of the prompt run once per prompt, the repeats go on
    from there with their own cache above L; with a per-row vector at block L the tokens
    equal decoding the repeated prompts one row each (every layer, the first and the last)."""
    from steerlab.steering import RowSteering

    model = tiny_model(arch)
    be = model.backend("hf")
    enc = model.encode(["What is 2 + 3?", "Name a colour", "7 * 6 ="], chat=False)
    k = 3
    gen = torch.Generator().manual_seed(1)
    per = torch.randn(k, model.d_model, generator=gen)
    wide = {name: t.repeat_interleave(k, 0) for name, t in enc.items()}
    plain = be.greedy(wide, 6)
    for layer in range(model.n_layers):
        with RowSteering(model, per.repeat(3, 1), layer, "all", "hf") as s:
            ref = be.greedy(wide, 6, on_rows=s.select)
        with RowSteering(model, per.repeat(3, 1), layer, "all", "hf") as s:
            got = be.greedy(enc, 6, on_rows=s.select, repeat=k, shared_until=layer)
        assert got == ref, layer
        assert ref != plain  # the vectors changed the tokens
    assert no_hooks(model)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2"])
def test_greedy_shares_the_prompt_in_stages_for_rows_of_several_layers(arch):
    """``shared_until`` with one layer per repeat (cells of several layers in one batch): the
    prompt's blocks run once per group of rows whose inputs are still equal, and the tokens
    equal decoding the repeated prompts one row each, each row steered at its own layer."""
    from steerlab.steering import RowSteering

    model = tiny_model(arch)
    be = model.backend("hf")
    enc = model.encode(["What is 2 + 3?", "Name a colour", "7 * 6 ="], chat=False)
    until = [2, 0, 3, 2, 1, 3]  # the repeat index's layer: first, last, repeated ones
    k = len(until)
    gen = torch.Generator().manual_seed(2)
    per = torch.randn(k, model.d_model, generator=gen)
    per[2] = 0.0  # a zero vector among them (a sweep's baseline row)
    wide = {name: t.repeat_interleave(k, 0) for name, t in enc.items()}
    with RowSteering(model, per.repeat(3, 1), until * 3, "all", "hf") as s:
        ref = be.greedy(wide, 6, on_rows=s.select)
    with RowSteering(model, per.repeat(3, 1), until * 3, "all", "hf") as s:
        got = be.greedy(enc, 6, on_rows=s.select, repeat=k, shared_until=until)
    assert got == ref
    for c in range(k):  # each row as steer() at its own layer alone gives it
        with steer(model, per[c], layers=until[c], coeff=1.0):
            alone = be.greedy(enc, 6)
        assert [got[i * k + c] for i in range(3)] == alone, c
    assert len({tuple(got[c]) for c in range(k)}) > 2  # the vectors changed the tokens
    assert no_hooks(model)


@pytest.mark.parametrize("task_name", ["memorisation-mc", "reasoning-gen"])
def test_cells_of_several_layers_equal_one_pass_each(tiny_llama, task_name):
    """``evaluate_cells`` with one layer per vector (a sweep's cells of several layers) gives
    each vector's ``evaluate`` under ``steer`` at its own layer."""
    task = get_task(task_name)
    items = task.items(6, 0)
    gen = torch.Generator().manual_seed(3)
    vecs = [torch.randn(tiny_llama.d_model, generator=gen) * 4 for _ in range(3)]
    at = [2, 0, 2]
    got = evaluate_cells(tiny_llama, task, at, vecs, items=items, batch_size=4)
    for res, v, lay in zip(got, vecs, at, strict=True):
        with steer(tiny_llama, v, layers=lay, coeff=1.0):
            ref = evaluate(tiny_llama, task, items=items, batch_size=4)
        assert res.predictions == ref.predictions
        assert (res.correct == ref.correct).all()
        assert res.completions == ref.completions
    assert len({(tuple(r.predictions), tuple(r.completions)) for r in got}) > 1  # not vacuous
    with pytest.raises(OptionError, match="2 layers for 3 vectors"):
        evaluate_cells(tiny_llama, task, [0, 1], vecs, items=items)
    assert no_hooks(tiny_llama)


def test_row_steering_refuses_a_wrong_layer_count(tiny_llama):
    from steerlab.steering import RowSteering

    with pytest.raises(VectorMismatchError, match="3 layers for 2 row vectors"):
        RowSteering(tiny_llama, torch.ones(2, tiny_llama.d_model), [0, 1, 2], "all", "hf")
    with pytest.raises(LayerError):
        RowSteering(tiny_llama, torch.ones(2, tiny_llama.d_model), [0, 9], "all", "hf")
    assert no_hooks(tiny_llama)
    with pytest.raises(OptionError, match="shared_until has 2 layers for repeat=3"):
        tiny_llama.backend("hf").greedy(tiny_llama.encode(["a"], chat=False), 2, repeat=3,
                                        shared_until=[0, 1])


def test_generative_cells_leave_no_hooks_when_decoding_fails(tiny_llama, monkeypatch):
    be = tiny_llama.backend("hf")

    def broken(*a, **k):
        raise RuntimeError("decoding failed")

    monkeypatch.setattr(be, "greedy", broken)
    with pytest.raises(RuntimeError, match="decoding failed"):
        evaluate_cells(tiny_llama, get_task("reasoning-gen"), 1, [torch.ones(32)],
                       items=get_task("reasoning-gen").items(2, 0))
    assert no_hooks(tiny_llama)


def test_greedy_refuses_bad_budgets_and_layers_and_no_cells_decode_nothing(tiny_llama):
    be = tiny_llama.backend("hf")
    enc = tiny_llama.encode(["What is 2 + 3?"], chat=False)
    with pytest.raises(OptionError, match="max_new_tokens >= 1"):
        be.greedy(enc, 0)
    with pytest.raises(OptionError, match="repeat >= 1"):
        be.greedy(enc, 4, repeat=0)
    with pytest.raises(OptionError, match="shared_until=9 is not a layer"):
        be.greedy(enc, 4, repeat=2, shared_until=9)
    assert evaluate_cells(tiny_llama, get_task("reasoning-gen"), 1, [],
                          items=get_task("reasoning-gen").items(2, 0)) == []
