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
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders  # noqa: E402
from elastic_transport._node import NodeApiResponse  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from store_conformance import CROWD, DINO, StoreConformance, crowded_passage, hybrid_corpus  # noqa: E402

import es_painless as painless  # noqa: E402
from es_painless import PainlessError  # noqa: E402

from indexer.config import Settings, with_overrides  # noqa: E402
from indexer.errors import SearchError, StoreError  # noqa: E402
from indexer.records import EncodedPassage, EncodedSpan, Passage  # noqa: E402
from indexer.stores.base import ModelStamp, SearchRequest  # noqa: E402
from indexer.stores.filter_rules import Filters  # noqa: E402
from indexer.stores.elasticsearch import BulkOptions, ElasticsearchStore  # noqa: E402
from indexer.stores.factory import open_elasticsearch  # noqa: E402
from indexer.stores.elasticsearch import store as store_module  # noqa: E402

DIMS = 8
STAMP = ModelStamp("nerindex-test", "0.1.0", DIMS, "ab" * 32)


# --- the fake cluster -----------------------------------------------------------------------------


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass(frozen=True)
class Match:
    """A query's match on one passage: its score, inner hits by name (the (score, span) pairs the
    response carries, best first, and how many spans matched) and the scores of its named clauses."""

    score: float
    inner: dict[str, tuple[list[tuple[float, dict[str, Any]]], int]]
    named: dict[str, float]


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
        self.rotate_pits = False

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
            status, answer = self.search(self.pits[body["pit"]["id"]], body)
            if self.rotate_pits:  # Elasticsearch may answer with a new id; only the latest is valid
                old = body["pit"]["id"]
                answer["pit_id"] = f"{old.split('.')[0]}.{next(self._pit_ids)}"
                self.pits[answer["pit_id"]] = self.pits.pop(old)
            return status, answer
        if parts[-1] == "_msearch":
            return self.msearch(parts[0] if len(parts) > 1 else None, body)
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
        if action == "_mget":  # which ids are stored (a replacing write looks before it sends)
            docs = {i: d for n in names for i, d in self.indices[n]["docs"].items()}
            return 200, {"docs": [{"_index": names[0], "_id": i, "found": i in docs} for i in body["ids"]]}
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

    # search: the bodies nerindex sends (bool, nested, knn, script_score and constant_score queries,
    # the top-level knn section), evaluated exactly on every document, scored as Elasticsearch does.

    @staticmethod
    def matches(obj: dict[str, Any], clause: dict[str, Any], *, span: bool) -> bool:
        ((kind, spec),) = clause.items()
        if kind == "match_all":
            return True
        if kind == "exists":
            return obj.get(spec["field"]) is not None
        if kind == "prefix":  # a key of filter_texts is literal (subobjects: false)
            ((field, wanted),) = spec.items()
            head, _, key = field.partition(".")
            values = (obj.get(head) or {}).get(key) or []
            return any(str(v).startswith(wanted["value"]) for v in values)
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

    @staticmethod
    def boolean(spec: dict[str, Any], evaluate: Callable[[dict[str, Any]], Match | None]) -> Match | None:
        """A bool query: must and filter clauses required, must_not excluded, should optional
        (required when alone); must and should clauses score; matching clauses bring their inner hits."""
        assert set(spec) <= {"must", "should", "filter", "must_not"}, f"fake cluster cannot evaluate bool {spec}"
        scoring = [evaluate(c) for c in spec.get("must", [])]
        required = [evaluate(c) for c in spec.get("filter", [])]
        if any(m is None for m in scoring + required) or any(evaluate(c) is not None for c in spec.get("must_not", [])):
            return None
        optional = [m for m in map(evaluate, spec.get("should", [])) if m is not None]
        if spec.get("should") and not (scoring or required or optional):
            return None
        found = scoring + required + optional
        return Match(sum(m.score for m in scoring + optional),
                     {k: v for m in found for k, v in m.inner.items()}, {k: v for m in found for k, v in m.named.items()})

    def evaluate(self, clause: dict[str, Any], source: dict[str, Any]) -> Match | None:
        """A passage-level query on one passage (None: it does not match)."""
        ((kind, spec),) = clause.items()
        if kind == "bool":
            return self.boolean(spec, lambda c: self.evaluate(c, source))
        if kind == "nested":
            return self.nested(spec, source)
        if kind == "knn":  # on the passage vector (a span kNN sits in a nested query)
            assert spec["field"] == "vector", f"fake cluster cannot evaluate {clause}"
            if source.get("vector") is None or any(self.evaluate(c, source) is None for c in spec.get("filter", [])):
                return None
            return self.named(spec, spec.get("boost", 1.0) * (1 + _cos(spec["query_vector"], source["vector"])) / 2)
        if kind == "constant_score":
            return None if self.evaluate(spec["filter"], source) is None else self.named(spec, spec["boost"])
        if kind == "script_score":  # hybrid scoring around the exact search
            found = self.evaluate(spec["query"], source)
            if found is None:
                return None
            return Match(self.run(spec["script"], found.score, {"vector": source.get("vector")}), found.inner, found.named)
        return Match(0.0, {}, {}) if self.matches(source, clause, span=False) else None

    @staticmethod
    def named(spec: dict[str, Any], score: float) -> Match:
        """A scoring clause's match, reported by name when it has one (include_named_queries_score)."""
        return Match(score, {}, {spec["_name"]: score} if "_name" in spec else {})

    def span_score(self, clause: dict[str, Any], span: dict[str, Any], source: dict[str, Any]) -> float | None:
        """A span-level query (inside nested) on one span of ``source`` (None: it does not match)."""
        ((kind, spec),) = clause.items()
        if kind == "knn":
            assert spec["field"] == "spans.vector", f"fake cluster cannot evaluate {clause}"
            for c in spec.get("filter", []):  # span fields on the span, the rest on the passage
                on_span = any(str(key).startswith("spans.") for key in next(iter(c.values())))
                if not (self.matches(span, c, span=True) if on_span else self.evaluate(c, source)):
                    return None
            cos = _cos(spec["query_vector"], span["vector"])
            return (1 + cos) / 2 if cos >= spec["similarity"] else None
        if kind == "script_score":
            if self.span_score(spec["query"], span, source) is None:
                return None
            score = self.run(spec["script"], 0.0, {"spans.vector": span["vector"]})
            return score if score >= spec.get("min_score", -math.inf) else None
        if kind == "bool":
            def evaluate(sub: dict[str, Any]) -> Match | None:
                score = self.span_score(sub, span, source)
                return None if score is None else Match(score, {}, {})

            found = self.boolean(spec, evaluate)
            return None if found is None else found.score
        return 1.0 if self.matches(span, clause, span=True) else None

    def nested(self, spec: dict[str, Any], source: dict[str, Any]) -> Match | None:
        """A nested query on ``spans``: the passage's matching spans, scored by ``score_mode``,
        and its inner hits (the best first, as many as their ``size``)."""
        assert spec["path"] == "spans", f"fake cluster cannot evaluate nested {spec}"
        spans = sorted(((score, span) for span in source.get("spans", [])
                        if (score := self.span_score(spec["query"], span, source)) is not None), key=lambda s: -s[0])
        if not spans:
            return None
        inner = {spec["inner_hits"]["name"]: (spans[: spec["inner_hits"].get("size", 3)], len(spans))} if "inner_hits" in spec else {}
        scores = [score for score, _ in spans]
        score = {"max": max(scores), "none": 0.0, "avg": sum(scores) / len(scores)}[spec.get("score_mode", "avg")]
        return Match(score, inner, {})

    def knn_section(self, knn: dict[str, Any], source: dict[str, Any]) -> Match | None:
        """The top-level knn section: on the passage vector, or nested on the span vectors."""
        query = {"knn": {k: v for k, v in knn.items() if k != "inner_hits"}}
        if knn["field"] != "spans.vector":
            return self.evaluate(query, source)
        inner = {"inner_hits": knn["inner_hits"]} if "inner_hits" in knn else {}
        return self.nested({"path": "spans", "score_mode": "max", "query": query, **inner}, source)

    def search(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        docs = sorted(
            ((doc_id, d) for n in self.resolve(target) for doc_id, d in self.indices[n]["docs"].items()),
            key=lambda item: item[1]["seq"],
        )
        if "ids" in body.get("query", {}):  # passage_vectors: documents by _id, _source filtered
            return self.by_ids(docs, body)
        scored = []  # (match, doc_id, doc)
        try:
            for doc_id, d in docs:
                found = self.knn_section(body["knn"], d["source"]) if "knn" in body else self.evaluate(body["query"], d["source"])
                if found is not None:
                    scored.append((found, doc_id, d))
        except PainlessError as exc:
            cause = {"type": "script_exception", "reason": str(exc)}
            return 400, {"error": {"root_cause": [cause], "type": "search_phase_execution_exception",
                                   "reason": "all shards failed"}, "status": 400}
        scored.sort(key=lambda item: (-item[0].score, item[2]["seq"]))  # _score desc, then _shard_doc
        if "knn" in body:
            scored = scored[: body["knn"]["k"]]
        if "search_after" in body:
            score, seq = body["search_after"]
            scored = [s for s in scored if (-s[0].score, s[2]["seq"]) > (-score, seq)]
        fields = body["_source"] or []
        first = body.get("from", 0)
        hits = []
        for found, doc_id, d in scored[first : first + body["size"]]:
            inner = {name: {"hits": {"total": {"value": total, "relation": "eq"}, "hits": [
                {"_score": s, "fields": {"spans": [{"start": [span["start"]], "end": [span["end"]],
                                                    "text": [span["text"]], "labels": span["labels"],
                                                    **({"mention": [span["mention"]]} if "mention" in span else {})}]}}
                for s, span in spans]}} for name, (spans, total) in found.inner.items()}
            hit = {"_id": doc_id, "_score": found.score, "sort": [found.score, d["seq"]],
                   "_source": {k: v for k, v in d["source"].items() if k in fields}, "inner_hits": inner}
            if found.named:
                hit["matched_queries"] = found.named
            hits.append(hit)
        return 200, {"pit_id": body.get("pit", {}).get("id"), "hits": {"hits": hits}}

    def msearch(self, target: str | None, lines: list[dict[str, Any]]) -> tuple[int, Any]:
        return 200, {"responses": [self.search(head.get("index", target), body)[1] for head, body in zip(lines[::2], lines[1::2])]}

    def by_ids(self, docs: list, body: dict[str, Any]) -> tuple[int, Any]:
        wanted = set(body["query"]["ids"]["values"])
        source = body["_source"]
        if isinstance(source, dict):  # Elasticsearch >= 9.2 leaves vectors out unless asked
            assert source.get("exclude_vectors") is False, "vectors would be missing from _source"
            source = source["includes"]
        hits = [{"_id": doc_id, "_score": 1.0, "_source": {k: v for k, v in d["source"].items() if k in source}}
                for doc_id, d in docs if doc_id in wanted]
        return 200, {"hits": {"hits": hits[: body["size"]]}}

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
            parsed = lines if path.endswith(("/_bulk", "/_msearch")) else lines[0]
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
    with pytest.raises(StoreError, match="closed"):  # a review: a search under way made a client nothing closed
        store.client


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


def test_a_server_that_never_answers_is_one_error_that_counts_the_tries():
    """An audit: a paused server held a search for 241 s and the message named one 60 s timeout."""
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel does) and answers nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        store = ElasticsearchStore.connect(url, index="nerindex", request_timeout=0.2)
        with pytest.raises(StoreError, match=r"did not answer the request .*: 4 tries timed out"):
            store.model()


def test_es_timeout_shortens_the_wait_for_a_server_that_never_answers(capsys, monkeypatch):
    """The last note's left-alone item: a paused server held every command 4 x 60 s, with no way to
    shorten it. --es-timeout (or NERINDEX_ES_TIMEOUT) is the time one request waits."""
    import socket
    import time

    from indexer.cli import main
    from indexer.config import from_env

    assert from_env({"NERINDEX_ES_TIMEOUT": "2.5"}).es_timeout == 2.5 and from_env({}).es_timeout is None
    for bad in ("0", "-1", "soon", "inf", "1e10"):
        with pytest.raises(StoreError, match="NERINDEX_ES_TIMEOUT must be a number of seconds above 0 and at most 86400"):
            from_env({"NERINDEX_ES_TIMEOUT": bad})
    def status(*options: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main(["es", "status", "--es-url", url, *options])
        return int(exited.value.code)

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert open_elasticsearch(Settings(es_url=url, es_timeout=0.3))._options.connection.request_timeout == 0.3
        monkeypatch.setenv("NERINDEX_ES_TIMEOUT", "0.2")
        started = time.monotonic()
        assert status() == 5 and time.monotonic() - started < 10  # 5: a store that cannot be used
        assert "4 tries timed out" in capsys.readouterr().err
        monkeypatch.delenv("NERINDEX_ES_TIMEOUT")
        assert status("--es-timeout", "0.2") == 5 and "4 tries timed out" in capsys.readouterr().err
        assert status("--es-timeout", "0") == 2  # refused before any request
    # a review: the Python API passed any value through, to fail deep in urllib3
    for bad in (0, -1, math.nan, math.inf, True, [5], 10**400, 1e10):
        with pytest.raises(StoreError, match="es_timeout must be a number of seconds above 0"):
            Settings(es_url=url, es_timeout=bad)
    assert Settings(es_timeout="5").es_timeout == Settings(es_timeout=np.int64(5)).es_timeout == 5.0
    assert status("--es-timeout", "1e10") == 2 and status("--es-timeout", "nan") == 2


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
    body = json.dumps(search_requests(cluster)[-1][2])
    assert '"knn"' in body and "script_score" not in body  # kNN, not the exhaustive search


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


@pytest.mark.parametrize("filters, kept", [(None, range(CROWD)), ({"spans.labels": "label-even"}, range(0, CROWD, 2))])
def test_exhaustive_search_marks_every_mention_of_a_crowded_passage(cluster, filters, kept):
    """The exhaustive search (Painless: only this fake runs it) carries 100 marks a hit, like the
    top-k one (the live suite's conformance test): the rest come from one more request, a kNN
    pre-filtered to that passage and to the search's filters, in the page's point in time (through
    the alias, a passage indexed again in between showed the page's text with the new marks)."""
    store = make_store(cluster)
    store.check_model(STAMP)
    store.write([crowded_passage()])
    hits = search(store, DINO, filters=filters, exhaustive=True)
    assert [s.text for s in hits[0].spans] == [f"Saurus{i}" for i in kept]
    method, path, body = search_requests(cluster)[-1]
    ids, marks = body["query"]["bool"]["filter"]  # exact, as the page scored them (no kNN, so any server)
    assert ids == {"terms": {"id": ["crowd"]}} and marks["nested"]["inner_hits"]["size"] == len(kept)
    assert "script_score" in marks["nested"]["query"]
    assert path == "/_search" and body["pit"]["id"] == "pit-1"  # no index: the page's point in time


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
    write_ties = staticmethod(StoreConformance.write_ties)
    test_tied_passages_of_an_exhaustive_search_come_in_the_order_they_were_written = \
        StoreConformance.test_tied_passages_of_an_exhaustive_search_come_in_the_order_they_were_written
    test_span_label_filter_restricts_spans = StoreConformance.test_span_label_filter_restricts_spans
    test_span_text_filter = StoreConformance.test_span_text_filter
    test_passage_weight_exhaustive = StoreConformance.test_passage_weight_exhaustive
    test_passage_vectors_in_the_order_given = StoreConformance.test_passage_vectors_in_the_order_given
    test_feedback_search_is_a_search_with_the_moved_vector = StoreConformance.test_feedback_search_is_a_search_with_the_moved_vector
    # candidates rank, only mentions are marked and make the --all answer; the top-k parts run
    # here too, and span filters in top-k search only here (the CI server is 8.x)
    candidates = StoreConformance.candidates
    marks = staticmethod(StoreConformance.marks)
    test_exhaustive_returns_passages_with_a_mention_over_the_threshold = \
        StoreConformance.test_exhaustive_returns_passages_with_a_mention_over_the_threshold
    test_without_a_threshold_every_mention_is_marked = StoreConformance.test_without_a_threshold_every_mention_is_marked
    test_a_candidate_over_a_threshold_no_mention_passes = StoreConformance.test_a_candidate_over_a_threshold_no_mention_passes
    test_candidates_with_limit_and_passage_weight = StoreConformance.test_candidates_with_limit_and_passage_weight
    test_span_filters_restrict_candidates_too = StoreConformance.test_span_filters_restrict_candidates_too
    test_a_limit_past_the_knn_cap_is_still_top_k = StoreConformance.test_a_limit_past_the_knn_cap_is_still_top_k
    rankers = staticmethod(StoreConformance.rankers)
    test_an_all_names_the_candidate_that_ranked_a_hit = StoreConformance.test_an_all_names_the_candidate_that_ranked_a_hit


def test_passage_vectors_before_9_2_ask_for_plain_source_fields():
    cluster = FakeCluster(version="8.15.0")
    store = make_store(cluster)
    store.check_model(STAMP)
    store.write(hybrid_corpus())
    assert store.passage_vectors(["h2"]) == pytest.approx(DINO[None, :])
    body = search_requests(cluster)[-1][2]
    assert body["_source"] == ["id", "vector"] and body["query"] == {"ids": {"values": ["h2"]}}


def test_exhaustive_search_sends_the_latest_point_in_time_id(cluster, corpus):
    """Elasticsearch may answer any request in a point in time with a new id: the marks' request,
    the next page and the close each send the latest (a stale id is unknown to the fake)."""
    cluster.rotate_pits = True
    store = make_store(cluster, page_size=1)
    store.check_model(STAMP)
    store.write(corpus + [crowded_passage()])
    hits = search(store, DINO, exhaustive=True)
    assert any(len(h.spans) == CROWD for h in hits)
    pit_bodies = [b for _, path, b in cluster.requests if path == "/_search"]
    assert len(pit_bodies) >= 3
    assert cluster.closed_pits == list(cluster.pits)
