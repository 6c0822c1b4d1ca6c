"""Kind patching scored on generated answers (steerlab.kinds_gen): every cell's completions
against the independent oracle (plain transformers, a forward hook writing the source state at
the unpadded prompt's last position, no cache), the journal's resume, Holm, bad input."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import no_hooks, test_device
from oracle import block_output, greedy_at, lively_hf

from steerlab import _io
from steerlab.errors import OptionError
from steerlab.evaluation import gen_prompt
from steerlab.kinds_gen import (
    GEN_KIND_CONDITIONS,
    gen_kind_cells,
    kind_patching_gen,
    kind_patching_gen_summary,
    plan_kind_patching_gen,
)
from steerlab.models import model_from_hf
from steerlab.sizes import char_tokenizer
from steerlab.tasks import Item

MAX_NEW = 6


@pytest.fixture(scope="module")
def lively():
    return model_from_hf(lively_hf("llama", seed=1), char_tokenizer(), name="lively-llama",
                         device=test_device())


def _ids(model, question):
    return model.tokenizer(gen_prompt(Item("", question, ""), (), False),
                           add_special_tokens=True)["input_ids"]


def test_every_cell_equals_the_oracle_item_by_item(lively):
    m = lively
    plan = plan_kind_patching_gen(m, layers=[1, 2], n=5, n_source=7, batch_size=3,
                                  max_new_tokens=MAX_NEW)
    cells = [(l, c) for l in plan.layers for c in GEN_KIND_CONDITIONS]
    texts = set()
    for start in plan.starts:
        got = gen_kind_cells(plan, start, cells)
        batch = plan.items[start:start + plan.batch_size]
        for layer, cond in cells:
            outs = got[f"{layer}:{cond}"]["completion"]
            for r, it in enumerate(batch):
                i = start + r
                if cond in plan.pick:
                    src = plan.sources[cond][int(plan.pick[cond][i])]
                    value, replace = block_output(m.hf, _ids(m, src), layer)[-1], True
                else:
                    value, replace = plan.vectors[cond][layer], False
                toks = greedy_at(m.hf, _ids(m, it.question), MAX_NEW, layer, value, replace)
                want = m.tokenizer.decode(toks, skip_special_tokens=True)
                assert outs[r] == want, (layer, cond, i)
                texts.add(want)
            assert len(got[f"{layer}:{cond}"]["norm"]) == len(batch)
    assert len(texts) >= 3  # the edits and prompts change the text: a mix-up would show
    assert no_hooks(m)


def test_the_journal_resumes_and_the_table_carries_holm(lively, tmp_path):
    m = lively
    out = tmp_path / "gen.jsonl"
    kw = {"layers": [1, 2], "n": 4, "n_source": 4, "batch_size": 2, "max_new_tokens": 3}
    first = kind_patching_gen(m, out=out, **kw)
    rows = _io.read_jsonl(out)
    assert len(rows) == 2
    _io.write_jsonl(out, rows[:1])  # as if killed after the first batch
    again = kind_patching_gen(m, out=out, **kw)
    assert len(_io.read_jsonl(out)) == 2  # the missing batch only
    assert again.drop(columns="correct").equals(first.drop(columns="correct"))
    assert list(first["condition"][:6]) == list(GEN_KIND_CONDITIONS)
    assert (first["p_holm"] >= first["p_mcnemar"] - 1e-12).all()
    summary = kind_patching_gen_summary(first)
    assert set(summary["comparison"]) >= {"patch_reasoning - patch_same",
                                          "diff_means - random"}
    assert first.attrs["n"] == 4 and first.attrs["chance"] is None


def test_bad_input_is_refused_before_any_work(lively):
    with pytest.raises(OptionError, match="Unknown target"):
        plan_kind_patching_gen(lively, target="memorisation-mc")
    with pytest.raises(OptionError, match="max_new_tokens"):
        plan_kind_patching_gen(lively, layers=[1], n=2, max_new_tokens=0)
    with pytest.raises(OptionError, match="batch_size"):
        plan_kind_patching_gen(lively, layers=[1], n=2, batch_size=0)


def test_sizes_of_the_directions_match_the_reasoning_patches(lively):
    plan = plan_kind_patching_gen(lively, layers=[2], n=4, n_source=5, max_new_tokens=2)
    sizes = {c: float(plan.vectors[c][2].norm()) for c in ("diff_means", "random", "shuffled")}
    assert max(sizes.values()) == pytest.approx(min(sizes.values()), rel=1e-5)
    got = gen_kind_cells(dataclasses.replace(plan), 0, [(2, "patch_reasoning")], base=False)
    mean_patch = sum(got["2:patch_reasoning"]["norm"]) / 4
    assert sizes["diff_means"] == pytest.approx(mean_patch, rel=1e-3)
    assert torch.isfinite(plan.vectors["random"][2]).all()
