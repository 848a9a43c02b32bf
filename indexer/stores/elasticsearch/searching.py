"""Running a checked search on Elasticsearch: one top-k kNN request, or exhaustive pages.

:meth:`~.store.ElasticsearchStore.search` checks the request and what the server can do, then
hands over to these generators, which only send requests and parse hits: nothing left here can
refuse the request.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Mapping, Sequence

from elasticsearch import BadRequestError, Elasticsearch, NotFoundError

from ...records import Hit
from ..base import ModelStamp, SearchRequest
from . import responses as rs
from .index_requests import FILTER_FORMAT
from .options import StoreOptions
from .paged_requests import exact_marks_body, exhaustive_search_body
from .search_requests import (
    INNER_HITS_SIZE, MARKS_WINDOW, MAX_NUM_CANDIDATES, QUANTIZED_MARGIN, bm25_boost_search_body, knn_search_body,
    marks_search_body, num_candidates_for, pool_bound_searches, pool_is_final,
)
from .similarity import cosine_from_knn_score

log = logging.getLogger(__name__)

# ElasticsearchStore.errors: a context turning client errors into nerindex errors naming the step
Errors = Callable[..., AbstractContextManager[Any]]
# what a warning was given for, once a process (see say_once)
_SAID: set[str] = set()


def knn_hits(
    client: Elasticsearch, request: SearchRequest, stamp: ModelStamp, *,
    index: str, options: StoreOptions, rescore: bool, errors: Errors, typed_filters: int = FILTER_FORMAT,
) -> Iterator[Hit]:
    """The top ``request.limit`` hits of one nested kNN search (option ``hybrid``: plus BM25 boost).

    ``rescore`` (a quantized index): a passage's ``_score`` may understate its best span (see
    :mod:`.search_requests`), so Elasticsearch's order and its cut at ``limit`` are not the answer's.
    A few more passages than the limit are fetched (:func:`fetch_for`) and ranked here by their best
    spans (``best_span`` inner hits, exact over all the passage's spans), so a passage whose
    ``_score`` is understated by less than the spread of scores between the limit-th and the last
    fetched passage keeps its place. Hybrid scoring's pool bound allows for the same slack.
    """
    bm25_boost = options.hybrid and bool(request.text)  # the public option "hybrid": BM25 on text
    weight = float(request.passage_weight)
    read_weight = 0.0 if bm25_boost else weight  # what _score is read back with (see _page)
    common = dict(
        min_similarity=request.min_similarity, metric=stamp.similarity, limit=request.limit,
        num_candidates=options.num_candidates, filters=request.filters, passage_weight=weight, rescore=rescore,
        typed_filters=typed_filters,
    )
    candidates = num_candidates_for(request.limit, options.num_candidates)
    fetch = fetch_for(request.limit) if rescore else None
    slack = QUANTIZED_MARGIN if rescore else 0.0
    best_passage: float | None = None  # the best passage cosine, once a search (_pool_bounds)
    short_pool = -1  # the size of the last pool that came back short of its candidates
    while True:
        common["num_candidates"] = candidates
        if bm25_boost:
            body = bm25_boost_search_body(request.vector, text=request.text, boost=options.text_boost, fetch=fetch, **common)
        else:
            body = knn_search_body(request.vector, text=request.text, fetch=fetch, **common)
        found = _page(client, index, body, request, stamp, errors, read_weight,
                      pool=candidates if weight and rescore else None)
        if found is None:
            return
        response, hits = found
        # Otherwise rank by Hit.score: the best span, or span + λ · passage (hybrid scoring).
        ranked = hits if bm25_boost else rs.rank(hits)
        # Hybrid scoring ranks a pool of the passages with the best spans: one outside it with a
        # closer passage vector may belong in the top k. Widen the pool until a bound says none
        # can, or up to Elasticsearch's cap: then the answer is approximate, and it says so.
        if bm25_boost or not weight:
            break
        kth = ranked[request.limit - 1].score if len(ranked) >= request.limit else None
        floor, best_passage, pooled = _pool_bounds(client, request, stamp, index, candidates, rescore, errors,
                                                   typed_filters, best_passage)  # fmt: skip
        if floor is None and pooled > short_pool and candidates < MAX_NUM_CANDIDATES:
            short_pool = pooled  # short: every match, or HNSW cut by the threshold (docs/elasticsearch.md)
        elif pool_is_final(kth, floor, best_passage, weight, slack=slack):
            break
        if candidates >= MAX_NUM_CANDIDATES:
            say_once(f"{index} pool", f"a hybrid top-{request.limit} search on {index} reached kNN's cap of {MAX_NUM_CANDIDATES} "
                      "candidates before its bound held: a passage ranked by its passage vector may be missing (--all is exact)")
            break
        candidates = min(MAX_NUM_CANDIDATES, 2 * candidates)
    yield from complete_marks(
        client, ranked[: request.limit], rs.cut_marks(response.body), request, stamp, index=index, errors=errors,
        exact=False, rescore=rescore, versions=rs.hit_versions(response.body),
    )


def _page(client: Elasticsearch, index: str, body: dict, request: SearchRequest, stamp: ModelStamp, errors: Errors,
          weight: float, *, pool: int | None = None) -> tuple[Any, list[Hit]] | None:
    """One top-k request and its hits that pass the threshold (None: no index). ``weight`` is 0 with
    BM25 in the score: ``_score`` cannot be read back as span + λ · passage there, so Hit.score
    stays the best span, and Elasticsearch's order (vector + BM25) is kept.

    ``pool`` (a hybrid search on a quantized index: its candidates): the span kNN reaches
    QUANTIZED_MARGIN under the threshold, and at λ > 0 passages just under it with close passage
    vectors can take the places fetched and are dropped here (an audit: an empty answer at λ 1);
    then every candidate of the pool comes back to be ranked."""
    with errors(f"search {index!r}", search=True):
        try:
            # seq_no_primary_term: which version of each passage the hits are (complete_marks)
            response = client.search(index=index, body={**body, "seq_no_primary_term": True},
                                     include_named_queries_score=bool(request.passage_weight) or None)
        except NotFoundError:
            return None
    hits = rs.parse_hits(response.body, scoring="knn", metric=stamp.similarity,
                         min_similarity=request.min_similarity, passage_weight=weight)
    if pool is not None and len(hits) < body["size"] <= len(rs.raw_hits(response.body)) < pool:
        return _page(client, index, {**body, "size": pool}, request, stamp, errors, weight) or (response, hits)
    return response, hits


@dataclass
class PointInTime:
    """An open point in time: Elasticsearch may answer any request in it with a new id, and the
    next request must send the latest."""

    id: str
    keep_alive: str

    def update(self, response: Mapping[str, Any]) -> None:
        self.id = response.get("pit_id", self.id)


def complete_marks(
    client: Elasticsearch, hits: Sequence[Hit], cut: Mapping[str, int], request: SearchRequest, stamp: ModelStamp, *,
    index: str, errors: Errors, exact: bool, rescore: bool = False,
    versions: Mapping[str, tuple[Any, Any, Any]] | None = None, pit: PointInTime | None = None,
) -> list[Hit]:
    """``hits``, each with every mark: the hits a response carried fewer marks of than they have
    (``cut``: passage id -> its marks, :func:`responses.cut_marks`) get theirs from one more
    request, so a passage marks the same mentions as in the embedded store: the exact Painless
    marks of the exhaustive search (``exact``, :func:`paged_requests.exact_marks_body`), or the
    top-k search's kNN marks (:func:`search_requests.marks_search_body`).

    The marks must be of the version of the passage whose text the hit shows (a passage indexed
    again between the two requests showed one version's text with the other's marks: marks inside
    words, the stale-answer audit). An exhaustive page asks in its point in time (``pit``), which
    sees the same versions. A top-k search has none: ``versions`` (:func:`responses.hit_versions`
    of its response) are compared with the marks', and a passage that changed keeps the marks its
    first response carried, with a warning.

    Elasticsearch returns at most ``index.max_inner_result_window`` inner hits a hit: 10,000 for an
    index made since nerindex 0.3.0, 100 (its default) for an older one, or what a user set; a
    passage with more keeps its best ones, and a warning says so once an index."""
    wanted = [h.id for h in hits if h.id in cut]
    if not wanted:
        return list(hits)
    response = _marks_response(client, wanted, max(cut[i] for i in wanted), request, stamp, index=index,
                               errors=errors, exact=exact, rescore=rescore, with_versions=versions is not None, pit=pit)
    scoring = "script" if exact else "knn"
    marks = {
        rs.hit_id(raw): tuple(rs.span_matches(raw, scoring=scoring, metric=stamp.similarity, min_similarity=request.min_similarity))
        for raw in rs.raw_hits(response)
    }
    changed = [] if versions is None else sorted(
        i for i, seen in rs.hit_versions(response).items() if i in marks and seen != versions.get(i))
    for passage_id in changed:
        del marks[passage_id]
    if changed:
        log.warning("%d passage(s) changed on %s between this search's requests (indexed again meanwhile; "
                    "%s%s): they show the marks their first response carried (up to %d)", len(changed), index,
                    ", ".join(changed[:3]), ", ..." if len(changed) > 3 else "", INNER_HITS_SIZE)
    missing = set(wanted) - set(marks) - set(changed)
    if missing:
        say_once(f"{index} marks", f"the rest of the marks of {len(missing)} passage(s) did not come back from "
                         f"{index}: they show their best {INNER_HITS_SIZE}")
    return [replace(h, spans=marks[h.id]) if h.id in marks else h for h in hits]


def _marks_response(
    client: Elasticsearch, wanted: list[str], most: int, request: SearchRequest, stamp: ModelStamp, *,
    index: str, errors: Errors, exact: bool, rescore: bool, with_versions: bool, pit: PointInTime | None,
) -> Mapping[str, Any]:
    """The response of :func:`complete_marks`' request for the marks of ``wanted`` (``most``: the
    most marks one of them has), asked again with the window an index refused a larger one with;
    ``with_versions``: its hits say which version of each passage they are (``seq_no_primary_term``)."""
    size = min(MARKS_WINDOW, most)
    while True:
        if exact:
            within = {"pit_id": pit.id, "keep_alive": pit.keep_alive} if pit is not None else {}
            body = exact_marks_body(request.vector, wanted, marks=size, min_similarity=request.min_similarity,
                                    filters=request.filters, **within)
        else:
            body = marks_search_body(request.vector, wanted, marks=size, min_similarity=request.min_similarity,
                                     metric=stamp.similarity, filters=request.filters, rescore=rescore)
        with errors(f"read the marks of {len(wanted)} passage(s) from {index!r}", search=True):
            try:
                if pit is not None:  # a point in time names its index itself
                    response = client.search(body=body).body
                    pit.update(response)
                else:
                    response = client.search(index=index, body={**body, "seq_no_primary_term": with_versions}).body
                break
            except BadRequestError as exc:
                window = rs.inner_hits_window(exc)
                if window is None or window >= size:
                    raise
                size = window
    if size < most:
        say_once(f"{index} window", f"index {index} gives at most {size} marks a passage (index.max_inner_result_window), and a "
                         f"passage here has {most}: it shows its best {size}"
                         + (f"; PUT {index}/_settings {{\"index.max_inner_result_window\": {MARKS_WINDOW}}} "
                            "or 'nerindex es reindex' lifts that" if size < MARKS_WINDOW else ""))
    return response


def say_once(key: str, message: str) -> None:
    """A warning about an index, once a process and ``key`` (the index, and what it is about): a
    search is repeated often."""
    if key not in _SAID:
        _SAID.add(key)
        log.warning(message)


def fetch_for(limit: int) -> int:
    """How many passages a top-k search on a quantized index fetches to rank itself: the limit and
    half as many again, at least 5 more (measured on CrossNER politics dev, 0.4.0's spans: 148
    of 4,000 passages had a ``_score`` under their best span, 99 % of them by less than 0.003)."""
    return min(MAX_NUM_CANDIDATES, limit + max(5, limit // 2))


def _pool_bounds(client: Elasticsearch, request: SearchRequest, stamp: ModelStamp, index: str, candidates: int,
                 rescore: bool, errors: Errors, typed_filters: int, best_passage: float | None = None,
                 ) -> tuple[float | None, float, int]:  # fmt: skip
    """(the pool's last best span, or None when the pool is short of ``candidates``; the best
    passage cosine; how many passages the pool holds): one ``msearch`` of
    :func:`pool_bound_searches`. The best passage depends on the query
    alone, so a widening round passes the first round's (``best_passage``) and asks for the floor only."""
    searches = pool_bound_searches(
        request.vector, min_similarity=request.min_similarity, metric=stamp.similarity, candidates=candidates,
        filters=request.filters, text=request.text, rescore=rescore, typed_filters=typed_filters,
    )
    if best_passage is not None:
        searches = searches[:2]  # the floor's header and body
    what = f"search {index!r} for the bounds of a hybrid search"
    with errors(what, search=True):
        response = client.msearch(index=index, searches=searches).body
    found = rs.msearch_hits(response, what)
    floor = found[0]
    floor_span = cosine_from_knn_score(floor[0]["_score"], stamp.similarity) if floor else None
    if best_passage is None:
        best_passage = cosine_from_knn_score(found[1][0]["_score"], stamp.similarity) if found[1] else 0.0
    pooled = rs.msearch_totals(response)[0]
    return floor_span, best_passage, candidates if pooled is None else pooled


def exact_hits(
    client: Elasticsearch, request: SearchRequest, stamp: ModelStamp, *,
    index: str, options: StoreOptions, limit: int | None, errors: Errors, typed_filters: int = FILTER_FORMAT,
) -> Iterator[Hit]:
    """Every match (``request.exhaustive``: the passages with a mention over the threshold), or the
    first ``limit`` passages whose best span passes it (a top-k search past the kNN cap), scored
    exactly, one page per request through a point in time that is closed however the iteration ends."""
    page = options.page_size
    with errors(f"open a point in time on {index!r}"):
        try:
            pit = PointInTime(client.open_point_in_time(index=index, keep_alive=options.keep_alive).body["id"],
                              options.keep_alive)
        except NotFoundError:
            return
    emitted = 0
    after: list[Any] | None = None
    try:
        while True:
            body = exhaustive_search_body(
                request.vector, min_similarity=request.min_similarity, filters=request.filters, text=request.text,
                size=page, pit_id=pit.id, keep_alive=pit.keep_alive, search_after=after,
                passage_weight=float(request.passage_weight), typed_filters=typed_filters, gated=request.exhaustive,
            )
            with errors(f"search {index!r} exhaustively", search=True):
                response = client.search(body=body).body
            pit.update(response)
            hits = rs.parse_hits(
                response, scoring="script", metric=stamp.similarity,
                min_similarity=request.min_similarity, passage_weight=float(request.passage_weight),
            )
            for hit in complete_marks(client, hits, rs.cut_marks(response), request, stamp, index=index, errors=errors,
                                      exact=True, pit=pit):
                yield hit
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
            after = rs.last_sort_values(response)
            if after is None or len(rs.raw_hits(response)) < page:
                return
    finally:
        with suppress(Exception):
            client.close_point_in_time(id=pit.id)
