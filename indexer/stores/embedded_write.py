"""Writing passages into the embedded store: one transaction per call, and the connection that
every thread of a process shares (:class:`SharedConnection`).

Kept apart from :mod:`.embedded`, which decides when to write and what a search reads; here is
only how a chunk of encoded passages becomes rows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Sequence, TypeVar

import numpy as np

from ..errors import StoreError
from ..records import EncodedPassage
from . import embedded_schema as schema
from .base import WriteOutcome, document_problem


class SharedConnection:
    """The store's own connection, shared by a process's threads (the web service's, a script's),
    with a count of the uses under way that :meth:`close` waits for: closing it while another
    thread stepped a statement on it crashed the process (an audit: a segmentation fault in 3 of 6
    runs of searches racing ``close()``). After :meth:`close` every use is a StoreError.

    Uses take turns (one ``with`` block at a time, re-entrant in a thread): a SQLite transaction
    belongs to the connection, not to a thread, so two threads writing through one handle ran in
    one transaction, and the second one's failed BEGIN rolled back the first one's rows, whose
    remaining inserts then committed one by one (an audit: passages stored without spans or a
    vector, and a store that refused every later write). Every block is a few statements; searches
    scan on connections of their own."""

    def __init__(self, conn: sqlite3.Connection, where: str) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._where = where
        self._users, self._closed = 0, False
        self._state = threading.Condition()
        self._turn = threading.RLock()
        self._mine = threading.local()  # this thread's uses: close() inside one does not wait for itself

    @contextmanager
    def use(self) -> Iterator[sqlite3.Connection]:
        """The connection, for the statements of one ``with`` block (results fetched inside it)."""
        with self._turn:  # a use counts once it has its turn: close() inside one waited for a waiter (a review)
            with self._state:
                if self._closed or self._conn is None:
                    raise StoreError(f"{self._where}: this store was closed (close()): open it again")
                self._users += 1
                conn = self._conn
            self._mine.uses = getattr(self._mine, "uses", 0) + 1
            try:
                yield conn
            finally:
                self._mine.uses -= 1
                with self._state:
                    self._users -= 1
                    self._state.notify_all()

    def close(self) -> None:
        """Refuse new uses, wait for other threads' uses under way, then close. Interrupted while it
        waits (Ctrl-C), the connection stays open and a second call waits again (a review: it had
        returned at once, leaving the connection open)."""
        with self._state:
            if self._conn is None:
                return
            self._closed = True
            own = getattr(self._mine, "uses", 0)
            self._state.wait_for(lambda: self._users <= own)
            conn, self._conn = self._conn, None
        conn.close()


T = TypeVar("T")


def write_passages(conn: sqlite3.Connection, docs: Sequence[EncodedPassage], *, replace: bool,
                   dims: int | None = None) -> list[WriteOutcome]:  # fmt: skip
    """Insert (or, with ``replace``, replace) passages with their spans in one transaction; without
    ``replace`` a stored id is skipped, decided inside the transaction; a passage whose vectors no
    search could score (``base.document_problem``, ``dims`` those of the store's model) is a failed
    outcome. Raises sqlite3.Error (rolled back: nothing of the call is stored)."""

    def work() -> tuple[list[WriteOutcome], bool]:
        outcomes: list[WriteOutcome] = []
        (passage_row,) = conn.execute(schema.LAST_ROWID_SQL.format(table="passages", vectors="passage_vectors", kind="p")).fetchone()
        (span_row,) = conn.execute(schema.LAST_ROWID_SQL.format(table="spans", vectors="span_vectors", kind="s")).fetchone()
        for doc in docs:
            p = doc.passage
            if (problem := document_problem(doc, dims)) is not None:
                outcomes.append(WriteOutcome(p.id, False, "failed", problem))
                continue
            old = conn.execute("SELECT rowid, text FROM passages WHERE id = ?", (p.id,)).fetchone()
            if old is not None and not replace:
                outcomes.append(WriteOutcome(p.id, True, "skipped"))
                continue
            if old is not None:
                _remove(conn, old)
            passage_row += 1
            _insert(conn, doc, passage_row, span_row)
            span_row += len(doc.spans)
            outcomes.append(WriteOutcome(p.id, True, "updated" if old else "created"))
        return outcomes, any(o.ok and o.action != "skipped" for o in outcomes)  # a write that stored nothing changes no version

    return _in_write_transaction(conn, work)


def delete_passages(conn: sqlite3.Connection, ids: Sequence[str]) -> list[str]:
    """Remove the passages of these ids, with their spans and vectors (the schema's triggers), in
    one transaction; the ids that were stored, in the order given. Ids not stored are no error.
    Raises sqlite3.Error (rolled back: nothing is removed)."""

    def work() -> tuple[list[str], bool]:
        removed: list[str] = []
        for pid in dict.fromkeys(ids):
            old = conn.execute("SELECT rowid, text FROM passages WHERE id = ?", (pid,)).fetchone()
            if old is not None:
                _remove(conn, old)
                removed.append(pid)
        return removed, bool(removed)  # a call that removed nothing changes no version

    return _in_write_transaction(conn, work)


def _in_write_transaction(conn: sqlite3.Connection, work: Callable[[], tuple[T, bool]]) -> T:
    """``work()`` inside one ``BEGIN IMMEDIATE`` transaction, committed with a new write generation
    (and a write-log entry) where it reports a change, rolled back on any error."""
    if conn.in_transaction:  # another user's transaction: never roll back what this call did not begin
        raise sqlite3.OperationalError("a transaction of another write is open on this connection")
    try:
        conn.execute("BEGIN IMMEDIATE")
        result, changed = work()
        if changed:
            conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
            conn.execute(schema.LOG_WRITE_SQL, (schema.write_token(),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _remove(conn: sqlite3.Connection, old: tuple[int, str]) -> None:
    """One stored passage (rowid, text) out of the full-text index and the store; the triggers
    drop its spans and vectors and leave tombstones for the derived files."""
    conn.execute("INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', ?, ?)", old)
    conn.execute("DELETE FROM passages WHERE rowid = ?", (old[0],))


def stored_ids(connection: Callable[[], ContextManager[sqlite3.Connection]], page: int) -> Iterator[str]:
    """Every stored passage id in rowid order, ``page`` ids a turn on ``connection()``, held only for
    its query (a caller may take its time between pages)."""
    after = 0
    while True:
        with connection() as conn:
            rows = conn.execute("SELECT rowid, id FROM passages WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, page)).fetchall()
        if not rows:
            return
        after = rows[-1][0]
        yield from (pid for _, pid in rows)


def _insert(conn: sqlite3.Connection, doc: EncodedPassage, rowid: int, span_row: int) -> None:
    """One passage's rows: the passage, its vector and text index entry, its spans and theirs."""
    p = doc.passage
    conn.execute("INSERT INTO passages(rowid, id, text, fields) VALUES (?, ?, ?, ?)",
                 (rowid, p.id, p.text, json.dumps(p.fields, ensure_ascii=False)))
    conn.execute("INSERT INTO passage_vectors(rowid, vector) VALUES (?, ?)", (rowid, blob(doc.vector)))
    conn.execute("INSERT INTO passages_fts(rowid, text) VALUES (?, ?)", (rowid, p.text))
    conn.executemany(
        "INSERT INTO spans(rowid, passage, start, end, score, labels, mention) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(span_row + k, rowid, s.start, s.end, float(s.score), json.dumps(list(s.labels)), int(s.mention))
         for k, s in enumerate(doc.spans, start=1)],
    )
    conn.executemany("INSERT INTO span_vectors(rowid, vector) VALUES (?, ?)",
                     [(span_row + k, blob(s.vector)) for k, s in enumerate(doc.spans, start=1)])


def blob(vector: np.ndarray) -> bytes:
    """A vector as the float32 bytes the store keeps."""
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()
