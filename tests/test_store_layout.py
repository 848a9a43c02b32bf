"""A store made with layout 1 (vectors inside the passage and span rows: nerindex ≤ 0.2 and main
up to c58f690) is moved to layout 2 at its first writable open, and answers as before.

The layout-1 store is written here with that layout's own SQL, kept verbatim below, not by the
current writer turned back.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

import numpy as np
import pytest

from indexer.errors import StoreError
from indexer.stores.embedded import DB_NAME, EmbeddedStore

from test_segments import STAMP, answer, make_docs, reference, requests, same, unit_rows, DIMS

LAYOUT_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE passages (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, text TEXT NOT NULL,
                       fields TEXT NOT NULL, vector BLOB);
CREATE TABLE spans (rowid INTEGER PRIMARY KEY,
                    passage INTEGER NOT NULL REFERENCES passages(rowid) ON DELETE CASCADE,
                    start INTEGER NOT NULL, end INTEGER NOT NULL, score REAL NOT NULL,
                    labels TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX spans_by_passage ON spans(passage);
CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', content_rowid='rowid');
CREATE TABLE tombstones (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, row INTEGER NOT NULL);
CREATE INDEX tombstones_by_row ON tombstones(kind, row);
CREATE TRIGGER spans_tombstone AFTER DELETE ON spans
BEGIN INSERT INTO tombstones(kind, row) VALUES ('s', old.rowid); END;
CREATE TRIGGER passages_tombstone AFTER DELETE ON passages
BEGIN INSERT INTO tombstones(kind, row) VALUES ('p', old.rowid); END;
"""


def layout_1_store(folder, docs) -> None:
    """``docs`` written as layout 1's writer wrote them, one of them with no passage vector."""
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(LAYOUT_1)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema", "1"), ("generation", "1"), ("uuid", uuid.uuid4().hex), ("model", json.dumps(STAMP.to_dict())),
    ])
    span_row = 0
    for rowid, d in enumerate(docs, start=1):
        p = d.passage
        vector = None if rowid == 2 else d.vector.tobytes()
        conn.execute("INSERT INTO passages VALUES (?, ?, ?, ?, ?)", (rowid, p.id, p.text, json.dumps(p.fields), vector))
        conn.execute("INSERT INTO passages_fts(rowid, text) VALUES (?, ?)", (rowid, p.text))
        for s in d.spans:
            span_row += 1
            conn.execute("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (span_row, rowid, s.start, s.end, s.score, json.dumps(list(s.labels)), s.vector.tobytes()))
    conn.commit()
    conn.close()


def columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_a_layout_1_store_is_moved_once_and_answers_as_before(tmp_path):
    rng = np.random.default_rng(11)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    docs = make_docs(rng, range(300), centre)
    layout_1_store(tmp_path / "s", docs)
    with EmbeddedStore.open(tmp_path / "s") as store:
        # the passage stored without a vector scores as before: passage cosine 0
        want = {d.passage.id: d for d in docs}
        want["d1"] = type(docs[1])(docs[1].passage, docs[1].spans, np.zeros(DIMS, dtype=np.float32))
        for request in requests(centre, rng):
            same(answer(store, request), reference(want, request))
        assert store.passage_vectors(["d0", "d1", "d2"]).shape == (2, DIMS)
        more = make_docs(rng, range(300, 320), centre)
        store.write(more + docs[:5])  # new passages and replaced ones, after the move
        want.update({d.passage.id: d for d in more + docs[:5]})
        want = {k: want[k] for k in [d.passage.id for d in docs[5:] + more + docs[:5]]}  # replaced: moved last
        for request in requests(centre, rng):
            same(answer(store, request), reference(want, request))
    conn = sqlite3.connect(tmp_path / "s" / DB_NAME)
    assert "vector" not in columns(conn, "spans") and "vector" not in columns(conn, "passages")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    # one vector per span and per passage (d1, rewritten, has one now); none left by the replacements
    assert conn.execute("SELECT COUNT(*) FROM span_vectors").fetchone() == conn.execute(
        "SELECT COUNT(*) FROM spans").fetchone()
    assert conn.execute("SELECT COUNT(*) FROM passage_vectors").fetchone() == (320,)
    conn.close()


def test_a_failed_move_leaves_layout_1_whole(tmp_path, monkeypatch):
    rng = np.random.default_rng(12)
    docs = make_docs(rng, range(40), unit_rows(rng.standard_normal((1, DIMS)))[0])
    layout_1_store(tmp_path / "s", docs)
    from indexer.stores import embedded_schema

    monkeypatch.setattr(embedded_schema, "UPGRADE_FROM_1", embedded_schema.UPGRADE_FROM_1[:-2] + ["SELECT nope"])
    with pytest.raises(StoreError, match="not a usable nerindex store"):
        EmbeddedStore.open(tmp_path / "s")
    conn = sqlite3.connect(tmp_path / "s" / DB_NAME)
    assert "vector" in columns(conn, "spans") and "vector" in columns(conn, "passages")
    assert conn.execute("SELECT COUNT(*) FROM span_vectors").fetchone() == (0,)
    conn.close()
    monkeypatch.undo()
    with EmbeddedStore.open(tmp_path / "s") as store:
        assert store.counts().spans == sum(len(d.spans) for d in docs)
        assert store.passage_vectors([d.passage.id for d in docs]).shape == (39, DIMS)  # d1 had none


def test_a_newer_layout_is_refused(tmp_path):
    with EmbeddedStore.open(tmp_path / "s"):
        pass
    conn = sqlite3.connect(tmp_path / "s" / DB_NAME)
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="layout 3 is newer"):
        EmbeddedStore.open(tmp_path / "s")


def test_a_layout_1_store_that_cannot_be_written_says_what_it_needs(tmp_path, monkeypatch):
    rng = np.random.default_rng(13)
    docs = make_docs(rng, range(5), unit_rows(rng.standard_normal((1, DIMS)))[0])
    layout_1_store(tmp_path / "s", docs)
    real = sqlite3.connect

    def read_only(*args, **kwargs):  # root writes through file modes: refuse writes in SQLite instead
        conn = real(*args, **kwargs)
        conn.execute("PRAGMA query_only = ON")
        return conn

    from indexer.stores import embedded_schema

    monkeypatch.setattr(embedded_schema.sqlite3, "connect", read_only)
    with pytest.raises(StoreError, match="one-time move of its vectors, with write access"):
        EmbeddedStore.open(tmp_path / "s")
    monkeypatch.undo()
    with EmbeddedStore.open(tmp_path / "s") as store:  # with write access: moved, and searchable
        assert store.counts().spans == sum(len(d.spans) for d in docs)
