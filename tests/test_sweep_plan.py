"""A sweep's config, its plan on a model and its grid (:mod:`steerlab.sweep_plan`): all
decided and checked before any model work."""

import pytest

from steerlab.errors import LayerError, OptionError
from steerlab.sweep_plan import SweepConfig, as_config, default_shots, grid, plan_sweep
from steerlab.tasks import get_task


@pytest.mark.parametrize("field,values", [("coeffs", [0.5, 0.2, 0.5]),
                                          ("methods", ["diff_means", "random", "diff_means"])])
def test_a_cell_named_twice_is_refused_before_any_work(field, values):
    """Two rows of one cell would each enter Holm's family: refused when the config is made."""
    kw = {"coeffs": [0.5], field: values}
    with pytest.raises(OptionError, match=f"{field} names .* more than once"):
        SweepConfig("reasoning-mc", [1], **kw)


def test_bad_options_fail_when_the_config_is_made():
    with pytest.raises(OptionError, match="method"):
        SweepConfig("reasoning-mc", [1], [0.1], methods=("diff_means", "nope"))
    with pytest.raises(OptionError, match="scale"):
        SweepConfig("reasoning-mc", [1], [0.1], scale="huge")
    with pytest.raises(OptionError, match="not both"):
        as_config(SweepConfig("reasoning-mc", [1], [0.1]), layers=[2])
    with pytest.raises(OptionError, match="needs layers and coeffs"):
        as_config("reasoning-mc", layers=[1])


def test_plan_checks_layers_keys_the_dtype_and_lists_the_grid(tiny_llama):
    cfg = SweepConfig("memorisation-mc", [3, 1], [-0.2, 0.2], ("diff_means", "random"), n=5)
    plan = plan_sweep(tiny_llama, cfg)
    assert plan.layers == [1, 3] and plan.key.layers == (1, 3) and len(plan.items) == 5
    assert plan.key.dtype == "float32" and plan.key.mode == "add"
    assert len(grid(plan)) == 1 + 2 * 2 * 2 and ("baseline", -1, 0.0) in grid(plan)
    other = plan_sweep(tiny_llama, SweepConfig("memorisation-mc", [1, 3], [0.2], n=5))
    assert other.key.key() == plan.key.key()  # coefficients and methods are not in the key
    ablate = plan_sweep(tiny_llama, SweepConfig("memorisation-mc", [1], [0.2], n=5,
                                                mode="ablate"))
    assert ablate.coeffs == [1.0] and ablate.key.key() != plan.key.key()
    with pytest.raises(LayerError, match="valid layers are 0..3"):
        plan_sweep(tiny_llama, SweepConfig("memorisation-mc", [4], [0.2], n=5))


def test_few_shot_examples_follow_the_chat_rule(tiny_llama, monkeypatch):
    """Shots on a generative task read without a chat template; a base model never gets one,
    so asking for it changes nothing; a chat model's template frames the question instead."""
    gen, mc = get_task("arithmetic"), get_task("memorisation-mc")
    assert len(default_shots(tiny_llama, gen, chat=False)) == 3
    assert default_shots(tiny_llama, gen, chat=True) == default_shots(tiny_llama, gen)
    assert default_shots(tiny_llama, mc, chat=False) == []
    monkeypatch.setattr(tiny_llama, "is_chat", True)
    assert default_shots(tiny_llama, gen) == []
    assert len(default_shots(tiny_llama, gen, chat=False)) == 3
