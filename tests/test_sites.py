"""Named sites on every architecture and backend: what each site holds (checked against the
model's own hidden states and module arithmetic), edits at each site, per-token caching,
Hong et al.'s all-sites projection against the formula written out by hand, and hooks that
never leak, whatever fails."""

import pytest
import torch
from conftest import ARCHS, PROMPTS, no_hooks, tiny_model

from steerlab.backends.base import SITES
from steerlab.backends.blocks import block_parts
from steerlab.cache import cache_activations, cache_sites
from steerlab.errors import BackendMismatchError, SiteError, VectorMismatchError
from steerlab.inference import generate
from steerlab.steering import HONG_SITES, hong_projection, steer
from steerlab.vectors import SteeringVector, diff_of_means

LAYER = 1


@pytest.fixture(scope="module", params=ARCHS)
def model(request):
    return tiny_model(request.param)


def _all_sites(model, backend="hf", reduction="none", prompts=PROMPTS, batch_size=16):
    return cache_sites(model, prompts, list(model.backend(backend).sites), layers=None,
                       reduction=reduction, backend=backend, batch_size=batch_size)


def _real(acts, mask):
    """(L, n, T, ...) -> rows at real tokens only, (L, n_real, ...)."""
    return acts[:, mask]


def test_site_list_per_architecture(model):
    sites = model.sites
    expected = set(SITES) - ({"z"} if model.name == "tiny-rwkv" else set())
    assert set(sites) == expected


def test_missing_site_names_the_sites_it_has():
    rwkv = tiny_model("rwkv")
    with pytest.raises(SiteError, match="no 'z' site; its sites are resid_pre"):
        cache_activations(rwkv, PROMPTS, site="z")
    with pytest.raises(SiteError, match="Unknown site 'resid_middle'"):
        rwkv.backend("hf").add_edit(0, lambda h: None, site="resid_middle")
    assert no_hooks(rwkv)


def test_sites_hold_what_the_model_computes(model):
    """resid_pre / resid_post are the model's own hidden states; resid_mid and resid_post are
    the residual sums of the attention and MLP contributions; z through the output projection
    is the attention output."""
    got = _all_sites(model)
    mask = got["resid_post"].mask
    enc = model.encode(PROMPTS, padding_side="right")
    with torch.no_grad():
        hs = model.hf(**enc, output_hidden_states=True).hidden_states
    n = model.n_layers
    rwkv = model.name == "tiny-rwkv"  # its hidden states are not the block inputs, and its
    first = 1 if rwkv else 0          # block 0 normalises its input (pre_ln) before the sum
    for l in range(n - 1):
        torch.testing.assert_close(got["resid_pre"].acts[l + 1][mask],
                                   got["resid_post"].acts[l][mask])
    if not rwkv:
        for l in range(n - 1):  # the last hidden state has the final norm applied
            torch.testing.assert_close(got["resid_post"].acts[l][mask], hs[l + 1][mask].float())
        for l in range(n):
            torch.testing.assert_close(got["resid_pre"].acts[l][mask], hs[l][mask].float())
    pre, mid, post = (got[s].acts[first:, mask]
                      for s in ("resid_pre", "resid_mid", "resid_post"))
    attn, mlp = got["attn_out"].acts[first:, mask], got["mlp_out"].acts[first:, mask]
    parts = [block_parts(b) for b in model.layers]
    if model.name == "tiny-gemma3":  # Gemma normalises each contribution before adding it
        with torch.no_grad():
            blocks = list(model.layers)
            attn = torch.stack([b.post_attention_layernorm(a)
                                for b, a in zip(blocks, attn, strict=True)])
            mlp = torch.stack([b.post_feedforward_layernorm(m)
                               for b, m in zip(blocks, mlp, strict=True)])
    torch.testing.assert_close(mid, pre + attn)
    torch.testing.assert_close(post, mid + mlp)
    if "z" in model.sites:
        z = got["z"].acts[:, mask]  # (L, n_real, H, d_head)
        assert z.shape[-2:] == model.backend("hf").heads
        with torch.no_grad():
            through = torch.stack([p["o_proj"](zl.flatten(-2))
                                   for p, zl in zip(parts, z, strict=True)])
        torch.testing.assert_close(through, got["attn_out"].acts[:, mask])
    assert no_hooks(model)


def test_per_token_equals_reduced_and_batching_does_not_matter(model):
    full = _all_sites(model)
    one = _all_sites(model, batch_size=1)
    for site in model.sites:
        a = full[site]
        lengths = a.lengths
        assert a.acts.shape[2] == int(lengths.max())
        torch.testing.assert_close(one[site].acts, a.acts)
        last = cache_activations(model, PROMPTS, site=site, reduction="last")
        mean = cache_activations(model, PROMPTS, site=site, reduction="mean")
        idx = torch.arange(len(PROMPTS))
        torch.testing.assert_close(a.acts[:, idx, lengths - 1], last.acts)
        m = a.mask.float().view(1, *a.mask.shape, *([1] * (a.acts.ndim - 3)))
        torch.testing.assert_close(a.acts.sum(2) / m.sum(2), mean.acts)
        assert (a.acts[:, ~a.mask] == 0).all()  # pads are zeros


def test_per_token_streams_to_disk(tiny_llama, tmp_path):
    mem = cache_activations(tiny_llama, PROMPTS, reduction="none", site="attn_out")
    disk = cache_activations(tiny_llama, PROMPTS, reduction="none", site="attn_out",
                             out=tmp_path / "c", shard_size=2, batch_size=1)
    back = disk.load()
    assert back.site == "attn_out" and back.reduction == "none"
    torch.testing.assert_close(back.acts, mem.acts)
    assert torch.equal(back.mask, mem.mask)
    torch.testing.assert_close(disk.at(2), mem.at(2))


def test_per_token_save_load(tiny_llama, tmp_path):
    a = cache_activations(tiny_llama, PROMPTS, reduction="none", site="resid_mid")
    back = type(a).load(a.save(tmp_path / "a.safetensors"))
    assert back.site == "resid_mid" and torch.equal(back.mask, a.mask)
    torch.testing.assert_close(back.acts, a.acts)


def _logits(model, backend="hf"):
    enc = model.encode(PROMPTS)
    with torch.no_grad():
        return model.backend(backend).forward(enc)[enc["attention_mask"].bool()]


def test_edits_at_equivalent_sites_agree(model):
    """The same tensor seen from two sites: adding v at resid_post of layer l equals adding it
    at resid_pre of layer l + 1; where the attention output is added to the residual as is,
    adding v there equals adding it at resid_mid."""
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(model.d_model, generator=gen)
    plain = _logits(model)
    with steer(model, v, layers=LAYER, site="resid_post"):
        post = _logits(model)
    with steer(model, v, layers=LAYER + 1, site="resid_pre"):
        pre = _logits(model)
    assert (post - plain).abs().max() > 1e-3
    torch.testing.assert_close(pre, post)
    with steer(model, v, layers=LAYER, site="resid_mid"):
        mid = _logits(model)
    assert (mid - plain).abs().max() > 1e-3
    if model.name != "tiny-gemma3":
        with steer(model, v, layers=LAYER, site="attn_out"):
            attn = _logits(model)
        torch.testing.assert_close(mid, attn)
    with steer(model, v, layers=LAYER, site="mlp_out"):
        mlp = _logits(model)
    assert (mlp - plain).abs().max() > 1e-3
    assert no_hooks(model)


def test_resid_mid_edit_changes_the_residual_not_only_the_mlp_input(tiny_llama):
    """TransformerLens's hook_resid_mid is the pre-MLP norm's input: editing it alone would
    leave the residual unchanged. steerlab's resid_mid edit changes both."""
    v = torch.randn(tiny_llama.d_model, generator=torch.Generator().manual_seed(2))
    with steer(tiny_llama, v, layers=LAYER, site="resid_mid"):
        got = cache_activations(tiny_llama, PROMPTS, layers=[LAYER], site="resid_post")
    with steer(tiny_llama, v, layers=LAYER, site="attn_out"):
        ref = cache_activations(tiny_llama, PROMPTS, layers=[LAYER], site="resid_post")
    torch.testing.assert_close(got.acts, ref.acts)


def test_z_edit_per_head(tiny_llama):
    """Zeroing one head's z equals removing that head's slice of the output projection."""
    be = tiny_llama.backend("hf")
    heads, d_head = be.heads
    plain = _logits(tiny_llama)

    def knock_out(h):
        h = h.clone()
        h[..., 2, :] = 0
        return h

    handle = be.add_edit(LAYER, knock_out, site="z")
    try:
        got = _logits(tiny_llama)
    finally:
        handle.remove()
    o = block_parts(tiny_llama.layers[LAYER])["o_proj"]
    saved = o.weight.detach().clone()
    with torch.no_grad():
        o.weight[:, 2 * d_head:3 * d_head] = 0
    try:
        ref = _logits(tiny_llama)
    finally:
        with torch.no_grad():
            o.weight.copy_(saved)
    assert (got - plain).abs().max() > 1e-4
    torch.testing.assert_close(got, ref)
    assert no_hooks(tiny_llama)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3"])
def test_nnsight_agrees_at_every_site(arch):
    """nnsight runs the same modules: captures and edits at every site are exact in fp32."""
    m = tiny_model(arch)
    ref, got = _all_sites(m), _all_sites(m, backend="nnsight")
    for site in m.sites:
        torch.testing.assert_close(got[site].acts, ref[site].acts)
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(3))
    for site in set(m.sites) - {"z"}:
        outs = {}
        for backend in ("hf", "nnsight"):
            with steer(m, v, layers=LAYER, site=site, backend=backend, any_site=True):
                outs[backend] = _logits(m, backend)
        torch.testing.assert_close(outs["nnsight"], outs["hf"])
    assert no_hooks(m) and not m.backend("nnsight")._edits


def _hong_by_hand(model, r, a):
    """h <- h + a (h . r̂) r̂ at every block's input, attention output and MLP output,
    written with raw PyTorch hooks (the oracle for steerlab's hong_projection)."""
    r = r / r.norm()

    def f(h):
        return h + a * (h @ r).unsqueeze(-1) * r

    handles = []
    for block in model.layers:
        parts = block_parts(block)
        handles.append(block.register_forward_pre_hook(
            lambda mod, args, kw: ((f(args[0]), *args[1:]), kw) if args
            else (args, {**kw, "hidden_states": f(kw["hidden_states"])}), with_kwargs=True))
        for name in ("attn", "mlp"):
            handles.append(parts[name].register_forward_hook(
                lambda mod, args, out: (f(out[0]), *out[1:]) if isinstance(out, tuple)
                else f(out)))
    return handles


def test_hong_projection_matches_the_formula(model):
    gen = torch.Generator().manual_seed(4)
    vec = SteeringVector({l: torch.randn(model.d_model, generator=gen) for l in (0, 2)},
                         model.hf_id, model.d_model)
    a = 0.1
    plain = _logits(model)
    handles = _hong_by_hand(model, vec[2], a)
    try:
        ref = _logits(model)
    finally:
        for h in handles:
            h.remove()
    with hong_projection(model, vec, from_layer=2, coeff=a):
        got = _logits(model)
    assert (ref - plain).abs().max() > 1e-4
    torch.testing.assert_close(got, ref)
    assert no_hooks(model)
    assert HONG_SITES == ("resid_pre", "attn_out", "mlp_out")


def test_hong_projection_through_generation(tiny_llama):
    vec = SteeringVector({1: torch.randn(tiny_llama.d_model,
                                         generator=torch.Generator().manual_seed(5))},
                         tiny_llama.hf_id, tiny_llama.d_model)
    plain = generate(tiny_llama, PROMPTS[:2], max_new_tokens=6)
    with hong_projection(tiny_llama, vec, from_layer=1, coeff=3.0):
        steered = generate(tiny_llama, PROMPTS[:2], max_new_tokens=6)
    assert steered != plain
    assert no_hooks(tiny_llama)


def test_vector_site_is_honoured(tiny_llama):
    pos = cache_activations(tiny_llama, PROMPTS[:2], site="attn_out")
    neg = cache_activations(tiny_llama, PROMPTS[2:], site="attn_out")
    vec = diff_of_means(pos, neg)
    assert vec.site == "attn_out"
    with steer(tiny_llama, vec, coeff=1.0):
        own = _logits(tiny_llama)
    with steer(tiny_llama, vec, coeff=1.0, site="attn_out"):
        same = _logits(tiny_llama)
    torch.testing.assert_close(own, same)
    with pytest.raises(VectorMismatchError, match="made at site 'attn_out'.*any_site=True"):
        steer(tiny_llama, vec, site="resid_post").__enter__()
    with steer(tiny_llama, vec, site="resid_post", any_site=True):
        other = _logits(tiny_llama)
    assert (other - own).abs().max() > 1e-5
    post = cache_activations(tiny_llama, PROMPTS[:2])
    with pytest.raises(VectorMismatchError, match="different sites"):
        diff_of_means(pos, post)
    with pytest.raises(VectorMismatchError, match="reduction='none'"):
        a = cache_activations(tiny_llama, PROMPTS[:2], reduction="none")
        diff_of_means(a, a)
    assert no_hooks(tiny_llama)


def test_steering_on_one_backend_refuses_another(tiny_llama):
    v = torch.ones(tiny_llama.d_model)
    with steer(tiny_llama, v, layers=1, backend="hf"):
        with pytest.raises(BackendMismatchError, match="active on backend 'hf'.*backend='hf'"):
            _logits(tiny_llama, "nnsight")
        with pytest.raises(BackendMismatchError):
            generate(tiny_llama, PROMPTS[:1], max_new_tokens=2, backend="nnsight")
    _logits(tiny_llama, "nnsight")  # fine once the steering is off
    assert not any(tiny_llama._live_edits.values())


class Boom(Exception):
    pass


@pytest.mark.parametrize("backend", ["hf", "nnsight"])
@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_no_hook_survives_a_failing_edit_at_any_site(tiny_llama, backend, exc):
    be = tiny_llama.backend(backend)
    for site in be.sites:
        def fail(h):
            raise exc("edit failed")

        for when in ("all", "prompt"):
            handle = be.add_edit(LAYER, fail, when=when, site=site)
            try:
                with pytest.raises((exc, Exception)):
                    _logits(tiny_llama, backend)
            finally:
                handle.remove()
            assert no_hooks(tiny_llama), site
            assert not any(tiny_llama._live_edits.values())
    if backend == "nnsight":
        assert not be._edits


def test_prompt_edits_at_several_layers_all_see_the_prompt(tiny_llama):
    """One phase hook per backend, however many edits need it: with one per edit, the second
    counted the prompt's forward again and called it a decoding step."""
    be = tiny_llama.backend("hf")
    calls = {1: 0, 2: 0, 3: 0}

    def count(layer):
        def fn(h):
            calls[layer] += 1
        return fn

    handles = [be.add_edit(l, count(l), when="prompt", site=s)
               for l, s in ((1, "resid_post"), (2, "resid_mid"), (3, "resid_pre"))]
    try:
        generate(tiny_llama, PROMPTS[:2], max_new_tokens=4)
    finally:
        for h in handles:
            h.remove()
    assert calls == {1: 1, 2: 1, 3: 1}
    assert no_hooks(tiny_llama)
