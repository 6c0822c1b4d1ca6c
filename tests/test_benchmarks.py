"""Benchmark loaders: the real files in ../shared/data (skipped when absent), a tiny fake data
directory, and the offline / unreachable-hub errors (no network access in these tests)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from steerlab import benchmarks
from steerlab.benchmarks import (
    BENCHMARKS,
    MMLU_PRO_KNOWLEDGE,
    MMLU_PRO_REASONING,
    BenchmarkFormatError,
    benchmark_loader,
    data_dir,
    load_gsm8k,
    load_gsm_symbolic,
    load_mmlu_pro,
    load_popqa,
    mmlu_pro_group,
)
from steerlab.errors import EmptyInputError, OptionError

needs_data = pytest.mark.skipif(
    data_dir() is None, reason="needs ../shared/data or $STEERLAB_DATA_DIR (real benchmark files)")

LOADERS = [load_mmlu_pro, load_gsm8k, load_popqa, load_gsm_symbolic]


def _is_number(s: str) -> bool:
    try:
        return math.isfinite(float(s))
    except ValueError:
        return False


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


# --- real files ---------------------------------------------------------------------------------

@needs_data
@pytest.mark.shared_data
@pytest.mark.parametrize(("split", "count"), [("test", 1319), ("train", 7473)])
def test_gsm8k_real(split, count):
    items = load_gsm8k(split)
    assert len(items) == count
    assert len({it["id"] for it in items}) == count
    assert all(_is_number(it["answer"]) for it in items)
    assert all(float(it["answer"]) == int(float(it["answer"])) for it in items)  # integer answers
    assert not any("," in it["answer"] or "####" in it["question"] for it in items)
    assert items[0]["id"] == f"gsm8k-{split}-0"


@needs_data
@pytest.mark.shared_data
def test_mmlu_pro_real():
    items = load_mmlu_pro()
    assert len(items) == 12032
    assert len({it["id"] for it in items}) == 12032
    cats = Counter(it["category"] for it in items)
    assert set(MMLU_PRO_REASONING).isdisjoint(MMLU_PRO_KNOWLEDGE)
    assert set(cats) == set(MMLU_PRO_REASONING) | set(MMLU_PRO_KNOWLEDGE)
    assert sum(cats[c] for c in MMLU_PRO_REASONING) == 5161
    assert sum(cats[c] for c in MMLU_PRO_KNOWLEDGE) == 6871
    for it in items:
        assert 3 <= len(it["options"]) <= 10
        assert 0 <= it["answer_index"] < len(it["options"])
        assert it["answer"] == "ABCDEFGHIJ"[it["answer_index"]]
        assert isinstance(it["id"], int) and it["question"] and it["src"]
    # the upstream quirk: answer "C" but answer_index 1 -> the letter wins
    quirk = next(it for it in items if it["id"] == 3983)
    assert (quirk["answer"], quirk["answer_index"]) == ("C", 2)


@needs_data
@pytest.mark.shared_data
def test_mmlu_pro_filters_and_groups():
    reasoning = load_mmlu_pro(MMLU_PRO_REASONING)
    knowledge = load_mmlu_pro(MMLU_PRO_KNOWLEDGE)
    assert len(reasoning) == 5161 and len(knowledge) == 6871
    assert {it["category"] for it in reasoning} == set(MMLU_PRO_REASONING)
    assert all(mmlu_pro_group(it["category"]) == "knowledge" for it in knowledge)
    assert len(load_mmlu_pro("math")) == 1351  # a single string is one category


@needs_data
@pytest.mark.shared_data
def test_loaders_return_fresh_dicts():
    first = load_mmlu_pro(["law"])
    first[0]["options"].append("mutated")
    first[0]["question"] = "mutated"
    again = load_mmlu_pro(["law"])
    assert again[0]["question"] != "mutated" and "mutated" not in again[0]["options"]


@needs_data
@pytest.mark.shared_data
def test_popqa_real():
    items = load_popqa()
    assert len(items) == 1000
    assert len({it["id"] for it in items}) == 1000
    assert all(it["id"].startswith("test_") for it in items)
    for it in items:
        assert it["question"].endswith("?")
        assert it["answers"] and all(isinstance(a, str) and a for a in it["answers"])
        assert isinstance(it["s_pop"], int) and it["prop"]
    assert items[0]["answers"] == ["Ralph Rainger", "Ralph Reichenthal"]


@needs_data
@pytest.mark.shared_data
def test_gsm_symbolic_p2_real():
    items = load_gsm_symbolic()
    assert len(items) == 2500
    assert len({it["id"] for it in items}) == 2500
    per_template = Counter(it["template_id"] for it in items)
    assert len(per_template) == 50 and set(per_template.values()) == {50}
    assert all(_is_number(it["answer"]) for it in items)
    assert items[0]["answer"] == "32.5" and items[0]["original_id"] == 473


@needs_data
@pytest.mark.shared_data
def test_gsm_symbolic_missing_variant_offline(monkeypatch):
    root = data_dir()
    assert root is not None
    if (root / "gsm_symbolic" / "GSM_p1.jsonl").is_file():
        pytest.skip("GSM_p1.jsonl is present")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="GSM_p1.jsonl"):
        load_gsm_symbolic("p1")


# --- no data needed -----------------------------------------------------------------------------

@pytest.mark.parametrize("loader", LOADERS)
def test_missing_file_offline_raises(loader, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert data_dir() == tmp_path
    with pytest.raises(FileNotFoundError, match="STEERLAB_DATA_DIR") as err:
        loader()
    assert str(tmp_path) in str(err.value) and "Hub" in str(err.value)


def test_data_dir_env_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path / "nope"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert data_dir() is None
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_gsm8k()


def test_hub_unreachable_raises(tmp_path, monkeypatch):
    import datasets

    def unreachable(*args, **kwargs):
        raise ConnectionError("no route to huggingface.co")

    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with pytest.raises(FileNotFoundError, match="not reachable") as err:
        load_popqa()
    assert "STEERLAB_DATA_DIR" in str(err.value) and "akariasai/PopQA" in str(err.value)


def test_hub_rows_are_normalised(tmp_path, monkeypatch):
    """Hub formats (faked: no network) give the same fields as the local files."""
    import datasets

    hub = {
        ("openai/gsm8k", "main", "test"): [{"question": "Q?", "answer": "1+1=2\n#### 2"}],
        ("TIGER-Lab/MMLU-Pro", None, "test"): [
            {"question_id": 7, "question": "Pick", "options": ["a", "b", "c"], "answer": "B",
             "answer_index": 1, "cot_content": "", "category": "law", "src": "ori_mmlu-law"}],
        ("akariasai/PopQA", None, "test"): [
            {"id": 42, "subj": "X", "prop": "director", "obj": "Y", "s_pop": 10,
             "question": "Who was the director of X?", "possible_answers": '["Y", "Why"]'}],
        ("apple/GSM-Symbolic", "p1", "test"): [
            {"id": 3, "instance": 4, "question": "How many?", "answer": "so\n#### 1,000",
             "original_id": 9, "original_question": "", "original_answer": "", "canary": ""}],
    }
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return hub[(path, name, split)]

    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_gsm8k() == [{"id": "gsm8k-test-0", "question": "Q?",
                             "solution": "1+1=2\n#### 2", "answer": "2"}]
    assert load_mmlu_pro() == [{"id": 7, "question": "Pick", "options": ["a", "b", "c"],
                                "answer_index": 1, "answer": "B", "category": "law",
                                "src": "ori_mmlu-law"}]
    assert load_popqa() == [{"id": "popqa-42", "question": "Who was the director of X?",
                             "answers": ["Y", "Why"], "prop": "director", "s_pop": 10}]
    assert load_gsm_symbolic("p1") == [{"id": "gsm_symbolic-p1-3-4", "question": "How many?",
                                        "solution": "so\n#### 1,000", "answer": "1000",
                                        "template_id": 3, "instance": 4, "original_id": 9}]
    assert len(calls) == 4


def test_fake_gsm8k_dir_parses_exactly(tmp_path, monkeypatch):
    _write_jsonl(tmp_path / "gsm8k" / "test.jsonl", [
        {"question": "Tom has 2 apples and buys 3. How many?",
         "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
        {"question": "A car costs $1,200 more than $1,000. Price?",
         "answer": "1,000 + 1,200 = 2,200\n####  2,200 "},
    ])
    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_gsm8k("test") == [
        {"id": "gsm8k-test-0", "question": "Tom has 2 apples and buys 3. How many?",
         "solution": "2 + 3 = <<2+3=5>>5\n#### 5", "answer": "5"},
        {"id": "gsm8k-test-1", "question": "A car costs $1,200 more than $1,000. Price?",
         "solution": "1,000 + 1,200 = 2,200\n####  2,200 ", "answer": "2200"},
    ]
    with pytest.raises(FileNotFoundError, match="gsm8k/train.jsonl"):
        load_gsm8k("train")


def test_fake_files_reread_after_edit(tmp_path, monkeypatch):
    path = tmp_path / "gsm8k" / "test.jsonl"
    _write_jsonl(path, [{"question": "q", "answer": "#### 1"}])
    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    assert [it["answer"] for it in load_gsm8k()] == ["1"]
    _write_jsonl(path, [{"question": "q", "answer": "#### 1"}, {"question": "r",
                                                               "answer": "#### 22"}])
    assert [it["answer"] for it in load_gsm8k()] == ["1", "22"]


def test_fake_mmlu_pro_letter_beats_index(tmp_path, monkeypatch):
    _write_jsonl(tmp_path / "mmlu_pro" / "mmlu_pro_test.jsonl", [
        {"question_id": 1, "question": "q", "options": ["x", "y", "z"], "answer": "C",
         "answer_index": 1, "cot_content": "", "category": "chemistry", "src": "s"}])
    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    (item,) = load_mmlu_pro()
    assert (item["answer_index"], item["answer"]) == (2, "C")


def test_bad_files_name_the_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_DATA_DIR", str(tmp_path))
    path = tmp_path / "gsm8k" / "test.jsonl"
    path.parent.mkdir()
    path.write_text('{"question": "q", "answer": "#### 1"}\nnot json\n', encoding="utf-8")
    with pytest.raises(BenchmarkFormatError, match=r"test.jsonl:2"):
        load_gsm8k()
    _write_jsonl(path, [{"question": "q", "answer": "no final answer"}])
    with pytest.raises(BenchmarkFormatError, match="####"):
        load_gsm8k()
    _write_jsonl(path, [{"prompt": "q"}])
    with pytest.raises(BenchmarkFormatError, match="'answer'"):
        load_gsm8k()


def test_bad_options():
    with pytest.raises(OptionError, match="validation"):
        load_gsm8k("validation")
    with pytest.raises(OptionError, match="p3"):
        load_gsm_symbolic("p3")
    with pytest.raises(OptionError, match="maths"):
        load_mmlu_pro(["maths"])
    with pytest.raises(EmptyInputError):
        load_mmlu_pro([])
    with pytest.raises(OptionError):
        mmlu_pro_group("maths")
    with pytest.raises(OptionError, match="mmlu"):
        benchmark_loader("mmlu")


def test_registry():
    assert set(BENCHMARKS) == {"mmlu_pro", "gsm8k", "popqa", "gsm_symbolic"}
    for key, info in BENCHMARKS.items():
        for field in ("name", "description", "local_file", "records", "hub_id", "licence"):
            assert isinstance(info[field], str) and info[field], (key, field)
        assert benchmark_loader(key) is info["loader"]
    assert "NC-ND" in BENCHMARKS["gsm_symbolic"]["licence"]


def test_default_dir_is_next_to_repo(monkeypatch):
    monkeypatch.delenv("STEERLAB_DATA_DIR", raising=False)
    expected = Path(benchmarks.__file__).resolve().parents[1].parent / "shared" / "data"
    assert data_dir() == (expected if expected.is_dir() else None)
