"""The search page in real headless Chromium: search, highlights, paging, export, escaping.

Needs Debian's ``chromium`` package (``apt-get install chromium``) and ``playwright`` from PyPI
(driven with ``executable_path``; ``playwright install`` is never used). Without them the tests are
skipped with the reason shown. Run only these with ``pytest -m browser``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")
pytest.importorskip("uvicorn", reason="the [web] extra is not installed")
httpx = pytest.importorskip("httpx", reason="the [web] extra is not installed")

from test_web_api import CORPUS, XSS_TEXT, ServerThread, web_index  # noqa: E402,F401  (shared fixture)

from indexer.web import Limits, create_app  # noqa: E402

CHROMIUM = os.environ.get("NERINDEX_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def base_url(web_index) -> Iterator[str]:
    with ServerThread(create_app(web_index)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
    pg = context.new_page()
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.errors = []  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    assert pg.errors == [], f"script errors on the page: {pg.errors}"
    context.close()


def api_search(base_url: str, **body) -> dict[str, Any]:
    response = httpx.post(f"{base_url}/api/v1/search", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def all_ids(base_url: str, **query) -> list[str]:
    ids, cursor = [], None
    while True:
        data = api_search(base_url, **query, all=True, limit=1000, **({"cursor": cursor} if cursor else {}))
        ids += [h["id"] for h in data["hits"]]
        cursor = data["next_cursor"]
        if cursor is None:
            return ids


def open_page(page, base_url: str, query: str = "") -> None:
    page.goto(f"{base_url}/{query}")
    page.wait_for_selector("body[data-ready='1']", timeout=20000)


def hit_ids(page) -> list[str]:
    return page.eval_on_selector_all("#results li.hit", "els => els.map(e => e.dataset.id)")


def test_a_person_searches_and_sees_highlighted_mentions(page, base_url):
    open_page(page, base_url)
    assert "nerindex-minilm" in page.inner_text("#footer-model")
    assert f"{len(CORPUS)} passages" in page.inner_text("#footer-store")
    assert page.eval_on_selector_all("#type-list option", "els => els.length") > 0  # catalog suggestions
    page.fill("#type", "dinosaur")
    page.eval_on_selector("#threshold", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
    assert page.inner_text("#threshold-value") == "0.00"
    page.click("#search-button")
    page.wait_for_selector("#results li.hit")

    expected = api_search(base_url, type="dinosaur", threshold=0.0, limit=20, all=True)
    assert expected["hits"], "the corpus has passages with spans of positive similarity"
    assert hit_ids(page) == [h["id"] for h in expected["hits"]]
    assert page.inner_text("#summary").startswith(f"{expected['total']} passage")
    assert "type=dinosaur" in page.url

    marks = page.eval_on_selector_all(
        "#results li.hit",
        """els => els.map(li => [...li.querySelectorAll('mark.mention')].map(m =>
               [Number(m.dataset.start), Number(m.dataset.end), m.textContent, m.dataset.sim]))""",
    )
    for hit, shown in zip(expected["hits"], marks):
        assert shown, f"no highlight in {hit['id']}"
        for start, end, text, sim in shown:
            assert text == hit["text"][start:end]  # offsets are characters, emoji included
            span = next(s for s in hit["spans"] if s["start"] == start and s["end"] == end)
            assert sim == f"{span['similarity']:.2f}"
    assert page.dialogs == []


def test_the_candidate_that_ranked_a_hit_is_drawn_apart_and_named(page, base_url):
    """``ranked_by`` (a candidate span, never marked) is drawn dotted, not as a mention, and named
    under the passage; "person" on this corpus has such a hit among its answers."""
    open_page(page, base_url, "?type=person")
    page.wait_for_selector("#results li.hit")
    expected = api_search(base_url, type="person", limit=20, all=True)["hits"]
    assert hit_ids(page) == [h["id"] for h in expected] and any(h["ranked_by"] for h in expected)
    shown = page.eval_on_selector_all("#results li.hit", """els => els.map(li => [
        [...li.querySelectorAll('mark.candidate')].map(m => [Number(m.dataset.start), m.textContent]),
        (li.querySelector('.unmarked') || {}).textContent || ""])""")
    for hit, (candidates, note) in zip(expected, shown):
        by = hit["ranked_by"]
        if by is None:
            assert candidates == [] and note == ""
            continue
        hidden = any(s["start"] < by["end"] and by["start"] < s["end"] for s in hit["spans"])
        assert candidates == ([] if hidden else [[by["start"], by["text"]]])  # marks win where they overlap
        assert f"the candidate span “{by['text']}”" in note and ("(dotted)" in note) is not hidden


@pytest.mark.parametrize("kind", ["dinosaur", "person"])
def test_until_the_slider_moves_the_page_uses_the_models_threshold_for_the_type(page, base_url, kind):
    """The model has one threshold for types it was trained on ("person") and one for others
    ("dinosaur"): the page sends none, shows the one applied, and gets the CLI's answer."""
    open_page(page, base_url, f"?type={kind}")
    page.wait_for_selector("#results li.hit")
    expected = httpx.post(f"{base_url}/api/v1/search", json={"type": kind, "limit": 20, "all": True}).json()
    assert hit_ids(page) == [h["id"] for h in expected["hits"]]
    assert f"similarity ≥ {expected['threshold']:.2f}, the model's for this type" in page.inner_text("#summary")
    assert page.inner_text("#threshold-value") == f"{expected['threshold']:.2f} (model's)"
    assert "threshold=" not in page.url


def test_threshold_control_narrows_the_results(page, base_url):
    # λ = 0 (from the URL) so that scores are mention similarities, whatever the model's λ
    open_page(page, base_url, "?type=dinosaur&threshold=0&passage_weight=0")
    loose = api_search(base_url, type="dinosaur", threshold=0.0, all=True)["total"]
    page.eval_on_selector("#threshold", "el => { el.value = '0.3'; el.dispatchEvent(new Event('input')); }")
    page.click("#search-button")
    page.wait_for_function("() => document.querySelector('#summary').textContent.includes('0.30')")
    strict = api_search(base_url, type="dinosaur", threshold=0.3, all=True)["total"]
    assert strict <= loose
    assert page.inner_text("#summary").startswith(f"{strict} passage")
    scores = [float(s) for s in page.eval_on_selector_all("#results .score", "els => els.map(e => e.textContent)")]
    assert all(s >= 0.3 - 5e-4 for s in scores)


def test_passage_weight_is_sent_only_when_set(page, base_url):
    open_page(page, base_url)
    model_weight = httpx.get(f"{base_url}/api/v1/info").json()["model"]["passage_weight"]
    assert page.get_attribute("#passage-weight", "placeholder") == f"model's: {model_weight:g}"
    page.fill("#type", "dinosaur")
    page.eval_on_selector("#threshold", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }")
    with page.expect_request("**/api/v1/search") as request:
        page.click("#search-button")
    assert "passage_weight" not in request.value.post_data_json  # the model's λ
    page.wait_for_selector("#results li.hit")

    page.fill("#passage-weight", "10")
    with page.expect_request("**/api/v1/search") as request:
        page.click("#search-button")
    assert request.value.post_data_json["passage_weight"] == 10
    page.wait_for_function("() => location.search.includes('passage_weight=10')")
    page.wait_for_selector("#results li.hit")
    expected = api_search(base_url, type="dinosaur", threshold=0.0, passage_weight=10, limit=20, all=True)
    assert hit_ids(page) == [h["id"] for h in expected["hits"]]
    assert "passage weight 10" in page.inner_text("#summary")

    open_page(page, base_url, "?type=dinosaur&threshold=0&passage_weight=-1")  # the server's message is shown
    page.wait_for_selector("#error:not([hidden])")
    assert "passage_weight" in page.inner_text("#error")


@pytest.mark.parametrize("query, named", [
    ('?type=person&threshold=0&filters={"topic":"science"', "filters could not be read"),
    ("?type=person&threshold=0&filters=null", "filters could not be read (not a JSON object)"),
    ("?type=person&threshold=0.9x", "threshold “0.9x” is not a number"),
    ("?type=person&threshold=0&passage_weight=abc", "passage_weight “abc” is not a number"),
    ("?type=person&threshold=0&passage_weight=%2B1", "passage_weight “+1” is not a number"),  # no HTML number
    ("?type=person&threshold=0&passage_weight=0x10", "passage_weight “0x10” is not a number"),
    ("?type=person&threshold=0x1", "threshold “0x1” is not a number"),  # was read as 1 (a page audit)
])
def test_a_link_whose_values_cannot_be_read_names_them_and_searches_nothing(page, base_url, query, named):
    """An audit: a shared link with a truncated filters=… showed the unfiltered results as the
    link's, and threshold=0.9x or passage_weight=abc quietly became the model's."""
    open_page(page, base_url, query)
    page.wait_for_selector("#error:not([hidden])")
    assert named in page.inner_text("#error") and "Nothing was searched" in page.inner_text("#error")
    assert hit_ids(page) == []


def test_load_more_then_load_all_pages_through_every_match(page, base_url):
    # the broadest of a few types, so the test does not hang on one model's notion of "person"
    kind, expected = max(
        ((t, all_ids(base_url, type=t, threshold=0.0)) for t in ("person", "organization", "location", "thing")),
        key=lambda pair: len(pair[1]),
    )
    assert len(expected) > 6
    open_page(page, base_url, f"?type={kind}&threshold=0&size=3")
    page.wait_for_selector("#results li.hit")
    assert hit_ids(page) == expected[:3]
    page.click("#load-more")
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 6")
    page.click("#load-all")
    page.wait_for_function(f"() => document.querySelectorAll('#results li.hit').length === {len(expected)}")
    assert hit_ids(page) == expected
    assert page.is_hidden("#load-more") and page.is_hidden("#load-all")
    assert "showing" not in page.inner_text("#summary")


def test_load_more_after_the_index_changed_says_to_search_again(page, tmp_path):
    """A web audit: the 409's words ("send the search again without a cursor") were shown, and the
    button stayed, each click failing the same way."""
    from indexer.api import NerIndex
    from indexer.records import Passage

    index = NerIndex.open(tmp_path / "store", create=True)
    names = ["Barack Obama", "Angela Merkel", "Tony Blair", "Jacques Chirac", "Gordon Brown", "Helmut Kohl"]
    index.index([Passage(id=f"p{i}", text=f"{n} gave a speech in Berlin.") for i, n in enumerate(names)])
    try:
        with ServerThread(create_app(index)) as url:
            open_page(page, url, "?type=person&threshold=0&size=2")
            page.wait_for_selector("#results li.hit")
            index.index([Passage(id="p9", text="Margaret Thatcher gave a speech in London.")])
            page.click("#load-more")
            page.wait_for_selector("#error:not([hidden])")
            assert "The index changed since this search: search again" in page.inner_text("#error")
            assert len(hit_ids(page)) == 2 and page.is_hidden("#load-more") and page.is_hidden("#load-all")
    finally:
        index.close()


def test_an_answer_for_an_older_search_is_dropped(page, base_url):
    """A web audit: a facet ticked while "Load more" (or another facet's search) was under way
    showed the old query's hits after the new ones, or replaced the new answer with the old one."""
    held = []

    def hold(route):
        body = route.request.post_data_json or {}
        if body.get("cursor") or body.get("filters") == {"topic": ["science"]}:
            held.append(route)  # answered below, after the newer search
        else:
            route.continue_()

    open_page(page, base_url, "?type=person&threshold=0&size=3")
    page.wait_for_selector("#facets fieldset[data-field='topic']")
    page.route("**/api/v1/search", hold)
    politics = all_ids(base_url, type="person", threshold=0.0, filters={"topic": ["politics"]})
    page.click("#load-more")  # held
    page.wait_for_function("() => document.body.classList.contains('busy')")
    page.check("#facets fieldset[data-field='topic'] label:has-text('politics') input")
    page.wait_for_function("() => location.search.includes('politics')")
    page.wait_for_function("() => !document.body.classList.contains('busy')")
    held.pop().continue_()  # the old query's next page arrives last
    page.wait_for_timeout(500)
    assert hit_ids(page) == politics[:3]
    page.uncheck("#facets fieldset[data-field='topic'] label:has-text('politics') input")
    page.wait_for_function("() => !location.search.includes('politics')")
    page.wait_for_function("() => !document.body.classList.contains('busy')")
    page.check("#facets fieldset[data-field='topic'] label:has-text('science') input")  # held
    page.check("#facets fieldset[data-field='topic'] label:has-text('music') input")
    both = all_ids(base_url, type="person", threshold=0.0, filters={"topic": ["science", "music"]})
    page.wait_for_function("() => !document.body.classList.contains('busy')")
    held.pop().continue_()  # science alone, answered after science + music
    page.wait_for_timeout(500)
    assert hit_ids(page) == both[:3] and "music" in page.url
    page.unroute("**/api/v1/search")


def test_export_jsonl_and_csv_of_the_current_results(page, base_url):
    open_page(page, base_url, "?type=museum&threshold=0&size=4")
    page.wait_for_selector("#results li.hit")
    page.click("#load-all")
    page.wait_for_function("() => document.querySelector('#load-all').hidden")
    shown = hit_ids(page)
    with page.expect_download() as info:
        page.click("#export-jsonl")
    download = info.value
    assert download.suggested_filename == "nerindex-museum.jsonl"
    rows = [json.loads(line) for line in open(download.path(), encoding="utf-8").read().splitlines()]
    assert [r["id"] for r in rows] == shown
    assert all(set(r) == {"id", "score", "text", "fields", "spans", "ranked_by"} for r in rows)

    with page.expect_download() as info:
        page.click("#export-csv")
    download = info.value
    assert download.suggested_filename == "nerindex-museum.csv"
    table = list(csv.reader(io.StringIO(open(download.path(), encoding="utf-8", newline="").read())))
    assert table[0][:4] == ["id", "score", "mentions", "text"] and {"title", "topic"} <= set(table[0])
    assert [row[0] for row in table[1:]] == shown
    by_id = {r["id"]: r for r in rows}
    for row in table[1:]:
        assert row[3] == by_id[row[0]]["text"]  # commas, quotes and markup survive the round trip
        assert float(row[1]) == pytest.approx(by_id[row[0]]["score"])


def test_corpus_markup_is_shown_as_text_never_run(page, base_url):
    open_page(page, base_url, "?type=museum&threshold=0&text=guestbook")
    page.wait_for_selector("#results li.hit")
    assert hit_ids(page) == ["xss-1"]
    page.hover("#results li.hit")
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == []
    injected = page.eval_on_selector_all("#results script, #results img, #results i, #results [onerror]", "els => els.length")
    assert injected == 0
    assert page.eval_on_selector("#results .passage", "el => el.textContent") == XSS_TEXT
    assert '<i onmouseover="window.__pwned = 3">Guestbook</i>' in page.inner_text("#results .fields")
    # the facet sidebar shows metadata values too
    assert page.eval_on_selector_all("#facets i, #facets script", "els => els.length") == 0


def test_markup_in_any_part_of_a_hit_is_never_parsed(page, base_url):
    """The same page and flow, with the search response pinned so that the spans of the hit do not
    cut through its markup (a real model may split it into fragments, which hides nothing)."""
    start = XSS_TEXT.index("Tyrannosaurus")
    hit = {
        "id": "<b>id</b>",
        "score": 0.9,
        "text": XSS_TEXT,
        "fields": {"title": "<svg onload=\"window.__pwned = 4\">", "topic": "security"},
        "spans": [{"start": start, "end": start + 13, "text": "Tyrannosaurus", "similarity": 0.9, "labels": ["<u>dinosaur</u>"]}],
    }
    body = {"type": "dinosaur", "threshold": 0.5, "hits": [hit], "total": 1, "next_cursor": None,
            "facets": {"title": [{"value": "<svg onload=\"window.__pwned = 5\">", "count": 1}]}, "took_ms": 1}
    page.route("**/api/v1/search", lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(body)))
    open_page(page, base_url, "?type=dinosaur")
    page.wait_for_selector("#results li.hit mark")
    page.hover("#results li.hit")
    assert page.evaluate("() => window.__pwned") is None and page.dialogs == []
    tags = page.eval_on_selector_all("#results *, #facets *", "els => [...new Set(els.map(e => e.tagName.toLowerCase()))]")
    assert set(tags) <= {"li", "div", "span", "b", "p", "mark", "h2", "fieldset", "legend", "label", "input"}
    assert page.eval_on_selector("#results .passage", "el => el.textContent") == XSS_TEXT
    assert page.eval_on_selector("#results mark", "el => el.textContent") == "Tyrannosaurus"
    assert "<u>dinosaur</u>" in page.get_attribute("#results mark", "title")
    assert page.eval_on_selector("#results .hit-id", "el => el.textContent") == "<b>id</b>"
    assert '<svg onload="window.__pwned = 5">' in page.inner_text("#facets")


def test_a_typed_phrase_with_markup_is_text_and_errors_are_shown(page, base_url):
    open_page(page, base_url)
    page.fill("#type", "<img src=x onerror=alert(1)> dinosaur")
    page.click("#search-button")
    page.wait_for_function("() => document.querySelector('#summary').textContent.includes('<img')")
    assert page.eval_on_selector_all("#summary img", "els => els.length") == 0
    open_page(page, base_url, "?type=" + "x" * 201)
    page.wait_for_selector("#error:not([hidden])")
    assert "limit is 200" in page.inner_text("#error")
    assert page.dialogs == []


def test_facets_filter_the_results(page, base_url):
    open_page(page, base_url, "?type=person&threshold=0")
    page.wait_for_selector("#facets fieldset[data-field='topic']")
    page.check("#facets fieldset[data-field='topic'] label:has-text('politics') input")
    page.wait_for_function("() => location.search.includes('filters')")
    page.wait_for_selector("#results li.hit")
    expected = all_ids(base_url, type="person", threshold=0.0, filters={"topic": ["politics"]})
    assert hit_ids(page) == expected[:20]
    topics = page.eval_on_selector_all("#results .field-item", "els => els.map(e => e.textContent)")
    assert {t for t in topics if t.startswith("topic")} == {"topic: politics"}


def test_a_shared_url_is_searched_as_it_says(page, base_url):
    """The URL's threshold went through the 0..1 slider, which snapped it (0.1234 was sent as
    0.12, -0.5 as 0); a filter of one value, the API's own shape, emptied the page."""
    with page.expect_request("**/api/v1/search") as request:
        open_page(page, base_url, '?type=person&threshold=0.1234&filters={"topic":"politics"}')
    assert request.value.post_data_json["threshold"] == 0.1234
    page.wait_for_selector("#results li.hit")
    expected = all_ids(base_url, type="person", threshold=0.1234, filters={"topic": "politics"})
    assert hit_ids(page) == expected[:20]
    assert "threshold=0.1234" in page.url and "0.1234" in page.inner_text("#threshold-value")
    assert page.is_checked("#facets fieldset[data-field='topic'] label:has-text('politics') input")


def test_a_facet_filters_the_query_shown_not_the_one_typed(page, base_url):
    open_page(page, base_url, "?type=person&threshold=0")
    page.wait_for_selector("#facets fieldset[data-field='topic']")
    page.fill("#type", "city")  # typed, not searched
    with page.expect_request("**/api/v1/search") as request:
        page.check("#facets fieldset[data-field='topic'] label:has-text('politics') input")
    assert request.value.post_data_json["type"] == "person"


def test_enter_while_a_search_answers_starts_the_new_one(page, base_url):
    """A page audit: the Search button was disabled while a search answered, and with the form's
    one submit button disabled the browser dropped Enter: "dinosaur" in the box, person shown."""
    held = []
    open_page(page, base_url)
    page.route("**/api/v1/search", lambda route: held.append(route) if (route.request.post_data_json or {}).get(
        "type") == "person" else route.continue_())
    page.fill("#type", "person")
    page.press("#type", "Enter")
    page.wait_for_function("() => document.body.classList.contains('busy')")
    page.fill("#type", "dinosaur")
    with page.expect_request("**/api/v1/search") as request:
        page.press("#type", "Enter")
    assert request.value.post_data_json["type"] == "dinosaur"
    page.wait_for_function("() => location.search.includes('dinosaur')")
    held.pop().continue_()  # the person answer, last: dropped
    page.wait_for_timeout(300)
    assert "dinosaur" in page.url and hit_ids(page) == all_ids(base_url, type="dinosaur")[:20]
    page.unroute("**/api/v1/search")


def test_a_search_begun_while_the_page_starts_is_not_replaced_by_the_links(page, base_url):
    """A page audit: the link's search ran after the type list arrived, replacing a search the
    user had begun meanwhile (the box and the URL rewritten to the link's type)."""
    held = []
    page.route("**/api/v1/types*", lambda route: held.append(route))
    page.goto(f"{base_url}/?type=person")
    page.wait_for_function("() => document.readyState === 'complete'")
    page.fill("#type", "dinosaur")
    page.press("#type", "Enter")
    page.wait_for_function("() => location.search.includes('dinosaur')")
    while not held:
        page.wait_for_timeout(50)
    held.pop().continue_()
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_timeout(300)
    assert "dinosaur" in page.url and page.input_value("#type") == "dinosaur"
    page.unroute("**/api/v1/types*")


def test_a_failed_search_leaves_no_facets_of_the_last_one(page, base_url):
    """A page audit: after a search failed, the last query's facets stayed, and ticking one
    searched the failed query's type with them."""
    open_page(page, base_url, "?type=person&threshold=0")
    page.wait_for_selector("#facets fieldset[data-field='topic']")
    page.route("**/api/v1/search", lambda route: route.abort())
    page.fill("#type", "city")
    page.press("#type", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert page.is_hidden("#facets") or page.query_selector("#facets fieldset") is None
    page.unroute("**/api/v1/search")


def test_a_ticked_value_the_answer_did_not_count_shows_no_count(page, base_url):
    """A page audit: a value named by the link that the answer does not count showed "0" beside
    the passages it filtered to (a number 123 against the facet's "123", say)."""
    open_page(page, base_url, '?type=person&threshold=0&filters={"topic":"no such topic"}')
    page.wait_for_selector("#facets fieldset[data-field='topic']")
    label = page.inner_text("#facets fieldset[data-field='topic'] label:has-text('no such topic')")
    assert label.strip() == "no such topic"


def test_the_page_says_whose_threshold_and_lambda_apply(browser, web_index):
    """A server started with --threshold applies its own, not the model's; the λ applied is the
    model's for the type (1 for types it was not trained on), shown once searched."""
    with ServerThread(create_app(web_index, threshold=0.1)) as url:
        pg = browser.new_page()
        open_page(pg, url, "?type=dinosaur")
        pg.wait_for_selector("#results li.hit")
        expected = api_search(url, type="dinosaur", limit=20, all=True)
        assert pg.inner_text("#threshold-value") == "0.10 (server's)"
        summary = pg.inner_text("#summary")
        assert "similarity ≥ 0.10, the server's" in summary and f"passage weight {expected['passage_weight']:g}" in summary
        assert pg.get_attribute("#passage-weight", "placeholder") == f"model's: {expected['passage_weight']:g}"
        pg.close()


def test_the_page_pages_within_the_servers_page_size(browser, web_index):
    """With serve --max-page-size below the page's 20 (or "Load all"'s 500), every search failed."""
    with ServerThread(create_app(web_index, limits=Limits(max_page_size=3))) as url:
        pg = browser.new_page()
        open_page(pg, url, "?type=person&threshold=0")
        pg.wait_for_selector("#results li.hit")
        assert len(hit_ids(pg)) == 3 and pg.is_hidden("#error")
        assert "size=" not in pg.url  # an audit: the server's limit was written as if the user had set it
        pg.click("#load-all")
        pg.wait_for_function("() => document.querySelector('#load-all').hidden")
        assert hit_ids(pg) == [h.id for h in web_index.search("person", min_similarity=0.0, exhaustive=True)]
        pg.close()


def test_page_helpers_cut_by_characters_and_quote_csv(page, base_url):
    open_page(page, base_url)
    parts = page.evaluate("() => segments('🦖 T. rex & co', [{start: 2, end: 8}])")
    assert [p["text"] for p in parts] == ["🦖 ", "T. rex", " & co"]
    # the candidate that ranked a hit is drawn only where it hides no mark (a review: it outscores
    # every mark, so "language" hid "Python programming language")
    drawn = page.evaluate("""() => {
        const mark = {start: 0, end: 27, text: 'Python programming language', similarity: 0.35};
        const hit = (by) => ({spans: [mark], ranked_by: by});
        const inside = {start: 19, end: 27, text: 'language', similarity: 0.43};
        const apart = {start: 31, end: 35, text: 'code', similarity: 0.43};
        return [drawnSpans(hit(inside)), drawnSpans(hit(apart)), drawnSpans(hit(null))].map(
            (spans) => spans.map((s) => [s.text, Boolean(s.candidate)]));
    }""")
    assert drawn == [[["Python programming language", False]],
                     [["Python programming language", False], ["code", True]],
                     [["Python programming language", False]]]
    cells = page.evaluate("() => [csvCell('a,b'), csvCell('say \"hi\"'), csvCell('=1+1'), csvCell(-0.5, {isText: false})]")
    assert cells == ['"a,b"', '"say ""hi"""', "'=1+1", "-0.5"]
    # a metadata field named like a hit column gets a header of its own (an audit: two "score" columns)
    csv_text = page.evaluate("() => toCSV([{id: 'a', score: 0.5, spans: [], text: 't', fields: {score: 5, lang: 'en', 'fields.score': 6}}])")
    assert csv_text.split("\r\n")[:2] == ["id,score,mentions,text,fields.fields.score,lang,fields.score", "a,0.5,,t,6,en,5"]


def test_page_helpers_keep_big_integers_and_own_names(page, base_url):
    """Audit findings on the page's helpers: integers beyond 2**53 were rounded when shown and
    exported, a negative number got a formula guard in CSV, and names such as "__proto__" read
    or set Object.prototype."""
    open_page(page, base_url)
    parsed = page.evaluate("""() => {
        const data = parseExact('{"id": 12345678901234567890, "n": [-98765432109876543210, 7], "f": 0.5}');
        return [String(data.id), exactJSON(data), toJSONL([data]), csvCell(data.n)];
    }""")
    assert parsed == ["12345678901234567890", '{"id":12345678901234567890,"n":[-98765432109876543210,7],"f":0.5}',
                      '{"id":12345678901234567890,"n":[-98765432109876543210,7],"f":0.5}\n',
                      '"[-98765432109876543210,7]"']
    # an audit: U+2028 raw inside a line split it for str.splitlines readers
    line = page.evaluate("() => toJSONL([{text: 'a\\u2028b\\u0085c\\u2029'}])")
    assert line == '{"text":"a\\u2028b\\u0085c\\u2029"}\n' and len(line.splitlines()) == 1
    row = page.evaluate("() => toCSV([{id: 'a', score: 0.5, spans: [], text: 't', fields: {temp: -5, note: '-x'}}])")
    assert row.split("\r\n")[1] == "a,0.5,,t,'-x,-5"
    own = page.evaluate("""() => {
        const f = withOwn({}, '__proto__', ['a']);
        return [Object.keys(f), ownValue(f, '__proto__'), ownValue({}, 'constructor') === undefined,
                Object.keys(withOwn(f, '__proto__', undefined)), JSON.parse(exactJSON(f)).__proto__];
    }""")
    assert own == [["__proto__"], ["a"], True, [], ["a"]]


def test_the_page_shows_metadata_as_stored_and_facets_on_any_name(browser, tmp_path):
    """End to end: a 20-digit id shown and exported with all its digits, facets on fields named
    "constructor" and "__proto__" filter on their own values, and a failed search claims no count."""
    from indexer.api import NerIndex
    from indexer.records import Passage

    index = NerIndex.open(tmp_path / "store", create=True)
    texts = ["Barack Obama met Angela Merkel in Berlin.", "Lewis Hamilton drove for Ferrari in Monza.",
             "Tony Blair spoke with Jacques Chirac in Paris."]
    index.index([Passage(id=f"p{i}", text=t, fields={"tweet": 12345678901234567890 + i, "n": 2**53 + 1 + i,
                                                          "constructor": c, "__proto__": c})
                 for i, (t, c) in enumerate(zip(texts, ["Ferrari", "McLaren", "Ferrari"]))])
    try:
        with ServerThread(create_app(index)) as url:
            pg = browser.new_page()
            pg.errors = []  # type: ignore[attr-defined]
            pg.on("pageerror", lambda e: pg.errors.append(str(e)))
            open_page(pg, url, "?type=person&threshold=0")
            pg.wait_for_selector("#results li.hit")
            assert "tweet: 12345678901234567890" in pg.inner_text("#results li.hit[data-id='p0']")
            assert '"tweet":12345678901234567890' in pg.evaluate("() => toJSONL(state.hits)")
            for field in ("constructor", "__proto__"):
                facet = f"#facets fieldset[data-field='{field}']"
                assert sorted(pg.eval_on_selector_all(f"{facet} label", "els => els.map(e => e.textContent.trim())")) == [
                    "Ferrari 2", "McLaren 1"]
                with pg.expect_request("**/api/v1/search") as request:
                    pg.check(f"{facet} label:has-text('McLaren') input")
                assert request.value.post_data_json["filters"] == {field: ["McLaren"]}
                pg.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 1")
                with pg.expect_request("**/api/v1/search"):
                    pg.uncheck(f"{facet} label:has-text('McLaren') input")
                pg.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 3")
            with pg.expect_request("**/api/v1/search") as request:  # a shared URL's digits, not rounded (an audit)
                open_page(pg, url, '?type=person&threshold=0&filters={"n":9007199254740995}')
            assert request.value.post_data_json["filters"] == {"n": 2**53 + 3}  # the page sent ...996: no hit
            pg.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 1")
            assert hit_ids(pg) == ["p2"]
            open_page(pg, url, '?type=person&filters={"a b":1}')
            pg.wait_for_selector("#error:not([hidden])")
            assert pg.inner_text("#summary") == ""
            assert pg.errors == []
            pg.close()
    finally:
        index.close()


def test_screenshot_of_the_page(page, base_url, tmp_path):
    open_page(page, base_url, "?type=dinosaur&threshold=0")
    page.wait_for_selector("#results li.hit mark")
    path = tmp_path / "page.png"
    page.screenshot(path=str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
