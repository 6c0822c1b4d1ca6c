"""The figure and table functions notebooks 01, 04 and 06 call, on small synthetic inputs (no
model is loaded): which rows and columns, values carried through, titles naming model and data."""

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from steerlab.activations import Activations
from steerlab.analysis import (
    CLUSTER_COLUMNS,
    MB,
    chat_model,
    cluster_view,
    cost_table,
    depth_layer,
    depth_pcas,
    lens_side_by_side,
    resource_table,
    separability_table,
    step_time_note,
)
from steerlab.cost import Measured
from steerlab.plots import (
    cluster_table_figure,
    cost_benefit_figure,
    logit_lens_figure,
    resource_table_figure,
)
from steerlab.train_journal import history

# ---- notebook 01 ------------------------------------------------------------------------------


def _acts(n_layers: int, n: int, shift: float, chat: bool, seed: int) -> Activations:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_layers, n, 16, generator=g)
    x[:, :, 0] += shift * torch.arange(n_layers)[:, None]  # separable from layer 1 on
    return Activations(x, tuple(range(n_layers)), "synthetic", "last",
                       tuple(f"h{seed}-{i}" for i in range(n)), chat=chat)


@pytest.fixture(scope="module")
def sets():
    return {"base": (_acts(5, 12, 3.0, False, 0), _acts(5, 12, -3.0, False, 1)),
            "chat": (_acts(20, 10, 3.0, True, 2), _acts(20, 10, -3.0, True, 3))}


def test_depth_layer():
    assert depth_layer(range(30)) == 12  # round(0.4 * 30)
    assert depth_layer(range(5)) == 2
    assert depth_layer([3, 5, 7], 1.0) == 7  # the last layer at most
    assert depth_layer([4, 8, 12, 16, 20], 0.4) == 12
    with pytest.raises(ValueError):
        depth_layer([])


def test_depth_pcas_and_chat_model(sets):
    pcas = depth_pcas(sets, frac=0.4)
    assert list(pcas) == ["base", "chat"]
    assert pcas["base"].layer == 2 and pcas["chat"].layer == 8
    assert pcas["chat"].pos.shape == (10, 2) and pcas["chat"].neg.shape == (10, 2)
    assert pcas["chat"].heldout_accuracy == 1.0  # layer 8: shifted by +-24 along one axis
    assert chat_model(sets) == "chat"
    assert chat_model({"a": sets["base"], "b": sets["base"]}) == "a"  # no chat model: the first


def test_separability_table(sets):
    t = separability_table(sets, n_points=10)
    assert list(t.columns) == ["model", "layer", "pca2d_heldout", "full_width_heldout"]
    assert t[t.model == "base"].layer.tolist() == [0, 1, 2, 3, 4]  # 5 layers: every one
    assert t[t.model == "chat"].layer.tolist() == list(range(0, 20, 2))  # 20 layers: every 2nd
    assert t[["pca2d_heldout", "full_width_heldout"]].stack().between(0, 1).all()
    deep = t[(t.model == "chat") & (t.layer >= 6)]
    assert (deep.pca2d_heldout == 1.0).all() and (deep.full_width_heldout == 1.0).all()


# ---- notebook 04 ------------------------------------------------------------------------------

FT = {"seconds_per_step": 2.0, "peak_rss_bytes": 900 * MB, "trainable_params": 1000,
      "optimizer_state_bytes": 8 * MB}


def _costs() -> pd.DataFrame:
    parts = [cost_table(name, Measured(0.5 * i, 300 * MB, 0), Measured(1.5 * i, 400 * MB, 0),
                        FT, n_extract_prompts=48, n_cell_items=24, finetune_batch=8)
             for i, name in enumerate(["model-a", "model-b"], start=1)]
    return pd.concat(parts, ignore_index=True)


def test_cost_table_rows_and_values():
    t = cost_table("m", Measured(3.0, 300 * MB, 0), Measured(7.0, 512 * MB, 0), FT,
                   n_extract_prompts=48, n_cell_items=24, finetune_batch=8)
    assert list(t.columns) == ["model", "what", "kind", "seconds", "peak_rss_MB",
                               "trainable_params", "optimizer_state_MB"]
    assert len(t) == 4 and (t.model == "m").all()
    assert t.kind.tolist() == ["measured", "measured", "measured", "extrapolated"]
    assert t.what.tolist() == ["extract vector (48 prompts, all layers)",
                               "one sweep cell (24 items, steered)",
                               "full fine-tuning step (batch 8, AdamW)",
                               "full fine-tuning, 1 epoch of GSM8K train (7,473 problems)"]
    np.testing.assert_allclose(t.seconds, [3.0, 7.0, 2.0, 2.0 * 7473 / 8])
    np.testing.assert_allclose(t.peak_rss_MB, [300, 512, 900, 900])
    assert t.trainable_params.tolist() == [0, 0, 1000, 1000]
    assert t.optimizer_state_MB.tolist() == [0, 0, 8, 8]


def test_cost_benefit_figure():
    costs = _costs()
    fig = cost_benefit_figure(costs, data="48 shipped prompts")
    assert isinstance(fig, go.Figure)
    assert (fig.layout.width, fig.layout.height) == (1100, 420)
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis2.type == "log"
    assert fig.layout.xaxis.title.text == "seconds"
    assert {tr.name for tr in fig.data} == {"measured", "extrapolated"}
    assert all(tr.orientation == "h" for tr in fig.data)
    # one panel per model, and every bar carried through
    assert sorted(a.text for a in fig.layout.annotations) == ["model=model-a", "model=model-b"]
    assert sorted(x for tr in fig.data for x in tr.x) == sorted(costs.seconds)
    title = fig.layout.title.text
    assert "model-a, model-b" in title and "48 shipped prompts" in title
    assert "Seconds on this machine" in title


# ---- notebook 06 ------------------------------------------------------------------------------


def _lens(layer: int = 3, k: int = 3) -> pd.DataFrame:
    rows = [{"layer": layer, "side": side, "rank": r, "token_id": 10 * r + (side == "bottom"),
             "token": f"{side[0]}{r}", "cosine": (0.5 - 0.1 * r) * (1 if side == "top" else -1)}
            for side in ("bottom", "top") for r in range(k, 0, -1)]  # shuffled order on purpose
    return pd.DataFrame(rows)


def test_lens_side_by_side():
    t = lens_side_by_side(_lens(k=3))
    assert list(t.columns) == ["rank", "top token", "cos", "bottom token", "cos "]
    assert t["rank"].tolist() == [1, 2, 3]
    assert t["top token"].tolist() == ["'t1'", "'t2'", "'t3'"]
    assert t["bottom token"].tolist() == ["'b1'", "'b2'", "'b3'"]
    np.testing.assert_allclose(t["cos"], [0.4, 0.3, 0.2])
    np.testing.assert_allclose(t["cos "], [-0.4, -0.3, -0.2])
    with pytest.raises(ValueError, match="One layer"):
        lens_side_by_side(pd.concat([_lens(1), _lens(2)]))


def test_logit_lens_figure():
    fig = logit_lens_figure(_lens(layer=7, k=4), "tiny-model", data="trained on toy sums")
    table = fig.data[0]
    assert isinstance(table, go.Table) and fig.layout.width == 760
    assert list(table.header.values) == ["rank", "top token", "cos", "bottom token", "cos "]
    assert len(table.cells.values[0]) == 4 and list(table.cells.values[1])[0] == "'t1'"
    title = fig.layout.title.text
    assert "layer 7" in title and "tiny-model" in title and "trained on toy sums" in title


def _clusters() -> pd.DataFrame:
    return pd.DataFrame({"layer": [2, 2, 5], "cluster": [0, 1, 0], "size": [7, 5, 12],
                         "representative": ["a, b", "c, d", "e, f"], "tokens": ["x", "y", "z"],
                         "mean_score": [0.12345, 0.2, 0.3], "cohesion": [0.55555, 0.6, 0.7]})


def test_cluster_view_and_figure():
    view = cluster_view(_clusters())
    assert list(view.columns) == CLUSTER_COLUMNS and "tokens" not in view
    assert view.layer.tolist() == [2, 2, 5] and view["size"].tolist() == [7, 5, 12]
    fig = cluster_table_figure(_clusters(), "tiny-model", data="toy sums, recorded run", k=12)
    table = fig.data[0]
    assert list(table.header.values) == CLUSTER_COLUMNS
    assert list(table.cells.values[4]) == ["0.123", "0.2", "0.3"]  # rounded to 3 decimals
    title = fig.layout.title.text
    assert "top-12" in title and "tiny-model" in title and "toy sums, recorded run" in title


def _step_costs(method: str, trainable: int) -> dict:
    return {"method": method, "trainable_params": trainable, "total_params": 1_000_000,
            "optimizer_state_bytes": 2 * 4 * trainable, "seconds_per_step": 0.5,
            "peak_rss_bytes": 600 * MB, "tokens_per_step": 80}


def test_resource_table():
    t = resource_table([_step_costs("vectors", 100), _step_costs("full", 1_000_000)])
    assert list(t.columns) == ["method", "trainable params", "% of model",
                               "optimizer state (MB)", "s / step (8 prompts)", "peak RSS (MB)"]
    assert t.method.tolist() == ["vectors", "full", "vectors (paper: Llama-3.1-8B)"]
    assert t["trainable params"].tolist() == [100, 1_000_000, 32 * 4096]
    np.testing.assert_allclose(t["% of model"], [0.01, 100, 100 * 131072 / 8.03e9])
    np.testing.assert_allclose(t["optimizer state (MB)"], [800 / MB, 8e6 / MB, 1.0])
    assert t["peak RSS (MB)"].tolist()[:2] == [600, 600]
    assert math.isnan(t["s / step (8 prompts)"].iloc[2])  # the paper's times are not known here
    no_paper = resource_table([_step_costs("lora", 10)], batch_size=4, paper=False)
    assert len(no_paper) == 1 and "s / step (4 prompts)" in no_paper


def test_resource_table_figure():
    t = resource_table([_step_costs("vectors", 100)])
    fig = resource_table_figure(t, "tiny-model", dtype=torch.bfloat16, data="batch of 8 prompts")
    assert list(fig.data[0].header.values) == list(t.columns)
    assert len(fig.data[0].cells.values[0]) == 2
    title = fig.layout.title.text
    assert "tiny-model (bf16)" in title and "batch of 8 prompts" in title
    assert "paper's model" in title
    assert "(fp32)" in resource_table_figure(t, "m", dtype=torch.float32).layout.title.text


def test_step_time_note_reads_a_journal_cut_short(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "journal.jsonl").write_text('{"step": 1, "seconds": 10.0}\n'
                                       '{"step": 2, "seconds": 12.0}\n'
                                       '{"step": 3, "seconds": 20.0}\n'
                                       '{"step": 4, "seco')  # a write cut short by a kill
    note = step_time_note(history(run))
    assert "12.0 s median over 3 steps" in note
    assert "No RLOO step times" in step_time_note(history(tmp_path / "missing"))
    assert "No RLOO step times" in step_time_note(pd.DataFrame({"step": [1]}))
