"""Search restrictions of the embedded store as SQL: metadata filters, span filters, FTS5 text."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from ..errors import SearchError

_FIELD = re.compile(r"^[A-Za-z0-9_.\-]+$")


def fts_query(text: str) -> str:
    """A safe FTS5 query: every word must occur (each quoted, so no operator syntax leaks in)."""
    words = [w for w in re.findall(r"\w+", text, flags=re.UNICODE)]
    if not words:
        raise SearchError(f"text restriction {text!r} has no words to match")
    return " ".join('"' + w.replace('"', '""') + '"' for w in words)


SPAN_FILTERS = ("spans.labels", "spans.text")


def split_filters(filters: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata filters, span filters): keys ``spans.labels``/``spans.text`` restrict spans."""
    passage_level: dict[str, Any] = {}
    span_level: dict[str, Any] = {}
    for key, value in filters.items():
        if key.startswith("spans."):
            if key not in SPAN_FILTERS:
                raise SearchError(f"cannot filter on span field {key!r} (span filters: {', '.join(SPAN_FILTERS)})")
            span_level[key] = value
        else:
            passage_level[key] = value
    return passage_level, span_level


def _values(key: str, value: Any) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple, set)) else [value]
    if not values:
        raise SearchError(f"filter field {key!r} has no values")
    return values


def filter_sql(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL condition on ``passages.fields`` (JSON): each key must equal one of its values.

    A field holding a list matches when any element matches; values compare as text, so
    ``--where year=2020`` matches a stored number 2020; ``None`` means the field is absent.
    """
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in filters.items():
        if not _FIELD.match(key):
            raise SearchError(f"filter field {key!r}: use letters, digits, '_', '-' or '.'")
        if value is None:
            clauses.append(f"json_extract(passages.fields, '$.\"{key}\"') IS NULL")
            continue
        values = _values(key, value)
        marks = ",".join("?" for _ in values)
        clauses.append(
            f"EXISTS (SELECT 1 FROM json_each(passages.fields, '$.\"{key}\"') "
            f"WHERE CAST(value AS TEXT) IN ({marks}))"
        )
        params.extend(_as_text(v) for v in values)
    return " AND ".join(clauses), params


def span_filter_sql(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """SQL selecting the rowids of spans allowed by ``spans.labels`` / ``spans.text`` filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in filters.items():
        values = [_as_text(v) for v in _values(key, value)]
        marks = ",".join("?" for _ in values)
        if key == "spans.labels":
            clauses.append(f"EXISTS (SELECT 1 FROM json_each(spans.labels) WHERE value IN ({marks}))")
        else:
            clauses.append(
                "(SELECT substr(p.text, spans.start + 1, spans.end - spans.start) "
                f"FROM passages AS p WHERE p.rowid = spans.passage) IN ({marks})"
            )
        params.extend(values)
    return "SELECT rowid FROM spans WHERE " + " AND ".join(clauses), params


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# ---------------------------------------------------------------------------- indexed filters
#
# Metadata values and span labels also sit in two indexed tables, filled by triggers (so every
# writer fills them, whatever its version) and back-filled once for a store made before them. A
# filtered search then reads the matching rows of an index instead of parsing every passage's
# JSON. A store that cannot be migrated (read-only) keeps filtering over the JSON as before.

INDEX_FLAG = "filter_index"
_FILL_FIELDS = """
INSERT INTO passage_fields(passage, key, value)
SELECT p.rowid, f.key, CAST(f.value AS TEXT) FROM passages AS p, json_each(p.fields) AS f
WHERE {where} f.type NOT IN ('array', 'object')
UNION ALL
SELECT p.rowid, f.key, CAST(e.value AS TEXT) FROM passages AS p, json_each(p.fields) AS f, json_each(f.value) AS e
WHERE {where} f.type IN ('array', 'object');
"""
INDEX_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS passage_fields (passage INTEGER NOT NULL, key TEXT NOT NULL, value TEXT)",
    "CREATE INDEX IF NOT EXISTS passage_fields_by_value ON passage_fields(key, value, passage)",
    "CREATE INDEX IF NOT EXISTS passage_fields_by_passage ON passage_fields(passage)",
    "CREATE TABLE IF NOT EXISTS span_labels (span INTEGER NOT NULL, label TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS span_labels_by_label ON span_labels(label, span)",
    "CREATE INDEX IF NOT EXISTS span_labels_by_span ON span_labels(span)",
    "CREATE TRIGGER IF NOT EXISTS passages_fields_add AFTER INSERT ON passages BEGIN "
    + _FILL_FIELDS.format(where="p.rowid = new.rowid AND") + " END",
    "CREATE TRIGGER IF NOT EXISTS passages_fields_drop AFTER DELETE ON passages "
    "BEGIN DELETE FROM passage_fields WHERE passage = old.rowid; END",
    "CREATE TRIGGER IF NOT EXISTS spans_labels_add AFTER INSERT ON spans "
    "BEGIN INSERT INTO span_labels(span, label) SELECT new.rowid, value FROM json_each(new.labels); END",
    "CREATE TRIGGER IF NOT EXISTS spans_labels_drop AFTER DELETE ON spans "
    "BEGIN DELETE FROM span_labels WHERE span = old.rowid; END",
]
BACKFILL = [
    "DELETE FROM passage_fields",
    _FILL_FIELDS.format(where=""),
    "DELETE FROM span_labels",
    "INSERT INTO span_labels(span, label) SELECT s.rowid, l.value FROM spans AS s, json_each(s.labels) AS l",
]


def ensure_index(conn) -> bool:
    """Create and back-fill the filter tables once (one transaction); False when the store
    cannot be changed (read-only), which leaves filtering over the JSON."""
    flagged = "SELECT 1 FROM meta WHERE key = ? AND value = '1'"
    if conn.execute(flagged, (INDEX_FLAG,)).fetchone():
        return True
    try:
        conn.execute("BEGIN IMMEDIATE")
        if not conn.execute(flagged, (INDEX_FLAG,)).fetchone():
            for statement in INDEX_SCHEMA + BACKFILL:
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, '1')", (INDEX_FLAG,))
        conn.execute("COMMIT")
    except sqlite3.OperationalError:  # read-only, locked for long, full: filter as before
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return False
    return True


def indexed_filter_sql(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """Like :func:`filter_sql`, through the ``passage_fields`` index (``None``: over the JSON)."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in filters.items():
        if value is None or not _FIELD.match(key):
            clause, more = filter_sql({key: value})
        else:
            values = [_as_text(v) for v in _values(key, value)]
            clause = (
                "passages.rowid IN (SELECT passage FROM passage_fields WHERE key = ? "
                f"AND value IN ({','.join('?' for _ in values)}))"
            )
            more = [key, *values]
        clauses.append(clause)
        params.extend(more)
    return " AND ".join(clauses), params


def indexed_span_filter_sql(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    """Like :func:`span_filter_sql`, with ``spans.labels`` through the ``span_labels`` index."""
    labels = filters.get("spans.labels")
    rest = {k: v for k, v in filters.items() if k != "spans.labels"}
    if labels is None:
        return span_filter_sql(rest)
    values = [_as_text(v) for v in _values("spans.labels", labels)]
    sql = f"SELECT span FROM span_labels WHERE label IN ({','.join('?' for _ in values)})"
    if not rest:
        return sql, values
    other, params = span_filter_sql(rest)
    return f"{other} AND rowid IN ({sql})", [*params, *values]
