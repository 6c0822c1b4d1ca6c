import numpy as np
import pytest
import torch

from steerlab.answers import extract_answer, judge
from steerlab.errors import EmptyInputError, OptionError
from steerlab.evaluation import evaluate, mc_prompt
from steerlab.tasks import TASKS, Item, Task, get_task


def test_extract_answer():
    assert extract_answer("so the total is \\boxed{42}.") == "42"
    assert extract_answer("5 + 3 = 8\n#### 1,250\nextra 7") == "1250"
    assert extract_answer("It costs 3 dollars, then 12.5 more.") == "12.5"
    assert extract_answer("no digits here") is None


def test_judge_numbers_with_math_verify():
    item = Item("x", "q", "4.5")
    assert judge(item, "The answer is 4.50 cm.")[0]
    assert not judge(item, "The answer is 45.")[0]
    assert judge(Item("y", "q", "0.5"), "#### 1/2")[0]
    assert not judge(item, "I do not know")[0]


def test_judge_text_and_choice():
    item = Item("c", "capital of Japan?", "Tokyo", ("Edo",), (), "text")
    assert judge(item, "It is Tokyo.")[0] and judge(item, "edo!")[0]
    assert not judge(item, "Kyoto")[0] and not judge(item, "Tokyostan")[0]
    comp = Item("k", "Which is larger, 94 or 52?", "94", (), ("94", "52"), "choice")
    assert judge(comp, "94 is larger than 52")[0]
    assert not judge(comp, "52 is larger than 94")[0]
    yn = Item("y", "Is 7 odd?", "yes", (), ("yes", "no"), "choice")
    assert judge(yn, "Yes, because no even number...")[0]
    assert not judge(yn, "No.")[0]


def test_shipped_tasks_are_well_formed():
    for name in ["reasoning-mc", "memorisation-mc"]:
        items = get_task(name).items()
        assert len(items) >= 200
        for it in items:
            assert it.answer in it.options and len(set(it.options)) == len(it.options) >= 2
        # option order is shuffled: the gold letter is not always the same
        letters = {it.answer_index for it in items}
        assert len(letters) >= 3
    task = get_task("memorisation-mc")
    assert task.items(20, seed=1) == task.items(20, seed=1) != task.items(20, seed=2)
    assert task.chance(task.items()) == pytest.approx(0.25)
    with pytest.raises(OptionError, match="Unknown task"):
        get_task("nope")


def _tiny_task(kind: str = "mc") -> Task:
    items = [Item(f"i{i}", f"What is {i} + 1?", str(i + 1), (),
                  (str(i + 1), str(i + 2), str(i)) if kind == "mc" else ()) for i in range(6)]
    return Task("tiny", kind, "tiny", "test", lambda: items, max_new_tokens=4)


@pytest.mark.parametrize("scoring", ["letter", "text", "cloze"])
def test_mc_scoring_matches_manual_argmax(tiny_llama, scoring):
    task = _tiny_task()
    res = evaluate(tiny_llama, task, scoring=scoring, batch_size=4)
    assert res.n == 6 and res.correct.dtype == bool and 0 <= res.accuracy.acc <= 1
    assert res.chance == pytest.approx(1 / 3)
    if scoring == "letter":  # recompute item 0 by hand
        item = task.items()[0]
        enc = tiny_llama.encode([mc_prompt(item, False)])
        with torch.no_grad():
            logits = tiny_llama.hf(**enc).logits[0, -1]
        ids = [tiny_llama.tokenizer.encode(f" {c}", add_special_tokens=False)[-1] for c in "ABC"]
        assert res.predictions[0] == item.options[int(np.argmax(logits[ids].numpy()))]


def test_batching_does_not_change_mc_results(tiny_llama):
    task = _tiny_task()
    a = evaluate(tiny_llama, task, scoring="cloze", batch_size=1)
    b = evaluate(tiny_llama, task, scoring="cloze", batch_size=6)
    assert a.predictions == b.predictions


def test_generative_runs(tiny_llama):
    res = evaluate(tiny_llama, _tiny_task("gen"), shots=[("What is 1 + 1?", "2")])
    assert res.n == 6 and res.chance is None


def test_generative_results_keep_their_completions(tiny_llama):
    from steerlab.answers import first_answer

    task = _tiny_task("gen")
    res = evaluate(tiny_llama, task, shots=[("What is 1 + 1?", "2")], batch_size=4)
    assert len(res.completions) == res.n == 6 and all(isinstance(c, str) for c in res.completions)
    for item, comp, ok, pred in zip(task.items(), res.completions, res.correct,
                                    res.predictions, strict=True):  # the audit trail re-judges
        assert judge(item, first_answer(comp)) == (ok, pred)
    assert evaluate(tiny_llama, _tiny_task(), scoring="cloze").completions == []


def test_eval_result_positional_fields_unchanged():
    from steerlab.evaluation import EvalResult

    res = EvalResult("t", "m", ["a"], np.array([True]), ["x"], 1.0, 0.5, {"chat": False})
    assert res.completions == [] and res.extra == {"chat": False} and res.chance == 0.5


def test_answer_functions_are_still_importable_from_evaluate():
    from steerlab import answers

    assert extract_answer is answers.extract_answer
    assert judge is answers.judge


def test_bad_options(tiny_llama):
    with pytest.raises(OptionError, match="scoring"):
        evaluate(tiny_llama, _tiny_task(), scoring="vibes")
    with pytest.raises(EmptyInputError):
        evaluate(tiny_llama, _tiny_task(), items=[])


def test_every_task_is_listed():
    assert {"reasoning-mc", "memorisation-mc", "mmlu-pro-reasoning", "gsm8k", "popqa",
            "gsm-symbolic-p2"} <= set(TASKS)


@pytest.mark.slow
def test_smollm2_recalls_above_chance(smollm_fast):
    """Real weights: SmolLM2 answers recall questions (cloze scoring) well above chance."""
    res = evaluate(smollm_fast, get_task("memorisation-mc"), n=80)
    assert res.accuracy.lo > res.chance


def test_shots_never_come_from_eval_items():
    from steerlab.tasks import shots

    for name in ["reasoning-gen", "memorisation-gen"]:
        task = get_task(name)
        few = shots(task, 3)
        assert len(few) == 3
        assert not {q for q, _ in few} & {it.question for it in task.items()}


def test_real_benchmark_tasks_use_disjoint_splits():
    from steerlab.benchmarks import data_dir
    from steerlab.tasks import check_disjoint, extraction_prompts

    if data_dir() is None:
        pytest.skip("needs ../shared/data or $STEERLAB_DATA_DIR (real benchmark files)")
    task = get_task("mmlu-pro-reasoning")
    items = task.items()
    reason, know = extraction_prompts("mmlu-pro")
    check_disjoint(reason + know, items)
    assert len(items) == 5161 // 2 and 2500 < len(reason) <= 5161 - 5161 // 2
    assert task.chance(items) == pytest.approx(sum(1 / len(i.options) for i in items) / len(items))
    gsm = get_task("gsm8k").items()
    assert len(gsm) == 1319
    train, _ = extraction_prompts("gsm8k-popqa")
    check_disjoint(train, gsm)


@pytest.mark.parametrize("field,value,match", [("max_new_tokens", 0, "max_new_tokens"),
                                               ("max_new_tokens", 2.5, "max_new_tokens"),
                                               ("kind", "free", "task kind"),
                                               ("scoring", "logits", "scoring")])
def test_a_task_with_a_bad_field_is_refused_when_made(field, value, match):
    """Before any vector is extracted or item scored: a task's own fields are checked."""
    import dataclasses

    task = get_task("reasoning-gen")
    with pytest.raises(OptionError, match=match):
        dataclasses.replace(task, **{field: value})
