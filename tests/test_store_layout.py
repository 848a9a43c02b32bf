"""Older store layouts are brought to this one at their first writable open, and answer as before:
layout 1 (vectors inside the passage and span rows: nerindex ≤ 0.2 and main up to c58f690) has its
vectors moved; layout 2 (spans without a mention flag: every span a mention) gets the flag.

The old stores are written here with their layout's own SQL, kept verbatim below, not by the
current writer turned back.
"""

from __future__ import annotations

import json
import sqlite3
import uuid

import numpy as np
import pytest

from indexer.errors import StoreError
from indexer.stores import ann, embedded_schema, segment_rows, segments
from indexer.stores.embedded import CACHE_DIR, DB_NAME, EmbeddedStore

from test_segments import (STAMP, answer, as_written_before_mention_flags, make_docs, reference, requests, same,
                           unit_rows, DIMS)

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
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (embedded_schema.SCHEMA_VERSION,)
    assert "mention" in columns(conn, "spans")
    # one vector per span and per passage (d1, rewritten, has one now); none left by the replacements
    assert conn.execute("SELECT COUNT(*) FROM span_vectors").fetchone() == conn.execute(
        "SELECT COUNT(*) FROM spans").fetchone()
    assert conn.execute("SELECT COUNT(*) FROM passage_vectors").fetchone() == (320,)
    conn.close()


def test_a_store_of_another_model_is_refused_before_its_layout_is_moved(tmp_path):
    """An upgrade audit: a store of an older nerindex, opened with another model, was refused (exit
    4) after its layout had been moved, so the nerindex it was built with no longer read it."""
    import dataclasses

    from indexer.errors import ModelMismatchError

    rng = np.random.default_rng(13)
    layout_1_store(tmp_path / "s", make_docs(rng, range(5), unit_rows(rng.standard_normal((1, DIMS)))[0]))
    other = dataclasses.replace(STAMP, checksum="f" * len(STAMP.checksum))
    with pytest.raises(ModelMismatchError, match="use the model folder the store was built with"):
        EmbeddedStore.open(tmp_path / "s", model=other)
    conn = sqlite3.connect(tmp_path / "s" / DB_NAME)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
    assert "vector" in columns(conn, "spans")
    conn.close()
    with EmbeddedStore.open(tmp_path / "s", model=STAMP) as store:  # its own model: moved as before
        assert store.counts().passages == 5


def test_a_failed_move_leaves_layout_1_whole(tmp_path, monkeypatch):
    rng = np.random.default_rng(12)
    docs = make_docs(rng, range(40), unit_rows(rng.standard_normal((1, DIMS)))[0])
    layout_1_store(tmp_path / "s", docs)
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
    conn.execute("UPDATE meta SET value = '4' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="layout 4 is newer"):
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

    monkeypatch.setattr(embedded_schema.sqlite3, "connect", read_only)
    with pytest.raises(StoreError, match="one-time move of its vectors, with write access"):
        EmbeddedStore.open(tmp_path / "s")
    monkeypatch.undo()
    with EmbeddedStore.open(tmp_path / "s") as store:  # with write access: moved, and searchable
        assert store.counts().spans == sum(len(d.spans) for d in docs)


# layout 2 (main up to the mention flag): this layout without spans.mention, the one column layout 3
# added (its schema is SCHEMA less that column, the same tables, indexes and triggers)
LAYOUT_2 = ["ALTER TABLE spans DROP COLUMN mention"]


def layout_2_store(folder, docs) -> None:
    """``docs`` written as layout 2's writer wrote them, with the int8 cache that nerindex saved
    then (``seg3``: no mention flags)."""
    folder.mkdir()
    conn = sqlite3.connect(folder / DB_NAME)
    conn.executescript(embedded_schema.SCHEMA)
    for statement in LAYOUT_2:
        conn.execute(statement)
    identity = uuid.uuid4().hex
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [
        ("schema", "2"), ("generation", "1"), ("uuid", identity), ("model", json.dumps(STAMP.to_dict())),
    ])
    conn.execute("INSERT INTO write_log VALUES (1, 'abcd')")
    span_row = 0
    for rowid, d in enumerate(docs, start=1):
        p = d.passage
        conn.execute("INSERT INTO passages VALUES (?, ?, ?, ?)", (rowid, p.id, p.text, json.dumps(p.fields)))
        conn.execute("INSERT INTO passage_vectors VALUES (?, ?)", (rowid, d.vector.tobytes()))
        conn.execute("INSERT INTO passages_fts(rowid, text) VALUES (?, ?)", (rowid, p.text))
        for s in d.spans:
            span_row += 1
            conn.execute("INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?)",
                         (span_row, rowid, s.start, s.end, s.score, json.dumps(list(s.labels))))
            conn.execute("INSERT INTO span_vectors VALUES (?, ?)", (span_row, s.vector.tobytes()))
    conn.commit()
    base = segment_rows.read_base(conn, DIMS, span_row, len(docs), "g1.abcd")
    conn.close()
    assert segments.save_base(folder / CACHE_DIR, identity, base)
    as_written_before_mention_flags(folder / CACHE_DIR)


def test_a_layout_2_store_reads_every_span_as_a_mention_and_gets_the_flag_at_a_writable_open(tmp_path, monkeypatch):
    rng = np.random.default_rng(14)
    centre = unit_rows(rng.standard_normal((1, DIMS)))[0]
    docs = {d.passage.id: d for d in make_docs(rng, range(300), centre)}
    folder = tmp_path / "s"
    layout_2_store(folder, list(docs.values()))
    asked = requests(centre, rng)
    rebuilds = []
    real = segment_rows.read_base
    monkeypatch.setattr(segment_rows, "read_base", lambda *a: rebuilds.append(1) or real(*a))

    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, isolation_level=None)
    assert embedded_schema.add_mentions(conn) is False and embedded_schema.mention_sql(conn) == "1"
    conn.close()
    # a store the flag cannot be added to (as read-only: a real read-only open fails earlier, at the
    # write log) reads every span as a mention, by the scan and by the ANN path's exact scoring
    with monkeypatch.context() as refused:
        refused.setattr(embedded_schema, "UPGRADE_FROM_2", ["SELECT no_such_column"])
        with EmbeddedStore.open(folder) as store:
            for request in asked:
                same(answer(store, request), reference(docs, request))
            if ann.available():
                refused.setattr(ann, "MIN_ROWS", 0)
                for request in asked:
                    if not request.exhaustive:
                        same((answer(store, request)[0], None), (reference(docs, request)[0], None))  # no total
                assert "spans" in store._ann._indexes  # the ANN path answered
    assert rebuilds == [1]  # the seg3 cache was not trusted
    conn = sqlite3.connect(folder / DB_NAME)
    assert "mention" not in columns(conn, "spans")
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    conn.close()

    with EmbeddedStore.open(folder) as store:  # writable: the flag is added, every span a mention
        assert sqlite3.connect(store.path / DB_NAME).execute("SELECT COUNT(*), SUM(mention) FROM spans").fetchone() == (store.counts().spans,) * 2
        for request in asked:
            same(answer(store, request), reference(docs, request))
        assert rebuilds == [1]  # adding a column changes no row: the cache made above stays valid
        more = make_docs(rng, range(300, 340), centre, candidates=0.5) + make_docs(rng, range(10), centre, 0.5)
        store.write(more)
        docs.update({d.passage.id: d for d in more})
        docs = {k: docs[k] for k in [*(f"d{i}" for i in range(10, 340)), *(f"d{i}" for i in range(10))]}
        for request in asked:
            same(answer(store, request), reference(docs, request))
    conn = sqlite3.connect(folder / DB_NAME)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (embedded_schema.SCHEMA_VERSION,)
    assert conn.execute("SELECT COUNT(*) FROM spans WHERE mention = 0").fetchone()[0] > 0
    conn.close()
