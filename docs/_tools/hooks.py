"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks:``).

* the executed notebooks (``build/docs/notebooks/``, made by ``docs/_tools/notebooks.py``) and
  the lessons' exercise notebooks join the site as ``notebooks/NN_name`` and
  ``lessons/NN_name_exercises`` pages, rendered by mkdocs-jupyter;
* every public name of ``steerlab`` must have a docstring of its own and a ``:::`` entry on an
  API reference page (``docs/reference/``); a missing one is a warning, so
  ``mkdocs build --strict`` (``make docs``) fails naming it;
* ``<!-- steerlab-cli -->`` in a page becomes the ``--help`` of every ``steerlab`` command, taken
  from the parser itself (``steerlab.cli.build_parser``).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import os
import re
import sys
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

sys.path.insert(0, str(Path(__file__).resolve().parent))
from griffe_roles import plain  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "build" / "docs" / "notebooks"
LESSONS = ROOT / "lessons"
REFERENCE = ROOT / "docs" / "reference"
FIGURES = ROOT / "figures"
log = logging.getLogger("mkdocs.hooks.steerlab")


def public_names() -> dict[str, str]:
    """``{name: defining module}`` of every public name of ``steerlab`` (``__version__``
    aside: a string has no docstring of its own)."""
    sys.path.insert(0, str(ROOT))
    import steerlab

    return dict(steerlab._API)


def own_docstring(obj: object) -> str:
    """The docstring written for ``obj`` itself: not one inherited from a base class, not the
    signature that ``@dataclass`` puts on a class that has none."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not isinstance(doc, str):
        return ""
    if isinstance(obj, type) and dataclasses.is_dataclass(obj) \
            and doc.startswith(f"{obj.__name__}("):
        return ""
    return inspect.cleandoc(doc)


def undocumented() -> list[str]:
    """Public names without a docstring of their own."""
    import importlib

    missing = []
    for name, module in public_names().items():
        obj = getattr(importlib.import_module(module), name)
        if not own_docstring(obj).strip():
            missing.append(f"{module}.{name}")
    return missing


def unreferenced() -> list[str]:
    """Public names no API page renders (a ``::: module.name`` line, or ``module.name`` in a
    ``members:`` list under ``::: module``)."""
    text = "\n".join(p.read_text() for p in sorted(REFERENCE.rglob("*.md")))
    entries = set(re.findall(r"^::: *([\w.]+)", text, flags=re.M))
    missing = []
    for name, module in public_names().items():
        if f"{module}.{name}" in entries:
            continue
        # ::: steerlab.module with this name among its members
        block = re.search(rf"^::: *{re.escape(module)}\s*\n((?:[ \t]+.*\n?)*)", text, flags=re.M)
        if block and re.search(rf"^\s*-\s*{re.escape(name)}\s*$", block.group(1), flags=re.M):
            continue
        missing.append(f"{module}.{name}")
    return missing


def on_pre_build(config, **kwargs) -> None:
    for qual in undocumented():
        log.warning("public name without a docstring: %s (write one: the API reference is "
                    "generated from it)", qual)
    for qual in unreferenced():
        log.warning("public name on no API page: %s (add '::: %s' to a page in "
                    "docs/reference/)", qual, qual)


def _file(config, src_dir: Path, path: Path) -> File:
    """``path`` as a site file at its place below ``src_dir`` (a real file, so mkdocs-jupyter,
    which reads notebooks by path, can render it)."""
    return File(path.relative_to(src_dir).as_posix(), src_dir=str(src_dir),
                dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)


@event_priority(100)  # before mkdocs-jupyter's on_files, which turns .ipynb files into pages
def on_files(files: Files, config, **kwargs) -> Files:
    executed = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not executed:
        log.warning("no executed notebooks in %s: build the site with `make docs` (it runs "
                    "docs/_tools/notebooks.py first)", NOTEBOOKS.relative_to(ROOT))
    for path in executed:  # build/docs/notebooks/NN.ipynb -> notebooks/NN/
        files.append(_file(config, NOTEBOOKS.parent, path))
    for path in sorted(LESSONS.glob("[0-9][0-9]_*_exercises.ipynb")):
        files.append(_file(config, ROOT, path))
    # plotly.js of the plotly that made the notebooks' figures (docs/_tools/notebooks.py)
    from plotly.offline import get_plotlyjs

    files.append(File.generated(config, "assets/plotly.min.js", content=get_plotlyjs()))
    # the recorded figures' PNGs (the pages show them; the notebook pages draw their own)
    for path in sorted(FIGURES.glob("*.png")):
        if "failure" not in path.name:
            files.append(_file(config, ROOT, path))
    return files


def _cli_help() -> str:
    """Every ``steerlab`` command's ``--help``, as markdown."""
    sys.path.insert(0, str(ROOT))
    os.environ["COLUMNS"] = "88"  # argparse wraps at the terminal's width: fix it
    from steerlab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["## `steerlab`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, p in sub.choices.items():
        out += [f"## `steerlab {name}`", "", "```text", p.format_help().rstrip(), "```", ""]
    return "\n".join(out)


def _api_index() -> str:
    """A table of every public name: a link to its entry (autorefs) and its docstring's first
    sentence."""
    import importlib

    rows = ["| name | module | what it is |", "|---|---|---|"]
    for name, module in public_names().items():
        obj = getattr(importlib.import_module(module), name)
        first = plain(own_docstring(obj).split("\n\n")[0].replace("\n", " "))
        first = re.split(r"(?<=\.)\s+(?=[A-Z])", first, maxsplit=1)[0]  # the first sentence
        if len(first) > 160:
            first = first[:160].rsplit(" ", 1)[0]
            if first.count("`") % 2:  # do not cut a code span in two
                first = first[:first.rindex("`")].rstrip("` ")
            first += " …"
        first = first.replace("|", "\\|")
        rows.append(f"| [`{name}`][{module}.{name}] | `{module}` | {first} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if "<!-- steerlab-cli -->" in markdown:
        markdown = markdown.replace("<!-- steerlab-cli -->", _cli_help())
    if "<!-- steerlab-api-index -->" in markdown:
        markdown = markdown.replace("<!-- steerlab-api-index -->", _api_index())
    return markdown
