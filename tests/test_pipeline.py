"""Indexing runs: interrupted runs resume without duplicates or loss."""

from __future__ import annotations

import logging
import sqlite3
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest

from indexer.encoder import OnnxEncoder
from indexer.assets import default_model_dir
from indexer.pipeline import GIVEN_TWICE, index_passages
from indexer.records import Passage, text_id
from indexer.stores.embedded import DB_NAME, EmbeddedStore


@pytest.fixture(scope="module")
def encoder():
    return OnnxEncoder.from_dir(default_model_dir(), device="cpu")


def passages(n: int) -> list[Passage]:
    texts = [f"Report {i}: the mayor of Springfield met delegates from Shelbyville." for i in range(n)]
    return [Passage(text_id(t), t) for t in texts]


class Interrupting:
    """Wraps a store and raises KeyboardInterrupt on the n-th write, like Ctrl-C mid-run."""

    def __init__(self, store, after: int):
        self.store, self.after, self.writes = store, after, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def write(self, docs, *, replace=True):
        self.writes += 1
        if self.writes > self.after:
            raise KeyboardInterrupt
        return self.store.write(docs, replace=replace)


def test_interrupted_run_resumes(tmp_path, encoder):
    items = passages(20)
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages(items, encoder, Interrupting(store, after=2), chunk_size=6)
        assert report.interrupted
        assert store.counts().passages == 12  # two whole chunks, nothing half-written
        report = index_passages(items, encoder, store, chunk_size=6)
        assert not report.interrupted
        assert (report.created, report.skipped_existing) == (8, 12)
        assert store.counts().passages == 20
        spans_before = store.counts().spans
        report = index_passages(items, encoder, store, chunk_size=6)
        assert (report.created, report.skipped_existing) == (0, 20)
        assert store.counts().spans == spans_before


class Racing:
    """Wraps a store; another writer stores ``rival`` passages after this run looked its ids up
    and before it writes, as a second ``nerindex index`` on the same store may."""

    def __init__(self, store, rival_docs):
        self.store, self.rival_docs = store, rival_docs

    def __getattr__(self, name):
        return getattr(self.store, name)

    def write(self, docs, *, replace=True):
        if self.rival_docs:
            self.store.write(self.rival_docs)
            self.rival_docs = []
        return self.store.write(docs, replace=replace)


def test_a_rival_writer_keeps_the_ids_it_stored_first(tmp_path, encoder):
    """Two writers with different texts under one id: the one stored first stays (the rule
    sequential runs follow), whole, and this run reports it skipped, not created or replaced."""
    rival = encoder.encode([Passage("p1", "Paris is the capital of France.")])
    mine = [Passage("p0", "Rex is a dinosaur."), Passage("p1", "Berlin is a city in Germany.")]
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages(mine, encoder, Racing(store, rival))
        assert (report.created, report.skipped_existing, report.updated) == (1, 1, 0)
        assert report.spans == len(encoder.encode(mine[:1])[0].spans)
        assert store.counts().passages == 2
        assert store.counts().spans == report.spans + len(rival[0].spans)
        texts = dict(sqlite3.connect(store.path / DB_NAME).execute("SELECT id, text FROM passages"))
        assert texts["p1"] == "Paris is the capital of France."
        # and it is named as stored with another text (a store audit: "none whose text was compared differs")
        assert (report.skipped_changed, report.changed_ids) == (1, ["p1"])


def test_reindex_existing_replaces(tmp_path, encoder):
    items = passages(3)
    with EmbeddedStore.open(tmp_path / "s") as store:
        index_passages(items, encoder, store)
        report = index_passages(items, encoder, store, skip_existing=False)
        assert (report.created, report.updated) == (0, 3)
        assert store.counts().passages == 3


def test_a_store_with_text_ids_refuses_the_same_passages_under_field_ids(tmp_path, encoder):
    """nerindex 0.2.0 hashed the text unless --id-field was given; indexing the same file into such
    a store under the new default (the 'id' key) must not store every passage twice."""
    from indexer.errors import InputError
    from indexer.records import text_id

    store = EmbeddedStore.open(tmp_path / "s")
    old = [Passage(text_id(t), t) for t in ("Rex is a dinosaur.", "Paris is a city.")]
    index_passages(old, encoder, store)
    again = [Passage("doc-1", "Rex is a dinosaur."), Passage("doc-2", "Paris is a city.")]
    with pytest.raises(InputError, match="--id-field ''"):
        index_passages(again, encoder, store)
    assert store.counts().passages == 2
    index_passages([Passage("doc-3", "Berlin is a city.")], encoder, store)  # new texts are fine
    assert store.counts().passages == 3


def test_the_copies_check_covers_every_chunk_before_any_is_written(tmp_path, encoder):
    """Run per chunk while writing, the refusal came after the earlier chunks were stored (and
    following its advice stored those twice); refuse_copies_anywhere runs first, over all of them."""
    from indexer.errors import InputError
    from indexer.pipeline import refuse_copies_anywhere
    from indexer.records import text_id

    store = EmbeddedStore.open(tmp_path / "s")
    refuse_copies_anywhere(lambda: pytest.fail("an empty store's input is not read"), store)
    index_passages([Passage(text_id("Paris is a city."), "Paris is a city.")], encoder, store)
    later = [Passage(f"new-{i}", f"Passage {i}.") for i in range(5)] + [Passage("doc-2", "Paris is a city.")]
    with pytest.raises(InputError, match="--id-field ''"):
        refuse_copies_anywhere(lambda: later, store, chunk_size=2)
    assert store.counts().passages == 1


@pytest.mark.parametrize("skip_existing", [True, False])
@pytest.mark.parametrize("chunk_size", [8, 1])  # the repeat in the same chunk, or in the next one
def test_an_id_given_twice_in_one_run_keeps_the_first_text_and_the_report_says_so(
    tmp_path, encoder, chunk_size, skip_existing
):
    """The repeat was counted "already stored" (or, replacing, "updated", with spans of both), for
    one stored passage that the store never held before the run (an audit): it is refused."""
    first = Passage("a", "The mayor of Springfield met delegates from Shelbyville.")
    again = Passage("a", "Marie Curie won the Nobel Prize in Physics in 1903.")
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages([first, again], encoder, store, chunk_size=chunk_size, skip_existing=skip_existing)
        assert (report.passages, report.created, report.updated, report.skipped_existing, report.failed) == (2, 1, 0, 0, 1)
        assert report.errors == [f"a: {GIVEN_TWICE}"]
        assert store.counts().passages == 1
        assert report.spans == store.counts().spans
        texts = [row[1] for row in sqlite3.connect(store.path / DB_NAME).execute("SELECT id, text FROM passages")]
        assert texts == [first.text]


def test_a_write_that_fails_part_way_is_counted_in_the_message(tmp_path, encoder):
    """Elasticsearch sends a chunk in several bulk requests; one failing after others were answered
    leaves those stored, and the message said "0 passage(s) of this run were stored" (an audit)."""
    from indexer.errors import StoreError

    passages = [Passage(f"p{i}", f"Passage number {i} names Paris.") for i in range(4)]
    with EmbeddedStore.open(tmp_path / "s") as store:
        real, calls = store.write, []

        def write(docs, **kwargs):
            calls.append(len(docs))
            if len(calls) == 1:
                return real(docs, **kwargs)
            real(docs[:1], **kwargs)  # a first request answered, then the connection is gone
            error = StoreError("cannot reach the cluster")
            error.stored = 1
            raise error

        store.write = write
        with pytest.raises(StoreError, match=r"3 passage\(s\) of this run are known to be stored, each whole"):
            index_passages(passages, encoder, store, chunk_size=2)
        assert store.counts().passages == 3


def test_an_empty_or_blank_text_is_a_failed_passage_not_a_stored_one(tmp_path, encoder):
    # an audit: zero-width spaces, a BOM, controls or marks alone were stored, with no word to find
    blank = ["", "   \n", "\u200b\u200b", "\ufeff", "\x01\x02", "\u0301\u0301", "\ufe0f", "\u00ad", "\u3000",
             "\ue000\ue001", "\ufffd\ufffd"]  # private use and U+FFFD, which the tokenizer drops too (the review)
    items = [Passage(f"e{i}", t) for i, t in enumerate(blank)] + [Passage("ok", "Ada Lovelace wrote the first program.")]
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages(items, encoder, store)
        assert (report.passages, report.created, report.failed) == (len(blank) + 1, 1, len(blank))
        assert [e.split(":")[0] for e in report.errors] == [f"e{i}" for i in range(len(blank))]
        assert "empty text" in report.errors[0]
        assert store.counts().passages == 1


def test_a_passage_that_is_not_valid_unicode_is_a_failed_passage(tmp_path, encoder):
    """audit8: NerIndex.index with a lone surrogate (a JSON "\\ud83d" escape) failed with a bare
    UnicodeEncodeError from the tokenizer, the chunk lost; the readers refuse such records by line."""
    items = [Passage("a", "Obama \ud83d visited Paris."), Passage("b", "Merkel met Macron.", {"k": ["x\udc80"]}),
             Passage("c\udc80", "Paris."), Passage("d", "Rome.", {"k": {"t": ("x\udc80",)}}),
             Passage("ok", "Ada Lovelace wrote the first program.")]
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages(items, encoder, store)
        assert (report.created, report.failed) == (1, 4)
        assert "its text holds a lone surrogate U+D83D at character 7" in report.errors[0]
        assert "field 'k' holds a lone surrogate U+DC80" in report.errors[1] and "its id holds" in report.errors[2]
        assert "field 'k.t' holds" in report.errors[3]  # a tuple inside (a review: it lost the chunk)
        assert store.counts().passages == 1


def test_a_passage_whose_metadata_starts_with_a_type_mark_is_a_failed_passage(tmp_path, encoder):
    """A metadata string starting with U+FDD0 (a stored number's mark) matched a number filter."""
    items = [Passage("a", "Obama visited Paris.", {"year": "\ufdd02020"}),
             Passage("b", "Merkel met Macron.", {"flags": ("x", "\ufdd1true")}),
             Passage("ok", "Ada Lovelace wrote the first program.", {"year": 2020, "note": "a\ufdd0"}),
             # an audit: "a\x00b" was read by the embedded store's SQL as "a" (a filter "a" found it);
             # NaN or Infinity in metadata failed the whole chunk (no JSON holds them)
             Passage("nul", "Rome.", {"f": "a\x00b"}), Passage("nan", "Oslo.", {"m": {"x": [float("nan")]}}),
             Passage("inf", "Lima.", {"score": float("inf")}), Passage("ok2", "Kyiv.", {"score": 1e308, "big": 10**400}),
             # SQLite's substr stopped at a NUL in the text: a spans.text filter missed every span after it
             Passage("nul-text", "a\x00b Rex lived."),
             # a review: a TypeError from json.dumps lost the whole chunk
             Passage("np", "Bern.", {"score": np.float32(1.5)}), Passage("dec", "Riga.", {"m": {"x": [Decimal("1.5")]}}),
             # reviews: a tuple key was a TypeError; an int key crashed the Elasticsearch writer, and
             # {1: "a", "1": "b"} became two keys of one name in JSON
             Passage("tuple-key", "Oslo.", {"m": {(1, 2): "x"}}), Passage("int-key", "Rome.", {1: "a", "1": "b"})]
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages(items, encoder, store)
        assert (report.created, report.failed) == (2, 10)
        assert report.errors[8] == "tuple-key: field 'm' has a key of type tuple ((1, 2)); keys are strings"
        assert report.errors[9] == "int-key: the metadata has a key of type int (1); keys are strings"
        assert report.errors[5] == "nul-text: cannot be stored: its text holds a NUL character (U+0000) at character 2"
        assert report.errors[6].startswith("np: field 'score' holds a numpy.float32, which is not a JSON value")
        assert "for a float32 float(str(x)) the decimal a filter compares" in report.errors[6]  # not .item()'s (an audit)
        assert report.errors[7].startswith("dec: field 'm.x' holds a decimal.Decimal, which is not a JSON value")
        assert report.errors[0].startswith("a: field 'year' starts with U+FDD0")
        assert "field 'flags' starts with U+FDD1" in report.errors[1]
        assert report.errors[2] == "nul: cannot be stored: field 'f' holds a NUL character (U+0000) at character 2"
        assert report.errors[3] == "nan: field 'm.x' holds nan, which is not a finite number"
        assert report.errors[4] == "inf: field 'score' holds inf, which is not a finite number"
        assert store.counts().passages == 2


def test_the_python_api_refuses_arguments_of_another_type_and_a_closed_index(tmp_path, encoder):
    # audit6: embed("dog") gave three vectors (d, o, g); min_similarity=True searched at 1.0; a
    # float limit, a string threshold or a closed index failed deep inside with a Python error
    import numpy as np

    from indexer import NerIndex
    from indexer.errors import InputError, SearchError, StoreError

    ix = NerIndex(encoder, EmbeddedStore.open(tmp_path / "s"))
    ix.index([Passage("p", "Ada Lovelace wrote the first program in London.")])
    assert ix.search("person", limit=np.int64(1), min_similarity=np.float32(0.1))  # numpy numbers are numbers
    for bad in ({"limit": 2.5}, {"limit": "3"}, {"limit": True}, {"min_similarity": True},
                {"min_similarity": "0.3"}, {"passage_weight": False}):  # fmt: skip
        with pytest.raises(SearchError, match=next(iter(bad))):
            ix.search("person", **bad)
    with pytest.raises(SearchError, match="a string"):
        ix.search(None)
    # audit8: feedback=0.5 (the CLI's --feedback 0.5) was an AttributeError ('float' has no 'top')
    assert [h.id for h in ix.search("person", feedback=0.5, min_similarity=0.1)] == ["p"]
    for bad in ("0.5", True, {"weight": 0.5}):
        with pytest.raises(SearchError, match="feedback must be"):
            ix.search("person", feedback=bad)
    with pytest.raises(SearchError, match="feedback weight must be a number within"):
        ix.search("person", feedback=-1)
    with pytest.raises(SearchError, match="not one string"):
        ix.embed("dog")
    for bad in (None, 3, {"dog": 1}, b"dog"):  # TypeErrors about iteration, a dict's keys, a bytes' numbers
        with pytest.raises(SearchError, match="embed takes a list of phrases, not"):
            ix.embed(bad)
    assert ix.embed(["dog"]).shape == (1, encoder.info.dims)
    for bad in ("p", None, {"p": 1}, [1]):  # "p" would delete the passages "p" and nothing else by luck
        with pytest.raises(InputError, match="passage id"):
            ix.delete(bad)
    # ids no store can hold are not stored (an API audit: a lone surrogate raised SQLite's UnicodeEncodeError)
    assert ix.delete(["\ud800", "a\x00b", ""]) == []
    assert list(ix.stored_ids()) == ["p"] and ix.delete(["p", "q"]) == ["p"] and ix.search("person") == []
    ix.close()
    ix.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        ix.search("person")


def test_an_id_that_is_not_a_non_blank_string_is_a_failed_passage(tmp_path, encoder):
    """An audit: the embedded store kept the id 5 as "5" (so a later "5" was skipped as already
    stored, its text lost), b"x" as a blob (``--json`` then failed on it), "" as an id the readers
    refuse, and None failed the whole chunk with an advice to rerun that could never work."""
    items = [Passage(5, "Rome."), Passage(True, "Oslo."), Passage(b"bid", "Lima."), Passage("", "Kyiv."),
             Passage(" ", "Bern."), Passage(None, "Riga."), Passage("t", b"Paris."), Passage("f", "Rome.", None),
             Passage("ok", "Ada Lovelace wrote the first program.")]
    with EmbeddedStore.open(tmp_path / "s") as store:
        report = index_passages(items, encoder, store)
        assert (report.created, report.failed) == (1, 8)
        assert report.errors == [
            "5: cannot be stored: its id is int, not a string", "True: cannot be stored: its id is bool, not a string",
            "b'bid': cannot be stored: its id is bytes, not a string", ": cannot be stored: its id is empty",
            " : cannot be stored: its id is empty", "None: cannot be stored: its id is NoneType, not a string",
            "t: cannot be stored: its text is bytes, not a string", "f: cannot be stored: its metadata is NoneType, not a dict"]
        assert [r[0] for r in sqlite3.connect(store.path / DB_NAME).execute("SELECT id FROM passages")] == ["ok"]
        assert index_passages([Passage("5", "Angela Merkel visited Paris.")], encoder, store).created == 1


def test_the_python_api_refuses_what_would_silently_mean_something_else(tmp_path, encoder):
    """An audit: exhaustive="no" ran an --all, skip_existing="no" skipped, threads=-1 and
    batch_size=-3 were taken (NERINDEX_THREADS=-1 and --batch-size 0 are refused), and text=b"…",
    a phrase with a lone surrogate and Feedback(top=2.5) ended in Python errors from deep inside."""
    from indexer import NerIndex
    from indexer.config import Settings
    from indexer.errors import SearchError, StoreError
    from indexer.feedback import Feedback

    ix = NerIndex(encoder, EmbeddedStore.open(tmp_path / "s"))
    ix.index([Passage("p", "Ada Lovelace wrote the first program in London.")])
    for bad, match in (({"exhaustive": "no"}, "exhaustive"), ({"text": b"London"}, "text must be a string"),
                       ({"text": 123}, "text must be a string")):  # fmt: skip
        with pytest.raises(SearchError, match=match):
            ix.search("person", **bad)
    with pytest.raises(SearchError, match="lone surrogate"):
        ix.search("city\ud800")
    with pytest.raises(SearchError, match="a string"):
        ix.threshold_for(b"city")
    for bad in ({"weight": "0.5"}, {"top": 2.5}, {"top": True}):
        with pytest.raises(SearchError, match="feedback"):
            Feedback(**bad)
    with pytest.raises(StoreError, match="^skip_existing must be True or False"):
        ix.index([Passage("q", "Rome.")], skip_existing="no")
    assert len(ix.search("person", exhaustive=np.True_, min_similarity=0.1)) == 1  # numpy booleans are booleans
    for size in (-3, 0, 2.5, 5000):
        with pytest.raises(StoreError, match="batch_size must be a whole number"):
            ix.index([Passage("q", "Rome.")], batch_size=size)
    for threads in (-1, 0, 2.5, True, 5000, "²"):
        with pytest.raises(StoreError, match="threads must be a whole number"):
            Settings(threads=threads)
    assert Settings(threads=2).threads == 2
    assert ix.store.counts().passages == 1
    assert ix.search("person", min_similarity=Fraction(1, 10))  # a Fraction is a number


def test_ctrl_c_while_the_search_structures_are_prepared_keeps_the_report(tmp_path, monkeypatch):
    """An audit: Ctrl-C while ``NerIndex.index`` prepared the store's search structures (every
    passage stored) ended as "aborted", with no summary; it is the run's report, interrupted."""
    from indexer.api import NerIndex

    with NerIndex.open(tmp_path / "s") as ix:
        def interrupted() -> None:
            raise KeyboardInterrupt

        monkeypatch.setattr(ix.store, "prepare", interrupted)
        report = ix.index(passages(3))
        assert report.interrupted and report.interrupted_preparing and report.created == 3 and ix.store.counts().passages == 3


def test_the_python_api_says_when_a_store_is_new_and_when_indexing_was_interrupted(tmp_path, monkeypatch, caplog):
    """An audit: NerIndex.open on a mistyped folder made an empty store and answered [] to every
    search without a word, create="no" made one too, and index() returned from Ctrl-C silently."""
    from indexer.api import NerIndex
    from indexer.errors import NoStoreError, StoreError

    with NerIndex.open(tmp_path / "typo") as ix:
        assert ix.search("person") == []
    assert "no passages yet" in caplog.text and "create=False" in caplog.text
    caplog.clear()
    with pytest.raises(StoreError, match="create must be True, False or None"):
        NerIndex.open(tmp_path / "other", create="no")
    assert not (tmp_path / "other").exists()
    with pytest.raises(NoStoreError):
        NerIndex.open(tmp_path / "missing", create=False)
    with NerIndex.open(tmp_path / "made", create=True) as ix:
        assert "no passages" not in caplog.text
        monkeypatch.setattr(ix.store, "prepare", lambda: (_ for _ in ()).throw(KeyboardInterrupt))
        assert ix.index(passages(2)).interrupted
        assert "indexing was interrupted (Ctrl-C) after 2 passage(s)" in caplog.text
        caplog.clear()
        report = ix.index(passages(2), warn_interrupted=False)
        assert report.interrupted and "interrupted" not in caplog.text


def test_a_float32_filter_value_means_the_decimal_it_shows(tmp_path, encoder):
    """An audit: np.float32(0.1) (what a Parquet float32 column gives in numpy) became
    0.10000000149011612 and matched nothing that --where w=0.1 found; the reader stores 0.1."""
    from indexer import NerIndex
    from indexer.stores.filter_rules import Filters

    assert Filters.of({"w": np.float32(0.1)}) == Filters.of({"w": 0.1})
    assert Filters.of({"w": [np.float16(0.3), np.float64(0.7)]}) == Filters.of({"w": [0.3, 0.7]})
    ix = NerIndex(encoder, EmbeddedStore.open(tmp_path / "s"))
    ix.index([Passage("p", "Ada Lovelace wrote the first program in London.", {"w": 0.1})])
    assert [h.id for h in ix.search("person", filters={"w": np.float32(0.1)}, min_similarity=-1)] == ["p"]


def test_index_names_what_it_takes_when_given_something_else(tmp_path, encoder):
    """An audit: a dict (the likeliest thing a newcomer passes), a string or None were
    AttributeErrors and TypeErrors from deep inside."""
    from indexer import NerIndex
    from indexer.errors import InputError

    ix = NerIndex(encoder, EmbeddedStore.open(tmp_path / "s"))
    for bad, match in (([{"id": "x", "text": "hello"}], "not dict: Passage\\(id, text, fields\\)"),
                       ("hello world", "an iterable of Passage objects, not str"),
                       (None, "not NoneType"), ([Passage("a", "Rome."), 5], "not int")):
        with pytest.raises(InputError, match=match):
            ix.index(bad)
    assert ix.store.counts().passages == 0  # the chunk with the bad item was not written


def test_the_python_api_paths_failures_and_an_empty_store(tmp_path, monkeypatch, caplog):
    """An audit of the Python API: open("~/x") made a folder "~" in the working folder, open("") a
    store in it and open(5) a folder "5"; index() refused every passage (numpy metadata) without a
    word; an empty store's search had no total; close() left the vector files mapped."""
    from indexer.api import NerIndex
    from indexer.errors import SettingError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for bad, message in (("", "empty path"), ("  ", "empty path"), (5, "a path, not int")):
        with pytest.raises(SettingError, match=message):
            NerIndex.open(bad)
    assert list(tmp_path.iterdir()) == []
    with NerIndex.open("~/s") as ix:
        assert ix.store.path == tmp_path / "home" / "s"
        assert ix.iter_search("person").total == 0  # empty: no model recorded yet
        report = ix.index([Passage(f"n{i}", "Paris is big.", {"year": np.int64(2001)}) for i in range(3)])
        assert report.failed == 3 and "3 of 3 passage(s) were not stored" in caplog.text and "n0:" in caplog.text
    assert not (tmp_path / "~").exists()


def test_the_python_api_says_when_an_edited_passage_was_left_as_stored(tmp_path, caplog):
    """The API audit (round 29): index() kept the old text of an edited passage without a word, where
    the CLI says it; every later search answered with the old text."""
    from indexer.api import NerIndex

    with NerIndex.open(tmp_path / "s") as ix:
        ix.index([Passage("p1", "Paris is the capital of France.", {"topic": "geo"})])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="indexer"):
            report = ix.index([Passage("p1", "Triceratops lived in the Cretaceous.", {"topic": "science"})])
        assert report.skipped_changed == 1
        assert "1 passage(s) with an id the store holds were left as stored" in caplog.text and "'p1'" in caplog.text
        assert "skip_existing=False replaces them" in caplog.text
        # the CLI's hint for an empty answer, from the mapping search() takes (an AttributeError before)
        assert ix.absent_fields({"nosuchfield": "x", "topic": "geo"}) == ["nosuchfield"]


def test_a_store_opened_by_a_relative_path_survives_a_change_of_folder(tmp_path, monkeypatch):
    """The API audit (round 29): after os.chdir() a store opened as "store1" was reported "replaced
    or removed" and the handle could not be used again."""
    from indexer.api import NerIndex

    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with NerIndex.open("store1") as ix:
        ix.index([Passage("p1", "Paris is the capital of France.")])
        before = [h.id for h in ix.search("city")]
        monkeypatch.chdir(tmp_path / "elsewhere")
        assert [h.id for h in ix.search("city")] == before == ["p1"]
        ix.index([Passage("p2", "Lyon is a city in France.")])
        assert ix.info()["store"]["passages"] == 2
    assert not (tmp_path / "elsewhere" / "store1").exists()


def test_a_skipped_passage_whose_metadata_alone_changed_is_named(tmp_path, encoder):
    """An audit: re-indexing a passage with a corrected field counted it "already stored" and kept
    the old field without a word; only the text was compared."""
    with EmbeddedStore.open(tmp_path / "s") as store:
        index_passages([Passage("d1", "Anna Schmidt lives in Vienna.", {"label": "wrong"}),
                        Passage("d2", "Paris is big.", {"n": 1})], encoder, store)
        report = index_passages([Passage("d1", "Anna Schmidt lives in Vienna.", {"label": "fixed"}),
                                 Passage("d2", "Paris is big.", {"n": 1.0})], encoder, store)  # 1 and 1.0: one value
        assert (report.skipped_existing, report.skipped_changed, report.changed_ids) == (2, 1, ["d1"])


def test_a_boolean_corrected_to_a_number_is_a_changed_field(tmp_path, encoder):
    """An audit: ``true`` corrected to ``1`` (or ``[false]`` to ``[0.0]``) counted "already stored"
    (Python's True == 1) while filters tell them apart: ``--where flag=1`` found nothing."""
    texts = {"f1": "Anna Schmidt lives in Vienna.", "f2": "Paris is big.", "f3": "Rome is old."}
    with EmbeddedStore.open(tmp_path / "s") as store:
        index_passages([Passage(k, t, f) for (k, t), f in zip(texts.items(), [{"flag": True}, {"flag": [False]},
                                                                                {"n": 1}])], encoder, store)
        report = index_passages([Passage(k, t, f) for (k, t), f in zip(texts.items(), [{"flag": 1}, {"flag": [0.0]},
                                                                                         {"n": 1.0}])], encoder, store)
        assert (report.skipped_changed, report.changed_ids) == (2, ["f1", "f2"])


def test_a_handle_opened_on_an_empty_store_checks_the_model_its_first_writer_records(tmp_path):
    """An audit: a handle (the web service) opened on an empty store checked its model once, found
    none, and never again; another process then filled the store with another model, and every
    search scored one model's span vectors with the other's query vector, health "ok"."""
    import dataclasses

    from indexer.api import NerIndex
    from indexer.errors import ModelMismatchError

    with NerIndex.open(tmp_path / "s") as ix:
        assert ix.search("person") == []
        stamp = ix.encoder.info.stamp
        with EmbeddedStore.open(tmp_path / "s") as other:  # another process's first write records its model
            other.check_model(dataclasses.replace(stamp, checksum="0" * len(stamp.checksum)))
        with pytest.raises(ModelMismatchError):
            ix.search("person")
        with pytest.raises(ModelMismatchError):
            ix.check_usable()


def test_an_interrupted_run_makes_what_it_stored_searchable_at_once(tmp_path, encoder):
    """An audit: NerIndex.index interrupted on Elasticsearch skipped the end-of-run step, so what it
    had stored stayed unsearchable (1 of 256 passages for another process) until close(); the
    store's flush (Elasticsearch: the refresh interval put back, a refresh) now runs on that path."""
    from indexer.api import NerIndex

    with EmbeddedStore.open(tmp_path / "s") as store:
        flushed: list[bool] = []
        wrapped = Interrupting(store, after=0)
        wrapped.flush = lambda: flushed.append(True)
        report = NerIndex(encoder, wrapped).index(passages(3), warn_interrupted=False)
        assert report.interrupted and flushed == [True]
