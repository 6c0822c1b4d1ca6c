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


def test_bf16_on_other_kernels_may_differ_on_a_few_items(monkeypatch):
    """Exact where the recording's kernels run (fp32 anywhere; bf16 on a CPU with native
    bf16); elsewhere 2% of the items (at least one) may differ, never a norm or a field."""
    import steerlab.spotcheck as sc

    monkeypatch.setattr(sc, "cpu_has_fast_bf16", lambda: True)
    assert sc.slack("bfloat16", "cpu", 100) == 0 and sc.slack("float32", "cpu", 100) == 0
    monkeypatch.setattr(sc, "cpu_has_fast_bf16", lambda: False)
    assert sc.slack("float32", "cpu", 100) == 0
    assert sc.slack("bfloat16", "cpu", 16) == 1 and sc.slack("bfloat16", "cpu", 200) == 4
    one = ["item 3: correct recorded '1', now '0'", "item 3: answered letter recorded 'A', "
           "now 'B'", "item 7: answer recorded '23', now '25'"]
    check = sc.SpotCheck("r", "cell", "bfloat16", 32, one, 1.0, 0, tolerance=1)
    assert check.ok and "up to 1 verdict(s) may differ" in check.line()
    assert not sc.SpotCheck("r", "cell", "bfloat16", 32,
                            [*one, "item 4: correct recorded '0', now '1'"], 1.0, 0,
                            tolerance=1).ok
    assert not sc.SpotCheck("r", "cell", "float32", 32, one[2:], 1.0, 0).ok  # exact there
    assert not sc.SpotCheck("r", "cell", "bfloat16", 32, ["added norm recorded 1, now 2"],
                            1.0, 0, tolerance=1).ok
