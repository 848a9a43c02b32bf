"""Pure builders of the paged search bodies (golden-file tested): the exact exhaustive search and scans.

Both page with ``search_after``, past the 10,000 cap of kNN: the exhaustive search in a point in
time, the re-index scan on the id (its index refuses writes while it is read). The exhaustive
search scores every span exactly with a Painless ``script_score`` (:mod:`.similarity` has the
scripts), once over every span (the score) and once over the mentions (the gate and the marks);
with hybrid scoring (``passage_weight`` λ > 0) an outer ``script_score`` adds
λ · passage similarity.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..base import check_passage_weight
from ..filter_rules import Filters
from .index_requests import FILTER_FORMAT, PASSAGE_VECTOR_FIELD, SOURCE_FIELDS, SPAN_VECTOR_FIELD, SPANS_PATH
from .search_requests import (
    CANDIDATE, INNER_HITS_SIZE, best_span_inner_hits, filter_clauses, inner_hits, query_vector_values, text_filter,
)
from .similarity import SCRIPT_OFFSET, hybrid_exact_script_source, script_source


def passage_weight_query(
    query: dict[str, Any], vector: Any, *, passage_weight: float, source: str
) -> dict[str, Any]:
    """``script_score`` around ``query`` adding λ · passage similarity (its script is ``source``)."""
    return {
        "script_score": {
            "query": query,
            "script": {
                "source": source,
                "params": {"query_vector": query_vector_values(vector), "passage_weight": float(passage_weight)},
            },
        }
    }


def exact_spans(
    vector: Any, *, min_similarity: float, span_query: Mapping[str, Any], score_mode: str, inner: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``nested`` query over the spans ``span_query`` allows, each scored exactly by a
    ``script_score`` computing its cosine on the stored float vectors, with ``min_score`` dropping
    spans below the threshold; the passage scores by ``score_mode``."""
    return {
        "nested": {
            "path": SPANS_PATH,
            "score_mode": score_mode,
            "query": {
                "script_score": {
                    "query": dict(span_query),
                    "script": {
                        "source": script_source(SPAN_VECTOR_FIELD),
                        "params": {"query_vector": query_vector_values(vector)},
                    },
                    "min_score": float(min_similarity) + SCRIPT_OFFSET,
                }
            },
            "inner_hits": dict(inner),
        }
    }


def allowed_spans(span_level: list[dict[str, Any]], *, mentions: bool = False) -> dict[str, Any]:
    """The spans the span filters allow (all of them without any); with ``mentions``, only the
    mentions among them (``must_not`` :data:`~.search_requests.CANDIDATE`: a span written before
    ``spans.mention`` existed is a mention)."""
    clauses: dict[str, Any] = {}
    if span_level:
        clauses["filter"] = span_level
    if mentions:
        clauses["must_not"] = [dict(CANDIDATE)]
    return {"bool": clauses} if clauses else {"match_all": {}}


def exact_best_span(vector: Any, *, min_similarity: float, span_level: list[dict[str, Any]]) -> dict[str, Any]:
    """A passage's best span, mention or candidate, scored exactly (``score_mode: max``): the
    passage's score, and its ``best_span`` inner hit."""
    return exact_spans(vector, min_similarity=min_similarity, span_query=allowed_spans(span_level),
                       score_mode="max", inner=best_span_inner_hits())


def exact_mentions(
    vector: Any, *, min_similarity: float, span_level: list[dict[str, Any]], marks: int = INNER_HITS_SIZE
) -> dict[str, Any]:
    """The gate of the exhaustive search and its marks: the passage's mentions that pass the
    threshold, scored exactly, as (up to ``marks``) inner hits; a filter clause, so it adds nothing
    to the score."""
    return exact_spans(vector, min_similarity=min_similarity, span_query=allowed_spans(span_level, mentions=True),
                       score_mode="none", inner=inner_hits(marks))


def exact_marks_body(
    vector: Any, passage_ids: Sequence[str], *, marks: int, min_similarity: float, filters: Filters | None = None,
    pit_id: str | None = None, keep_alive: str = "2m",
) -> dict[str, Any]:
    """Every mark of these passages, up to ``marks`` each, scored exactly as the exhaustive search
    scores them (:func:`exact_mentions` with the search's span filters, restricted to their
    ``id`` s): for the hits of an exhaustive page that carried fewer marks than they have. In the
    page's point in time (``pit_id``), so the marks are of the passages the page returned: through
    the alias, a passage indexed again between the two requests showed the page's text with the
    new version's marks (the stale-answer audit)."""
    ids = list(dict.fromkeys(passage_ids))
    mentions = exact_mentions(vector, min_similarity=min_similarity, span_level=filter_clauses(filters)[1], marks=marks)
    body = {"size": len(ids), "_source": ["id"], "query": {"bool": {"filter": [{"terms": {"id": ids}}, mentions]}}}
    if pit_id is not None:
        body["pit"] = {"id": pit_id, "keep_alive": keep_alive}
    return body


def exhaustive_search_body(
    vector: Any,
    *,
    min_similarity: float,
    filters: Filters | None = None,
    text: str | None = None,
    size: int = 500,
    pit_id: str | None = None,
    keep_alive: str = "2m",
    search_after: Sequence[Any] | None = None,
    passage_weight: float = 0.0,
    typed_filters: int = FILTER_FORMAT,
    gated: bool = True,
) -> dict[str, Any]:
    """Every passage with a mention that passes the threshold, exactly, one page at a time.

    ``must``: the passage's best span, mention or candidate (:func:`exact_best_span`), which it
    scores as; ``filter``: a mention that passes the threshold (:func:`exact_mentions`, the marks),
    and the metadata and text restrictions. So a passage ranked by a candidate alone is not part
    of the ``--all`` answer, while one that is scores as in top-k. Paged with a point in time and
    ``search_after``, past the 10,000 cap of kNN. Span filters work on every version here.

    ``gated=False`` (a top-k search with a limit above the kNN cap): the marks' clause is a
    ``should`` clause (``score_mode: none``: it adds 0 and restricts nothing), so every passage
    whose best span passes the threshold is returned, as in top-k, marks and all.

    With ``passage_weight`` λ > 0 an outer ``script_score`` adds λ · (passage cos + 1) to that
    score (span cos + 1), so pages are sorted by the combined score, shifted by 1 + λ.
    """
    weight = check_passage_weight(passage_weight)
    passage_level, span_level = filter_clauses(filters, typed=typed_filters)
    spans = dict(min_similarity=min_similarity, span_level=span_level)
    restrictions = passage_level + ([text_filter(text)] if text else [])
    marks = exact_mentions(vector, **spans)
    boolean: dict[str, Any] = {"must": [exact_best_span(vector, **spans)]}
    if gated:
        boolean["filter"] = [marks, *restrictions]
    else:
        boolean.update({"should": [marks], "filter": restrictions} if restrictions else {"should": [marks]})
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
    # within a point in time, _shard_doc is the cheap tiebreak; without one, the passage id
    tiebreak = "_shard_doc" if pit_id is not None else "id"
    body["sort"] = [{"_score": {"order": "desc"}}, {tiebreak: {"order": "asc"}}]
    if search_after is not None:
        body["search_after"] = list(search_after)
    return body


def scan_body(*, size: int = 500, search_after: Sequence[Any] | None = None,
              source: Sequence[str] = SOURCE_FIELDS) -> dict[str, Any]:
    """One page of every passage (id, text, metadata; ``source`` names the fields) in id order, for
    re-indexing and for the store's list of stored ids.

    No point in time: the re-indexed index is refreshed and refuses writes while it is read, so
    ``search_after`` on the unique id is as steady, and nothing expires while a page of long
    passages is encoded (a point in time kept 5 minutes did not outlive one page of 1 MB passages,
    minutes each on a CPU: the run failed midway)."""
    body: dict[str, Any] = {
        "size": int(size),
        "_source": list(source),
        "query": {"match_all": {}},
        "sort": [{"id": {"order": "asc"}}],
        "track_total_hits": False,
    }
    if search_after is not None:
        body["search_after"] = list(search_after)
    return body
