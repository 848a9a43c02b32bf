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
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from ..errors import StoreError
from ..records import Hit, SpanMatch
from .base import StoreCounts
from .filter_rules import filter_key_problem
from .embedded_schema import mention_sql
from .segments import SpanDetails, dots
from .span_ranking import Scored, flat_runs, with_rankers

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
        out[order[np.searchsorted(rowids[order], found)]] = dots(matrix, query)
    return out


def score_passages(
    conn: sqlite3.Connection, passages: np.ndarray, query: np.ndarray, *, threshold: float, weight: float,
    allowed_spans: np.ndarray | None = None,
) -> list[Scored]:
    """Passages scored exactly from all their spans (only ``allowed_spans``, sorted, when given),
    as a top-k ranks them: those whose best span, mention or candidate, reaches ``threshold``,
    total = best + ``weight`` · passage cosine, each with its mentions that reach it (none where a
    candidate alone ranks it: ``Store.search``), and the candidate that ranked it, if one did."""
    if passages.size == 0:
        return []
    rows = conn.execute(
        f"SELECT s.passage, s.rowid, v.vector, {mention_sql(conn)} FROM spans AS s "
        "JOIN span_vectors AS v ON v.rowid = s.rowid WHERE s.passage IN (SELECT value FROM json_each(?))",
        (json.dumps(passages.tolist()),),
    ).fetchall()
    nbytes = 4 * query.size
    rows = [r for r in rows if len(r[2]) == nbytes]
    if not rows:
        return []
    owner = np.asarray([r[0] for r in rows], dtype=np.int64)
    span = np.asarray([r[1] for r in rows], dtype=np.int64)
    mention = np.asarray([r[3] for r in rows], dtype=bool)
    sims = dots(np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), -1), query)
    keep = sims >= threshold
    if allowed_spans is not None:
        keep &= np.isin(span, allowed_spans)
    if not keep.any():
        return []
    order = np.flatnonzero(keep)
    order = order[np.lexsort((span[order], -sims[order], owner[order]))]  # by passage, best span first, ties by rowid
    starts = np.flatnonzero(np.r_[True, owner[order][1:] != owner[order][:-1]])
    ranked = owner[order][starts]
    best = sims[order][starts].astype(np.float64)
    if weight:
        best += weight * exact(conn, ranked, query, "passages", 0.0)
    marked, rankers = order[mention[order]], order[starts]
    candidate = ~mention[rankers]
    bounds, shown = with_rankers(*flat_runs(marked, owner[marked], ranked), rankers, candidate)
    marks = list(zip(span[shown].tolist(), sims[shown].tolist()))
    bounds_list = bounds.tolist()
    return [
        Scored(passage, total, tuple(marks[a:b]), by)
        for passage, total, a, b, by in zip(ranked.tolist(), best.tolist(), bounds_list[:-1], bounds_list[1:],
                                            candidate.tolist())
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


class Ranked(NamedTuple):
    """Passages in rank order, their matching spans flat and best first within each passage: the
    spans of passage ``i`` are entries ``bounds[i]:bounds[i + 1]``; where ``ranked_by[i]``, the
    first of them is the candidate that ranked it, not a mark (``span_ranking.with_rankers``). Arrays
    rather than an object per passage: an --all at 10M ranks 33k passages, and each object cost
    ~2 µs to make."""

    passages: np.ndarray  # int64 passage rowids
    totals: np.ndarray  # float64
    bounds: np.ndarray  # int64, one more than passages
    spans: np.ndarray  # int64 span rowids
    sims: np.ndarray  # float32 cosines
    ranked_by: np.ndarray  # bool, one per passage


def ranked(scored: list[Scored], limit: int | None) -> Ranked:
    """Best total first, ties by insertion order (passage rowid); the first ``limit`` (None: all)."""
    out = sorted(scored, key=lambda s: (-s.total, s.passage))
    out = out if limit is None else out[: max(limit, 0)]
    spans = [span for s in out for span in s.spans]
    return Ranked(
        np.asarray([s.passage for s in out], dtype=np.int64), np.asarray([s.total for s in out], dtype=np.float64),
        np.cumsum([0] + [len(s.spans) for s in out], dtype=np.int64),
        np.asarray([sid for sid, _ in spans], dtype=np.int64), np.asarray([sim for _, sim in spans], dtype=np.float32),
        np.asarray([s.ranked_by for s in out], dtype=bool),
    )


def hits(conn: sqlite3.Connection, found: Ranked, details: SpanDetails | None = None) -> Iterator[Hit]:
    """Hits of ranked passages, in that order, read a page at a time; a passage deleted since it
    was scored is left out. ``details``: start, end and labels of every span in ``found``, from the
    segments (an --all then reads no span row); None reads them from SQLite (a top-k's few)."""
    labels_of: dict[str | None, tuple[str, ...] | None] = {None: None}  # the same few lists recur: parse each once
    bounds = found.bounds.tolist()
    for lo in range(0, len(found.passages), PAGE):
        hi = min(lo + PAGE, len(found.passages))
        first, last = bounds[lo], bounds[hi]
        rows = _passage_rows(conn, found.passages[lo:hi])
        owners = np.repeat(found.passages[lo:hi], np.diff(found.bounds[lo : hi + 1])).tolist()
        if details is None:
            starts, ends, labels = _span_rows(conn, found.spans[first:last])
            for owner, start in zip(owners, starts):
                if start is None:  # a span deleted since it was scored: so was its passage (and this read raced it)
                    rows.pop(owner, None)
        else:
            starts, ends = details.starts[first:last].tolist(), details.ends[first:last].tolist()
            labels = [details.texts[i] for i in details.labels[first:last].tolist()]
        for text in set(labels) - labels_of.keys():
            labels_of[text] = tuple(json.loads(text))
        texts = [rows[o][1] if o in rows else "" for o in owners]
        matches = [SpanMatch(s, e, t[s:e], m, labels_of[lab])  # one comprehension a page, not one a passage
                   for s, e, t, m, lab in zip(starts, ends, texts, found.sims[first:last].tolist(), labels)]
        for passage, total, a, b, by in zip(found.passages[lo:hi].tolist(), found.totals[lo:hi].tolist(),
                                            bounds[lo:hi], bounds[lo + 1 : hi + 1], found.ranked_by[lo:hi].tolist()):
            row = rows.get(passage)
            if row is not None:
                a, b = a - first, b - first
                yield Hit(id=row[0], score=total, text=row[1], fields=row[2], spans=tuple(matches[a + by : b]),
                          ranked_by=matches[a] if by else None)


def _passage_rows(conn: sqlite3.Connection, rowids: np.ndarray) -> dict[int, tuple[str, str, dict]]:
    """{passage rowid: (id, text, fields)}; all the fields in one ``json.loads`` (33k calls took 0.18 s).
    The rowids go in ascending, so SQLite walks the table's pages in order (an --all's hits ~4 %
    faster at 10M than in rank order)."""
    found = conn.execute(
        "SELECT rowid, id, text, fields FROM passages WHERE rowid IN (SELECT value FROM json_each(?))",
        (json.dumps(np.sort(rowids).tolist()),),
    ).fetchall()
    fields = json.loads("[" + ",".join(r[3] for r in found) + "]")  # each written by json.dumps
    return {r[0]: (r[1], r[2], f) for r, f in zip(found, fields)}


def _span_rows(conn: sqlite3.Connection, rowids: np.ndarray) -> tuple[list, list, list]:
    """(starts, ends, labels) of these span rowids from SQLite, in their order; None for a span
    deleted since it was scored."""
    found = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT rowid, start, end, labels FROM spans WHERE rowid IN (SELECT value FROM json_each(?))",
            (json.dumps(rowids.tolist()),),
        )
    }
    rows = [found.get(r, (None, None, None)) for r in rowids.tolist()]
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]


def closing(hits: Iterator[Hit], conn: sqlite3.Connection) -> Iterator[Hit]:
    """An ``--all``'s hits, read lazily in the search's read transaction, which ends with them."""
    try:
        yield from hits
    finally:
        conn.close()


def bitmap(rowids: np.ndarray) -> np.ndarray:
    """A little-endian bitmap with the bits of ``rowids`` set (faiss's IDSelectorBitmap)."""
    bits = np.zeros(int(rowids.max()) + 1 if rowids.size else 1, dtype=bool)
    bits[rowids] = True
    return np.packbits(bits, bitorder="little")


def counts(conn: sqlite3.Connection) -> StoreCounts:
    """Passages and spans stored."""
    (passages,) = conn.execute("SELECT COUNT(*) FROM passages").fetchone()
    (spans,) = conn.execute("SELECT COUNT(*) FROM spans").fetchone()
    return StoreCounts(passages=passages, spans=spans)


def stored(conn: sqlite3.Connection, ids: Sequence[str], column: str, *, where: Path) -> dict[str, object]:
    """{id: column} of the stored passages among ``ids`` (one statement); a sqlite error as a
    StoreError (a review: a raw one failed a run whose write had committed)."""
    marks = ",".join("?" for _ in ids)
    try:
        return dict(conn.execute(f"SELECT id, {column} FROM passages WHERE id IN ({marks})", list(ids)))
    except sqlite3.Error as exc:
        raise StoreError(f"{where}: cannot read the stored passages: {exc}") from exc


def has_field(conn: sqlite3.Connection, name: str) -> bool:
    """Whether any stored passage has the metadata field ``name``."""
    if filter_key_problem(name) is not None:  # the name goes into a JSON path: only a filter key can
        return False
    row = conn.execute(f"SELECT 1 FROM passages WHERE json_type(fields, '$.\"{name}\"') IS NOT NULL LIMIT 1").fetchone()
    return row is not None


def bytes_under(folder: Path, pattern: str = "**/*") -> int:
    """Total size of the files under ``folder`` matching ``pattern`` (0 for a folder not there)."""
    total = 0
    for path in folder.glob(pattern):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # removed meanwhile (a derived file being replaced)
            pass
    return total
