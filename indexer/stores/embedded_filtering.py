"""Which rows a search's filters allow in the embedded store: metadata filters and the text
restriction (passage rowids), span filters (span rowids), and a cheap bound on how many passages
pass, all read through the search's own connection (its snapshot, ``EmbeddedStore._snapshot``).
The SQL is ``stores/filters.py``'s; ``indexed``: the store has the filter tables (layout 2 and on).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import numpy as np

from ..errors import SearchError
from . import filters as sql_filters
from . import segments
from .base import SearchRequest
from .filter_rules import Filters

SMALL_SELECTION = 2000  # a filter allowing at most this many passages: score them all exactly


def allowed(conn: sqlite3.Connection, request: SearchRequest, indexed: bool, *,
            among: np.ndarray | None = None) -> np.ndarray | None:
    """Passage rowids allowed by the metadata filters and text restriction (None: all), only
    of those ``among`` when given (read through ``conn``, the search's snapshot)."""
    metadata = request.filters.metadata
    if not metadata and not request.text:
        return None
    if among is not None and indexed and all(value is not None for _, value in metadata):
        # candidates checked on the filter index and FTS alone, not on the passage rows (cold
        # pages in a big store: 16 ms for a few hundred candidates at 10M spans)
        sql, params = sql_filters.candidates_allowed_sql(request.filters, request.text)
        return _rowids(conn, sql, [json.dumps(among.tolist()), *params])
    where: list[str] = []
    params: list[Any] = []
    if among is not None:
        where.append("passages.rowid IN (SELECT value FROM json_each(?))")
        params.append(json.dumps(among.tolist()))
    if metadata:
        if indexed:
            clause, fparams = sql_filters.indexed_filter_sql(request.filters, correlated=among is not None)
        else:
            clause, fparams = sql_filters.filter_sql(request.filters)
        where.append(clause)
        params.extend(fparams)
    if request.text:
        where.append("passages.rowid IN (SELECT rowid FROM passages_fts WHERE passages_fts MATCH ?)")
        params.append(sql_filters.fts_query(request.text))
    return _rowids(conn, "SELECT rowid FROM passages WHERE " + " AND ".join(where), params)


def _rowids(conn: sqlite3.Connection, sql: str, params: list[Any]) -> np.ndarray:
    """The passage rowids a filter query selects (a SearchError where SQLite refuses it)."""
    try:
        rows = conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        raise SearchError(f"cannot apply filters: {exc}") from exc
    return np.asarray([r[0] for r in rows], dtype=np.int64)


def allowed_bound(conn: sqlite3.Connection, request: SearchRequest, indexed: bool, limit: int) -> int | None:
    """At most how many passages the metadata filters and text restriction allow: the least of
    their counts, each on its own index, reading at most ``limit`` filter entries and
    ``SMALL_SELECTION + 1`` text matches (a text that matches more counts as that many);
    None where nothing can be counted (no filter tables, no text)."""
    filters = request.filters if indexed else Filters()
    queries = [*sql_filters.selection_bound_sql(filters, None, limit),
               *sql_filters.selection_bound_sql(Filters(), request.text, SMALL_SELECTION + 1)]
    counts = [conn.execute(sql, params).fetchone()[0] for sql, params in queries]
    return min(counts) if counts else None


def restricted(conn: sqlite3.Connection, vec: segments.SegmentSet, request: SearchRequest, indexed: bool) -> np.ndarray | bool:
    """A mask of the spans the filters and the text restriction allow (True: all of them)."""
    keep: np.ndarray | bool = True
    passages = allowed(conn, request, indexed)
    if passages is not None:
        keep = np.isin(vec.passage, passages)
    spans = allowed_spans(conn, request, indexed)
    if spans is not None:
        keep = keep & np.isin(vec.span, spans)
    return keep


def allowed_spans(conn: sqlite3.Connection, request: SearchRequest, indexed: bool) -> np.ndarray | None:
    """Span rowids (ascending) the span filters allow (None: no span filter)."""
    if not request.filters.spans:
        return None
    span_sql = sql_filters.indexed_span_filter_sql if indexed else sql_filters.span_filter_sql
    sql, params = span_sql(request.filters)
    return np.sort(np.asarray([r[0] for r in conn.execute(sql, params)], dtype=np.int64))
