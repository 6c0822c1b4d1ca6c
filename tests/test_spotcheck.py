"""Spot checks' draws, lines and failures (:mod:`steerlab.spotcheck`)."""

import pytest

from steerlab.spotcheck import SEED_ENV, SpotCheck, SpotCheckError, compare, draw, report, spot_seed


def test_draws_are_seeded_per_label(monkeypatch):
    monkeypatch.setenv(SEED_ENV, "123")
    assert spot_seed() == 123
    a, seed = draw("results/x.parquet")
    b, _ = draw("results/x.parquet")
    c, _ = draw("results/y.parquet")
    assert seed == 123 and a.random() == b.random() != c.random()
    monkeypatch.delenv(SEED_ENV)
    assert 0 <= spot_seed() < 1_000_000


def test_a_check_prints_one_line_and_raises_when_it_fails(capsys):
    differ = compare(["A", "B", "C"], ["A", "D", "C"], [4, 5, 6], "answer")
    assert differ == ["item 5: answer recorded 'B', now 'D'"]
    ok = SpotCheck("results/x.parquet", "cell a", "bfloat16", 3, [], 1.0, 7)
    assert report(ok) is ok and "spot check passed" in capsys.readouterr().out
    bad = SpotCheck("results/x.parquet", "cell a", "bfloat16", 3, differ, 1.0, 7)
    with pytest.raises(SpotCheckError, match=r"(?s)FAILED.*2/3 per-item answers.*item 5"):
        report(bad)
    assert f"{SEED_ENV}=7" in bad.line()
