"""Metadata filters and span-label filters through indexed tables, against the JSON they index.

The tables are filled by triggers, so any writer fills them, and back-filled once when a store made
before them (nerindex 0.2.0) is opened; a store that cannot be changed keeps filtering over JSON.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores import filters
from indexer.stores.base import ModelStamp, SearchRequest
from indexer.stores.filter_rules import Filters
from indexer.stores.embedded import DB_NAME, EmbeddedStore

DIMS = 16
STAMP = ModelStamp("synthetic", "1", DIMS, "f" * 64)
FIELDS = [
    {"lang": "en", "year": 2020, "tags": ["a", "b"]},
    {"lang": "de", "year": 2021.5, "tags": [], "flag": True},
    {"lang": ["en", "fr"], "year": "2020", "nested": {"x": 1, "y": "z"}, "flag": False},
    {"year": None, "tags": ["b", 3, [1, 2]], "a.b": "dotted"},
    {},
]
ASKED = [
    {"lang": "en"}, {"lang": ["de", "fr"]}, {"year": 2020}, {"year": "2021.5"}, {"tags": "b"}, {"tags": 3},
    {"tags": "[1,2]"}, {"flag": True}, {"flag": 0}, {"nested": 1}, {"nested": "z"}, {"a.b": "dotted"},
    {"year": None}, {"lang": "en", "year": "2020"}, {"missing": "x"}, {"spans.labels": "l1"},
    {"spans.labels": ["l0", "l2"], "lang": "en"}, {"spans.labels": "l1", "spans.text": "Word"},
]


def docs(rng: np.random.Generator, n: int = 40) -> list[EncodedPassage]:
    out = []
    for i in range(n):
        vecs = rng.standard_normal((3, DIMS)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        spans = tuple(EncodedSpan(0, 4, "Word", 0.9, v, (f"l{(i + k) % 3}",)) for k, v in enumerate(vecs))
        out.append(EncodedPassage(Passage(f"p{i}", "Word and more.", FIELDS[i % len(FIELDS)]), spans, vecs[0]))
    return out


def answers(store: EmbeddedStore) -> list[list[tuple[str, tuple[float, ...]]]]:
    q = np.ones(DIMS, dtype=np.float32) / np.sqrt(DIMS)
    out = []
    for where in ASKED:
        hits = store.search(SearchRequest(q, -1.0, exhaustive=True, filters=Filters.of(where)))
        out.append([(h.id, tuple(round(s.similarity, 5) for s in h.spans)) for h in hits])
    return out


def test_indexed_filters_answer_as_the_json_ones(tmp_path):
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write(docs(np.random.default_rng(3)))
        store.write(docs(np.random.default_rng(4), 10))  # replaces p0..p9: the old rows must go
        assert store._indexed
        indexed = answers(store)
        store._indexed = False  # the JSON path, as for a store that cannot be migrated
        assert answers(store) == indexed
    assert any(indexed) and not all(indexed)


def written(folder, seed: int) -> tuple[list, sqlite3.Connection]:
    """(answers of a store filled with ``docs``, a plain connection to its database)."""
    with EmbeddedStore.open(folder) as store:
        store.check_model(STAMP)
        store.write(docs(np.random.default_rng(seed)))
        expected = answers(store)
    return expected, sqlite3.connect(folder / DB_NAME)


def test_a_store_from_before_the_tables_is_back_filled_on_open(tmp_path):
    folder = tmp_path / "s"
    expected, conn = written(folder, 5)  # made as nerindex 0.2.0 left it: no tables, no triggers
    for name in ("passages_fields_add", "passages_fields_drop", "spans_labels_add", "spans_labels_drop"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE passage_fields")
    conn.execute("DROP TABLE span_labels")
    conn.execute("DELETE FROM meta WHERE key = ?", (filters.INDEX_FLAG,))
    conn.commit()
    conn.close()
    with EmbeddedStore.open(folder) as store:
        assert store._indexed
        assert answers(store) == expected
        (rows,) = sqlite3.connect(store.path / DB_NAME).execute("SELECT COUNT(*) FROM span_labels").fetchone()
        assert rows == store.counts().spans


def test_span_labels_of_layout_1_are_rebuilt_as_one_tree(tmp_path):
    folder = tmp_path / "s"
    expected, conn = written(folder, 8)
    for statement in filters.OLD_LABELS + [  # layout 1 as it was made, verbatim
        "CREATE TABLE span_labels (span INTEGER NOT NULL, label TEXT NOT NULL)",
        "CREATE INDEX span_labels_by_label ON span_labels(label, span)",
        "CREATE INDEX span_labels_by_span ON span_labels(span)",
        "CREATE TRIGGER spans_labels_add AFTER INSERT ON spans "
        "BEGIN INSERT INTO span_labels(span, label) SELECT new.rowid, value FROM json_each(new.labels); END",
        "CREATE TRIGGER spans_labels_drop AFTER DELETE ON spans BEGIN DELETE FROM span_labels WHERE span = old.rowid; END",
        "INSERT INTO span_labels(span, label) SELECT s.rowid, l.value FROM spans AS s, json_each(s.labels) AS l",
        f"UPDATE meta SET value = '1' WHERE key = '{filters.INDEX_FLAG}'",
    ]:
        conn.execute(statement)
    conn.commit()
    conn.close()
    with EmbeddedStore.open(folder) as store:
        assert store._indexed
        assert answers(store) == expected
        with store._conn() as conn:
            (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'span_labels'").fetchone()
            assert "WITHOUT ROWID" in sql
            assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'span_labels_by_%'").fetchall()
            pairs = "SELECT COUNT(*) FROM spans AS s, json_each(s.labels)"
            assert conn.execute("SELECT COUNT(*) FROM span_labels").fetchone() == conn.execute(pairs).fetchone()
        store.write(docs(np.random.default_rng(9)))  # replaces the passages: the triggers keep the tree right
        with store._conn() as conn:
            assert conn.execute("SELECT COUNT(*) FROM span_labels").fetchone() == conn.execute(pairs).fetchone()
        (stale,) = conn.execute("SELECT COUNT(*) FROM span_labels WHERE span NOT IN (SELECT rowid FROM spans)").fetchone()
        assert stale == 0


def test_a_read_only_old_store_filters_over_json(tmp_path):
    folder = tmp_path / "s"
    expected, conn = written(folder, 6)
    conn.execute("DELETE FROM meta WHERE key = ?", (filters.INDEX_FLAG,))
    conn.commit()
    conn.close()
    conn = sqlite3.connect(f"file:{folder / DB_NAME}?mode=ro", uri=True, isolation_level=None)
    assert filters.ensure_index(conn) is False
    conn.close()
    with EmbeddedStore.open(folder) as store:
        store._indexed = False
        assert answers(store) == expected


@pytest.mark.parametrize("where", [{"lang": "en"}, {"spans.labels": "l1"}])
def test_filtered_search_reads_the_index_not_the_json(tmp_path, where):
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write(docs(np.random.default_rng(7)))
        statements: list[str] = []
        snapshot = store._snapshot  # a search reads through its own connection (one read transaction)

        def traced():
            conn, vec = snapshot()
            conn.set_trace_callback(statements.append)
            return conn, vec

        store._snapshot = traced
        list(store.search(SearchRequest(np.ones(DIMS, dtype=np.float32), -1.0, limit=3, filters=Filters.of(where))))
    chosen = [s for s in statements if "passage_fields" in s or "span_labels" in s]
    assert chosen and not any("json_each" in s for s in chosen)


NUMBERS = [{"ratio": 0.30000000000000004}, {"ratio": 1e-05}, {"ratio": 1e16}, {"score": 1.0}, {"year": 2001},
           {"ratio": "0.30000000000000004"}, {"score": True}]


@pytest.mark.parametrize("indexed", [True, False])
@pytest.mark.parametrize("where, expected", [
    ({"ratio": 0.30000000000000004}, ["n0", "n5"]),  # the stored real, and the stored text
    ({"ratio": "0.30000000000000004"}, ["n0", "n5"]),
    ({"ratio": 1e-05}, ["n1"]), ({"ratio": "1e-05"}, ["n1"]), ({"ratio": "1.0e-05"}, ["n1"]),
    ({"ratio": 1e16}, ["n2"]), ({"ratio": "1e16"}, ["n2"]),
    ({"score": 1}, ["n3"]), ({"score": "1"}, ["n3"]), ({"score": 1.0}, ["n3"]), ({"score": "1.0"}, ["n3"]),
    ({"score": True}, ["n6"]), ({"score": "true"}, ["n6"]), ({"score": "True"}, ["n6"]), ({"score": False}, []),
    ({"year": 2001.0}, ["n4"]), ({"year": "2001.0"}, ["n4"]), ({"year": "2001"}, ["n4"]),
    ({"year": "2001.5"}, []), ({"ratio": "0.3x"}, []),
])
def test_numbers_match_whether_written_as_integers_reals_or_text(tmp_path, indexed, where, expected):
    """A filter number (or a text that is one: the CLI's ``--where``) matches the stored number in
    whichever form either side has it, and a boolean only a boolean (found by an audit:
    ``year=2001.0`` and ``score=1`` against a stored 1.0 matched nothing, ``flag=true`` no stored
    true, and a 1 matched a stored true), on the JSON path and through the index alike; and the
    rule applied in Python (the service's Search UI filters) decides every case as the store."""
    rng = np.random.default_rng(5)
    vec = rng.standard_normal(DIMS).astype(np.float32)
    vec /= np.linalg.norm(vec)
    with EmbeddedStore.open(tmp_path / "s") as store:
        store.check_model(STAMP)
        store.write([EncodedPassage(Passage(f"n{i}", "Word.", f), (EncodedSpan(0, 4, "Word", 0.9, vec, ()),), vec)
                     for i, f in enumerate(NUMBERS)])
        store._indexed = indexed
        hits = store.search(SearchRequest(vec, -1.0, exhaustive=True, filters=Filters.of(where)))
        assert sorted(h.id for h in hits) == expected
    ((key, value),) = where.items()
    assert sorted(f"n{i}" for i, f in enumerate(NUMBERS) if key in f and filters.field_matches(value, f[key])) == expected


def word_vector(seed: int) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)
    return vec / np.linalg.norm(vec)


def word_doc(pid: str, fields: dict, vec: np.ndarray) -> EncodedPassage:
    """A passage "Word." with these fields, its one span and the passage both ``vec``."""
    return EncodedPassage(Passage(pid, "Word.", fields), (EncodedSpan(0, 4, "Word", 0.9, vec, ("l0",)),), vec)


def store_at_layout(folder, docs: list[EncodedPassage], layout: str, *statements: str) -> None:
    """A store holding ``docs`` whose filter tables ``statements`` make look as filter layout
    ``layout`` left them (the next writable open upgrades them)."""
    with EmbeddedStore.open(folder) as store:
        store.check_model(STAMP)
        store.write(docs)
    conn = sqlite3.connect(folder / DB_NAME)
    for statement in statements:
        conn.execute(statement)
    conn.execute(f"UPDATE meta SET value = '{layout}' WHERE key = '{filters.INDEX_FLAG}'")
    conn.commit()
    conn.close()


def test_booleans_of_a_layout_2_store_are_stored_again_as_true_and_false(tmp_path):
    """Layout 2 kept a stored true as "1" in passage_fields (and its trigger wrote it so): the
    first writable open refills passage_fields, and the trigger writes the new way."""
    vec = word_vector(6)
    folder = tmp_path / "s"
    store_at_layout(folder, [word_doc("yes", {"flag": True}, vec), word_doc("one", {"flag": 1}, vec)], "2",
                    f"UPDATE passage_fields SET value = '1' WHERE value = '{filters.BOOLEAN_MARK}true'",  # as layout 2 did
                    "INSERT INTO span_labels(label, span) VALUES ('sentinel', 999)")  # gone if it were rebuilt
    with EmbeddedStore.open(folder) as store:
        store.write([word_doc("later", {"flag": True}, vec)])
        for where, expected in (({"flag": True}, ["later", "yes"]), ({"flag": 1}, ["one"])):
            hits = store.search(SearchRequest(vec, -1.0, exhaustive=True, filters=Filters.of(where)))
            assert sorted(h.id for h in hits) == expected
        assert sqlite3.connect(store.path / DB_NAME).execute("SELECT span FROM span_labels WHERE label = 'sentinel'").fetchall() == [(999,)]


def test_object_members_of_a_layout_3_store_are_dropped(tmp_path):
    """Layout 3 indexed an object's member values (so ``nested=1`` matched ``{"x": 1}``): the first
    writable open refills passage_fields, and objects match no filter value, as in Elasticsearch."""
    vec = word_vector(7)
    folder = tmp_path / "s"
    store_at_layout(folder, [word_doc("o", {"nested": {"x": 1}}, vec)], "3",
                    "INSERT INTO passage_fields(passage, key, value) SELECT rowid, 'nested', '1' FROM passages")  # as layout 3 had it
    with EmbeddedStore.open(folder) as store:
        assert list(store.search(SearchRequest(vec, -1.0, exhaustive=True, filters=Filters.of({"nested": 1})))) == []
        assert sqlite3.connect(store.path / DB_NAME).execute("SELECT COUNT(*) FROM passage_fields").fetchone() == (0,)


def test_numbers_of_a_layout_4_store_are_stored_again_with_their_mark(tmp_path):
    """Layout 4 kept a stored number as its plain text, so "007" (its texts "7", "7.0") matched the
    strings "7" and "7.0": the first writable open refills passage_fields with the type marks."""
    vec = word_vector(8)
    folder = tmp_path / "s"
    docs = [word_doc("s7", {"code": "7"}, vec), word_doc("n7", {"code": 7}, vec), word_doc("s007", {"code": "007"}, vec)]
    store_at_layout(folder, docs, "4",
                    f"UPDATE passage_fields SET value = substr(value, 2) WHERE value LIKE '{filters.NUMBER_MARK}%'")
    with EmbeddedStore.open(folder) as store:
        hits = store.search(SearchRequest(vec, -1.0, exhaustive=True, filters=Filters.of({"code": "007"})))
        assert sorted(h.id for h in hits) == ["n7", "s007"]
        assert sqlite3.connect(store.path / DB_NAME).execute("SELECT value FROM meta WHERE key = ?", (filters.INDEX_FLAG,)).fetchone() == (filters.INDEX_LAYOUT,)


def test_a_string_stored_with_a_type_mark_before_writers_refused_it_matches_no_filter(tmp_path):
    """An upgrade audit: a store filled by 0.2.0 held "\ufdd07" and "\ufdd1true" as strings; once the
    filter table had the marks (layout 5), code=7 and flag=True found them as the number and the
    boolean, and the flag facet merged the string into the boolean's row. Layout 6 makes such a
    string no value a filter compares, over the index and over the JSON alike."""
    vec = word_vector(8)
    folder = tmp_path / "s"
    docs = [word_doc("m1", {"code": "\ufdd07", "flag": "\ufdd1true"}, vec),  # Store.write does not check
            word_doc("m2", {"code": 7, "flag": True}, vec)]
    store_at_layout(folder, docs, "5",  # as layout 5 filled it: the string kept as it is
                    "UPDATE passage_fields SET value = (SELECT json_extract(p.fields, '$.' || passage_fields.key) "
                    "FROM passages AS p WHERE p.rowid = passage_fields.passage) WHERE passage = (SELECT rowid FROM passages WHERE id = 'm1')")
    with EmbeddedStore.open(folder) as store:
        for wanted in ({"code": 7}, {"code": "7"}, {"flag": True}, {"flag": "TRUE"}):
            hits = store.search(SearchRequest(vec, -1.0, exhaustive=True, filters=Filters.of(wanted)))
            assert [h.id for h in hits] == ["m2"], wanted
            clause, params = filters.filter_sql(Filters.of(wanted))  # over the JSON (a read-only store)
            rows = sqlite3.connect(store.path / DB_NAME).execute(f"SELECT id FROM passages WHERE {clause}", params).fetchall()
            assert rows == [("m2",)], wanted
        absent = store.search(SearchRequest(vec, -1.0, exhaustive=True, filters=Filters.of({"code": None})))
        assert [h.id for h in absent] == ["m1"]  # it holds no value a filter compares
    assert filters.stored_values(["\ufdd07", 7]) == [7]
