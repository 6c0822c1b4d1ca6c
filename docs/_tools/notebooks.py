"""The executed notebooks the documentation site renders (``make docs`` runs this first).

For each numbered notebook, the executed copy in ``notebooks/executed/`` (what ``make run`` and
``steerlab notebooks`` write) is used when its code cells are the current notebook's, else a
smoke run's copy in ``build/docs/executed-smoke/`` (written by an earlier ``make docs``, and by
``tests/test_notebooks.py``, which runs every notebook in smoke mode anyway); the notebooks
with neither (a fresh clone) are run first with the project's own runner
(:func:`steerlab.notebook_runner.run`) in smoke mode (``STEERLAB_SMOKE=1``: small data, the
same code paths) into ``build/docs/executed-smoke/``, their figures and results under
``build/docs/`` so that ``figures/`` and ``results/`` keep the recorded run's. Each copy then
gets a note under its title saying which run it came from, and goes to
``build/docs/notebooks/``, which ``docs/_tools/hooks.py`` adds to the site.

    python docs/_tools/notebooks.py          # reuse what is there, run the rest in smoke mode
    python docs/_tools/notebooks.py --check  # only say what would be run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
EXECUTED = ROOT / "notebooks" / "executed"
BUILD = ROOT / "build" / "docs"
SMOKE = BUILD / "executed-smoke"
OUT = BUILD / "notebooks"
#: metadata key of an executed notebook that records its run (written here after a smoke run)
KEY = "steerlab_run"


def _code(nb: nbformat.NotebookNode) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def current(path: Path) -> tuple[bool, str]:
    """(usable, why) for the executed copy ``path``: present, with outputs, and running the
    code the committed notebook holds now."""
    if not path.is_file():
        return False, "none"
    src = nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
    done = nbformat.read(path, as_version=4)
    if _code(done) != _code(src):
        return False, "stale (its code differs from the notebook's)"
    if not any(c.get("outputs") for c in done.cells if c.cell_type == "code"):
        return False, "no outputs"
    return True, "current"


def executed_copy(stem: str) -> tuple[Path | None, str]:
    """The executed copy to render: ``notebooks/executed/`` first, then a smoke run's."""
    why = []
    for folder in (EXECUTED, SMOKE):
        ok, reason = current(folder / f"{stem}.ipynb")
        rel = folder.relative_to(ROOT).as_posix()
        if ok:
            return folder / f"{stem}.ipynb", f"{rel}/ ({reason})"
        why.append(f"{rel}/: {reason}")
    return None, "; ".join(why)


def stamp(path: Path, by: str, seconds: float | None = None) -> None:
    """Record in an executed copy that it came from a smoke run (which, when, how long)."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata[KEY] = {"mode": "smoke", "by": by,
                        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}
    if seconds is not None:
        nb.metadata[KEY]["seconds"] = round(seconds, 1)
    nbformat.write(nb, path)


def run_smoke(stems: list[str]) -> None:
    """Run ``stems`` with the project's runner in smoke mode into ``build/docs/executed-smoke/``
    and record in each copy that it was a smoke run."""
    os.environ["STEERLAB_SMOKE"] = "1"  # read by the kernels the runner starts
    os.environ.setdefault("STEERLAB_FIGURES", str(BUILD / "figures"))  # not figures/
    os.environ.setdefault("STEERLAB_RESULTS", str(BUILD / "results"))  # nothing near results/
    from steerlab import notebook_runner

    t0 = time.perf_counter()
    done = notebook_runner.run(stems, out_dir=SMOKE)
    print(f"docs: ran {len(done)} notebooks in smoke mode in {time.perf_counter() - t0:.0f} s",
          flush=True)
    for stem, seconds in done:
        stamp(SMOKE / f"{stem}.ipynb", "make docs (docs/_tools/notebooks.py)", seconds)


def provenance(nb: nbformat.NotebookNode, path: Path) -> str:
    """One sentence: which run an executed copy came from."""
    rec = nb.metadata.get(KEY) or {}
    mode = rec.get("mode")
    if mode is None and isinstance(nb.metadata.get("steerlab"), dict) \
            and "smoke" in nb.metadata["steerlab"]:
        mode = "smoke" if nb.metadata["steerlab"]["smoke"] else "full"
    if mode is None and "[smoke run" in nbformat.writes(nb):  # what notebook 05 prints then
        mode = "smoke"
    date = rec.get("date") or dt.datetime.fromtimestamp(
        path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if mode == "smoke":
        return (f"**Executed in smoke mode** (`STEERLAB_SMOKE=1`: a few prompts and items, the "
                f"same code paths) on {date}"
                + (f" in {rec['seconds']:.0f} s" if "seconds" in rec else "")
                + ". Its numbers are too small to mean anything: the measured results are on "
                "the [Results](../../results/) pages, and `make run` renders a full run here.")
    if mode == "full":
        return (f"**Executed in a full run** (`make run` / `steerlab notebooks`) on {date}; "
                "its numbers are discussed on the [Results](../../results/) pages.")
    return (f"Executed by `make run` or `steerlab notebooks` on {date} (file date); the copy "
            "does not record whether `STEERLAB_SMOKE=1` was set, so read its numbers as a "
            "smoke run's unless you made it with a full run. The measured results are on the "
            "[Results](../../results/) pages.")


PLOTLY_JS = "../../assets/plotly.min.js"  # from a notebook page (notebooks/NN_name/)
WIDGET = "application/vnd.jupyter.widget-view+json"
PLOTLY = "application/vnd.plotly.v1+json"
PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar's text fallback


def static_outputs(nb: nbformat.NotebookNode) -> None:
    """Outputs a static page can show: each plotly figure (the kernel sends only plotly's own
    JSON, which nbconvert does not render) also as HTML drawn by the site's plotly.js (loaded
    before the first figure); widgets, which need a kernel, as a short note (progress bars,
    whose saved text is their first frame, are dropped)."""
    import plotly.io as pio

    first = True
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if WIDGET in data:
                if PROGRESS.search(str(data.get("text/plain", ""))):
                    continue
                out["data"] = {"text/html": "<p><em>(an interactive widget: it needs a running "
                               "kernel, so run the notebook to use it)</em></p>",
                               "text/plain": "(widget)"}
            elif PLOTLY in data and "text/html" not in data:
                fig = dict(data[PLOTLY])
                # the page's column sets the width (a figure made wider than it is clipped)
                fig["layout"] = {k: v for k, v in dict(fig.get("layout", {})).items()
                                 if k != "width"} | {"autosize": True}
                # not validated: a copy executed under another plotly may carry trace types
                # this one no longer knows (plotly 6's scattermapbox in plotly 7); plotly.js,
                # which draws it, does
                html = pio.to_html(fig, include_plotlyjs=False, full_html=False,
                                   config={"responsive": True}, validate=False)
                if first:
                    html = f'<script src="{PLOTLY_JS}"></script>\n' + html
                    first = False
                data["text/html"] = html
            kept.append(out)
        cell["outputs"] = kept
    nb.metadata.pop("widgets", None)


def bannered(stem: str, path: Path) -> Path:
    """Write ``build/docs/notebooks/<stem>.ipynb``: the executed copy ``path``, its outputs made
    static (:func:`static_outputs`), with a note under its title naming its run and source."""
    nb = nbformat.read(path, as_version=4)
    static_outputs(nb)
    note = (f"> {provenance(nb, path)} Source: `notebooks/{stem}.py` in the repository "
            "(jupytext; the `.ipynb` beside it has no outputs). Widgets (sliders) need a "
            "running kernel and are not shown here.")
    cell = nbformat.v4.new_markdown_cell(note)
    cell.id = f"{stem[:2]}-docs-run"
    at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
    nb.cells.insert(at, cell)
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"{stem}.ipynb"
    nbformat.write(nb, target)
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report what would be run")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from steerlab.notebook_runner import sources, sync

    sync()  # the .ipynb files from their .py sources, as the runner does
    stems = [p.stem for p in sources()]
    todo = []
    for stem in stems:
        path, why = executed_copy(stem)
        print(f"docs: {stem}: " + (f"from {why}" if path else f"{why} -> smoke run"), flush=True)
        if path is None:
            todo.append(stem)
    if args.check:
        return 0
    if todo:
        run_smoke(todo)
    for stem in stems:
        path, why = executed_copy(stem)
        if path is None:
            raise SystemExit(f"docs: no executed copy of {stem} after the smoke run ({why})")
        bannered(stem, path)
    print(f"docs: {len(stems)} executed notebooks ready in {OUT.relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
