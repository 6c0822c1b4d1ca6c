"""Kill-safe files: JSON-lines journals and multi-file commits."""

from __future__ import annotations

import json

import pytest

from steerlab import _io
from steerlab.errors import SteerlabError


def test_append_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "j.jsonl"
    _io.append_jsonl(path, {"cell": 1})
    with path.open("a") as f:
        f.write('{"cell": 2, "acc')  # a kill in the middle of a write
    assert _io.read_jsonl(path) == [{"cell": 1}]  # the torn line is not counted
    _io.append_jsonl(path, {"cell": 2})
    _io.append_jsonl(path, {"cell": 3})
    assert _io.read_jsonl(path) == [{"cell": 1}, {"cell": 2}, {"cell": 3}]
    assert path.read_text() == "".join(json.dumps({"cell": i}) + "\n" for i in (1, 2, 3))


def test_a_record_counts_once_its_newline_is_written(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"cell": 1}\n{"cell": 2}')  # cut just before the newline
    assert _io.read_jsonl(path) == [{"cell": 1}]
    _io.append_jsonl(path, {"cell": 2})
    assert _io.read_jsonl(path) == [{"cell": 1}, {"cell": 2}]
    assert _io.read_jsonl(tmp_path / "missing.jsonl") == []


def test_a_damaged_line_before_the_end_is_an_error(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_text('{"cell": 1}\n{"cell": 2, "a{"cell": 3}\n{"cell": 4}\n')
    with pytest.raises(SteerlabError, match="line 2"):
        _io.read_jsonl(path)


def _writer(text: str):
    return lambda p: p.write_text(text)


def test_commit_replaces_all_files_or_none(tmp_path):
    _io.commit(tmp_path, {"a": _writer("a1"), "b": _writer("b1")})
    assert (tmp_path / "a").read_text() == "a1" and (tmp_path / "b").read_text() == "b1"

    def dying(p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # killed after the first file was written
        _io.commit(tmp_path, {"a": _writer("a2"), "b": dying})
    _io.recover(tmp_path)  # no marker: the commit never happened
    assert (tmp_path / "a").read_text() == "a1" and (tmp_path / "b").read_text() == "b1"
    assert not (tmp_path / _io.PENDING).exists()


def test_recover_finishes_a_commit_killed_while_moving_its_files(tmp_path, monkeypatch):
    _io.commit(tmp_path, {"a": _writer("a1"), "b": _writer("b1")})
    real = _io.os.replace
    moved = []

    def dying_replace(src, dst):
        if str(dst) in (str(tmp_path / "a"), str(tmp_path / "b")):
            if moved:
                raise KeyboardInterrupt  # killed after moving one of the two files
            moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(_io.os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        _io.commit(tmp_path, {"a": _writer("a2"), "b": _writer("b2")})
    monkeypatch.setattr(_io.os, "replace", real)
    assert {(tmp_path / n).read_text() for n in "ab"} == {"a2", "b1"}  # half moved
    _io.recover(tmp_path)  # the marker was written: finish the moves
    assert (tmp_path / "a").read_text() == "a2" and (tmp_path / "b").read_text() == "b2"
    assert not (tmp_path / _io.PENDING).exists()
