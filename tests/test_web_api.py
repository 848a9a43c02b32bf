"""The HTTP API in-process, over a real NerIndex (shipped model) built from a tiny corpus.

Assertions do not depend on how good the model is: most searches use a threshold low enough that
every passage with a detected span matches, and results are checked against NerIndex itself.
The fixtures here are shared with the browser tests (tests/test_web_browser.py).
"""

from __future__ import annotations

import dataclasses

import json
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")
pytest.importorskip("httpx", reason="the [web] extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from indexer.cli import main  # noqa: E402
from indexer.records import Passage  # noqa: E402
from indexer.web import Limits, create_app  # noqa: E402

LOW = -1.0  # a threshold every detected span passes
XSS_TEXT = (
    'Tyrannosaurus fans left <script>window.__pwned = 1</script> and '
    '<img src=x onerror="window.__pwned = 2"> in the guestbook of the Natural History Museum.'
)

CORPUS: list[dict[str, Any]] = [
    {"id": "dino-1", "topic": "science", "title": "Dinosaurs", "text": "Tyrannosaurus rex lived in western North America during the Cretaceous."},
    {"id": "dino-2", "topic": "science", "title": "Dinosaurs", "text": "Fossils of Triceratops and Stegosaurus are shown at the Natural History Museum in London."},
    {"id": "dino-3", "topic": "science", "title": "Dinosaurs", "text": "The long-necked Brachiosaurus could reach leaves high in the treetops."},
    {"id": "dino-4", "topic": "science", "title": "Dinosaurs", "text": "Velociraptor was much smaller than the film Jurassic Park suggested."},
    {"id": "dino-5", "topic": "science", "title": "Dinosaurs", "text": "Paleontologists in Argentina described Argentinosaurus, one of the largest animals ever."},
    {"id": "dino-6", "topic": "science", "title": "Dinosaurs", "text": "🦖🦕 Children at the Royal Tyrrell Museum met a life-size Allosaurus model."},
    {"id": "pol-1", "topic": "politics", "title": "Elections", "text": "Angela Merkel led the Christian Democratic Union for eighteen years."},
    {"id": "pol-2", "topic": "politics", "title": "Elections", "text": "The Labour Party won the 1997 general election under Tony Blair."},
    {"id": "pol-3", "topic": "politics", "title": "Elections", "text": "Barack Obama was elected President of the United States in 2008."},
    {"id": "pol-4", "topic": "politics", "title": "Elections", "text": "The Green Party of Germany joined a coalition government in Berlin."},
    {"id": "food-1", "topic": "food", "title": "Kitchen", "text": "Ibuprofen and aspirin should not be taken with a heavy meal of lasagna."},
    {"id": "food-2", "topic": "food", "title": "Kitchen", "text": "Paris is famous for croissants, baguettes and the Eiffel Tower."},
    {"id": "music-1", "topic": "music", "title": "Bands", "text": "The Beatles recorded Abbey Road in London in 1969."},
    {"id": "music-2", "topic": "music", "title": "Bands", "text": "Miles Davis released Kind of Blue with Columbia Records."},
    {"id": "xss-1", "topic": "security", "title": "<i onmouseover=\"window.__pwned = 3\">Guestbook</i>", "text": XSS_TEXT},
]


def build_index(folder: Path):
    """A real NerIndex over the corpus above, with the shipped model."""
    from indexer.api import NerIndex

    index = NerIndex.open(folder, create=True)
    passages = [Passage(id=r["id"], text=r["text"], fields={k: v for k, v in r.items() if k not in ("id", "text")}) for r in CORPUS]
    report = index.index(passages)
    assert report.failed == 0
    return index


def local_client(app) -> TestClient:
    """A test client that calls the app by a loopback name, as a browser on the machine would
    (the service answers only to the names it is served under)."""
    return TestClient(app, base_url="http://127.0.0.1:8000")


class ServerThread:
    """uvicorn serving an app on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def web_index(tmp_path_factory):
    index = build_index(tmp_path_factory.mktemp("web-store"))
    yield index
    index.close()


@pytest.fixture(scope="module")
def client(web_index):
    with local_client(create_app(web_index)) as c:
        yield c


@pytest.fixture(scope="module")
def low_client(web_index):
    """A service whose default threshold lets every detected span match (Search UI sends none)."""
    with local_client(create_app(web_index, threshold=LOW)) as c:
        yield c


def search(client, **body) -> dict[str, Any]:
    response = client.post("/api/v1/search", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    data = response.json()
    assert set(data) == {"error"} and data["error"]["status"] == status
    return data["error"]["message"]


# ----------------------------------------------------------------- service routes


def test_health(client):
    assert client.get("/api/v1/health").json() == {"status": "ok"}


def test_head_is_served_wherever_get_is_and_a_405_names_every_method(client):
    """An audit: HEAD /api/v1/health was a 405 (uptime probes, ``curl -I``), and a 405 on a path
    served by GET and POST said "allow: POST"."""
    for path in ("/api/v1/health", "/api/v1/search?type=dinosaur", "/api/v1/types", "/"):
        got, head = client.get(path), client.head(path)
        assert head.status_code == got.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    for method, path, allow in [("DELETE", "/api/v1/search", "GET, HEAD, POST"), ("PUT", "/api/v1/embed", "GET, HEAD, POST"),
                                ("POST", "/api/v1/health", "GET, HEAD"), ("GET", "/api/search", "POST"),
                                ("POST", "/static/app.js", "GET, HEAD")]:  # the static files' own (the review)
        response = client.request(method, path)
        assert (response.status_code, response.headers["allow"]) == (405, allow)
        assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("query", ["limit=3_0", "limit=+3", "limit=%203%20", "threshold=0.5_0", "threshold=.5",
                                   "passage_weight=1_0"])
def test_a_url_number_is_written_as_json_writes_one(client, query):
    """An audit: GET read limit=3_0 as 30 and threshold=0.5_0 as 0.5 (Python's int() and float()),
    where a POST body refuses them."""
    response = client.get(f"/api/v1/search?type=dinosaur&{query}")
    assert response.status_code == 422 and "not a number as JSON writes one" in response.json()["error"]["message"]
    assert client.get("/api/v1/search?type=dinosaur&limit=3&threshold=-0.5e-1&passage_weight=0").status_code == 200


def test_info_reports_model_store_and_limits(client, web_index):
    info = client.get("/api/v1/info").json()
    assert info["model"]["id"] == web_index.info()["model"]["id"]
    assert info["model"]["passage_weight"] == web_index.info()["model"]["passage_weight"]
    assert info["store"]["passages"] == len(CORPUS)
    assert info["server"]["limits"]["max_page_size"] == Limits().max_page_size


def test_types_lists_and_filters_the_catalog(client, web_index):
    full = client.get("/api/v1/types", params={"limit": 1000}).json()
    assert full["total"] == len(web_index.catalog) and full["types"] == web_index.catalog[:1000]
    assert full["total"] > 0
    needle = web_index.catalog[0].split()[0][:3].lower()
    some = client.get("/api/v1/types", params={"q": needle}).json()["types"]
    assert some and all(needle in t.lower() for t in some)


def test_openapi_describes_the_routes(client):
    spec = client.get("/openapi.json").json()
    for path in ("/api/v1/search", "/api/v1/embed", "/api/v1/types", "/api/v1/health", "/api/v1/info", "/api/search", "/api/autocomplete"):
        assert path in spec["paths"], path
    assert "SearchBody" in spec["components"]["schemas"]
    # every route's errors are described as the ErrorResponse they are, not FastAPI's default shape
    for path, methods in spec["paths"].items():
        if path.startswith("/api/"):
            for method, op in methods.items():
                assert op["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), (path, method)
                assert {"403", "405"} <= set(op["responses"]), (path, method)  # returned as documented JSON errors
    # /api/v1/info had no response schema (an audit); what it answers has the schema's keys
    info = spec["paths"]["/api/v1/info"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert info["$ref"].endswith("/InfoResponse")
    fields = spec["components"]["schemas"]["InfoResponse"]["properties"]
    assert set(client.get("/api/v1/info").json()) == set(fields) == {"model", "store", "server"}


# ----------------------------------------------------------------- search


def test_search_matches_nerindex_and_offsets_are_consistent(client, web_index):
    # λ = 0: the score is the best span's similarity, whatever the shipped model's λ
    data = search(client, type="dinosaur", threshold=LOW, limit=5, passage_weight=0)
    direct = web_index.search("dinosaur", min_similarity=LOW, limit=5, passage_weight=0)
    assert [h["id"] for h in data["hits"]] == [h.id for h in direct]
    assert [h["score"] for h in data["hits"]] == pytest.approx([h.score for h in direct], abs=1e-5)
    assert data["total"] is None and data["next_cursor"] is None and data["threshold"] == LOW
    assert len(data["hits"]) == 5
    for h in data["hits"]:
        assert h["spans"], "every hit has a matching mention"
        for s in h["spans"]:
            assert h["text"][s["start"] : s["end"]] == s["text"]
            assert s["similarity"] >= LOW
        # the best span ranks (λ 0): a mention (the first mark), or a candidate, never marked: ranked_by
        best = h["ranked_by"]["similarity"] if h["ranked_by"] else max(s["similarity"] for s in h["spans"])
        assert h["score"] == pytest.approx(best)


@pytest.mark.parametrize("phrase", ["dinosaur", "person"])
def test_search_default_threshold_is_the_models(client, web_index, phrase):
    """The model's threshold for the phrase: "person" was trained on, "dinosaur" was not."""
    model = web_index.info()["model"]
    data = search(client, type=phrase)
    trained = phrase in web_index.encoder.info.training_types
    assert trained == (phrase == "person")
    want = model["similarity_threshold"] if trained or model.get("unseen_similarity_threshold") is None else model["unseen_similarity_threshold"]
    assert data["threshold"] == want == web_index.threshold_for(phrase)
    assert all(s["similarity"] >= data["threshold"] for h in data["hits"] for s in h["spans"])


def test_get_search_equals_post(client):
    posted = search(client, type="politician", threshold=LOW, limit=3, filters={"topic": "politics"})
    got = client.get("/api/v1/search", params={"type": "politician", "threshold": LOW, "limit": 3, "where": "topic=politics"}).json()
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in posted["hits"]]


def test_cursor_paging_returns_every_match_once(client, web_index):
    expected = [h.id for h in web_index.search("dinosaur", min_similarity=LOW, exhaustive=True)]
    assert len(expected) > 6
    seen, cursor, pages = [], None, 0
    while True:
        body = {"type": "dinosaur", "threshold": LOW, "limit": 4, "all": True}
        if cursor:
            body["cursor"] = cursor
        data = search(client, **body)
        pages += 1
        assert data["total"] == len(expected)
        seen += [h["id"] for h in data["hits"]]
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == -(-len(expected) // 4)


def test_a_cursor_pages_on_with_the_threshold_and_weight_the_response_said_it_applied(client):
    # the key was made of the values sent: sending back the applied ones was "a different query"
    first = search(client, type="dinosaur", limit=1, all=True)
    assert first["next_cursor"] and first["threshold"] is not None and first["passage_weight"] is not None
    echoed = search(client, type="dinosaur", limit=1, cursor=first["next_cursor"],
                    threshold=first["threshold"], passage_weight=first["passage_weight"])  # fmt: skip
    left_out = search(client, type="dinosaur", limit=1, cursor=first["next_cursor"])
    assert echoed["hits"] == left_out["hits"] and echoed["total"] == first["total"]


def test_the_type_is_searched_echoed_and_measured_as_the_cli_searches_it(client):
    """An audit of the surfaces: "dinosaur." came back as sent (embed gave "dinosaur"), its cursor
    was refused for "dinosaur", and the length limit counted the full stop HTTP drops; a phrase of
    zero-width characters was answered."""
    first = search(client, type="dinosaur.", limit=1, all=True)
    assert first["type"] == "dinosaur" and first["next_cursor"]
    again = search(client, type="dinosaur", limit=1, all=True, cursor=first["next_cursor"])
    assert again["hits"] and again["total"] == first["total"]
    assert client.get("/api/v1/search", params={"type": "a" * 200 + "....."}).status_code == 200
    assert "the limit is 200" in error_of(client.get("/api/v1/search", params={"type": "a" * 201}), 400)
    assert "empty" in error_of(client.get("/api/v1/search", params={"type": "\u200b\u2060"}), 400)
    assert "empty" in error_of(client.post("/api/v1/embed", json={"phrases": ["\u200b"]}), 400)


def test_cursor_with_another_query_is_refused(client):
    first = search(client, type="dinosaur", threshold=LOW, limit=2, all=True)
    response = client.post("/api/v1/search", json={"type": "politician", "threshold": LOW, "limit": 2, "cursor": first["next_cursor"]})
    assert "different query" in error_of(response, 400)
    response = client.post("/api/v1/search", json={"type": "dinosaur", "cursor": "garbage"})
    assert "invalid cursor" in error_of(response, 400)


def test_passage_weight_reaches_the_search(client, web_index):
    """λ changes the ranking and the scores, never which passages match."""
    runs = {}
    for weight in (0.0, 10.0):
        data = search(client, type="dinosaur", threshold=LOW, limit=1000, all=True, passage_weight=weight)
        direct = web_index.search("dinosaur", min_similarity=LOW, exhaustive=True, passage_weight=weight)
        assert data["passage_weight"] == weight
        assert [h["id"] for h in data["hits"]] == [h.id for h in direct]
        assert [h["score"] for h in data["hits"]] == pytest.approx([h.score for h in direct], abs=1e-5)
        runs[weight] = {h["id"]: h for h in data["hits"]}
    spans_only, hybrid = runs[0.0], runs[10.0]
    assert len(spans_only) > 6 and set(spans_only) == set(hybrid)
    for hit_id, hit in spans_only.items():
        # the best span's similarity: the best mention's, or a candidate's (unmarked) above it
        assert hit["score"] >= max(s["similarity"] for s in hit["spans"]) - 1e-6
        assert hybrid[hit_id]["spans"] == hit["spans"]  # the marked mentions do not depend on λ
    assert any(abs(hybrid[i]["score"] - spans_only[i]["score"]) > 1e-3 for i in spans_only)
    # the top-hits path (no all) and GET pass it on too
    top = search(client, type="dinosaur", threshold=LOW, limit=3, passage_weight=10)
    got = client.get("/api/v1/search", params={"type": "dinosaur", "threshold": LOW, "limit": 3, "passage_weight": 10}).json()
    ranked = sorted(hybrid.values(), key=lambda h: -h["score"])[:3]
    assert [h["score"] for h in top["hits"]] == pytest.approx([h["score"] for h in ranked], abs=1e-5)
    assert [h["id"] for h in got["hits"]] == [h["id"] for h in top["hits"]] and got["passage_weight"] == 10


def test_default_passage_weight_is_the_models(client, web_index):
    """λ depends on the phrase as the threshold does (ModelInfo.passage_weight_for)."""
    model_weight = web_index.passage_weight_for("dinosaur")
    assert web_index.passage_weight_for("person") == web_index.info()["model"]["passage_weight"]
    assert search(client, type="person", threshold=LOW, limit=5)["passage_weight"] == web_index.passage_weight_for("person")
    data = search(client, type="dinosaur", threshold=LOW, limit=5)
    assert data["passage_weight"] == model_weight
    direct = web_index.search("dinosaur", min_similarity=LOW, limit=5, passage_weight=model_weight)
    assert [h["score"] for h in data["hits"]] == pytest.approx([h.score for h in direct], abs=1e-5)


def test_passage_weight_bounds_are_the_apis():
    from indexer.api import MAX_PASSAGE_WEIGHT
    from indexer.web.schemas import MAX_PASSAGE_WEIGHT as WEB_MAX

    assert WEB_MAX == MAX_PASSAGE_WEIGHT


@pytest.mark.parametrize("weight", [-0.1, 10.5, "heavy"])
def test_bad_passage_weight_is_a_422(client, weight):
    body = {"type": "dinosaur", "passage_weight": weight}
    assert "passage_weight" in error_of(client.post("/api/v1/search", json=body), 422)
    assert "passage_weight" in error_of(client.get("/api/v1/search", params=body), 422)


def test_cursor_from_another_passage_weight_is_refused(client):
    first = search(client, type="dinosaur", threshold=LOW, limit=2, all=True, passage_weight=0)
    assert first["next_cursor"]
    for other in (2.0, None):  # None: the model's λ for "dinosaur", 1
        body = {"type": "dinosaur", "threshold": LOW, "limit": 2, "cursor": first["next_cursor"]}
        if other is not None:
            body["passage_weight"] = other
        assert "different query" in error_of(client.post("/api/v1/search", json=body), 400)
    same = search(client, type="dinosaur", threshold=LOW, limit=2, cursor=first["next_cursor"], passage_weight=0)
    assert same["hits"]


def test_filters_restrict_by_metadata(client):
    one = search(client, type="person", threshold=LOW, limit=50, filters={"topic": "politics"})
    assert one["hits"] and {h["fields"]["topic"] for h in one["hits"]} == {"politics"}
    many = search(client, type="person", threshold=LOW, limit=50, filters={"topic": ["politics", "music"]})
    assert {h["fields"]["topic"] for h in many["hits"]} == {"politics", "music"}


def test_a_filter_value_of_another_kind_is_one_line_not_one_per_kind_it_could_be(client):
    """A page audit: {"topic": {"a": 1}} answered pydantic's error for every branch of the union
    ("filters.topic.bool: …; filters.topic.int: …; …")."""
    message = error_of(client.post("/api/v1/search", json={"type": "person", "filters": {"topic": {"a": 1}}}), 422)
    assert message == "filters.topic: a value must be a string, a number, a boolean or a list of them"


def test_text_restriction(client):
    data = search(client, type="museum", threshold=LOW, limit=50, text="Museum")
    assert data["hits"] and all("museum" in h["text"].lower() for h in data["hits"])


def test_facets_count_metadata_over_all_matches(client, web_index):
    data = search(client, type="organization", threshold=LOW, limit=1, facets=True)
    everything = web_index.search("organization", min_similarity=LOW, exhaustive=True)
    assert data["total"] == len(everything)
    topics = {d["value"]: d["count"] for d in data["facets"]["topic"]}
    for topic, count in topics.items():
        assert count == sum(1 for h in everything if h.fields["topic"] == topic)
    assert data["next_cursor"] is None  # facets without all: no paging


def test_facets_leave_the_top_hits_as_they_are(client, web_index):
    """Facets add counts over the result set; the hits stay the top-k search's, which ranks
    passages through candidate spans too (those are not in the result set). "person" at its own
    threshold ranks two passages through candidates alone on this corpus: the case that differs."""
    plain = search(client, type="person", limit=10)
    with_facets = search(client, type="person", limit=10, facets=True)
    top = [h.id for h in web_index.search("person", limit=10)]
    result_set = {h.id for h in web_index.search("person", exhaustive=True)}
    assert set(top) - result_set  # the case this test is about is present
    assert [h["id"] for h in with_facets["hits"]] == [h["id"] for h in plain["hits"]] == top
    assert with_facets["total"] == len(result_set) and with_facets["facets"]


def test_repeated_paged_search_uses_the_cache(client):
    service = client.app.state.service
    service.cache.clear()
    search(client, type="band", threshold=LOW, limit=2, all=True)
    assert len(service.cache) == 1
    search(client, type="band", threshold=LOW, limit=2, all=True)
    assert len(service.cache) == 1


# ----------------------------------------------------------------- limits and errors


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"type": "x" * 201}, 400, "limit is 200"),
        ({"type": "   "}, 400, "type is empty"),
        ({"type": "dinosaur", "limit": 1001}, 400, "page size limit"),
        ({"type": "dinosaur", "limit": 0}, 422, "limit"),
        ({"type": "dinosaur", "threshold": 1.5}, 422, "threshold"),
        ({"type": "dinosaur", "text": "y" * 501}, 400, "text is 501"),
        ({"type": "dinosaur", "filters": {"bad name!": "x"}}, 400, "filter field"),
        ({"type": "dinosaur", "filters": {"topic": []}}, 400, "empty list"),
        ({"type": "dinosaur", "filters": {"topic": {"range": {"gte": 1}}}}, 422, "filters"),
        ({"type": "dinosaur", "query": {"match_all": {}}}, 422, "query"),
        ({"type": "dinosaur", "knn": {"field": "spans.vector"}}, 422, "knn"),
        ({"limit": 3}, 422, "type"),
    ],
)
def test_bad_searches_get_clear_json_errors(client, body, status, message):
    assert message in error_of(client.post("/api/v1/search", json=body), status)


@pytest.mark.parametrize("field, value", [
    ("threshold", True), ("limit", True), ("passage_weight", True), ("all", "yes"), ("all", 1), ("facets", "on"),
    ("limit", "3"), ("threshold", "0.5"),
])
def test_a_value_of_another_json_type_is_a_422_not_coerced(client, field, value):
    # lax validation made "threshold": true a search at 1.0 and "all": "off" a search for all
    assert field in error_of(client.post("/api/v1/search", json={"type": "dinosaur", field: value}), 422)


def test_an_integer_is_still_a_number(client):
    assert search(client, type="dinosaur", threshold=0, passage_weight=1)["threshold"] == 0.0


def test_non_json_body_is_a_422(client):
    response = client.post("/api/v1/search", content=b"type=dinosaur", headers={"content-type": "application/json"})
    error_of(response, 422)


def test_unknown_route_and_method_are_json(client):
    assert error_of(client.get("/api/v1/nope"), 404)
    error_of(client.delete("/api/v1/search"), 405)


def test_oversized_body_is_refused(web_index):
    with local_client(create_app(web_index, limits=Limits(max_body_bytes=100))) as c:
        response = c.post("/api/v1/search", json={"type": "dinosaur", "text": "x" * 200})
        assert "body over 100 bytes" in error_of(response, 413)


class SlowIndex:
    """The real index, slowed down: to see the request time limit at work."""

    def __init__(self, index, delay: float) -> None:
        self._index, self._delay = index, delay

    def search(self, *args, **kwargs):
        time.sleep(self._delay)
        return self._index.search(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._index, name)


class Raising(SlowIndex):
    """The real index, whose searches all raise ``error``: to see how the service answers it."""

    def __init__(self, index, error: Exception) -> None:
        super().__init__(index, 0)
        self._error = error

    def search(self, *args, **kwargs):
        raise self._error


def test_request_time_limit_gives_504(web_index):
    app = create_app(SlowIndex(web_index, 0.5), limits=Limits(request_timeout_s=0.05))
    with local_client(app) as c:
        response = c.post("/api/v1/search", json={"type": "dinosaur"})
        assert "longer than 0.05 s" in error_of(response, 504)
        assert c.get("/api/v1/health").status_code == 200


def test_a_hung_store_leaves_the_catalog_and_vectors_answering_and_health_bounded(web_index):
    """An audit on Elasticsearch: searches a hung store held kept the pool, so /api/v1/types and
    /api/v1/embed answered 504 "narrow it (filters, ...)", /api/v1/info the same advice, and a
    health probe waited minutes, then said ok."""
    import threading

    release = threading.Event()

    class Hung(SlowIndex):
        def search(self, *args, **kwargs):
            release.wait(5)
            return self._index.search(*args, **kwargs)

        def info(self):
            release.wait(5)
            return self._index.info()

        def check_usable(self):
            release.wait(5)

    app = create_app(Hung(web_index, 0), limits=Limits(request_timeout_s=0.3), workers=2)
    try:
        with local_client(app) as c:
            for _ in range(2):  # both search threads held
                message = error_of(c.post("/api/v1/search", json={"type": "dinosaur"}), 504)
                assert "narrow it" in message and "its wait for a free worker included" in message
            assert c.get("/api/v1/types", params={"q": "dino", "limit": 2}).status_code == 200
            assert c.get("/api/v1/embed", params={"type": "dinosaur"}).status_code == 200
            message = error_of(c.get("/api/v1/info"), 504)
            assert "did not answer within it" in message and "narrow" not in message
            assert "did not answer within 0.3 s" in error_of(c.get("/api/v1/health"), 503)
    finally:
        release.set()


def test_a_slow_embed_is_not_told_to_narrow_filters_it_has_none_of(web_index):
    """An audit: /api/v1/embed's 504 said "narrow it (filters, text, a higher threshold) or page
    with a smaller limit"; it has none of those."""

    class SlowEmbed(SlowIndex):
        def embed(self, phrases):
            time.sleep(0.5)
            return self._index.embed(phrases)

    with local_client(create_app(SlowEmbed(web_index, 0), limits=Limits(request_timeout_s=0.2))) as c:
        message = error_of(c.post("/api/v1/embed", json={"phrases": ["dinosaur", "river"]}), 504)
    assert "send fewer phrases" in message and "narrow" not in message


def test_a_store_of_another_model_is_a_409_that_says_to_serve_that_model(web_index):
    """An audit: the 409 told the service's operator to re-index the corpus (the command line's
    remedy) where restarting the service with the store's model is the one."""
    from indexer.errors import ModelMismatchError

    other = Raising(web_index, ModelMismatchError("the store holds vectors of model m 2; this run uses m 1"))
    with local_client(create_app(other)) as c:
        response = c.post("/api/v1/search", json={"type": "dinosaur"})
        assert "restart 'nerindex serve' with --model" in error_of(response, 409)
        assert response.json()["error"]["code"] == "model_mismatch"


def test_store_errors_are_503(web_index):
    from indexer.errors import StoreError

    with local_client(create_app(Raising(web_index, StoreError("the store is gone")))) as c:
        assert "the store is gone" in error_of(c.post("/api/v1/search", json={"type": "dinosaur"}), 503)


def test_a_search_the_server_cannot_run_is_a_501_not_a_bad_request(web_index):
    """A web audit: an Elasticsearch without Painless refused --all pages as 400 bad_request."""
    from indexer.errors import UnsupportedSearchError

    class NoPainless(SlowIndex):  # top-k searches work there
        def search(self, *args, exhaustive=False, **kwargs):
            if exhaustive:
                raise UnsupportedSearchError("exhaustive search needs the lang-painless module, which this server lacks")
            return self._index.search(*args, **kwargs)

    with local_client(create_app(NoPainless(web_index, 0))) as c:
        response = c.post("/api/v1/search", json={"type": "dinosaur", "all": True})
        assert "lang-painless" in error_of(response, 501) and response.json()["error"]["code"] == "not_supported"
        # facets and Search UI too, in the service's words (an audit: "--all, or a limit above 10,000")
        for path, body in (("/api/v1/search", {"type": "dinosaur", "facets": True}),
                           ("/api/search", {"state": {"searchTerm": "dinosaur"}})):
            message = error_of(c.post(path, json=body), 501)
            assert "reads every matching passage (all: true, facets, Elastic Search UI)" in message
            assert "Top-k searches (no all, no facets) work" in message


def test_a_store_busy_with_writes_is_a_503_to_retry(web_index):
    """A web audit: a search that could not fix one version under a steady writer read as an outage
    (503 store_unavailable); it is passing, so its own code and a Retry-After."""
    from indexer.errors import StoreBusyError

    busy = Raising(web_index, StoreBusyError("the store was written 9 times while a search began; search again"))
    with local_client(create_app(busy)) as c:
        response = c.post("/api/v1/search", json={"type": "dinosaur"})
        assert "search again" in error_of(response, 503)
        assert response.json()["error"]["code"] == "store_busy" and response.headers["retry-after"] == "1"


# ----------------------------------------------------------------- embed


def test_embed_returns_unit_vectors_equal_to_nerindex(client, web_index):
    data = client.post("/api/v1/embed", json={"phrases": ["dinosaur", "political party"]}).json()
    vectors = np.asarray(data["vectors"], dtype=np.float32)
    assert vectors.shape == (2, web_index.info()["model"]["dims"]) == (2, data["dims"])
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(vectors, web_index.embed(["dinosaur", "political party"]), atol=1e-5)
    assert data["model"]["id"] == web_index.info()["model"]["id"]
    assert data["thresholds"] == [web_index.threshold_for(p) for p in ("dinosaur", "political party")]
    assert data["passage_weights"] == [web_index.passage_weight_for(p) for p in ("dinosaur", "political party")]
    single = client.get("/api/v1/embed", params={"type": "dinosaur"}).json()
    assert np.allclose(single["vectors"][0], vectors[0], atol=1e-6)


@pytest.mark.parametrize("phrases, status", [([], 422), ([""], 400), (["x" * 201], 400), (["a"] * 65, 400)])
def test_embed_limits(client, phrases, status):
    error_of(client.post("/api/v1/embed", json={"phrases": phrases}), status)


# ----------------------------------------------------------------- CORS and the page


def test_cors_is_off_by_default(client):
    response = client.get("/api/v1/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = client.options(
        "/api/v1/search", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_when_configured(web_index):
    with local_client(create_app(web_index, cors_origins=["http://app.example"])) as c:
        ok = c.get("/api/v1/health", headers={"Origin": "http://app.example"})
        assert ok.headers["access-control-allow-origin"] == "http://app.example"
        other = c.get("/api/v1/health", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = c.options(
            "/api/search",
            headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"},
        )
        assert preflight.status_code == 200
        refused = c.options("/api/search", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400 and refused.json()["error"] == {  # a web audit: it was text/plain
            "status": 400, "code": "cors_refused", "message": "Disallowed CORS origin (serve --cors-origin)"}
        method = c.options("/api/search", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "PUT"})
        assert method.json()["error"]["message"] == "Disallowed CORS method"  # no option allows it: no hint (a review)
        assert method.headers["access-control-allow-methods"] and method.headers["access-control-allow-origin"] == "http://app.example"
        # a web audit: an unexpected error's 500 was answered outside CORS, so the page saw a network error
        c.app.state.service.index = None  # every search now fails unexpectedly (an AttributeError)
        failed = c.post("/api/v1/search", json={"type": "person"}, headers={"Origin": "http://app.example"})
        assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal_error"
        assert failed.headers["access-control-allow-origin"] == "http://app.example"
        assert failed.headers["cache-control"] == "no-store"


def test_page_and_assets_are_served_with_a_strict_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "<script>" not in page.text  # no inline script: everything comes from /static
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"


# ----------------------------------------------------------------- Search UI (ApiProxyConnector)


def searchui(client, path: str, state: dict, query_config: dict | None = None) -> dict[str, Any]:
    response = client.post(path, json={"state": state, "queryConfig": query_config or {}})
    assert response.status_code == 200, response.text
    return response.json()


def test_searchui_refuses_request_state_beside_state(low_client):
    """An audit: the body model dropped unknown keys before the parser's check, so a filter beside
    ``state`` was lost (an unfiltered answer, 200) and a top-level searchTerm answered empty."""
    for path, body in (
        ("/api/search", {"state": {"searchTerm": "person"}, "filters": [{"field": "topic", "values": ["science"]}]}),
        ("/api/search", {"searchTerm": "river"}),
        ("/api/search", {"state": {"searchTerm": "person", "resultsPerPage": 5}, "current": 2}),
        ("/api/autocomplete", {"searchTerm": "dino"}),
    ):
        assert 'belongs inside "state"' in error_of(low_client.post(path, json=body), 400)
    # keys Search UI does not define are still ignored
    assert low_client.post("/api/search", json={"state": {"searchTerm": "person"}, "extra": 1}).status_code == 200


def test_searchui_search_answers_with_a_response_state(low_client, web_index):
    everything = web_index.search("dinosaur", min_similarity=LOW, exhaustive=True)
    state = searchui(
        low_client,
        "/api/search",
        {"searchTerm": "dinosaur", "current": 1, "resultsPerPage": 2},
        {"result_fields": {"text": {"snippet": {}}, "title": {"raw": {}}}, "facets": {"topic": {"type": "value"}}},
    )
    assert state["totalResults"] == len(everything)
    assert len(state["results"]) == 2
    assert [r["id"]["raw"] for r in state["results"]] == [h.id for h in everything[:2]]
    for r in state["results"]:
        assert set(r) == {"id", "_meta", "text", "title"}
        assert "<em>" in r["text"]["snippet"]
    assert set(state["facets"]) == {"topic"}
    assert state["facets"]["topic"][0]["type"] == "value"


def test_searchui_pages_filters_and_disjunctive_facets(low_client, web_index):
    config = {"facets": {"topic": {"type": "value"}}, "disjunctiveFacets": ["topic"]}
    everything = web_index.search("person", min_similarity=LOW, exhaustive=True)
    filters = [{"field": "topic", "type": "any", "values": ["politics"]}]
    page2 = searchui(low_client, "/api/search", {"searchTerm": "person", "current": 2, "resultsPerPage": 1, "filters": filters}, config)
    politics = [h for h in everything if h.fields["topic"] == "politics"]
    assert page2["totalResults"] == len(politics)
    assert len(politics) > 1
    assert page2["results"][0]["id"]["raw"] == politics[1].id
    counts = {d["value"]: d["count"] for d in page2["facets"]["topic"][0]["data"]}
    # disjunctive: the topic facet counts ignore the topic filter itself
    assert sum(counts.values()) == len(everything)
    excluded = searchui(
        low_client, "/api/search",
        {"searchTerm": "person", "resultsPerPage": 50, "filters": [{"field": "topic", "type": "none", "values": ["politics"]}]},
    )
    assert excluded["totalResults"] == len(everything) - len(politics)


def test_searchui_empty_term_is_an_empty_result(low_client):
    state = searchui(low_client, "/api/search", {"searchTerm": ""})
    assert state["totalResults"] == 0 and state["results"] == []


def test_searchui_snippet_escapes_corpus_html(low_client):
    state = searchui(
        low_client, "/api/search",
        {"searchTerm": "museum", "resultsPerPage": 50, "filters": [{"field": "topic", "values": ["security"]}]},
    )
    assert [r["id"]["raw"] for r in state["results"]] == ["xss-1"]
    for r in state["results"]:
        snippet = r["text"]["snippet"]
        assert "<script" not in snippet and "<img" not in snippet
        assert "&lt;script&gt;" in snippet


def test_searchui_range_filter_is_a_400(low_client):
    response = low_client.post(
        "/api/search",
        json={"state": {"searchTerm": "dinosaur", "filters": [{"field": "year", "values": [{"from": 1, "name": "r"}]}]}},
    )
    assert "range filters" in error_of(response, 400)


def test_searchui_autocomplete_suggests_catalog_types_and_results(low_client, web_index):
    phrase = web_index.catalog[0]
    data = searchui(
        low_client, "/api/autocomplete", {"searchTerm": phrase[:3]},
        {"suggestions": {"types": {"documents": {"fields": ["type"]}}, "size": 4}, "results": {"resultsPerPage": 2}},
    )
    suggestions = [s["suggestion"] for s in data["autocompletedSuggestions"]["documents"]]
    assert phrase in suggestions and len(suggestions) <= 4
    assert len(data["autocompletedResults"]) <= 2
    assert set(data) == {"autocompletedResults", "autocompletedResultsRequestId", "autocompletedSuggestions", "autocompletedSuggestionsRequestId"}


class MostlyCandidates(SlowIndex):
    """The real index, where three passages in four are ranked by a candidate span alone, as an
    unseen type's top hits often are: unmarked in a top-k answer, left out of an exhaustive one."""

    def __init__(self, index) -> None:
        super().__init__(index, 0)

    def search(self, *args, exhaustive=False, **kwargs):
        hits = self._index.search(*args, exhaustive=exhaustive, **kwargs)
        marked = [h for h in hits if zlib.crc32(h.id.encode()) % 4 == 0]
        return marked if exhaustive else [h if h in marked else dataclasses.replace(h, spans=()) for h in hits]


@pytest.mark.parametrize("phrase", ["person", "city", "dinosaur"])
def test_searchui_autocomplete_results_are_the_first_results_of_its_search(web_index, phrase):
    """A paging audit: autocomplete fetched twice as many top hits as it showed and left out those
    ranked by a candidate alone, so for an unseen type it offered 1 result where 5 were asked for
    and its search's first page held 5."""
    with local_client(create_app(MostlyCandidates(web_index), threshold=LOW)) as c:
        for size in (1, 3, 5):
            offered = searchui(c, "/api/autocomplete", {"searchTerm": phrase}, {"results": {"resultsPerPage": size}})
            page = searchui(c, "/api/search", {"searchTerm": phrase, "resultsPerPage": size})
            ids = [[r["id"]["raw"] for r in rs] for rs in (offered["autocompletedResults"], page["results"])]
            assert ids[0] == ids[1] and len(ids[0]) == min(size, page["totalResults"])


# ----------------------------------------------------------------- the command


def test_serve_command_is_registered_and_refuses_a_missing_store(tmp_path, capsys):
    main(["serve", "--help"])
    assert "--cors-origin" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["serve", "--store", str(tmp_path / "missing")])
    assert info.value.code != 0
    assert "no nerindex store" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_a_wrong_option(tmp_path, capsys):
    """uvicorn exited 3 (the code of an unusable model) for an address in use, after loading."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as info:
            main(["serve", "--store", str(tmp_path / "missing"), "--port", str(port)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: cannot listen on 127.0.0.1:{port} (--host, --port)" in err and "Usage:" not in err


def test_hits_are_plain_json(client):
    data = search(client, type="dinosaur", threshold=LOW, limit=3)
    assert json.loads(json.dumps(data)) == data


def test_server_default_threshold_applies_when_a_request_gives_none(low_client, web_index):
    assert low_client.get("/api/v1/info").json()["server"]["threshold"] == LOW
    data = search(low_client, type="dinosaur", limit=50)
    assert data["threshold"] == LOW
    assert len(data["hits"]) == len(web_index.search("dinosaur", min_similarity=LOW, limit=50))


def test_a_replaced_store_is_503_on_every_route_health_included(tmp_path):
    """An audit: after store.sqlite was replaced the service served cached answers from the old file;
    then (a review) health still said ok while every search was 503, so no probe restarted it."""
    import os
    import shutil

    index = build_index(tmp_path / "s")
    try:
        with local_client(create_app(index)) as c:
            assert c.get("/api/v1/health").status_code == 200
            assert c.get("/api/v1/search", params={"type": "person"}).status_code == 200
            shutil.copy(tmp_path / "s" / "store.sqlite", tmp_path / "s" / "incoming.sqlite")
            os.replace(tmp_path / "s" / "incoming.sqlite", tmp_path / "s" / "store.sqlite")
            for path, params in (("/api/v1/health", {}), ("/api/v1/search", {"type": "person"}), ("/api/v1/info", {})):
                response = c.get(path, params=params)
                assert response.status_code == 503, (path, response.text)
                assert "replaced or removed" in response.json()["error"]["message"]
    finally:
        index.close()


def test_searchui_autocomplete_of_a_term_without_words_is_no_error(low_client):
    """An audit of the surfaces: "..." typed into the box answered 400 on every keystroke."""
    for term in ("...", "\u200b", "dino."):
        data = searchui(low_client, "/api/autocomplete", {"searchTerm": term},
                        {"suggestions": {"types": {"documents": {"fields": ["type"]}}, "size": 3}, "results": {"resultsPerPage": 2}})
        assert "autocompletedResults" in data


def test_the_search_ui_endpoint_keeps_the_json_apis_value_limit(web_index):
    """A filter of 101 values is a 400 on both search endpoints (Search UI's took any number: an audit)."""
    values = [f"v{i}" for i in range(101)]
    with local_client(create_app(web_index)) as c:
        assert "101 values; the limit is 100" in error_of(c.post("/api/v1/search", json={
            "type": "dinosaur", "filters": {"topic": values}}), 400)
        assert "101 values; the limit is 100" in error_of(c.post("/api/search", json={"state": {
            "searchTerm": "dinosaur", "filters": [{"field": "topic", "type": "none", "values": values}]}}), 400)
