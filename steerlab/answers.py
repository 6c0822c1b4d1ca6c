"""Final answers in generated text, and whether they are right.

:func:`extract_answer` finds a completion's final numeric answer; :func:`judge` compares the
answer a completion gives with an item's gold one: numbers with math-verify, generative
choices (``Is 7 odd? Answer yes or no.``) by the option named, text answers by whole-word
alias match in the first sentence. Both judge what the model answers, not what it repeats: an
echoed question is removed first (:func:`strip_echo`), and a hedge (``yes or no``,
``Paris, London or Rome``) is a wrong answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from steerlab.errors import OptionError
from steerlab.tasks import LETTERS, Item

ANSWER_TYPES = ("number", "choice", "text")

# ---- numbers --------------------------------------------------------------------------------

# A minus is a sign only where it cannot be an operator: not right after a digit, a letter or
# a closing bracket ("10-15" is a range, "x-5" a subtraction). Commas separate thousands only
# in groups of exactly three ("1,234"); "3,4,5" is three numbers. ".5" is a half.
_NUMBER = re.compile(r"""
    (?:(?<![\w)\]}])-)?
    (?:
        (?<![\d.])\.\d+
      | \d{1,3}(?:,\d{3})+(?!\d|,\d)(?:\.\d+)?
      | \d+(?:\.\d+)?
    )""", re.VERBOSE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_MARKER = re.compile(r"^[ \t]*(\d+)[.)](?=[ \t]|$)(?P<rest>[^\n]*)", re.MULTILINE)


def _boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces balanced), else None."""
    for m in reversed(list(re.finditer(r"\\boxed\s*\{", text))):
        depth, start = 1, m.end()
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def _list_markers(text: str) -> list[tuple[int, int]]:
    """Spans of numbered-list markers (``1.``, ``2)`` at a line start), which are never answers:
    a ``1.`` followed by text or by a ``2.`` marker, and each marker numbered one more than the
    previous list marker, so a completion cut off at ``...\\n2.`` ends in a marker. A lone
    ``2.`` on its own line, outside a list, stays a number."""
    found = [(int(m.group(1)), m.span(1), bool(m.group("rest").strip()))
             for m in _MARKER.finditer(text)]
    spans: list[tuple[int, int]] = []
    prev: int | None = None
    for k, (n, span, has_text) in enumerate(found):
        follows = k + 1 < len(found) and found[k + 1][0] == 2
        if (n == 1 and (has_text or follows)) or (prev is not None and n == prev + 1):
            spans.append(span)
            prev = n
    return spans


def _final(text: str) -> tuple[str, str] | None:
    """(answer, how to parse it: ``latex`` or ``expr``) for a completion, else None."""
    boxed = _boxed(text)
    if boxed is not None:
        return boxed, "latex"
    if re.search(r"\\boxed\s*\{", text):  # the answer was cut off while being boxed
        return None
    if "####" in text:
        line = text.split("####")[-1].strip().split("\n")[0].strip()
        line = _THOUSANDS.sub("", line)
        # a comma left between digits makes a list: math-verify's plain-expression parser
        # would read "3,4,5" as 3.4, its LaTeX parser reads it as the set {3, 4, 5}
        return (line, "latex" if re.search(r"\d\s*,\s*\d", line) else "expr") if line else None
    markers = _list_markers(text)
    nums = [m.group() for m in _NUMBER.finditer(text)
            if not any(a <= m.start() < b for a, b in markers)]
    return (nums[-1].replace(",", ""), "expr") if nums else None


def extract_answer(text: str) -> str | None:
    """The final answer in a completion, None when there is none.

    The last complete ``\\boxed{...}`` (nested braces allowed: ``\\frac{1}{2}``; a box cut
    off by the token budget, with none complete before it, is no answer), else what follows
    ``####``, else the last number. A number's commas are thousands separators only in
    groups of three (``1,234`` is 1234; ``3,4,5`` is a list whose last number, 5, is taken, as
    a grader reading the last number would); a minus right after a digit or letter is a range or
    an operator (``10-15`` ends in 15); ``.5`` is 0.5; numbered-list markers are skipped.

    Example:
        >>> extract_answer("so \\\\boxed{\\\\frac{1}{2}}")
        '\\\\frac{1}{2}'
        >>> extract_answer("between 10-15, about 1,200 or 3,4,5")
        '5'
    """
    final = _final(text)
    return final[0] if final else None


def _judge_number(item: Item, text: str) -> tuple[bool, str]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    final = _final(text)
    if final is None:
        return False, ""
    pred, how = final
    try:
        if how == "latex":
            parsed = parse(f"\\boxed{{{pred}}}", [LatexExtractionConfig()])
        else:
            parsed = parse(pred, [ExprExtractionConfig()])
        return bool(parsed) and bool(verify(parse(item.answer), parsed)), pred
    except Exception:  # noqa: BLE001 - an unparsable answer is a wrong answer
        return False, pred


# ---- what the model says, without what it repeats -----------------------------------------


def _phrase(text: str) -> re.Pattern[str] | None:
    """Case-insensitive whole-word pattern for ``text``'s words with any punctuation or space
    between them (``0.33`` matches ``0.33``, not ``0.339``; ``D.C.`` matches ``D. C.``)."""
    words = re.findall(r"\w+", text)
    if not words:
        return None
    return re.compile(r"(?<!\w)" + r"\W+".join(map(re.escape, words)) + r"(?!\w)",
                      re.IGNORECASE)


def _mentions(text: str, phrases: Sequence[str]) -> list[tuple[int, int, int]]:
    """(start, end, index into ``phrases``) of each non-negated mention, in text order; a
    mention right after ``not`` or ``n't`` ("is not 52") is not one."""
    out = []
    for k, p in enumerate(phrases):
        pat = _phrase(p)
        if pat is None:
            continue
        for m in pat.finditer(text):
            if not re.search(r"(?:\bnot|n't)\W*$", text[:m.start()], re.IGNORECASE):
                out.append((m.start(), m.end(), k))
    return sorted(out)


def strip_echo(question: str, completion: str, options: Sequence[str] = ()) -> str:
    """``completion`` without the words it repeats from the prompt: the whole question, each of
    its sentences of three or more words, and the stretch of the question that lists the
    ``options`` (``94 or 52``, ``26, 34 and 53``), wherever they occur."""
    pieces = [question]
    pieces += [s for s in re.split(r"(?<=[.?!:])\s+", question) if len(re.findall(r"\w+", s)) > 2]
    named = _mentions(question, options)
    if len({k for _, _, k in named}) > 1:
        pieces.append(question[named[0][0]:named[-1][1]])
    for piece in sorted(pieces, key=len, reverse=True):
        pat = _phrase(piece)
        if pat is not None:
            completion = re.sub(pat.pattern + r"[^\w\s]*", " ", completion, flags=re.IGNORECASE)
    return completion


#: where a base model's continuation starts a new few-shot example
_NEXT_EXAMPLE = re.compile(r"\n\s*\n|\nQ:|\nQuestion:")


def first_answer(text: str) -> str:
    """Cut a base model's continuation at the start of a new few-shot example."""
    return _NEXT_EXAMPLE.split(text, maxsplit=1)[0]


def reply(completion: str, chat: bool) -> str:
    """The part of a completion that answers: a chat reply whole; a base model's continuation
    up to where it starts a new few-shot example (:func:`first_answer`)."""
    return completion if chat else first_answer(completion)


def answer_complete(text: str) -> bool:
    """True once ``text`` holds the start of a new few-shot example: then no continuation
    changes :func:`first_answer` (the cut is the leftmost match, and a match further left
    would have to be made of characters already there), so decoding can stop exactly."""
    return _NEXT_EXAMPLE.search(text) is not None


# ---- a letter from generated text (multiple choice, scoring="generate") ---------------------

#: MMLU-Pro's own answer extraction (its evaluation script), tried in order: "the answer is
#: (X)", then "Answer: X", then the last standalone option letter in the text
_LETTER_PATTERNS = (r"answer is \(?([{L}])\b", r".*[aA]nswer:\s*\(?([{L}])\b",
                    r"\b([{L}])\b(?!.*\b[{L}]\b)")


def extract_letter(text: str, n_options: int) -> str | None:
    """The option letter a generated answer gives (``A``..), None when it names none.

    MMLU-Pro's extraction, restricted to the item's ``n_options`` letters and with a word
    boundary after the letter ("the answer is Abraham" names no option); unlike its script,
    a text with no letter is no answer (the script guesses one at random). Its last resort,
    the last standalone letter, is lenient ("I think" reads as option I): kept, as MMLU-Pro's
    evaluation uses it.
    """
    if not 1 <= n_options <= len(LETTERS):
        raise OptionError(f"n_options must be 1..{len(LETTERS)}, got {n_options}.")
    letters = LETTERS[:n_options]
    for pattern in _LETTER_PATTERNS:
        found = re.search(pattern.format(L=letters), text, re.DOTALL)
        if found:
            return found.group(1)
    return None


# ---- generative choices ----------------------------------------------------------------------

_ALTERNATIVE = re.compile(r"[\s,]*(?:\band/or\b|\bor\b|\bnor\b|/)[\s,]*", re.IGNORECASE)
_LISTING = re.compile(r"[\s,]*\band\b[\s,]*", re.IGNORECASE)
_COMMA = re.compile(r"[\s,]*")


def _judge_choice(item: Item, text: str) -> tuple[bool, str]:
    """The option the completion names first is its answer, with two exceptions for options
    named together: joined by ``and`` they are the model listing them (skipped: "Between 52
    and 94, 94 is larger"); joined by ``or``, ``nor`` or ``/`` they are a hedge ("yes or no"),
    which is wrong. A comma alone joins nothing ("Yes, no doubt")."""
    found = _mentions(text, item.options)
    i = 0
    while i < len(found):
        chain, joins, j = [found[i][2]], set(), i
        while j + 1 < len(found) and found[j + 1][2] not in chain:
            gap = text[found[j][1]:found[j + 1][0]]
            kind = next((k for k, pat in (("or", _ALTERNATIVE), ("and", _LISTING),
                                          (",", _COMMA)) if pat.fullmatch(gap)), None)
            if kind is None:
                break
            joins.add(kind)
            chain.append(found[j + 1][2])
            j += 1
        if "or" in joins:
            return False, " or ".join(item.options[k] for k in chain)
        if "and" not in joins:
            pred = item.options[found[i][2]]
            return pred == item.answer, pred
        i = j + 1
    return False, ""


# ---- text answers ----------------------------------------------------------------------------

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "mt", "jr", "sr", "prof", "no", "vs", "etc",
                  "co", "inc", "ltd", "ft", "gen", "col", "capt", "lt", "sgt", "rev", "fr"}
_FILLER = re.compile(r"(?:sure|certainly|of course|okay|ok|great question|good question|hello|hi"
                     r"|well|hmm)\W*", re.IGNORECASE)
_SEPARATOR = re.compile(r"\s*(?:,\s*(?:and|or|nor)\b|,|;|/|\b(?:and|or|nor)\b)\s*", re.IGNORECASE)
# a chunk starting with one of these is a clause about the answer, not another candidate
_CLAUSE = {"which", "who", "whom", "whose", "where", "when", "that", "not", "but", "because",
           "since", "so", "as", "while", "although", "though", "is", "was", "are", "were", "has",
           "had", "it", "its", "he", "she", "they", "this", "these", "known", "located", "also"}


def _sentences(text: str) -> list[str]:
    """``text`` cut at line breaks and sentence ends (not after initials or abbreviations:
    ``J. K. Rowling``, ``Washington, D.C.``, ``St. Louis``)."""
    out, start = [], 0
    for m in re.finditer(r"[.!?]+(?=\s|$)|\n", text):
        if m.group()[0] == ".":
            before = re.search(r"(\w+)$", text[start:m.start()])
            word = before.group(1) if before else ""
            if (len(word) == 1 and word.isalpha()) or word.lower() in _ABBREVIATIONS:
                continue
        out.append(text[start:m.end()].strip())
        start = m.end()
    out.append(text[start:].strip())
    return [s for s in out if re.search(r"\w", s)]


def _hedged(sentence: str, gold: list[tuple[int, int, int]]) -> bool:
    """True when the gold answer is one of several candidates in ``sentence``: a list whose items
    are joined by ``or`` (``Paris or London``, ``Paris, London or Rome``), or a list of three or
    more ending in ``and`` (``a politician, lawyer, and author``) or made of short items only
    (``London, Paris, Rome``). After the first, an item is a chunk of at most four words that
    does not start a clause (``which is ...``, ``not Sydney``, ``, the capital``); any other
    chunk ends the list."""
    cuts = [m for m in _SEPARATOR.finditer(sentence)
            if not any(a < m.end() and m.start() < b for a, b, _ in gold)]
    bounds = [0, *(x for m in cuts for x in m.span()), len(sentence)]
    spans = [(bounds[2 * k], bounds[2 * k + 1]) for k in range(len(cuts) + 1)]
    joins = ["or" if re.search(r"\bn?or\b|/", m.group(), re.IGNORECASE)
             else "and" if re.search(r"\band\b", m.group(), re.IGNORECASE) else ","
             for m in cuts]  # joins[k - 1] joins chunk k to the one before it
    short = []
    for k, (a, b) in enumerate(spans):
        words = [w.lower() for w in re.findall(r"\w+", sentence[a:b])]
        # after a comma or "and", "the ..." describes the answer ("Paris, the capital and
        # largest city"); after "or" it is another candidate ("the Nile or the Amazon")
        clause = _CLAUSE if k and joins[k - 1] == "or" else _CLAUSE | {"the", "a", "an"}
        short.append(0 < len(words) <= 4 and words[0] not in clause)
    runs: list[list[int]] = []
    for k in range(len(spans)):
        if k and short[k]:
            runs[-1].append(k)
        else:
            runs.append([k])
    for run in runs:
        has = [any(a <= s < b for s, _, _ in gold) for a, b in (spans[k] for k in run)]
        if not any(has) or all(has):
            continue
        kinds = [joins[k - 1] for k in run[1:]]
        if "or" in kinds or (len(run) >= 3 and (kinds[-1] == "and" or short[run[0]])):
            return True
    return False


def _judge_text(item: Item, text: str) -> tuple[bool, str]:
    """The gold answer or an alias, as whole words and not negated, in the first sentence of
    the answer (after any "Sure!"), and not one of several candidates (see :func:`_hedged`)."""
    sentences = _sentences(text)
    while len(sentences) > 1 and _FILLER.fullmatch(sentences[0]):
        sentences = sentences[1:]
    sentence = sentences[0] if sentences else ""
    gold = _mentions(sentence, [item.answer, *item.aliases])
    return bool(gold) and not _hedged(sentence, gold), sentence[:80]


def judge(item: Item, completion: str) -> tuple[bool, str]:
    """(correct, the answer taken from the completion) for a generative completion.

    The echoed question is removed first (:func:`strip_echo`). Then by ``item.answer_type``:

    * ``number``: :func:`extract_answer`, compared with math-verify (``4.50`` = ``4.5``,
      ``\\frac{1}{2}`` = ``0.5``).
    * ``choice``: the option named first; options offered as alternatives (``yes or no``,
      ``94/52``) are a hedge, and wrong.
    * ``text``: the gold answer or an alias as whole words in the first sentence, unless the
      sentence names it among other candidates (``Paris, London or Rome``), which is a hedge.
    """
    if item.answer_type not in ANSWER_TYPES:
        raise OptionError(f"Unknown answer_type {item.answer_type!r} for item {item.id}: use "
                          f"one of {ANSWER_TYPES}.")
    text = strip_echo(item.question, completion,
                      item.options if item.answer_type == "choice" else ())
    if item.answer_type == "number":
        return _judge_number(item, text)
    if item.answer_type == "choice":
        return _judge_choice(item, text)
    return _judge_text(item, text)
