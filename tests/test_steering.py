import pytest
import torch
from conftest import PROMPTS, no_hooks

from steerlab.errors import InvalidVectorError, LayerError, OptionError, VectorMismatchError
from steerlab.inference import forward_logits, generate
from steerlab.steering import add_steering, steer
from steerlab.vectors import SteeringVector


def _vec(model, layers=(1,), seed=0) -> SteeringVector:
    gen = torch.Generator().manual_seed(seed)
    return SteeringVector({l: torch.randn(model.d_model, generator=gen) for l in layers},
                          model.hf_id, model.d_model)


def _outputs(model, layer, run):
    """Outputs of block ``layer`` during ``run()``, as seen after any steering hook (forward
    hooks run in registration order, and this one is registered last)."""
    seen = []
    handle = model.layers[layer].register_forward_hook(
        lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    try:
        run()
    finally:
        handle.remove()
    return seen


def test_add_is_exact(tiny):
    vec = _vec(tiny, layers=(1,))
    (plain,) = _outputs(tiny, 1, lambda: forward_logits(tiny, PROMPTS[:2]))
    with steer(tiny, vec, coeff=3.0):
        (steered,) = _outputs(tiny, 1, lambda: forward_logits(tiny, PROMPTS[:2]))
    assert torch.equal(steered, plain + 3.0 * vec[1].to(plain.dtype))
    assert no_hooks(tiny)


def test_coeff_zero_is_bit_identical(tiny):
    base = forward_logits(tiny, PROMPTS)
    with steer(tiny, _vec(tiny, layers=(0, 2)), coeff=0.0):
        steered = forward_logits(tiny, PROMPTS)
    assert torch.equal(base, steered)
    with steer(tiny, _vec(tiny, layers=(0, 2)), coeff=2.0):
        assert not torch.equal(base, forward_logits(tiny, PROMPTS))


def test_project_and_ablate(tiny_llama):
    vec = _vec(tiny_llama, layers=(2,))
    unit = vec[2] / vec[2].norm()
    run = lambda: forward_logits(tiny_llama, PROMPTS[:1])  # noqa: E731
    (plain,) = _outputs(tiny_llama, 2, run)
    with steer(tiny_llama, vec, mode="project", coeff=2.0):
        (projected,) = _outputs(tiny_llama, 2, run)
    with steer(tiny_llama, vec, mode="ablate"):
        (ablated,) = _outputs(tiny_llama, 2, run)
    comp = (plain @ unit).unsqueeze(-1) * unit
    torch.testing.assert_close(projected, plain + 2.0 * comp)
    torch.testing.assert_close(ablated, plain - comp)
    torch.testing.assert_close(ablated @ unit, torch.zeros_like(ablated @ unit), atol=1e-5,
                               rtol=0)


def test_positions_in_generation(tiny_attn):
    """prompt: only the forward that reads the prompt is changed; generated: only the
    decoding steps after it; all: both. A hook registered before the steering hook sees each
    block output unsteered, one registered after sees it steered: their difference is what
    steering added at each forward of the generation."""
    vec = _vec(tiny_attn, layers=(1,))
    add = 5.0 * vec[1]
    expected = {"all": [True, True, True], "prompt": [True, False, False],
                "generated": [False, True, True]}
    for positions, steered in expected.items():
        before: list = []
        hook = tiny_attn.layers[1].register_forward_hook(
            lambda m, a, o, store=before: store.append(o[0] if isinstance(o, tuple) else o))
        try:
            with steer(tiny_attn, vec, coeff=5.0, positions=positions):
                after = _outputs(tiny_attn, 1, lambda: generate(tiny_attn, PROMPTS[:1],
                                                                max_new_tokens=3))
        finally:
            hook.remove()
        assert len(after) == len(before) == 3
        for step, (b, a) in enumerate(zip(before, after, strict=True)):
            diff = (a - b).reshape(-1, a.shape[-1])
            want = add if steered[step] else torch.zeros_like(add)
            torch.testing.assert_close(diff, want.expand_as(diff), atol=1e-5, rtol=1e-5,
                                       msg=f"{positions}, forward {step}")
    assert no_hooks(tiny_attn)


def test_steering_changes_generation_on_every_arch(tiny):
    vec = _vec(tiny, layers=(1, 2))
    plain = generate(tiny, PROMPTS[:2], max_new_tokens=6)
    with steer(tiny, vec, coeff=50.0):
        steered = generate(tiny, PROMPTS[:2], max_new_tokens=6)
    assert plain != steered
    assert generate(tiny, PROMPTS[:2], max_new_tokens=6) == plain
    assert no_hooks(tiny)


def test_hooks_removed_on_exception(tiny_llama):
    with pytest.raises(RuntimeError, match="boom"), steer(tiny_llama, _vec(tiny_llama), coeff=1.0,
                                                          positions="prompt"):
        assert not no_hooks(tiny_llama)
        raise RuntimeError("boom")
    assert no_hooks(tiny_llama)


def test_hooks_removed_on_keyboard_interrupt(tiny_llama):
    with pytest.raises(KeyboardInterrupt), steer(tiny_llama, _vec(tiny_llama, (0, 1, 2))):
        raise KeyboardInterrupt
    assert no_hooks(tiny_llama)


def test_hooks_removed_when_registration_fails_half_way(tiny_llama, monkeypatch):
    backend = tiny_llama.backend("hf")
    real = backend.add_edit
    calls = {"n": 0}

    def flaky(layer, fn, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("registration failed")
        return real(layer, fn, **kw)

    monkeypatch.setattr(backend, "add_edit", flaky)
    with pytest.raises(RuntimeError, match="registration failed"):
        add_steering(tiny_llama, _vec(tiny_llama, (0, 1, 2, 3)), positions="generated")
    assert calls["n"] == 3
    assert no_hooks(tiny_llama)


def test_handle_form(tiny_llama):
    handle = add_steering(tiny_llama, _vec(tiny_llama), coeff=2.0)
    assert handle.active and not no_hooks(tiny_llama)
    handle.remove()
    handle.remove()  # idempotent
    assert no_hooks(tiny_llama)


def test_bad_arguments_fail_early(tiny_llama):
    vec = _vec(tiny_llama)
    with pytest.raises(OptionError, match="position mode 'middle'"):
        add_steering(tiny_llama, vec, positions="middle")
    with pytest.raises(OptionError, match="steering mode"):
        add_steering(tiny_llama, vec, mode="multiply")
    with pytest.raises(OptionError, match="finite"):
        add_steering(tiny_llama, vec, coeff=float("nan"))
    with pytest.raises(LayerError, match="out of range"):
        add_steering(tiny_llama, vec, layers=[7])
    with pytest.raises(LayerError, match="has no layer 3"):
        add_steering(tiny_llama, vec, layers=[3])
    with pytest.raises(VectorMismatchError, match="needs \\(32,\\)"):
        add_steering(tiny_llama, torch.ones(16), layers=[1])
    with pytest.raises(InvalidVectorError, match="NaN"):
        add_steering(tiny_llama, torch.full((32,), float("nan")), layers=[1])
    with pytest.raises(OptionError, match="needs layers"):
        add_steering(tiny_llama, torch.ones(32))
    other = SteeringVector({1: torch.ones(32)}, "someone/else", 32)
    with pytest.raises(VectorMismatchError, match="made for 'someone/else'"):
        add_steering(tiny_llama, other)
    assert no_hooks(tiny_llama)


def test_add_edits_is_one_registration_with_rollback(tiny_llama, monkeypatch):
    """Backend.add_edits, the one way several edits are registered (steering, caching,
    attribution, learned vectors, patching): all or none, removed at the end of a with block
    and counted as live edits while on."""
    be = tiny_llama.backend("hf")
    seen = []
    edits = [(0, lambda h: seen.append(0)), (1, lambda h: seen.append(1), {"site": "attn_out"}),
             (2, lambda h: seen.append(2), {"when": "prompt", "site": "resid_pre"})]
    with be.add_edits(edits) as handle:
        assert handle.active and tiny_llama._live_edits["hf"] == 3
        be.forward(tiny_llama.encode(["ab"], chat=False))
    assert sorted(seen) == [0, 1, 2] and not handle.active
    assert no_hooks(tiny_llama) and tiny_llama._live_edits["hf"] == 0
    real, calls = be.add_edit, []

    def flaky(layer, fn, **kw):
        calls.append(layer)
        if len(calls) == 3:
            raise RuntimeError("registration failed")
        return real(layer, fn, **kw)

    monkeypatch.setattr(be, "add_edit", flaky)
    with pytest.raises(RuntimeError, match="registration failed"):
        be.add_edits(edits)
    assert calls == [0, 1, 2] and no_hooks(tiny_llama) and tiny_llama._live_edits["hf"] == 0
