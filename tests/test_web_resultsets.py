"""Pure parts of the web service: query keys, cursors, the result-set cache, facet counts."""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")

from indexer.errors import SearchError, StaleCursorError  # noqa: E402
from indexer.records import Hit, SpanMatch  # noqa: E402
from indexer.web.resultsets import (  # noqa: E402
    IndexChanged,
    ResultSetCache,
    SearchQuery,
    decode_cursor,
    encode_cursor,
    facet_counts,
    hit_bytes,
    version_key,
)
from indexer.stores.base import StoreVersion  # noqa: E402
from indexer.stores.filters import field_matches  # noqa: E402


def hit(i: int, **fields) -> Hit:
    return Hit(id=f"p{i}", score=1.0 - i / 100, text=f"text {i}", fields=fields, spans=(SpanMatch(0, 4, "text", 0.9),))


def test_query_key_ignores_filter_order_and_whitespace():
    a = SearchQuery.build(" dinosaur ", filters={"b": "2", "a": ["1", "3"]}, text="  rex ")
    b = SearchQuery.build("dinosaur", filters={"a": ["1", "3"], "b": "2"}, text="rex")
    assert a == b and a.key() == b.key()


@pytest.mark.parametrize(
    "other",
    [
        SearchQuery.build("dinosaur", threshold=0.4),
        SearchQuery.build("dinosaurs"),
        SearchQuery.build("dinosaur", filters={"a": "1"}),
        SearchQuery.build("dinosaur", text="rex"),
        SearchQuery.build("dinosaur", filters={"a": ["1"]}, threshold=0.5),
        SearchQuery.build("dinosaur", threshold=0.5, passage_weight=1.0),
        SearchQuery.build("dinosaur", threshold=0.5, passage_weight=0),
    ],
)
def test_query_key_changes_with_every_part(other):
    base = SearchQuery.build("dinosaur", threshold=0.5)
    assert base.key() != other.key()


def test_cursor_from_another_passage_weight_is_refused():
    spans_only = SearchQuery.build("dinosaur", passage_weight=0)
    hybrid = SearchQuery.build("dinosaur", passage_weight=0.5)
    assert SearchQuery.build("dinosaur", passage_weight=0.5).key() == hybrid.key()
    cursor = encode_cursor(spans_only.key(), 10, "s1")
    assert decode_cursor(cursor, spans_only.key(), "s1") == 10
    with pytest.raises(SearchError, match="passage_weight"):
        decode_cursor(cursor, hybrid.key(), "s1")


def test_filter_dict_round_trip_and_without():
    q = SearchQuery.build("x", filters={"topic": "science", "year": [1999, 2000]})
    assert q.filter_dict() == {"topic": "science", "year": [1999, 2000]}
    assert q.without_filter("year").filter_dict() == {"topic": "science"}


def test_cursor_round_trip_is_opaque_and_url_safe():
    key = SearchQuery.build("dinosaur").key()
    cursor = encode_cursor(key, 40, "s1")
    assert all(c.isalnum() or c in "-_" for c in cursor)
    assert decode_cursor(cursor, key, "s1") == 40


def test_cursor_from_another_query_is_refused():
    cursor = encode_cursor(SearchQuery.build("dinosaur").key(), 10, "s1")
    with pytest.raises(SearchError, match="different query"):
        decode_cursor(cursor, SearchQuery.build("politician").key(), "s1")


def test_cursor_from_another_store_version_is_refused_as_stale():
    key = SearchQuery.build("dinosaur").key()
    before = version_key(StoreVersion("uuid-1", "g1-p3.3-s5.5"))
    after = version_key(StoreVersion("uuid-1", "g2-p4.4-s7.7"))
    assert before != after and before == version_key(StoreVersion("uuid-1", "g1-p3.3-s5.5"))
    with pytest.raises(StaleCursorError, match="index changed since this cursor was issued"):
        decode_cursor(encode_cursor(key, 10, before), key, after)


@pytest.mark.parametrize("junk", ["", "not-a-cursor", "e30", encode_cursor("k", -1, "s")[:-2] + "xx", "%%%"])
def test_malformed_cursors_are_refused(junk):
    with pytest.raises(SearchError, match="invalid cursor"):
        decode_cursor(junk, "k", "s")


def test_negative_offset_cursor_is_refused():
    with pytest.raises(SearchError, match="invalid cursor"):
        decode_cursor(encode_cursor("k", -5, "s"), "k", "s")


def test_cache_computes_once_and_evicts_least_recent():
    cache = ResultSetCache(max_entries=2, max_bytes=10**6)
    calls = []

    def compute(name, n):
        def run():
            calls.append(name)
            return [hit(i) for i in range(n)]

        return run

    assert len(cache.get("s1", "a", compute("a", 3))) == 3
    cache.get("s1", "a", compute("a", 3))
    assert calls == ["a"]
    cache.get("s1", "b", compute("b", 1))
    cache.get("s1", "a", compute("a", 3))  # a is now most recent
    cache.get("s1", "c", compute("c", 1))  # evicts b
    cache.get("s1", "a", compute("a", 3))
    cache.get("s1", "b", compute("b", 1))
    assert calls == ["a", "b", "c", "b"]


def test_cache_bounded_by_bytes_keeps_at_least_the_newest():
    """An audit: bounded by hits (200,000), passages of a few KB each kept ~720 MB cached."""
    four = sum(hit_bytes(hit(i)) for i in range(4))
    cache = ResultSetCache(max_entries=10, max_bytes=2 * four - 1)
    cache.get("s1", "a", lambda: [hit(i) for i in range(4)])
    cache.get("s1", "b", lambda: [hit(i) for i in range(4)])
    assert len(cache) == 1
    cache.get("s1", "big", lambda: [hit(i) for i in range(50)])
    assert len(cache) == 1
    cache = ResultSetCache(max_entries=10, max_bytes=2 * four)
    cache.get("s1", "a", lambda: [hit(i) for i in range(4)])
    cache.get("s1", "b", lambda: [hit(i) for i in range(4)])
    assert len(cache) == 2
    long = ResultSetCache(max_entries=10, max_bytes=2 * four)  # the same count of hits, longer passages
    long.get("s1", "a", lambda: [replace(hit(i), text="word " * 1000) for i in range(4)])
    long.get("s1", "b", lambda: [hit(i) for i in range(4)])
    assert len(long) == 1


def test_hit_bytes_counts_the_text_the_fields_and_the_marks():
    plain = hit(0)
    assert hit_bytes(replace(plain, text=plain.text + "x" * 1000)) == hit_bytes(plain) + 1000
    assert hit_bytes(replace(plain, fields={**plain.fields, "note": "y" * 500})) > hit_bytes(plain) + 500
    mark = SpanMatch(0, 4, "word", 0.9)
    assert hit_bytes(replace(plain, spans=plain.spans + (mark,))) == hit_bytes(plain) + 300 + sys.getsizeof("word")
    # a str holds 2 or 4 bytes a character once one character needs them (CJK, Cyrillic; an emoji)
    assert hit_bytes(replace(plain, text="恐" * 1000)) > hit_bytes(replace(plain, text="x" * 2000))
    assert hit_bytes(replace(plain, text="x" * 999 + "🦕")) > hit_bytes(replace(plain, text="x" * 4000))


def test_a_set_just_computed_stays_while_another_is_being_computed():
    """A review: a result set over the bound, finished while another request's search still ran
    (its entry, counted as 0 bytes, sat after it), was evicted at once and searched again for
    every page its client asked."""
    cache = ResultSetCache(max_entries=10, max_bytes=1)
    started, release, calls = threading.Event(), threading.Event(), []

    def other():
        started.set()
        release.wait(5)
        return [hit(0)]

    worker = threading.Thread(target=lambda: cache.get("s1", "other", other))

    def big():  # asked first; another request's search starts while this one runs
        calls.append(1)
        if not worker.is_alive():
            worker.start()
            assert started.wait(5)
        return [hit(i) for i in range(20)]

    cache.get("s1", "big", big)
    cache.get("s1", "big", big)  # the client's next page
    release.set()
    worker.join()
    assert calls == [1]


def test_cache_shares_one_computation_between_threads():
    cache = ResultSetCache()
    calls = []

    def slow():
        calls.append(1)
        time.sleep(0.2)
        return [hit(0)]

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("s1", "k", slow))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 4 and all(r[0].id == "p0" for r in results)


def test_waiters_share_the_owners_index_changed_instead_of_searching_a_gone_version():
    """A review: when the owner found the version moved, each waiter searched again for the old
    version, which could not succeed, and dropped the newer version's entries doing so."""
    cache = ResultSetCache()
    calls, errors = [], []

    def moved():
        calls.append(1)
        time.sleep(0.2)
        raise IndexChanged("the index changed while the search ran")

    def ask():
        try:
            cache.get("s1", "k", moved)
        except IndexChanged as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(errors) == 4 and len(cache) == 0


def test_cache_does_not_keep_failures():
    cache = ResultSetCache()

    def boom():
        raise SearchError("bad")

    with pytest.raises(SearchError):
        cache.get("s1", "k", boom)
    assert len(cache) == 0
    assert cache.get("s1", "k", lambda: [hit(1)])[0].id == "p1"


def test_cache_entries_of_an_older_store_version_are_never_served():
    cache = ResultSetCache()
    assert cache.get("s1", "k", lambda: [hit(1)])[0].id == "p1"
    cache.get("s1", "other", lambda: [hit(3)])
    assert cache.get("s2", "k", lambda: [hit(2)])[0].id == "p2"  # same query, the store changed
    assert len(cache) == 1  # the entries of s1 went: no request can use them again


def test_facet_counts_ranks_values_and_counts_list_members():
    hits = [
        hit(0, topic="science", tags=["a", "b"], n=1),
        hit(1, topic="science", tags=["a"], n=2),
        hit(2, topic="politics", tags=[], n=2),
    ]
    facets = facet_counts(hits)
    assert facets["topic"] == [{"value": "science", "count": 2}, {"value": "politics", "count": 1}]
    assert facets["tags"] == [{"value": "a", "count": 2}, {"value": "b", "count": 1}]
    assert facets["n"] == [{"value": 2, "count": 2}, {"value": 1, "count": 1}]
    # ties by value, numbers by size (an audit: "10" came before "2", and size 2 dropped the 2)
    ties = facet_counts([hit(i, year=y) for i, y in enumerate([2000, 2000, 10, 2, "b", "a"])], fields=["year"], size=4)
    assert [d["value"] for d in ties["year"]] == [2000, 2, 10, "a"]


def test_facet_counts_one_value_per_class_a_filter_tells_apart():
    """Python hashes True, 1 and 1.0 alike; a filter (stores.filters.field_texts) does not take
    true for 1, but does take 1.0 for 1: a facet's count is what clicking it returns."""
    hits = [hit(0, n=True), hit(1, n=1.0), hit(2, n=1), hit(3, n=False), hit(4, n=True)]
    facets = facet_counts(hits, fields=["n"])
    assert facets["n"] == [{"value": True, "count": 2}, {"value": 1.0, "count": 2}, {"value": False, "count": 1}]


def test_a_filter_on_minus_zero_answers_the_same_whichever_came_first():
    """An audit: the filter texts' cache took 0.0 and -0.0 for one key, so whichever a process was
    asked first answered for the other ("v": -0.0 matched a stored string "0.0" after a filter on 0.0)."""
    from indexer.stores import filters

    filters._field_texts.cache_clear()
    zero_first = (filters.field_texts(0.0), filters.field_texts(-0.0))
    filters._field_texts.cache_clear()
    minus_first = tuple(reversed((filters.field_texts(-0.0), filters.field_texts(0.0))))
    assert zero_first == minus_first and zero_first[0] != zero_first[1]
    assert field_matches(-0.0, "-0.0") and not field_matches(-0.0, "0.0") and field_matches(0.0, "0.0")
    assert field_matches(-0.0, 0.0) and field_matches(0.0, -0.0)  # the numbers are equal


def test_facet_values_beyond_javascript_integers_go_as_digits_that_filter_alike():
    # the page parses JSON numbers as doubles: 1234567890123456789 came back as ...800, a filter on
    # another value; as digits it is sent back exactly, and a filter takes them for the number
    big, near = 1234567890123456789, 1234567890123456800
    facets = facet_counts([hit(0, uid=big), hit(1, uid=big), hit(2, uid=near), hit(3, uid=2**53 - 1)], fields=["uid"])
    assert facets["uid"] == [{"value": str(big), "count": 2}, {"value": 2**53 - 1, "count": 1},  # ties by size
                             {"value": str(near), "count": 1}]  # 2**53 - 1 is exact in JavaScript: stays a number
    assert field_matches(str(big), big) and not field_matches(str(big), near)
    # beyond SQLite's 64 bits a JSON integer is stored as a real (past the float range, ±Inf):
    # filters compare it as one, without an OverflowError, and a facet counts what a filter finds
    assert field_matches(str(2**64 - 1), 2**64 - 1) and field_matches(str(2**64 - 1), 2**64 - 2)
    assert field_matches(str(10**400), 10**400) and not field_matches(str(10**400), -(10**400))
    assert facet_counts([hit(0, h=2**64 - 1), hit(1, h=2**64 - 2), hit(2, h=10**400)], fields=["h"])["h"] == [
        {"value": str(2**64 - 1), "count": 2}, {"value": str(10**400), "count": 1}]
    # the number and the same digits stored as text are one row, as the page shows them (an audit: two
    # rows of one label, which one click ticked together)
    n = 9007199254740993
    assert facet_counts([hit(0, n=n), hit(1, n=str(n))], fields=["n"])["n"] == [{"value": str(n), "count": 2}]


def test_facet_counts_a_passage_once_per_value_as_a_filter_finds_it():
    """["a", "a", "b"] counted "a" twice, though filtering on it finds the passage once."""
    facets = facet_counts([hit(0, tags=["a", "a", "b"]), hit(1, tags=[1, 1.0])], fields=["tags"])
    assert sorted((str(f["value"]), f["count"]) for f in facets["tags"]) == [("1", 1), ("a", 1), ("b", 1)]


def test_facet_counts_skips_id_like_and_long_text_fields():
    hits = [hit(i, url=f"https://x/{i}", topic="t", body="x" * 200) for i in range(60)]
    facets = facet_counts(hits)
    assert set(facets) == {"topic"}


def test_facet_counts_for_named_fields_reports_absent_ones_empty():
    facets = facet_counts([hit(0, topic="a")], fields=["topic", "missing"], size=5)
    assert facets == {"topic": [{"value": "a", "count": 1}], "missing": []}


def test_a_facet_count_is_what_clicking_its_value_returns_in_a_field_of_mixed_types():
    """A review: once a text stopped matching other strings that spell its number, "7" and 7 were
    two rows of count 1, though a filter on either finds both passages."""
    hits = [hit(0, code="7"), hit(1, code=7), hit(2, code="007"), hit(3, flag="true"), hit(4, flag=True)]
    facets = facet_counts(hits, fields=["code", "flag"])
    for name, rows in facets.items():
        for row in rows:
            found = [h.id for h in hits if name in h.fields and field_matches(row["value"], h.fields[name])]
            assert row["count"] == len(found), (name, row, found)
    assert sorted((str(r["value"]), r["count"]) for r in facets["code"]) == [("007", 2), ("7", 2), ("7", 2)]


def test_a_string_with_a_type_mark_from_an_old_store_is_no_facet_value():
    """An upgrade audit: "\ufdd1true" (stored by 0.2.0) merged with the boolean true into one row,
    shown as the string, which no filter takes; it is no value a filter compares, so not counted."""
    facets = facet_counts([hit(0, flag="\ufdd1true"), hit(1, flag=True), hit(2, flag=["\ufdd07", "x"])])
    assert facets["flag"] == [{"value": True, "count": 1}, {"value": "x", "count": 1}]
