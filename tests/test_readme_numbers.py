"""Every number in the results tables of the README and the documentation (every ``.md`` under
``docs/``) comes from a file the code wrote.

Each results table (a markdown table) and each quoted output (an untagged fenced block) in
``README.md`` or a page of ``docs/`` that holds a decimal number is introduced by a marker on
the line before it:

    <!-- numbers: results/sweep_smollm2_memorisation-mc.txt bench/results.jsonl -->

naming the file(s) (or a directory of them) it was copied from; ``<!-- numbers: examples -->``
marks a table of example arguments (no results), ``<!-- numbers: none: WHY -->`` a table whose
decimals are not measurements (exercise numbers such as 1.1), and
``<!-- numbers: unrecorded: WHY -->`` a table whose numbers an older run printed without
writing them to a file (reported as a skip with its reason, so the gap stays visible until a
run records them). This test reads the named files and checks that every decimal number of
the block appears in them at the precision the page shows it (percentages also as fractions,
signs ignored). A table or output block with decimals and no marker fails: say where its
numbers come from.
"""

from __future__ import annotations

import bisect
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"^<!-- numbers: (.+?) -->\s*$")
#: a decimal in the README: optional sign, digits (thousands commas allowed), a point, digits,
#: optionally a percent sign or an "x" (ratio); not part of a word, a version or a path
README_NUMBER = re.compile(
    r"(?<![\w.])[-+−]?(\d{1,3}(?:,\d{3})+|\d+)\.(\d+)(?:e([-+]?\d+))?(%|x\b)?(?![\w.]*\d)")
FILE_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, kind, body) of every markdown table and untagged fenced block."""
    lines = text.split("\n")
    out, i = [], 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            if line.strip() == "```":  # tagged blocks (bash, python) are commands, not output
                out.append((i, "output", "\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[-:| ]+\|$",
                                                                   lines[i + 1].strip()):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            out.append((i, "table", "\n".join(lines[i:j])))
            i = j
            continue
        i += 1
    return out


def _marker(lines: list[str], at: int) -> str | None:
    k = at - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    m = MARKER.match(lines[k].strip()) if k >= 0 else None
    return m.group(1) if m else None


def _file_text(path: Path) -> str:
    if path.is_dir():
        return "\n".join(_file_text(p) for p in sorted(path.rglob("*"))
                         if p.is_file() and p.suffix in {".txt", ".json", ".jsonl", ".md",
                                                         ".csv", ".parquet"})
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_csv(index=False)
    return path.read_text()


def _numbers(text: str) -> list[float]:
    vals = []
    for tok in FILE_NUMBER.findall(text):
        try:
            vals.append(abs(float(tok)))
        except ValueError:
            continue
    return sorted(vals)


def _found(value: float, decimals: int, pool: list[float], exponent: int = 0) -> bool:
    """Some number of ``pool`` shows as ``value`` when rounded to ``decimals`` places (of the
    mantissa, for a number written ``2.01e-21``)."""
    half = 0.5 * 10.0 ** (exponent - decimals) * (1 + 1e-9) + (1e-9 if not exponent else 0)
    k = bisect.bisect_left(pool, value - half)
    return k < len(pool) and pool[k] <= value + half


def _check(body: str, pool: list[float]) -> list[str]:
    missing = []
    for m in README_NUMBER.finditer(body):
        whole, frac, unit = m.group(1).replace(",", ""), m.group(2), m.group(4)
        exponent = int(m.group(3) or 0)
        value = float(f"{whole}.{frac}") * 10.0 ** exponent
        ok = _found(value, len(frac), pool, exponent)
        if not ok and unit == "%":  # 7.1% may be recorded as 0.071
            ok = _found(value / 100, len(frac) + 2, pool)
        if not ok:
            missing.append(m.group(0))
    return missing


#: the README and every page of the documentation site (docs/, the pages moved out of the README)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINES = {p.relative_to(ROOT).as_posix(): p.read_text().split("\n") for p in PAGES}
BLOCKS = [(page, at, kind, body) for page, lines in LINES.items()
          for at, kind, body in _blocks("\n".join(lines)) if README_NUMBER.search(body)]


def test_the_pages_are_read():
    assert "README.md" in LINES and "docs/results/sweeps.md" in LINES, sorted(LINES)
    assert any(page.startswith("docs/") for page, *_ in BLOCKS), "no docs page quotes a number"


def test_every_results_block_names_its_files():
    unmarked = [f"{page}:{at + 1} ({kind}): {LINES[page][at][:70]!r}"
                for page, at, kind, _ in BLOCKS if _marker(LINES[page], at) is None]
    assert not unmarked, ("These blocks hold numbers but do not say which results file they "
                          "come from; put '<!-- numbers: results/FILE -->' on the line before "
                          "each:\n" + "\n".join(unmarked))


@pytest.mark.parametrize("page,at,kind,body", BLOCKS,
                         ids=[f"{page}:{at + 1}" for page, at, _, _ in BLOCKS])
def test_block_numbers_appear_in_the_named_files(page, at, kind, body):
    spec = _marker(LINES[page], at)
    if spec is None or spec.strip() == "examples" or spec.startswith("none:"):
        pytest.skip("no results named (the test above reports unmarked blocks)")
    if spec.startswith("unrecorded"):
        pytest.skip(f"{page}:{at + 1}: {spec}")
    files = [ROOT / f for f in spec.split()]
    absent = [str(f.relative_to(ROOT)) for f in files if not f.exists()]
    assert not absent, f"{page}:{at + 1} names files that do not exist: {absent}"
    pool = _numbers("\n".join(_file_text(f) for f in files))
    missing = _check(body, pool)
    assert not missing, (f"{page}:{at + 1} ({kind}) quotes numbers that are in none of "
                         f"{spec.split()}: {missing[:12]}{' ...' if len(missing) > 12 else ''}")


def test_an_unmarked_block_is_caught():
    text = "Some prose.\n\n| a | b |\n|---|---|\n| x | 0.123 |\n"
    lines = text.split("\n")
    blocks = [(at, kind) for at, kind, body in _blocks(text) if README_NUMBER.search(body)]
    assert blocks == [(2, "table")] and _marker(lines, 2) is None
    marked = "<!-- numbers: results/x.txt -->\n" + text.split("\n\n", 1)[1]
    assert _marker(marked.split("\n"), 1) == "results/x.txt"


def test_the_checker_catches_a_number_that_is_not_in_the_file():
    pool = _numbers(json.dumps({"acc": 0.5804, "ratio": 1.5324, "overhead": 0.0712}))
    assert _check("| 0.580 | 1.53x | +7.1% |", pool) == []
    assert _check("| 0.581 |", pool) == ["0.581"]
    assert _check("| 0.58 [0.51, 0.65] |", pool) == ["0.51", "0.65"]
    tiny = _numbers("p 2.0126e-21")
    assert _check("p 2.01e-21", tiny) == [] and _check("p 2.02e-21", tiny) == ["2.02e-21"]
