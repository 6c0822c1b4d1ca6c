"""The documentation site as a reader sees it: the built ``site/`` in headless Chromium.

Serves ``site/`` (``make docs``) on a loopback port and opens three pages: the home page (its
figure loads, the search box finds an API name), an API reference page (generated from the
docstrings) and a rendered notebook whose plotly figure must draw (plotly's ``.plot-container``
and its SVG appear). Requests that leave loopback are refused, as on a machine without a
network. When ``site/`` is not built, the test builds it the way ``make docs`` does (executed
notebooks, or a smoke run of them, then ``mkdocs build --strict``), which takes minutes.

Needs Debian's ``chromium`` (or $STEERLAB_CHROMIUM) and the ``playwright`` Python package, as
tests/test_browser.py does. The last two tests need no browser: they run the check ``make docs``
makes first (every public name has a docstring of its own and an API entry).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, ROOT, free_port

SITE = ROOT / "site"
PAGES = {"home": "index.html", "api": "reference/steering/index.html",
         "notebook": "notebooks/00_quickstart/index.html"}
BUILD_TIMEOUT = 2400  # a smoke run of the nine notebooks on 2 loaded cores, then the build
PAGE_TIMEOUT_MS = 30_000


def _built() -> bool:
    return all((SITE / p).is_file() for p in PAGES.values())


def _build() -> None:
    """What ``make docs`` runs (the docs packages installed: the ``docs`` extra)."""
    try:
        import mkdocs  # noqa: F401
        import mkdocs_jupyter  # noqa: F401
    except ImportError as err:
        # make test's venv has them (the lock holds the docs extra); make test-oldest's and
        # test-latest's install the dev extra only: say so rather than fail on what they lack
        pytest.skip(f"site/ is not built and the docs packages are missing ({err}): run "
                    "`make docs`, which installs the `docs` extra and builds the site")
    t0 = time.monotonic()
    for cmd in ([sys.executable, "docs/_tools/notebooks.py"],
                [sys.executable, "-m", "mkdocs", "build", "--strict"]):
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT)
        if done.returncode:
            pytest.fail(f"`{' '.join(cmd[1:])}` failed ({done.returncode}); run `make docs` "
                        f"to see why:\n{(done.stdout + done.stderr)[-4000:]}")
    print(f"\nsite/ was not built: built it as `make docs` does in "
          f"{time.monotonic() - t0:.0f} s")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def _serve(root: Path) -> Iterator[str]:
    """``root`` over HTTP on 127.0.0.1 (a free port), in a thread; stopped on exit."""
    handler = functools.partial(_Quiet, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; `make test` "
                    "installs it as `make run` does)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not _built():
        _build()
    assert _built(), f"the build left no {[p for p in PAGES.values() if not (SITE / p).is_file()]}"
    with _serve(SITE) as url:
        yield url


@pytest.fixture(scope="module")
def browser_page(site_url: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A Chromium page that may only reach loopback, and the page errors / refused URLs."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    refused: list[str] = []

    def only_loopback(route: Any) -> None:
        host = urlparse(route.request.url).hostname
        if host in {"127.0.0.1", "localhost"}:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.route("**/*", only_loopback)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors, refused
        finally:
            browser.close()


@pytest.mark.browser
@pytest.mark.slow
def test_home_page(site_url, browser_page):
    page, errors, refused = browser_page
    page.goto(site_url + PAGES["home"], wait_until="domcontentloaded")
    assert "steerlab" in page.title()
    assert page.locator("h1").first.inner_text().strip().rstrip("¶") == "steerlab"
    for section in ("Getting started", "Concepts", "Results", "API reference"):
        assert page.locator("nav.md-nav").get_by_text(section, exact=True).count(), section
    figure = page.locator("img[src*='02_reasoning_by_layer']").first
    figure.scroll_into_view_if_needed()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                           arg=figure.element_handle())
    # the search box (lunr in a web worker, over search/search_index.json) finds an API name
    page.locator("input.md-search__input").click()
    page.keyboard.type("hong_projection")  # typed: the search listens to key events
    hit = page.locator(".md-search-result__item").first
    hit.wait_for(state="visible")
    assert "hong_projection" in page.locator(".md-search-result").inner_text()
    assert not errors, errors
    assert not refused, f"the home page asks for files off this site: {refused}"


@pytest.mark.browser
@pytest.mark.slow
def test_api_page_is_generated_from_the_docstrings(site_url, browser_page):
    page, errors, _ = browser_page
    page.goto(site_url + PAGES["api"], wait_until="domcontentloaded")
    entry = page.locator("[id='steerlab.steering.steer']")
    assert entry.count() == 1, "no mkdocstrings entry for steerlab.steering.steer"
    text = page.locator("article").inner_text()
    from steerlab.steering import hong_projection, steer

    for fn in (steer, hong_projection):  # each one's docstring, as the code has it now
        first_words = " ".join((fn.__doc__ or "").split()[:4])
        assert first_words and first_words in " ".join(text.split()), (fn.__name__, first_words)
    assert ":func:" not in text, "a Sphinx role was not rewritten (docs/_tools/griffe_roles.py)"
    assert not errors, errors


@pytest.mark.browser
@pytest.mark.slow
def test_notebook_page_draws_its_plotly_figure(site_url, browser_page):
    page, errors, _ = browser_page
    page.goto(site_url + PAGES["notebook"], wait_until="domcontentloaded")
    note = page.locator(".jupyter-wrapper blockquote").first.inner_text()
    assert "Executed" in note and "notebooks/00_quickstart.py" in note, note
    graph = page.locator(".plotly-graph-div").first
    graph.scroll_into_view_if_needed()
    graph.locator(".plot-container svg.main-svg").first.wait_for(state="attached")
    drawn = page.evaluate(
        "() => [...document.querySelectorAll('.plotly-graph-div')].map(d => ({"
        "svg: d.querySelectorAll('svg.main-svg').length, "
        "w: d.getBoundingClientRect().width, h: d.getBoundingClientRect().height}))")
    assert drawn and all(d["svg"] > 0 and d["w"] > 100 and d["h"] > 100 for d in drawn), drawn
    assert not errors, errors


def _hooks() -> Any:
    pytest.importorskip("mkdocs", reason="the docs packages (the `docs` extra; `make docs`)")
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs/_tools/hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_a_docstring_and_an_api_entry():
    """What ``make docs`` checks before it builds (a warning there, so the build fails)."""
    hooks = _hooks()
    import steerlab

    assert set(hooks.public_names()) == set(steerlab.__all__) - {"__version__"}
    assert hooks.undocumented() == [], "write a docstring for each"
    assert hooks.unreferenced() == [], "add a '::: module.name' entry to docs/reference/"


def test_the_docstring_check_sees_a_missing_one():
    import dataclasses

    hooks = _hooks()

    @dataclasses.dataclass
    class Bare:
        x: int = 0

    class Child(Bare):
        """Has its own."""

    def bare() -> None:
        pass

    assert hooks.own_docstring(Bare) == ""  # not the signature @dataclass writes
    assert hooks.own_docstring(type("Sub", (Child,), {})) == ""  # not the base class's
    assert hooks.own_docstring(bare) == "" and hooks.own_docstring(Child) == "Has its own."
