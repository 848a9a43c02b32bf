"""Reading the embedded store's rows from SQLite for a search: exact cosines, scored passages, hits.

The float32 blobs in SQLite (tables ``span_vectors`` and ``passage_vectors``) are the source of
truth for the scores the store returns (a big ``--all`` keeps int8 scores away from the threshold:
``embedded.EXACT_ALL_SPANS``); the int8 segments and the ANN index decide which rows are worth
reading. Rowids go to SQLite as one JSON array per statement (``json_each``), not as ``?``
lists, so a page is one round trip whatever its size.
"""

from __future__ import annotations

import json
import sqlite3
from itertools import islice
from typing import Iterable, Iterator, Sequence

import numpy as np

from ..records import Hit, SpanMatch
from .span_ranking import Scored

PAGE = 2000  # passages read per SQL round trip while paging hits
VECTOR_TABLES = {"spans": "span_vectors", "passages": "passage_vectors"}  # rows → their float32 vectors


def exact(conn: sqlite3.Connection, rowids: np.ndarray, query: np.ndarray, table: str, missing: float) -> np.ndarray:
    """float32 cos(query, stored vector) of span or passage rowids, from SQLite; ``missing``
    where a row is gone (deleted since the segments were loaded) or has no vector."""
    out = np.full(rowids.size, missing, dtype=np.float32)
    if rowids.size == 0:
        return out
    rows = conn.execute(
        f"SELECT rowid, vector FROM {VECTOR_TABLES[table]} WHERE rowid IN (SELECT value FROM json_each(?))",
        (json.dumps(rowids.tolist()),),
    ).fetchall()
    nbytes = 4 * query.size
    rows = [r for r in rows if r[1] is not None and len(r[1]) == nbytes]
    if rows:
        found = np.asarray([r[0] for r in rows], dtype=np.int64)
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), -1)
        order = np.argsort(rowids, kind="stable")
        out[order[np.searchsorted(rowids[order], found)]] = matrix @ query
    return out


def score_passages(
    conn: sqlite3.Connection, passages: np.ndarray, query: np.ndarray, *, threshold: float, weight: float,
    allowed_spans: np.ndarray | None = None,
) -> list[Scored]:
    """Passages scored exactly from all their spans (only ``allowed_spans``, sorted, when given):
    those whose best span reaches ``threshold``, total = best + ``weight`` · passage cosine."""
    if passages.size == 0:
        return []
    rows = conn.execute(
        "SELECT s.passage, s.rowid, v.vector FROM spans AS s JOIN span_vectors AS v ON v.rowid = s.rowid "
        "WHERE s.passage IN (SELECT value FROM json_each(?))",
        (json.dumps(passages.tolist()),),
    ).fetchall()
    nbytes = 4 * query.size
    rows = [r for r in rows if len(r[2]) == nbytes]
    if not rows:
        return []
    owner = np.asarray([r[0] for r in rows], dtype=np.int64)
    span = np.asarray([r[1] for r in rows], dtype=np.int64)
    sims = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1) @ query
    keep = sims >= threshold
    if allowed_spans is not None:
        keep &= np.isin(span, allowed_spans)
    owner, span, sims = owner[keep], span[keep], sims[keep]
    if owner.size == 0:
        return []
    order = np.lexsort((span, -sims, owner))  # by passage, best span first, ties by rowid
    owner, span, sims = owner[order], span[order], sims[order]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    best = sims[starts].astype(np.float64)
    if weight:
        best += weight * exact(conn, owner[starts], query, "passages", 0.0)
    ends = np.r_[starts[1:], owner.size]
    span_list, sim_list = span.tolist(), sims.tolist()
    return [
        Scored(int(owner[s]), float(total), tuple(zip(span_list[s:e], sim_list[s:e])))
        for s, e, total in zip(starts.tolist(), ends.tolist(), best.tolist())
    ]


def passage_vectors(conn: sqlite3.Connection, ids: Sequence[str], dims: int) -> np.ndarray:
    """float32 vectors of these passage ids, in the order given; unknown ids (and passages stored
    without a vector of ``dims``) are left out."""
    found: dict[str, bytes] = {}
    for start in range(0, len(ids), PAGE):
        rows = conn.execute(
            "SELECT p.id, v.vector FROM passages AS p JOIN passage_vectors AS v ON v.rowid = p.rowid "
            "WHERE p.id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(ids[start : start + PAGE])),),
        ).fetchall()
        found.update({r[0]: r[1] for r in rows if r[1] is not None and len(r[1]) == 4 * dims})
    blobs = [found[i] for i in ids if i in found]
    if not blobs:
        return np.zeros((0, dims), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dims).copy()


def ranked(scored: list[Scored], limit: int | None) -> list[Scored]:
    """Best total first, ties by insertion order (passage rowid); the first ``limit`` (None: all)."""
    out = sorted(scored, key=lambda s: (-s.total, s.passage))
    return out if limit is None else out[: max(limit, 0)]


def hits(conn: sqlite3.Connection, scored: Iterable[Scored], known: dict[int, tuple] | None = None) -> Iterator[Hit]:
    """Hits of scored passages, in the order given, read a page at a time; a passage deleted since
    it was scored is left out. ``known``: (start, end, labels) of spans known from the segments."""
    known = known or {}
    items = iter(scored)
    labels_of: dict[str, tuple[str, ...]] = {}  # the same few label lists recur: parse each once
    while page := list(islice(items, PAGE)):
        yield from _page_hits(page, *_page_rows(conn, page, known), known, labels_of)


def _page_rows(conn: sqlite3.Connection, page: list[Scored], known: dict[int, tuple]) -> tuple[dict, dict]:
    """({passage rowid: (id, text, fields)}, {span rowid: (start, end, labels)} of the spans not
    ``known``) for one page; all the fields in one ``json.loads`` (33k calls took 0.18 s)."""
    found = conn.execute(
        "SELECT rowid, id, text, fields FROM passages WHERE rowid IN (SELECT value FROM json_each(?))",
        (json.dumps([s.passage for s in page]),),
    ).fetchall()
    fields = json.loads("[" + ",".join(r[3] for r in found) + "]")  # each written by json.dumps
    missing = [sid for s in page for sid, _ in s.spans if sid not in known]
    spans = {} if not missing else {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT rowid, start, end, labels FROM spans WHERE rowid IN (SELECT value FROM json_each(?))",
            (json.dumps(missing),),
        )
    }
    return {r[0]: (r[1], r[2], f) for r, f in zip(found, fields)}, spans


def _page_hits(page: list[Scored], rows: dict, spans: dict, known: dict[int, tuple],
               labels_of: dict[str, tuple[str, ...]]) -> Iterator[Hit]:
    for s in page:
        row = rows.get(s.passage)
        if row is None:
            continue
        pid, text, fields = row
        matches = []
        for sid, sim in s.spans:
            span = known.get(sid) or spans.get(sid)
            if span is not None:
                start, end, labels = span
                parsed = labels_of.get(labels)
                if parsed is None:
                    parsed = labels_of[labels] = tuple(json.loads(labels))
                matches.append(SpanMatch(start, end, text[start:end], float(sim), parsed))
        yield Hit(id=pid, score=float(s.total), text=text, fields=fields, spans=tuple(matches))
