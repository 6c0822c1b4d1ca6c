"""Library drift: every place steerlab leans on a library's argument names, output types or
private layout has a test here that fails loudly when a new release changes it (the lock pins
what passed; ``make test-latest`` runs these on the newest versions the ranges allow)."""

import tempfile

import pytest
import torch
from conftest import ARCHS, PROMPTS, char_tokenizer, tiny_model
from transformers import AutoTokenizer

from steerlab.backends.blocks import hidden_of
from steerlab.inference import generate
from steerlab.steering import steer


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def test_logits_to_keep_is_found_where_transformers_has_it(model):
    """The HF backend finds ``logits_to_keep`` in the forward's signature (a rename would
    silently fall back to slicing full logits: right, but slow for Gemma's 262k vocabulary)."""
    be = model.backend("hf")
    assert be._takes_keep  # every architecture tested takes it in transformers 5
    enc = model.encode(PROMPTS)
    with torch.no_grad():
        full = be.forward(enc)
        for keep in (1, 3, torch.tensor([0, 2, 5])):
            got = be.forward(enc, keep=keep)
            ref = full[:, -keep:] if isinstance(keep, int) else full[:, keep]
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_position_ids_make_left_padding_invisible(model):
    """Positions are counted over real tokens (``position_ids``): a left-padded batch gives
    each prompt the logits it has alone. RWKV takes no position ids and no attention mask:
    the backend runs each row's real tokens first (its pads after them, where the recurrence
    carries them to no real token), so it too gives each prompt its logits alone."""
    be = model.backend("hf")
    assert be._takes_positions == (model.name != "tiny-rwkv")
    enc = model.encode(PROMPTS)
    with torch.no_grad():
        batch = be.forward(enc, keep=1)[:, 0]
        for i, p in enumerate(PROMPTS):
            alone = be.forward(model.encode([p]), keep=1)[0, 0]
            torch.testing.assert_close(batch[i], alone, atol=2e-4, rtol=1e-4)


def test_block_and_module_outputs_are_what_the_backends_unpack(model):
    """A block, attention or MLP module returns a tensor or a tuple whose first element is
    the hidden states; anything else would be edited wrongly."""
    from steerlab.backends.blocks import block_parts

    seen = {}
    handles = []
    block = model.layers[1]
    for name, mod in [("block", block), *block_parts(block).items()]:
        def grab(m, a, out, name=name):
            seen[name] = out
        handles.append(mod.register_forward_hook(grab))
    try:
        with torch.no_grad():
            model.hf(**model.encode(PROMPTS[:2]))
    finally:
        for h in handles:
            h.remove()
    for name, out in seen.items():
        if name in ("mid_norm", "o_proj"):
            continue
        h = hidden_of(out)
        assert isinstance(out, torch.Tensor | tuple), (name, type(out))
        assert isinstance(h, torch.Tensor) and h.shape[:2] == (2, h.shape[1]), name
        assert h.shape[-1] == model.d_model, (name, h.shape)


def test_nnsight_steps_and_phases_on_a_tiny_model(tiny_llama):
    """nnsight's ``tracer.iter`` must yield step indices: prompt-only and generated-only
    steering through nnsight's generate equal the hf backend's."""
    v = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(0)) * 3
    for positions in ("prompt", "generated"):
        outs = {}
        for backend in ("hf", "nnsight"):
            with steer(tiny_llama, v, layers=1, positions=positions, backend=backend):
                outs[backend] = generate(tiny_llama, PROMPTS[:2], max_new_tokens=5,
                                         backend=backend)
        assert outs["hf"] == outs["nnsight"], positions


def test_transformer_lens_bridge_hook_names():
    """The bridge's hook points steerlab maps its sites to exist, and TransformerLens's own
    aliases still point where steerlab's docs say (hook_resid_mid = the pre-MLP norm's input,
    hook_z = the output projection's input)."""
    m = tiny_model("llama")
    d = tempfile.mkdtemp()
    char_tokenizer().save_pretrained(d)
    m.tokenizer = AutoTokenizer.from_pretrained(d)
    m.tokenizer.padding_side = "left"
    be = m.backend("tlens")
    assert be.sites == ("resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")
    block = be.bridge.blocks[0]
    assert block.hook_resid_pre is block.hook_in
    assert block.hook_resid_post is block.hook_out
    assert block.hook_resid_mid is block.ln2.hook_in
    assert block.hook_attn_out is block.attn.hook_out
    assert block.hook_mlp_out is block.mlp.hook_out
    assert block.attn.hook_z is block.attn.o.hook_in
