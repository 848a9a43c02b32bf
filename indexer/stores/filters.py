"""Search restrictions of the embedded store as SQL: metadata filters, span filters, FTS5 text."""

from __future__ import annotations

import re
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

