"""One source, two notebooks: ``lessons/NN_name.py`` -> ``NN_name_exercises.ipynb`` and
``NN_name_solutions.ipynb``.

A lesson is a jupytext percent script. Inside a code cell, an exercise is marked like this::

    def mean_difference(pos, neg):
        # EXERCISE
        # Hint: average each set over its prompts (dim=0), then subtract.
        # SOLUTION
        return pos.mean(dim=0) - neg.mean(dim=0)
        # END SOLUTION

The solutions notebook keeps the solution lines (no markers, no hint); the exercises notebook
keeps the hint lines and replaces the solution by ``raise NotDoneYet()`` at the same
indentation. Both are written deterministically: stable cell ids, no outputs, fixed metadata,
so a rebuild is byte-identical (a test checks the committed files).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlab.errors import SteerlabError

VARIANTS = ("exercises", "solutions")
STUB = "raise NotDoneYet()"
_MARK = re.compile(r"^(\s*)# (EXERCISE|SOLUTION|END SOLUTION)\s*$")


class LessonFormatError(SteerlabError, ValueError):
    """A lesson source whose exercise markers are out of order or unclosed."""


def lessons_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "lessons"


def sources(root: Path | None = None) -> list[Path]:
    """The lesson sources ``NN_name.py``, in order."""
    return sorted((root or lessons_dir()).glob("[0-9][0-9]_*.py"))


def split_cell(source: str, where: str = "cell") -> dict[str, str]:
    """The exercise and solution versions of one cell's source.

    Raises:
        LessonFormatError: markers out of order, unclosed, or at different indentations, or a
            hint line that is not a comment.
    """
    out: dict[str, list[str]] = {v: [] for v in VARIANTS}
    state, indent = "code", ""
    for n, line in enumerate(source.split("\n"), start=1):
        mark = _MARK.match(line)
        if mark:
            expected = {"code": "EXERCISE", "hint": "SOLUTION", "solution": "END SOLUTION"}
            if mark.group(2) != expected[state] or (state != "code" and mark.group(1) != indent):
                raise LessonFormatError(f"{where}, line {n}: found '# {mark.group(2)}' where "
                                        f"'# {expected[state]}' was expected (at the same "
                                        "indentation as the exercise's other markers).")
            indent = mark.group(1)
            state = {"EXERCISE": "hint", "SOLUTION": "solution", "END SOLUTION": "code"}[
                mark.group(2)]
            if state == "code":
                out["exercises"].append(indent + STUB)
            continue
        if state == "hint":
            if not line.strip().startswith("#"):
                raise LessonFormatError(f"{where}, line {n}: between '# EXERCISE' and "
                                        f"'# SOLUTION' only comment lines (hints) may stand; "
                                        f"got {line.strip()!r}.")
            out["exercises"].append(line)
        elif state == "solution":
            out["solutions"].append(line)
        else:
            out["exercises"].append(line)
            out["solutions"].append(line)
    if state != "code":
        raise LessonFormatError(f"{where}: '# EXERCISE' block not closed by '# END SOLUTION'.")
    return {v: "\n".join(lines) for v, lines in out.items()}


def _banner(src: Path, variant: str) -> str:
    made = f"generated from `lessons/{src.name}` by `steerlab teach build`"
    if variant == "exercises":
        return (f"*Exercises, {made}. A rebuild overwrites this file: work in your own copy "
                "(`steerlab teach build --out my_lessons/`).* Fill in each function that raises "
                "`NotDoneYet` (the hint is in the comments above the stub), then run the check "
                "cell after it.")
    return f"*Solutions, {made}; edit the source, not this file.* Every check should pass."


def render(src: Path) -> dict[str, str]:
    """Both notebooks of one lesson, as JSON text (no outputs, stable ids)."""
    import jupytext
    import nbformat

    nb = jupytext.read(src)
    texts = {}
    for variant in VARIANTS:
        cells: list[Any] = [nbformat.v4.new_markdown_cell(_banner(src, variant))]
        for i, cell in enumerate(nb.cells):
            source = cell.source
            if cell.cell_type == "code":
                source = split_cell(source, f"{src.name}, cell {i}")[variant]
            make = (nbformat.v4.new_code_cell if cell.cell_type == "code"
                    else nbformat.v4.new_markdown_cell)
            cells.append(make(source))
        for i, cell in enumerate(cells):
            cell.id = f"{src.stem[:2]}-{variant[0]}{i:02d}"
        out = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {
            "name": "python3", "display_name": "Python 3", "language": "python"}})
        texts[variant] = nbformat.writes(out) + "\n"
    return texts


def exercise_functions(src: Path, variant: str = "solutions") -> dict[str, Any]:
    """The functions a lesson's exercise cells define, in the ``variant`` version: runs the
    lesson's first code cell (imports only, by convention) and every cell holding an
    exercise, nothing else (no model is loaded). Tests grade the solutions and stubs this way.
    """
    import jupytext

    cells = [c.source for c in jupytext.read(src).cells if c.cell_type == "code"]
    namespace: dict[str, Any] = {}
    for i, source in enumerate(cells):
        if i == 0 or "# EXERCISE" in source:
            code = split_cell(source, f"{src.name}, code cell {i}")[variant]
            exec(compile(code, f"{src.name}:{variant}:{i}", "exec"), namespace)  # noqa: S102
    return {k: v for k, v in namespace.items()
            if callable(v) and k in _defined_names(src)}


def _defined_names(src: Path) -> set[str]:
    return set(re.findall(r"^def (\w+)\(", src.read_text(), flags=re.M))


def target(src: Path, variant: str, out_dir: Path | None = None) -> Path:
    return (out_dir or src.parent) / f"{src.stem}_{variant}.ipynb"


def build(check: bool = False, out_dir: Path | None = None,
          root: Path | None = None) -> list[Path]:
    """Write every lesson's two notebooks (next to the sources, or into ``out_dir``).

    Args:
        check: write nothing; only return the notebooks that are missing or out of date.
        out_dir: where to write (default: ``lessons/``), e.g. a participant's own folder.
        root: the lessons directory (default: the repo's ``lessons/``).

    Returns:
        The notebooks written (or, with ``check``, out of date).
    """
    changed = []
    if out_dir is not None and not check:
        out_dir.mkdir(parents=True, exist_ok=True)
    for src in sources(root):
        for variant, text in render(src).items():
            path = target(src, variant, out_dir)
            if not path.is_file() or path.read_text() != text:
                changed.append(path)
                if not check:
                    path.write_text(text)
    return changed


def execute(path: Path, timeout: int = 1800) -> tuple[Any, float]:
    """Run a notebook top to bottom in a fresh kernel (cwd = its folder; ``STEERLAB_SMOKE`` is
    inherited). Returns the executed notebook and the seconds it took; raises on a cell error."""
    import nbformat

    from steerlab.notebook_runner import execute as run_notebook

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    run_notebook(nb, path.parent, timeout)
    return nb, time.perf_counter() - t0


def outputs_text(nb: Any) -> str:
    """All stream and text outputs of an executed notebook, joined (what the checks printed)."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def run(names: Sequence[str] = (), variant: str = "solutions",
        timeout: int = 1800) -> list[tuple[str, float]]:
    """Execute the lessons' ``variant`` notebooks (all, or those whose name or number is in
    ``names``) and print one line per notebook with its time."""
    done = []
    for src in sources():
        if names and src.stem not in names and src.stem[:2] not in names:
            continue
        path = target(src, variant)
        print(f"{path.name} ...", flush=True)
        _, sec = execute(path, timeout)
        done.append((path.name, sec))
        print(f"{path.name} done in {sec:.0f} s", flush=True)
    return done
