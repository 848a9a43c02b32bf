"""The service under hostile or careless requests: body size as it arrives, invalid Unicode,
unknown query parameters, foreign Host headers, facets it could not filter on.

Each of these was a fault of 0.2.0 (issue 10): a chunked body was read in full, a lone surrogate
was an HTTP 500, a misspelt parameter was ignored, any Host was answered, and the page offered a
facet the API then refused.
"""

from __future__ import annotations

import dataclasses
import select
import socket
from urllib.parse import urlsplit

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")
pytest.importorskip("httpx", reason="the [web] extra is not installed")
pytest.importorskip("uvicorn", reason="the [web] extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402
from test_web_api import LOW, ServerThread, client, error_of, local_client, web_index  # noqa: E402,F401

from indexer.cli import main  # noqa: E402
from indexer.web import Limits, create_app  # noqa: E402
from indexer.web.edge import host_name  # noqa: E402

JSON = {"content-type": "application/json"}

# ----------------------------------------------------------------------------------- body size


def test_chunked_body_over_the_limit_is_a_413(web_index):
    """No Content-Length: the bytes received are counted (0.2.0 checked only the header)."""

    def chunks():
        yield b'{"type": "dinosaur", "text": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}'

    with local_client(create_app(web_index, limits=Limits(max_body_bytes=4096))) as c:
        response = c.post("/api/v1/search", content=chunks(), headers=JSON)
        assert "body over 4096 bytes" in error_of(response, 413)


def test_chunked_body_is_not_read_past_the_limit(web_index):
    """A real server and a raw socket: the 413 comes while the client is still sending, long
    before the 200 MB it means to send, and the connection is closed after it."""
    total, chunk = 200 * 2**20, b"x" * 2**16
    with ServerThread(create_app(web_index)) as url:
        where = urlsplit(url)
        sock = socket.create_connection((where.hostname, where.port), timeout=10)
        try:
            sock.sendall(
                b"POST /api/v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            sent = 0
            while sent < total and not select.select([sock], [], [], 0)[0]:
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except (BrokenPipeError, ConnectionResetError, socket.timeout):
                    break
                sent += len(chunk)
            response, closed = b"", False
            while not closed:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                except socket.timeout:
                    break
                response += data
                closed = not data
        finally:
            sock.close()
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"body over 262144 bytes" in response and b"connection: close" in response.lower()
    assert closed, "the server kept the connection open, reading the rest of the body"
    assert sent < total // 4, f"the client sent {sent} bytes before the answer"


# ---------------------------------------------------------------------------- invalid Unicode


@pytest.mark.parametrize(
    "path, body, where",
    [
        ("/api/v1/search", b'{"type": "\\ud800dino"}', "type: a lone surrogate U+D800"),
        ("/api/v1/search", b'{"type": "dinosaur", "filters": {"topic": ["x", "\\udfff"]}}', "filters.topic[1]"),
        ("/api/v1/search", b'{"type": "dinosaur", "filters": {"\\ud800": "x"}}', "(a key)"),
        ("/api/v1/search", b'{"type": "dinosaur", "text": "caf\\udce9"}', "text: a lone surrogate U+DCE9 at character 4"),
        ("/api/v1/embed", b'{"phrases": ["river", "\\udc00"]}', "phrases[1]"),
        ("/api/search", b'{"state": {"searchTerm": "\\ud800"}}', "state.searchTerm"),
        ("/api/v1/search", b'{"type": "\xffdino"}', "the body is not valid UTF-8"),
        # UTF-16 was read as JSON allows, where the docs say UTF-8 (a web audit)
        ("/api/v1/search", '{"type": "dinosaur"}'.encode("utf-16"), "the body is not valid UTF-8"),
    ],
)
def test_invalid_unicode_in_a_body_is_a_422_naming_it(client, path, body, where):
    message = error_of(client.post(path, content=body, headers=JSON), 422)
    assert where in message and "\n" not in message


@pytest.mark.parametrize(
    "headers, body, message",
    [  # a web audit: these were "body: Input should be a valid dictionary" and "not valid UTF-8 at byte 2"
        ({"content-type": "application/x-www-form-urlencoded"}, b'{"type": "dinosaur"}',
         "send it with Content-Type: application/json (it came as application/x-www-form-urlencoded)"),
        ({"content-type": "text/plain"}, b'{"type": "dinosaur"}', "(it came as text/plain)"),
        ({}, b'{"type": "dinosaur"}', "(it came without one)"),
        ({**JSON, "content-encoding": "gzip"}, __import__("gzip").compress(b'{"type": "dinosaur"}'),
         "Content-Encoding gzip is not read: send the body uncompressed"),
    ],
)
def test_a_body_not_sent_as_plain_json_is_a_415_saying_how_to_send_it(client, headers, body, message):
    for path in ("/api/v1/search", "/api/search"):
        response = client.post(path, content=body, headers=headers)
        assert message in error_of(response, 415) and response.json()["error"]["code"] == "unsupported_media_type"


def test_a_utf8_body_with_a_byte_order_mark_is_read_and_errors_count_its_bytes(client):
    response = client.post("/api/v1/search", content=b'\xef\xbb\xbf{"type": "dinosaur"}', headers=JSON)
    assert response.status_code == 200 and response.json()["hits"]
    # a review: decoded as utf-8-sig, the position of a bad byte after a BOM came 3 bytes early
    message = error_of(client.post("/api/v1/search", content=b'\xef\xbb\xbf{"type": "\xffdino"}', headers=JSON), 422)
    assert "at byte 14" in message  # the BOM is bytes 1-3


@pytest.mark.parametrize(
    "query, name",
    [
        ("/api/v1/search?type=%ED%A0%80dino", "'type'"),  # a UTF-8-encoded surrogate
        ("/api/v1/search?type=caf%E9", "'type'"),  # Latin-1
        ("/api/v1/search?type=dinosaur&where=topic%3D%FF", "'where'"),
        ("/api/v1/types?q=%FF", "'q'"),
    ],
)
def test_invalid_utf8_in_a_query_is_a_422_naming_the_parameter(client, query, name):
    """Starlette would decode these to U+FFFD and search for that."""
    message = error_of(client.get(query), 422)
    assert f"query parameter {name}" in message and "not valid UTF-8" in message


@pytest.mark.parametrize("query, name", [
    ("/api/v1/search?type=dinosaur&where=topic%3Da%00b", "'where'"), ("/api/v1/search?type=per%00son", "'type'"),
    ("/api/v1/search?type=person&text=a%00b", "'text'"), ("/api/v1/embed?type=per%00son", "'type'"),
])
def test_a_nul_in_a_query_is_a_422_naming_the_parameter(client, query, name):
    """A review: a NUL (which no store holds as text) reached the GET routes, which answered 500."""
    message = error_of(client.get(query), 422)
    assert f"query parameter {name}: the value holds a NUL character (U+0000)" in message


# ----------------------------------------------------------------------- unknown parameters


@pytest.mark.parametrize(
    "query, name, why",
    [
        ("/api/v1/search?type=dinosaur&treshold=0.9", "treshold", "unknown parameter ("),
        ("/api/v1/search?type=dinosaur&filters=topic", "filters", "unknown parameter ("),
        ("/api/v1/embed?type=river&phrases=x", "phrases", "unknown parameter ("),
        ("/api/v1/types?query=riv", "query", "unknown parameter ("),
        ("/api/v1/info?verbose=1", "verbose", "unknown parameter ("),
        # audit8: Starlette keeps the last value, so type=dinosaur&type=city searched for city
        ("/api/v1/embed?type=dinosaur&type=city", "type", "given more than once"),
        ("/api/v1/search?type=dinosaur&type=city", "type", "given more than once"),
        ("/api/v1/search?type=dinosaur&limit=2&limit=3", "limit", "given more than once"),
        ("/api/v1/types?q=riv&q=cit", "q", "given more than once"),
    ],
)
def test_a_query_parameter_the_route_does_not_take_is_a_422_naming_it(client, query, name, why):
    message = error_of(client.get(query), 422)
    assert f"query.{name}: {why}" in message


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/search?where=topic=science&all=true", {"type": "person"}),
        ("/api/v1/embed?type=city", {"phrases": ["river"]}),
        ("/api/search?size=3", {"state": {"searchTerm": "person"}}),
        ("/api/autocomplete?q=riv", {"state": {"searchTerm": "riv"}}),
    ],
)
def test_a_post_route_refuses_query_parameters(client, path, body):
    """An audit: POST answered 200, unfiltered, with ``?where=…&all=true`` silently ignored."""
    assert "unknown parameter (this route takes none)" in error_of(client.post(path, json=body), 422)


def test_an_empty_cursor_is_refused_not_the_first_page(client):
    """An audit: "cursor": "" answered the first page again (a client looping on it never ends)."""
    assert "cursor" in error_of(client.post("/api/v1/search", json={"type": "person", "all": True, "cursor": ""}), 422)
    assert "cursor" in error_of(client.get("/api/v1/search?type=person&all=true&cursor="), 422)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_threshold_that_is_not_a_finite_number_says_so(client, value):
    """An audit: NaN was refused as "should be less than or equal to 1"."""
    assert "finite number" in error_of(client.get(f"/api/v1/search?type=person&threshold={value}"), 422)
    assert "finite number" in error_of(client.get(f"/api/v1/search?type=person&passage_weight={value}"), 422)


def test_a_repeated_where_is_any_of(client):
    hits = client.get("/api/v1/search?type=person&threshold=0&where=topic=music&where=topic=politics&limit=20").json()["hits"]
    assert {h["fields"]["topic"] for h in hits} == {"music", "politics"}


def test_a_limit_left_out_is_the_page_size_limit_when_lower(web_index):
    """--max-page-size 3 made every request without a limit a 400 ("limit 10 is above ...")."""
    with local_client(create_app(web_index, limits=Limits(max_page_size=3))) as c:
        assert len(c.get("/api/v1/search?type=dinosaur&threshold=0").json()["hits"]) == 3
        assert len(c.post("/api/v1/search", json={"type": "dinosaur", "threshold": 0.0}).json()["hits"]) == 3
        assert "above the page size limit of 3" in error_of(c.get("/api/v1/search?type=dinosaur&limit=4"), 400)
        assert "above the page size limit of 3" in error_of(c.post("/api/v1/search", json={"type": "dinosaur", "limit": 10}), 400)


def test_the_page_still_takes_its_own_query(client):
    assert client.get("/?type=dinosaur&threshold=0.4&passage_weight=1").status_code == 200


# ------------------------------------------------------------------------------- Host header


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:8000", "[::1]:8000", "127.0.0.1"])
def test_loopback_names_are_served(client, host):
    assert client.get("/api/v1/health", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "testserver"])
def test_other_hosts_get_a_400(client, host):
    """A rebinding page at evil.example resolving to 127.0.0.1 still sends its own name."""
    response = client.get("/api/v1/health", headers={"host": host})
    message = error_of(response, 400)
    assert "not served here" in message and f"--allow-host {host_name(host)}" in message
    assert response.headers["cache-control"] == "no-store"  # a web audit: none on these early errors


def test_allowed_hosts_and_any_host(web_index):
    app = create_app(web_index, allowed_hosts=["search.example"])
    with TestClient(app, base_url="http://search.example:8000") as c:
        assert c.get("/api/v1/health").status_code == 200
        assert c.get("/api/v1/health", headers={"host": "localhost"}).status_code == 400
    with TestClient(create_app(web_index, allowed_hosts=["*"]), base_url="http://anything.example") as c:
        assert c.get("/api/v1/health").status_code == 200


def test_serve_allows_its_address_loopback_and_allow_host(tmp_path, monkeypatch):
    import uvicorn

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "The Nile flows through Egypt."}\n', encoding="utf-8")
    main(["index", str(corpus), "--store", str(tmp_path / "s"), "--json"])
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: served.append((app, kwargs)))
    monkeypatch.setattr("indexer.cli.serve.check_listen", lambda host, port: None)  # 10.1.2.3 is not this machine's
    main(["serve", "--store", str(tmp_path / "s"), "--host", "10.1.2.3", "--allow-host", "search.example",
          "--timeout", "3"])
    [(app, kwargs)] = served
    # a web audit: a client stalled mid-request held the service open after Ctrl-C until it went away
    assert kwargs["timeout_graceful_shutdown"] == 3 + 5
    with TestClient(app) as c:
        status = {h: c.get("/api/v1/health", headers={"host": h}).status_code
                  for h in ("10.1.2.3:8000", "search.example", "localhost:8000", "[::1]", "evil.example")}  # fmt: skip
    assert status == {"10.1.2.3:8000": 200, "search.example": 200, "localhost:8000": 200, "[::1]": 200, "evil.example": 400}


def test_serve_logs_the_elasticsearch_clients_request_lines_at_debug_only(tmp_path, monkeypatch):
    """A docs audit: at the default --log-level info, serve logged an INFO line of the Elasticsearch
    client for every request (six a search), before even a one-line refusal."""
    import logging

    import uvicorn

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "The Nile flows through Egypt."}\n', encoding="utf-8")
    main(["index", str(corpus), "--store", str(tmp_path / "s"), "--json"])
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: None)
    transport = logging.getLogger("elastic_transport")
    monkeypatch.setattr(transport, "level", transport.level)  # restored after the test
    for level, expected in (("info", logging.WARNING), ("debug", logging.NOTSET), ("error", logging.ERROR)):
        transport.setLevel(logging.NOTSET)
        main(["serve", "--store", str(tmp_path / "s"), "--log-level", level])
        assert transport.level == expected, level


# ---------------------------------------------------------------------------------- facets


class MarkupFieldIndex:
    """The real index, its hits carrying one more field whose name the API cannot filter on."""

    def __init__(self, index) -> None:
        self._index = index

    def search(self, *args, **kwargs):
        return [dataclasses.replace(h, fields={**h.fields, "<b>tag</b>": "x"}) for h in self._index.search(*args, **kwargs)]

    def __getattr__(self, name):
        return getattr(self._index, name)


def test_facets_are_only_fields_the_api_can_filter_on(web_index):
    with local_client(create_app(MarkupFieldIndex(web_index))) as c:
        response = c.post("/api/v1/search", json={"type": "dinosaur", "threshold": LOW, "facets": True})
        assert response.status_code == 200, response.text
        facets = response.json()["facets"]
        assert "topic" in facets and "<b>tag</b>" not in facets
        # every facet offered can be sent back as a filter
        for name, values in facets.items():
            again = c.post("/api/v1/search", json={"type": "dinosaur", "threshold": LOW, "filters": {name: values[0]["value"]}})
            assert again.status_code == 200, again.text


def test_api_answers_are_not_stored_and_the_page_is_revalidated(client):
    """An audit: no response had Cache-Control, so a heuristic cache could keep an answer past the
    next write, or an old app.js past an upgrade (the page files have an ETag to revalidate by)."""
    for path in ("/api/v1/health", "/api/v1/search?type=person&threshold=0", "/api/v1/nothing"):
        assert client.get(path).headers["cache-control"] == "no-store", path
    assert client.post("/api/v1/search", json={"type": "person"}).headers["cache-control"] == "no-store"
    page = client.get("/")
    assert page.headers["cache-control"] == "no-cache"
    script = client.get("/static/app.js")
    assert script.status_code == 200 and script.headers["cache-control"] == "no-cache" and "etag" in script.headers
    again = client.get("/static/app.js", headers={"if-none-match": script.headers["etag"]})
    assert again.status_code == 304
    # the page too (an audit: "/" was sent whole with a matching ETag, and HEAD was a 405)
    same = client.get("/?type=person", headers={"if-none-match": page.headers["etag"]})
    assert same.status_code == 304 and same.headers["cache-control"] == "no-cache"
    head = client.head("/")
    assert head.status_code == 200 and head.headers["etag"] == page.headers["etag"] and not head.content
    assert "content-security-policy" in page.headers and "content-security-policy" in same.headers


@pytest.mark.parametrize("path, body, key", [
    ("/api/v1/search", b'{"type": "dinosaur", "type": "city"}', "'type'"),
    ("/api/v1/search", b'{"type": "person", "filters": {"topic": "music", "topic": "politics"}}', "'topic'"),
    ("/api/search", b'{"state": {"searchTerm": "person", "searchTerm": "city"}}', "'searchTerm'"),
])
def test_a_json_key_given_twice_is_a_422_naming_it(client, path, body, key):
    """A web audit: JSON keeps the last, so the first search term was dropped silently; the GET
    routes refuse a parameter given twice and the file readers a key given twice."""
    message = error_of(client.post(path, content=body, headers=JSON), 422)
    assert message == f"body: the key {key} is given twice"


@pytest.mark.parametrize("path, body, words", [
    ("/api/search", b'{"state": {"searchTerm": "city", "current": Infinity}}', "not valid JSON: Infinity is not a JSON number"),
    ("/api/search", b'{"state": {"searchTerm": "city", "resultsPerPage": NaN}}', "not valid JSON: NaN is not a JSON number"),
    ("/api/autocomplete", b'{"queryConfig": {"suggestions": {"size": -Infinity}}}', "-Infinity is not a JSON number"),
    ("/api/search", b'{"state": {"searchTerm": "city", "current": 1e400}}', "current must be a positive integer"),
    ("/api/v1/search", b'{"type": "city", "limit": 1' + b"0" * 5000 + b"}", "cannot read the body (an integer of 5001 digits"),
    ("/api/v1/search", b'{"type": ' + b"[" * 5000 + b"]" * 5000 + b"}", "cannot read the body (nested too deeply"),
])
def test_numbers_json_has_not_and_bodies_python_cannot_read_are_4xx_saying_why(client, path, body, words):
    """A web audit: NaN and Infinity (which Python's reader takes) were a 500 on the Search UI
    routes; a 5000-digit number or JSON nested 5000 deep a 400 that said only "error parsing the body"."""
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code in (400, 422) and words in response.json()["error"]["message"], response.text


def test_a_body_that_is_not_json_says_why(client):
    message = error_of(client.post("/api/v1/search", content=b'{"type": ', headers=JSON), 422)
    assert message.startswith("body: not valid JSON: Expecting value")


def test_a_browser_request_from_another_sites_page_is_refused_but_a_link_to_the_page_is_followed(web_index):
    """A security audit: any page the user visited could make the browser send GET
    /api/v1/search?type=person&all=true&threshold=-1 to the loopback service, which then held every
    matching passage in memory (unreadable to that page, but the work was done). Browsers name the
    request's site in Sec-Fetch-Site; clients that are no browser send none and are served."""
    app = create_app(web_index, cors_origins=["http://localhost:3000"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        search = "/api/v1/search?type=dinosaur&all=true"
        foreign = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Origin": "https://evil.example"}
        refused = client.get(search, headers=foreign)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "cross_site", refused.text
        assert "--cors-origin" in refused.json()["error"]["message"]
        assert client.post("/api/v1/search", json={"type": "dinosaur"}, headers={**foreign, "Sec-Fetch-Mode": "cors"}).status_code == 403
        same_site = {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "no-cors"}  # another port of localhost
        assert client.get(search, headers=same_site).status_code == 403
        # served: no browser, the page's own requests, a link followed, an origin given with --cors-origin
        assert client.get(search).status_code == 200
        assert client.get(search, headers={"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}).status_code == 200
        link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        assert client.get("/?type=dinosaur", headers=link).status_code == 200
        # an API URL opened from another site, in a window or an iframe, is no link to the page (a review)
        assert client.get(search, headers=link).status_code == 403
        assert client.get("/?type=dinosaur", headers={**link, "Sec-Fetch-Dest": "iframe"}).status_code == 403
        allowed = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Origin": "http://localhost:3000"}
        assert client.get(search, headers=allowed).status_code == 200
