"""A training run's directory read back (:mod:`steerlab.train_journal`); writing, resuming and
refusing mixed checkpoints are tested with the trainer (test_train.py, test_adapters.py)."""

import pandas as pd
import pytest

from steerlab import _io
from steerlab.errors import SteerlabError
from steerlab.train_journal import (
    JOURNAL,
    checkpoint_meta,
    checkpoint_step,
    history,
    resume_journal,
    run_dtype,
    training_summary,
)


def test_an_empty_directory_has_no_checkpoint(tmp_path):
    assert checkpoint_meta(tmp_path) is None and checkpoint_step(tmp_path) is None
    assert run_dtype(tmp_path) is None


def test_resume_drops_rows_after_the_checkpoint_and_refuses_a_missing_one(tmp_path):
    rows = [{"step": s, "reward": s / 10} for s in (1, 2, 3)]
    _io.write_jsonl(tmp_path / JOURNAL, rows)
    assert resume_journal(tmp_path, 2) == rows[:2]
    assert _io.read_jsonl(tmp_path / JOURNAL) == rows[:2]  # step 3 is redone
    with pytest.raises(SteerlabError, match="no row"):
        resume_journal(tmp_path, 5)
    assert len(history(tmp_path)) == 2  # no checkpoint: every row


def test_summary_of_first_and_last_windows():
    hist = pd.DataFrame({"step": range(1, 7), "reward": [0, 0, 0.5, 0.5, 1, 1],
                         "seconds": [2.0] * 6,
                         "dev_acc": [None, None, 0.3, None, None, 0.4]})
    out = training_summary(hist, window=2)
    assert out["steps"] == 6 and out["dev_acc"] == {3: 0.3, 6: 0.4}
    assert out["reward"]["first"] == 0 and out["reward"]["last"] == 1
    assert out["seconds"]["total"] == 12.0
