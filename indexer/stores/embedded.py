"""The embedded store: one folder, one SQLite database, exact vector search in memory.

SQLite (standard library, ACID) holds passages, spans, metadata and vectors; FTS5 gives the
lexical restriction. Span vectors (and passage vectors, for hybrid scoring) are loaded once into
float32 matrices and searched exactly with numpy (a matrix-vector product over 1M × 384 floats is tens of milliseconds on 2 cores, see
``bench/``). Reading a million vector blobs out of SQLite takes seconds, so the matrix is also kept
as a derived cache (``cache/*.npy``, memory-mapped, tagged with the store's write generation and
rebuilt from SQLite whenever it is stale): a new process searching an unchanged store starts at once. Every :meth:`EmbeddedStore.write` is one transaction, so an interrupted run leaves only
whole passages behind and a rerun resumes by skipping ids already stored.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ModelMismatchError, SearchError, StoreError
from ..records import EncodedPassage, Hit, Matches, SpanMatch
from .base import ModelStamp, SearchRequest, StoreCounts, WriteOutcome

DB_NAME = "store.sqlite"
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

    generation: int
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
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('generation', '0')",
                (SCHEMA_VERSION,),
            )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db}: not a usable nerindex store: {exc}") from exc
        return cls(folder, conn)

    # ------------------------------------------------------------------ model guard

    def _meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def model(self) -> ModelStamp | None:
        raw = self._meta("model")
        return ModelStamp(**json.loads(raw)) if raw else None

    def check_model(self, stamp: ModelStamp) -> None:
        current = self.model()
        if current is None:
            self._conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('model', ?)",
                (json.dumps(stamp.to_dict()),),
            )
            return
        if current.checksum != stamp.checksum or current.dims != stamp.dims:
            raise ModelMismatchError(
                f"{self.path}: store was built with model {current.id} {current.version} "
                f"(checksum {current.checksum[:12]}), not {stamp.id} {stamp.version} "
                f"(checksum {stamp.checksum[:12]}); index into a new store to use this model"
            )

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

    def has_field(self, name: str) -> bool:
        """Whether any stored passage has the metadata field ``name`` (a hint on empty answers)."""
        if not _FIELD.match(name):
            return False
        row = self._conn.execute(
            f"SELECT 1 FROM passages WHERE json_type(fields, '$.\"{name}\"') IS NOT NULL LIMIT 1"
        ).fetchone()
        return row is not None

    def _load_vectors(self) -> _Vectors:
        generation = int(self._meta("generation") or 0)
        if self._vectors is not None and self._vectors.generation == generation:
            return self._vectors
        self._vectors = self._read_cache(generation) or self._rebuild_cache(generation)
        return self._vectors

    def _read_cache(self, generation: int) -> _Vectors | None:
        cache = self.path / "cache"
        try:
            if int((cache / "generation").read_text()) != generation:
                return None
            matrix = np.load(cache / "vectors.npy", mmap_mode="r")
            ids = np.load(cache / "ids.npy")
            passage_matrix = np.load(cache / "passage_vectors.npy", mmap_mode="r")
            passage_rows = np.load(cache / "passage_ids.npy")
        except (OSError, ValueError):
            return None
        if ids.shape != (matrix.shape[0], 2) or passage_rows.shape != (passage_matrix.shape[0],):
            return None
        return _Vectors(generation, matrix, ids[:, 0].copy(), ids[:, 1].copy(), passage_matrix, passage_rows)

    def _rebuild_cache(self, generation: int) -> _Vectors:
        """Read every span and passage vector from SQLite and save the derived cache."""
        stamp = self.model()
        dims = stamp.dims if stamp else 0
        rows = self._conn.execute(
            "SELECT passage, rowid, vector FROM spans ORDER BY passage, rowid"
        ).fetchall()
        if rows:
            passage, span, blobs = zip(*rows)
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), dims)
        else:
            passage, span, matrix = (), (), np.zeros((0, dims), dtype=np.float32)
        ids = np.stack([np.asarray(passage, dtype=np.int64), np.asarray(span, dtype=np.int64)], axis=1)
        ids = ids.reshape(-1, 2)
        zero = bytes(4 * dims)
        prows = self._conn.execute("SELECT rowid, vector FROM passages ORDER BY rowid").fetchall()
        passage_rows = np.asarray([r[0] for r in prows], dtype=np.int64)
        passage_matrix = np.frombuffer(
            b"".join(r[1] if r[1] and len(r[1]) == len(zero) else zero for r in prows), dtype=np.float32
        ).reshape(len(prows), dims)
        arrays = {"vectors.npy": matrix, "ids.npy": ids,
                  "passage_vectors.npy": passage_matrix, "passage_ids.npy": passage_rows}  # fmt: skip
        cache = self.path / "cache"
        try:
            cache.mkdir(exist_ok=True)
            (cache / "generation").unlink(missing_ok=True)
            for name, array in arrays.items():
                tmp = cache / f".{name}.tmp"
                with open(tmp, "wb") as handle:
                    np.save(handle, array)
                os.replace(tmp, cache / name)
            tmp = cache / ".generation.tmp"
            tmp.write_text(str(generation))
            os.replace(tmp, cache / "generation")
        except OSError:
            pass  # a read-only store still searches; it only rebuilds in memory each time
        return _Vectors(generation, matrix, ids[:, 0].copy(), ids[:, 1].copy(), passage_matrix, passage_rows)

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


def _blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
