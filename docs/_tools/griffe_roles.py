"""A griffe extension for the API reference: the docstrings are written with Sphinx roles
(``:func:`steer```, ``:class:`~steerlab.vectors.SteeringVector```), which Markdown would show
literally; each becomes inline code of the name (``steer``, ``SteeringVector``). Doctest lines
(``>>>``, ``...``), which Markdown would read as nested quotes, become a Python code block."""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:func|class|data|meth|attr|mod|obj|exc):`~?([^`]+)`")


def doctest_blocks(text: str) -> str:
    """Each run of ``>>>`` / ``...`` lines (and the output lines right after them) fenced as
    Python, at the run's own indentation."""
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        out.append(f"{indent}```python")
        while i < len(lines) and lines[i].strip() and lines[i].startswith(indent):
            out.append(lines[i])
            i += 1
        out.append(f"{indent}```")
    return "\n".join(out)


def plain(text: str) -> str:
    """``:func:`name``` -> ``name`` in backticks (a leading ``~`` keeps the last part only)."""
    def code(m: re.Match[str]) -> str:
        name = m.group(1)
        return f"`{name.rsplit('.', 1)[-1] if m.group(0).count('`~') else name}`"
    return ROLE.sub(code, text)


class SphinxRoles(griffe.Extension):
    """Rewrite the roles in every docstring as it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = doctest_blocks(plain(obj.docstring.value))
