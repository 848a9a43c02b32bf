"""The embedded store: one folder, one SQLite database, vector search over int8 segments.

SQLite (standard library, ACID) holds passages, spans, metadata and float32 vectors; FTS5 gives
the lexical restriction. Span vectors (and passage vectors, for hybrid scoring) are also kept as
int8 segments (``stores/segments.py``): memory-mapped from ``cache/``, scanned with an int8
kernel, extended by one small tail segment after a write instead of being rebuilt. Every span
whose int8 score is within ``segments.EPSILON`` of a decision (the threshold, or the k-th best
passage of a top-k search) is re-scored from its float32 blob, so answers are the exact ones, and
so are scores, but for an ``--all`` of more than ``EXACT_ALL_SPANS`` matching spans on a store of
``ann.MIN_ROWS`` spans or more: there the spans clearly above the threshold (and the passage
cosines) keep their int8 scores. A top-k search on a store that big goes through a faiss IVF
index instead of the scan (``stores/ann.py``, ``ann_search.py``): its candidates are scored exactly
from SQLite and a threshold-algorithm bound decides when the top k are the exact ones
(``ann_ranking.py``); ``--all`` always scans. Segments and indexes are trusted only through
their manifests (``stores/derived.py``): the store's UUID (written at creation), what rows they
cover and a checksum per file, so a replaced or restored ``store.sqlite`` or a damaged file lead
to a rebuild from SQLite, never to wrong answers.
Every :meth:`EmbeddedStore.write` is one transaction, so an interrupted run leaves only whole
passages behind and a rerun resumes by skipping ids already stored.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import NoStoreError, StoreBusyError, StoreError
from ..records import EncodedPassage, Hit, Matches
from . import ann, ann_ranking, ann_search
from . import embedded_filtering as filtering
from . import embedded_guard as guard
from . import embedded_read as read
from . import embedded_schema as schema
from . import filters as sql_filters
from . import segment_rows, segments
from .base import ModelStamp, SearchRequest, StoreCounts, StoreVersion, WriteOutcome, query_vector
from .embedded_write import SharedConnection, delete_passages, stored_ids, write_passages
from .span_ranking import Scored, answer_and_marks, best_first, flat_runs, top_candidates, with_rankers

log = logging.getLogger(__name__)

DB_NAME = "store.sqlite"
CACHE_DIR = "cache"
CACHE_FILES = segments.FILES
PAGE = 500  # ids per SQL round trip
# --all on a store of ann.MIN_ROWS spans or more re-scores all matching spans up to this many, else only
# those within ε of the threshold (at 10M spans 38k float32 rows took 3.4 s, mostly from disk)
EXACT_ALL_SPANS = 4096
# a search's read transaction and vector segments must agree on one version: tried this often, and
# for this long, against a steady writer (an audit: 5 tries failed 1 search in 35 under 5 small
# writes a second beside concurrent searches)
SNAPSHOT_TRIES = 5
SNAPSHOT_WAIT_S = 2.0


class EmbeddedStore:
    """A SQLite-backed store in a folder. Use :meth:`open`; the constructor does no I/O."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._shared, self._db_file = SharedConnection(conn, str(path)), schema.file_identity(path / DB_NAME)
        self._vectors: segments.SegmentSet | None = None
        self._loading = threading.Lock()  # one thread (re)loads the vectors, the others wait for it
        self._indexed = sql_filters.ensure_index(conn)  # metadata and labels in indexed tables
        self._ann = ann_search.AnnIndexes(path / CACHE_DIR, self._in_history)
        self.use_ann = True  # False: every search scans exactly (the reference tests and benchmarks compare with)
        self._warned_no_ann = False

    @classmethod
    def open(cls, path: str | Path, *, create: bool = True, model: ModelStamp | None = None) -> "EmbeddedStore":
        """Open (or create) the store folder; ``create=False`` refuses a folder with no store; a
        store of an older layout recorded with a model other than ``model`` is refused before the
        open upgrades it (:func:`~.embedded_schema.model_before_upgrade`)."""
        folder = Path(path)
        db = folder / DB_NAME
        older = schema.model_before_upgrade(db) if model is not None and db.is_file() else None
        if older is not None:
            guard.refuse_other(folder, ModelStamp.from_dict(json.loads(older)), model, writing=False)
        if not db.is_file():
            if not create:
                raise NoStoreError(f"{folder}: no nerindex store here (run 'nerindex index' first)")
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{folder}: cannot create store folder: {exc.strerror}") from exc
        try:
            conn = schema.connect(db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{db}: {schema.open_problem(exc)}") from exc
        segments.remove_stale_temp_files(folder / CACHE_DIR)
        return cls(folder.absolute(), conn)  # relative, after os.chdir() it named another folder (an audit)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """The shared connection for one ``with`` block (``close`` waits for it), while store.sqlite is
        the file it was opened on: a handle whose file was replaced (a restored backup) refuses to go
        on (an audit: it wrote into the deleted file and served cached answers from it; a review: the
        new file may be a copy under way); the next open reads the new file."""
        self.check_file()
        with self._shared.use() as conn:
            yield conn

    def check_file(self) -> None:
        """Raise StoreError once store.sqlite is not the file this handle opened (see ``_conn``)."""
        if schema.file_identity(self.path / DB_NAME) != self._db_file:  # replaced, or removed (a review)
            raise StoreError(f"{self.path}: store.sqlite was replaced or removed since this process opened it (a "
                             "restored backup, another store moved in): open the store again (restart the service)")

    # ------------------------------------------------------------------ model guard

    def model(self) -> ModelStamp | None:
        with self._conn() as conn:
            return guard.recorded_model(conn)

    def check_model(self, stamp: ModelStamp, *, writing: bool = True) -> None:
        """Record the model on first write; refuse another one (:func:`.embedded_guard.check_model`)."""
        guard.check_model(self._conn, self.path, stamp, writing=writing)

    # ------------------------------------------------------------------ writing

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return set(self._stored(ids, "id"))

    def stored_texts(self, ids: Sequence[str]) -> dict[str, str]:
        return self._stored(ids, "text")

    def stored_records(self, ids: Sequence[str]) -> dict[str, tuple[str, Any]]:
        pairs = {pid: json.loads(pair) for pid, pair in self._stored(ids, "json_array(text, fields)").items()}
        return {pid: (text, json.loads(fields)) for pid, (text, fields) in pairs.items()}  # fields as written: big ints exact

    def _stored(self, ids: Sequence[str], column: str) -> dict[str, Any]:
        """{id: column} of the stored passages among ``ids``, a page of them per turn on the connection."""
        return {k: v for conn, page in self._pages(ids) for k, v in read.stored(conn, page, column, where=self.path).items()}

    def _pages(self, ids: Sequence[str]) -> Iterator[tuple[sqlite3.Connection, list[str]]]:
        """``ids`` a page (``PAGE``) at a time, each with the connection held for its turn."""
        ids = list(ids)
        for start in range(0, len(ids), PAGE):
            with self._conn() as conn:
                yield conn, ids[start : start + PAGE]

    def write(self, docs: Sequence[EncodedPassage], *, replace: bool = True) -> list[WriteOutcome]:
        """Insert (or, with ``replace``, replace) passages with their spans, all in one transaction
        (``Store.write``: without ``replace`` a stored id is skipped, decided inside it)."""
        try:
            with self._conn() as conn:
                outcomes = write_passages(conn, docs, replace=replace, dims=guard.recorded_dims(conn))
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc
        self.check_file()  # store.sqlite replaced while this wrote: it went into the old file
        return outcomes

    def delete(self, ids: Sequence[str]) -> list[str]:
        """``Store.delete``, a transaction a page of ids (readers are not held up for long): a
        failure names how many were removed before it."""
        removed: list[str] = []
        try:
            for conn, page in self._pages(ids):
                removed += delete_passages(conn, page)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: delete failed after {len(removed)} passage(s): {exc}") from exc
        self.check_file()
        return removed

    def stored_ids(self) -> Iterator[str]:
        """``Store.stored_ids``, in the order written."""
        return stored_ids(self._conn, PAGE)

    # ------------------------------------------------------------------ reading

    def counts(self) -> StoreCounts:
        with self._conn() as conn:
            return read.counts(conn)

    def version(self) -> StoreVersion:
        """UUID, write generation, largest rowids and last tombstone, in one statement (index ends
        only: well under a millisecond at any size)."""
        with self._conn() as conn:
            return schema.read_version(conn)

    def has_field(self, name: str) -> bool:
        """Whether any stored passage has the metadata field ``name`` (a hint on empty answers)."""
        with self._conn() as conn:
            return read.has_field(conn, name)

    def prepare(self) -> None:
        """Bring the int8 segments up to the store and, when top-k searches will use them, build
        or extend the ANN indexes (spans, and passages for λ > 0 from 300k passages), so that the first search after
        an indexing run does not pay for them (at 1M spans ~16 s of segments and ~65 s of index;
        at 10M ~5 min and ~5 min)."""
        if self.model() is None:
            return
        vec = self._load_vectors()
        if not (self.use_ann and len(vec.span) >= ann.MIN_ROWS and ann.available()):
            return
        log.info("%s: preparing the ANN indexes of %d spans", self.path, len(vec.span))
        identity = self.version().identity
        for kind in ("spans", "passages") if len(vec.passage_rows) >= ann.MIN_ROWS else ("spans",):
            self._ann.get(vec, identity, kind, merge=True)  # fewer passages are scanned (_passage_proposer)

    def _load_vectors(self) -> segments.SegmentSet:
        return self._vectors_and_reader(keep_reader=False)[0]

    def _vectors_and_reader(self, *, keep_reader: bool) -> tuple[segments.SegmentSet, sqlite3.Connection | None]:
        """The segments, brought up to the store; with ``keep_reader``, where they had to be, also
        the private connection they were read through, still in its read transaction: the
        snapshot they are of (:meth:`_snapshot`)."""
        with self._loading:
            current, reader = self._vectors, None
            if current is None or current.version != self.version():
                self._vectors, reader = self._refresh(current, keep_reader=keep_reader)
            return self._vectors, reader

    def _in_history(self, mark: str) -> bool:
        """Whether derived files made after the write ``mark`` names belong to this store's history."""
        with self._conn() as conn:
            return schema.in_history(conn, mark)

    def _refresh(
        self, current: segments.SegmentSet | None, *, keep_reader: bool = False
    ) -> tuple[segments.SegmentSet, sqlite3.Connection | None]:
        """Bring the segments up to the store: load them from disk (a new process), then add what
        was written since as one tail and mark what was deleted since; rebuild everything when
        the result does not add up to the store's row counts, or a quarter of the rows are dead.
        The set in use is never changed (the service's threads may be searching it): a new one
        replaces it.

        A private connection holds the read transaction (:meth:`_reader`); ``keep_reader`` returns it
        open, at the version the new set is of, else None.
        """
        stamp = self.model()
        dims = stamp.dims if stamp else 0
        cache = self.path / CACHE_DIR
        if current is not None and current.segments and not self._in_history(current.segments[-1].written):
            current = None  # store.sqlite restored from a backup and written since: its rows may be others
        if current is None:
            loaded = segments.load(cache, self.version().identity, dims, self._in_history)
            if loaded:
                current = segments.SegmentSet(None, loaded, tombstone=loaded[0].tombstone, persisted=True, lazy=True)
        fresh = tail = None
        conn = self._reader()
        try:
            version, spans, passages = schema.snapshot(conn)
            written = schema.written_mark(version)
            if current is not None:
                tail, tombstones = segment_rows.read_delta(conn, current, dims, written)
                fresh = current.extended(version, tail, tombstones)
                live = fresh.live_counts()
                if live != (spans, passages):
                    log.info("vector segments do not add up to the store (%s live, %s stored): rebuilding",
                             live, (spans, passages))
                    fresh = None
                elif len(fresh.dead_spans) * 4 > max(len(fresh.span), 1):
                    fresh = None  # a quarter of the rows are dead: compact
            if fresh is None:
                base = segment_rows.read_base(conn, dims, spans, passages, written)
            if not keep_reader:
                conn.execute("COMMIT")
                conn.close()
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: cannot read the vectors: {exc}") from exc
            raise
        try:
            if fresh is not None:
                if tail is not None and fresh.persisted:
                    fresh.use(segments.save_tail(cache, version.identity, fresh.segments[:-1], tail))
                return fresh, conn if keep_reader else None
            persisted = segments.save_base(cache, version.identity, base)
            if persisted:
                (cache / "generation").unlink(missing_ok=True)  # nerindex 0.2.0's tag
        except BaseException:
            if keep_reader:  # else closed above
                conn.close()
            raise
        return segments.SegmentSet(version, [base], tombstone=base.tombstone, persisted=persisted), (
            conn if keep_reader else None)

    def search(self, request: SearchRequest) -> Iterator[Hit]:
        """Top-k through the ANN index when the store is big enough for it to pay
        (:meth:`_ann_search`), else (and for ``exhaustive``) every span scored (int8, then float32
        where it matters), passages ranked by their best span (+ λ · passage); see the module
        docstring. A top-k's hits are read here; an ``--all``'s are read as they are iterated, in
        the same read transaction (:meth:`_snapshot`). A bad request raises here."""
        stamp = self.model()
        if stamp is None:  # an empty store: no match, and a total (an audit: None)
            return Matches(iter(()), total=0)
        query = query_vector(request, stamp.dims)
        conn, vec = self._snapshot()
        try:
            matches = self._search_in(conn, vec, query, request)
            if not request.exhaustive:  # a few hits: read them now and let the snapshot go
                hits = list(matches)
                conn.close()  # a review: left to the garbage collector (Python 3.13 warns), one a search
                return Matches(iter(hits), total=matches.total)
        except BaseException:
            conn.close()
            raise
        return Matches(read.closing(matches, conn), total=matches.total)

    def _snapshot(self) -> tuple[sqlite3.Connection, segments.SegmentSet]:
        """A private connection in a read transaction, and the vector segments of the version it
        reads: filters, exact re-scoring and the hits' rows then come from the state the segments
        were scored on. Read through the shared connection, a write that replaced passages while
        a search ran (re-indexing, or a second run over the same input) made the search drop them,
        with its total still counting them. WAL readers do not block writers."""
        deadline, tries = time.monotonic() + SNAPSHOT_WAIT_S, 0
        while tries < SNAPSHOT_TRIES or time.monotonic() < deadline:
            tries += 1
            vec, reader = self._vectors_and_reader(keep_reader=True)
            if reader is not None:  # just read through it: the same snapshot (a review: a steady
                return reader, vec  # writer landed between the two reads on every try)
            conn = self._reader()
            try:
                if schema.read_version(conn) == vec.version:  # the first read fixes the snapshot
                    return conn, vec
            except sqlite3.Error as exc:
                conn.close()
                raise StoreError(f"{self.path}: cannot read the store: {exc}") from exc
            conn.close()  # written since the segments were brought up to date: again
        raise StoreBusyError(f"{self.path}: the store was written {tries} times while a search began; search again")

    def _reader(self) -> sqlite3.Connection:
        """A private connection with a read transaction begun (its first read fixes the snapshot):
        the store's own connection is shared by the service's threads, and a transaction on it
        would take in their statements too. Usable from any thread (an ``--all`` is read lazily)."""
        self.check_file()  # opened by path: on a removed file it would make an empty one (a review)
        conn = sqlite3.connect(f"{(self.path / DB_NAME).resolve().as_uri()}?mode=rw", uri=True, isolation_level=None,
                               check_same_thread=False)
        conn.execute("BEGIN")
        return conn

    def _search_in(self, conn: sqlite3.Connection, vec: segments.SegmentSet, query: np.ndarray,
                   request: SearchRequest) -> Matches:  # fmt: skip
        """:meth:`search` in one snapshot (``conn``, ``vec``)."""
        if not request.exhaustive and self.use_ann and len(vec.span) >= ann.MIN_ROWS:
            if ann.available():
                found = self._ann_search(conn, vec, query, request)
                if found is not None:
                    return found
            elif not self._warned_no_ann:
                self._warned_no_ann = True
                log.warning("%s: %d spans are scanned whole for every top-k search; install faiss-cpu "
                            "(the [cpu] extra) for the ANN index", self.path, len(vec.span))
        return self._scan(conn, vec, query, request)

    def _scan(self, conn: sqlite3.Connection, vec: segments.SegmentSet, query: np.ndarray, request: SearchRequest) -> Matches:
        """The exact search: an int8 scan of every span, float32 re-scoring near each decision.
        Every span ranks its passage; only mentions are marked and make an ``--all`` answer (a
        mention's decision at the threshold is re-scored like any span's, so that set is exact)."""
        sims = vec.approx_sims(query)
        threshold, eps = request.min_similarity, segments.EPSILON
        keep = vec.alive & (sims >= threshold - eps) & filtering.restricted(conn, vec, request, self._indexed)
        idx = np.nonzero(keep)[0]
        chosen = None
        if not request.exhaustive:
            chosen = top_candidates(
                vec, idx, sims, query, min_similarity=threshold, limit=request.limit,
                passage_weight=request.passage_weight or 0.0,
            )
        near = sims[idx] < threshold + eps
        estimated = chosen is None and idx.size > EXACT_ALL_SPANS and len(vec.span) >= ann.MIN_ROWS
        # near the threshold, and the top-k candidates (--all: all unless estimated)
        rescore = idx[near | (np.isin(vec.passage[idx], chosen) if chosen is not None else not estimated)]
        sims[rescore] = read.exact(conn, vec.span[rescore], query, "spans", -np.inf)
        idx = idx[sims[idx] >= threshold]
        if idx.size == 0:
            return Matches(iter(()), total=0)
        order, first = best_first(idx, sims, vec.passage)
        best, marked = answer_and_marks(order, first, vec, exhaustive=request.exhaustive)
        total = int(best.size)
        if chosen is not None:  # top-k: only passages whose spans were all re-scored can rank
            best = best[np.isin(vec.passage[best], chosen)]
        score = sims[best].astype(np.float64)
        if request.passage_weight:
            cosines = (vec.approx_passage_sims(vec.passage[best], query) if estimated
                       else read.exact(conn, vec.passage[best], query, "passages", 0.0))
            score += request.passage_weight * cosines
        # passages by score (desc), ties by insertion order for a stable result
        rank = np.lexsort((vec.passage[best], -score))
        ranked, score = best[rank], score[rank]
        if not request.exhaustive:
            ranked, score = ranked[: max(request.limit, 0)], score[: max(request.limit, 0)]
        # the marked spans of each returned passage, flat in rank order (a top-k needs k passages' spans)
        # and first, the candidate that ranked a passage, if one did (Hit.ranked_by)
        candidate = ~vec.mention[ranked] if vec.candidates else np.zeros(ranked.size, dtype=bool)
        bounds, shown = with_rankers(*flat_runs(marked, vec.passage[marked], vec.passage[ranked]), ranked, candidate)
        found = read.Ranked(vec.passage[ranked], score, bounds, vec.span[shown], sims[shown], candidate)
        return Matches(read.hits(conn, found, vec.span_details(shown)), total=total)

    def _ann_search(self, conn: sqlite3.Connection, vec: segments.SegmentSet, query: np.ndarray,
                    request: SearchRequest) -> Matches | None:  # fmt: skip
        """Top-k from the ANN indexes, exact by the bound of :mod:`.ann_ranking` (None: the bound
        did not close, or a span filter allows under 300k spans: scan instead). A metadata or text
        filter that allows few passages scores just those; one that allows many is checked on the
        candidates (SQL on a few hundred rowids, not every allowed passage: 20k–200k rows at 1M–10M
        spans for the benchmark's filter); a span filter restricts the span list (an ID selector).
        The total number of matches is known only where the answer is short of ``limit`` (every list
        was then checked: nothing else passes); otherwise ``Matches.total`` is None."""
        filtered = bool(request.filters.metadata) or bool(request.text)
        passages_stored = max(len(vec.passage_rows), 1)
        small = filtering.SMALL_SELECTION
        bound = filtering.allowed_bound(conn, request, self._indexed, max(small + 1, passages_stored // 8)) if filtered else None
        allowed = filtering.allowed(conn, request, self._indexed) if bound is not None and bound <= small else None
        allowed_spans = filtering.allowed_spans(conn, request, self._indexed)
        weight = request.passage_weight or 0.0
        checked = filtered and allowed is None  # many allowed: check the candidates

        def score(passages: np.ndarray) -> list[Scored]:
            if checked:
                passages = filtering.allowed(conn, request, self._indexed, among=passages)
            return read.score_passages(conn, passages, query, threshold=request.min_similarity, weight=weight,
                                       allowed_spans=allowed_spans)

        if allowed is not None and not checked:
            found = score(allowed)
            return Matches(read.hits(conn, read.ranked(found, request.limit)), total=len(found))
        if allowed_spans is not None and len(allowed_spans) < ann.MIN_ROWS:
            # a span filter that allows fewer spans than an index pays for: the exact scan. The
            # index's bound covers only the lists it probed, and those missed the few allowed
            # spans: an audit had 6 of 16 searches short, 3 of them empty (spans.labels, 400k spans)
            return None
        span_bits = None if allowed_spans is None else read.bitmap(allowed_spans)
        identity = vec.version.identity  # the snapshot's (``_snapshot`` checked it against SQLite)
        spans = self._ann.get(vec, identity, "spans")
        passages = self._passage_proposer(vec, identity, query) if weight else None
        result = ann_ranking.top_k(
            query, k=request.limit, threshold=request.min_similarity, weight=weight, spans=spans, passages=passages,
            span_passages=lambda ids: vec.passage[vec.positions(ids)], score=score,
            span_bits=span_bits, max_depth=max(len(vec.span) // 16, 1024),
            spread=min(passages_stored / bound, 8.0) if bound else 1.0,
        )
        if result is None:
            log.debug("ANN bound did not close: exact scan")
            return None
        found = read.ranked(result[0], None)
        at = vec.positions(found.spans)  # all of them unless a newer set added spans to the index meanwhile
        short = len(result[0]) < request.limit  # "10 shown of at least 10" had been said of every short page (an audit)
        return Matches(read.hits(conn, found, vec.span_details(at) if at.size == found.spans.size else None),
                       total=len(result[0]) if short else None)

    def _passage_proposer(self, vec: segments.SegmentSet, identity: str, query: np.ndarray) -> ann_ranking.Proposer:
        """Where a hybrid search's passage candidates and their bound come from: an int8 scan of every
        passage vector below ann.MIN_ROWS, else the passage index with every list probed (a bound
        over the nearest lists alone missed top passages, recall@10 0.73–0.95 at 100k–320k: passage
        vectors follow topics, an audit). The scan runs when asked."""
        if len(vec.passage_rows) < ann.MIN_ROWS:
            return ann_ranking.Scanned(lambda: (vec.passage_rows, vec.approx_all_passage_sims(query)), segments.EPSILON)
        return ann_ranking.AllLists(self._ann.get(vec, identity, "passages"))

    def exhaustive_unavailable(self) -> None:
        """An exhaustive search always runs here (a scan)."""

    def passage_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """float32 passage vectors of these ids from SQLite, in the order given; unknown ids (and
        passages stored without a vector) are left out."""
        stamp = self.model()
        with self._conn() as conn:
            return read.passage_vectors(conn, ids, stamp.dims if stamp else 0)

    def disk_usage(self) -> dict[str, int]:
        """Bytes on disk: the database (with its WAL) and the derived files in ``cache/``."""
        database = sum(read.bytes_under(self.path, DB_NAME + end) for end in ("", "-wal", "-shm"))
        return {"database": database, "derived": read.bytes_under(self.path / CACHE_DIR)}

    def close(self) -> None:
        """The connection, mapped segments and ANN indexes go now, not at a garbage collection (an audit)."""
        self._shared.close()
        self._vectors = None
        self._ann.clear()

    def __enter__(self) -> "EmbeddedStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
