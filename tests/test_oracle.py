"""steerlab's fast paths against an independent oracle (``oracle.py``: plain transformers and
torch hooks, one unpadded prompt at a time, no cache), item by item, on tiny models whose text
depends on the prompt and whose rows end at different steps: the multiple-choice cells
(recorded prefix, shared columns, several layers), the generative cells (rows per vector,
staged prefill, lead rows, rows retired mid-decode), every ``positions``, five architectures
(Gemma 3 with sliding and full layers and prompts past the window; RWKV batched)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from conftest import test_device
from oracle import ARCHS, WINDOW, end_early_and_late, greedy, last_logits, lively_hf

from steerlab.answers import first_answer
from steerlab.cells import evaluate_cells
from steerlab.evaluation import evaluate
from steerlab.models import Model, model_from_hf
from steerlab.sizes import char_tokenizer
from steerlab.steering import RowSteering, steer
from steerlab.tasks import LETTERS, get_task, shots

POSITIONS = ["all", "prompt", "generated"]


def _model(arch: str) -> Model:
    return model_from_hf(lively_hf(arch), char_tokenizer(), name=f"lively-{arch}",
                         device=test_device())


def _vectors(model: Model, scales=(0.0, 3.0, 8.0), seed: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(model.d_model, generator=gen) * s for s in scales]


def _ids(model: Model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=True)["input_ids"]


@pytest.mark.parametrize("arch", ARCHS)
def test_multiple_choice_cells_equal_the_oracle(arch):
    """Letter scoring: each vector's predicted option, item by item, is the oracle's (the
    letter of highest probability after the unpadded prompt, the vector added at its layer at
    the positions ``positions`` admits: a single forward reads the prompt, so ``generated``
    leaves it unsteered)."""
    model = _model(arch)
    task = get_task("reasoning-mc")
    items = task.items(12, 3)
    vecs = _vectors(model)
    layers = [1, 2, 1]  # several layers: one recorded prefix each, reused upwards
    letters = [model.tokenizer.encode(f" {x}", add_special_tokens=False)[-1] for x in LETTERS]
    prompts = []
    for it in items:
        opts = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(it.options))
        prompts.append(_ids(model, f"Question: {it.question}\n{opts}\nAnswer:"))
    seen = set()
    for positions in POSITIONS:
        got = evaluate_cells(model, task, layers, vecs, items=items, batch_size=5,
                             scoring="letter", positions=positions)
        for v, lay, res in zip(vecs, layers, got, strict=True):
            want = []
            for it, ids in zip(items, prompts, strict=True):
                logits = last_logits(model.hf, ids, [(lay, v)], positions)
                want.append(it.options[int(logits[letters[:len(it.options)]].argmax())])
            assert res.predictions == want, (positions, lay)
            seen.add(tuple(want))
    assert len(seen) >= 2  # the vectors changed answers: the comparison can fail


@functools.cache  # one model per architecture: its end-of-text is chosen by decoding
def _gen_setup(arch: str, n: int = 5):
    model = _model(arch)
    # 20 new tokens: enough for rows to end at different steps, few for the cacheless oracle
    task = dataclasses.replace(get_task("reasoning-gen"), max_new_tokens=20)
    items, few = task.items(n, 2), shots(task)[:1]
    if arch == "rwkv":  # its cacheless oracle runs a Python loop per token: shorter prompts
        few = []
    prefix = "".join(f"Q: {q}\nA: {a}\n\n" for q, a in few)
    prompts = [_ids(model, f"{prefix}Q: {it.question}\nA:") for it in items]
    end_early_and_late(model.hf, prompts, task.max_new_tokens)
    return model, task, items, few, prompts


def _oracle_texts(model, prompts, max_new, edits, positions):
    outs = [greedy(model.hf, ids, max_new, edits, positions) for ids in prompts]
    return outs, [model.tokenizer.decode(t, skip_special_tokens=True) for t in outs]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("positions", POSITIONS)
def test_generative_cells_equal_the_oracle(arch, positions):
    """Several vectors at two layers decoded together (rows per item and vector, leaving as
    they finish): each row's judged text is the oracle's greedy text's, item by item."""
    model, task, items, few, prompts = _gen_setup(arch)
    vecs = _vectors(model)
    layers = [1, 2, 2]
    got = evaluate_cells(model, task, layers, vecs, items=items, batch_size=3, shots=few,
                         positions=positions)
    texts = set()
    lengths = set()
    for v, lay, res in zip(vecs, layers, got, strict=True):
        toks, want = _oracle_texts(model, prompts, task.max_new_tokens, [(lay, v)], positions)
        assert [first_answer(c) for c in res.completions] == [first_answer(w) for w in want], \
            (positions, lay)
        texts.add(tuple(want))
        lengths.update(len(t) for t in toks)
    assert len(texts) >= 2  # steering changed the text
    assert len(lengths) >= 2  # rows ended at different steps


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_evaluation_equals_the_oracle(arch):
    """A plain (unsteered and steered) generative evaluation at batch 3 gives each item the
    oracle's text: left padding and the batch do not enter any row (RWKV included)."""
    model, task, items, few, prompts = _gen_setup(arch)
    v = _vectors(model, (4.0,))[0]
    for edits in ([], [(2, v)]):
        _, want = _oracle_texts(model, prompts, task.max_new_tokens, edits, "all")
        if edits:
            with steer(model, v, layers=2, coeff=1.0):
                res = evaluate(model, task, items=items, batch_size=3, shots=few)
        else:
            res = evaluate(model, task, items=items, batch_size=3, shots=few)
        assert [first_answer(c) for c in res.completions] == [first_answer(w) for w in want]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("positions", POSITIONS)
def test_staged_prefill_with_row_steering_equals_the_oracle(arch, positions):
    """``greedy(repeat=k, shared_until=...)``: the prompt's staged forwards are all the
    prompt's, so a ``generated`` vector stays off in every stage and a ``prompt`` one is on
    in every stage (lead and other rows)."""
    model, task, items, few, prompts = _gen_setup(arch)
    be = model.backend("hf")
    vecs = _vectors(model, (2.0, 6.0, 4.0))
    layers = [0, 2, 3]
    k = len(vecs)
    width = max(map(len, prompts))  # left-padded, as model.encode pads
    enc = {"input_ids": torch.tensor([[0] * (width - len(p)) + p for p in prompts]),
           "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p)
                                           for p in prompts])}
    enc = {k: v.to(model.device) for k, v in enc.items()}
    assert width > WINDOW  # past the sliding window
    per = torch.stack(vecs)
    with RowSteering(model, per.repeat(len(prompts), 1), layers * len(prompts), positions,
                     "hf") as rows:
        got = be.greedy(enc, task.max_new_tokens, on_rows=rows.select, repeat=k,
                        shared_until=layers)
    for r, toks in enumerate(got):
        i, c = divmod(r, k)
        want = greedy(model.hf, prompts[i], task.max_new_tokens, [(layers[c], vecs[c])],
                      positions)
        assert toks == want, (r, positions)


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen2", "gpt2"])
def test_shared_columns_under_position_gated_steering(arch):
    """``forward_shared`` reads the prompt in every part (lead rows and the others, whose
    forward carries the lead's cache): a ``prompt`` vector acts on every row, a
    ``generated`` one on none, as in a plain forward and in the oracle."""
    model = _model(arch)
    be = model.backend("hf")
    texts = ["Q: 12 + 7?\nA:", "Q: 3 * 4?\nA:", "Q: 9 - 1 = ?\nA:", "Q: 2?\nA:", "Q: 5+5\nA:"]
    enc = model.encode(texts, chat=False, padding_side="right")
    width = enc["input_ids"].shape[1]
    keep = torch.arange(2, width, device=model.device)
    v = _vectors(model, (5.0,))[0]
    plain = be.forward(enc, keep=keep)
    for positions in ("prompt", "generated"):
        with steer(model, v, layers=1, coeff=1.0, positions=positions):
            got = be.forward_shared(enc, keep=keep)
        for r, text in enumerate(texts):
            ids = _ids(model, text)
            want = last_logits(model.hf, ids, [(1, v)], positions)
            torch.testing.assert_close(got[r, len(ids) - 1 - 2], want, rtol=0, atol=1e-4)
        if positions == "generated":
            torch.testing.assert_close(got, plain, rtol=0, atol=1e-5)
