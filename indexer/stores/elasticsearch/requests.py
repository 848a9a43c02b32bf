"""Pure builders of every Elasticsearch request body nerindex sends (golden-file tested).

Nothing here talks to a server: each function maps nerindex records and search options to the
dict Elasticsearch expects, so the bodies can be checked byte for byte and against the client's
own DSL classes without a cluster.

Field layout (``assets/mappings/passages.json``): ``id``, ``text``, ``fields.*`` (user metadata),
``model``, ``vector`` (passage vector), ``labels`` (copy of every span label, passage level, for
Kibana aggregations) and the nested ``spans`` with ``start``, ``end``, ``text``, ``score``,
``labels`` and ``vector``.

Hybrid scoring (``passage_weight`` λ > 0) adds λ · cos(type vector, passage ``vector``): natively
for top-k (a passage kNN boosted by λ next to the span kNN, see :func:`hybrid_knn_query`), with a
Painless ``script_score`` for the exact search (see :mod:`.similarity`); with λ = 0 every body is
exactly what it was without the option.

``rescore`` (servers >= 8.18, quantized ``index_options``) has the kNN rescore its candidates with
the stored float vectors, so scores and the ``similarity`` threshold are exact, not int8 estimates.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ...errors import SearchError, StoreError
from ...records import EncodedPassage
from ..base import ModelStamp
from . import templates
from .similarity import (
    SCRIPT_OFFSET,
    check_metric,
    hybrid_exact_script_source,
    knn_score_from_cosine,
    knn_similarity,
    linear_knn_score,
    script_source,
)

META_FORMAT = 1
SPANS_PATH = "spans"
SPAN_VECTOR_FIELD = "spans.vector"
PASSAGE_VECTOR_FIELD = "vector"
SOURCE_FIELDS = ["id", "text", "fields"]
INNER_HIT_FIELDS = ["spans.start", "spans.end", "spans.text", "spans.labels"]
INNER_HITS_NAME = "spans"
# Elasticsearch's default index.max_inner_result_window; the template pins it to the same value.
INNER_HITS_SIZE = 100
MAX_NUM_CANDIDATES = 10_000
MIN_NUM_CANDIDATES = 100
MAX_DOC_ID_BYTES = 512
DEFAULT_INDEX_OPTIONS = "int8_hnsw"
HNSW_DEFAULTS = {"m": 16, "ef_construction": 100}
# Span fields a filter may name (key -> field queried); everything else is user metadata.
SPAN_FILTER_FIELDS = {"spans.labels": "spans.labels", "spans.text": "spans.text.keyword"}
# Names of the passage-weight clauses: with ``include_named_queries_score`` each hit reports the
# passage term on its own (``matched_queries``), exact even where ``_score`` is not (see responses).
PASSAGE_QUERY = "nerindex_passage"
PASSAGE_MISSING_QUERY = "nerindex_passage_missing"
# ``GET _nodes/plugins`` trimmed to what the store needs: each node's version and module names.
SERVER_FACTS_FILTER = ["nodes.*.version", "nodes.*.modules.name", "nodes.*.plugins.name"]

_INDEX_NAME_FORBIDDEN = re.compile(r'[\\/*?"<>| ,#:A-Z]')


# --- index and documents ------------------------------------------------------------------------


def check_index_name(name: str) -> str:
    """The name if Elasticsearch accepts it for an index or alias; a StoreError that says why not."""
    problem = None
    if not name:
        problem = "it is empty"
    elif name in (".", ".."):
        problem = "'.' and '..' are reserved"
    elif name[0] in "-_+":
        problem = "it must not start with '-', '_' or '+'"
    elif _INDEX_NAME_FORBIDDEN.search(name):
        problem = 'it must be lowercase, without spaces or any of \\ / * ? " < > | , # :'
    elif len(name.encode("utf-8")) > 240:
        problem = "it is longer than 240 bytes"
    if problem:
        raise StoreError(f"invalid Elasticsearch index name {name!r}: {problem}")
    return name


def versioned_index_name(alias: str, number: int) -> str:
    """Concrete index behind the alias: ``<alias>-000001``, ``<alias>-000002``, ..."""
    return f"{alias}-{number:06d}"


def next_index_name(alias: str, existing: Iterable[str]) -> str:
    """The first versioned name after every one already used (leftovers of failed re-indexes too)."""
    pattern = re.compile(re.escape(alias) + r"-(\d{6})$")
    used = [int(m.group(1)) for m in map(pattern.match, existing) if m]
    return versioned_index_name(alias, max(used, default=0) + 1)


def index_options_body(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """dense_vector ``index_options``, pinned explicitly so a server upgrade never changes them.

    A plain type (``"int8_hnsw"``) gets the HNSW parameters written out; a dict is taken as is.
    """
    if isinstance(spec, Mapping):
        body = dict(spec)
        if not isinstance(body.get("type"), str):
            raise StoreError(f"index_options needs a 'type': {spec!r}")
        return body
    if not isinstance(spec, str) or not re.fullmatch(r"[a-z0-9_]+", spec):
        raise StoreError(f"invalid dense_vector index_options type {spec!r}")
    body: dict[str, Any] = {"type": spec}
    if spec.endswith("hnsw"):
        body.update(HNSW_DEFAULTS)
    return body


def span_vector_index_type(mapping: Mapping[str, Any]) -> str | None:
    """The ``index_options.type`` of ``spans.vector`` in an index mapping (None if not there)."""
    spans = ((mapping.get("properties") or {}).get(SPANS_PATH) or {}).get("properties") or {}
    options = (spans.get("vector") or {}).get("index_options") or {}
    kind = options.get("type")
    return str(kind) if kind else None


def quantized(index_type: str | None) -> bool:
    """Whether vectors of this dense_vector index type are searched through a lossy copy
    (``int8_*``, ``int4_*``, ``bbq_*``), so that rescoring with the float vectors changes scores."""
    return bool(index_type) and index_type.split("_", 1)[0] in ("int8", "int4", "bbq")


def index_meta(stamp: ModelStamp) -> dict[str, Any]:
    """The index ``_meta``: which model made the vectors (the model guard reads it back)."""
    return {"nerindex_format": META_FORMAT, "model": stamp.to_dict()}


def index_body(
    stamp: ModelStamp, *, index_options: str | Mapping[str, Any] = DEFAULT_INDEX_OPTIONS
) -> dict[str, Any]:
    """Settings and mappings of a passage index for this model, from ``assets/mappings/passages.json``."""
    check_metric(stamp.similarity)
    if int(stamp.dims) <= 0:
        raise StoreError(f"model {stamp.id!r} has invalid dims {stamp.dims!r}")
    return templates.fill(
        templates.load_template(templates.INDEX_TEMPLATE),
        {
            "dims": int(stamp.dims),
            "similarity": stamp.similarity,
            "index_options": index_options_body(index_options),
            "meta": index_meta(stamp),
        },
    )


def create_index_body(
    stamp: ModelStamp,
    *,
    index_options: str | Mapping[str, Any] = DEFAULT_INDEX_OPTIONS,
    alias: str | None = None,
) -> dict[str, Any]:
    """``PUT <index>`` body; with ``alias`` the alias is created in the same (atomic) request."""
    body = index_body(stamp, index_options=index_options)
    if alias is not None:
        body["aliases"] = {alias: {}}
    return body


def alias_swap_actions(alias: str, old: str | None, new: str) -> list[dict[str, Any]]:
    """``POST _aliases`` actions moving the alias to ``new`` in one atomic step."""
    actions: list[dict[str, Any]] = []
    if old is not None:
        actions.append({"remove": {"index": old, "alias": alias}})
    actions.append({"add": {"index": new, "alias": alias}})
    return actions


# Elasticsearch 9.2 leaves dense vectors out of ``_source`` by default (index setting
# ``index.mapping.exclude_source_vectors``); ``exclude_vectors: false`` asks for them back.
SOURCE_VECTORS_SERVER = (9, 2, 0)


def passage_vectors_body(passage_ids: Sequence[str], *, exclude_vectors_flag: bool) -> dict[str, Any]:
    """A search for the stored passage vectors of these ids (``_source`` filtered to id + vector)."""
    fields = ["id", PASSAGE_VECTOR_FIELD]
    source: Any = {"includes": fields, "exclude_vectors": False} if exclude_vectors_flag else fields
    return {
        "size": len(passage_ids),
        "_source": source,
        "query": {"ids": {"values": [document_id(pid) for pid in passage_ids]}},
    }


def document_id(passage_id: str) -> str:
    """Deterministic ``_id``: the passage id itself, hashed only when Elasticsearch would refuse it."""
    raw = passage_id.encode("utf-8")
    if 0 < len(raw) <= MAX_DOC_ID_BYTES:
        return passage_id
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def vector_values(vector: Any) -> list[float]:
    """A vector as JSON numbers: float32 precision is all Elasticsearch keeps, so 8 decimals do."""
    return np.round(np.asarray(vector, dtype=np.float32).astype(np.float64), 8).tolist()


def vector_problem(vector: Any, dims: int) -> str | None:
    """Why a vector cannot be indexed (wrong size, not finite, zero), or None when it can."""
    if vector is None:
        return "missing vector"
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != dims:
        return f"vector has shape {tuple(array.shape)}, the index expects ({dims},)"
    if not np.all(np.isfinite(array)):
        return "vector has non-finite values"
    if not np.any(array):
        return "vector is all zeros"
    return None


def document_problem(doc: EncodedPassage, dims: int) -> str | None:
    """Why this passage would be refused by the mapping, checked before sending it."""
    if doc.vector is not None:
        problem = vector_problem(doc.vector, dims)
        if problem:
            return f"passage {problem}"
    for number, span in enumerate(doc.spans):
        problem = vector_problem(span.vector, dims)
        if problem:
            return f"span {number} ({span.text!r}): {problem}"
    return None


def passage_document(doc: EncodedPassage, stamp: ModelStamp) -> dict[str, Any]:
    """The ``_source`` of one passage: text, metadata, model, passage vector, nested spans."""
    passage = doc.passage
    source: dict[str, Any] = {
        "id": passage.id,
        "text": passage.text,
        "fields": dict(passage.fields),
        "model": {"id": stamp.id, "version": stamp.version},
        "span_count": len(doc.spans),
    }
    if doc.vector is not None:
        source["vector"] = vector_values(doc.vector)
    source["spans"] = [
        {
            "start": int(span.start),
            "end": int(span.end),
            "text": span.text,
            "score": round(float(span.score), 6),
            "labels": list(span.labels),
            "vector": vector_values(span.vector),
        }
        for span in doc.spans
    ]
    return source


def bulk_action(doc: EncodedPassage, stamp: ModelStamp, index: str) -> dict[str, Any]:
    """One ``streaming_bulk`` action: index (create or overwrite) under the deterministic _id."""
    return {
        "_op_type": "index",
        "_index": index,
        "_id": document_id(doc.passage.id),
        "_source": passage_document(doc, stamp),
    }


def bulk_actions(
    docs: Iterable[EncodedPassage], stamp: ModelStamp, index: str
) -> Iterator[dict[str, Any]]:
    """Bulk actions for passages, lazily, in input order."""
    for doc in docs:
        yield bulk_action(doc, stamp, index)


def refresh_settings(interval: str | None) -> dict[str, Any]:
    """``PUT _settings`` body for the refresh interval (None resets it to the server default)."""
    return {"index": {"refresh_interval": interval}}


# --- filters ------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _value_clause(field: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {"bool": {"must_not": [{"exists": {"field": field}}]}}
    if isinstance(value, (set, frozenset)):
        value = sorted(value, key=repr)
    if isinstance(value, (list, tuple)):
        values = [_plain(v) for v in value]
        if any(isinstance(v, (dict, list, tuple)) or v is None for v in values):
            raise SearchError(f"filter on {field!r}: a list may hold plain values only")
        return {"terms": {field: values}}
    if isinstance(value, Mapping):
        raise SearchError(
            f"filter on {field!r}: only exact values or lists of values are supported, got {value!r}"
        )
    return {"term": {field: _plain(value)}}


def split_filters(
    filters: Mapping[str, Any] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Metadata filters as (passage-level clauses, span-level clauses).

    ``{"source": "wiki"}`` filters the user metadata field ``fields.source``; a list means any of
    its values; None means the field is absent. Keys starting with ``spans.`` (``spans.labels``,
    ``spans.text``) restrict which spans may match. Keys are sorted so bodies are deterministic.
    """
    passage_level: list[dict[str, Any]] = []
    span_level: list[dict[str, Any]] = []
    for key in sorted(filters or {}):
        value = filters[key]  # type: ignore[index]
        if not isinstance(key, str) or not key or "*" in key or key.startswith(".") or key.endswith("."):
            raise SearchError(f"invalid filter field {key!r}")
        if key.startswith("spans."):
            field = SPAN_FILTER_FIELDS.get(key)
            if field is None:
                known = ", ".join(sorted(SPAN_FILTER_FIELDS))
                raise SearchError(f"cannot filter on span field {key!r} (span filters: {known})")
            span_level.append(_value_clause(field, value))
        else:
            passage_level.append(_value_clause(f"fields.{key}", value))
    return passage_level, span_level


def text_filter(text: str) -> dict[str, Any]:
    """Lexical restriction: every term of ``text`` must occur in the passage text."""
    return {"match": {"text": {"query": text, "operator": "and"}}}


def text_boost(text: str, boost: float) -> dict[str, Any]:
    """BM25 boost mode: BM25 on the passage text, added to the vector score (no restriction)."""
    return {"match": {"text": {"query": text, "boost": float(boost)}}}


# --- search bodies ------------------------------------------------------------------------------


def inner_hits() -> dict[str, Any]:
    """The matching spans of each passage, best first, without their vectors."""
    return {
        "name": INNER_HITS_NAME,
        "size": INNER_HITS_SIZE,
        "_source": False,
        "fields": list(INNER_HIT_FIELDS),
    }


def num_candidates_for(k: int, requested: int | None = None) -> int:
    """Candidates per shard: at least ``k``, a generous default, never above Elasticsearch's cap."""
    wanted = requested if requested is not None else max(MIN_NUM_CANDIDATES, 2 * k)
    return min(MAX_NUM_CANDIDATES, max(k, wanted))


def _query_vector(vector: Any) -> list[float]:
    values = vector_values(vector)
    if not values or not all(math.isfinite(v) for v in values):
        raise SearchError("the query vector is empty or not finite")
    return values


def check_passage_weight(passage_weight: Any) -> float:
    """λ of hybrid scoring as a float: finite and >= 0 (a negative weight could make scores < 0)."""
    try:
        value = float(passage_weight)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise SearchError(f"passage_weight must be a finite number >= 0, got {passage_weight!r}")
    return value


def passage_weight_query(
    query: dict[str, Any], vector: Any, *, passage_weight: float, source: str
) -> dict[str, Any]:
    """``script_score`` around ``query`` adding λ · passage similarity (its script is ``source``)."""
    return {
        "script_score": {
            "query": query,
            "script": {
                "source": source,
                "params": {"query_vector": _query_vector(vector), "passage_weight": float(passage_weight)},
            },
        }
    }


def _check_k(limit: int) -> int:
    if limit < 1 or limit > MAX_NUM_CANDIDATES:
        raise SearchError(
            f"kNN search returns 1 to {MAX_NUM_CANDIDATES} passages (asked for {limit}); "
            "use exhaustive search for more"
        )
    return int(limit)


def rescore_vector(k: int, num_candidates: int) -> dict[str, Any]:
    """``rescore_vector`` rescoring every one of ``num_candidates`` with the float vectors.

    Elasticsearch gathers ``k · oversample`` candidates and rescores them; ``oversample`` is
    between 1 and 10.
    """
    return {"oversample": float(min(10.0, max(1.0, num_candidates / k)))}


def knn_search_body(
    vector: Any,
    *,
    min_similarity: float,
    metric: str = "cosine",
    limit: int = 10,
    num_candidates: int | None = None,
    filters: Mapping[str, Any] | None = None,
    text: str | None = None,
    passage_weight: float = 0.0,
    rescore: bool = False,
) -> dict[str, Any]:
    """Top-level nested kNN on ``spans.vector``: passages ranked by their best span.

    ``similarity`` (the threshold, in the metric's raw units) drops spans below it, and since
    Elasticsearch 8.15 also filters the inner hits, so each hit carries exactly its matching spans.
    Metadata filters and the text restriction are kNN pre-filters (each clause on its own: span
    clauses are only honoured by Elasticsearch >= 9.2, which the store checks before sending).

    With ``passage_weight`` λ > 0 the span kNN runs as a query next to a passage kNN boosted by λ:
    see :func:`hybrid_knn_query`.
    """
    k = _check_k(limit)
    weight = check_passage_weight(passage_weight)
    passage_level, span_level = split_filters(filters)
    clauses = passage_level + span_level + ([text_filter(text)] if text else [])
    candidates = num_candidates_for(k, num_candidates)
    if weight:
        query = hybrid_knn_query(
            vector, min_similarity=min_similarity, metric=metric, num_candidates=candidates,
            clauses=clauses, passage_weight=weight, rescore=rescore,
        )
        # Elasticsearch orders by span + λ · passage kNN score; unless that is the cosine order
        # (l2_norm, max_inner_product), every candidate comes back to be ranked by the caller.
        size = k if linear_knn_score(metric) else candidates
        return {"size": size, "_source": list(SOURCE_FIELDS), "query": query}
    knn: dict[str, Any] = {
        "field": SPAN_VECTOR_FIELD,
        "query_vector": _query_vector(vector),
        "k": k,
        "num_candidates": candidates,
        "similarity": knn_similarity(min_similarity, metric),
    }
    if rescore:
        knn["rescore_vector"] = rescore_vector(k, candidates)
    if clauses:
        knn["filter"] = clauses
    knn["inner_hits"] = inner_hits()
    return {"size": k, "_source": list(SOURCE_FIELDS), "knn": knn}


def span_knn(
    vector: Any,
    *,
    min_similarity: float,
    metric: str,
    num_candidates: int,
    clauses: Sequence[Mapping[str, Any]],
    k: int | None = None,
    rescore: bool = False,
) -> dict[str, Any]:
    """A ``knn`` query on ``spans.vector`` (it must sit in a ``nested`` query on ``spans``)."""
    knn: dict[str, Any] = {"field": SPAN_VECTOR_FIELD, "query_vector": _query_vector(vector)}
    if k is not None:
        knn["k"] = int(k)
    knn["num_candidates"] = int(num_candidates)
    knn["similarity"] = knn_similarity(min_similarity, metric)
    if rescore:
        knn["rescore_vector"] = rescore_vector(int(k or num_candidates), int(num_candidates))
    if clauses:
        knn["filter"] = [dict(clause) for clause in clauses]
    return {"knn": knn}


def nested_span_knn(vector: Any, **options: Any) -> dict[str, Any]:
    """:func:`span_knn` inside a ``nested`` query (best span, inner hits): the form that can sit
    in a ``bool``, unlike the top-level ``knn`` section."""
    return {
        "nested": {
            "path": SPANS_PATH,
            "score_mode": "max",
            "query": span_knn(vector, **options),
            "inner_hits": inner_hits(),
        }
    }


def passage_weight_clauses(
    vector: Any,
    *,
    metric: str,
    num_candidates: int,
    matched: Mapping[str, Any],
    passage_weight: float,
    rescore: bool = False,
) -> list[dict[str, Any]]:
    """``should`` clauses adding λ · (passage kNN score) to the passages ``matched`` selects.

    The passage kNN is pre-filtered to ``matched`` (the span kNN, at most ``num_candidates``
    passages per shard), and its ``k`` is ``num_candidates``: with no more candidates than ``k``,
    Lucene scores every one of them exactly instead of walking the graph, so each matching
    passage gets its own passage term. A passage stored without a vector gets the score of
    cosine 0 (as in the embedded store) from a ``constant_score`` clause. Both clauses are named,
    so a search with ``include_named_queries_score`` reports each hit's passage term.
    """
    knn: dict[str, Any] = {
        "field": PASSAGE_VECTOR_FIELD,
        "query_vector": _query_vector(vector),
        "k": int(num_candidates),
        "num_candidates": int(num_candidates),
        "filter": [dict(matched)],
        "boost": float(passage_weight),
        "_name": PASSAGE_QUERY,
    }
    if rescore:
        knn["rescore_vector"] = rescore_vector(int(num_candidates), int(num_candidates))
    missing = {"bool": {"must_not": [{"exists": {"field": PASSAGE_VECTOR_FIELD}}]}}
    return [
        {"knn": knn},
        {
            "constant_score": {
                "filter": missing,
                "boost": float(passage_weight) * knn_score_from_cosine(0.0, metric),
                "_name": PASSAGE_MISSING_QUERY,
            }
        },
    ]


def hybrid_knn_query(
    vector: Any,
    *,
    min_similarity: float,
    metric: str,
    num_candidates: int,
    clauses: Sequence[Mapping[str, Any]],
    passage_weight: float,
    rescore: bool = False,
) -> dict[str, Any]:
    """Nested span kNN scored by best span + λ · passage similarity (hybrid scoring, λ > 0), natively.

    ``bool.must`` is the nested span kNN with ``k = num_candidates`` (the candidate pool the
    top-level ``knn`` section gathers internally), so that a passage with a weaker best span but a
    closer passage vector can still overtake within that pool; ``bool.should`` adds λ · passage kNN
    score (:func:`passage_weight_clauses`). Which passages match and which spans come back as inner
    hits depend on ``similarity`` alone. ``_score`` = span kNN score + λ · passage kNN score.
    """
    options = dict(
        min_similarity=min_similarity, metric=metric, num_candidates=num_candidates,
        clauses=clauses, k=num_candidates, rescore=rescore,
    )
    matched = {"nested": {"path": SPANS_PATH, "query": span_knn(vector, **options)}}
    should = passage_weight_clauses(
        vector, metric=metric, num_candidates=num_candidates, matched=matched,
        passage_weight=passage_weight, rescore=rescore,
    )
    return {"bool": {"must": [nested_span_knn(vector, **options)], "should": should}}


def bm25_boost_search_body(
    vector: Any,
    *,
    text: str,
    min_similarity: float,
    metric: str = "cosine",
    limit: int = 10,
    num_candidates: int | None = None,
    filters: Mapping[str, Any] | None = None,
    boost: float = 0.1,
    passage_weight: float = 0.0,
    rescore: bool = False,
) -> dict[str, Any]:
    """BM25 boost mode: the nested kNN must match (same threshold), BM25 on ``text`` adds to the score.

    The kNN runs as a query inside a ``nested`` clause (rather than top-level ``knn``) so that it
    stays a required clause: a passage that only matches the words is never returned.
    Summing the scores needs no licence (RRF would).

    With ``passage_weight`` λ > 0 the passage kNN clauses of :func:`hybrid_knn_query` join the
    ``should`` clauses, so the order is span + λ · passage kNN score plus the BM25 term.
    """
    k = _check_k(limit)
    weight = check_passage_weight(passage_weight)
    passage_level, span_level = split_filters(filters)
    candidates = num_candidates_for(k, num_candidates)
    options = dict(
        min_similarity=min_similarity, metric=metric, num_candidates=candidates,
        clauses=passage_level + span_level, rescore=rescore,
    )
    if weight:
        query = hybrid_knn_query(vector, passage_weight=weight, **options)
        query["bool"]["should"].append(text_boost(text, boost))
    else:
        # k = size (Elasticsearch's default, written out for the rescore's oversample): BM25
        # re-orders the top passages by span.
        span = nested_span_knn(vector, k=k, **options)
        query = {"bool": {"must": [span], "should": [text_boost(text, boost)]}}
    return {"size": k, "_source": list(SOURCE_FIELDS), "query": query}


def exhaustive_search_body(
    vector: Any,
    *,
    min_similarity: float,
    filters: Mapping[str, Any] | None = None,
    text: str | None = None,
    size: int = 500,
    pit_id: str | None = None,
    keep_alive: str = "2m",
    search_after: Sequence[Any] | None = None,
    passage_weight: float = 0.0,
) -> dict[str, Any]:
    """Every passage whose best span passes the threshold, exactly, one page at a time.

    A ``nested`` query (``score_mode: max``) over a ``script_score`` that computes each span's
    cosine on the stored float vectors; ``min_score`` drops spans below the threshold, so a passage
    matches when its best span passes and scores as that span. Paged with a point in time and
    ``search_after``, past the 10,000 cap of kNN. Span filters work on every version here.

    With ``passage_weight`` λ > 0 an outer ``script_score`` adds λ · (passage cos + 1) to that
    score (span cos + 1), so pages are sorted by the combined score, shifted by 1 + λ.
    """
    weight = check_passage_weight(passage_weight)
    passage_level, span_level = split_filters(filters)
    span_query: dict[str, Any] = {"bool": {"filter": span_level}} if span_level else {"match_all": {}}
    nested = {
        "nested": {
            "path": SPANS_PATH,
            "score_mode": "max",
            "query": {
                "script_score": {
                    "query": span_query,
                    "script": {
                        "source": script_source(SPAN_VECTOR_FIELD),
                        "params": {"query_vector": _query_vector(vector)},
                    },
                    "min_score": float(min_similarity) + SCRIPT_OFFSET,
                }
            },
            "inner_hits": inner_hits(),
        }
    }
    boolean: dict[str, Any] = {"must": [nested]}
    restrictions = passage_level + ([text_filter(text)] if text else [])
    if restrictions:
        boolean["filter"] = restrictions
    query: dict[str, Any] = {"bool": boolean}
    if weight:
        query = passage_weight_query(
            query, vector, passage_weight=weight, source=hybrid_exact_script_source(PASSAGE_VECTOR_FIELD)
        )
    body: dict[str, Any] = {
        "size": int(size),
        "_source": list(SOURCE_FIELDS),
        "query": query,
        "track_total_hits": False,
    }
    if pit_id is not None:
        body["pit"] = {"id": pit_id, "keep_alive": keep_alive}
        body["sort"] = [{"_score": {"order": "desc"}}, {"_shard_doc": {"order": "asc"}}]
    else:
        body["sort"] = [{"_score": {"order": "desc"}}, {"id": {"order": "asc"}}]
    if search_after is not None:
        body["search_after"] = list(search_after)
    return body


def scan_body(
    *, pit_id: str, keep_alive: str = "5m", size: int = 500, search_after: Sequence[Any] | None = None
) -> dict[str, Any]:
    """One page of every passage (id, text, metadata) in index order, for re-indexing."""
    body: dict[str, Any] = {
        "size": int(size),
        "_source": list(SOURCE_FIELDS),
        "query": {"match_all": {}},
        "pit": {"id": pit_id, "keep_alive": keep_alive},
        "sort": [{"_shard_doc": {"order": "asc"}}],
        "track_total_hits": False,
    }
    if search_after is not None:
        body["search_after"] = list(search_after)
    return body


def counts_body() -> dict[str, Any]:
    """Passages (top-level documents) and spans (nested documents) in one request."""
    return {
        "size": 0,
        "track_total_hits": True,
        "aggs": {"spans": {"nested": {"path": SPANS_PATH}}},
    }


def search_template_body() -> dict[str, Any]:
    """``PUT _scripts/<id>`` body of the stored search template (``assets/mappings/search-template.json``)."""
    return templates.load_template(templates.SEARCH_TEMPLATE)


def search_template_params(
    vector: Any, *, min_similarity: float, metric: str = "cosine", limit: int = 10,
    num_candidates: int | None = None,
) -> dict[str, Any]:
    """Parameters that make the stored template run the same query as :func:`knn_search_body`."""
    k = _check_k(limit)
    return {
        "query_vector": _query_vector(vector),
        "k": k,
        "num_candidates": num_candidates_for(k, num_candidates),
        "similarity": knn_similarity(min_similarity, metric),
    }
