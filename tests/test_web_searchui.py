"""The Search UI adapter, table-driven: ApiProxyConnector request bodies in, response states out."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the [web] extra is not installed")

from indexer.errors import SearchError  # noqa: E402
from indexer.records import Hit, SpanMatch  # noqa: E402
from indexer.web import searchui  # noqa: E402
from indexer.web.searchui import FieldFilter  # noqa: E402

LIMITS = {"max_page_size": 100, "max_phrase_chars": 50}


def hit(i: int, text: str = "Tyrannosaurus rex lived here.", spans=((0, 17),), **fields) -> Hit:
    return Hit(
        id=f"p{i}",
        score=0.9 - i / 100,
        text=text,
        fields=fields,
        spans=tuple(SpanMatch(s, e, text[s:e], 0.9 - i / 100, ("dinosaur",)) for s, e in spans),
    )


def test_parse_search_defaults():
    plan = searchui.parse_search({"state": {"searchTerm": " dinosaur "}, "queryConfig": {}}, **LIMITS)
    assert plan.search_term == "dinosaur"
    assert (plan.page, plan.size) == (1, searchui.DEFAULT_PAGE_SIZE)
    assert plan.filters == () and plan.facets == () and plan.result_fields is None


def test_parse_search_reads_paging_filters_facets_and_fields():
    body = {
        "state": {
            "searchTerm": "dinosaur",
            "current": 3,
            "resultsPerPage": 5,
            "filters": [{"field": "topic", "type": "any", "values": ["science", "history"]}],
        },
        "queryConfig": {
            "filters": [{"field": "lang", "values": ["en"]}],
            "facets": {"topic": {"type": "value", "size": 4}, "year": {"type": "range", "ranges": []}},
            "disjunctiveFacets": ["topic"],
            "result_fields": {"text": {"snippet": {}}, "title": {"raw": {}}},
        },
    }
    plan = searchui.parse_search(body, **LIMITS)
    assert (plan.page, plan.size) == (3, 5)
    assert plan.filters == (
        FieldFilter("lang", "all", ("en",)),
        FieldFilter("topic", "any", ("science", "history")),
    )
    assert [f.field for f in plan.facets] == ["topic"]  # range facets are left out
    assert plan.facets[0].size == 4
    assert plan.disjunctive == {"topic"}
    assert plan.result_fields == {"text", "title"}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"state": {"searchTerm": "x" * 51}}, "limit is 50"),
        ({"state": {"searchTerm": 3}}, "must be a string"),
        ({"state": {"resultsPerPage": 101}}, "above the limit"),
        ({"state": {"resultsPerPage": 0}}, "positive integer"),
        ({"state": {"current": "2"}}, "positive integer"),
        ({"state": {"filters": [{"field": "y", "values": [{"from": 1, "to": 2, "name": "r"}]}]}}, "range filters"),
        ({"state": {"filters": [{"field": "y", "type": "some", "values": ["a"]}]}}, "use any, all or none"),
        ({"state": {"filters": [{"values": ["a"]}]}}, "'field'"),
        ({"state": {"filters": [{"field": "y", "values": "a"}]}}, "must be a list"),
        ({"state": {"filters": [{"field": "y", "values": [["a"]]}]}}, "plain values only"),
        # a "none" filter is applied here, by the stores' rule for values too: a string with a
        # number's type mark matched a stored number; an infinity matched nothing
        ({"state": {"filters": [{"field": "y", "type": "none", "values": ["\ufdd02020"]}]}}, "starts with U\\+FDD0"),
        ({"state": {"filters": [{"field": "y", "type": "none", "values": [float("inf")]}]}}, "not a finite number"),
        ({"state": [], "queryConfig": {}}, "JSON object"),
        # an audit: a request-state key beside "state" was ignored, and the search answered empty
        ({"searchTerm": "river"}, 'searchTerm belongs inside "state"'),
        ({"state": {"searchTerm": 0}}, "searchTerm must be a string"),
        ({"state": {"searchTerm": False}}, "searchTerm must be a string"),
        ({"state": {"searchTerm": "x"}, "queryConfig": {"facets": {"topic": {"type": "value", "sort": "bogus"}}}},
         "sort 'bogus' is not supported"),
        ({"state": {"searchTerm": "river"}, "current": 2}, 'current belongs inside "state"'),
        # an audit: a sort was answered in relevance order as if applied
        ({"state": {"sortField": "score", "sortDirection": "asc"}}, "sorting by score asc is not supported"),
        ({"state": {"sortField": "id"}}, "sorting by id desc"),
        ({"state": {"sortList": [{"field": "topic", "direction": "asc"}]}}, "sorting by topic asc"),
        ({"state": {"sortList": "topic"}}, "sortList must be a list"),
        # every filter type checks its field as the stores do: "none" and many-valued "all" are
        # applied to the hits' metadata, where such a field matched nothing and filtered nothing out
        ({"state": {"filters": [{"field": "to pic", "type": "none", "values": ["a"]}]}}, "to pic"),
        ({"state": {"filters": [{"field": "to pic", "type": "all", "values": ["a", "b"]}]}}, "to pic"),
        ({"state": {"filters": [{"field": "spans.labels", "type": "none", "values": ["person"]}]}}, "span filter"),
        ({"state": {"filters": [{"field": "spans.labels", "type": "all", "values": ["a", "b"]}]}}, "span filter"),
        ({"state": {"filters": [{"field": "spans.labels", "type": "any", "values": ["a"]},
                                {"field": "spans.labels", "type": "any", "values": ["b"]}]}}, "one filter per span field"),
        # an audit: "any of no values" filtered nothing (every passage); the JSON API refuses it
        *[({"state": {"filters": [{"field": "s", "type": t, "values": []}]}}, "empty list of values")
          for t in ("any", "all", "none")],
    ],
)
def test_parse_search_refuses_what_it_cannot_answer(body, message):
    with pytest.raises(SearchError, match=message):
        searchui.parse_search(body, **LIMITS)


def test_autocomplete_refuses_a_search_term_beside_state():
    with pytest.raises(SearchError, match='searchTerm belongs inside "state"'):
        searchui.parse_autocomplete({"searchTerm": "riv"}, max_phrase_chars=50, max_page_size=10)


def test_relevance_order_is_the_sort_search_ui_may_ask_for():
    for state in ({"sortField": "", "sortDirection": ""}, {"sortField": "_score", "sortDirection": "desc"},
                  {"sortList": []}, {"sortList": [{"field": "score", "direction": "desc"}]}):
        assert searchui.parse_search({"state": {"searchTerm": "x", **state}}, **LIMITS).search_term == "x"


def test_a_page_size_left_out_is_the_limit_where_that_is_lower():
    """A review: with --max-page-size under 20, every request without resultsPerPage was a 400."""
    assert searchui.parse_search({"state": {"searchTerm": "x"}}, max_phrase_chars=50, max_page_size=3).size == 3
    assert searchui.parse_search({"state": {"searchTerm": "x"}}, **LIMITS).size == searchui.DEFAULT_PAGE_SIZE
    with pytest.raises(SearchError, match="above the limit of 3"):
        searchui.parse_search({"state": {"resultsPerPage": 4}}, max_phrase_chars=50, max_page_size=3)


def test_a_facet_no_filter_takes_is_left_out_not_refused():
    body = {"state": {"searchTerm": "x"}, "queryConfig": {"facets": {"to pic": {"type": "value"}, "topic": {"type": "value"}}}}
    assert [f.field for f in searchui.parse_search(body, **LIMITS).facets] == ["topic"]


@pytest.mark.parametrize(
    "filters, pushed, post",
    [
        ([FieldFilter("t", "any", ("a", "b"))], {"t": ["a", "b"]}, []),
        ([FieldFilter("t", "all", ("a",))], {"t": "a"}, []),
        ([FieldFilter("t", "all", ("a", "b"))], {}, ["t"]),
        ([FieldFilter("t", "none", ("a",))], {}, ["t"]),
        ([FieldFilter("t", "any", ("a",)), FieldFilter("t", "any", ("b",))], {"t": "a"}, ["t"]),
    ],
)
def test_split_pushes_simple_filters_down_and_keeps_the_rest(filters, pushed, post):
    plan = searchui.SearchPlan("dino", tuple(filters), 1, 10, (), frozenset(), None)
    query, rest = plan.split()
    assert query.filter_dict() == pushed
    assert [f.field for f in rest] == post


def test_split_excluding_a_field_drops_all_its_filters():
    plan = searchui.SearchPlan(
        "dino", (FieldFilter("t", "any", ("a",)), FieldFilter("u", "none", ("b",))), 1, 10, (), frozenset(), None
    )
    query, rest = plan.split(excluding="t")
    assert query.filter_dict() == {} and rest == (FieldFilter("u", "none", ("b",)),)


@pytest.mark.parametrize(
    "flt, fields, expected",
    [
        (FieldFilter("t", "any", ("a", "b")), {"t": "b"}, True),
        (FieldFilter("t", "any", ("a",)), {"t": "c"}, False),
        (FieldFilter("t", "any", ("a",)), {}, False),
        (FieldFilter("t", "all", ("a", "b")), {"t": ["a", "b", "c"]}, True),
        (FieldFilter("t", "all", ("a", "b")), {"t": "a"}, False),
        (FieldFilter("t", "none", ("a",)), {"t": "b"}, True),
        (FieldFilter("t", "none", ("a",)), {"t": ["b", "a"]}, False),
        (FieldFilter("t", "none", ("a",)), {}, True),
        (FieldFilter("n", "any", (1,)), {"n": True}, False),
        (FieldFilter("n", "any", (2,)), {"n": 2.0}, True),
        (FieldFilter("n", "none", (1,)), {"n": True}, True),  # as the store decides "any": true is not 1
        (FieldFilter("n", "any", (True,)), {"n": True}, True),
        (FieldFilter("n", "any", ("2001",)), {"n": 2001}, True),  # a text spelling the number, as the store
        (FieldFilter("n", "any", (1e-05,)), {"n": 1e-05}, True),
    ],
)
def test_field_filter_semantics(flt, fields, expected):
    assert flt.matches(fields) is expected


def test_highlight_escapes_text_and_marks_mentions():
    text = 'Rex <script>alert("x")</script> & <img src=x onerror=alert(1)> met Stegosaurus.'
    start = text.index("Stegosaurus")
    spans = (SpanMatch(start, start + 11, "Stegosaurus", 0.8), SpanMatch(0, 3, "Rex", 0.7))
    out = searchui.highlight_html(text, spans)
    assert out.startswith("<em>Rex</em> &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img")
    assert out.endswith("<em>Stegosaurus</em>.")
    assert "<script" not in out and "<img" not in out
    assert out.count("<em>") == 2


def test_highlight_skips_overlapping_and_out_of_range_spans():
    text = "abcdef"
    spans = (SpanMatch(0, 3, "abc", 0.9), SpanMatch(2, 4, "cd", 0.8), SpanMatch(4, 99, "?", 0.7))
    assert searchui.highlight_html(text, spans) == "<em>abc</em>def"


def test_highlight_counts_characters_not_bytes():
    text = "🦖 T. rex"
    assert searchui.highlight_html(text, (SpanMatch(2, 8, "T. rex", 0.9),)) == "🦖 <em>T. rex</em>"


def test_search_result_shape():
    h = hit(0, title="Dinosaurs", id="user-id-field")
    r = searchui.search_result(h)
    assert r["id"] == {"raw": "p0"}  # the passage id wins over a metadata field named id
    assert r["text"]["raw"] == h.text and r["text"]["snippet"].startswith("<em>Tyrannosaurus rex</em>")
    assert r["title"] == {"raw": "Dinosaurs"}
    assert r["mentions"] == {"raw": ["Tyrannosaurus rex"]}
    assert r["score"]["raw"] == pytest.approx(0.9)
    assert r["_meta"]["rawHit"]["_source"]["title"] == "Dinosaurs"
    only = searchui.search_result(h, result_fields=frozenset({"title"}))
    assert set(only) == {"title", "id", "_meta"}


def test_metadata_named_like_a_result_field_is_kept_under_fields():
    # an audit: metadata "score", "mentions", "spans", "text" and "id" were overwritten by the hit's own
    h = hit(0, title="T", score=5, mentions="m", id="user-id")
    by = SpanMatch(0, 4, h.text[:4], 0.95, ("label",))  # the candidate that ranked it
    h = Hit(h.id, h.score, h.text, {**h.fields, "spans": ["s"], "text": "meta text", "ranked_by": "meta"}, h.spans, by)
    r = searchui.search_result(h)
    assert r["ranked_by"] == {"raw": by.to_dict()} and r["fields.ranked_by"] == {"raw": "meta"}
    assert r["score"]["raw"] == pytest.approx(0.9) and r["fields.score"] == {"raw": 5}
    assert r["fields.mentions"] == {"raw": "m"} and r["fields.spans"] == {"raw": ["s"]}
    assert r["fields.text"] == {"raw": "meta text"} and r["fields.id"] == {"raw": "user-id"}
    assert r["id"] == {"raw": "p0"} and r["text"]["raw"] == h.text
    # an audit: a metadata "fields.score" beside "score" met its renaming, and one of them was lost
    both = searchui.search_result(hit(1, score=1, **{"fields.score": 2, "fields.x": 3}))
    assert (both["fields.score"], both["fields.fields.score"], both["fields.fields.x"]) == ({"raw": 1}, {"raw": 2}, {"raw": 3})


@pytest.mark.parametrize(
    "page, size, total, start, end, pages, n",
    [(1, 2, 5, 1, 2, 3, 2), (3, 2, 5, 5, 5, 3, 1), (4, 2, 5, 0, 0, 3, 0), (1, 10, 0, 0, 0, 0, 0)],  # past the last page: 0 to 0
)
def test_response_state_paging(page, size, total, start, end, pages, n):
    plan = searchui.SearchPlan("dino", (), page, size, (), frozenset(), None)
    state = searchui.response_state(plan, [hit(i) for i in range(total)])
    assert state["totalResults"] == total and state["totalPages"] == pages
    assert len(state["results"]) == n
    if n:
        assert (state["pagingStart"], state["pagingEnd"]) == (start, end)
    assert state["resultSearchTerm"] == "dino"
    assert set(state) >= {"requestId", "facets", "wasSearched", "rawResponse", "results"}


def test_facet_state_shape_and_sort():
    hits = [hit(0, topic="b"), hit(1, topic="a"), hit(2, topic="b")]
    by_count = searchui.facet_state(searchui.FacetSpec("topic", 10, "count"), hits)
    assert by_count == [{"field": "topic", "type": "value", "data": [{"value": "b", "count": 2}, {"value": "a", "count": 1}]}]
    by_value = searchui.facet_state(searchui.FacetSpec("topic", 1, "value"), hits)
    assert by_value[0]["data"] == [{"value": "a", "count": 1}]


def test_facet_sort_by_value_orders_numbers_by_size():
    """An audit: numbers sorted as text (-5, 1.5, 10, 100, 2, 9), and size 3 dropped 2 and 9."""
    hits = [hit(i, rank=r) for i, r in enumerate([9, 10, 100, 2, -5, 1.5])]
    by_value = searchui.facet_state(searchui.FacetSpec("rank", 3, "value"), hits)
    assert [d["value"] for d in by_value[0]["data"]] == [-5, 1.5, 2]
    mixed = [hit(0, v="b"), hit(1, v=10), hit(2, v=True), hit(3, v=2)]
    assert [d["value"] for d in searchui.facet_state(searchui.FacetSpec("v", 9, "value"), mixed)[0]["data"]] == [2, 10, True, "b"]
    # an audit: integers past 2**53 come as digits (facet_json) and were sorted as text among strings
    big = [hit(i, v=v) for i, v in enumerate([12345678901234567890, "a", 9007199254740993, -(2**63) - 1, -(2**63), 7,
                                               "0000000000000000009", "1234567890123456"])]
    assert [d["value"] for d in searchui.facet_state(searchui.FacetSpec("v", 9, "value"), big)[0]["data"]] == [
        "-9223372036854775809", "-9223372036854775808", 7, "9007199254740993", "12345678901234567890",
        "0000000000000000009", "1234567890123456", "a"]  # digits that are no such integer stay text (the review)


def test_suggest_types_prefers_prefix_then_word_then_substring():
    catalog = ["extinct animal", "animal", "dinosaur", "political party", "mammal", "party leader"]
    assert searchui.suggest_types(catalog, "ani", size=10) == ["animal", "extinct animal"]
    assert searchui.suggest_types(catalog, "part", size=10) == ["party leader", "political party"]
    assert searchui.suggest_types(catalog, "mal", size=10) == ["extinct animal", "animal", "mammal"]
    assert searchui.suggest_types(catalog, "", size=2) == ["extinct animal", "animal"]
    assert searchui.suggest_types(catalog, "zzz", size=5) == []


def test_autocomplete_plan_and_state():
    body = {
        "state": {"searchTerm": "dino"},
        "queryConfig": {
            "results": {"resultsPerPage": 2, "result_fields": {"text": {"snippet": {}}}},
            "suggestions": {
                "types": {"documents": {"fields": ["type"]}, "hits": {"queryType": "results", "result_fields": {"title": {}}}},
                "size": 3,
            },
        },
    }
    plan = searchui.parse_autocomplete(body, max_phrase_chars=50, max_page_size=100)
    assert plan.results_size == 2 and plan.suggestion_types == ("documents",) and plan.size == 3
    state = searchui.autocomplete_state(plan, suggestions=["dinosaur"], hits=[hit(i, title="T") for i in range(5)])
    assert state["autocompletedSuggestions"]["documents"] == [{"suggestion": "dinosaur"}]
    assert len(state["autocompletedSuggestions"]["hits"]) == 3
    assert state["autocompletedSuggestions"]["hits"][0]["queryType"] == "results"
    assert set(state["autocompletedSuggestions"]["hits"][0]["result"]) == {"title", "id", "_meta"}
    assert len(state["autocompletedResults"]) == 2
    assert state["autocompletedResults"][0]["text"]["snippet"].startswith("<em>")
    # an audit: a hit ranked by a candidate alone (no mark) is not on Search UI's results page, so
    # it is not offered here either
    hits = [hit(0, spans=()), hit(1), hit(2, spans=()), hit(3)]
    state = searchui.autocomplete_state(plan, suggestions=[], hits=hits)
    assert [r["id"]["raw"] for r in state["autocompletedResults"]] == ["p1", "p3"]
    with pytest.raises(SearchError, match="above the limit of 1"):
        searchui.parse_autocomplete(body, max_phrase_chars=50, max_page_size=1)


@pytest.mark.parametrize("where", ["state", "queryConfig"])
def test_a_filter_of_more_values_than_the_json_api_takes_is_refused(where):
    """/api/v1/search refuses a filter of more than 100 values; /api/search took any number, and a
    "none" filter is applied here to every hit: two requests of 27,000 values held the workers for
    40 s while other searches timed out (an audit)."""
    values = [f"v{i}" for i in range(101)]
    body = {"state": {"searchTerm": "person"}, "queryConfig": {}}
    body[where]["filters"] = [{"field": "topic", "type": "none", "values": values}]
    with pytest.raises(SearchError, match="filter on 'topic': 101 values; the limit is 100"):
        searchui.parse_search(body, **LIMITS)
    body[where]["filters"][0]["values"] = values[:100]
    assert len(searchui.parse_search(body, **LIMITS).filters[0].values) == 100


def test_more_facets_than_filters_are_refused():
    facets = {f"f{i}": {"type": "value"} for i in range(17)}
    body = {"state": {"searchTerm": "person"}, "queryConfig": {"facets": facets}}
    with pytest.raises(SearchError, match="17 facets; the limit is 16"):
        searchui.parse_search(body, **LIMITS, max_filters=16)
    del facets["f16"]
    assert len(searchui.parse_search(body, **LIMITS, max_filters=16).facets) == 16
