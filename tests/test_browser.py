"""The quickstart notebook as a person uses it: JupyterLab in headless Chromium.

Starts a throwaway JupyterLab on loopback serving a copy of ``notebooks/00_quickstart.ipynb``
(``STEERLAB_SMOKE=1``), opens it, runs every cell from the Run menu, waits for the steering
explorer widget to show a generation, moves its layer slider with the keyboard and waits for the
widget to re-run. Saves a screenshot to ``figures/00_quickstart_browser.png``.

Needs Chromium (``chromium``, ``chromium-browser`` or ``google-chrome`` on PATH, or
$STEERLAB_CHROMIUM; ``make test`` finds or installs it first, as ``make run`` does) and the
``playwright`` Python package (its own browser download is not used).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    FIGURES,
    NO_CHROMIUM,
    NOTEBOOKS,
    LabServer,
    jupyter_lab,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOK = "00_quickstart.ipynb"
SCREENSHOT = FIGURES / "00_quickstart_browser.png"
FAILURE_SCREENSHOT = FIGURES / "00_quickstart_browser_failure.png"
RUN_ALL_TIMEOUT = 240.0  # smoke mode on 2 loaded cores takes ~60 s (first model load +25 s)
SLIDER_TIMEOUT = 120.0
ARROW_PRESSES = 2
STATUS_RE = re.compile(r"\| layer (\S+) \| coeff (\S+) \|")


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.skip(NO_CHROMIUM)
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _poll(page: Any, what: str, timeout: float, check: Callable[[], Any],
          fail: Callable[[], str | None] | None = None, every_ms: int = 500) -> Any:
    """Call ``check`` until it returns something truthy (returned); ``fail`` may return a
    message to stop early. Uses the page's own timer so Playwright events keep flowing."""
    t0 = time.monotonic()
    while True:
        got = check()
        if got:
            return got
        if fail is not None and (msg := fail()):
            raise AssertionError(f"while waiting for {what}: {msg}")
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        page.wait_for_timeout(every_ms)


def _text(locator: Any) -> str:
    """inner_text of the first match, '' when there is none (yet)."""
    return locator.first.inner_text(timeout=2_000).strip() if locator.count() else ""


def _tracebacks(page: Any) -> str | None:
    """The first traceback shown in any cell output, if any."""
    for text in page.locator(".jp-OutputArea-output").all_inner_texts():
        if "Traceback" in text:
            return text[-3000:]
    return None


def _diagnose(page: Any, server: LabServer, console: list[str]) -> None:
    """Print what a person looking at the screen would want to know (and save the screen)."""
    print("\n---- browser test failed: diagnostics ----")
    if page is not None:
        try:
            FIGURES.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(FAILURE_SCREENSHOT))
            print(f"screenshot: {FAILURE_SCREENSHOT}")
            print("status bar:", page.locator("#jp-main-statusbar").all_inner_texts())
            print("prompts:", page.locator(".jp-InputPrompt").all_inner_texts())
            print("steerlab status:", page.locator(".steerlab-status").all_inner_texts())
            print("traceback:", _tracebacks(page))
        except Exception as e:  # the page may be gone
            print(f"(page unavailable: {e})")
    print("browser console (last 30):", *console[-30:], sep="\n  ")
    print("jupyter server log (tail):\n" + server.log_tail(80))
    print("---- end diagnostics ----")


def _new_page(browser: Any, console: list[str]) -> Any:
    """A page of ``browser`` whose console messages and errors are kept in ``console``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.on("console", lambda m: console.append(f"[{m.type}] {m.text[:300]}"))
    page.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    return page


def _open(page: Any, server: LabServer, name: str) -> None:
    """Open notebook ``name``; wait for its cells and an idle kernel (status bar)."""
    page.goto(server.url(f"lab/tree/{name}"), wait_until="domcontentloaded")
    page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell").first.wait_for()
    page.locator("#jp-main-statusbar .jp-StatusBar-Item",
                 has_text=re.compile(r"\|\s*Idle\b")).first.wait_for(timeout=90_000)


def _run_all(page: Any) -> None:
    """Run > Run All Cells, as a person would."""
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.locator("li.lm-Menu-item[data-command='runmenu:run-all']").click()


@pytest.mark.timeout(600)
def test_quickstart_in_jupyterlab(tmp_path: Path, record_property: Any) -> None:
    _require_browser()
    from playwright.sync_api import sync_playwright

    original = _sha256(NOTEBOOKS / NOTEBOOK)
    FAILURE_SCREENSHOT.unlink(missing_ok=True)  # only a failure of this run leaves one
    timings: dict[str, float] = {}
    t0 = time.monotonic()

    def mark(name: str) -> None:
        timings[name] = round(time.monotonic() - t0, 1)

    with jupyter_lab(tmp_path, [NOTEBOOK], env={"STEERLAB_SMOKE": "1"}) as server, \
            sync_playwright() as p:
        mark("server_ready")
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = None
        console: list[str] = []
        try:
            page = _new_page(browser, console)

            # 1. open the notebook; wait for its cells and an idle kernel (status bar)
            _open(page, server, NOTEBOOK)
            mark("notebook_open_kernel_idle")
            # a wider notebook for the screenshot: collapse the file browser (its tab toggles)
            left_tab = page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current")
            if left_tab.count():
                left_tab.first.click()

            # 2. Run > Run All Cells
            _run_all(page)
            mark("run_all_clicked")

            # 3. the explorer widget shows a generation
            output = page.locator(".steerlab-output pre")
            status = page.locator(".steerlab-status")
            _poll(page, "the steering explorer's output", RUN_ALL_TIMEOUT,
                  lambda: _text(output) and STATUS_RE.search(_text(status)),
                  fail=lambda: _tracebacks(page))
            status_before, text_before = _text(status), _text(output)
            mark("explorer_shown")

            # 4. move the layer slider as a person would: focus its handle, press ArrowRight
            layer_slider = page.locator(".widget-slider").filter(
                has=page.locator("label.widget-label", has_text=re.compile(r"^\s*layer\s*$")))
            assert layer_slider.count() == 1, "one 'layer' slider expected"
            handle = layer_slider.locator(".noUi-handle[role='slider']")
            readout = layer_slider.locator(".widget-readout")
            layer_before = _text(readout)
            assert f"| layer {layer_before} |" in status_before, (layer_before, status_before)
            page.locator(".steerlab-output").first.evaluate(
                "el => el.querySelector('pre').dataset.steerlabBefore = '1'")
            handle.focus()
            for _ in range(ARROW_PRESSES):
                page.keyboard.press("ArrowRight")
                page.wait_for_timeout(300)
            layer_after = _poll(page, "the slider's readout to move", 10,
                                lambda: (r := _text(readout)) != layer_before and r)
            mark("slider_moved")
            _poll(page, f"the explorer to re-run for layer {layer_after}", SLIDER_TIMEOUT,
                  lambda: f"| layer {layer_after} |" in (s := _text(status))
                  and "computing" not in s,
                  fail=lambda: _tracebacks(page))
            status_after, text_after = _text(status), _text(output)
            rerendered = page.locator(".steerlab-output pre[data-steerlab-before]").count() == 0
            mark("explorer_rerun")

            # 5. screenshot of the explorer as it now stands
            # the explorer's output in view, not the notebook's last cell: JupyterLab 4.2's
            # windowed notebook can leave that cell "not visible" to playwright (a 60 s
            # timeout on the oldest set, 2026-12-07), while the output was just read above
            page.locator(".steerlab-output").first.scroll_into_view_if_needed()
            FIGURES.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            mark("screenshot")
        except BaseException:
            _diagnose(page, server, console)
            raise
        finally:
            browser.close()

    mark("server_stopped")
    report = {"status_before": status_before, "text_before": text_before,
              "status_after": status_after, "text_after": text_after,
              "text_changed": text_after != text_before, "output_rerendered": rerendered,
              "timings_s": timings}
    for key, value in report.items():
        print(f"{key}: {value}")
        record_property(key, value)

    layer_a = STATUS_RE.search(status_before).group(1)  # type: ignore[union-attr]
    layer_b = STATUS_RE.search(status_after).group(1)  # type: ignore[union-attr]
    assert layer_b != layer_a and int(layer_b) > int(layer_a), (status_before, status_after)
    assert STATUS_RE.search(status_after).group(2) == STATUS_RE.search(  # type: ignore[union-attr]
        status_before).group(2), "the coefficient should not move"
    assert text_after, "the explorer shows no text after the slider moved"
    assert SCREENSHOT.stat().st_size > 10_000
    assert _sha256(NOTEBOOKS / NOTEBOOK) == original, "the repository's notebook was modified"


SLIDER_CELL = """\
import plotly.graph_objects as go
from ipywidgets import IntSlider
from steerlab.widgets import slider_figure
slider_figure(lambda layer: go.Figure(go.Bar(y=[layer, 1]), layout={"title": f"LAYER {layer}"}),
              layer=IntSlider(value=2, min=0, max=9, continuous_update=False))
"""


def _titles(page: Any) -> list[str]:
    return [t or "" for t in page.locator(".js-plotly-plot .gtitle").all_text_contents()]


@pytest.mark.timeout(400)
def test_slider_figure_redraws_in_jupyterlab(tmp_path: Path) -> None:
    """``slider_figure`` shows its figure as a plain output (no ``Output`` widget, see
    tests/test_headless.py); moving its slider must still redraw that figure in JupyterLab,
    whose plotly renderer ignores a new figure in an output it has drawn."""
    _require_browser()
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    from playwright.sync_api import sync_playwright

    name = "slider_figure.ipynb"
    nb = new_notebook(cells=[new_code_cell(SLIDER_CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    with jupyter_lab(tmp_path, []) as server, sync_playwright() as p:
        nbformat.write(nb, server.root_dir / name)
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = None
        console: list[str] = []
        try:
            page = _new_page(browser, console)
            _open(page, server, name)
            _run_all(page)
            _poll(page, "the figure", RUN_ALL_TIMEOUT, lambda: _titles(page) == ["LAYER 2"],
                  fail=lambda: _tracebacks(page))
            page.locator(".noUi-handle[role='slider']").first.focus()
            page.keyboard.press("ArrowRight")
            _poll(page, "the figure to be redrawn for layer 3", SLIDER_TIMEOUT,
                  lambda: _titles(page) == ["LAYER 3"], fail=lambda: _tracebacks(page))
            assert page.locator(".js-plotly-plot").count() == 1, "one figure, redrawn in place"
        except BaseException:
            _diagnose(page, server, console)
            raise
        finally:
            browser.close()
