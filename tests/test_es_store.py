"""What tests/test_es_live.py cannot check against the CI server, through the real client.

The live suite runs the store against a real Elasticsearch node. This module keeps only what that
node cannot show: the exhaustive search's Painless scripts (the CI build has no lang-painless
module), 429 rejections and their retries, servers of other versions (too old; 9.2 and later for
span filters in kNN), and construction without I/O. The fake is an ``elastic_transport`` node
class: the client, ``streaming_bulk`` (with its retries), point in time paging and error handling
run for real, only the HTTP exchange is answered in memory; scripts run in ``tests/es_painless.py``.
"""

from __future__ import annotations

import fnmatch
import gzip
import itertools
import json
import math
import re
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders  # noqa: E402
from elastic_transport._node import NodeApiResponse  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from store_conformance import DINO, StoreConformance, hybrid_corpus  # noqa: E402

import es_painless as painless  # noqa: E402
from es_painless import PainlessError  # noqa: E402

from indexer.config import Settings, with_overrides  # noqa: E402
from indexer.errors import SearchError, StoreError  # noqa: E402
from indexer.records import EncodedPassage, EncodedSpan, Passage  # noqa: E402
from indexer.stores.base import Filters, ModelStamp, SearchRequest  # noqa: E402
from indexer.stores.elasticsearch import BulkOptions, ElasticsearchStore  # noqa: E402
from indexer.stores.factory import open_elasticsearch  # noqa: E402
from indexer.stores.elasticsearch import store as store_module  # noqa: E402

DIMS = 8
STAMP = ModelStamp("nerindex-test", "0.1.0", DIMS, "ab" * 32)


# --- the fake cluster -----------------------------------------------------------------------------


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class FakeCluster:
    """Indices, aliases and documents in memory, and a log of every request."""

    def __init__(self, version: str = "9.5.2") -> None:
        self.version = version
        self.indices: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.bulk_rejections: dict[str, int] = {}  # _id -> how many times to answer 429
        self.pits: dict[str, str] = {}
        self.closed_pits: list[str] = []
        self._seq = itertools.count()
        self._pit_ids = itertools.count(1)

    def client(self) -> Elasticsearch:
        node_class = type("FakeNode", (FakeNode,), {"cluster": self})
        return Elasticsearch("http://fake-es:9200", node_class=node_class)

    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        parts = [p for p in path.strip("/").split("/") if p]
        if parts[0] == "_nodes":
            modules = [{"name": "lang-painless"}, {"name": "x-pack-core"}]
            return 200, {"nodes": {"fake-node": {"version": self.version, "modules": modules}}}
        if parts[0] == "_bulk":
            return self.bulk(body)
        if parts[0] == "_pit" and method == "DELETE":
            self.closed_pits.append(body["id"])
            return 200, {"succeeded": True, "num_freed": 1}
        if parts[0] == "_search":
            return self.search(self.pits[body["pit"]["id"]], body)
        target, rest = parts[0], parts[1:]
        if not rest and method == "PUT":
            self.indices[target] = {"mappings": body["mappings"], "aliases": set(body.get("aliases", {})), "docs": {}}
            return 200, {"acknowledged": True, "index": target}
        names = self.resolve(target)
        if not rest and method == "GET":  # versioned_indices
            return 200, {n: {} for n in names}
        if not names:
            return 404, {"error": {"type": "index_not_found_exception", "reason": f"no such index [{target}]"}, "status": 404}
        action = rest[0]
        if action == "_mapping":
            return 200, {n: {"mappings": self.indices[n]["mappings"]} for n in names}
        if action == "_settings":
            for n in names:
                if method == "PUT":
                    self.indices[n]["refresh_interval"] = body["index"]["refresh_interval"]
            return 200, {n: {"settings": {"index": {"refresh_interval": self.indices[n].get("refresh_interval", "1s")}}} for n in names}
        if action == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if action == "_pit":
            pit = f"pit-{next(self._pit_ids)}"
            self.pits[pit] = target
            return 200, {"id": pit}
        if action == "_search":
            return self.search(target, body)
        raise AssertionError(f"fake cluster has no route for {method} {path}")

    def resolve(self, target: str) -> list[str]:
        if "*" in target:
            return sorted(n for n in self.indices if fnmatch.fnmatch(n, target))
        return [target] if target in self.indices else sorted(n for n, i in self.indices.items() if target in i["aliases"])

    def bulk(self, lines: list[dict[str, Any]]) -> tuple[int, Any]:
        items = []
        for header, source in zip(lines[::2], lines[1::2]):
            doc_id = header["index"]["_id"]
            if self.bulk_rejections.get(doc_id, 0) > 0:
                self.bulk_rejections[doc_id] -= 1
                items.append({"index": {"_id": doc_id, "status": 429, "error": {
                    "type": "es_rejected_execution_exception", "reason": "rejected execution (queue full)"}}})
                continue
            (name,) = self.resolve(header["index"]["_index"])
            existed = doc_id in self.indices[name]["docs"]
            self.indices[name]["docs"][doc_id] = {"seq": next(self._seq), "source": source}
            items.append({"index": {"_index": name, "_id": doc_id, "status": 200 if existed else 201,
                                    "result": "updated" if existed else "created"}})
        return 200, {"took": 1, "errors": any(i["index"]["status"] >= 300 for i in items), "items": items}

    # search: the top-level nested kNN (span filters, Elasticsearch >= 9.2) and the exhaustive
    # search (bool of a nested script_score and filters), scored the way Elasticsearch does.

    @staticmethod
    def matches(obj: dict[str, Any], clause: dict[str, Any], *, span: bool) -> bool:
        ((kind, spec),) = clause.items()
        if kind in ("term", "terms"):
            ((field, wanted),) = spec.items()
            field = field[len("spans."):] if span else field
            value: Any = obj
            for part in field.removesuffix(".keyword").split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values = value if isinstance(value, list) else [value]
            wanted = wanted if kind == "terms" else [wanted]
            # Elasticsearch coerces the query value to the field type ("2021" matches a long 2021).
            return any(str(v) in {str(w) for w in wanted} for v in values if v is not None)
        if kind == "match":
            words = set(re.findall(r"\w+", obj.get("text", "").lower()))
            return all(w in words for w in re.findall(r"\w+", spec["text"]["query"].lower()))
        raise AssertionError(f"fake cluster cannot evaluate {clause}")

    def search(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        docs = sorted(
            ((doc_id, d) for n in self.resolve(target) for doc_id, d in self.indices[n]["docs"].items()),
            key=lambda item: item[1]["seq"],
        )
        if "ids" in body.get("query", {}):  # passage_vectors: documents by _id, _source filtered
            return self.by_ids(docs, body)
        scored = []  # (score, doc_id, doc, inner hits)
        try:
            for doc_id, d in docs:
                result = self.knn(body["knn"], d["source"]) if "knn" in body else self.exact(body["query"], d["source"])
                if result is not None:
                    scored.append((result[0], doc_id, d, result[1]))
        except PainlessError as exc:
            cause = {"type": "script_exception", "reason": str(exc)}
            return 400, {"error": {"root_cause": [cause], "type": "search_phase_execution_exception",
                                   "reason": "all shards failed"}, "status": 400}
        scored.sort(key=lambda item: (-item[0], item[2]["seq"]))  # _score desc, then _shard_doc
        if "search_after" in body:
            score, seq = body["search_after"]
            scored = [s for s in scored if (-s[0], s[2]["seq"]) > (-score, seq)]
        hits = []
        for score, doc_id, d, spans in scored[: body["size"]]:
            inner = [{"_score": s, "fields": {"spans": [{"start": [span["start"]], "end": [span["end"]],
                                                         "text": [span["text"]], "labels": span["labels"]}]}}
                     for s, span in spans]
            hits.append({"_id": doc_id, "_score": score, "sort": [score, d["seq"]],
                         "_source": {k: v for k, v in d["source"].items() if k in body["_source"]},
                         "inner_hits": {"spans": {"hits": {"hits": inner}}}})
        return 200, {"pit_id": body.get("pit", {}).get("id"), "hits": {"hits": hits}}

    def by_ids(self, docs: list, body: dict[str, Any]) -> tuple[int, Any]:
        wanted = set(body["query"]["ids"]["values"])
        source = body["_source"]
        if isinstance(source, dict):  # Elasticsearch >= 9.2 leaves vectors out unless asked
            assert source.get("exclude_vectors") is False, "vectors would be missing from _source"
            source = source["includes"]
        hits = [{"_id": doc_id, "_score": 1.0, "_source": {k: v for k, v in d["source"].items() if k in source}}
                for doc_id, d in docs if doc_id in wanted]
        return 200, {"hits": {"hits": hits[: body["size"]]}}

    def knn(self, knn: dict[str, Any], source: dict[str, Any]):
        top = [c for c in knn.get("filter", []) if not any(str(k).startswith("spans.") for k in next(iter(c.values())))]
        span_level = [c for c in knn.get("filter", []) if c not in top]
        if not all(self.matches(source, c, span=False) for c in top):
            return None
        spans = sorted(
            ((1 + _cos(knn["query_vector"], span["vector"])) / 2, span) for span in source.get("spans", [])
            if all(self.matches(span, c, span=True) for c in span_level)
            and _cos(knn["query_vector"], span["vector"]) >= knn["similarity"]
        )[::-1]
        return (spans[0][0], spans) if spans else None

    def exact(self, query: dict[str, Any], source: dict[str, Any]):
        ((kind, spec),) = query.items()
        if kind == "script_score":  # hybrid scoring around the exact search
            result = self.exact(spec["query"], source)
            return result and (self.run(spec["script"], result[0], {"vector": source.get("vector")}), result[1])
        assert kind == "bool" and set(spec) <= {"must", "filter"}, f"fake cluster cannot evaluate {query}"
        if not all(self.matches(source, c, span=False) for c in spec.get("filter", [])):
            return None
        ((_, nested),) = spec["must"][0].items()
        span_query = nested["query"]["script_score"]
        restrict = span_query["query"].get("bool", {}).get("filter", [])
        spans = []
        for span in source.get("spans", []):
            if all(self.matches(span, c, span=True) for c in restrict):
                score = self.run(span_query["script"], 0.0, {"spans.vector": span["vector"]})
                if score >= span_query["min_score"]:
                    spans.append((score, span))
        spans.sort(key=lambda item: -item[0])
        return (spans[0][0], spans) if spans else None

    @staticmethod
    def run(script: dict[str, Any], score: float, doc: dict[str, Any]) -> float:
        value = painless.run(script, score=score, doc=doc)
        if value < 0 or math.isnan(value):
            raise PainlessError(f"script_score script returned an invalid score [{value}]")
        return value


class FakeNode(BaseNode):
    cluster: FakeCluster

    def perform_request(self, method, target, body=None, headers=None, request_timeout=None):
        path = urlsplit(target).path
        raw = gzip.decompress(body) if body and body[:2] == b"\x1f\x8b" else body
        parsed: Any = None
        if raw:
            lines = [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]
            parsed = lines if path.endswith("/_bulk") else lines[0]
        status, answer = self.cluster.handle(method, path, parsed)
        meta = ApiResponseMeta(
            status=status, http_version="1.1",
            headers=HttpHeaders({"content-type": "application/json", "x-elastic-product": "Elasticsearch"}),
            duration=0.0, node=self.config,
        )
        return NodeApiResponse(meta, b"" if answer is None else json.dumps(answer).encode())


# --- helpers --------------------------------------------------------------------------------------


def unit(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def axis(i: int, dims: int = DIMS) -> np.ndarray:
    v = np.zeros(dims, dtype=np.float32)
    v[i] = 1.0
    return v


def passage(pid: str, text: str, spans: list[tuple[int, np.ndarray, tuple[str, ...]]], **fields) -> EncodedPassage:
    words = text.split()
    encoded = []
    position = 0
    for index, word in enumerate(words):
        start = text.index(word, position)
        position = start + len(word)
        for span_word, vector, labels in spans:
            if span_word == index:
                encoded.append(EncodedSpan(start, position, word, 0.9, vector, labels))
    return EncodedPassage(Passage(pid, text, fields), tuple(encoded), unit(np.ones(DIMS)))


def make_store(cluster: FakeCluster, **kwargs) -> ElasticsearchStore:
    kwargs.setdefault("bulk", BulkOptions(initial_backoff=0.001, max_backoff=0.01))
    return ElasticsearchStore.connect("http://fake-es:9200", index="nerindex", client=cluster.client(), **kwargs)


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def corpus() -> list[EncodedPassage]:
    near = unit(axis(0) + 0.3 * axis(1))       # cos with axis(0) ~ 0.958
    mid = unit(axis(0) + 1.0 * axis(2))         # ~ 0.707
    return [
        passage("p1", "Obama met Merkel in Berlin", [(0, axis(0), ("politician", "person")), (2, mid, ("politician",))], source="wiki", year=2009),
        passage("p2", "The senator spoke about trade", [(1, near, ("politician",))], source="news", year=2015),
        passage("p3", "Paris is in France", [(0, axis(3), ("city",)), (3, axis(4), ("country",))], source="wiki"),
        passage("p4", "Nothing to see here", [], source="blog"),
    ]


def search(store, vector=None, filters=None, **kwargs) -> list:
    request = SearchRequest(
        vector=axis(0) if vector is None else vector, min_similarity=kwargs.pop("min_similarity", 0.5),
        filters=Filters.of(filters), **kwargs,
    )
    return list(store.search(request))


@pytest.fixture
def filled(cluster, corpus) -> ElasticsearchStore:
    store = make_store(cluster)
    store.check_model(STAMP)
    store.write(corpus)
    return store


def search_requests(cluster: FakeCluster) -> list[tuple[str, str, Any]]:
    return [r for r in cluster.requests if r[1].endswith("/_search")]


# --- construction (no server) ---------------------------------------------------------------------


def test_connect_makes_no_client_and_no_request(monkeypatch):
    def explode(*args, **kwargs):
        raise AssertionError("the constructor must not build a client")

    monkeypatch.setattr(store_module, "make_client", explode)
    store = ElasticsearchStore.connect("http://127.0.0.1:9", index="nerindex", api_key="abc")
    assert store._client is None and store.alias == "nerindex"
    store.close()  # closing an unused store makes no client either


def test_client_is_created_lazily_with_the_options():
    store = ElasticsearchStore.connect("https://user:secret@es.example:9200", index="x",
                                       basic_auth=("elastic", "pw"), verify_certs=False)
    assert store._client is None
    client = store.client
    assert isinstance(client, Elasticsearch) and store.client is client
    assert "secret" not in repr(store)
    store.close()


@pytest.mark.parametrize("index", ["Bad", "a b", "-x"])
def test_connect_refuses_bad_index_names(index):
    with pytest.raises(StoreError):
        ElasticsearchStore.connect("http://localhost:9200", index=index)


def test_open_elasticsearch_from_settings_and_options():
    settings = Settings(es_url="http://a:9200", es_index="corpus", es_user="elastic", es_password="pw",
                        es_ca_certs="/ca.pem")
    store = open_elasticsearch(settings, hybrid=True)
    options = store.options
    assert options.connection.url == "http://a:9200" and options.index == "corpus" and options.hybrid
    assert options.connection.basic_auth == ("elastic", "pw") and options.connection.ca_certs == "/ca.pem"
    assert options.connection.verify_certs
    other = with_overrides(settings, es_url="http://b:9200", es_index="other", es_api_key="k", es_verify_certs=False)
    store = open_elasticsearch(other)
    assert store.options.connection.url == "http://b:9200" and store.options.connection.api_key == "k"
    assert store.alias == "other" and not store.options.connection.verify_certs
    with pytest.raises(StoreError, match="NERINDEX_ES_URL"):
        open_elasticsearch(Settings())
    with pytest.raises(StoreError, match="both a user and a password"):
        open_elasticsearch(Settings(es_url="http://a:9200", es_user="elastic"))


def test_unreachable_server_is_one_clear_error():
    store = ElasticsearchStore.connect("http://127.0.0.1:9", index="nerindex", request_timeout=2)
    with pytest.raises(StoreError, match="cannot reach http://127.0.0.1:9"):
        store.model()


def test_invalid_passage_weight_is_refused_before_any_request():
    store = ElasticsearchStore.connect("http://127.0.0.1:9", index="nerindex", request_timeout=2)
    for weight in (-0.5, float("nan")):
        with pytest.raises(SearchError, match="passage_weight"):  # not "cannot reach"
            search(store, vector=DINO, passage_weight=weight)


# --- servers of other versions ----------------------------------------------------------------------


def test_old_servers_are_refused_clearly():
    cluster = FakeCluster(version="8.14.3")
    with pytest.raises(StoreError, match=r">= 8\.15\.0.*8\.14\.3"):
        make_store(cluster).check_model(STAMP)


def test_span_filters_in_knn_from_9_2(filled, cluster):
    hits = search(filled, filters={"spans.labels": "politician"}, min_similarity=0.6)
    assert [(h.id, [s.text for s in h.spans]) for h in hits] == [("p1", ["Obama", "Merkel"]), ("p2", ["senator"])]
    assert "knn" in search_requests(cluster)[-1][2]  # kNN, not the exhaustive search


# --- 429 rejections -------------------------------------------------------------------------------


def test_write_retries_429_with_backoff(cluster, corpus):
    store = make_store(cluster)
    store.check_model(STAMP)
    cluster.bulk_rejections = {"p2": 2}
    outcomes = store.write(corpus)
    assert all(o.ok for o in outcomes) and [o.id for o in outcomes] == ["p1", "p2", "p3", "p4"]
    bulk_calls = [r for r in cluster.requests if r[1] == "/_bulk"]
    assert len(bulk_calls) == 3  # first send, then p2 alone twice


def test_write_keeps_429_failures_as_data(cluster, corpus):
    store = make_store(cluster, bulk=BulkOptions(max_retries=1, initial_backoff=0.001))
    store.check_model(STAMP)
    cluster.bulk_rejections = {"p3": 5}  # still rejected after the retries
    outcomes = store.write(corpus)
    assert [(o.id, o.ok) for o in outcomes] == [("p1", True), ("p2", True), ("p3", False), ("p4", True)]
    assert outcomes[2].error.startswith("HTTP 429: es_rejected_execution_exception")


# --- exhaustive search: Painless scripts (no lang-painless on the CI server) -----------------------


def test_exhaustive_search_pages_with_point_in_time(cluster, corpus):
    store = make_store(cluster, page_size=2)
    store.check_model(STAMP)
    many = [passage(f"q{i:02d}", f"word{i} here", [(0, unit(axis(0) + (i / 10) * axis(5)), ())]) for i in range(7)]
    store.write(corpus + many)
    hits = search(store, exhaustive=True, min_similarity=0.5)
    assert [h.id for h in hits][:2] == ["p1", "q00"]
    assert len(hits) == 2 + 7
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    pit_searches = [r for r in cluster.requests if r[1] == "/_search"]
    assert len(pit_searches) == 5 and pit_searches[1][2]["search_after"]
    assert cluster.closed_pits == ["pit-1"]


def test_exhaustive_search_closes_the_pit_when_abandoned(filled, cluster):
    results = filled.search(SearchRequest(vector=axis(0), min_similarity=0.5, exhaustive=True))
    next(results)
    results.close()
    assert cluster.closed_pits == ["pit-1"]


def test_limits_above_the_knn_cap_use_the_exact_search(filled, cluster):
    hits = search(filled, limit=20_000)
    assert [h.id for h in hits] == ["p1", "p2"]
    assert cluster.closed_pits  # went through the point-in-time path


def test_passage_weight_exhaustive_pages_by_the_combined_score(cluster):
    store = make_store(cluster, page_size=1)
    store.check_model(STAMP)
    raptor = unit(axis(0) + 0.5 * axis(1))  # cos with DINO 0.894; stored without a passage vector
    bare = EncodedPassage(Passage("bare", "Raptor claws", {"lang": "en"}), (EncodedSpan(0, 6, "Raptor", 0.9, raptor, ()),), None)
    store.write(hybrid_corpus() + [bare])
    hits = search(store, vector=DINO, passage_weight=0.5, exhaustive=True)
    assert [(h.id, round(h.score, 3)) for h in hits] == [("h2", 1.3), ("h1", 0.9), ("bare", 0.894)]
    pages = [r[2] for r in cluster.requests if r[1] == "/_search"]
    assert len(pages) == 4  # one request per page: h2, h1, bare, then an empty page
    assert pages[1]["search_after"][0] == pytest.approx(1.3 + 1 + 0.5)  # sorted by the shifted score
    assert all("script_score" in page["query"] for page in pages)


def test_the_fake_cluster_really_runs_the_script(cluster, monkeypatch):
    """A script Elasticsearch could not run fails the search here too (no trusted shortcut)."""
    from indexer.stores.elasticsearch import paged_requests

    store = make_store(cluster)
    store.check_model(STAMP)
    store.write(hybrid_corpus())
    monkeypatch.setattr(paged_requests, "hybrid_exact_script_source", lambda field: "cosineSimilarity(params.query_vector, 'spans.vector')")
    with pytest.raises(SearchError, match="no field"):
        search(store, vector=DINO, passage_weight=0.5, exhaustive=True)


class TestExhaustiveConformance:
    """The conformance suite's exhaustive-search tests, which the CI server (no Painless) skips."""

    @pytest.fixture
    def store(self, stamp):
        store = make_store(FakeCluster())
        yield store
        store.close()

    loaded = StoreConformance.loaded
    hybrid = StoreConformance.hybrid
    search = StoreConformance.search
    require_exhaustive = StoreConformance.require_exhaustive
    test_exhaustive_returns_all_matches = StoreConformance.test_exhaustive_returns_all_matches
    test_span_label_filter_restricts_spans = StoreConformance.test_span_label_filter_restricts_spans
    test_span_text_filter = StoreConformance.test_span_text_filter
    test_passage_weight_exhaustive = StoreConformance.test_passage_weight_exhaustive
    test_passage_vectors_in_the_order_given = StoreConformance.test_passage_vectors_in_the_order_given
    test_feedback_search_is_a_search_with_the_moved_vector = StoreConformance.test_feedback_search_is_a_search_with_the_moved_vector


def test_passage_vectors_before_9_2_ask_for_plain_source_fields():
    cluster = FakeCluster(version="8.15.0")
    store = make_store(cluster)
    store.check_model(STAMP)
    store.write(hybrid_corpus())
    assert store.passage_vectors(["h2"]) == pytest.approx(DINO[None, :])
    body = search_requests(cluster)[-1][2]
    assert body["_source"] == ["id", "vector"] and body["query"] == {"ids": {"values": ["h2"]}}
