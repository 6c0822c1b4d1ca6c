"""Final-answer extraction and judging: numbers, two- and three-way choices, text answers."""

from __future__ import annotations

import pytest

from steerlab.answers import extract_answer, extract_letter, first_answer, judge, strip_echo
from steerlab.errors import OptionError
from steerlab.tasks import Item


def _num(answer: str, question: str = "q") -> Item:
    return Item("n", question, answer)


def _choice(question: str, answer: str, options: tuple[str, ...]) -> Item:
    return Item("c", question, answer, (), options, "choice")


def _text(answer: str, aliases: tuple[str, ...] = (), question: str = "q") -> Item:
    return Item("t", question, answer, aliases, (), "text")


# ---- numbers ------------------------------------------------------------------------------


def test_boxed_with_nested_braces_is_parsed_by_math_verify():
    assert extract_answer("so \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_answer("first \\boxed{3}, finally \\boxed{\\dfrac{3}{4}}") == "\\dfrac{3}{4}"
    assert judge(_num("0.5"), "The answer is \\boxed{\\frac{1}{2}}.")[0]
    assert judge(_num("1/2"), "\\boxed{\\frac{1}{2}}")[0]
    assert not judge(_num("2"), "The answer is \\boxed{\\frac{1}{2}}.")[0]
    assert judge(_num("18"), "\\boxed{\\$18}")[0]
    # a box cut off by the token budget is no answer; an earlier complete one still is
    assert extract_answer("\\boxed{7} ... so \\boxed{\\frac{1}{") == "7"
    assert extract_answer("3 + 5 = 8, so \\boxed{\\frac{1}{") is None


def test_leading_decimal_point():
    assert extract_answer("The probability is .5") == ".5"
    assert judge(_num("0.5"), "The probability is .5")[0]
    assert not judge(_num("5"), "The probability is .5")[0]
    assert extract_answer("wait... 7") == "7"  # an ellipsis is not a decimal point


def test_commas_are_thousands_separators_only_in_groups_of_three():
    assert extract_answer("It costs 1,234 dollars.") == "1234"
    assert extract_answer("about 12,345,678 people") == "12345678"
    assert extract_answer("total 1,234.5") == "1234.5"
    # a comma list is three numbers, and the last one is the answer (not 345)
    assert extract_answer("The sides are 3,4,5") == "5"
    assert judge(_num("5"), "The sides are 3,4,5")[0]
    assert not judge(_num("345"), "The sides are 3,4,5")[0]
    assert extract_answer("1,2345") == "2345"
    assert extract_answer("#### 1,250") == "1250"
    assert not judge(_num("345"), "#### 3,4,5")[0]  # after ####: a list, not a number


def test_minus_after_a_digit_is_a_range_not_a_sign():
    assert extract_answer("between 10-15 apples") == "15"
    assert judge(_num("15"), "between 10-15 apples")[0]
    assert not judge(_num("-15"), "between 10-15 apples")[0]
    assert extract_answer("x-5 = 2, so the change is -3") == "-3"
    assert extract_answer("it drops to -4.") == "-4"


def test_numbered_list_markers_are_not_answers():
    cut = "Let's go step by step.\n1. Add 3 and 5 to get 8.\n2."
    assert extract_answer(cut) == "8"
    assert not judge(_num("2"), cut)[0]
    assert extract_answer("Steps:\n1. Add them\n2. ") is None
    # a lone number on its own line is an answer, not a list marker
    assert extract_answer("The answer is:\n2.") == "2"
    assert extract_answer("1.") == "1"


def test_number_answers_keep_working():
    assert extract_answer("so the total is \\boxed{42}.") == "42"
    assert extract_answer("It costs 3 dollars, then 12.5 more.") == "12.5"
    assert extract_answer("no digits here") is None
    assert judge(_num("4.5"), "The answer is 4.50 cm.")[0]
    assert judge(_num("0.5"), "#### 1/2")[0]
    assert judge(_num("4.5"), "I do not know") == (False, "")


def test_number_echo_is_not_the_answer():
    item = _num("60", "What is 31 + 29?")
    assert not judge(_num("29", "What is 31 + 29?"), "What is 31 + 29?")[0]
    assert judge(item, "What is 31 + 29? 31 + 29 = 60")[0]


# ---- two- and three-way choices -----------------------------------------------------------


YN = ("yes", "no")


def test_an_echoed_question_is_not_the_answer():
    item = _choice("Is 31 greater than 29? Answer yes or no.", "yes", YN)
    echo = "Is 31 greater than 29? Answer yes or no.\nIs 31 greater than 29?"
    assert judge(item, echo) == (False, "")
    assert judge(item, "Is 31 greater than 29? Answer yes or no. Yes, it is.")[0]
    logic = _choice("No toves are red. Hugo is a tove. Is Hugo red? Answer yes or no.", "yes",
                    YN)
    assert not judge(logic, "No toves are red. Hugo is a tove.")[0]
    three = _choice("Which is the largest of 26, 34 and 53?", "53", ("26", "34", "53"))
    assert judge(three, "The largest of 26, 34, and 53 is 53.") == (True, "53")


def test_naming_options_as_alternatives_is_a_hedge():
    item = _choice("Is 31 greater than 29?", "yes", YN)
    ok, pred = judge(item, "It could be yes or no.")
    assert not ok and pred == "yes or no"
    assert not judge(item, "Yes/no, hard to say.")[0]
    comp = _choice("Which is larger, 94 or 52?", "94", ("94", "52"))
    assert not judge(comp, "It is 94 or 52.")[0]
    # listing the options before answering is not hedging
    assert judge(comp, "Between 52 and 94, 94 is larger.")[0]


def test_choice_true_positives_still_work():
    comp = _choice("Which is larger, 94 or 52?", "94", ("94", "52"))
    assert judge(comp, "94 is larger than 52")[0]
    assert not judge(comp, "52 is larger than 94")[0]
    assert judge(comp, "The larger number is 94.\n\nThe smaller number is 52.")[0]
    assert judge(comp, "The larger one is not 52, it is 94.")[0]
    yn = _choice("Is 7 odd?", "yes", YN)
    assert judge(yn, "Yes, because no even number...")[0]
    assert judge(yn, "Yes, no doubt about it.")[0]
    assert not judge(yn, "Yes and no.")[0]
    assert not judge(yn, "No.")[0]
    dec = _choice("Which is smaller, 0.4 or 0.33?", "0.33", ("0.4", "0.33"))
    assert judge(dec, "The answer is 0.33.")[0] and not judge(dec, "The answer is 0.43.")[0]


# ---- text answers -------------------------------------------------------------------------


def test_a_hedged_list_is_wrong():
    paris = _text("Paris", question="What is the capital of France?")
    for hedge in ["It could be Paris, London or Rome.", "Paris or London.",
                  "Either London or Paris.", "London, Paris, Rome",
                  "I think it's Paris or maybe Lyon", "Paris, Lyon and Nice.",
                  "It is the Seine, the Loire or Paris"]:
        assert not judge(paris, hedge)[0], hedge
    job = _text("politician", question="What is Barack Obama's occupation?")
    assert not judge(job, "Barack Obama is a politician, lawyer, and author.")[0]
    assert not judge(job, "He was a politician, lawyer and author.")[0]


def test_only_the_first_answer_sentence_counts():
    paris = _text("Paris", question="What is the capital of France?")
    assert not judge(paris, "The capital of France is Lyon. Paris is larger.")[0]
    assert not judge(paris, "The capital of France is Lyon.\nParis is nice.")[0]
    assert not judge(paris, "What is the capital of France? The capital of France is Lyon. "
                            "Paris is nice.")[0]
    assert judge(paris, "What is the capital of France? The capital of France is Paris.")[0]
    assert not judge(_text("Canberra"), "Sydney, not Canberra.")[0]


def test_text_true_positives_still_work():
    paris = _text("Paris", question="What is the capital of France?")
    assert judge(paris, "The capital of France is Paris.") == (True,
                                                              "The capital of France is Paris.")
    assert judge(paris, "Paris, France.")[0]
    assert judge(paris, "The answer is Paris, the capital and largest city of France.")[0]
    assert judge(paris, "Sure! The capital of France is Paris.")[0]
    assert judge(paris, "The capital of France is Paris, which is beautiful, historic and old.")[0]
    assert judge(_text("Canberra"), "The capital is Canberra, not Sydney.")[0]
    assert judge(_text("Tokyo", ("Edo",)), "Tokyo, or Edo as it was once called.")[0]
    dc = _text("Washington, D.C.", question="What is the capital of the United States?")
    assert judge(dc, "The capital of the United States is Washington, D.C. It is on a river.")[0]
    chaucer = _text("Geoffrey Chaucer", question='Who wrote the book "The Canterbury Tales"?')
    assert judge(chaucer, "The Canterbury Tales is a classic tale of storytelling, set in "
                          "medieval England, by Geoffrey Chaucer. It's a classic")[0]
    bosnia = _text("Sarajevo", question="What is the capital of Bosnia and Herzegovina?")
    assert judge(bosnia, "The capital of Bosnia and Herzegovina is Sarajevo.")[0]
    austen = _text("Jane Austen", ("Austen",))
    assert judge(austen, "The novel, published in 1813, was written by Jane Austen.")[0]
    assert judge(_text("J. K. Rowling"), "It was written by J. K. Rowling.")[0]
    tokyo = _text("Tokyo", ("Edo",), "capital of Japan?")
    assert judge(tokyo, "It is Tokyo.")[0] and judge(tokyo, "edo!")[0]
    assert not judge(tokyo, "Kyoto")[0] and not judge(tokyo, "Tokyostan")[0]
    assert judge(_text("H"), "The chemical symbol for hydrogen is H. It is light.")[0]


# ---- helpers ------------------------------------------------------------------------------


def test_strip_echo_and_first_answer():
    assert strip_echo("Is 7 odd? Answer yes or no.", "Is 7 odd?  Answer yes or no. Yes").strip() \
        == "Yes"
    left = strip_echo("Which is larger, 94 or 52?", "Of 94 or 52, 94.", ("94", "52"))
    assert "52" not in left and "94." in left
    assert first_answer(" 8\n\nQ: next question") == " 8"
    assert first_answer(" 8\nQuestion: x") == " 8"


def test_unknown_answer_type_is_refused():
    from steerlab.errors import OptionError

    with pytest.raises(OptionError, match="answer_type"):
        judge(Item("x", "q", "a", answer_type="vibes"), "a")


@pytest.mark.parametrize(("text", "k", "want"), [
    ("Let me think. The answer is (C).", 10, "C"),
    ("the answer is B because A is wrong", 4, "B"),
    ("The answer is Abraham Lincoln. Answer: D", 4, "D"),  # a word, not a letter: next rule
    ("Answer: A\nmore text\nAnswer: (E)", 10, "E"),  # the last "Answer:"
    ("Options A and B are close, but B", 4, "B"),  # the last standalone letter
    ("I pick H", 4, None),  # H is not one of 4 options; no other letter
    ("no letter here", 10, None),
    ("The answer is J.", 10, "J"),
])
def test_extract_letter_follows_mmlu_pro_in_order(text, k, want):
    assert extract_letter(text, k) == want


def test_extract_letter_checks_the_option_count():
    with pytest.raises(OptionError, match="n_options must be 1..10"):
        extract_letter("A", 11)
