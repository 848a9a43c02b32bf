"""Search restrictions of the embedded store as SQL: metadata filters, span filters, FTS5 text.

The restrictions arrive checked (:class:`~.filter_rules.Filters`, :class:`~.base.SearchRequest`): keys are
safe to quote into a JSON path and every value is a plain scalar, so this module only translates.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sqlite3
import threading
from typing import Any

from .base import text_words, written_words
from .filter_rules import BOOLEAN_MARK, NUMBER_MARK, Filters, FilterScalar, FilterValue


def fts_query(text: str) -> str:
    """A safe FTS5 query: every word must occur (each quoted, so no operator syntax leaks in), and
    the pieces the index splits one written word into ("U.S.", "don't", "3.14") next to each other,
    as a phrase. An audit: they were required anywhere in the passage, so "U.S." found "U-boat s",
    "don't" a "don" and a "t" far apart, and "S.S.R." passages holding no such word."""
    return " ".join('"' + " ".join(text_words(word)).replace('"', '""') + '"' for word in written_words(text))


def _values(value: FilterValue) -> list[FilterScalar]:
    return list(value) if isinstance(value, tuple) else [value]  # type: ignore[list-item]


def _field_sql(key: str, value: FilterValue) -> tuple[str, list[Any]]:
    """One metadata filter over ``passages.fields`` (JSON)."""
    if value is None:  # absent: no value a filter compares (:func:`stored_values`)
        return f"NOT EXISTS ({_scalars_sql(key)})", []
    values = field_values(value)
    marks = ",".join("?" for _ in values)
    return f"EXISTS ({_scalars_sql(key)} AND {_stored('value', 'type')} IN ({marks}))", values


def _scalars_sql(key: str) -> str:
    """The JSON scalars a metadata field holds (:func:`stored_values`), as ``json_each`` rows: the
    field itself, or each scalar element of a list; none of null, of an object (``json_each``
    would walk its members) or of a list inside a list."""
    path = f"'$.\"{key}\"'"
    return (f"SELECT 1 FROM json_each(passages.fields, {path}) WHERE json_type(passages.fields, {path}) <> 'object' "
            f"AND type NOT IN ('array', 'object', 'null') AND NOT (type = 'text' AND {_marked('value')})")


def _marked(value: str) -> str:
    """SQL: whether a stored text starts with a type mark. No writer takes such a string now
    (``filter_rules.fields_problem``), but a store filled before holds them; they are no value a
    filter compares, or ``code=7`` found the string "\ufdd07" as the number (an upgrade audit)."""
    return f"substr({value}, 1, 1) IN (char({ord(NUMBER_MARK)}), char({ord(BOOLEAN_MARK)}))"


def _stored(value: str, kind: str) -> str:
    """SQL for a stored JSON scalar as the text filters compare (:func:`stored_text`): a string as
    it is (NULL where it starts with a mark: :func:`_marked`), a boolean as :data:`BOOLEAN_MARK`
    ``true``/``false``, a number as :data:`NUMBER_MARK` and SQLite's text of it. Why the marks:
    ``filter_rules`` (an audit: ``code=007`` matched the strings "7" and "7.0", ``version=1.10``
    the string "1.1", ``flag=True`` the string "true")."""
    number, boolean = f"char({ord(NUMBER_MARK)})", f"char({ord(BOOLEAN_MARK)})"
    return (f"CASE {kind} WHEN 'true' THEN {boolean} || 'true' WHEN 'false' THEN {boolean} || 'false' "
            f"WHEN 'integer' THEN {number} || CAST({value} AS TEXT) WHEN 'real' THEN {number} || CAST({value} AS TEXT) "
            f"WHEN 'text' THEN CASE WHEN {_marked(value)} THEN NULL ELSE {value} END ELSE CAST({value} AS TEXT) END")


def filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    """SQL condition on ``passages.fields`` (JSON): each metadata key must equal one of its values.

    A field holding a list matches when any element matches; values compare as text, so
    ``--where year=2020`` matches a stored number 2020, and numbers in every form SQLite writes
    them (:func:`field_texts`); ``None`` means the field is absent: it holds no value a filter
    compares (missing, null, an empty list, a list of nulls, an object: :func:`stored_values`).
    """
    return _joined(_field_sql(key, value) for key, value in filters.metadata)


def span_filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    """SQL selecting the rowids of spans allowed by the ``spans.labels`` / ``spans.text`` filters."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, value in filters.spans:
        values = [_as_text(v) for v in _values(value)]
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


def _joined(parts: Any) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for clause, more in parts:
        clauses.append(clause)
        params.extend(more)
    return " AND ".join(clauses), params


def _as_text(value: FilterScalar) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_render: dict[int, sqlite3.Connection] = {}  # by process: a connection is not to cross a fork
_render_lock = threading.Lock()


def _sqlite_text(number: int | float) -> str:
    """A number as SQLite writes it (``CAST(value AS TEXT)``: 15 significant digits, ``1.0e-05``),
    asked of SQLite itself, since that is how stored JSON numbers are compared."""
    with _render_lock:
        conn = _render.get(os.getpid())
        if conn is None:
            conn = _render[os.getpid()] = sqlite3.connect(":memory:", check_same_thread=False)
        return conn.execute("SELECT CAST(? AS TEXT)", (number,)).fetchone()[0]


def as_stored(value: Any) -> Any:
    """A JSON scalar as SQLite stores it: an integer beyond its 64 bits becomes a real (±inf past
    the float range, where ``float`` raises), so filters and facets compare what a store holds."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    return value


def field_texts(value: FilterScalar, *, marked: bool = True) -> tuple[str, ...]:
    """:func:`_field_texts`, cached by the value's type and sign too: True and 1, and 0.0 and
    -0.0, are equal keys to a cache, and whichever was asked first answered for the other for the
    life of the process (an audit: a filter on -0.0 matched a stored "0.0" after one on 0.0)."""
    sign = math.copysign(1.0, value) if isinstance(value, float) else 0.0
    return _field_texts(value, marked, sign)


@functools.lru_cache(maxsize=4096, typed=True)  # typed: True and 1 are equal keys otherwise
def _field_texts(value: FilterScalar, marked: bool, sign: float) -> tuple[str, ...]:  # noqa: ARG001 (sign: a key)
    """The texts that a stored metadata value (:func:`stored_text`) equals this filter value by.

    A text matches the same stored string, and, where it spells one, a stored number of that value
    in whichever form either side was written (``2001``, ``2001.0``, ``+2001``, ``2.001e3``; SQLite
    writes a real as ``2001.0``, ``0.3`` for 0.30000000000000004, ``1.0e-05``) or a stored boolean
    (``true`` in any case): the CLI's and the service's ``where`` values are text. A Python number
    matches stored numbers of its value and the string Python writes it as; ``True`` a stored
    ``true`` only, never a 1 or a string. ``marked`` False: the texts of an Elasticsearch index made
    before the marks (``filter_texts`` without them), where a number's texts also matched strings."""
    num, boo = (NUMBER_MARK, BOOLEAN_MARK) if marked else ("", "")
    if isinstance(value, bool):
        return (boo + ("true" if value else "false"),)
    texts = [str(value)]
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        texts.append(boo + value.strip().lower())
    number: int | float | None = value if not isinstance(value, str) else None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        number = int(text) if text.lstrip("+-").isdigit() else float(text)
    if number is not None:
        stored = as_stored(number)
        # an integer past the float range is ±Inf, as SQLite holds it; an infinite or NaN float
        # filter matches no stored number
        if isinstance(number, int) or math.isfinite(stored):
            texts.append(num + _sqlite_text(stored))
            # an integer is exact (SQLite keeps 64 bits): 9007199254740993 finds no other integer; a
            # real is whole as SQLite writes it (15 digits), not as the float is: 1.0000000000000002
            # is "1.0" there, so it also finds a stored integer 1, as 1 finds the real (an audit).
            # An integer finds a real only where the real's 15 digits spell it, the other way round
            # too: 2**53 finds no real 2**53.0 (SQLite's 9.00719925474099e15, the integer
            # 9007199254740990), which finds no integer 2**53 (a parity audit: found one way only)
            if isinstance(stored, int):
                whole: float = stored if float(_sqlite_text(float(stored))) == stored else math.nan
            else:
                whole = float(_sqlite_text(stored)) if math.isfinite(stored) else math.nan
            if abs(whole) < 2**63 and float(whole).is_integer():
                texts += [num + _sqlite_text(int(whole)), num + _sqlite_text(float(whole))]
    return tuple(dict.fromkeys(texts))


def value_class(value: Any) -> frozenset[str]:
    """A stored metadata value's class: two values of one class are found by the same filters
    (a string by itself; a number by its value, so 1 and 1.0 are one, and 2**64-1 and 2**64-2,
    which SQLite holds as one real; a boolean by itself, never a number): what a facet counts."""
    if isinstance(value, str):
        return frozenset((value,))
    return frozenset(t for t in field_texts(value) if t[:1] in (NUMBER_MARK, BOOLEAN_MARK))


def field_values(value: FilterValue, *, marked: bool = True) -> list[str]:
    """:func:`field_texts` of every value a metadata filter accepts (both stores' filters)."""
    return list(dict.fromkeys(t for v in _values(value) for t in field_texts(v, marked=marked)))


def stored_values(value: Any) -> list[Any]:
    """The values of a stored metadata field that filters compare: the field itself, or each
    element of a list; null, an object or a list inside a list is none, so it matches no filter
    value. A field without any (missing, null, ``[]``, ``[null]``, an object) is absent (a
    ``None`` filter).
    One rule for every store (the embedded store's SQL, :func:`_scalars_sql`, and Elasticsearch's
    ``filter_texts``)."""
    return [v for v in (value if isinstance(value, list) else [value]) if stored_text(v) is not None]


def stored_text(value: Any, *, marked: bool = True) -> str | None:
    """A stored JSON scalar as filters compare it (the Python twin of :func:`_stored`); None for
    null, lists and objects. ``marked`` False: without the marks (:func:`field_texts`)."""
    num, boo = (NUMBER_MARK, BOOLEAN_MARK) if marked else ("", "")
    if isinstance(value, bool):
        return boo + ("true" if value else "false")
    value = as_stored(value)  # an integer beyond 64 bits is a real in SQLite
    if isinstance(value, float):
        return num + _sqlite_text(value)
    if isinstance(value, int):
        return num + str(value)
    if isinstance(value, str):
        return None if value[:1] in (NUMBER_MARK, BOOLEAN_MARK) else value  # as _marked: a store filled before
    return None


def field_matches(value: FilterScalar, stored: Any) -> bool:
    """The one equality rule of metadata filters, for filters applied in Python (the service's
    Search UI filters that are not sent to the store): as the store's SQL decides it."""
    text = stored_text(stored)
    return text is not None and text in field_texts(value)


# ---------------------------------------------------------------------------- indexed filters
#
# Metadata values and span labels also sit in two indexed tables, filled by triggers (so every
# writer fills them, whatever its version) and back-filled once for a store made before them. A
# filtered search then reads the matching rows of an index instead of parsing every passage's
# JSON. A store that cannot be migrated (read-only) keeps filtering over the JSON as before.

INDEX_FLAG = "filter_index"
# 1: span_labels a rowid table with two indexes; 2: one WITHOUT ROWID tree (writes ~20% faster);
# 3: booleans in passage_fields as true/false (they were 1/0, so a filter 1 matched true)
# 4: no rows for an object's members or a nested list's text (objects now match no filter value)
# 5: numbers and booleans with their marks (NUMBER_MARK, BOOLEAN_MARK), apart from strings
# 6: a string that starts with a mark (stored before writers refused them) is no value (NULL)
INDEX_LAYOUT = "6"
_FILL_FIELDS = """
INSERT INTO passage_fields(passage, key, value)
SELECT p.rowid, f.key, {stored_f} FROM passages AS p, json_each(p.fields) AS f
WHERE {{where}} f.type NOT IN ('array', 'object')
UNION ALL
SELECT p.rowid, f.key, {stored_e} FROM passages AS p, json_each(p.fields) AS f, json_each(f.value) AS e
WHERE {{where}} f.type = 'array' AND e.type NOT IN ('array', 'object');
""".format(stored_f=_stored("f.value", "f.type"), stored_e=_stored("e.value", "e.type"))
INDEX_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS passage_fields (passage INTEGER NOT NULL, key TEXT NOT NULL, value TEXT)",
    "CREATE INDEX IF NOT EXISTS passage_fields_by_value ON passage_fields(key, value, passage)",
    "CREATE INDEX IF NOT EXISTS passage_fields_by_passage ON passage_fields(passage)",
    # one B-tree keyed (label, span): each label a span gets is one insert, not three (table and two
    # indexes); deleting a span finds its rows through its own labels
    "CREATE TABLE IF NOT EXISTS span_labels (label TEXT NOT NULL, span INTEGER NOT NULL, PRIMARY KEY (label, span)) "
    "WITHOUT ROWID",
    "CREATE TRIGGER IF NOT EXISTS passages_fields_add AFTER INSERT ON passages BEGIN "
    + _FILL_FIELDS.format(where="p.rowid = new.rowid AND") + " END",
    "CREATE TRIGGER IF NOT EXISTS passages_fields_drop AFTER DELETE ON passages "
    "BEGIN DELETE FROM passage_fields WHERE passage = old.rowid; END",
    "CREATE TRIGGER IF NOT EXISTS spans_labels_add AFTER INSERT ON spans "
    "BEGIN INSERT OR IGNORE INTO span_labels(label, span) SELECT value, new.rowid FROM json_each(new.labels); END",
    "CREATE TRIGGER IF NOT EXISTS spans_labels_drop AFTER DELETE ON spans BEGIN DELETE FROM span_labels "
    "WHERE span = old.rowid AND label IN (SELECT value FROM json_each(old.labels)); END",
]
# what goes before INDEX_SCHEMA makes it anew: the fields trigger (its SQL changed in layouts 3 to 6), and
# below layout 2 span_labels (its indexes with it)
OLD_FIELDS = ["DROP TRIGGER IF EXISTS passages_fields_add"]
OLD_LABELS = ["DROP TRIGGER IF EXISTS spans_labels_add", "DROP TRIGGER IF EXISTS spans_labels_drop",
              "DROP TABLE IF EXISTS span_labels"]
FILL_FIELDS = ["DELETE FROM passage_fields", _FILL_FIELDS.format(where="")]
FILL_LABELS = [
    "DELETE FROM span_labels",
    "INSERT OR IGNORE INTO span_labels(label, span) SELECT l.value, s.rowid FROM spans AS s, json_each(s.labels) AS l "
    "ORDER BY 1, 2",  # in key order: 30M rows at 10M spans go into the tree sequentially
]


def ensure_index(conn) -> bool:
    """Create and back-fill the filter tables once (one transaction); False when the store
    cannot be changed (read-only), which leaves filtering over the JSON."""
    flagged = "SELECT value FROM meta WHERE key = ?"
    if conn.execute(flagged, (INDEX_FLAG,)).fetchone() == (INDEX_LAYOUT,):
        return True
    try:
        conn.execute("BEGIN IMMEDIATE")
        layout = conn.execute(flagged, (INDEX_FLAG,)).fetchone()
        if layout != (INDEX_LAYOUT,):
            labels_kept = layout in (("2",), ("3",), ("4",), ("5",))  # from layout 2 to 5: passage_fields alone
            for statement in (OLD_FIELDS + ([] if labels_kept else OLD_LABELS) + INDEX_SCHEMA + FILL_FIELDS
                              + ([] if labels_kept else FILL_LABELS)):
                conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (INDEX_FLAG, INDEX_LAYOUT))
        conn.execute("COMMIT")
    except sqlite3.OperationalError:  # read-only, locked for long, full: filter as before
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return False
    return True


def indexed_filter_sql(filters: Filters, *, correlated: bool = False, row: str = "passages.rowid"
                       ) -> tuple[str, list[Any]]:
    """Like :func:`filter_sql`, through the ``passage_fields`` index (``None``: over the JSON).

    ``correlated``: one index probe per passage row (``EXISTS``) instead of the list of every
    allowed passage, which SQLite builds whole first: the form to check a few candidates with;
    ``row`` names the passage rowid each probe is for."""

    def clause(key: str, value: FilterValue) -> tuple[str, list[Any]]:
        if value is None:
            return _field_sql(key, value)
        values = field_values(value)
        marks = ",".join("?" for _ in values)
        if correlated:
            return (f"EXISTS (SELECT 1 FROM passage_fields WHERE key = ? AND value IN ({marks}) "
                    f"AND passage = {row})"), [key, *values]
        return f"passages.rowid IN (SELECT passage FROM passage_fields WHERE key = ? AND value IN ({marks}))", [key, *values]

    return _joined(clause(key, value) for key, value in filters.metadata)


def candidates_allowed_sql(filters: Filters, text: str | None) -> tuple[str, list[Any]]:
    """Which of the passage rowids in a JSON array (the first parameter, the caller's) the
    metadata filters (none of them ``None``) and the text restriction allow, read from the
    ``passage_fields`` index and FTS alone. A deleted passage has neither, so it is not allowed."""
    clause, params = indexed_filter_sql(filters, correlated=True, row="c.value")
    where = [clause] if clause else []
    if text:
        where.append("c.value IN (SELECT rowid FROM passages_fts WHERE passages_fts MATCH ?)")
        params = [*params, fts_query(text)]
    return "SELECT c.value FROM json_each(?) AS c WHERE " + " AND ".join(where), params


def selection_bound_sql(filters: Filters, text: str | None, limit: int) -> list[tuple[str, list[Any]]]:
    """Queries counting, up to ``limit``, the passages each indexed restriction allows on its own
    (the smallest count bounds what all of them allow together), each reading at most ``limit``
    index entries; a ``None`` metadata value (absent field) gives none."""
    out = []
    for key, value in filters.metadata:
        if value is not None:
            values = field_values(value)
            marks = ",".join("?" for _ in values)
            out.append((f"SELECT COUNT(*) FROM (SELECT 1 FROM passage_fields WHERE key = ? AND value IN ({marks}) "
                        f"LIMIT {int(limit)})", [key, *values]))
    if text:
        out.append((f"SELECT COUNT(*) FROM (SELECT 1 FROM passages_fts WHERE passages_fts MATCH ? LIMIT {int(limit)})",
                    [fts_query(text)]))
    return out


def indexed_span_filter_sql(filters: Filters) -> tuple[str, list[Any]]:
    """Like :func:`span_filter_sql`, with ``spans.labels`` through the ``span_labels`` index."""
    labels = dict(filters.spans).get("spans.labels")
    if labels is None:
        return span_filter_sql(filters)
    values = [_as_text(v) for v in _values(labels)]
    sql = f"SELECT span FROM span_labels WHERE label IN ({','.join('?' for _ in values)})"
    rest = Filters(tuple(item for item in filters.spans if item[0] != "spans.labels"))
    if not rest:
        return sql, values
    other, params = span_filter_sql(rest)
    return f"{other} AND rowid IN ({sql})", [*params, *values]
