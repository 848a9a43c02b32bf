"""The embedded SQLite store against the shared conformance suite, plus its own behaviours."""

from __future__ import annotations

import math
import sqlite3

import numpy as np
import pytest

from indexer.errors import SearchError, StoreError
from indexer.stores.base import SearchRequest
from indexer.stores.filter_rules import Filters
from indexer.stores.embedded import EmbeddedStore
from indexer.stores.filters import filter_sql, fts_query

from store_conformance import DINO, StoreConformance, corpus


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore.open(tmp_path / "store")
    yield s
    s.close()


class TestEmbeddedStore(StoreConformance):
    pass


def test_open_without_create_refuses_missing(tmp_path):
    with pytest.raises(StoreError, match="no nerindex store"):
        EmbeddedStore.open(tmp_path / "nothing", create=False)


def test_not_a_database(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "store.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable"):
        EmbeddedStore.open(folder)


def test_reopen_keeps_data_and_model(tmp_path, stamp):
    with EmbeddedStore.open(tmp_path / "s") as s:
        s.check_model(stamp)
        s.write(corpus())
    with EmbeddedStore.open(tmp_path / "s", create=False) as s:
        assert s.model() == stamp
        assert s.counts().passages == 5
        hits = list(s.search(SearchRequest(vector=DINO, min_similarity=0.5)))
        assert [h.id for h in hits] == ["p1", "p2", "p3"]


def test_failed_write_leaves_nothing(tmp_path, stamp):
    with EmbeddedStore.open(tmp_path / "s") as s:
        s.check_model(stamp)
        docs = corpus()
        bad = docs[1].__class__(docs[1].passage, docs[1].spans, vector=docs[1].vector)
        # a fields value that JSON cannot encode fails mid-batch
        broken = docs[2].__class__(
            docs[2].passage.__class__("p3", "x", {"bad": object()}), (), docs[2].vector
        )
        with pytest.raises(TypeError):
            s.write([docs[0], bad, broken])
        assert s.counts().passages == 0


def test_vectors_reload_after_write(tmp_path, stamp):
    with EmbeddedStore.open(tmp_path / "s") as s:
        s.check_model(stamp)
        s.write(corpus()[1:])
        assert [h.id for h in s.search(SearchRequest(vector=DINO, min_similarity=0.9))] == []
        s.write(corpus()[:1])
        assert [h.id for h in s.search(SearchRequest(vector=DINO, min_similarity=0.9))] == ["p1"]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Nile", '"Nile"'),
        ('say "hi" OR NOT x', '"say" "hi" "OR" "NOT" "x"'),
        ("naïve café", '"naïve" "café"'),
        # the words the full-text index takes (an audit): "_" splits, a private-use character joins
        ("foo_bar", '"foo bar"'),  # one written word: its pieces next to each other, a phrase (an audit)
        ("a\ue000b c", '"a\ue000b" "c"'),
    ],
)
def test_fts_query(text, expected):
    assert fts_query(text) == expected


def test_text_words_are_the_full_text_index_tokens():
    """text_words must split where FTS5's tokenizer (FTS_TOKENIZE) splits, or a word of --text is
    a phrase of two tokens to it ("foo_bar" matched "foo, bar") or none ("a b" missed "a\ue000b")."""
    from indexer.stores.base import text_words
    from indexer.stores.embedded_schema import FTS_TOKENIZE

    conn = sqlite3.connect(":memory:")
    conn.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize=\"{FTS_TOKENIZE}\")")
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
    for text in ("foo_bar baz", "a\ue000b", "x²+3.14", "मोदी's book", "R2-D2 co-op"):  # (no diacritics: FTS folds them)
        conn.execute("DELETE FROM t")
        conn.execute("INSERT INTO t VALUES (?)", (text,))
        tokens = [row[0] for row in conn.execute("SELECT term FROM v ORDER BY offset")]
        assert [w.lower() for w in text_words(text)] == tokens, (text, tokens)


def test_marks_alone_are_no_word_and_symbols_no_match_text():
    from indexer.stores.base import match_text, text_words

    assert text_words("\u2600\ufe0f Messi \u0301 #\ufe0f\u20e3") == ["Messi"]
    assert text_words("Sa\u0303o \u0301e") == ["Sa\u0303o", "\u0301e"]  # a mark before a letter stays
    assert match_text("Messi \U0001f600 \u00a9 S\u00e3o").split() == ["Messi", "S\u00e3o"]
    assert match_text("#\ufe0f\u20e3 \u203c 3.14 Tokyo's 1\u20e3").split() == ["\ufe0f\u20e3", "3.14", "Tokyo's", "1\u20e3"]


def test_a_text_without_words_is_refused_when_the_request_is_made():
    with pytest.raises(SearchError, match="no words"):
        SearchRequest(vector=DINO, min_similarity=0.5, text="?!")


def test_filter_sql_table():
    clause, params = filter_sql(Filters.of({"lang": "en", "year": [2020, 2021]}))
    # a number in both forms SQLite writes, marked as a number's (and the string Python writes)
    n = "\ufdd0"
    assert params == ["en", "2020", n + "2020", n + "2020.0", "2021", n + "2021", n + "2021.0"]
    assert clause.count("json_each") == 2
    # the clause is valid SQL over a fields column
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE passages(fields TEXT)")
    conn.execute("""INSERT INTO passages VALUES ('{"lang": "en", "year": 2021}')""")
    assert conn.execute(f"SELECT COUNT(*) FROM passages WHERE {clause}", params).fetchone() == (1,)


@pytest.mark.parametrize("value, message", [
    ("\ufdd02020", "starts with U\\+FDD0, a character nerindex reserves"),  # would match the number 2020
    (["2020", "\ufdd1true"], "starts with U\\+FDD1"),
    ("a\x00b", r"holds a NUL character \(U\+0000\)"),  # the embedded store compared "a": no stored value holds it
])
def test_a_filter_string_no_stored_value_can_hold_is_refused(value, message):
    with pytest.raises(SearchError, match=message):
        Filters.of({"year": value})


def test_span_filters_take_no_booleans_and_thresholds_are_cosines():
    """An audit: spans.labels=True was "1" to the embedded store and true to Elasticsearch; a NaN or
    infinite min_similarity made at the store level gave nothing or everything (the API refused it)."""
    with pytest.raises(SearchError, match="labels and text are strings, not True"):
        Filters.of({"spans.labels": True})
    # a number matched nothing here and its digits in Elasticsearch (an audit)
    for key, value in (("spans.labels", 5), ("spans.text", [1984]), ("spans.text", 2.5)):
        with pytest.raises(SearchError, match=f"filter on '{key}': a span's labels and text are strings"):
            Filters.of({key: value})
    assert Filters.of({"spans.text": "1984"}) and Filters.of({"year": 1984})
    for bad in (math.nan, math.inf, -1.5, True, "0.3"):
        with pytest.raises(SearchError, match=r"similarity threshold must be within \[-1, 1\]"):
            SearchRequest(vector=DINO, min_similarity=bad)
    assert SearchRequest(vector=DINO, min_similarity=np.float32(-1)).min_similarity == -1


def test_passages_replaced_while_an_answer_is_read_are_not_dropped(tmp_path, stamp):
    """An --all is read lazily; another handle re-indexes its passages (new rowids) before it is.
    Read through the shared connection, the replaced passages were dropped from the answer while
    its total still counted them (347 of 849 in the audit's repro): the hits now come from the
    search's own read transaction, the state the vectors were scored on."""
    with EmbeddedStore.open(tmp_path / "s") as s:
        s.check_model(stamp)
        s.write(corpus())
        matches = s.search(SearchRequest(vector=DINO, min_similarity=0.5, exhaustive=True))
        with EmbeddedStore.open(tmp_path / "s", create=False) as other:
            other.write(corpus())  # the same ids again: replaced under new rowids
        assert matches.total == 3 and [h.id for h in matches] == ["p1", "p2", "p3"]
        assert [h.id for h in s.search(SearchRequest(vector=DINO, min_similarity=0.5, exhaustive=True))] == ["p1", "p2", "p3"]


def test_second_process_sees_new_writes(tmp_path, stamp):
    """The derived vector cache is tagged with the write generation and rebuilt when stale."""
    writer = EmbeddedStore.open(tmp_path / "s")
    writer.check_model(stamp)
    writer.write(corpus()[1:])
    reader = EmbeddedStore.open(tmp_path / "s", create=False)
    request = SearchRequest(vector=DINO, min_similarity=0.9)
    assert list(reader.search(request)) == []
    assert (tmp_path / "s" / "cache" / "vectors.npy").is_file()
    writer.write(corpus()[:1])
    assert [h.id for h in reader.search(request)] == ["p1"]
    third = EmbeddedStore.open(tmp_path / "s", create=False)
    assert [h.id for h in third.search(request)] == ["p1"]
    for s in (writer, reader, third):
        s.close()


def test_identical_passages_keep_one_order_whatever_the_limit(tmp_path):
    """An audit: identical passages got passage cosines 7e-9 apart (a float32 product sums a row in
    an order that depends on where it sits), so at λ > 0 their order, and which of them made the
    top-k, changed with the limit. Ties go by insertion order, and a top-k is a prefix of a longer one."""
    import numpy as np

    from indexer.records import EncodedPassage, EncodedSpan, Passage
    from indexer.stores.base import ModelStamp
    from indexer.stores.segments import dots

    dims, rng = 384, np.random.default_rng(0)

    def unit_vector() -> np.ndarray:
        v = rng.standard_normal(dims).astype(np.float32)
        return v / np.linalg.norm(v)

    query = unit_vector()
    span_v, passage_v = (0.8 * query + 0.6 * unit_vector()), (0.5 * query + 0.8 * unit_vector())
    span_v, passage_v = span_v / np.linalg.norm(span_v), passage_v / np.linalg.norm(passage_v)

    def passage(pid: str, sv: np.ndarray, pv: np.ndarray) -> EncodedPassage:
        return EncodedPassage(Passage(pid, "Rex lived here.", {}), (EncodedSpan(0, 3, "Rex", 0.9, sv),), pv)

    others = [passage(f"o{i:02d}", unit_vector(), unit_vector()) for i in range(50)]
    docs = others[:20] + [passage(f"dup-{c}", span_v, passage_v) for c in "abc"] + others[20:]
    with EmbeddedStore.open(tmp_path / "s") as s:
        s.check_model(ModelStamp(id="m", version="1", dims=dims, checksum="c" * 64))
        s.write(docs)
        ranked = [[h.id for h in s.search(SearchRequest(vector=query, min_similarity=-1.0, passage_weight=1.0,
                                                        limit=k))] for k in range(1, 54)]  # fmt: skip
    longest = ranked[-1]
    assert [i for i in longest if i.startswith("dup")] == ["dup-a", "dup-b", "dup-c"]
    assert all(r == longest[: len(r)] for r in ranked)
    # the helper itself: the same row gives the same cosine wherever it sits (a float32 `@` does not)
    dup = unit_vector()
    for n in range(1, 40):
        matrix = np.vstack([dup, rng.standard_normal((n, dims)).astype(np.float32), dup, dup])
        assert len(set(dots(matrix, query)[[0, -2, -1]].tolist())) == 1


def test_a_text_index_from_before_marks_is_made_again_once(tmp_path, stamp):
    """A store whose text index split words at combining marks gets the new one at its first
    writable open (every passage's text tokenised again), and finds by whole words then."""
    from store_conformance import RIVER, doc

    with EmbeddedStore.open(tmp_path / "s") as s:
        s.check_model(stamp)
        s.write([doc("h1", "मोदी दिल्ली में हैं।", [("मोदी", RIVER)]), doc("h2", "वह मेदा लो।", [("वह", RIVER)])])
    conn = sqlite3.connect(tmp_path / "s" / "store.sqlite")
    conn.executescript("DROP TABLE passages_fts; CREATE VIRTUAL TABLE passages_fts USING fts5(text, content='passages', "
                       "content_rowid='rowid'); INSERT INTO passages_fts(passages_fts) VALUES ('rebuild');")
    conn.close()
    request = SearchRequest(vector=RIVER, min_similarity=0.5, text="मोदी")
    with EmbeddedStore.open(tmp_path / "s") as s:
        assert [h.id for h in s.search(request)] == ["h1"]
    conn = sqlite3.connect(tmp_path / "s" / "store.sqlite")
    assert "M*" in conn.execute("SELECT sql FROM sqlite_master WHERE name = 'passages_fts'").fetchone()[0]
    conn.close()
