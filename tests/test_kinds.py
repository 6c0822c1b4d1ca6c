"""kind_patching, the seed's missing controls, against the definition written out by hand
(raw forward hooks, one option sequence per forward), across backends; bad input and hooks."""

import numpy as np
import pytest
import torch
from conftest import no_hooks


def _by_hand_choices(model, items, layer, edit):
    """Each item's choice under cloze scoring, one option sequence per forward, with a raw
    forward hook on block ``layer`` calling ``edit(item_index, h_last) -> new h_last`` at the
    prompt's last token: the definition written out without steerlab's batching or replay."""
    from steerlab.evaluation import cloze_prompt

    block = model.hf.model.layers[layer]
    out = []
    for i, it in enumerate(items):
        p_ids = model.tokenizer(cloze_prompt(it, False))["input_ids"]
        at = len(p_ids) - 1
        scores = []
        for o in it.options:
            o_ids = model.tokenizer.encode(" " + o, add_special_tokens=False)
            ids = torch.tensor([p_ids + o_ids])

            def hook(_m, _a, output, i=i, at=at):
                h = output[0] if isinstance(output, tuple) else output
                h = h.clone()
                h[0, at] = edit(i, h[0, at])
                return (h, *output[1:]) if isinstance(output, tuple) else h

            handle = block.register_forward_hook(hook)
            try:
                with torch.no_grad():
                    logp = torch.log_softmax(model.hf(ids).logits[0].float(), -1)
            finally:
                handle.remove()
            a = len(p_ids)
            scores.append(float(logp[range(a - 1, a - 1 + len(o_ids)), o_ids].mean()))
        out.append(it.options[int(np.argmax(scores))] == it.answer)
    return out


def _last_state(model, prompt, layer):
    with torch.no_grad():
        ids = torch.tensor([model.tokenizer(prompt)["input_ids"]])
        return model.hf(ids, output_hidden_states=True).hidden_states[layer + 1][0, -1]


@pytest.mark.parametrize("target", ["memorisation-mc", "reasoning-mc"])
def test_kind_patching_equals_the_definition_by_hand(tiny_llama, target):
    from steerlab.evaluation import cloze_prompt
    from steerlab.kinds import KIND_CONDITIONS, kind_patching, kind_patching_summary
    from steerlab.tasks import get_task

    layers = [1, 2]
    frame = kind_patching(tiny_llama, target, layers=layers, n=6, n_source=10, seed=1)
    assert no_hooks(tiny_llama)
    assert len(frame) == len(layers) * len(KIND_CONDITIONS)
    items = get_task(target).items(6, 1)
    assert frame.attrs["item_ids"] == [it.id for it in items]
    src = frame.attrs["sources"]
    for layer in layers:
        rows = frame[frame.layer == layer].set_index("condition")
        patched = [_last_state(tiny_llama, cloze_prompt(q, False), layer)
                   for q in src["patch_other"]]
        got = _by_hand_choices(tiny_llama, items, layer,
                               lambda i, h, patched=patched: patched[i])
        assert rows.loc["patch_other", "correct"] == got
        # the size-matched directions change the residual exactly as much as the patches
        for c in ("diff_means", "random", "shuffled"):
            assert rows.loc[c, "edit_norm"] == pytest.approx(rows.loc["patch_other", "edit_norm"],
                                                             rel=1e-4)
        assert rows.loc["patch_same", "edit_norm"] > 0
    summary = kind_patching_summary(frame)
    assert len(summary) == 4 * len(layers)
    from steerlab.control_plots import kind_patching_figure
    from steerlab.kinds import kind_patching_verdict

    text = kind_patching_verdict(frame)
    assert target in text and "patch_other - patch_same" in text
    fig = kind_patching_figure([frame])
    assert len(fig.data) == len(KIND_CONDITIONS)
    assert list(fig.data[0].customdata) == layers  # hover shows the real layer (x is dodged)
    assert set(summary.comparison) == {"patch_other - patch_same", "patch_other - diff_means",
                                       "diff_means - random", "diff_means - shuffled"}


def test_kind_patching_backends_agree_and_mean_patch_is_the_difference_of_means(tiny_llama):
    from steerlab.evaluation import cloze_prompt
    from steerlab.kinds import kind_patching
    from steerlab.tasks import extraction_prompts, get_task

    kw = {"layers": [2], "n": 5, "n_source": 8}
    fast = kind_patching(tiny_llama, "memorisation-mc", **kw)  # hf: the blocks before replayed
    plain = kind_patching(tiny_llama, "memorisation-mc", backend="nnsight", **kw)
    assert fast["correct"].tolist() == plain["correct"].tolist()
    np.testing.assert_allclose(fast.edit_norm, plain.edit_norm, rtol=1e-4)
    reason, memo = extraction_prompts("shipped", 8)

    def centre(qs):
        return torch.stack([_last_state(tiny_llama, cloze_prompt(q, False), 2) for q in qs]).mean(0)

    mean = centre(reason) - centre(memo)
    items = get_task("memorisation-mc").items(5, 0)
    got = _by_hand_choices(tiny_llama, items, 2, lambda i, h: h + mean)
    assert fast.set_index("condition").loc["mean_patch", "correct"] == got
    assert fast.set_index("condition").loc["mean_patch", "edit_norm"] == pytest.approx(
        float(mean.norm()), rel=1e-4)


def test_kind_patching_bad_input_and_no_hooks_after_a_failure(tiny_llama, monkeypatch):
    from steerlab.errors import OptionError
    from steerlab.evaluation import MCBatch
    from steerlab.kinds import kind_patching

    with pytest.raises(OptionError, match="memorisation-mc"):
        kind_patching(tiny_llama, "gsm8k", layers=[1], n=4)
    calls = {"n": 0}
    real = MCBatch.choose

    def flaky(self, logits):
        calls["n"] += 1
        if calls["n"] == 3:  # half-way: after the baseline and one condition
            raise RuntimeError("boom")
        return real(self, logits)

    monkeypatch.setattr(MCBatch, "choose", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        kind_patching(tiny_llama, "memorisation-mc", layers=[1, 2], n=4, n_source=6)
    assert no_hooks(tiny_llama)
