"""Position-correct steering through real KV-cached generation.

``positions="generated"`` must leave the first new token's logits (they come from the forward
that reads the prompt) bit-identical and change the later ones; ``"prompt"`` must change the
first and add nothing at the decoding steps; ``"all"`` does both. Checked on the real embedded
SmolLM2 through transformers' own ``generate`` (one prompt, and a left-padded batch), and on
every tiny architecture. The backend tells the phases apart by counting the forwards of its
own ``generate``; the fallback that reads a forward's arguments (used when a caller runs the
HF module's ``generate`` directly) is checked against the real ``generate`` of each
architecture here, so a renamed or re-typed cache argument fails loudly.
"""

import pytest
import torch
from conftest import PROMPTS, no_hooks

from steerlab.backends.phase import continues_cache
from steerlab.steering import steer
from steerlab.vectors import SteeringVector

CHAT_PROMPTS = ["What is the capital of France?",
                "Tom has 3 apples and buys 5 more. How many apples does he have now?",
                "Which is larger, 37 or 52?"]
NEW = 4
LAYER = 10


def _step_logits(model, enc, positions=None, vector=None, coeff=0.0):
    """Per-step next-token logits (NEW, B, vocab) of a greedy generation through the backend."""
    be = model.backend("hf")
    kwargs = {"max_new_tokens": NEW, "min_new_tokens": NEW, "do_sample": False,
              "temperature": None, "top_k": None, "top_p": None,
              "pad_token_id": model.tokenizer.pad_token_id,
              "return_dict_in_generate": True, "output_logits": True}
    with torch.no_grad():
        if vector is None:
            out = be.generate(enc, **kwargs)
        else:
            with steer(model, vector, layers=LAYER, coeff=coeff, positions=positions):
                out = be.generate(enc, **kwargs)
    return torch.stack(out.logits), out.sequences


def _added(model, enc, vector, positions, coeff):
    """What steering added to block LAYER's output at each forward of a generation: a hook
    registered before the steering hook sees the output unsteered, one after sees it steered:
    the largest per-token norm of their difference, per forward."""
    before, after = [], []

    def grab(store):
        return lambda m, a, o: store.append((o[0] if isinstance(o, tuple) else o).detach().clone())

    h1 = model.layers[LAYER].register_forward_hook(grab(before))
    try:
        with steer(model, vector, layers=LAYER, coeff=coeff, positions=positions):
            h2 = model.layers[LAYER].register_forward_hook(grab(after))
            try:
                model.backend("hf").generate(
                    enc, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
                    temperature=None, top_k=None, top_p=None,
                    pad_token_id=model.tokenizer.pad_token_id)
            finally:
                h2.remove()
    finally:
        h1.remove()
    assert len(before) == len(after) == NEW
    return [(a - b).float().norm(dim=-1).max().item() for a, b in zip(after, before, strict=True)]


@pytest.fixture(scope="module")
def direction(smollm):
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(smollm.d_model, generator=gen)
    return SteeringVector({LAYER: v / v.norm()}, smollm.hf_id, smollm.d_model)


@pytest.mark.slow
@pytest.mark.parametrize("batch", [1, 3], ids=["one-prompt", "left-padded-batch"])
def test_positions_through_real_generate(smollm, direction, batch):
    enc = smollm.encode(CHAT_PROMPTS[:batch], chat=True)
    if batch > 1:
        assert (enc["attention_mask"][:, 0] == 0).any()  # really left-padded
    plain, seq = _step_logits(smollm, enc)
    coeff = 60.0  # about half the residual norm at layer 10: moves logits, keeps tokens sane
    for positions, changed in {"generated": [False, True, True, True],
                               "prompt": [True, False, False, False],
                               "all": [True, True, True, True]}.items():
        steered, _ = _step_logits(smollm, enc, positions, direction, coeff)
        if positions == "generated":
            assert torch.equal(steered[0], plain[0]), "generated: first new token's logits moved"
        else:
            assert (steered[0] - plain[0]).abs().max() > 0.1, f"{positions}: prompt unsteered"
        added = _added(smollm, enc, direction, positions, coeff)
        for step, (delta, want) in enumerate(zip(added, changed, strict=True)):
            if want:
                assert delta == pytest.approx(coeff, rel=1e-2), f"{positions}, forward {step}"
            else:
                assert delta == 0.0, f"{positions}, forward {step}: edited, should not be"
        if positions != "prompt":
            later = (steered[1:] - plain[1:]).abs().amax(dim=(0, 2))
            assert (later > 0.1).all(), f"{positions}: a decoding step's logits did not move"
    assert no_hooks(smollm)


def _cache_flags(model, run):
    """continues_cache() of every forward of the model's top module during ``run()``."""
    flags: list[bool] = []
    handle = model.hf.register_forward_pre_hook(
        lambda m, args, kwargs: flags.append(continues_cache(args, kwargs)), with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return flags


def test_cache_fallback_matches_generate(tiny):
    """The argument-reading fallback agrees with the forward count on every architecture's
    real generate: the prompt's forward carries no cache, every later one does."""
    enc = tiny.encode(PROMPTS[:2])
    flags = _cache_flags(tiny, lambda: tiny.hf.generate(
        **enc, max_new_tokens=3, min_new_tokens=3, do_sample=False,
        pad_token_id=tiny.tokenizer.pad_token_id))
    assert flags == [False, True, True]
    assert _cache_flags(tiny, lambda: tiny.backend("hf").forward(enc)) == [False]


@pytest.mark.slow
def test_cache_fallback_on_real_model(smollm):
    enc = smollm.encode(CHAT_PROMPTS[:2], chat=True)
    flags = _cache_flags(smollm, lambda: smollm.hf.generate(
        **enc, max_new_tokens=3, min_new_tokens=3, do_sample=False,
        pad_token_id=smollm.tokenizer.pad_token_id))
    assert flags == [False, True, True]


def test_direct_hf_generate_still_position_correct(tiny_llama):
    """A caller who runs the HF module's generate directly (not through steerlab) still gets
    ``generated`` steering at the decoding steps only, through the fallback."""
    gen = torch.Generator().manual_seed(0)
    vec = SteeringVector({1: torch.randn(tiny_llama.d_model, generator=gen)},
                         tiny_llama.hf_id, tiny_llama.d_model)
    enc = tiny_llama.encode(PROMPTS[:1])
    kwargs = {"max_new_tokens": 3, "min_new_tokens": 3, "do_sample": False,
              "return_dict_in_generate": True, "output_logits": True,
              "pad_token_id": tiny_llama.tokenizer.pad_token_id}
    with torch.no_grad():
        plain = torch.stack(tiny_llama.hf.generate(**enc, **kwargs).logits)
        with steer(tiny_llama, vec, coeff=20.0, positions="generated"):
            steered = torch.stack(tiny_llama.hf.generate(**enc, **kwargs).logits)
    assert torch.equal(steered[0], plain[0])
    assert (steered[1:] - plain[1:]).abs().amax() > 1e-3
    assert no_hooks(tiny_llama)
