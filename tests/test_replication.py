"""The seed's protocol (best layer picked on the evaluation items) and the honest one (dev
pick, one test evaluation), on a tiny model and a shipped task."""

import pandas as pd
import pytest
from conftest import no_hooks

from steerlab.errors import OptionError
from steerlab.evaluation import evaluate
from steerlab.replication import (
    answer_letters,
    best_layer_gains,
    gain_distribution,
    gold_letters,
    honest_protocol,
    protocol_config,
    seed_protocol,
    split_items,
)
from steerlab.sweep_journal import answered
from steerlab.sweeps import sweep
from steerlab.tasks import LETTERS, get_task

TASK = "reasoning-mc"


def _row(method, layer, acc, draw=0, base=0.30):
    return {"method": method, "layer": layer, "coeff": 0.0 if method == "baseline" else 0.1,
            "accuracy": acc, "baseline": base, "delta": acc - base, "delta_low": -0.1,
            "delta_high": 0.1, "p_mcnemar": 0.5, "p_holm": 1.0, "n": 100, "draw": draw}


def test_best_layer_gain_is_the_protocols_own_pick():
    table = pd.DataFrame([_row("baseline", -1, 0.30), _row("diff_means", 3, 0.31),
                          _row("diff_means", 4, 0.36), _row("random", 3, 0.34),
                          _row("random", 4, 0.29), _row("baseline", -1, 0.20, draw=1, base=0.2),
                          _row("random", 3, 0.27, draw=1, base=0.2)])
    gains = best_layer_gains(table).set_index(["method", "draw"])
    assert gains.loc[("diff_means", 0), "best_layer"] == 4
    assert gains.loc[("diff_means", 0), "gain"] == pytest.approx(0.06)
    assert gains.loc[("random", 0), "gain"] == pytest.approx(0.04)
    assert gains.loc[("random", 1), "gain"] == pytest.approx(0.07)
    dist = gain_distribution(best_layer_gains(table)).set_index("method")
    assert dist.loc["random", "draws"] == 2 and dist.loc["random", "positive"] == 1.0


def test_seed_protocol_draws_are_resumable_sweeps(tiny_llama, tmp_path):
    kw = {"task": TASK, "n": 6, "layers": [1, 2], "coeffs": [0.1], "batch_size": 8}
    table = seed_protocol(tiny_llama, draws=2, out=tmp_path, progress=False, **kw)
    assert no_hooks(tiny_llama)
    assert sorted(table["draw"].unique()) == [0, 1]
    assert len(table) == 2 * (1 + 3 * 2)  # baseline + 3 methods x 2 layers, per draw
    assert (tmp_path / "draw0.parquet").exists() and (tmp_path / "draw1.parquet").exists()
    cfg = protocol_config(tiny_llama, seed=1, **kw)
    assert (cfg.mode, cfg.scope, cfg.scoring, cfg.scale) == ("project", "all", "letter", "raw")
    again = seed_protocol(tiny_llama, draws=2, out=tmp_path, progress=False, **kw)  # resumed
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), again.drop(columns="seconds"))
    gains = best_layer_gains(table)
    assert set(gains["method"]) == {"diff_means", "random", "shuffled"} and len(gains) == 6
    # the answered letters: the journal's are the evaluation's own picks, restored on resume
    items = get_task(TASK).items(6, 0)
    base = evaluate(tiny_llama, get_task(TASK), items=items, scoring="letter", progress=False)
    first = table[(table["draw"] == 0) & (table["method"] == "baseline")]
    assert first["answered"].iloc[0] == answered(items, base.predictions)
    letters = answer_letters(table, gold_letters(2, 6, TASK))
    assert list(letters["condition"][:5]) == ["gold", "unsteered", "diff_means best",
                                              "random best", "shuffled best"]
    gold = letters.iloc[0]
    assert gold["n"] == 6 and gold["top_share"] == max(
        "".join(LETTERS[it.answer_index] for it in items).count(c) for c in LETTERS) / 6
    steered = table[(table["draw"] == 0) & (table["method"] == "random")]
    pick = best_layer_gains(table).set_index(["method", "draw"]).loc[("random", 0)]
    cell = steered[steered["layer"] == pick["best_layer"]]["answered"].iloc[0]
    row = letters[(letters["draw"] == 0) & (letters["condition"] == "random best")].iloc[0]
    assert row["changed"] == sum(a != b for a, b in zip(cell, first["answered"].iloc[0],
                                                        strict=True)) / 6
    shares = letters[[c for c in letters.columns if c in LETTERS]]
    assert (shares.sum(axis=1) - 1).abs().max() < 1e-9
    with pytest.raises(OptionError, match="no answered letters"):
        answer_letters(table.drop(columns="answered"))


def test_split_items_is_disjoint_and_checked():
    dev, test = split_items(TASK, 20, 30, seed=0)
    a, b = {it.id for it in dev.items()}, {it.id for it in test.items()}
    assert len(a) == 20 and len(b) == 30 and not a & b
    assert dev.name == f"{TASK}[dev]" and test.name == f"{TASK}[test]"
    assert {it.id for it in split_items(TASK, 20, 30, seed=0)[0].items()} == a
    with pytest.raises(OptionError, match="cannot split"):
        split_items(TASK, 10**6, 1)


def test_protocol_options_are_checked_early(tiny_llama):
    with pytest.raises(OptionError, match="batch_sise"):
        protocol_config(tiny_llama, task=TASK, batch_sise=8)
    with pytest.raises(OptionError, match="mode"):
        protocol_config(tiny_llama, task=TASK, mode="add")


def test_honest_protocol_tests_the_dev_pick_once_on_disjoint_items(tiny_llama):
    out = honest_protocol(tiny_llama, n_dev=6, n_test=8, task=TASK, layers=[1, 2],
                          coeffs=[-0.1, 0.1], progress=False)
    assert no_hooks(tiny_llama)
    pick, test = out["pick"], out["test"]
    assert pick["layer"] in (1, 2) and pick["coeff"] in (-0.1, 0.1)
    assert test["n"] == 8 and "p_holm" in out["dev"].columns
    # the test number is what a sweep of the test items gives at the picked cell
    _, test_task = split_items(TASK, 6, 8, seed=0)
    check = sweep(tiny_llama, protocol_config(tiny_llama, n=None, task=test_task,
                                              layers=[pick["layer"]], coeffs=[pick["coeff"]],
                                              methods=["diff_means"]), progress=False)
    cell = check[check.method == "diff_means"].iloc[0]
    assert cell.accuracy == pytest.approx(test["accuracy"])
    assert cell.baseline == pytest.approx(test["baseline"])
    # the letters on test are those of the same cell's answers
    said = cell["answered"]
    top = out["test_letters"]["steered"]["top"]
    assert top == max(LETTERS, key=said.count)
    assert out["test_letters"]["steered"]["top_share"] == said.count(top) / 8
    gold = "".join(LETTERS[it.answer_index] for it in test_task.items())
    assert out["test_letters"]["steered"]["gold_share_of_top"] == gold.count(top) / 8
    assert list(out["dev_letters"]["condition"][:2]) == ["gold", "unsteered"]


def test_seed_protocol_generative_scoring_extracts_letters_from_the_text(tiny_llama, tmp_path):
    """scoring="generate": each item's greedy text under the steering is kept in the journal,
    its answered letter is the one extract_letter finds there ("-" for none), correctness
    follows that letter, and the greedy loop writes what generate() writes."""
    from steerlab._io import read_jsonl
    from steerlab.answers import extract_letter
    from steerlab.evaluation import MC_GENERATE_TOKENS, mc_prompt
    from steerlab.inference import generate
    from steerlab.sweep_journal import NO_LETTER, journal_path

    kw = {"task": TASK, "n": 4, "layers": [1], "coeffs": [0.1], "batch_size": 4,
          "scoring": "generate", "methods": ("diff_means",)}
    table = seed_protocol(tiny_llama, draws=1, out=tmp_path, progress=False, **kw)
    assert no_hooks(tiny_llama) and len(table) == 2
    items = get_task(TASK).items(4, 0)
    rows = list(read_jsonl(journal_path(tmp_path / "draw0.parquet")))
    assert {r["method"] for r in rows} == {"baseline", "diff_means"}
    for r in rows:
        letters = [extract_letter(c, len(it.options)) for c, it in zip(r["completions"], items,
                                                                       strict=True)]
        assert r["answered"] == "".join(x or NO_LETTER for x in letters)
        assert r["correct"] == "".join(
            "1" if x is not None and LETTERS.index(x) == it.answer_index else "0"
            for x, it in zip(letters, items, strict=True))
    base = next(r for r in rows if r["method"] == "baseline")
    plain = generate(tiny_llama, [mc_prompt(it, False) for it in items], MC_GENERATE_TOKENS,
                     chat=False, progress=False)
    from steerlab.answers import first_answer
    assert base["completions"] == [p[:len(c)] for p, c in zip(plain, base["completions"],
                                                              strict=True)]
    assert [first_answer(c) for c in base["completions"]] == [first_answer(p) for p in plain]
    again = seed_protocol(tiny_llama, draws=1, out=tmp_path, progress=False, **kw)  # resumed
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), again.drop(columns="seconds"))
    assert answer_letters(table).shape[0] == 2
