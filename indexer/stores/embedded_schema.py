"""The SQLite layout of the embedded store: tables, triggers, and the queries that read its version.

Kept apart from :mod:`.embedded` (which reads and writes through it) so the layout can be read in
one place; :mod:`.filters` adds the indexed filter tables on top of it.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .base import StoreVersion

log = logging.getLogger(__name__)

# One statement, so one snapshot: the store UUID, the write generation, the largest rowids and the
# last tombstone. Every insert raises a largest rowid and every delete adds a tombstone (triggers),
# so this changes with any write, and reads only index ends: no COUNT(*), which takes tens of
# milliseconds per million rows (counted only when the vectors are refreshed, see COUNTS_SQL).
VERSION_SQL = """
SELECT (SELECT value FROM meta WHERE key = 'uuid'), (SELECT value FROM meta WHERE key = 'generation'),
       (SELECT token FROM write_log WHERE generation = (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation')),
       (SELECT MAX(rowid) FROM passages), (SELECT MAX(rowid) FROM spans), (SELECT MAX(seq) FROM tombstones)
"""
# Every write transaction logs its generation with a random token. A copy of store.sqlite restored
# from a backup keeps the UUID and counts on from the backup's generation, so after one more write
# the generation alone cannot tell the new history from the one the derived files were made in;
# the token of that generation can. Files made at generation g with token t are trusted only while
# the log still holds (g, t): rows never change once written, so the rows they cover are the same.
LOG_WRITE_SQL = ("INSERT OR IGNORE INTO write_log(generation, token) "
                 "SELECT CAST(value AS INTEGER), ? FROM meta WHERE key = 'generation'")
COUNTS_SQL = "SELECT (SELECT COUNT(*) FROM spans), (SELECT COUNT(*) FROM passages)"
# 1: vectors inline (nerindex ≤ 0.2); 2: vectors in their own tables; 3: spans.mention (0: a candidate,
# a span only a model's candidate head proposed: it ranks but is never marked, records.EncodedSpan)
SCHEMA_VERSION = "3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS write_log (generation INTEGER PRIMARY KEY, token TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    fields TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spans (
    rowid INTEGER PRIMARY KEY,
    passage INTEGER NOT NULL REFERENCES passages(rowid) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    score REAL NOT NULL,
    labels TEXT NOT NULL,
    mention INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS spans_by_passage ON spans(passage);
-- float32 vectors, keyed by their passage's or span's rowid: apart from the rows a hit shows, so
-- those stay a few hundred MB at 10M spans (page-cache resident) while the vectors (15 GB there)
-- are read only where a score has to be exact
CREATE TABLE IF NOT EXISTS passage_vectors (rowid INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS span_vectors (rowid INTEGER PRIMARY KEY, vector BLOB NOT NULL);
CREATE TRIGGER IF NOT EXISTS passages_vector_drop AFTER DELETE ON passages
BEGIN DELETE FROM passage_vectors WHERE rowid = old.rowid; END;
-- the cascade of spans.passage works only with foreign keys on, which nerindex sets and the sqlite3
-- shell does not: a passage deleted there left its spans ranking searches (a store audit)
CREATE TRIGGER IF NOT EXISTS passages_spans_drop AFTER DELETE ON passages
BEGIN DELETE FROM spans WHERE passage = old.rowid; END;
-- nerindex never updates a passage row (it replaces it); an UPDATE by hand (the sqlite3 shell) left
-- its spans' offsets, its words and its filter rows as they were: marks inside words, a filter on
-- the new value finding nothing (a store audit)
CREATE TRIGGER IF NOT EXISTS passages_no_update BEFORE UPDATE OF id, text, fields ON passages
BEGIN SELECT RAISE(ABORT, 'nerindex: a passage is changed by indexing it again (nerindex index --reindex-existing), not by UPDATE'); END;
-- nor a span or a vector: an UPDATE of a span's labels by hand changed what a search showed once
-- the vector segments were made anew (details.npy holds the labels), while filters kept the old
-- ones (the stale-answer audit, round 30)
CREATE TRIGGER IF NOT EXISTS spans_no_update BEFORE UPDATE ON spans
BEGIN SELECT RAISE(ABORT, 'nerindex: a span is changed by indexing its passage again (nerindex index --reindex-existing), not by UPDATE'); END;
CREATE TRIGGER IF NOT EXISTS span_vectors_no_update BEFORE UPDATE ON span_vectors
BEGIN SELECT RAISE(ABORT, 'nerindex: a vector is changed by indexing its passage again (nerindex index --reindex-existing), not by UPDATE'); END;
CREATE TRIGGER IF NOT EXISTS passage_vectors_no_update BEFORE UPDATE ON passage_vectors
BEGIN SELECT RAISE(ABORT, 'nerindex: a vector is changed by indexing its passage again (nerindex index --reindex-existing), not by UPDATE'); END;
CREATE TRIGGER IF NOT EXISTS spans_vector_drop AFTER DELETE ON spans
BEGIN DELETE FROM span_vectors WHERE rowid = old.rowid; END;
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    text, content='passages', content_rowid='rowid', tokenize="{fts_tokenize}"
);
-- every deleted (or replaced) span and passage, so vector segments made before can leave it out
CREATE TABLE IF NOT EXISTS tombstones (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tombstones_by_row ON tombstones(kind, row);
CREATE TRIGGER IF NOT EXISTS spans_tombstone AFTER DELETE ON spans
BEGIN INSERT INTO tombstones(kind, row) VALUES ('s', old.rowid); END;
CREATE TRIGGER IF NOT EXISTS passages_tombstone AFTER DELETE ON passages
BEGIN INSERT INTO tombstones(kind, row) VALUES ('p', old.rowid); END;
"""
# Words of the text restriction: unicode61's letters, digits and private-use characters, and
# combining marks too (its default splits "मोदी" at its vowel signs into two words; Elasticsearch's
# standard tokenizer does not). Diacritics are still removed, so "Zurich" finds "Zürich".
FTS_TOKENIZE = "unicode61 categories 'L* N* Co M*'"
SCHEMA = SCHEMA.replace("{fts_tokenize}", FTS_TOKENIZE)
FTS_WITH_MARKS = [
    "DROP TABLE passages_fts",
    f"CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', content_rowid='rowid', "
    f"tokenize=\"{FTS_TOKENIZE}\")",
    "INSERT INTO passages_fts(passages_fts) VALUES ('rebuild')",
]
# Layout 1 (nerindex ≤ 0.2 and this store until schema 2) kept each vector in its passage's or
# span's row; moving them out is one transaction at the first writable open (see upgrade()).
UPGRADE_FROM_1 = [
    "DELETE FROM span_vectors",
    "DELETE FROM passage_vectors",
    "INSERT INTO span_vectors(rowid, vector) SELECT rowid, vector FROM spans ORDER BY rowid",
    "INSERT INTO passage_vectors(rowid, vector) SELECT rowid, vector FROM passages WHERE vector IS NOT NULL "
    "ORDER BY rowid",
    "ALTER TABLE spans DROP COLUMN vector",
    "ALTER TABLE passages DROP COLUMN vector",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
]
# Layout 2 had no mention flag: every span was a mention, which the column's default says. One
# O(1) statement (SQLite rewrites no row to add a column with a constant default).
UPGRADE_FROM_2 = [
    "ALTER TABLE spans ADD COLUMN mention INTEGER NOT NULL DEFAULT 1",
    "UPDATE meta SET value = '3' WHERE key = 'schema'",
]
# the highest rowid a table has ever used: new rows go above it, so a rowid is never reused; its
# vectors' table too, where a store damaged by two threads writing through one handle (fixed since)
# kept vectors without their row, on whose rowid every later write failed (an audit)
LAST_ROWID_SQL = """
SELECT MAX(COALESCE((SELECT MAX(rowid) FROM {table}), 0),
           COALESCE((SELECT MAX(rowid) FROM {vectors}), 0),
           COALESCE((SELECT MAX(row) FROM tombstones WHERE kind = '{kind}'), 0))
"""


LOCK_WAIT_S = 60.0  # how long an open waits for another process's write
BUSY_S = 5.0  # how long a write of an open store waits (sqlite3's default)


def open_problem(exc: sqlite3.DatabaseError) -> str:
    """Why :func:`connect` failed, in words: another process writing for longer than it waits, or a
    file that is no usable store."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return (f"busy: another process has been writing to it for {LOCK_WAIT_S:.0f} s (an indexing run, "
                "or a one-time upgrade of the store); try again")
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return (f"cannot open it ({text}): a folder nerindex may not write to (it writes to a store when it "
                "opens it, even to search), or a path that is not a file")
    if isinstance(exc, sqlite3.OperationalError) and any(
            cause in text for cause in ("readonly", "disk I/O error", "full")):
        # an open writes (WAL, meta, the write log): a store nerindex cannot write cannot be opened
        # (an audit: a healthy store on a full or read-only disk was called unusable)
        return (f"cannot write to it ({text}): nerindex writes to a store when it opens it, even to "
                "search; free some space or give write access to the folder")
    return f"not a usable nerindex store: {text}"


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, None while there is none: tells a replaced ``store.sqlite``."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def model_before_upgrade(db: Path) -> str | None:
    """The model (its meta row's JSON) a store of an older layout recorded, read through a read-only
    connection (which writes nothing into the store; SQLite may make its -wal and -shm files);
    None where the layout is this one's, no model is recorded, or the file cannot be read so (the
    writable open then says why). The caller refuses another model before :func:`connect`
    upgrades the layout: a store refused for its model had been upgraded all the same, and the
    older nerindex it was built with no longer read it (an upgrade audit)."""
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('schema', 'model')").fetchall())
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return rows.get("model") if rows.get("schema", SCHEMA_VERSION) != SCHEMA_VERSION else None


def connect(db: Path) -> sqlite3.Connection:
    """Open (or create) the database with the layout above; raises sqlite3.DatabaseError.

    The UUID tells this store from any other (a new store.sqlite counts its generations from 0
    again), the write log one history of it from another (a store.sqlite restored from a backup
    and written again: see ``LOG_WRITE_SQL``); a store made before either gets them now (its
    derived files are rebuilt once), one made by nerindex 0.2.0 moves its vectors to their own
    tables, and one without mention flags gets them (:func:`upgrade`).
    """
    # opening writes (meta, the write log), so it waits for another process's write, up to
    # LOCK_WAIT_S (a one-time upgrade of a big store: the text index, ~18 s a million passages), in
    # slices of a second: Python acts on Ctrl-C only between them (a review: inside one 60 s wait,
    # nerindex ignored it for a minute); once open, a write waits BUSY_S, as before
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False, timeout=1.0)
        try:
            _open(conn)
        except sqlite3.DatabaseError as exc:
            locked = "locked" in str(exc)
            try:  # a layout-1 store, which needs a writable open (a PRAGMA that may itself be locked)
                old = not locked and isinstance(exc, sqlite3.OperationalError) and _inline_vectors(conn)
            except sqlite3.Error:
                old = False
            conn.close()
            if locked and time.monotonic() < deadline:
                continue
            if old:  # e.g. read-only: name what it needs, not just the failed write
                raise sqlite3.OperationalError(f"made by an older nerindex, it needs a one-time move of its vectors, "
                                               f"with write access to the store ({exc})") from exc
            raise
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_S * 1000)}")
        return conn


def _open(conn: sqlite3.Connection) -> None:
    """The writes of an open: WAL, the layout, the store's UUID, this process's entry in the write
    log, and any one-time upgrade (:func:`upgrade`)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?), ('generation', '0'), ('uuid', ?)",
        (SCHEMA_VERSION, uuid.uuid4().hex),
    )
    conn.execute(LOG_WRITE_SQL, (write_token(),))
    upgrade(conn)


def upgrade(conn: sqlite3.Connection) -> None:
    """Bring an older store to this layout, each step in one transaction: all or nothing. A
    layout-1 store (vectors in the passage and span rows) is moved first (a store of 1M spans takes
    about a minute and, for the while, free disk about the size of its vectors); then a layout-2
    store gets its mention column (:func:`add_mentions`). A layout newer than this code knows is
    refused."""
    (version,) = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if version not in ("1", "2", SCHEMA_VERSION):
        raise sqlite3.DatabaseError(f"store layout {version} is newer than this nerindex reads ({SCHEMA_VERSION})")
    _move_vectors(conn)
    add_mentions(conn)
    fts_with_marks(conn)


def _move_vectors(conn: sqlite3.Connection) -> None:
    """Layout 1 to 2 (see :data:`UPGRADE_FROM_1`); a failure is raised: layout 1 cannot be read."""
    if not _inline_vectors(conn):
        return
    log.warning("moving the vectors of a store made by an older nerindex to their own tables (once)")
    try:
        conn.execute("BEGIN IMMEDIATE")
        if _inline_vectors(conn):  # not done meanwhile by another process
            for statement in UPGRADE_FROM_1:
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def add_mentions(conn: sqlite3.Connection) -> bool:
    """Layout 2 to 3: add ``spans.mention`` (default 1, so every stored span stays a mention);
    False where the store cannot be changed (read-only, locked for long), which leaves it readable
    as it is: :func:`mention_sql` reads every span as a mention there, which it is."""
    return _upgrade_once(conn, lambda: has_mentions(conn), UPGRADE_FROM_2,
                         "spans without a mention flag (%s): every span is read as a mention")


def fts_with_marks(conn: sqlite3.Connection) -> bool:
    """Re-make the text index of a store made before it kept combining marks in words
    (:data:`FTS_TOKENIZE`), once, in one transaction (every passage's text is tokenised again:
    1.8 s for 100k passages of 60 words, in memory, on these 2 cores). False where the store
    cannot be changed (read-only, locked for long), which leaves the older index: a word with
    marks then matches where its parts occur in that order."""
    done = "SELECT 1 FROM sqlite_master WHERE name = 'passages_fts' AND sql LIKE '%M*%'"
    return _upgrade_once(conn, lambda: conn.execute(done).fetchone() is not None, FTS_WITH_MARKS,
                         "the text index keeps its older words (%s)",
                         announce="re-making the text index so that words keep their combining marks (once)")


def _upgrade_once(conn: sqlite3.Connection, done: Callable[[], bool], statements: list[str], kept: str, *,
                  announce: str | None = None) -> bool:
    """Run ``statements`` in one write transaction unless ``done()`` (checked again inside it:
    another process may have upgraded meanwhile), saying ``announce`` first when given; False,
    logging ``kept`` with the reason, where the store cannot be changed."""
    if done():
        return True
    if announce:
        log.warning(announce)
    try:
        conn.execute("BEGIN IMMEDIATE")
        if not done():
            for statement in statements:
                conn.execute(statement)
        conn.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        log.info(kept, exc)
        return False
    return True


def has_mentions(conn: sqlite3.Connection) -> bool:
    """Whether ``spans`` has the mention column (layout 3)."""
    return "mention" in _span_columns(conn)


def mention_sql(conn: sqlite3.Connection, spans: str = "s") -> str:
    """The mention flag of the spans table aliased ``spans`` in a query: its column, or 1 in a
    layout-2 store that could not be upgraded (opened read-only), whose spans are all mentions.
    Asked per query (one PRAGMA, microseconds): another process may add the column meanwhile."""
    return f"{spans}.mention" if has_mentions(conn) else "1"


def _inline_vectors(conn: sqlite3.Connection) -> bool:
    return "vector" in _span_columns(conn)


def _span_columns(conn: sqlite3.Connection) -> list[str]:
    return [row[1] for row in conn.execute("PRAGMA table_info(spans)")]


def write_token() -> str:
    """A fresh token for the write log."""
    return secrets.token_hex(8)


def read_version(conn: sqlite3.Connection) -> StoreVersion:
    """The store version as seen by ``conn`` (see :meth:`EmbeddedStore.version`); its state
    starts with the written mark (:func:`written_mark`)."""
    store_uuid, generation, token, last_passage, last_span, tombstone = conn.execute(VERSION_SQL).fetchone()
    return StoreVersion(
        identity=str(store_uuid),
        state=f"g{generation}.{token or ''}-p{last_passage or 0}-s{last_span or 0}-t{tombstone or 0}",
    )


def written_mark(version: StoreVersion) -> str:
    """``g<generation>.<token>``: the write a version's rows were last changed by, what derived
    files record and :func:`in_history` checks."""
    return version.state.split("-", 1)[0]


def parse_mark(mark: str) -> tuple[int, str] | None:
    """(generation, token) of a write mark (:func:`written_mark`; the token is empty for a write
    the log missed); None when it is not one."""
    generation, _, token = mark.removeprefix("g").partition(".")
    return (int(generation), token) if generation.isdigit() else None


def in_history(conn: sqlite3.Connection, mark: str) -> bool:
    """Whether the write a derived file names (:func:`written_mark`) is in this store's history."""
    parsed = parse_mark(mark)
    if parsed is None or not parsed[1]:
        return False
    return conn.execute("SELECT 1 FROM write_log WHERE generation = ? AND token = ?", parsed).fetchone() is not None


def snapshot(conn: sqlite3.Connection) -> tuple[StoreVersion, int, int]:
    """(store version, span count, passage count) as seen by ``conn``, in its read transaction."""
    spans, passages = conn.execute(COUNTS_SQL).fetchone()
    return read_version(conn), spans, passages
