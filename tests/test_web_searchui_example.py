"""The Elastic Search UI example (examples/search-ui) renders results from nerindex in Chromium.

The example must be built first (``cd examples/search-ui && npm install && npm run build``); its
``dist/`` is then served next to the API on one origin, exactly as ``vite preview`` would proxy
it. Skipped, with the reason shown, when the build or Chromium is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")

from fastapi.staticfiles import StaticFiles  # noqa: E402
from test_web_api import LOW, web_index  # noqa: E402,F401  (shared fixture)
from test_web_browser import CHROMIUM, ServerThread, browser, page  # noqa: E402,F401  (shared fixtures)

from indexer.web import create_app  # noqa: E402

DIST = Path(__file__).resolve().parents[1] / "examples" / "search-ui" / "dist"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(
        not (DIST / "index.html").is_file(),
        reason="examples/search-ui is not built (cd examples/search-ui && npm install && npm run build)",
    ),
]


@pytest.fixture(scope="module")
def searchui_url(web_index):
    # Search UI sends no threshold: the server default lets every detected span match, so the
    # test does not depend on the quality of the shipped model.
    app = create_app(web_index, threshold=LOW)
    app.mount("/searchui", StaticFiles(directory=DIST, html=True), name="searchui")
    with ServerThread(app) as url:
        yield f"{url}/searchui/"


def test_search_ui_example_renders_nerindex_results(page, searchui_url):
    page.goto(searchui_url)
    box = page.wait_for_selector("input.sui-search-box__text-input", timeout=30000)
    box.fill("dinosaur")
    page.keyboard.press("Enter")
    page.wait_for_selector(".sui-result", timeout=30000)
    titles = page.eval_on_selector_all(".sui-result__title", "els => els.map(e => e.textContent)")
    assert titles and set(titles) <= {"Dinosaurs", "Elections", "Kitchen", "Bands", '<i onmouseover="window.__pwned = 3">Guestbook</i>'}
    assert page.eval_on_selector_all(".sui-result em", "els => els.length") > 0  # highlighted mentions
    assert "dinosaur" in page.inner_text(".sui-paging-info")
    assert page.eval_on_selector_all(".sui-facet .sui-multi-checkbox-facet__option-input-wrapper", "els => els.length") > 0


def test_search_ui_example_escapes_corpus_markup(page, searchui_url):
    page.goto(searchui_url + "?q=museum&size=n_50_n")
    page.wait_for_selector(".sui-result", timeout=30000)
    page.hover(".sui-result")
    assert page.evaluate("() => window.__pwned") is None and page.dialogs == []
    assert page.eval_on_selector_all(".sui-results-container script, .sui-results-container img, .sui-results-container i", "els => els.length") == 0


def test_an_error_shows_nerindexs_message_and_keeps_the_search_box(page, searchui_url):
    """An audit: on any error the app said only "APIProxyConnector request failed: Bad Request"
    and the whole page, search box included, gave way to that line."""
    page.goto(searchui_url + "?q=" + "x" * 250)  # a term over the service's 200 characters
    page.wait_for_selector(".sui-search-error", timeout=30000)
    assert "the limit is 200" in page.inner_text(".sui-search-error")
    box = page.wait_for_selector("input.sui-search-box__text-input", timeout=5000)
    box.fill("dinosaur")
    box.press("Enter")
    page.wait_for_selector(".sui-result", timeout=30000)
