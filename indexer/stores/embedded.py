"""The embedded store: one folder, one SQLite database, exact vector search in memory.

SQLite (standard library, ACID) holds passages, spans, metadata and vectors; FTS5 gives the
lexical restriction. Span vectors (and passage vectors, for hybrid scoring) are loaded once into
float32 matrices and searched exactly with numpy (a matrix-vector product over 1M × 384 floats is tens of milliseconds on 2 cores, see
``bench/``). Reading a million vector blobs out of SQLite takes seconds, so the matrix is also kept
as a derived cache (``cache/*.npy``, memory-mapped): a new process searching an unchanged store
starts at once. The cache is trusted only through its manifest (``stores/derived.py``), which names
the store version it was made from: the store's UUID (written at creation), its write generation
and row counts (:meth:`EmbeddedStore.version`), so a replaced or restored ``store.sqlite``, a write
by another process or a damaged file all lead to a rebuild from SQLite, never to wrong answers.
Every :meth:`EmbeddedStore.write` is one transaction, so an interrupted run leaves only whole
passages behind and a rerun resumes by skipping ids already stored.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ModelMismatchError, SearchError, StoreError
from ..records import EncodedPassage, Hit, Matches, SpanMatch
from . import derived
from .base import (
    ModelStamp,
    SearchRequest,
    StoreCounts,
    StoreVersion,
    WriteOutcome,
    adopted_message,
    check_stamp,
)

log = logging.getLogger(__name__)

DB_NAME = "store.sqlite"
CACHE_DIR = "cache"
CACHE_FILES = ("vectors.npy", "ids.npy", "passage_vectors.npy", "passage_ids.npy")
# One statement, so one snapshot: the store UUID, the write generation and the row counts.
VERSION_SQL = """
SELECT (SELECT value FROM meta WHERE key = 'uuid'), (SELECT value FROM meta WHERE key = 'generation'),
       (SELECT COUNT(*) FROM passages), (SELECT MAX(rowid) FROM passages),
       (SELECT COUNT(*) FROM spans), (SELECT MAX(rowid) FROM spans)
"""
SCHEMA_VERSION = "1"
PAGE = 500  # passages fetched per SQL round trip while paging hits
_FIELD = re.compile(r"^[A-Za-z0-9_.\-]+$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL,
    vector BLOB
);
CREATE TABLE IF NOT EXISTS spans (
    rowid INTEGER PRIMARY KEY,
    passage INTEGER NOT NULL REFERENCES passages(rowid) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    score REAL NOT NULL,
    labels TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_by_passage ON spans(passage);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    text, content='passages', content_rowid='rowid'
);
"""


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


@dataclass
class _Vectors:
    """The in-memory copy of every span vector, grouped by passage."""

    version: StoreVersion
    matrix: np.ndarray  # float32 [n, dims]
    passage: np.ndarray  # int64 passage rowid of each span
    span: np.ndarray  # int64 span rowid
    passage_matrix: np.ndarray  # float32 [m, dims] passage vectors (zeros where none was stored)
    passage_rows: np.ndarray  # int64 [m] their passage rowids, ascending

    def passage_similarity(self, rowids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """cos(query, passage vector) of the given passage rowids (all present in the matrix)."""
        return self.passage_matrix[np.searchsorted(self.passage_rows, rowids)] @ query


class EmbeddedStore:
    """A SQLite-backed store in a folder. Use :meth:`open`; the constructor does no I/O."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._vectors: _Vectors | None = None
        self._loading = threading.Lock()  # one thread (re)loads the vectors, the others wait for it

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True) -> "EmbeddedStore":
        """Open (or create) the store folder; ``create=False`` refuses a folder with no store."""
        folder = Path(path)
        db = folder / DB_NAME
        if not db.is_file():
            if not create:
                raise StoreError(f"{folder}: no nerindex store here (run 'nerindex index' first)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{folder}: cannot create store folder: {exc.strerror}") from exc
        try:
            conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            # the UUID tells this store from any other (a new or restored store.sqlite counts its
            # generations from 0 again); a store made by nerindex 0.2.0 gets one now
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('generation', '0'), ('uuid', ?)",
                (SCHEMA_VERSION, uuid.uuid4().hex),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db}: not a usable nerindex store: {exc}") from exc
        derived.remove_stale_temp_files(folder / CACHE_DIR)
        return cls(folder, conn)

    # ------------------------------------------------------------------ model guard

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def model(self) -> ModelStamp | None:
        raw = self._meta("model")
        return ModelStamp.from_dict(json.loads(raw)) if raw else None

    def check_model(self, stamp: ModelStamp, *, writing: bool = True) -> None:
        """Record the model on first write; refuse another one (base.check_stamp decides).

        Both the first record and the adoption of settings a 0.2.0 store lacks are
        compare-and-set, so two processes starting on one store cannot record two models.
        """
        raw = self._meta("model")
        if raw is None:
            if not writing:
                return
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('model', ?)", (json.dumps(stamp.to_dict()),)
            )
            raw = self._meta("model")
            assert raw is not None
        current = ModelStamp.from_dict(json.loads(raw))
        check = check_stamp(current, stamp, writing=writing)
        if check.conflict:
            raise ModelMismatchError(
                f"{self.path}: store was built with model {current.describe()}, this run uses "
                f"{stamp.describe()}: {check.conflict}; index into a new store (another --store folder) "
                f"or use the model folder the store was built with"
            )
        if check.adopted:
            cur = self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'model' AND value = ?",
                (json.dumps(check.recorded.to_dict()), raw),
            )
            if cur.rowcount == 0:  # another process recorded first: compare with what it recorded
                return self.check_model(stamp, writing=writing)
            log.warning(adopted_message(str(self.path), check))

    # ------------------------------------------------------------------ writing

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(ids)
        for start in range(0, len(ids), PAGE):
            chunk = ids[start : start + PAGE]
            marks = ",".join("?" for _ in chunk)
            rows = self._conn.execute(f"SELECT id FROM passages WHERE id IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found

    def write(self, docs: Sequence[EncodedPassage]) -> list[WriteOutcome]:
        """Insert or replace passages with their spans, all in one transaction."""
        outcomes: list[WriteOutcome] = []
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for doc in docs:
                p = doc.passage
                old = conn.execute(
                    "SELECT rowid, text FROM passages WHERE id = ?", (p.id,)
                ).fetchone()
                if old is not None:
                    conn.execute(
                        "INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', ?, ?)",
                        old,
                    )
                    conn.execute("DELETE FROM passages WHERE rowid = ?", (old[0],))
                cur = conn.execute(
                    "INSERT INTO passages(id, text, fields, vector) VALUES (?, ?, ?, ?)",
                    (p.id, p.text, json.dumps(p.fields, ensure_ascii=False), _blob(doc.vector)),
                )
                rowid = cur.lastrowid
                conn.execute("INSERT INTO passages_fts(rowid, text) VALUES (?, ?)", (rowid, p.text))
                conn.executemany(
                    "INSERT INTO spans(passage, start, end, score, labels, vector) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (rowid, s.start, s.end, float(s.score), json.dumps(list(s.labels)), _blob(s.vector))
                        for s in doc.spans
                    ],
                )
                outcomes.append(WriteOutcome(p.id, True, "updated" if old else "created"))
            conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: write failed: {exc}") from exc
            raise
        return outcomes

    # ------------------------------------------------------------------ reading

    def counts(self) -> StoreCounts:
        (passages,) = self._conn.execute("SELECT COUNT(*) FROM passages").fetchone()
        (spans,) = self._conn.execute("SELECT COUNT(*) FROM spans").fetchone()
        return StoreCounts(passages=passages, spans=spans)

    def version(self) -> StoreVersion:
        """UUID, write generation and row counts, in one statement (well under a millisecond)."""
        return _read_version(self._conn)

    def has_field(self, name: str) -> bool:
        """Whether any stored passage has the metadata field ``name`` (a hint on empty answers)."""
        if not _FIELD.match(name):
            return False
        row = self._conn.execute(
            f"SELECT 1 FROM passages WHERE json_type(fields, '$.\"{name}\"') IS NOT NULL LIMIT 1"
        ).fetchone()
        return row is not None

    def _load_vectors(self) -> _Vectors:
        with self._loading:
            version = self.version()
            if self._vectors is None or self._vectors.version != version:
                self._vectors = self._read_cache(version) or self._rebuild_cache()
            return self._vectors

    def _read_cache(self, version: StoreVersion) -> _Vectors | None:
        stamp = self.model()
        dims = stamp.dims if stamp else 0

        def consistent(a: dict[str, np.ndarray]) -> str | None:
            matrix, ids, pmatrix, prows = (a[name] for name in CACHE_FILES)
            if matrix.ndim != 2 or matrix.shape[1] != dims or pmatrix.ndim != 2 or pmatrix.shape[1] != dims:
                return f"vectors of shape {matrix.shape} and {pmatrix.shape}, the model has {dims} dims"
            if ids.shape != (matrix.shape[0], 2) or prows.shape != (pmatrix.shape[0],):
                return "ids and vectors differ in length"
            return None

        arrays = derived.load_arrays(
            self.path / CACHE_DIR, version, CACHE_FILES, mmap=("vectors.npy", "passage_vectors.npy"), check=consistent
        )
        if arrays is None:
            return None
        matrix, ids, passage_matrix, passage_rows = (arrays[name] for name in CACHE_FILES)
        return _Vectors(version, matrix, ids[:, 0].copy(), ids[:, 1].copy(), passage_matrix, passage_rows)

    def _rebuild_cache(self) -> _Vectors:
        """Read every span and passage vector from SQLite, in one snapshot, and save the derived cache.

        A private connection holds the read transaction: the store's own connection is shared by
        the service's threads, and a transaction on it would take in their statements too.
        """
        stamp = self.model()
        dims = stamp.dims if stamp else 0
        conn = sqlite3.connect(str(self.path / DB_NAME), isolation_level=None)
        try:
            conn.execute("BEGIN")
            version = _read_version(conn)
            rows = conn.execute("SELECT passage, rowid, vector FROM spans ORDER BY passage, rowid").fetchall()
            prows = conn.execute("SELECT rowid, vector FROM passages ORDER BY rowid").fetchall()
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot read the vectors: {exc}") from exc
        finally:
            conn.close()
        if rows:
            passage, span, blobs = zip(*rows)
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), dims)
        else:
            passage, span, matrix = (), (), np.zeros((0, dims), dtype=np.float32)
        ids = np.stack([np.asarray(passage, dtype=np.int64), np.asarray(span, dtype=np.int64)], axis=1)
        ids = ids.reshape(-1, 2)
        zero = bytes(4 * dims)
        passage_rows = np.asarray([r[0] for r in prows], dtype=np.int64)
        passage_matrix = np.frombuffer(
            b"".join(r[1] if r[1] and len(r[1]) == len(zero) else zero for r in prows), dtype=np.float32
        ).reshape(len(prows), dims)
        arrays = dict(zip(CACHE_FILES, (matrix, ids, passage_matrix, passage_rows)))
        # a read-only or full disk still searches: the copy in memory serves this process
        if derived.save_arrays(self.path / CACHE_DIR, version, arrays):
            (self.path / CACHE_DIR / "generation").unlink(missing_ok=True)  # nerindex 0.2.0's tag
        return _Vectors(version, matrix, ids[:, 0].copy(), ids[:, 1].copy(), passage_matrix, passage_rows)

    def _allowed(self, request: SearchRequest, filters: dict[str, Any]) -> np.ndarray | None:
        """Passage rowids allowed by the metadata filters and text restriction (None: all)."""
        if not filters and not request.text:
            return None
        where: list[str] = []
        params: list[Any] = []
        if filters:
            clause, fparams = filter_sql(filters)
            where.append(clause)
            params.extend(fparams)
        if request.text:
            where.append("passages.rowid IN (SELECT rowid FROM passages_fts WHERE passages_fts MATCH ?)")
            params.append(fts_query(request.text))
        sql = "SELECT rowid FROM passages WHERE " + " AND ".join(where)
        try:
            rows = self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            raise SearchError(f"cannot apply filters: {exc}") from exc
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Exact search: every span scored, passages ranked by their best span (+ λ · passage)."""
        stamp = self.model()
        if stamp is None:
            return iter(())
        query = np.asarray(request.vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != stamp.dims:
            raise SearchError(f"query vector has {query.shape[0]} dims, the store {stamp.dims}")
        vec = self._load_vectors()
        sims = vec.matrix @ query
        keep = sims >= request.min_similarity
        passage_filters, span_filters = split_filters(request.filters)
        allowed = self._allowed(request, passage_filters)
        if allowed is not None:
            keep &= np.isin(vec.passage, allowed)
        if span_filters:
            sql, params = span_filter_sql(span_filters)
            spans = np.asarray([r[0] for r in self._conn.execute(sql, params)], dtype=np.int64)
            keep &= np.isin(vec.span, spans)
        idx = np.nonzero(keep)[0]
        if idx.size == 0:
            return iter(())
        # best span per passage: order spans by passage, then by descending similarity
        order = idx[np.lexsort((-sims[idx], vec.passage[idx]))]
        passages = vec.passage[order]
        first = np.ones(order.size, dtype=bool)
        first[1:] = passages[1:] != passages[:-1]
        best = order[first]
        score = sims[best].astype(np.float64)
        if request.passage_weight:
            score += request.passage_weight * vec.passage_similarity(vec.passage[best], query)
        # passages by score (desc), ties by insertion order for a stable result
        rank = np.lexsort((vec.passage[best], -score))
        ranked, score = best[rank], score[rank]
        if not request.exhaustive:
            ranked, score = ranked[: max(request.limit, 0)], score[: max(request.limit, 0)]
        groups = np.split(order, np.nonzero(first)[0][1:])
        by_passage = {int(vec.passage[g[0]]): g for g in groups}
        return Matches(self._hits(ranked, score, by_passage, sims, vec), total=int(best.size))

    def _hits(
        self,
        ranked: np.ndarray,
        scores: np.ndarray,
        by_passage: dict[int, np.ndarray],
        sims: np.ndarray,
        vec: _Vectors,
    ) -> Iterator[Hit]:
        for start in range(0, ranked.size, PAGE):
            chunk_scores = scores[start : start + PAGE]
            chunk = [int(vec.passage[i]) for i in ranked[start : start + PAGE]]
            marks = ",".join("?" for _ in chunk)
            rows = {
                r[0]: r[1:]
                for r in self._conn.execute(
                    f"SELECT rowid, id, text, fields FROM passages WHERE rowid IN ({marks})", chunk
                )
            }
            span_ids = [int(vec.span[i]) for p in chunk for i in by_passage[p]]
            span_rows: dict[int, tuple[int, int, str]] = {}
            for s in range(0, len(span_ids), PAGE):
                part = span_ids[s : s + PAGE]
                m = ",".join("?" for _ in part)
                for r in self._conn.execute(
                    f"SELECT rowid, start, end, labels FROM spans WHERE rowid IN ({m})", part
                ):
                    span_rows[r[0]] = r[1:]
            for p, score in zip(chunk, chunk_scores):
                if p not in rows:  # deleted since the vectors were loaded
                    continue
                pid, text, fields = rows[p]
                matches = []
                for i in by_passage[p]:
                    s_start, s_end, labels = span_rows[int(vec.span[i])]
                    matches.append(
                        SpanMatch(s_start, s_end, text[s_start:s_end], float(sims[i]), tuple(json.loads(labels)))
                    )
                yield Hit(
                    id=pid,
                    score=float(score),
                    text=text,
                    fields=json.loads(fields),
                    spans=tuple(matches),
                )

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "EmbeddedStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read_version(conn: sqlite3.Connection) -> StoreVersion:
    """The store version as seen by ``conn`` (see :meth:`EmbeddedStore.version`)."""
    store_uuid, generation, passages, last_passage, spans, last_span = conn.execute(VERSION_SQL).fetchone()
    return StoreVersion(
        identity=str(store_uuid),
        state=f"g{generation}-p{passages}.{last_passage or 0}-s{spans}.{last_span or 0}",
    )


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
