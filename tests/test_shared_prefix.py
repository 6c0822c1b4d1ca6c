"""Reading the columns all rows share once (``HFBackend.forward_shared``, the fast
multiple-choice sweep's forward): the same logits as a plain forward, up to the rounding of
smaller matrix products (one float32 ulp on the tiny models; SmolLM2 in test_sweep)."""

import pytest
import torch
from conftest import ATTENTION_ARCHS, no_hooks, tiny_model

from steerlab.backends.kvcache import common_start
from steerlab.steering import steer

PREFIX = 3


def close(got, ref):
    """Equal but for the last bits: the lead rows run as a batch of 2, not 5, and the tiny
    models' matrix kernels round by shape."""
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-6)


def _batch(model, lens=(6, 7, 5, 7, 6), seed=0):
    """A right-padded batch whose rows begin with the same PREFIX tokens (at most 7 wide:
    the tiny Gemma 3's sliding layers keep 7 columns)."""
    gen = torch.Generator().manual_seed(seed)
    pad = model.tokenizer.pad_token_id
    prefix = torch.randint(3, 40, (PREFIX,), generator=gen)
    width = max(lens)
    ids = torch.full((len(lens), width), pad)
    mask = torch.zeros(len(lens), width, dtype=torch.long)
    for r, n in enumerate(lens):
        ids[r, :n] = torch.cat([prefix, torch.randint(40, 60, (n - PREFIX,), generator=gen)])
        mask[r, :n] = 1
    return {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device)}


def _embedded_shapes(model):
    """Record the (rows, columns) of every forward's token ids."""
    shapes: list[tuple[int, int]] = []
    emb = model.hf.get_input_embeddings()
    handle = emb.register_forward_hook(lambda m, a, o: shapes.append(tuple(a[0].shape)))
    return shapes, handle


@pytest.mark.parametrize("arch", ATTENTION_ARCHS)
def test_forward_shared_equals_a_plain_forward(arch):
    model = tiny_model(arch)
    be = model.backend("hf")
    enc = _batch(model)
    assert common_start(enc) == PREFIX
    width = enc["input_ids"].shape[1]
    keep = torch.arange(PREFIX - 1, width, device=model.device)
    shapes, handle = _embedded_shapes(model)
    try:
        got = be.forward_shared(enc, keep=keep)
    finally:
        handle.remove()
    # two lead rows whole, the other three from the first column they do not share
    assert shapes == [(2, width), (3, width - (PREFIX - 1))]
    close(got, be.forward(enc, keep=keep))
    # as the fast sweep runs it: blocks 0..1 replayed from a recording, a vector added at 1
    rec = be.record(enc, 1)
    vec = torch.randn(model.d_model, generator=torch.Generator().manual_seed(1)) * 3
    with be.replaying(1, rec), steer(model, vec, layers=1, coeff=1.0):
        got = be.forward_shared(enc, keep=keep)
        ref = be.forward(enc, keep=keep)
    close(got, ref)
    assert not torch.equal(ref, be.forward(enc, keep=keep))  # the vector changed the logits
    last = model.n_layers - 1  # every block replayed: nothing to share, the same logits
    rec = be.record(enc, last)
    with be.replaying(last, rec), steer(model, vec, layers=last, coeff=1.0):
        close(be.forward_shared(enc, keep=keep), be.forward(enc, keep=keep))
    assert no_hooks(model)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_forward_shared_falls_back_to_a_plain_forward(arch):
    """No shared column, too few rows, positions given as a count, or (Gemma 3) a batch
    wider than a sliding layer keeps: a plain forward."""
    model = tiny_model(arch)
    be = model.backend("hf")
    enc = _batch(model)
    width = enc["input_ids"].shape[1]
    keep = torch.arange(2, width, device=model.device)
    cases = [(enc, 1), ({n: t[:2] for n, t in enc.items()}, keep),
             (enc, torch.arange(0, width, device=model.device))]
    if arch == "gemma3":
        wide = _batch(model, lens=(9, 12, 7, 12, 10))
        cases.append((wide, torch.arange(2, 12, device=model.device)))
    for e, k in cases:
        shapes, handle = _embedded_shapes(model)
        try:
            got = be.forward_shared(e, keep=k)
        finally:
            handle.remove()
        assert shapes == [tuple(e["input_ids"].shape)]
        assert torch.equal(got, be.forward(e, keep=k))


FEW_SHOT = ["Q: 1+1\nA: 2\n\nQ: " + q + "\nA:"
            for q in ["9*9", "What is 2 + 3?", "8*8", "Name a colour", "7-6", "2+30"]]


@pytest.mark.parametrize("arch", ATTENTION_ARCHS)
def test_greedy_reads_the_shared_few_shot_prefix_once(arch, monkeypatch):
    """Cells of several layers decoded together (``repeat`` with ``shared_until``): the lead
    prompts (one per padding length) run whole, the others from the first column they do not
    share, on their lead's cache; the tokens equal decoding every row on its own. (The tiny
    Gemma 3's sliding window is narrower than these prompts: it reads them whole.)"""
    from steerlab.backends import hf
    from steerlab.steering import RowSteering

    model = tiny_model(arch)
    be = model.backend("hf")
    enc = model.encode(FEW_SHOT, chat=False)
    until = [2, 0, 3, 2, 1, 3]
    k, n = len(until), len(FEW_SHOT)
    per = torch.randn(k, model.d_model, generator=torch.Generator().manual_seed(2)) * 4
    per[2] = 0.0  # a sweep's baseline row
    wide = {name: t.repeat_interleave(k, 0) for name, t in enc.items()}
    with RowSteering(model, per.repeat(n, 1), until * n, "all", "hf") as s:
        ref = be.greedy(wide, 6, on_rows=s.select)
    calls: list[tuple[tuple[int, int], bool]] = []
    real = hf.HFBackend._shared_prefill

    def spy(self, args, *a, **kw):
        calls.append((tuple(args["input_ids"].shape), kw.get("past") is not None))
        return real(self, args, *a, **kw)

    monkeypatch.setattr(hf.HFBackend, "_shared_prefill", spy)
    with RowSteering(model, per.repeat(n, 1), until * n, "all", "hf") as s:
        got = be.greedy(enc, 6, on_rows=s.select, repeat=k, shared_until=until)
    assert got == ref
    assert len({tuple(got[c]) for c in range(k)}) > 2  # the vectors changed the tokens
    width = enc["input_ids"].shape[1]
    if arch == "gemma3":
        assert calls == [((n, width), False)]
    else:  # 3 padding lengths among 6 prompts: 4 leads (one of each, and one more)
        assert [c[1] for c in calls] == [False, True] and calls[0][0] == (4, width)
        assert calls[1][0][0] == 2 and calls[1][0][1] < width // 2
    assert no_hooks(model)
