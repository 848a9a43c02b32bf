"""Pure builders of the top-k search bodies (golden-file tested): nested span kNN, BM25 boost, filters.

Each function maps a query (type vector, threshold, :class:`~indexer.stores.base.Filters`, text,
options) to the dict Elasticsearch expects, so the bodies can be checked byte for byte and against
the client's own DSL classes without a cluster. The filters arrive checked; here they are only
translated into clauses.

Hybrid scoring (``passage_weight`` λ > 0) adds λ · cos(type vector, passage ``vector``) natively:
a passage kNN boosted by λ next to the span kNN (see :func:`hybrid_knn_query`); with λ = 0 every
body is exactly what it was without the option.

``rescore`` (servers >= 8.18, quantized ``index_options``) has the kNN rescore its candidates with
the stored float vectors, so scores and the ``similarity`` threshold are exact, not int8 estimates.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ...errors import SearchError
from ..base import Filters, FilterValue, check_passage_weight
from ..filters import field_values
from .index_requests import FILTER_TEXTS, PASSAGE_VECTOR_FIELD, SOURCE_FIELDS, SPAN_VECTOR_FIELD, SPANS_PATH, vector_values
from .similarity import knn_score_from_cosine, knn_similarity, linear_knn_score

INNER_HIT_FIELDS = ["spans.start", "spans.end", "spans.text", "spans.labels"]
INNER_HITS_NAME = "spans"
# Elasticsearch's default index.max_inner_result_window; the template pins it to the same value.
INNER_HITS_SIZE = 100
MAX_NUM_CANDIDATES = 10_000
MIN_NUM_CANDIDATES = 100
# Span fields a filter may name (key -> field queried); everything else is user metadata.
SPAN_FILTER_FIELDS = {"spans.labels": "spans.labels", "spans.text": "spans.text.keyword"}
# Names of the passage-weight clauses: with ``include_named_queries_score`` each hit reports the
# passage term on its own (``matched_queries``), exact even where ``_score`` is not (see responses).
PASSAGE_QUERY = "nerindex_passage"
PASSAGE_MISSING_QUERY = "nerindex_passage_missing"


# --- filters and text ---------------------------------------------------------------------------


def _value_clause(field: str, value: FilterValue) -> dict[str, Any]:
    if value is None:
        return {"bool": {"must_not": [{"exists": {"field": field}}]}}
    if isinstance(value, tuple):
        return {"terms": {field: list(value)}}
    return {"term": {field: value}}


def _metadata_clause(key: str, value: FilterValue, typed: bool) -> dict[str, Any]:
    """One metadata filter. ``typed``: the index keeps each metadata value as the text the
    embedded store compares (``filter_texts.<key>``, :func:`index_requests.filter_texts`), so the
    filter is the embedded store's rule (``stores.filters.field_values``), not the field type
    Elasticsearch guessed from the first passage that had the field."""
    if value is None or not typed:
        return _value_clause(f"fields.{key}", value)
    return {"terms": {f"{FILTER_TEXTS}.{key}": field_values(value)}}


def filter_clauses(filters: Filters | None, *, typed: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Filters as (passage-level clauses, span-level clauses), in key order (deterministic bodies).

    ``{"source": "wiki"}`` filters the user metadata field ``fields.source``; a tuple of values
    means any of them (``terms``); None means the field is absent. ``spans.labels`` and
    ``spans.text`` restrict which spans may match. ``typed``: see :func:`_metadata_clause`.
    """
    if filters is None:
        return [], []
    passage_level = [_metadata_clause(key, value, typed) for key, value in filters.metadata]
    span_level = [_value_clause(SPAN_FILTER_FIELDS[key], value) for key, value in filters.spans]
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


def query_vector_values(vector: Any) -> list[float]:
    """The query vector as JSON numbers; an empty or non-finite one is a SearchError."""
    values = vector_values(vector)
    if not values or not all(math.isfinite(v) for v in values):
        raise SearchError("the query vector is empty or not finite")
    return values


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
    filters: Filters | None = None,
    text: str | None = None,
    passage_weight: float = 0.0,
    rescore: bool = False,
    typed_filters: bool = False,
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
    passage_level, span_level = filter_clauses(filters, typed=typed_filters)
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
        "query_vector": query_vector_values(vector),
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


def pool_bound_searches(
    vector: Any, *, min_similarity: float, metric: str, candidates: int, filters: Filters | None,
    text: str | None, rescore: bool, typed_filters: bool = False,
) -> list[dict[str, Any]]:
    """An ``msearch`` body for what a hybrid search needs to know whether a passage outside its
    candidate pool could still enter its top k (:func:`pool_is_final`): the pool's last passage
    by best span (the ``candidates``-th of the span kNN a hybrid search pools), and the passage
    most similar to the query over every passage (no filter: a bound over more is still one)."""
    floor = knn_search_body(vector, min_similarity=min_similarity, metric=metric, limit=candidates,
                            num_candidates=candidates, filters=filters, text=text, rescore=rescore,
                            typed_filters=typed_filters)
    floor["knn"].pop("inner_hits", None)
    floor.update({"from": candidates - 1, "size": 1, "_source": False})
    best = {"field": PASSAGE_VECTOR_FIELD, "query_vector": query_vector_values(vector), "k": 1,
            "num_candidates": MIN_NUM_CANDIDATES}
    return [{}, floor, {}, {"size": 1, "_source": False, "knn": best}]


def pool_is_final(kth_score: float | None, floor_span: float | None, best_passage: float, weight: float) -> bool:
    """Whether the top k of a hybrid search's pool is the top k of all passages.

    The pool is the passages with the best spans; a passage left out has a best span of at most
    the pool's last one (``floor_span``; None: the pool holds every passage with a span above the
    threshold) and a passage cosine of at most the best there is, so its score is at most
    ``floor_span + λ · best_passage``. When the k-th score (None: fewer than k hits) reaches
    that, nothing outside can enter."""
    if floor_span is None:
        return True
    return kth_score is not None and kth_score >= floor_span + weight * best_passage


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
    knn: dict[str, Any] = {"field": SPAN_VECTOR_FIELD, "query_vector": query_vector_values(vector)}
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
        "query_vector": query_vector_values(vector),
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
    filters: Filters | None = None,
    boost: float = 0.1,
    passage_weight: float = 0.0,
    rescore: bool = False,
    typed_filters: bool = False,
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
    passage_level, span_level = filter_clauses(filters, typed=typed_filters)
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


def search_template_params(
    vector: Any, *, min_similarity: float, metric: str = "cosine", limit: int = 10,
    num_candidates: int | None = None,
) -> dict[str, Any]:
    """Parameters that make the stored template run the same query as :func:`knn_search_body`."""
    k = _check_k(limit)
    return {
        "query_vector": query_vector_values(vector),
        "k": k,
        "num_candidates": num_candidates_for(k, num_candidates),
        "similarity": knn_similarity(min_similarity, metric),
    }
