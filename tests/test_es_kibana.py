"""Kibana saved objects (shape, references, KQL) and the import request (no Kibana needed)."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
from email.parser import BytesParser
from email.policy import default as email_policy
from pathlib import Path

import pytest

from indexer.assets import kibana_objects
from indexer.errors import SettingError, StoreError
from indexer.stores.elasticsearch import kibana

RESPONSES = Path(__file__).parent / "golden" / "es" / "responses"


def objects() -> list[dict]:
    return kibana.parse_ndjson(kibana_objects().read_text(encoding="utf-8"))


def by_type(kind: str) -> list[dict]:
    return [o for o in objects() if o["type"] == kind]


def test_saved_objects_are_the_four_the_issue_asks_for():
    assert sorted(o["type"] for o in objects()) == ["dashboard", "index-pattern", "search", "visualization"]
    assert len({o["id"] for o in objects()}) == 4
    for obj in objects():
        assert obj["coreMigrationVersion"] and obj["typeMigrationVersion"]  # lets Kibana migrate them


def test_every_reference_resolves_inside_the_file():
    ids = {(o["type"], o["id"]) for o in objects()}
    for obj in objects():
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, ref


def test_data_view_over_the_alias_hides_vectors():
    (view,) = by_type("index-pattern")
    assert view["id"] == kibana.DATA_VIEW_ID and view["attributes"]["title"] == "nerindex"
    hidden = {f["value"] for f in json.loads(view["attributes"]["sourceFilters"])}
    # the marked filter texts are nerindex's; Kibana matches a source filter against whole field names
    # (^glob$), and the fields are filter_typed.<key>: "filter_typed" hid none of them (an audit)
    assert hidden == {"vector", "spans.vector", "filter_typed.*"}


def test_saved_search_uses_kql_on_nested_span_labels():
    (search,) = by_type("search")
    # Discover reads columns through the fields API, which groups a nested field's values under its
    # parent: spans.* columns stayed empty, and would list candidates too (an audit); "labels" holds
    # the mentions' labels
    assert search["attributes"]["columns"] == ["text", "labels"]
    source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    # mentions only: a candidate span (mention: false) is never marked (an audit: 359 of 1,503 passages
    # matched through candidates alone)
    # (not mention: false: a span written before the field existed is a mention, as nerindex reads it)
    assert source["query"] == {"query": 'spans:{ labels: "person" and not mention: false }', "language": "kuery"}
    assert source["indexRefName"] == search["references"][0]["name"]


def kibana_catalog_phrases() -> list[str]:
    from indexer.assets import default_model_dir

    return (default_model_dir() / "catalog.txt").read_text(encoding="utf-8").split("\n")


def test_dashboard_counts_passages_per_passage_level_label():
    (vis,) = by_type("visualization")
    state = json.loads(vis["attributes"]["visState"])
    terms = [a for a in state["aggs"] if a["type"] == "terms"]
    assert [a["params"]["field"] for a in terms] == ["labels"]  # passage-level copy_to field, not nested
    # every catalog label has a row: 50 rows without an "Other" left 52 of the example corpus's 102 out (an audit)
    assert terms[0]["params"]["size"] >= len(kibana_catalog_phrases()) and not terms[0]["params"]["otherBucket"]
    assert [a["type"] for a in state["aggs"]].count("count") == 1
    (dashboard,) = by_type("dashboard")
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    names = {ref["name"] for ref in dashboard["references"]}
    assert {f"{p['panelIndex']}:{p['panelRefName']}" for p in panels} == names


def test_retarget_to_the_default_alias_changes_nothing():
    assert kibana.retarget(objects(), "nerindex") == objects()


def test_retarget_gives_another_alias_its_own_objects():
    original = objects()
    moved = kibana.retarget(original, "corpus-b")
    assert [o["attributes"]["title"] for o in moved if o["type"] == "index-pattern"] == ["corpus-b"]
    # ids and references end in the alias: a second alias imported into the same space used to
    # overwrite the first one's objects (same ids), re-pointing its data view
    assert [o["id"] for o in moved] == [o["id"] + "-corpus-b" for o in original]
    ids = {o["id"] for o in moved}
    assert all(ref["id"] in ids for o in moved for ref in o.get("references", ()))
    assert all(o["attributes"]["title"].endswith("(corpus-b)") for o in moved if o["type"] != "index-pattern")
    assert not set(ids) & {o["id"] for o in kibana.retarget(original, "corpus-c")}
    assert original[0]["attributes"]["title"] == "nerindex"  # input untouched


def test_multipart_body_parses_as_a_form_with_the_file():
    body, content_type = kibana.multipart_file(b'{"a":1}\n', boundary="XyZ")
    message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    (part,) = list(message.iter_parts())
    assert part.get_param("name", header="content-disposition") == "file"
    assert part.get_filename() == "nerindex.ndjson"
    assert part.get_content() in ('{"a":1}\n', b'{"a":1}\n')


@pytest.mark.parametrize(
    "url, space, overwrite, expected",
    [
        ("http://k:5601/", None, True, "http://k:5601/api/saved_objects/_import?overwrite=true"),
        ("http://k:5601", "team-a", False, "http://k:5601/s/team-a/api/saved_objects/_import"),
        ("http://k:5601", "default", True, "http://k:5601/api/saved_objects/_import?overwrite=true"),
    ],
)
def test_import_url(url, space, overwrite, expected):
    assert kibana.import_url(url, space=space, overwrite=overwrite) == expected


def test_a_url_with_credentials_or_an_index_name_elasticsearch_refuses_is_refused_first():
    """Audits: user:password@ in the Kibana URL failed as "Name or service not known", the password
    in the message; an alias Elasticsearch refuses ("My Corpus") was imported as a data view."""
    def urlopen(request, timeout):
        raise AssertionError("nothing is sent")

    with pytest.raises(SettingError) as caught:
        kibana.import_saved_objects("http://elastic:secret@k:5601", alias="corpus", urlopen=urlopen)
    assert "'http://k:5601' carries a user name" in str(caught.value) and "secret" not in str(caught.value)
    with pytest.raises(StoreError, match="invalid Elasticsearch index name"):
        kibana.import_saved_objects("http://k:5601", alias="My Corpus", urlopen=urlopen)


def test_auth_headers():
    assert kibana.auth_header(api_key="abc") == {"Authorization": "ApiKey abc"}
    basic = kibana.auth_header(basic_auth=("elastic", "pw"))["Authorization"]
    assert base64.b64decode(basic.split()[1]) == b"elastic:pw"
    assert kibana.auth_header() == {}


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_import_posts_the_objects_and_reports():
    seen = {}

    def urlopen(request, timeout):
        seen.update(url=request.full_url, headers=dict(request.header_items()), body=request.data, method=request.get_method())
        return FakeResponse((RESPONSES / "kibana_import_ok.json").read_bytes())

    report = kibana.import_saved_objects("http://kibana:5601", alias="corpus", basic_auth=("elastic", "pw"), urlopen=urlopen)
    assert report.success and report.success_count == 4 and len(report.objects) == 4
    assert seen["method"] == "POST" and seen["url"].endswith("/api/saved_objects/_import?overwrite=true")
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    assert headers["kbn-xsrf"] == "true" and headers["content-type"].startswith("multipart/form-data; boundary=")
    assert headers["authorization"].startswith("Basic ")
    assert b'"title":"corpus"' in seen["body"] and b'spans:{ labels:' in seen["body"]


@pytest.mark.parametrize("body", [b"<html>Sign in</html>", b"[1, 2]", b"\xff\xfe"])
def test_an_answer_that_is_not_the_import_apis_is_one_line(body):
    """An audit: a proxy's or login page's 200 was a JSONDecodeError traceback, a JSON list an AttributeError."""
    with pytest.raises(StoreError, match="is not Kibana's import API's .* is --kibana-url Kibana's URL"):
        kibana.import_saved_objects("http://kibana:5601", urlopen=lambda request, timeout: FakeResponse(body))


def test_a_timeout_names_kibana():
    def slow(request, timeout):
        raise TimeoutError("timed out")

    with pytest.raises(StoreError, match="Kibana at http://kibana:5601 did not answer the import: timed out"):
        kibana.import_saved_objects("http://kibana:5601", urlopen=slow)


def test_import_errors_are_reported_not_swallowed():
    def conflict(request, timeout):
        return FakeResponse((RESPONSES / "kibana_import_conflict.json").read_bytes())

    with pytest.raises(StoreError, match="imported 3 of 4 saved objects: dashboard nerindex-overview: conflict"):
        kibana.import_saved_objects("http://kibana:5601", overwrite=False, urlopen=conflict)

    def unauthorized(request, timeout):
        raise urllib.error.HTTPError(request.full_url, 401, "Unauthorized", {},
                                     io.BytesIO(b'{"statusCode":401,"error":"Unauthorized","message":"Unauthorized"}'))

    with pytest.raises(StoreError, match="HTTP 401: Unauthorized .check the Kibana user"):
        kibana.import_saved_objects("http://kibana:5601", urlopen=unauthorized)

    def down(request, timeout):
        raise urllib.error.URLError("Connection refused")

    with pytest.raises(StoreError, match="cannot reach Kibana at http://kibana:5601: Connection refused"):
        kibana.import_saved_objects("http://kibana:5601", urlopen=down)


def test_a_redirect_is_refused_and_the_credentials_stay_with_the_url_given():
    """A security audit: urllib followed a 302 to another host with the Authorization header (https
    to http too) and as a GET, and a 200 there "imported 0 saved objects" with exit 0. Two real
    HTTP servers on 127.0.0.1: the first redirects, the second records what reaches it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    reached: list[dict] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            reached.append(dict(self.headers))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"success": true, "successCount": 0}')

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    first = ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    for server in (first, other):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(StoreError, match=r"answered the import with a redirect \(HTTP 302\) to http://127.0.0.1:\d+/steal"):
            kibana.import_saved_objects(f"http://127.0.0.1:{first.server_port}", basic_auth=("elastic", "S3cr3t"), timeout=10)
    finally:
        first.shutdown()
        other.shutdown()
    assert reached == []  # nothing, credentials least of all, went to the other host


def test_kibana_import_needs_no_elasticsearch_client():
    """It asked for the [elasticsearch] extra, though it speaks plain HTTP (an audit)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['elasticsearch'] = sys.modules['elastic_transport'] = None; "
            "from indexer.stores.elasticsearch.kibana import import_saved_objects; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
