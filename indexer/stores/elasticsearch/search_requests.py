"""Pure builders of the top-k search bodies (golden-file tested): nested span kNN, BM25 boost, filters.

Each function maps a query (type vector, threshold, :class:`~indexer.stores.filter_rules.Filters`, text,
options) to the dict Elasticsearch expects, so the bodies can be checked byte for byte and against
the client's own DSL classes without a cluster. The filters arrive checked; here they are only
translated into clauses.

Every top-k body is one ``bool`` query (:func:`span_knn_query`): a nested span kNN over every span
(mentions and candidates, ``EncodedSpan.mention``) ranks the passages by their best span, and a
second nested clause over the mentions only, which neither scores nor restricts, carries the
marks as its inner hits (:func:`marked_mentions`).

Hybrid scoring (``passage_weight`` λ > 0) adds λ · cos(type vector, passage ``vector``) natively:
a passage kNN boosted by λ next to the span kNN (see :func:`hybrid_knn_query`); with λ = 0 every
body is exactly what it was without the option.

``rescore`` (servers >= 8.18, quantized ``index_options``) has the kNN rescore its candidates with
the stored float vectors, so scores are exact cosines, not int8 estimates. But a nested kNN keeps
one span per passage, chosen by the int8 estimate, and rescores that one: where two spans of a
passage are within the estimate's error of each other, the passage's ``_score`` is the lesser one's
exact cosine. So on a quantized index the kNN ``similarity`` is lowered by
:data:`QUANTIZED_MARGIN` and a few more passages are fetched than asked for (``fetch``); the
caller reads each passage's best span from its ``best_span`` inner hit (exact, over all its
spans), applies the threshold to it and to the marks, and ranks (``searching.knn_hits``).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ...errors import SearchError
from ..base import check_passage_weight, match_text, written_words
from ..filter_rules import Filters, FilterValue
from ..filters import field_values
from .index_requests import (
    FILTER_FORMAT, FILTER_TEXTS, FILTER_TYPED, MARKED_FILTER_FORMAT, MENTION_FIELD, PASSAGE_VECTOR_FIELD, SOURCE_FIELDS, SPAN_VECTOR_FIELD, SPANS_PATH, vector_values,
)
from .similarity import knn_score_from_cosine, knn_similarity, linear_knn_score

INNER_HIT_FIELDS = ["spans.start", "spans.end", "spans.text", "spans.labels"]
# The marks: a hit's mentions that pass the threshold, best first.
INNER_HITS_NAME = "spans"
# A hit's best span, mention or candidate: what its score is read from.
BEST_SPAN_INNER_HITS = "best_span"
# A candidate span. Spans written before ``spans.mention`` existed have no value and are mentions,
# so a query keeps mentions by excluding this, never by asking for ``true``.
CANDIDATE = {"term": {MENTION_FIELD: False}}
# The marks one search response carries per hit (Elasticsearch's default
# index.max_inner_result_window): a hit with more gets them all from one more request
# (:func:`marks_search_body`), up to MARKS_WINDOW.
INNER_HITS_SIZE = 100
# The most marks a passage can carry: index.max_inner_result_window of an index made since nerindex
# 0.3.0 (the passages.json template); an older index has Elasticsearch's default, 100.
MARKS_WINDOW = 10_000
MAX_NUM_CANDIDATES = 10_000
MIN_NUM_CANDIDATES = 300  # 0.4.0 stores ~2x the spans per passage: 100 found 0.975 of the exact top 10s (docs/elasticsearch.md)
# How far, in cosine, the kNN on a quantized index reaches under the threshold, since a passage's
# ``_score`` there may sit under its best span's (measured on CrossNER politics dev with model
# 0.4.0: 99 % of the gaps under 0.003, 4 of 4,000 passages over 0.02). A slack, never a score.
QUANTIZED_MARGIN = 0.02
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


def _metadata_clause(key: str, value: FilterValue, typed: int) -> dict[str, Any]:
    """One metadata filter. ``typed``: the index keeps each metadata value as the text the
    embedded store compares (``filter_texts.<key>``, :func:`index_requests.filter_texts`), so the
    filter is the embedded store's rule (``stores.filters.field_values``), not the field type
    Elasticsearch guessed from the first passage that had the field. Absence (None) too: no
    ``filter_texts.<key>`` is the embedded store's absent field (missing, null, ``[]``,
    ``[null]``, an object: ``stores.filters.stored_values``)."""
    if not typed:
        return _value_clause(f"fields.{key}", value)
    field = FILTER_TYPED if typed >= FILTER_FORMAT else FILTER_TEXTS  # format 3 keeps the marked texts apart
    if value is None:
        # No term at all, not ``exists``: on a key no passage has a value for, ``exists`` falls
        # back to the object prefix (``filter_texts.meta.*``) and finds the passages with key
        # ``meta.lang``; a prefix "" matches any term of the field itself ("" included), only it.
        return {"bool": {"must_not": [{"prefix": {f"{field}.{key}": {"value": ""}}}]}}
    return {"terms": {f"{field}.{key}": field_values(value, marked=typed >= MARKED_FILTER_FORMAT)}}


def filter_clauses(filters: Filters | None, *, typed: int = FILTER_FORMAT) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
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
    """Lexical restriction: every written word of ``text`` must occur in the passage text, the
    terms the analyzer splits it into next to each other ("state-of-the-art" as a phrase, as the
    embedded store's FTS5 query has it: ``filters.fts_query``); its symbols are no terms, as there
    (:func:`..base.match_text`)."""
    phrases = [{"match_phrase": {"text": match_text(word)}} for word in written_words(text)]
    return phrases[0] if len(phrases) == 1 else {"bool": {"filter": phrases}}


def text_boost(text: str, boost: float) -> dict[str, Any]:
    """BM25 boost mode: BM25 on the passage text, added to the vector score (no restriction)."""
    return {"match": {"text": {"query": match_text(text), "boost": float(boost)}}}


# --- search bodies ------------------------------------------------------------------------------


def inner_hits(size: int = INNER_HITS_SIZE) -> dict[str, Any]:
    """The marks of each passage (its matching mentions), best first, without their vectors."""
    return {
        "name": INNER_HITS_NAME,
        "size": int(size),
        "_source": False,
        "fields": list(INNER_HIT_FIELDS),
    }


def best_span_inner_hits() -> dict[str, Any]:
    """The best matching span of each passage, mention or candidate: its score is the passage's
    (whose own ``_score`` can lag it on a quantized index, see :mod:`.responses`), and where it is
    a candidate, the hit names it (``Hit.ranked_by``: its start, end, text, labels and flag)."""
    return {"name": BEST_SPAN_INNER_HITS, "size": 1, "_source": False, "fields": [*INNER_HIT_FIELDS, MENTION_FIELD]}


def mentions_only(span_query: Mapping[str, Any]) -> dict[str, Any]:
    """A span-level query restricted to mentions (``must_not`` :data:`CANDIDATE`, so a span
    without the field, written before it existed, stays a mention)."""
    return {"bool": {"must": [dict(span_query)], "must_not": [dict(CANDIDATE)]}}


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


def knn_clauses(filters: Filters | None, text: str | None, *, typed: int = FILTER_FORMAT) -> list[dict[str, Any]]:
    """The kNN pre-filters of a search: metadata, span and text restrictions, each clause on its
    own (span clauses are only honoured by Elasticsearch >= 9.2, which the store checks first)."""
    passage_level, span_level = filter_clauses(filters, typed=typed)
    return passage_level + span_level + ([text_filter(text)] if text else [])


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
    typed_filters: int = FILTER_FORMAT,
    fetch: int | None = None,
) -> dict[str, Any]:
    """Top-k passages ranked by their best span: :func:`span_knn_query` with ``k = limit``, or
    ``k = fetch`` (>= limit) passages for the caller to rank and cut (a quantized index).

    ``similarity`` (the threshold, in the metric's raw units) drops spans below it, and since
    Elasticsearch 8.15 also filters the inner hits, so each hit carries exactly its matching spans.
    Metadata filters and the text restriction are kNN pre-filters (:func:`knn_clauses`). A query,
    not the top-level ``knn`` section: that section carries one set of inner hits, and the marks
    need their own (:func:`marked_mentions`).

    With ``passage_weight`` λ > 0 the span kNN runs next to a passage kNN boosted by λ: see
    :func:`hybrid_knn_query`.
    """
    k = max(_check_k(limit), fetch or 0)
    weight = check_passage_weight(passage_weight)
    options = dict(
        min_similarity=min_similarity, metric=metric, num_candidates=num_candidates_for(k, num_candidates),
        clauses=knn_clauses(filters, text, typed=typed_filters), rescore=rescore,
    )
    if not weight:
        return {"size": k, "_source": list(SOURCE_FIELDS), "query": span_knn_query(vector, k=k, **options)}
    query = hybrid_knn_query(vector, passage_weight=weight, **options)
    # Elasticsearch orders by span + λ · passage kNN score; unless that is the cosine order
    # (l2_norm, max_inner_product), every candidate comes back to be ranked by the caller (and so
    # it does when passages under the threshold took the first places: searching.knn_hits).
    size = k if linear_knn_score(metric) else options["num_candidates"]
    return {"size": size, "_source": list(SOURCE_FIELDS), "query": query}


def pool_bound_searches(
    vector: Any, *, min_similarity: float, metric: str, candidates: int, filters: Filters | None,
    text: str | None, rescore: bool, typed_filters: int = FILTER_FORMAT,
) -> list[dict[str, Any]]:
    """An ``msearch`` body for what a hybrid search needs to know whether a passage outside its
    candidate pool could still enter its top k (:func:`pool_is_final`): the pool's last passage
    by best span (the ``candidates``-th of the span kNN a hybrid search pools; every span counts,
    as in the ranking), and the passage most similar to the query over every passage (no filter:
    a bound over more is still one), asked with kNN's most candidates: with 300, an audit's index of
    400 passages sharing one vector hid the one passage whose vector was the query's (HNSW over
    duplicates), the bound held too early and that passage, first by its hybrid score, was missing."""
    pool = span_knn(vector, min_similarity=min_similarity, metric=metric, num_candidates=candidates,
                    clauses=knn_clauses(filters, text, typed=typed_filters), k=candidates, rescore=rescore)
    # with the pool's size: a pool short of ``candidates`` may be every match or HNSW falling short
    floor = {"from": candidates - 1, "size": 1, "_source": False, "track_total_hits": True, **pool}
    best = {"field": PASSAGE_VECTOR_FIELD, "query_vector": query_vector_values(vector), "k": 1,
            "num_candidates": MAX_NUM_CANDIDATES}
    if rescore:  # an int4 estimate understated the best passage by 0.023, past the slack (a review)
        best["rescore_vector"] = rescore_vector(1, MAX_NUM_CANDIDATES)
    return [{}, floor, {}, {"size": 1, "_source": False, "knn": best}]


def pool_is_final(
    kth_score: float | None, floor_span: float | None, best_passage: float, weight: float, *, slack: float = 0.0,
) -> bool:
    """Whether the top k of a pool of passages (ranked by the caller) is the top k of all passages.

    The pool is the passages with the best spans; a passage left out has a best span of at most
    the pool's last one (``floor_span``; None: the pool holds every passage with a span above the
    threshold, which the caller has made sure of: ``knn_hits`` widens a short pool until it stops
    growing) plus ``slack`` (on a quantized index the last one's ``_score`` may understate its
    best span by up to :data:`QUANTIZED_MARGIN`), and a passage cosine of at most the best there
    is, itself an estimate on a quantized index (the same slack), so its score is at most
    ``floor_span + slack + λ · (best_passage + slack)``. When the k-th score (None: fewer than k
    hits) reaches that, nothing outside can enter."""
    if floor_span is None:
        return True
    return kth_score is not None and kth_score >= floor_span + slack + weight * (best_passage + slack)


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
    """A ``knn`` query on ``spans.vector`` (inside a ``nested`` query on ``spans``; its inner
    ``knn`` dict is also the top-level ``knn`` section of the same search)."""
    knn: dict[str, Any] = {"field": SPAN_VECTOR_FIELD, "query_vector": query_vector_values(vector)}
    if k is not None:
        knn["k"] = int(k)
    knn["num_candidates"] = int(num_candidates)
    # quantized: the slack of QUANTIZED_MARGIN, the exact threshold applied to the best span after
    knn["similarity"] = knn_similarity(min_similarity - (QUANTIZED_MARGIN if rescore else 0.0), metric)
    if rescore:
        knn["rescore_vector"] = rescore_vector(int(k or num_candidates), int(num_candidates))
    if clauses:
        knn["filter"] = [dict(clause) for clause in clauses]
    return {"knn": knn}


def nested_span_knn(vector: Any, **options: Any) -> dict[str, Any]:
    """:func:`span_knn` inside a ``nested`` query: a passage scores as its best span, mention or
    candidate (``score_mode: max``), which comes back as its one ``best_span`` inner hit."""
    return {
        "nested": {
            "path": SPANS_PATH,
            "score_mode": "max",
            "query": span_knn(vector, **options),
            "inner_hits": best_span_inner_hits(),
        }
    }


def marked_mentions(vector: Any, *, marks: int = INNER_HITS_SIZE, **options: Any) -> dict[str, Any]:
    """The marks of each top-k hit: its mentions that pass the threshold, as the inner hits of a
    nested clause that neither scores (``score_mode: none``) nor restricts (a ``should`` clause).

    Its kNN is the ranking clause's (:func:`nested_span_knn`), with the same options, so it finds
    the same passages; Elasticsearch computes a found passage's inner hits over all its spans, by
    exact similarity, and here over its mentions only. So candidates never take a mention's place
    among the ``marks`` inner hits, and a hit ranked by a candidate alone has none.
    """
    return {
        "nested": {
            "path": SPANS_PATH,
            "score_mode": "none",
            "query": mentions_only(span_knn(vector, **options)),
            "inner_hits": inner_hits(marks),
        }
    }


def marks_search_body(
    vector: Any,
    passage_ids: Sequence[str],
    *,
    marks: int,
    min_similarity: float,
    metric: str,
    filters: Filters | None = None,
    rescore: bool = False,
) -> dict[str, Any]:
    """Every mark of these passages, up to ``marks`` each: :func:`marked_mentions`, its kNN
    pre-filtered to their ``id`` s and to the search's span filters (the only filters that decide
    which of a passage's mentions are marks; the passages are chosen already).

    For the top-k hits a search response carried fewer marks of than they have (the inner hits'
    ``total`` over their :data:`INNER_HITS_SIZE`): one more request instead of every search asking
    for up to :data:`MARKS_WINDOW` inner hits per hit, which Elasticsearch allocates up front.
    ``num_candidates`` is the most kNN allows, so the few passages the filter leaves are searched
    in full (a review found near-duplicate passages dropped at the default).
    """
    ids = list(dict.fromkeys(passage_ids))
    clauses = [*filter_clauses(filters)[1], {"terms": {"id": ids}}]
    options = dict(min_similarity=min_similarity, metric=metric, num_candidates=MAX_NUM_CANDIDATES,
                   clauses=clauses, k=len(ids), rescore=rescore)  # fmt: skip
    # as in the top-k search (:func:`span_knn_query`): the passages are matched by their best span,
    # mention or candidate, and the marks are the inner hits of a clause that does not restrict.
    # With the marks clause alone, a passage whose best span is a candidate matched nothing (its
    # kNN keeps that span, then drops it as a candidate) and kept only its first 100 marks (an audit)
    match = {"nested": {"path": SPANS_PATH, "score_mode": "max", "query": span_knn(vector, **options)}}
    query = {"bool": {"must": [match], "should": [marked_mentions(vector, marks=marks, **options)]}}
    return {"size": len(ids), "_source": ["id"], "query": query}


def span_knn_query(vector: Any, *, should: Sequence[Mapping[str, Any]] = (), **options: Any) -> dict[str, Any]:
    """The query of every top-k search: ``must`` the best span (:func:`nested_span_knn`),
    ``should`` the marks (:func:`marked_mentions`) and any score terms (``should``)."""
    marks = marked_mentions(vector, **options)
    return {"bool": {"must": [nested_span_knn(vector, **options)], "should": [marks, *map(dict, should)]}}


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

    :func:`span_knn_query` with ``k = num_candidates`` (the candidate pool the top-level ``knn``
    section gathers internally), so that a passage with a weaker best span but a closer passage
    vector can still overtake within that pool, and with the passage kNN clauses
    (:func:`passage_weight_clauses`) among its ``should`` clauses. Which passages match and which
    spans are marked depend on ``similarity`` alone. ``_score`` = span kNN score + λ · passage kNN
    score.
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
    return span_knn_query(vector, should=should, **options)


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
    typed_filters: int = FILTER_FORMAT,
    fetch: int | None = None,
) -> dict[str, Any]:
    """BM25 boost mode: the nested kNN must match (same threshold), BM25 on ``text`` adds to the score.
    ``fetch`` (>= limit): as :func:`knn_search_body`.

    The span kNN stays the required clause of :func:`span_knn_query`, BM25 one more ``should``
    clause, so a passage that only matches the words is never returned. Summing the scores needs
    no licence (RRF would).

    With ``passage_weight`` λ > 0 the passage kNN clauses of :func:`hybrid_knn_query` join the
    ``should`` clauses, so the order is span + λ · passage kNN score plus the BM25 term.
    """
    k = max(_check_k(limit), fetch or 0)
    weight = check_passage_weight(passage_weight)
    options = dict(
        min_similarity=min_similarity, metric=metric, num_candidates=num_candidates_for(k, num_candidates),
        clauses=knn_clauses(filters, None, typed=typed_filters), rescore=rescore,
    )
    if weight:
        query = hybrid_knn_query(vector, passage_weight=weight, **options)
        query["bool"]["should"].append(text_boost(text, boost))
    else:
        # k = size (Elasticsearch's default, written out for the rescore's oversample): BM25
        # re-orders the top passages by span.
        query = span_knn_query(vector, k=k, should=[text_boost(text, boost)], **options)
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
