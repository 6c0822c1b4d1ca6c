"""A receipt's totals (steerlab.receipt_totals): counts per (layer, site) and phase, the rows
filter of a batch of cells, sizes weighted by positions when batches are added up, and the
lines that say them. Built from hand-made firings, so every expected number is worked out
here, not by the code under test."""

from __future__ import annotations

import math

import torch

from steerlab.receipt_totals import add_up, collect, describe
from steerlab.receipts import EditInfo, Firing


def _edits() -> list[EditInfo]:
    return [EditInfo(0, 3, "resid_post", "all"), EditInfo(1, 5, "resid_post", "prompt")]


def _detail(norms: list[float], counts: list[int]) -> tuple[torch.Tensor, ...]:
    n = torch.tensor(norms)
    c = torch.tensor(counts, dtype=torch.float32)
    return n, 2 * n, torch.zeros_like(n), c  # asked twice the realised size, no projection


def test_counts_per_phase_and_the_rows_filter():
    firings = [
        Firing(0, "prompt", 0, edit=0, rows=2, positions=10, first=0, last=4,
               row_ids=torch.tensor([0, 1])),
        Firing(1, "decoding", 1, edit=0, rows=2, positions=2, first=5, last=5,
               row_ids=torch.tensor([0, 1])),
        Firing(0, "prompt", 0, edit=1, rows=2, positions=10, first=0, last=4,
               row_ids=torch.tensor([0, 1])),
    ]
    layer3, layer5 = collect(_edits(), firings, "counts")
    assert (layer3["prompt_forwards"], layer3["decoding_steps"]) == (1, 1)
    assert (layer3["prompt_positions"], layer3["decoding_positions"], layer3["rows"]) == \
        (10, 2, 2)
    assert (layer5["prompt_forwards"], layer5["decoding_steps"]) == (1, 0)
    assert math.isnan(layer3["mean_norm"])  # counts only: no sizes
    # one original row of the two: half of each firing's positions
    (mine,) = collect(_edits(), firings, "counts", rows=[1], layers=[3])
    assert (mine["rows"], mine["prompt_positions"], mine["decoding_positions"]) == (1, 5, 1)


def test_sizes_are_weighted_by_positions_within_and_across_batches():
    firing = Firing(0, "prompt", 0, edit=0, rows=2, positions=4, first=0, last=1,
                    per_row=_detail([3.0, 1.0], [3, 1]), row_ids=torch.tensor([0, 1]))
    (whole,) = collect(_edits()[:1], [firing], "detail")
    assert whole["mean_norm"] == 1.0 and whole["mean_asked"] == 2.0  # (3 + 1) / 4 positions
    (row0,) = collect(_edits()[:1], [firing], "detail", rows=[0])
    assert row0["positions"] == 3 and row0["mean_norm"] == 1.0
    other = dict(whole, mean_norm=4.0, mean_asked=8.0, positions=12, prompt_positions=12)
    (both,) = add_up([[whole], [other]])
    assert both["positions"] == 16 and both["prompt_forwards"] == 2
    assert both["mean_norm"] == (1.0 * 4 + 4.0 * 12) / 16


def test_describe_says_what_ran_and_what_never_did():
    firing = Firing(0, "prompt", 0, edit=0, rows=2, positions=4, first=0, last=1,
                    per_row=_detail([3.0, 1.0], [3, 1]))
    text = describe("steer", collect(_edits(), [firing], "detail"), forwards=7)
    ran, never = text.split("\n")
    assert ran.startswith("steer layer 3 resid_post at 1 prompt forward and 0 decoding steps")
    assert "4 prompt positions, 0 decoded" in ran and "mean change 1 (asked 2)" in ran
    assert never == "steer: layer 5 resid_post never ran (7 forwards seen)"
    assert describe("patch", []) == "patch: no edits"
