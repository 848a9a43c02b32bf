"""ElasticsearchStore end to end through the real elasticsearch-py client, against an in-memory fake.

The fake is an ``elastic_transport`` node class: the client, ``streaming_bulk`` (with its 429
retries), point in time paging and error handling all run for real, only the HTTP exchange is
answered in memory. The fake evaluates the query shapes nerindex sends (top-level nested kNN with
``similarity`` and inner hits; ``knn`` queries inside ``nested`` with their ``k`` candidate pool;
``script_score`` whose Painless scripts it runs with ``tests/es_painless.py``; ``bool``;
term/terms/match) the way Elasticsearch scores them, except that BM25 is stood in for by matched
words × boost; the live suite (tests/test_es_live.py) checks the store against a real server.
"""

from __future__ import annotations

import fnmatch
import gzip
import itertools
import json
import math
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from elastic_transport import ApiResponseMeta, BaseNode, HttpHeaders  # noqa: E402
from elastic_transport._node import NodeApiResponse  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402
from store_conformance import DINO, StoreConformance, hybrid_corpus  # noqa: E402

import es_painless as painless  # noqa: E402
from es_painless import PainlessError  # noqa: E402

from indexer.config import Settings  # noqa: E402
from indexer.errors import ModelMismatchError, SearchError, StoreError  # noqa: E402
from indexer.records import EncodedPassage, EncodedSpan, Passage  # noqa: E402
from indexer.stores.base import ModelStamp, SearchRequest, StoreCounts  # noqa: E402
from indexer.stores.elasticsearch import BulkOptions, ElasticsearchStore, open_es_store  # noqa: E402
from indexer.stores.elasticsearch import store as store_module  # noqa: E402
from indexer.stores.elasticsearch.reindex import reindex  # noqa: E402

DIMS = 8
STAMP = ModelStamp("nerindex-test", "0.1.0", DIMS, "ab" * 32)
OTHER = ModelStamp("nerindex-other", "0.2.0", DIMS, "cd" * 32)


# --- the fake cluster -----------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class FakeCluster:
    """Indices, aliases and documents in memory, and a log of every request."""

    def __init__(self, version: str = "9.5.2") -> None:
        self.version = version
        self.indices: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.scripts: dict[str, Any] = {}
        self.bulk_rejections: dict[str, int] = {}  # _id -> how many times to answer 429
        self.pits: dict[str, str] = {}
        self.closed_pits: list[str] = []
        self._seq = itertools.count()
        self._pit_ids = itertools.count(1)

    def client(self) -> Elasticsearch:
        node_class = type("FakeNode", (FakeNode,), {"cluster": self})
        return Elasticsearch("http://fake-es:9200", node_class=node_class)

    # routing ------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if parts[0] == "_nodes":
            modules = [{"name": name} for name in ("lang-painless", "lang-mustache", "x-pack-core")]
            return 200, {"nodes": {"fake-node": {"version": self.version, "modules": modules}}}
        if parts[0] == "_bulk":
            return self.bulk(body)
        if parts[0] == "_aliases":
            return self.update_aliases(body["actions"])
        if parts[0] == "_alias":
            names = self.alias_targets(parts[1])
            if not names:
                return 404, {"error": {"type": "aliases_not_found_exception", "reason": "missing"}, "status": 404}
            return 200, {n: {"aliases": {parts[1]: {}}} for n in names}
        if parts[0] == "_scripts":
            self.scripts[parts[1]] = body
            return 200, {"acknowledged": True}
        if parts[0] == "_pit" and method == "DELETE":
            self.closed_pits.append(body["id"])
            return 200, {"succeeded": True, "num_freed": 1}
        if parts[0] == "_search":
            return self.search(self.pits[body["pit"]["id"]], body)
        target, rest = parts[0], parts[1:]
        if not rest:
            if method == "PUT":
                return self.create(target, body or {})
            if method == "DELETE":
                self.indices.pop(target, None)
                return 200, {"acknowledged": True}
            names = self.resolve(target)
            if method == "HEAD":
                return (200 if names else 404), None
            if not names and "*" not in target:
                return self.missing(target)
            return 200, {n: {"aliases": {a: {} for a in self.indices[n]["aliases"]}} for n in names}
        names = self.resolve(target)
        if not names:
            return self.missing(target)
        action = rest[0]
        if action == "_mapping":
            return 200, {n: {"mappings": self.indices[n]["mappings"]} for n in names}
        if action == "_settings":
            if method == "PUT":
                for n in names:
                    value = body["index"]["refresh_interval"]
                    self.indices[n]["settings"]["index"]["refresh_interval"] = value or "1s"
                    self.indices[n]["explicit_refresh"] = value is not None
                return 200, {"acknowledged": True}
            return 200, {
                n: {"settings": {"index": {"refresh_interval": self.indices[n]["settings"]["index"]["refresh_interval"]}}
                    if self.indices[n]["explicit_refresh"] else {}}
                for n in names
            }
        if action == "_refresh":
            return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}
        if action == "_mget":
            (name,) = names
            docs = self.indices[name]["docs"]
            return 200, {"docs": [{"_index": name, "_id": i, "found": i in docs} for i in body["ids"]]}
        if action == "_pit":
            pit = f"pit-{next(self._pit_ids)}"
            self.pits[pit] = target
            return 200, {"id": pit}
        if action == "_search":
            return self.search(target, body)
        raise AssertionError(f"fake cluster has no route for {method} {path}")

    def missing(self, target: str) -> tuple[int, Any]:
        return 404, {"error": {"root_cause": [{"type": "index_not_found_exception", "reason": f"no such index [{target}]"}],
                               "type": "index_not_found_exception", "reason": f"no such index [{target}]"}, "status": 404}

    def resolve(self, target: str) -> list[str]:
        if target in self.indices:
            return [target]
        if "*" in target:
            return sorted(n for n in self.indices if fnmatch.fnmatch(n, target))
        return self.alias_targets(target)

    def alias_targets(self, alias: str) -> list[str]:
        return sorted(n for n, index in self.indices.items() if alias in index["aliases"])

    # indices ------------------------------------------------------------------------------------

    def create(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        if name in self.indices:
            return 400, {"error": {"type": "resource_already_exists_exception",
                                   "reason": f"index [{name}] already exists"}, "status": 400}
        settings = json.loads(json.dumps(body.get("settings") or {"index": {}}))
        settings.setdefault("index", {}).setdefault("refresh_interval", "1s")
        self.indices[name] = {
            "mappings": body.get("mappings", {}), "settings": settings, "explicit_refresh": True,
            "aliases": set(body.get("aliases", {})), "docs": {},
        }
        return 200, {"acknowledged": True, "index": name}

    def update_aliases(self, actions: list[dict[str, Any]]) -> tuple[int, Any]:
        for action in actions:
            ((kind, spec),) = action.items()
            if kind == "add":
                self.indices[spec["index"]]["aliases"].add(spec["alias"])
            else:
                self.indices[spec["index"]]["aliases"].discard(spec["alias"])
        return 200, {"acknowledged": True}

    # documents ----------------------------------------------------------------------------------

    def bulk(self, lines: list[dict[str, Any]]) -> tuple[int, Any]:
        items = []
        for header, source in zip(lines[::2], lines[1::2]):
            meta = header["index"]
            doc_id = meta["_id"]
            if self.bulk_rejections.get(doc_id, 0) > 0:
                self.bulk_rejections[doc_id] -= 1
                items.append({"index": {"_id": doc_id, "status": 429, "error": {
                    "type": "es_rejected_execution_exception", "reason": "rejected execution (queue full)"}}})
                continue
            names = self.resolve(meta["_index"])
            if len(names) != 1:
                items.append({"index": {"_id": doc_id, "status": 404, "error": {"type": "index_not_found_exception", "reason": "no index"}}})
                continue
            index = self.indices[names[0]]
            problem = self.mapping_problem(index["mappings"], source)
            if problem:
                items.append({"index": {"_index": names[0], "_id": doc_id, "status": 400,
                                        "error": {"type": "document_parsing_exception", "reason": problem}}})
                continue
            existed = doc_id in index["docs"]
            index["docs"][doc_id] = {"seq": next(self._seq), "source": source}
            items.append({"index": {"_index": names[0], "_id": doc_id, "status": 200 if existed else 201,
                                    "result": "updated" if existed else "created"}})
        return 200, {"took": 1, "errors": any(i["index"]["status"] >= 300 for i in items), "items": items}

    @staticmethod
    def mapping_problem(mappings: dict[str, Any], source: dict[str, Any]) -> str | None:
        props = mappings["properties"]
        unknown = set(source) - set(props)
        if unknown:
            return f"strict_dynamic_mapping_exception: [{sorted(unknown)}] not allowed"
        dims = props["spans"]["properties"]["vector"]["dims"]
        for span in source.get("spans", []):
            if len(span["vector"]) != dims:
                return f"the [dims] property must be [{dims}]"
        return None

    # search -------------------------------------------------------------------------------------

    def docs_of(self, target: str) -> list[tuple[str, dict[str, Any]]]:
        out = []
        for name in self.resolve(target):
            out += [(doc_id, d) for doc_id, d in self.indices[name]["docs"].items()]
        return sorted(out, key=lambda item: item[1]["seq"])

    @staticmethod
    def value_of(source: dict[str, Any], field: str) -> Any:
        value: Any = source
        for part in field.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def clause_matches(self, obj: dict[str, Any], clause: dict[str, Any], *, span: bool) -> bool:
        ((kind, spec),) = clause.items()
        if kind in ("term", "terms"):
            ((field, wanted),) = spec.items()
            field = field[len("spans."):] if span else field
            field = "text" if field == "text.keyword" else field
            value = self.value_of(obj, field)
            values = value if isinstance(value, list) else [value]
            wanted = wanted if kind == "terms" else [wanted]
            # Elasticsearch coerces the query value to the field type ("2021" matches a long 2021).
            return any(str(v) in {str(w) for w in wanted} for v in values if v is not None)
        if kind == "match":
            text = spec["text"]
            query, operator = text["query"], text.get("operator", "or")
            have = set(_tokens(obj.get("text", "")))
            words = _tokens(query)
            return all(w in have for w in words) if operator == "and" else any(w in have for w in words)
        if kind == "bool" and set(spec) == {"must_not"}:
            return all(self.value_of(obj, c["exists"]["field"]) is None for c in spec["must_not"])
        raise AssertionError(f"fake cluster cannot evaluate {clause}")

    def split(self, clauses: list[dict[str, Any]]) -> tuple[list, list]:
        def is_span(clause):
            ((_, spec),) = clause.items()
            return any(str(k).startswith("spans.") for k in spec)
        return [c for c in clauses if not is_span(c)], [c for c in clauses if is_span(c)]

    def scored_spans(self, source, vector, minimum, span_clauses) -> list[tuple[float, dict[str, Any]]]:
        found = []
        for span in source.get("spans", []):
            if all(self.clause_matches(span, c, span=True) for c in span_clauses):
                cos = _cos(vector, span["vector"])
                if cos >= minimum:
                    found.append((cos, span))
        return sorted(found, key=lambda item: -item[0])

    @staticmethod
    def project(source: dict[str, Any], includes: list[str]) -> dict[str, Any]:
        return {k: v for k, v in source.items() if k in includes}

    @staticmethod
    def inner(doc_id: str, spans: list[tuple[float, dict[str, Any]]], total: int) -> dict[str, Any]:
        hits = [{"_id": doc_id, "_nested": {"field": "spans", "offset": 0}, "_score": score,
                 "fields": {"spans": [{"start": [s["start"]], "end": [s["end"]], "text": [s["text"]],
                                       **({"labels": list(s["labels"])} if s["labels"] else {})}]}}
                for score, s in spans]
        return {"spans": {"hits": {"total": {"value": total, "relation": "eq"}, "hits": hits}}}

    def search(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        docs = self.docs_of(target)
        if "aggs" in body:
            spans = sum(len(d["source"].get("spans", [])) for _, d in docs)
            return 200, {"hits": {"total": {"value": len(docs), "relation": "eq"}, "hits": []},
                         "aggregations": {"spans": {"doc_count": spans}}}
        includes = body["_source"]
        if "knn" in body:
            knn = body["knn"]
            top, span_level = self.split(knn.get("filter", []))
            scored = self.score_docs(docs, knn["query_vector"], knn["similarity"], top, span_level)
            scored.sort(key=lambda item: (-item[0], item[2]["seq"]))
            return 200, self.page(scored[: knn["k"]][: body["size"]], includes)
        query = body["query"]
        if query == {"match_all": {}}:  # scan for re-indexing
            after = body.get("search_after", [-1])[0]
            rows = [(doc_id, d) for doc_id, d in docs if d["seq"] > after][: body["size"]]
            return 200, {"pit_id": body["pit"]["id"], "hits": {"hits": [
                {"_id": doc_id, "_source": self.project(d["source"], includes), "sort": [d["seq"]]} for doc_id, d in rows]}}
        context = {"docs": docs, "size": body["size"], "knn": {}}
        scored = []
        try:
            for doc_id, d in docs:
                result = self.evaluate(query, doc_id, d, context)
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
        response = self.page(scored[: body["size"]], includes, with_sort="sort" in body)
        if "pit" in body:
            response["pit_id"] = body["pit"]["id"]
        return 200, response

    # The query DSL, evaluated per passage the way Elasticsearch scores it: one (score, inner hits)
    # or None when the passage does not match. ``match`` scores matched query words x boost, a
    # stand-in for BM25 (monotone in the same direction); everything else is computed as ES does.

    def evaluate(self, query: dict[str, Any], doc_id: str, d: dict[str, Any], context: dict[str, Any]):
        ((kind, spec),) = query.items()
        source = d["source"]
        if kind == "match_all":
            return 1.0, None
        if kind in ("term", "terms"):
            return (1.0, None) if self.clause_matches(source, query, span=False) else None
        if kind == "match":
            if not self.clause_matches(source, query, span=False):
                return None
            text = spec["text"]
            words = set(_tokens(text["query"])) & set(_tokens(source.get("text", "")))
            return text.get("boost", 1.0) * len(words), None
        if kind == "bool":
            if set(spec) == {"must_not"}:
                return (0.0, None) if self.clause_matches(source, query, span=False) else None
            assert set(spec) <= {"must", "should", "filter"}, f"fake cluster cannot evaluate {query}"
            score, inner = 0.0, None
            for clause in spec.get("must", []):
                result = self.evaluate(clause, doc_id, d, context)
                if result is None:
                    return None
                score, inner = score + result[0], inner or result[1]
            for clause in spec.get("filter", []):
                if self.evaluate(clause, doc_id, d, context) is None:
                    return None
            matched_should = 0
            for clause in spec.get("should", []):
                result = self.evaluate(clause, doc_id, d, context)
                if result is not None:
                    score, inner, matched_should = score + result[0], inner or result[1], matched_should + 1
            if spec.get("should") and not (spec.get("must") or spec.get("filter")) and not matched_should:
                return None
            return score, inner
        if kind == "script_score":
            result = self.evaluate(spec["query"], doc_id, d, context)
            if result is None:
                return None
            value = self.run_script(spec["script"], result[0], {"vector": source.get("vector")})
            if value < spec.get("min_score", -math.inf):
                return None
            return value, result[1]
        if kind == "nested":
            assert spec["path"] == "spans", spec
            ((inner_kind, inner_spec),) = spec["query"].items()
            mode = spec.get("score_mode", "avg")
            if inner_kind == "knn":
                if mode != "max":
                    raise PainlessError("nested knn only supports score_mode=max")
                spans = self.knn_query_spans(inner_spec, doc_id, context)
            else:
                spans = []
                for span in source.get("spans", []):
                    score = self.span_score(spec["query"], span)
                    if score is not None:
                        spans.append((score, span))
            if not spans:
                return None
            spans.sort(key=lambda item: -item[0])
            values = [score for score, _ in spans]
            score = {"max": max(values), "min": min(values), "sum": sum(values),
                     "avg": sum(values) / len(values), "none": 0.0}[mode]
            inner = None
            if "inner_hits" in spec:
                inner = (spans[: spec["inner_hits"].get("size", 3)], len(spans))
            return score, inner
        raise AssertionError(f"fake cluster cannot evaluate {query}")

    def knn_query_spans(self, knn: dict[str, Any], doc_id: str, context: dict[str, Any]):
        """The ``knn`` query over nested vectors: the top ``k`` passages by best span (pre-filtered,
        ``similarity`` applied), each with its matching spans scored (1 + cos) / 2; inner hits are
        the exact matches of each passage (Elasticsearch >= 8.13), scored the same way."""
        key = id(knn)
        if key not in context["knn"]:
            k = knn.get("k", context["size"])
            if k > knn.get("num_candidates", math.ceil(1.5 * k)):
                raise PainlessError("[k] must be less than or equal to [num_candidates]")
            top, span_level = self.split(knn.get("filter", []))
            scored = self.score_docs(context["docs"], knn["query_vector"], knn["similarity"], top, span_level)
            scored.sort(key=lambda item: (-item[0], item[2]["seq"]))
            context["knn"][key] = {found: inner[0] for _, found, _, inner in scored[:k]}
        return list(context["knn"][key].get(doc_id, []))

    def span_score(self, query: dict[str, Any], span: dict[str, Any]) -> float | None:
        """A query inside ``nested`` scored on one span (exact search)."""
        ((kind, spec),) = query.items()
        if kind == "match_all":
            return 1.0
        if kind in ("term", "terms"):
            return 1.0 if self.clause_matches(span, query, span=True) else None
        if kind == "bool" and set(spec) == {"filter"}:
            return 0.0 if all(self.clause_matches(span, c, span=True) for c in spec["filter"]) else None
        if kind == "script_score":
            base = self.span_score(spec["query"], span)
            if base is None:
                return None
            value = self.run_script(spec["script"], base, {"spans.vector": span["vector"]})
            return None if value < spec.get("min_score", -math.inf) else value
        raise AssertionError(f"fake cluster cannot evaluate {query} on a span")

    @staticmethod
    def run_script(script: dict[str, Any], score: float, doc: dict[str, Any]) -> float:
        value = painless.run(script, score=score, doc=doc)
        if value < 0 or math.isnan(value):
            raise PainlessError(f"script_score script returned an invalid score [{value}]")
        return value

    def score_docs(self, docs, vector, minimum, top, span_level):
        """Passages passing the top-level filters with a span at cos >= minimum: kNN scores."""
        scored = []
        for doc_id, d in docs:
            if not all(self.clause_matches(d["source"], c, span=False) for c in top):
                continue
            spans = [((1 + cos) / 2, span) for cos, span in self.scored_spans(d["source"], vector, minimum, span_level)]
            if spans:
                scored.append((spans[0][0], doc_id, d, (spans, len(spans))))
        return scored

    def page(self, scored, includes, with_sort=False) -> dict[str, Any]:
        hits = []
        for score, doc_id, d, inner in scored:
            hit = {"_index": "x", "_id": doc_id, "_score": score, "_source": self.project(d["source"], includes)}
            if inner is not None:
                hit["inner_hits"] = self.inner(doc_id, *inner)
            if with_sort:
                hit["sort"] = [score, d["seq"]]
            hits.append(hit)
        return {"hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": hits}}


class FakeNode(BaseNode):
    cluster: FakeCluster

    def perform_request(self, method, target, body=None, headers=None, request_timeout=None):
        url = urlsplit(target)
        raw = gzip.decompress(body) if body and body[:2] == b"\x1f\x8b" else body
        parsed: Any = None
        if raw:
            text = raw.decode("utf-8")
            if url.path.endswith("/_bulk"):
                parsed = [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                parsed = json.loads(text)
        status, answer = self.cluster.handle(method, url.path, parse_qs(url.query), parsed)
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


def search(store, vector=None, **kwargs) -> list:
    request = SearchRequest(vector=axis(0) if vector is None else vector, min_similarity=kwargs.pop("min_similarity", 0.5), **kwargs)
    return list(store.search(request))


# --- construction ---------------------------------------------------------------------------------


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


def test_open_es_store_from_settings_and_overrides():
    settings = Settings(es_url="http://a:9200", es_index="corpus", es_user="elastic", es_password="pw",
                        es_ca_certs="/ca.pem")
    store = open_es_store(settings, index=None, hybrid=True)
    options = store.options
    assert options.connection.url == "http://a:9200" and options.index == "corpus" and options.hybrid
    assert options.connection.basic_auth == ("elastic", "pw") and options.connection.ca_certs == "/ca.pem"
    store = open_es_store(settings, url="http://b:9200", index="other", api_key="k", user=None)
    assert store.options.connection.url == "http://b:9200" and store.options.connection.api_key == "k"
    with pytest.raises(StoreError, match="NERINDEX_ES_URL"):
        open_es_store(Settings())
    with pytest.raises(StoreError, match="both a user and a password"):
        open_es_store(Settings(es_url="http://a:9200", es_user="elastic"))


# --- model guard ----------------------------------------------------------------------------------


def test_check_model_creates_versioned_index_behind_alias(cluster):
    store = make_store(cluster)
    assert store.model() is None
    store.check_model(STAMP)
    assert list(cluster.indices) == ["nerindex-000001"]
    assert cluster.indices["nerindex-000001"]["aliases"] == {"nerindex"}
    assert store.model() == STAMP
    store.check_model(STAMP)  # idempotent
    assert len(cluster.indices) == 1
    fresh = make_store(cluster)
    assert fresh.model() == STAMP


def test_check_model_refuses_another_model(cluster):
    make_store(cluster).check_model(STAMP)
    with pytest.raises(ModelMismatchError, match="nerindex es reindex"):
        make_store(cluster).check_model(OTHER)


def test_check_model_refuses_foreign_index(cluster):
    cluster.create("nerindex", {"mappings": {"properties": {"title": {"type": "text"}}}})
    with pytest.raises(StoreError, match="not created by nerindex"):
        make_store(cluster).check_model(STAMP)


def test_check_model_skips_leftover_versions(cluster):
    cluster.create("nerindex-000004", {"mappings": {}})
    make_store(cluster).check_model(STAMP)
    assert "nerindex-000005" in cluster.indices


def test_old_servers_are_refused_clearly():
    cluster = FakeCluster(version="8.14.3")
    with pytest.raises(StoreError, match=r">= 8\.15\.0.*8\.14\.3"):
        make_store(cluster).check_model(STAMP)


# --- writing --------------------------------------------------------------------------------------


def test_write_reports_every_passage_in_order(cluster, corpus):
    store = make_store(cluster)
    store.check_model(STAMP)
    outcomes = store.write(corpus)
    assert [(o.id, o.ok, o.action) for o in outcomes] == [(p.passage.id, True, "created") for p in corpus]
    assert [o.action for o in store.write(corpus[:1])] == ["updated"]
    assert store.counts() == StoreCounts(passages=4, spans=5)
    assert store.existing_ids(["p1", "p9", "p3"]) == {"p1", "p3"}


def test_write_retries_429_with_backoff(cluster, corpus):
    store = make_store(cluster)
    store.check_model(STAMP)
    cluster.bulk_rejections = {"p2": 2}
    outcomes = store.write(corpus)
    assert all(o.ok for o in outcomes) and [o.id for o in outcomes] == ["p1", "p2", "p3", "p4"]
    bulk_calls = [r for r in cluster.requests if r[1] == "/_bulk"]
    assert len(bulk_calls) == 3  # first send, then p2 alone twice


def test_write_keeps_failures_as_data(cluster, corpus):
    store = make_store(cluster, bulk=BulkOptions(max_retries=1, initial_backoff=0.001))
    store.check_model(STAMP)
    cluster.bulk_rejections = {"p3": 5}  # still rejected after the retries
    bad = EncodedPassage(Passage("bad", "x"), (EncodedSpan(0, 1, "x", 0.9, np.ones(3)),), unit(np.ones(DIMS)))
    outcomes = store.write(corpus + [bad])
    by_id = {o.id: o for o in outcomes}
    assert [o.id for o in outcomes] == ["p1", "p2", "p3", "p4", "bad"]
    assert by_id["p3"].ok is False and by_id["p3"].error.startswith("HTTP 429: es_rejected_execution_exception")
    assert by_id["bad"].ok is False and "shape (3,)" in by_id["bad"].error  # caught before sending
    assert sum(not o.ok for o in outcomes) == 2
    assert not any(h.get("index", {}).get("_id") == "bad" for r in cluster.requests if r[1] == "/_bulk" for h in r[2][::2])


def test_write_needs_the_index(cluster, corpus):
    with pytest.raises(StoreError, match="check_model"):
        make_store(cluster).write(corpus)


def test_refresh_interval_relaxed_during_writes_and_restored(cluster, corpus):
    store = make_store(cluster)
    store.check_model(STAMP)
    index = cluster.indices["nerindex-000001"]
    store.write(corpus[:2])
    assert index["settings"]["index"]["refresh_interval"] == "30s"
    store.write(corpus[2:])
    settings_calls = [r for r in cluster.requests if r[1].endswith("/_settings") and r[0] == "PUT"]
    assert len(settings_calls) == 1  # relaxed once per load, not per batch
    search(store)  # a search makes the writes visible first
    assert index["settings"]["index"]["refresh_interval"] == "1s"
    assert any(r[1] == "/nerindex/_refresh" for r in cluster.requests)
    store.write(corpus[:1])
    store.close()
    assert index["settings"]["index"]["refresh_interval"] == "1s"


# --- searching ------------------------------------------------------------------------------------


@pytest.fixture
def filled(cluster, corpus) -> ElasticsearchStore:
    store = make_store(cluster)
    store.check_model(STAMP)
    store.write(corpus)
    return store


def test_knn_search_ranks_by_best_span_and_returns_matching_spans(filled):
    hits = search(filled)
    assert [h.id for h in hits] == ["p1", "p2"]
    p1 = hits[0]
    assert p1.score == pytest.approx(1.0, abs=1e-6)
    assert [(s.text, round(s.similarity, 3)) for s in p1.spans] == [("Obama", 1.0), ("Merkel", 0.707)]
    assert p1.spans[0].labels == ("politician", "person") and p1.fields == {"source": "wiki", "year": 2009}
    assert hits[1].score == pytest.approx(0.958, abs=1e-3)


def test_knn_search_threshold_limit_filters_and_text(filled):
    assert [h.id for h in search(filled, min_similarity=0.96)] == ["p1"]
    assert [len(h.spans) for h in search(filled, min_similarity=0.8)] == [1, 1]
    assert [h.id for h in search(filled, limit=1)] == ["p1"]
    assert [h.id for h in search(filled, filters={"source": "news"})] == ["p2"]
    assert [h.id for h in search(filled, filters={"source": ["news", "wiki"]})] == ["p1", "p2"]
    assert [h.id for h in search(filled, text="senator trade")] == ["p2"]
    assert search(filled, text="senator berlin") == []


def test_span_filters_need_9_2_for_knn(cluster, corpus):
    cluster.version = "8.19.0"
    store = make_store(cluster)
    store.check_model(STAMP)
    store.write(corpus)
    with pytest.raises(SearchError, match=r"span fields.*>= 9\.2\.0.*8\.19\.0"):
        search(store, filters={"spans.labels": "person"})
    # the exact search supports span filters on every version
    hits = search(store, filters={"spans.labels": "person"}, exhaustive=True)
    assert [h.id for h in hits] == ["p1"] and [s.text for s in hits[0].spans] == ["Obama"]


def test_span_filters_on_9_2(filled):
    hits = search(filled, filters={"spans.labels": "politician"}, min_similarity=0.6)
    assert [(h.id, [s.text for s in h.spans]) for h in hits] == [("p1", ["Obama", "Merkel"]), ("p2", ["senator"])]


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


def test_hybrid_adds_bm25_and_keeps_the_threshold(cluster, corpus):
    store = make_store(cluster, hybrid=True, text_boost=1.0)
    store.check_model(STAMP)
    store.write(corpus)
    hits = search(store, text="senator")
    assert [h.id for h in hits] == ["p2", "p1"]  # the word outweighs p1's better span
    assert hits[1].score == pytest.approx(1.0, abs=1e-6)  # Hit.score stays the best span similarity
    assert [h.id for h in search(store, text="France")] == ["p1", "p2"]  # p3 has the word, no match


# --- hybrid scoring: best span + λ · passage similarity -------------------------------------------


@pytest.fixture
def weighted(cluster) -> ElasticsearchStore:
    store = make_store(cluster)
    store.check_model(STAMP)
    assert all(o.ok for o in store.write(hybrid_corpus()))
    return store


def search_requests(cluster: FakeCluster) -> list[tuple[str, str, Any]]:
    return [r for r in cluster.requests if r[1].endswith("/_search")]


def test_passage_weight_is_one_knn_request(weighted, cluster):
    before = len(search_requests(cluster))
    hits = search(weighted, vector=DINO, passage_weight=0.5)
    assert [(h.id, round(h.score, 4)) for h in hits] == [("h2", 1.3), ("h1", 0.9)]
    assert [round(s.similarity, 4) for s in hits[0].spans] == [0.8]
    sent = search_requests(cluster)[before:]
    assert len(sent) == 1 and "knn" not in sent[0][2] and "script_score" in sent[0][2]["query"]


def test_passage_weight_reranks_the_knn_candidate_pool(cluster):
    store = make_store(cluster, num_candidates=1)
    store.check_model(STAMP)
    store.write(hybrid_corpus())
    # One candidate per shard: the kNN finds h1 (best span) only, so h2 cannot overtake it ...
    assert [h.id for h in search(store, vector=DINO, passage_weight=0.5, limit=1)] == ["h1"]
    # ... while the default pool (100) lets the passage term re-rank beyond `limit`,
    assert [h.id for h in search(make_store(cluster), vector=DINO, passage_weight=0.5, limit=1)] == ["h2"]
    # and the exact search sees every match.
    assert [h.id for h in search(store, vector=DINO, passage_weight=0.5, exhaustive=True)] == ["h2", "h1"]


def test_passage_weight_exhaustive_pages_by_the_combined_score(cluster):
    store = make_store(cluster, page_size=1)
    store.check_model(STAMP)
    store.write(hybrid_corpus())
    hits = search(store, vector=DINO, passage_weight=0.5, exhaustive=True)
    assert [(h.id, round(h.score, 4)) for h in hits] == [("h2", 1.3), ("h1", 0.9)]
    pages = [r[2] for r in cluster.requests if r[1] == "/_search"]
    assert len(pages) == 3  # one request per page: h2, h1, then an empty page
    assert pages[1]["search_after"][0] == pytest.approx(1.3 + 1 + 0.5)  # sorted by the shifted score
    assert all("script_score" in page["query"] for page in pages)


def test_passage_without_a_vector_adds_nothing(weighted):
    raptor = unit(axis(0) + 0.5 * axis(1))  # cos with DINO 0.894
    bare = EncodedPassage(Passage("bare", "Raptor claws", {"lang": "en"}),
                          (EncodedSpan(0, 6, "Raptor", 0.9, raptor, ()),), None)
    assert weighted.write([bare])[0].ok
    for exhaustive in (False, True):
        hits = search(weighted, vector=DINO, passage_weight=1.0, exhaustive=exhaustive)
        assert [(h.id, round(h.score, 3)) for h in hits] == [("h2", 1.8), ("h1", 0.9), ("bare", 0.894)]


def test_bm25_hybrid_with_passage_weight_keeps_elasticsearch_order(cluster):
    store = make_store(cluster, hybrid=True, text_boost=0.1)
    store.check_model(STAMP)
    store.write(hybrid_corpus())
    # BM25 alone lifts h1 ("tracks") over h2 ...
    assert [h.id for h in search(store, vector=DINO, text="tracks")] == ["h1", "h2"]
    # ... the passage term outweighs it; Hit.score stays the best span (BM25 cannot be split off).
    hits = search(store, vector=DINO, text="tracks", passage_weight=0.5)
    assert [(h.id, round(h.score, 4)) for h in hits] == [("h2", 0.8), ("h1", 0.9)]
    sent = search_requests(cluster)[-1][2]["query"]["bool"]
    assert "script_score" in sent["must"][0] and sent["should"][0]["match"]["text"]["query"] == "tracks"


def test_invalid_passage_weight_is_refused_before_any_request(weighted, cluster):
    before = len(cluster.requests)
    for weight in (-0.5, float("nan")):
        with pytest.raises(SearchError, match="passage_weight"):
            search(weighted, vector=DINO, passage_weight=weight)
    assert len(cluster.requests) == before


def test_the_fake_cluster_really_runs_the_script(weighted, monkeypatch):
    """A script Elasticsearch could not run fails the search here too (no trusted shortcut)."""
    from indexer.stores.elasticsearch import requests as rq

    monkeypatch.setattr(rq, "hybrid_knn_script_source", lambda metric, field: "cosineSimilarity(params.query_vector, 'spans.vector')")
    with pytest.raises(SearchError, match="no field"):
        search(weighted, vector=DINO, passage_weight=0.5)
    monkeypatch.setattr(rq, "hybrid_knn_script_source", lambda metric, field: "_score - 1.0")
    with pytest.raises(SearchError, match="invalid score"):
        search(weighted, vector=DINO, passage_weight=0.5)


def test_search_on_missing_index_finds_nothing(cluster):
    store = make_store(cluster)
    assert search(store) == [] and store.counts() == StoreCounts(0, 0)
    assert store.existing_ids(["a"]) == set()


def test_bad_request_becomes_search_error(filled, cluster, monkeypatch):
    def reject(method, path, query, body):
        return 400, {"error": {"root_cause": [{"type": "illegal_argument_exception", "reason": "bad knn"}],
                               "type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 400}

    search(filled)  # model read and writes flushed before the server turns hostile
    monkeypatch.setattr(cluster, "handle", reject)
    with pytest.raises(SearchError, match="bad knn"):
        search(filled)


def test_unreachable_server_is_one_clear_error():
    store = ElasticsearchStore.connect("http://127.0.0.1:9", index="nerindex", request_timeout=2)
    with pytest.raises(StoreError, match="cannot reach http://127.0.0.1:9"):
        store.model()


# --- re-index and template ------------------------------------------------------------------------


class ShiftEncoder:
    """Re-encodes passages: every span vector moves to the next axis (a 'new model')."""

    def __init__(self, originals: dict[str, EncodedPassage]) -> None:
        self.originals = originals
        self.calls = 0

    def encode(self, passages, *, batch_size=32):
        self.calls += 1
        out = []
        for p in passages:
            if p.id == "p4":
                out.append(EncodedPassage(p, (EncodedSpan(0, 1, "N", 0.9, np.ones(3)),), unit(np.ones(DIMS))))
                continue
            original = self.originals[p.id]
            spans = tuple(EncodedSpan(s.start, s.end, s.text, s.score, np.roll(s.vector, 1), s.labels) for s in original.spans)
            out.append(EncodedPassage(p, spans, original.vector))
        return out


def test_reindex_refuses_to_swap_on_failures_then_swaps(cluster, corpus):
    store = make_store(cluster, page_size=2)
    store.check_model(STAMP)
    store.write(corpus)
    encoder = ShiftEncoder({p.passage.id: p for p in corpus})
    with pytest.raises(StoreError, match="stays on 'nerindex-000001'"):
        reindex(store, encoder, OTHER, batch_size=3)
    assert cluster.indices["nerindex-000001"]["aliases"] == {"nerindex"}
    report = reindex(store, encoder, OTHER, batch_size=3, allow_failures=True, delete_old=True)
    assert (report.old_index, report.new_index, report.passages, report.failed) == ("nerindex-000001", "nerindex-000003", 4, 1)
    assert report.swapped and report.deleted_old and "nerindex-000001" not in cluster.indices
    assert cluster.indices["nerindex-000003"]["aliases"] == {"nerindex"}
    assert store.model() == OTHER
    assert [h.id for h in search(store, vector=axis(1))] == ["p1", "p2"]
    with pytest.raises(ModelMismatchError):
        store.check_model(STAMP)
    swap = [r for r in cluster.requests if r[1] == "/_aliases"][-1][2]["actions"]
    assert swap == [{"remove": {"index": "nerindex-000001", "alias": "nerindex"}},
                    {"add": {"index": "nerindex-000003", "alias": "nerindex"}}]


def test_reindex_needs_an_alias(cluster):
    cluster.create("nerindex", {"mappings": {"_meta": {"model": STAMP.to_dict()}, "properties": {}}})
    with pytest.raises(StoreError, match="is an index, not an alias"):
        reindex(make_store(cluster), ShiftEncoder({}), OTHER)


def test_put_search_template(cluster):
    store = make_store(cluster)
    assert store.put_search_template() == "nerindex-span-knn"
    assert cluster.scripts["nerindex-span-knn"]["script"]["lang"] == "mustache"


# --- the shared conformance suite, on the fake ------------------------------------------------------


class TestFakeClusterConformance(StoreConformance):
    """The suite every backend passes, run through the real client against the fake cluster.

    It checks the store's requests and parsing end to end; tests/test_es_live.py runs the same
    suite against a real Elasticsearch.
    """

    @pytest.fixture
    def store(self, stamp):
        store = make_store(FakeCluster())
        yield store
        store.close()
