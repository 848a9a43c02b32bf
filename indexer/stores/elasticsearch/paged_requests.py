"""Pure builders of the paged search bodies (golden-file tested): the exact exhaustive search and scans.

Both page with a point in time and ``search_after``, past the 10,000 cap of kNN. The exhaustive
search scores every span exactly with a Painless ``script_score`` (:mod:`.similarity` has the
scripts); with hybrid scoring (``passage_weight`` λ > 0) an outer ``script_score`` adds
λ · passage similarity.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..base import Filters, check_passage_weight
from .index_requests import PASSAGE_VECTOR_FIELD, SOURCE_FIELDS, SPAN_VECTOR_FIELD, SPANS_PATH
from .search_requests import filter_clauses, inner_hits, query_vector_values, text_filter
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


def exact_best_span(vector: Any, *, min_similarity: float, span_level: list[dict[str, Any]]) -> dict[str, Any]:
    """A passage's best span, scored exactly: a ``nested`` query (``score_mode: max``) over a
    ``script_score`` computing each (allowed) span's cosine on the stored float vectors, with
    ``min_score`` dropping spans below the threshold; the matching spans come back as inner hits."""
    span_query: dict[str, Any] = {"bool": {"filter": span_level}} if span_level else {"match_all": {}}
    return {
        "nested": {
            "path": SPANS_PATH,
            "score_mode": "max",
            "query": {
                "script_score": {
                    "query": span_query,
                    "script": {
                        "source": script_source(SPAN_VECTOR_FIELD),
                        "params": {"query_vector": query_vector_values(vector)},
                    },
                    "min_score": float(min_similarity) + SCRIPT_OFFSET,
                }
            },
            "inner_hits": inner_hits(),
        }
    }


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
    typed_filters: bool = False,
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
    passage_level, span_level = filter_clauses(filters, typed=typed_filters)
    nested = exact_best_span(vector, min_similarity=min_similarity, span_level=span_level)
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
    # within a point in time, _shard_doc is the cheap tiebreak; without one, the passage id
    tiebreak = "_shard_doc" if pit_id is not None else "id"
    body["sort"] = [{"_score": {"order": "desc"}}, {tiebreak: {"order": "asc"}}]
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
