"""Saving figures: ``figures/<notebook>_<name>.html`` and ``.png`` (static export offline with
kaleido driving Debian's Chromium; set ``$STEERLAB_FIGURES`` to write elsewhere)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import plotly.graph_objects as go


def figures_dir() -> Path:
    env = os.environ.get("STEERLAB_FIGURES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "figures"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def save_figure(fig: go.Figure, notebook: str, name: str, png: bool = True,
                out_dir: str | Path | None = None) -> list[Path]:
    """Write ``<notebook>_<name>.html`` (self-contained) and, when a Chromium is available for
    kaleido, ``.png``. Returns the paths written."""
    out = Path(out_dir) if out_dir is not None else figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{notebook}_{name}"
    paths = [stem.with_suffix(".html")]
    fig.write_html(paths[0], include_plotlyjs="directory")  # one plotly.min.js beside them
    if png and _chromium():  # kaleido 1.x finds Debian's chromium on PATH by itself
        fig.write_image(stem.with_suffix(".png"), scale=2)
        paths.append(stem.with_suffix(".png"))
    return paths
