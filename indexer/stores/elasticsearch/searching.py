"""Running a checked search on Elasticsearch: one top-k kNN request, or exhaustive pages.

:meth:`~.store.ElasticsearchStore.search` checks the request and what the server can do, then
hands over to these generators, which only send requests and parse hits: nothing left here can
refuse the request.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, suppress
from typing import Any, Callable, Iterator

from elasticsearch import Elasticsearch, NotFoundError

from ...records import Hit
from ..base import ModelStamp, SearchRequest
from . import responses as rs
from .options import StoreOptions
from .paged_requests import exhaustive_search_body
from .search_requests import bm25_boost_search_body, knn_search_body

# ElasticsearchStore.errors: a context turning client errors into nerindex errors naming the step
Errors = Callable[..., AbstractContextManager[Any]]


def knn_hits(
    client: Elasticsearch, request: SearchRequest, stamp: ModelStamp, *,
    alias: str, options: StoreOptions, rescore: bool, errors: Errors,
) -> Iterator[Hit]:
    """The top ``request.limit`` hits of one nested kNN search (option ``hybrid``: plus BM25 boost)."""
    bm25_boost = options.hybrid and bool(request.text)  # the public option "hybrid": BM25 on text
    weight = float(request.passage_weight)
    common = dict(
        min_similarity=request.min_similarity,
        metric=stamp.similarity,
        limit=request.limit,
        num_candidates=options.num_candidates,
        filters=request.filters,
        passage_weight=weight,
        rescore=rescore,
    )
    if bm25_boost:
        body = bm25_boost_search_body(request.vector, text=request.text, boost=options.text_boost, **common)
    else:
        body = knn_search_body(request.vector, text=request.text, **common)
    with errors(f"search {alias!r}", search=True):
        try:
            response = client.search(index=alias, body=body, include_named_queries_score=bool(weight) or None)
        except NotFoundError:
            return
    # With BM25 in the score, _score cannot be read back as span + λ · passage: Hit.score
    # stays the best span there, and Elasticsearch's order (vector + BM25) is kept.
    hits = rs.parse_hits(
        response.body, scoring="knn", metric=stamp.similarity,
        min_similarity=request.min_similarity, passage_weight=0.0 if bm25_boost else weight,
    )
    # Otherwise rank by Hit.score: the best span, or span + λ · passage (hybrid scoring).
    ranked = hits if bm25_boost else rs.rank(hits)
    yield from ranked[: request.limit]


def exact_hits(
    client: Elasticsearch, request: SearchRequest, stamp: ModelStamp, *,
    alias: str, options: StoreOptions, limit: int | None, errors: Errors,
) -> Iterator[Hit]:
    """Every match (or the first ``limit``), scored exactly, one page per request through a
    point in time that is closed however the iteration ends."""
    keep_alive, page = options.keep_alive, options.page_size
    with errors(f"open a point in time on {alias!r}"):
        try:
            pit = client.open_point_in_time(index=alias, keep_alive=keep_alive).body["id"]
        except NotFoundError:
            return
    emitted = 0
    after: list[Any] | None = None
    try:
        while True:
            body = exhaustive_search_body(
                request.vector,
                min_similarity=request.min_similarity,
                filters=request.filters,
                text=request.text,
                size=page,
                pit_id=pit,
                keep_alive=keep_alive,
                search_after=after,
                passage_weight=float(request.passage_weight),
            )
            with errors(f"search {alias!r} exhaustively", search=True):
                response = client.search(body=body).body
            pit = response.get("pit_id", pit)
            for hit in rs.parse_hits(
                response, scoring="script", metric=stamp.similarity,
                min_similarity=request.min_similarity, passage_weight=float(request.passage_weight),
            ):
                yield hit
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
            after = rs.last_sort_values(response)
            if after is None or len(rs.raw_hits(response)) < page:
                return
    finally:
        with suppress(Exception):
            client.close_point_in_time(id=pit)
