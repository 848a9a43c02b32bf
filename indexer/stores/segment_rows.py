"""Segments made from the embedded store's SQLite rows: the base (every live row, one snapshot)
and a tail (the rows above a set's, after a write).

Apart from :mod:`.segments` (the derived files and their scans) because it is the one part that
knows the store's tables.
"""

from __future__ import annotations

import sqlite3

import numpy as np

from .embedded_schema import mention_sql
from .segments import Segment, SegmentSet, label_bytes, label_indexes


CHUNK_ROWS = 65536
# (passage, span rowid, float32 blob, start, end, labels, mention) and (passage rowid, float32 blob or NULL);
# {mention}: embedded_schema.mention_sql (a layout-2 store opened read-only has no such column)
SPAN_ROWS = ("SELECT s.passage, s.rowid, v.vector, s.start, s.end, s.labels, {mention} FROM spans AS s "
             "JOIN span_vectors AS v ON v.rowid = s.rowid")
PASSAGE_ROWS = "SELECT p.rowid, v.vector FROM passages AS p LEFT JOIN passage_vectors AS v ON v.rowid = p.rowid"


def read_base(conn, dims: int, n_spans: int, n_passages: int, written: str) -> Segment:
    """Every live span and passage as one base segment; ``conn`` holds the read transaction in
    which the store has ``n_spans`` spans and ``n_passages`` passages and was last written by the
    write ``written`` marks. Rows are read and quantised
    in chunks into arrays of their final size: the peak is the int8 copy plus one chunk."""
    (tombstone,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM tombstones").fetchone()
    vectors = np.empty((dims, n_spans), dtype=np.int8)
    sums, scales = np.empty(n_spans, dtype=np.int32), np.empty(n_spans, dtype=np.float32)
    ids = np.empty((n_spans, 2), dtype=np.int64)
    details, texts = np.empty((n_spans, 3), dtype=np.int32), {}
    mentions = np.empty(n_spans, dtype=bool)
    done = 0
    spans = conn.execute(_span_rows(conn) + " ORDER BY s.rowid")
    while rows := spans.fetchmany(CHUNK_ROWS):
        part, end = Segment.from_rows(rows, (), dims, (0, 0), (0, 0)), done + len(rows)
        vectors[:, done:end], sums[done:end], scales[done:end], ids[done:end] = part.vectors, part.sums, part.scales, part.ids
        details[done:end, :2], details[done:end, 2] = part.details[:, :2], label_indexes(part, texts)
        mentions[done:end] = part.mentions
        done = end
    pvectors = np.empty((n_passages, dims), dtype=np.int8)
    pscales, pids = np.empty(n_passages, dtype=np.float32), np.empty(n_passages, dtype=np.int64)
    pdone = 0
    passages = conn.execute(PASSAGE_ROWS + " ORDER BY p.rowid")
    while rows := passages.fetchmany(CHUNK_ROWS):
        part, end = Segment.from_rows((), rows, dims, (0, 0), (0, 0)), pdone + len(rows)
        pvectors[pdone:end], pscales[pdone:end], pids[pdone:end] = part.passage_vectors, part.passage_scales, part.passage_ids
        pdone = end
    if (done, pdone) != (n_spans, n_passages):  # was an assert: every search a traceback (an audit)
        raise sqlite3.DatabaseError(
            f"the store is damaged: {n_spans - done} of its {n_spans} spans have no vector (a write from two "
            "threads through one handle, before nerindex took turns on it?): index into a new store")
    span_hi = int(ids[-1, 1]) if n_spans else 0
    passage_hi = int(pids[-1]) if n_passages else 0
    return Segment(0, span_hi, 0, passage_hi, vectors, sums, scales, ids, pvectors, pscales, pids, details,
                   label_bytes(list(texts)), mentions, int(tombstone), "", written)


def read_delta(conn, vectors: SegmentSet, dims: int, written: str
               ) -> tuple[Segment | None, list[tuple[int, str, int]]]:
    """(a tail with the rows above the set's, or None; tombstones after the set's) in
    ``conn``'s read transaction, in which the store was last written by the write ``written``
    marks."""
    span_rows = conn.execute(
        _span_rows(conn) + " WHERE s.rowid > ? ORDER BY s.rowid", (vectors.span_hi,)
    ).fetchall()
    passage_rows = conn.execute(
        PASSAGE_ROWS + " WHERE p.rowid > ? ORDER BY p.rowid", (vectors.passage_hi,)
    ).fetchall()
    tombstones = conn.execute(
        "SELECT seq, kind, row FROM tombstones WHERE seq > ? ORDER BY seq", (vectors.tombstone,)
    ).fetchall()
    tail = None
    if span_rows or passage_rows:
        hi = (span_rows[-1][1] if span_rows else vectors.span_hi, passage_rows[-1][0] if passage_rows else vectors.passage_hi)
        tail = Segment.from_rows(span_rows, passage_rows, dims, (vectors.span_hi, vectors.passage_hi), hi,
                                 written=written)
    return tail, tombstones


def _span_rows(conn) -> str:
    return SPAN_ROWS.format(mention=mention_sql(conn))
