"""Saving figures: ``figures/<notebook>_<name>.html`` and ``.png`` (static export offline with
kaleido driving Debian's Chromium; set ``$STEERLAB_FIGURES`` to write elsewhere).

A figure's HTML and PNG always come from the same run: both are rendered to temporary files
first and replace the old ones only once both rendered, and when no PNG can be written, a PNG
left by an earlier run is removed rather than left beside a newer HTML. ``make run`` is strict:
it checks the export before any notebook runs (:func:`check_png_export`) and sets
``$STEERLAB_REQUIRE_PNG=1``, under which a figure without its PNG is an error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import plotly.graph_objects as go

from steerlab import _io
from steerlab.errors import SteerlabError
from steerlab.options import env_flag

__all__ = ["INSTALL", "REQUIRE_PNG", "FigureExportError", "check_png_export", "figures_dir",
           "save_figure"]

#: the browsers kaleido can drive, by the names they have on PATH (``.ci/chromium`` looks too)
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
#: what installs the browser and the fonts the figures use (Debian/Ubuntu, as root; CI runs it)
INSTALL = "apt-get install -y chromium fonts-liberation"
#: set to 1 to make a figure that cannot get its PNG an error (``make run`` sets it)
REQUIRE_PNG = "STEERLAB_REQUIRE_PNG"


class FigureExportError(SteerlabError, RuntimeError):
    """A PNG that cannot be written (no browser for kaleido, or the export failed)."""


def figures_dir() -> Path:
    env = os.environ.get("STEERLAB_FIGURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "figures"


def _chromium() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _no_browser() -> str:
    return (f"No Chromium for the static PNG export (looked for {', '.join(BROWSERS)} on "
            f"PATH). Install it with `{INSTALL}` (as root; `sudo` otherwise), then run again.")


#: how many times a PNG export is tried before it is an error (kaleido's page sometimes is
#: not ready on a loaded CPU: "ReferenceError: kaleido_scopes is not defined")
EXPORT_TRIES = 3


def _write(fig: go.Figure, html: Path, png: Path | None) -> None:
    """Render both files to temporary paths; replace the old ones only when both rendered."""
    with _io.atomic_path(html) as tmp_html:
        fig.write_html(tmp_html, include_plotlyjs="directory")  # one plotly.min.js beside them
        if png is not None:
            with _io.atomic_path(png) as tmp_png:
                for attempt in range(1, EXPORT_TRIES + 1):
                    try:  # kaleido 1.x finds Debian's chromium on PATH by itself
                        fig.write_image(tmp_png, format="png", scale=2)
                        break
                    except Exception as err:  # noqa: BLE001 - kaleido/choreographer raise many
                        if attempt < EXPORT_TRIES:  # e.g. "kaleido_scopes is not defined": its
                            warnings.warn(  # page not loaded yet on a busy CPU
                                f"The PNG export of {png.name} failed ({type(err).__name__}); "
                                f"trying again ({attempt + 1}/{EXPORT_TRIES}).", stacklevel=2)
                            continue
                        raise FigureExportError(
                            f"The PNG export of {png.name} failed {EXPORT_TRIES} times "
                            f"({type(err).__name__}: {err}); neither {html.name} nor "
                            f"{png.name} was replaced. If the browser is missing or broken: "
                            f"`{INSTALL}`.") from err


def save_figure(fig: go.Figure, notebook: str, name: str, png: bool = True,
                out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<notebook>_<name>.html`` (self-contained) and ``.png`` from the same figure.

    Without a browser for kaleido the HTML is written alone, a PNG of that name left by an
    earlier run is removed (it would show another run's figure) and a warning names the
    install command; with ``$STEERLAB_REQUIRE_PNG=1`` (``make run``) that is a
    :class:`FigureExportError` instead, raised before anything is written. ``png=False``
    writes the HTML alone on purpose (and also removes an older PNG). A failed export
    replaces neither file.

    Returns:
        The paths written.
    """
    out = Path(out_dir) if out_dir is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{notebook}_{name}"
    html, image = stem.with_suffix(".html"), stem.with_suffix(".png")
    browser = bool(png and _chromium())
    if png and not browser and env_flag(REQUIRE_PNG):
        raise FigureExportError(f"{_no_browser()} ({REQUIRE_PNG}=1: every figure needs its PNG; "
                                f"nothing was written for {stem.name}.)")
    _write(fig, html, image if browser else None)
    if browser:
        return [html, image]
    if image.exists():
        image.unlink()
        if png:
            warnings.warn(f"{_no_browser()} Wrote {html} only, and removed the PNG an earlier "
                          "run left there, so the HTML and the PNG never disagree.",
                          stacklevel=2)
    elif png:
        warnings.warn(f"{_no_browser()} Wrote {html} only.", stacklevel=2)
    return [html]


def check_png_export() -> Path:
    """Raise :class:`FigureExportError` (with the command that fixes it) unless a PNG can be
    written here: a browser is found and a one-point figure exports. ``make run`` calls it
    (``python -m steerlab.figures``) before any notebook runs.

    Returns:
        The browser found.
    """
    browser = _chromium()
    if browser is None:
        raise FigureExportError(_no_browser())
    with tempfile.TemporaryDirectory() as tmp:
        fig = go.Figure(go.Scatter(x=[0], y=[0]))
        path = Path(tmp) / "check.png"
        try:
            fig.write_image(path, format="png")
        except Exception as err:  # noqa: BLE001 - kaleido/choreographer raise many kinds
            raise FigureExportError(f"Found {browser}, but the PNG export failed "
                                    f"({type(err).__name__}: {err}). Reinstall the browser: "
                                    f"`{INSTALL}`.") from err
        if not path.is_file() or path.stat().st_size == 0:
            raise FigureExportError(f"Found {browser}, but the PNG export wrote nothing. "
                                    f"Reinstall the browser: `{INSTALL}`.")
    return Path(browser)


if __name__ == "__main__":
    import sys

    try:
        print(f"PNG export works (browser: {check_png_export()})")
    except FigureExportError as err:
        sys.exit(f"error: {err}")
