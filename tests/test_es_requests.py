"""Golden-file tests of the Elasticsearch request bodies, checked with the client's DSL classes.

Regenerate the golden files after an intended change with ``NERINDEX_UPDATE_GOLDEN=1``
(then review the diff): a missing golden file fails the test instead of being written silently.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from elasticsearch.dsl import Mapping, Q, Search, field, query, types  # noqa: E402

import es_painless as painless  # noqa: E402

from indexer.assets import mappings_dir  # noqa: E402
from indexer.errors import SearchError, StoreError  # noqa: E402
from indexer.records import EncodedPassage, EncodedSpan, Passage  # noqa: E402
from indexer.stores.base import ModelStamp  # noqa: E402
from indexer.stores.filter_rules import Filters  # noqa: E402
from indexer.stores.elasticsearch import index_requests, paged_requests, search_requests, searching  # noqa: E402
from indexer.stores.elasticsearch import similarity as sim  # noqa: E402
from indexer.stores.elasticsearch import templates  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "es"
UPDATE = os.environ.get("NERINDEX_UPDATE_GOLDEN") == "1"

STAMP = ModelStamp(
    id="nerindex-test", version="0.1.0", dims=4,
    checksum="c0ffee00" * 8, similarity="cosine",
)
QUERY = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)


def check_golden(name: str, body: Any) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"golden file {path} missing (run with NERINDEX_UPDATE_GOLDEN=1 and review)"
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(text), f"{name} differs from {path}"


def params_of(cls: type) -> set[str]:
    signature = inspect.signature(cls.__init__)
    return {
        name for name, p in signature.parameters.items()
        if name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


def assert_known(cls: type, body: dict[str, Any]) -> None:
    unknown = set(body) - params_of(cls)
    assert not unknown, f"{cls.__name__} does not know {sorted(unknown)}"


# Query types whose parameters are named in their DSL class signature (not field-keyed).
STRUCTURED = {
    "knn": query.Knn, "nested": query.Nested, "script_score": query.ScriptScore, "bool": query.Bool,
    "constant_score": query.ConstantScore,
}


def check_query(clause: dict[str, Any]) -> None:
    """The clause parses with the DSL, round-trips, and uses only known parameters (recursively)."""
    assert Q(clause).to_dict() == clause
    ((name, params),) = clause.items()
    if name in STRUCTURED:
        assert_known(STRUCTURED[name], params)
    if name == "knn":
        for sub in params.get("filter", []):
            check_query(sub)
    elif name in ("nested", "script_score"):
        check_query(params["query"])
        if "inner_hits" in params:
            assert_known(types.InnerHits, params["inner_hits"])
        if "script" in params:
            assert_known(types.Script, params["script"])
            painless.parse(params["script"]["source"])  # within the subset the fake cluster runs
    elif name == "constant_score":
        check_query(params["filter"])
    elif name == "bool":
        for occur in ("must", "should", "filter", "must_not"):
            for sub in params.get(occur, []):
                check_query(sub)


def check_search(body: dict[str, Any]) -> None:
    """A search body survives the DSL's Search.from_dict round trip; its parts are known."""
    assert Search.from_dict(body).to_dict() == body
    if "query" in body:
        check_query(body["query"])
    if "knn" in body:
        knn = dict(body["knn"])
        filters = knn.pop("filter", None)
        for clause in filters or []:
            check_query(clause)
        assert_known(types.InnerHits, knn["inner_hits"])
        rescore = knn.pop("rescore_vector", None)  # a query.Knn parameter Search.knn() lacks
        rebuilt = Search().knn(filter=filters, **knn).extra(size=body["size"]).source(body["_source"]).to_dict()
        if rescore is not None:
            assert_known(types.RescoreVector, rescore)
            rebuilt["knn"]["rescore_vector"] = rescore
        assert rebuilt == body


def top_k_parts(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """(the ranking nested clause, the marks' nested clause, the other should clauses) of a top-k body."""
    (ranking,) = body["query"]["bool"]["must"]
    marks, *rest = body["query"]["bool"]["should"]
    return ranking["nested"], marks["nested"], rest


def encoded_passage() -> EncodedPassage:
    passage = Passage(id="p-1", text="Barack Obama met Angela Merkel in Berlin.", fields={"source": "wiki", "year": 2009})
    spans = (
        EncodedSpan(start=0, end=12, text="Barack Obama", score=0.9871234567,
                    vector=np.array([0.6, 0.8, 0.0, 0.0], dtype=np.float32), labels=("politician", "person")),
        EncodedSpan(start=17, end=30, text="Angela Merkel", score=0.95,
                    vector=np.array([0.0, 0.6, 0.8, 0.0], dtype=np.float32), labels=("politician",)),
        EncodedSpan(start=34, end=40, text="Berlin", score=0.7,
                    vector=np.array([0.0, 0.0, 0.0, 1.0], dtype=np.float32), labels=()),
    )
    return EncodedPassage(passage=passage, spans=spans, vector=np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32))


# --- index ----------------------------------------------------------------------------------------


def test_index_body_golden_and_valid_for_the_dsl():
    body = index_requests.create_index_body(STAMP, alias="nerindex")
    check_golden("create_index", body)
    mapping = Mapping()
    mapping._update_from_dict(body["mappings"])
    assert mapping.to_dict() == body["mappings"]
    for vector in (body["mappings"]["properties"]["vector"], body["mappings"]["properties"]["spans"]["properties"]["vector"]):
        assert_known(field.DenseVector, {k: v for k, v in vector.items() if k != "type"})
        assert_known(types.DenseVectorIndexOptions, vector["index_options"])
    assert templates.placeholders(body) == set()
    # a passage's marks come back up to this many (searching.complete_marks asks for no more)
    assert body["settings"]["index"]["max_inner_result_window"] == search_requests.MARKS_WINDOW


def test_index_body_follows_the_issue():
    mappings = index_requests.index_body(STAMP)["mappings"]
    spans = mappings["properties"]["spans"]
    assert mappings["dynamic"] == "strict"
    assert spans["type"] == "nested" and "include_in_parent" not in spans
    assert spans["properties"]["labels"] == {"type": "keyword"}  # the passage's labels are the mentions' (passage_document)
    assert mappings["properties"]["labels"]["type"] == "keyword"
    vector = spans["properties"]["vector"]
    assert vector["dims"] == 4 and vector["similarity"] == "cosine"
    assert vector["index_options"] == {"type": "int8_hnsw", "m": 16, "ef_construction": 100}
    assert mappings["_meta"]["model"] == STAMP.to_dict()
    # metadata is kept in _source only (any types, objects, dotted keys: nothing to refuse) and
    # filtered through filter_texts, whose keys are literal (meta.lang is not a member of meta)
    assert mappings["properties"]["fields"] == {"type": "object", "enabled": False}
    assert mappings["properties"]["filter_texts"]["subobjects"] is False


def test_template_file_is_the_source_of_the_mapping():
    raw = json.loads((mappings_dir() / templates.INDEX_TEMPLATE).read_text())
    assert templates.placeholders(raw) == {"dims", "similarity", "index_options", "meta"}
    body = index_requests.index_body(STAMP)
    assert body["settings"] == raw["settings"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("int8_hnsw", {"type": "int8_hnsw", "m": 16, "ef_construction": 100}),
        ("hnsw", {"type": "hnsw", "m": 16, "ef_construction": 100}),
        ("int8_flat", {"type": "int8_flat"}),
        ({"type": "int4_hnsw", "m": 32, "ef_construction": 200}, {"type": "int4_hnsw", "m": 32, "ef_construction": 200}),
    ],
)
def test_index_options_pinned(spec, expected):
    body = index_requests.index_options_body(spec)
    assert body == expected
    assert_known(types.DenseVectorIndexOptions, body)


@pytest.mark.parametrize("spec", ["bbq_hnsw", "bbq_flat", {"type": "bbq_disk"}])
def test_binary_quantization_is_refused(spec):
    """It left out passages whose best span passed the threshold, without a word (an audit)."""
    with pytest.raises(StoreError, match="binary quantization misses passages.*ask for int8_hnsw"):
        index_requests.index_options_body(spec)


@pytest.mark.parametrize("spec", ["", "Int8", "int8 hnsw", {"m": 16}, 3])
def test_index_options_invalid(spec):
    with pytest.raises(StoreError):
        index_requests.index_options_body(spec)


def test_index_body_rejects_unknown_similarity():
    with pytest.raises(StoreError, match="similarity"):
        index_requests.index_body(ModelStamp("m", "1", 4, "x", similarity="manhattan"))


@pytest.mark.parametrize("name", ["nerindex", "my-index_2", "a.b"])
def test_index_names_accepted(name):
    assert index_requests.check_index_name(name) == name


@pytest.mark.parametrize("name", ["", "Nerindex", "-x", "_x", "+x", "a b", "a*b", "a/b", "a:b", "..", "x" * 241])
def test_index_names_refused(name):
    with pytest.raises(StoreError, match="invalid Elasticsearch index name"):
        index_requests.check_index_name(name)


def test_next_index_name_skips_every_used_version():
    assert index_requests.next_index_name("nerindex", []) == "nerindex-000001"
    used = ["nerindex-000001", "nerindex-000007", "nerindex-extra", "other-000009", "nerindex-0000010"]
    assert index_requests.next_index_name("nerindex", used) == "nerindex-000008"


def test_alias_swap_is_one_request_with_both_actions():
    actions = index_requests.alias_swap_actions("nerindex", "nerindex-000001", "nerindex-000002")
    check_golden("alias_swap", {"actions": actions})
    assert index_requests.alias_swap_actions("nerindex", None, "nerindex-000001") == [
        {"add": {"index": "nerindex-000001", "alias": "nerindex"}}
    ]


# --- documents --------------------------------------------------------------------------------------


def test_passage_document_golden():
    doc = encoded_passage()
    check_golden("document", index_requests.passage_document(doc, STAMP))
    action = index_requests.bulk_action(doc, STAMP, "nerindex")
    assert action["_id"] == "p-1" and action["_op_type"] == "index" and action["_index"] == "nerindex"


def test_document_has_only_mapped_fields():
    """dynamic: strict refuses unknown fields, so every field sent must be in the mapping."""
    mapping = index_requests.index_body(STAMP)["mappings"]["properties"]
    source = index_requests.passage_document(encoded_passage(), STAMP)
    assert set(source) <= set(mapping)
    for span in source["spans"]:
        assert set(span) <= set(mapping["spans"]["properties"])
    assert source["labels"] == sorted({label for span in source["spans"] for label in span["labels"]})


def test_candidates_are_written_as_such_and_an_older_mapping_gets_the_field():
    doc = encoded_passage()
    candidate = dataclasses.replace(doc, spans=(dataclasses.replace(doc.spans[0], mention=False), doc.spans[1]))
    source = index_requests.passage_document(candidate, STAMP)
    assert [s["mention"] for s in source["spans"]] == [False, True]
    # the passage's labels are its mentions' (a dashboard counted the candidates' too: an audit)
    assert source["labels"] == sorted(set(doc.spans[1].labels))
    mapping = index_requests.index_body(STAMP)["mappings"]
    assert mapping["properties"]["spans"]["properties"]["mention"] == {"type": "boolean"}
    assert index_requests.mention_mapped(mapping)
    mapping["properties"]["spans"]["properties"].pop("mention")  # an index made before candidates
    assert not index_requests.mention_mapped(mapping) and not index_requests.mention_mapped({})
    assert index_requests.mention_mapping() == {
        "properties": {"spans": {"type": "nested", "properties": {"mention": {"type": "boolean"}}}}
    }


def test_document_ids_are_deterministic_and_fit():
    assert index_requests.document_id("abc") == "abc"
    long_id = "é" * 300  # 600 bytes
    hashed = index_requests.document_id(long_id)
    assert hashed == index_requests.document_id(long_id) and hashed.startswith("sha256:") and len(hashed.encode()) <= 512
    assert index_requests.document_id("").startswith("sha256:")


def test_vector_values_round_trip_float32():
    vector = np.random.default_rng(0).normal(size=384).astype(np.float32)
    values = index_requests.vector_values(vector)
    assert all(isinstance(v, float) for v in values)
    assert np.max(np.abs(np.asarray(values, dtype=np.float32) - vector)) < 1e-7


@pytest.mark.parametrize(
    "vector, problem",
    [
        (np.ones(4) / 2, None),
        (np.ones(4), "length 2, not 1"),  # the embedded store scored it 1.6 where Elasticsearch said 0.8
        (np.ones(3) / np.sqrt(3), "shape"),
        (np.array([1.0, np.nan, 0, 0]), "non-finite"),
        (np.zeros(4), "zeros"),
        (None, "missing"),
    ],
)
def test_vector_problems(vector, problem):
    from indexer.stores import base

    found = base.vector_problem(vector, 4)
    assert (found is None) if problem is None else (problem in found)


# --- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filters, passage_level, span_level",
    [
        ({}, [], []),
        ({"source": "wiki"}, [{"term": {"fields.source": "wiki"}}], []),
        ({"year": 2009}, [{"term": {"fields.year": 2009}}], []),
        ({"year": np.int64(2009)}, [{"term": {"fields.year": 2009}}], []),
        ({"ok": True}, [{"term": {"fields.ok": True}}], []),
        ({"source": ["a", "b"]}, [{"terms": {"fields.source": ["a", "b"]}}], []),
        ({"source": ("a",)}, [{"terms": {"fields.source": ["a"]}}], []),
        ({"source": {"b", "a"}}, [{"terms": {"fields.source": ["a", "b"]}}], []),
        ({"source": None}, [{"bool": {"must_not": [{"exists": {"field": "fields.source"}}]}}], []),
        ({"meta.lang": "en"}, [{"term": {"fields.meta.lang": "en"}}], []),
        ({"spans.labels": "politician"}, [], [{"term": {"spans.labels": "politician"}}]),
        ({"spans.text": ["Obama"]}, [], [{"terms": {"spans.text.keyword": ["Obama"]}}]),
        (
            {"z": 1, "spans.labels": ["a"], "a": 2},
            [{"term": {"fields.a": 2}}, {"term": {"fields.z": 1}}],
            [{"terms": {"spans.labels": ["a"]}}],
        ),
    ],
)
def test_filters_table(filters, passage_level, span_level):
    # an index made before filter_texts (typed 0): the metadata fields themselves
    assert search_requests.filter_clauses(Filters.of(filters), typed=0) == (passage_level, span_level)
    for clause in passage_level + span_level:
        check_query(clause)


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"spans.vector": [1]}, "span field"),
        ({"spans.score": 0.5}, "span field"),
        ({"year": {"gte": 2000}}, "only exact values"),
        ({"a": [{"b": 1}]}, "plain values"),
        ({"": 1}, "filter field"),
        ({"a*": 1}, "filter field"),
    ],
)
def test_filters_refused(filters, message):
    with pytest.raises(SearchError, match=message):
        Filters.of(filters)


# --- search bodies --------------------------------------------------------------------------------


def test_knn_body_golden():
    body = search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10)
    check_golden("knn_search", body)
    check_search(body)
    ranking, marks, rest = top_k_parts(body)
    assert body["size"] == 10 and rest == []
    knn = ranking["query"]["knn"]
    assert knn["field"] == "spans.vector" and knn["k"] == 10 and knn["num_candidates"] == 300
    assert knn["similarity"] == 0.5  # raw cosine, not the (1 + cos) / 2 score
    # every span ranks (the best one is the one inner hit read); only mentions are marked
    # (with the fields that name it where it is a candidate: Hit.ranked_by)
    assert ranking["score_mode"] == "max" and ranking["inner_hits"] == {
        "name": "best_span", "size": 1, "_source": False,
        "fields": ["spans.start", "spans.end", "spans.text", "spans.labels", "spans.mention"]}
    assert marks["score_mode"] == "none"  # adds nothing to the score, and a should clause restricts nothing
    assert marks["query"] == {"bool": {"must": [ranking["query"]], "must_not": [{"term": {"spans.mention": False}}]}}
    assert marks["inner_hits"]["name"] == "spans" and marks["inner_hits"]["size"] == 100
    assert marks["inner_hits"]["_source"] is False and "spans.vector" not in marks["inner_hits"]["fields"]


def test_knn_body_with_filters_and_text_golden():
    body = search_requests.knn_search_body(
        QUERY, min_similarity=0.42, limit=25, num_candidates=400,
        filters=Filters.of({"source": ["wiki", "news"], "spans.labels": "politician"}), text="treaty signed",
    )
    check_golden("knn_search_filtered", body)
    check_search(body)
    ranking, marks, _ = top_k_parts(body)
    # the marks' kNN is the ranking one, filters included: it finds the same passages
    assert marks["query"]["bool"]["must"] == [ranking["query"]]
    # Each clause stands alone (Elasticsearch 9.2 wants span and passage filters separate).
    assert ranking["query"]["knn"]["filter"] == [
        {"terms": {"filter_typed.source": ["wiki", "news"]}},  # the default: an index this nerindex makes
        {"term": {"spans.labels": "politician"}},
        {"bool": {"filter": [{"match_phrase": {"text": "treaty"}}, {"match_phrase": {"text": "signed"}}]}},
    ]


def test_bm25_boost_body_golden():
    body = search_requests.bm25_boost_search_body(QUERY, text="treaty", min_similarity=0.5, limit=10,
                                 filters=Filters.of({"source": "wiki"}), boost=0.2)
    check_golden("hybrid_search", body)
    check_search(body)
    must, marks, rest = top_k_parts(body)
    assert must["score_mode"] == "max" and must["query"]["knn"]["similarity"] == 0.5
    assert marks["query"]["bool"]["must"] == [must["query"]]
    assert rest == [{"match": {"text": {"query": "treaty", "boost": 0.2}}}]


def test_exhaustive_body_golden():
    body = paged_requests.exhaustive_search_body(
        QUERY, min_similarity=0.5, filters=Filters.of({"source": "wiki", "spans.labels": "politician"}),
        text="treaty", size=500, pit_id="pit-1", keep_alive="2m", search_after=[1.73, 12],
    )
    check_golden("exhaustive_search", body)
    check_search(body)
    nested = body["query"]["bool"]["must"][0]["nested"]
    script_score = nested["query"]["script_score"]
    assert script_score["min_score"] == pytest.approx(1.5)
    assert "cosineSimilarity(params.query_vector, 'spans.vector')" in script_score["script"]["source"]
    assert script_score["query"] == {"bool": {"filter": [{"term": {"spans.labels": "politician"}}]}}
    assert body["sort"][-1] == {"_shard_doc": {"order": "asc"}}
    assert "index" not in body  # a point-in-time search names no index


def test_exhaustive_body_first_page_without_filters():
    body = paged_requests.exhaustive_search_body(QUERY, min_similarity=0.3, size=100, pit_id="p")
    check_search(body)
    assert "search_after" not in body
    assert body["query"]["bool"]["must"][0]["nested"]["query"]["script_score"]["query"] == {"match_all": {}}
    (gate,) = body["query"]["bool"]["filter"]  # the mentions only
    assert gate["nested"]["query"]["script_score"]["query"] == {"bool": {"must_not": [{"term": {"spans.mention": False}}]}}


def test_exhaustive_body_gates_on_a_mention_and_scores_by_every_span():
    """--all: the score is the best span, mention or candidate (must); a passage needs a mention
    over the threshold (a filter clause, same exact script and min_score), whose inner hits mark."""
    body = paged_requests.exhaustive_search_body(
        QUERY, min_similarity=0.5, filters=Filters.of({"source": "wiki", "spans.labels": "politician"}), pit_id="p",
    )
    (ranking,) = body["query"]["bool"]["must"]
    gate, *restrictions = body["query"]["bool"]["filter"]
    ranking, gate = ranking["nested"], gate["nested"]
    assert (ranking["score_mode"], ranking["inner_hits"]["name"], ranking["inner_hits"]["size"]) == ("max", "best_span", 1)
    assert (gate["score_mode"], gate["inner_hits"]) == ("none", search_requests.inner_hits())
    scored, gated = ranking["query"]["script_score"], gate["query"]["script_score"]
    assert scored["script"] == gated["script"] and scored["min_score"] == gated["min_score"] == pytest.approx(1.5)
    label = {"term": {"spans.labels": "politician"}}
    assert scored["query"] == {"bool": {"filter": [label]}}  # span filters restrict both
    assert gated["query"] == {"bool": {"filter": [label], "must_not": [{"term": {"spans.mention": False}}]}}
    assert restrictions == [{"terms": {"filter_typed.source": ["wiki"]}}]  # an index this nerindex makes


def test_scan_and_counts_bodies_golden():
    check_golden("scan", paged_requests.scan_body(size=500, search_after=["p-41"]))
    check_search(paged_requests.scan_body())
    check_golden("counts", index_requests.counts_body())
    check_search(index_requests.counts_body())


@pytest.mark.parametrize("limit", [0, -1, 10_001])
def test_knn_limit_bounds(limit):
    with pytest.raises(SearchError):
        search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=limit)


@pytest.mark.parametrize(
    "k, requested, expected",
    [(1, None, 300), (10, None, 300), (80, None, 300), (200, None, 400), (6000, None, 10_000), (50, 20, 50),
     (10, 20_000, 10_000)],
)
def test_num_candidates(k, requested, expected):
    assert search_requests.num_candidates_for(k, requested) == expected


def test_query_vector_must_be_finite():
    with pytest.raises(SearchError):
        search_requests.knn_search_body(np.array([np.nan, 0, 0, 1.0]), min_similarity=0.5)


# --- hybrid scoring (passage weight) ----------------------------------------------------------------


def test_passage_weight_zero_leaves_every_body_unchanged():
    assert search_requests.knn_search_body(QUERY, min_similarity=0.5, passage_weight=0.0) == search_requests.knn_search_body(QUERY, min_similarity=0.5)
    assert search_requests.bm25_boost_search_body(QUERY, text="t", min_similarity=0.5, passage_weight=0) == \
        search_requests.bm25_boost_search_body(QUERY, text="t", min_similarity=0.5)
    assert paged_requests.exhaustive_search_body(QUERY, min_similarity=0.5, pit_id="p", passage_weight=0.0) == \
        paged_requests.exhaustive_search_body(QUERY, min_similarity=0.5, pit_id="p")


def test_knn_body_with_passage_weight_golden():
    body = search_requests.knn_search_body(
        QUERY, min_similarity=0.5, limit=10, filters=Filters.of({"source": "wiki", "spans.labels": "politician"}),
        text="treaty", passage_weight=0.25,
    )
    check_golden("knn_search_passage_weight", body)
    check_search(body)
    assert "knn" not in body and body["size"] == 10
    assert "script" not in json.dumps(body)  # native: no Painless for top-k
    nested, marks, should = top_k_parts(body)
    assert nested["path"] == "spans" and nested["score_mode"] == "max"
    assert nested["inner_hits"] == search_requests.best_span_inner_hits()
    assert marks["inner_hits"] == search_requests.inner_hits()
    assert marks["query"]["bool"]["must"] == [nested["query"]]  # the marks come from the same pool
    knn = nested["query"]["knn"]
    # the candidate pool, not just `limit`, is re-ranked by the combined score
    assert knn["k"] == knn["num_candidates"] == 300 and knn["similarity"] == 0.5
    assert knn["filter"] == [
        {"terms": {"filter_typed.source": ["wiki"]}},  # the default: an index this nerindex makes
        {"term": {"spans.labels": "politician"}},
        {"match_phrase": {"text": "treaty"}},
    ]
    passage, missing = should
    passage = passage["knn"]
    assert passage["field"] == "vector" and passage["boost"] == 0.25
    assert passage["query_vector"] == knn["query_vector"]
    # exact passage scores: no more candidates (the span kNN's passages) than k
    assert passage["k"] == passage["num_candidates"] == 300
    assert passage["filter"] == [{"nested": {"path": "spans", "query": nested["query"]}}]
    # a passage without a vector scores as cosine 0: λ · (1 + 0) / 2
    assert missing["constant_score"]["boost"] == pytest.approx(0.125)
    assert missing["constant_score"]["filter"] == {"bool": {"must_not": [{"exists": {"field": "vector"}}]}}


def test_knn_body_with_passage_weight_keeps_limit_and_candidates():
    body = search_requests.knn_search_body(QUERY, min_similarity=0.3, limit=300, num_candidates=2000, passage_weight=1)
    knn = body["query"]["bool"]["must"][0]["nested"]["query"]["knn"]
    assert body["size"] == 300 and knn["k"] == knn["num_candidates"] == 2000
    check_search(body)
    # l2_norm: Elasticsearch's order (span + λ · passage kNN score) is not the cosine order, so
    # every candidate comes back to be ranked by the store
    assert search_requests.knn_search_body(QUERY, min_similarity=0.3, limit=300, num_candidates=2000,
                              passage_weight=1, metric="l2_norm")["size"] == 2000


def test_rescore_vector_rescores_every_candidate():
    top = search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10, rescore=True)
    check_golden("knn_search_rescore", top)
    check_search(top)
    ranking, marks, _ = top_k_parts(top)
    assert ranking["query"]["knn"]["rescore_vector"] == {"oversample": 10.0}  # k · 10 = num_candidates
    assert marks["query"]["bool"]["must"] == [ranking["query"]]
    wider = top_k_parts(search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=200, rescore=True))[0]
    assert wider["query"]["knn"]["rescore_vector"] == {"oversample": 2.0}
    weighted = search_requests.knn_search_body(QUERY, min_similarity=0.5, passage_weight=0.5, rescore=True)
    check_search(weighted)
    span = weighted["query"]["bool"]["must"][0]["nested"]["query"]["knn"]
    passage = top_k_parts(weighted)[2][0]["knn"]
    assert span["rescore_vector"] == passage["rescore_vector"] == {"oversample": 1.0}  # k = num_candidates
    assert passage["filter"][0]["nested"]["query"]["knn"]["rescore_vector"] == {"oversample": 1.0}
    bm25 = search_requests.bm25_boost_search_body(QUERY, text="t", min_similarity=0.5, rescore=True)
    assert bm25["query"]["bool"]["must"][0]["nested"]["query"]["knn"]["rescore_vector"] == {"oversample": 10.0}
    assert "rescore_vector" not in json.dumps(search_requests.knn_search_body(QUERY, min_similarity=0.5, passage_weight=0.5))


def test_quantized_index_searches_with_slack_and_fetches_more():
    """A quantized index's passage _score can understate its best span (the nested kNN rescores
    the span the int8 estimate picked): the kNN similarity leaves QUANTIZED_MARGIN of slack, and a
    caller may fetch more than the limit to rank them itself (hybrid scoring too)."""
    margin = search_requests.QUANTIZED_MARGIN
    exact = top_k_parts(search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10))[0]["query"]["knn"]
    quantized = search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10, rescore=True, fetch=30)
    ranking, marks, _ = top_k_parts(quantized)
    assert exact["similarity"] == 0.5 and ranking["query"]["knn"]["similarity"] == pytest.approx(0.5 - margin)
    assert marks["query"]["bool"]["must"] == [ranking["query"]]  # marks: the same slack, filtered on reading
    assert quantized["size"] == ranking["query"]["knn"]["k"] == 30
    assert search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10, passage_weight=0.5)["size"] == 10
    weighted = search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10, passage_weight=0.5, rescore=True, fetch=15)
    assert weighted["size"] == 15
    bm25 = search_requests.bm25_boost_search_body(QUERY, text="t", min_similarity=0.5, rescore=True, fetch=30)
    assert bm25["size"] == 30
    assert not search_requests.pool_is_final(0.60, 0.59, 0.0, 0.0, slack=margin)
    assert search_requests.pool_is_final(0.61, 0.59, 0.0, 0.0, slack=margin)


@pytest.mark.parametrize("kind, lossy", [("int8_hnsw", True), ("int4_flat", True), ("bbq_hnsw", True),
                                         ("bbq_disk", True), ("hnsw", False), ("flat", False), (None, False)])
def test_quantized_index_types(kind, lossy):
    assert index_requests.quantized(kind) is lossy


def test_span_vector_index_type_from_the_mapping():
    mapping = index_requests.index_body(STAMP)["mappings"]
    assert index_requests.span_vector_index_type(mapping) == "int8_hnsw"
    assert index_requests.span_vector_index_type({"properties": {}}) is None
    # what es reindex carries over to the new index: the options whole, as the old index has them
    assert index_requests.span_vector_index_options(mapping) == {"type": "int8_hnsw", "m": 16, "ef_construction": 100}
    assert index_requests.span_vector_index_options({"properties": {}}) is None


def test_other_index_options_name_both_and_the_way_to_change_them():
    """nerindex index --es-index-options on an existing index: refused where its options differ."""
    mapping = index_requests.index_body(STAMP)["mappings"]  # int8_hnsw
    assert index_requests.other_index_options("a-000001", mapping, "int8_hnsw") is None
    assert index_requests.other_index_options("a-000001", mapping, {"type": "int8_hnsw", "m": 32}) is None
    problem = index_requests.other_index_options("a-000001", mapping, "int8_flat")
    assert "'a-000001' already exists with spans.vector index_options int8_hnsw" in problem
    assert "nerindex es reindex --index-options int8_flat" in problem


def test_exhaustive_body_with_passage_weight_golden():
    body = paged_requests.exhaustive_search_body(
        QUERY, min_similarity=0.5, filters=Filters.of({"source": "wiki"}), text="treaty", size=500,
        pit_id="pit-1", keep_alive="2m", search_after=[2.73, 12], passage_weight=0.5,
    )
    check_golden("exhaustive_search_passage_weight", body)
    check_search(body)
    plain = paged_requests.exhaustive_search_body(
        QUERY, min_similarity=0.5, filters=Filters.of({"source": "wiki"}), text="treaty", size=500,
        pit_id="pit-1", keep_alive="2m", search_after=[2.73, 12],
    )
    script_score = body["query"]["script_score"]
    assert script_score["query"] == plain["query"]  # the span query is untouched, only wrapped
    assert script_score["script"]["source"].startswith("_score + params.passage_weight * (")
    assert body["sort"] == plain["sort"] and body["search_after"] == [2.73, 12]


def test_bm25_boost_body_with_passage_weight_golden():
    body = search_requests.bm25_boost_search_body(QUERY, text="treaty", min_similarity=0.5, limit=10,
                                 filters=Filters.of({"source": "wiki"}), boost=0.2, passage_weight=0.5)
    check_golden("hybrid_search_passage_weight", body)
    check_search(body)
    weighted = search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10, filters=Filters.of({"source": "wiki"}),
                                  passage_weight=0.5)
    # the passage-weight query with BM25 as one more should clause
    assert body["query"]["bool"]["must"] == weighted["query"]["bool"]["must"]
    assert body["query"]["bool"]["should"] == weighted["query"]["bool"]["should"] + [
        {"match": {"text": {"query": "treaty", "boost": 0.2}}}
    ]


@pytest.mark.parametrize("weight", [-0.1, float("nan"), float("inf"), "heavy", None])
def test_passage_weight_must_be_finite_and_not_negative(weight):
    with pytest.raises(SearchError, match="passage_weight"):
        search_requests.knn_search_body(QUERY, min_similarity=0.5, passage_weight=weight)
    with pytest.raises(SearchError, match="passage_weight"):
        paged_requests.exhaustive_search_body(QUERY, min_similarity=0.5, passage_weight=weight)


def knn_score(cos: float, metric: str) -> float:
    """Elasticsearch's documented kNN score of a cosine, per metric (unit vectors)."""
    if metric in ("cosine", "dot_product"):
        return (1 + cos) / 2
    if metric == "l2_norm":
        return 1 / (1 + (2 - 2 * cos))
    return 1 / (1 - cos) if cos < 0 else cos + 1


@pytest.mark.parametrize("metric", ["cosine", "dot_product", "l2_norm", "max_inner_product"])
@pytest.mark.parametrize("span_cos, passage_cos", [(0.9, 0.0), (0.8, 1.0), (-0.4, -1.0), (0.37, -0.6)])
@pytest.mark.parametrize("weight", [0.25, 2.0])
def test_native_hybrid_score_reads_back_span_plus_weighted_passage(metric, span_cos, passage_cos, weight):
    """_score = span kNN score + λ · passage kNN score (bool sums its clauses; boost multiplies)."""
    span_score = knn_score(span_cos, metric)
    score = np.float32(span_score + weight * knn_score(passage_cos, metric))  # as Elasticsearch sends it
    combined = sim.combined_from_knn_scores(score, np.float32(span_score), weight, metric)
    assert combined == pytest.approx(span_cos + weight * passage_cos, abs=1e-5)
    # a passage stored without a vector gets the constant_score clause instead: cosine 0
    body = search_requests.knn_search_body(np.array([1.0, 0, 0, 0]), min_similarity=-1.0, metric=metric, passage_weight=weight)
    constant = top_k_parts(body)[2][1]["constant_score"]["boost"]
    assert sim.combined_from_knn_scores(span_score + constant, span_score, weight, metric) == pytest.approx(span_cos)


@pytest.mark.parametrize("cos", [-1.0, -0.3, 0.0, 0.37, 1.0])
@pytest.mark.parametrize("metric", ["cosine", "dot_product", "l2_norm", "max_inner_product"])
def test_knn_score_from_cosine_is_elasticsearchs_transform(cos, metric):
    assert sim.knn_score_from_cosine(cos, metric) == pytest.approx(knn_score(cos, metric))


def test_hybrid_exact_script_gives_span_plus_weighted_passage():
    body = paged_requests.exhaustive_search_body(np.array([1.0, 0, 0, 0]), min_similarity=0.5, passage_weight=0.5)
    script = body["query"]["script_score"]["script"]
    span_score = sim.SCRIPT_OFFSET + 0.7  # what the nested span script gives a span at cos 0.7
    score = painless.run(script, score=span_score, doc={"vector": [0.6, 0.8, 0, 0]})
    assert sim.combined_from_hybrid_score(score, 0.5) == pytest.approx(0.7 + 0.5 * 0.6)


def test_docs_dev_tools_request_for_hybrid_scoring_is_what_nerindex_sends():
    """docs/elasticsearch.md shows the hybrid request for Kibana Dev Tools: keep it in step."""
    docs = (Path(__file__).parent.parent / "docs" / "elasticsearch.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```\nGET nerindex/_search(?:\?\S*)?\n(.*?)```", docs, re.S) if '"should"' in b]
    assert len(blocks) == 1, "docs/elasticsearch.md should show one hybrid scoring request"
    pasted = json.loads(blocks[0].replace("[ PASTE THE VECTOR HERE ]", json.dumps(index_requests.vector_values(QUERY))))
    # what nerindex sends to Elasticsearch >= 8.18 for the default int8 index (searching.knn_hits)
    assert pasted == search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=10, passage_weight=0.3, rescore=True,
                                                     fetch=searching.fetch_for(10))


# --- similarity conversions -----------------------------------------------------------------------


@pytest.mark.parametrize("cos", [-1.0, -0.3, 0.0, 0.37, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("metric", ["cosine", "dot_product", "l2_norm", "max_inner_product"])
def test_knn_score_round_trip(cos, metric):
    """Elasticsearch's documented score transforms, inverted back to the cosine."""
    if metric in ("cosine", "dot_product"):
        score = (1 + cos) / 2
    elif metric == "l2_norm":
        score = 1 / (1 + (2 - 2 * cos))
    else:
        score = 1 / (1 - cos) if cos < 0 else cos + 1
    assert sim.cosine_from_knn_score(score, metric) == pytest.approx(cos, abs=1e-9)


def test_knn_similarity_parameter_per_metric():
    assert sim.knn_similarity(0.5, "cosine") == 0.5
    assert sim.knn_similarity(0.5, "dot_product") == 0.5
    assert sim.knn_similarity(0.5, "l2_norm") == pytest.approx(1.0)  # ||a-b|| = sqrt(2 - 2 cos)
    assert sim.knn_similarity(1.0, "l2_norm") == 0.0
    with pytest.raises(StoreError):
        sim.knn_similarity(0.5, "hamming")


def test_script_score_is_shifted_cosine():
    assert sim.cosine_from_script_score(1.5) == 0.5
    assert sim.script_source().endswith("+ 1.0")


# --- stored search template -----------------------------------------------------------------------


def render_mustache(source: str, params: dict[str, Any]) -> str:
    """The two mustache forms the template uses: {{#toJson}}name{{/toJson}} and {{name}}."""
    source = re.sub(r"\{\{#toJson\}\}(\w+)\{\{/toJson\}\}", lambda m: json.dumps(params[m.group(1)]), source)
    assert "{{#" not in source, "the test renderer only knows toJson sections"
    return re.sub(r"\{\{(\w+)\}\}", lambda m: str(params[m.group(1)]), source)


def test_search_template_runs_the_same_query():
    body = index_requests.search_template_body()
    check_golden("search_template", body)
    assert body["script"]["lang"] == "mustache"
    params = search_requests.search_template_params(QUERY, min_similarity=0.5, limit=7)
    rendered = json.loads(render_mustache(body["script"]["source"], params))
    assert rendered == search_requests.knn_search_body(QUERY, min_similarity=0.5, limit=7)
    check_search(rendered)
    assert math.isclose(params["similarity"], 0.5)


@pytest.mark.parametrize("kth, floor, best, weight, final", [
    (None, None, 1.0, 2.0, True),  # the pool holds every match
    (1.3, 0.4, 0.8, 1.0, True),  # 1.3 >= 0.4 + 0.8: nothing outside can overtake
    (1.1, 0.4, 0.8, 1.0, False),  # a passage with a span of 0.4 and a passage of 0.8 could
    (None, 0.4, 0.8, 1.0, False),  # fewer than k hits in a full pool: widen
])
def test_a_hybrid_pool_is_final_when_nothing_outside_can_overtake(kth, floor, best, weight, final):
    assert search_requests.pool_is_final(kth, floor, best, weight) is final


def test_the_pool_bound_searches_ask_for_the_last_of_the_pool_and_the_best_passage():
    head, floor, head2, best = search_requests.pool_bound_searches(
        [1.0, 0.0], min_similarity=0.5, metric="cosine", candidates=200, filters=Filters.of({"lang": "en"}),
        text=None, rescore=False,
    )
    assert (floor["from"], floor["size"], floor["knn"]["k"], floor["knn"]["num_candidates"]) == (199, 1, 200, 200)
    assert floor["track_total_hits"] is True  # the pool's size: a short pool is widened until it stops growing
    assert "inner_hits" not in floor["knn"] and floor["knn"]["filter"]  # the same pool as the search
    assert best["knn"]["field"] == "vector" and best["knn"]["k"] == 1 and "filter" not in best["knn"]
    # the best passage is searched with kNN's most candidates (HNSW over duplicates hid it at 300),
    # rescored with the float vectors on a quantized index (an int4 estimate fell 0.023 under it)
    assert best["knn"]["num_candidates"] == search_requests.MAX_NUM_CANDIDATES and "rescore_vector" not in best["knn"]
    *_, quantized = search_requests.pool_bound_searches(
        [1.0, 0.0], min_similarity=0.5, metric="cosine", candidates=200, filters=None, text=None, rescore=True,
    )
    assert quantized["knn"]["rescore_vector"] == {"oversample": 10.0}


def test_a_widening_round_asks_for_the_best_passage_no_more():
    """The best passage depends on the query alone: it was searched (10,000 candidates) every round."""
    import contextlib
    from types import SimpleNamespace

    from indexer.stores.base import SearchRequest

    sent = []

    class Client:
        def msearch(self, index, searches):
            sent.append(len(searches))
            return SimpleNamespace(body={"responses": [{"hits": {"hits": [{"_score": 0.9}]}}] * (len(searches) // 2)})

    request = SearchRequest(np.array([1.0, 0.0], dtype=np.float32), 0.5, limit=3, passage_weight=1.0)
    stamp = ModelStamp("m", "1", 2, "ab" * 32)
    first = searching._pool_bounds(Client(), request, stamp, "a", 100, False, lambda *a, **k: contextlib.nullcontext(), False)
    again = searching._pool_bounds(Client(), request, stamp, "a", 200, False, lambda *a, **k: contextlib.nullcontext(), False,
                                   first[1])
    assert sent == [4, 2] and again[1] == first[1] and first[0] == again[0] == pytest.approx(0.8)


def test_the_pool_bound_allows_for_the_slack_on_the_best_passage_too():
    # a passage outside the pool: best span at most 0.6 + 0.02, passage cosine at most 0.5 + 0.02,
    # so it may score 0.62 + 0.8 · 0.52 = 1.036: a k-th score of 1.03 is not enough (it was, 1.02)
    assert search_requests.pool_is_final(1.03, 0.6, 0.5, 0.8, slack=0.02) is False
    assert search_requests.pool_is_final(1.04, 0.6, 0.5, 0.8, slack=0.02) is True
    assert search_requests.pool_is_final(1.03, 0.6, 0.5, 0.8, slack=0.0) is True  # a float index: no slack


def test_metadata_filters_of_an_index_with_filter_texts_use_the_embedded_stores_texts():
    n, b = "\ufdd0", "\ufdd1"  # the type marks of a number's and a boolean's texts
    filters = Filters.of({"year": 2001, "flag": True, "missing": None})
    typed, _ = search_requests.filter_clauses(filters, typed=index_requests.FILTER_FORMAT)
    format2, _ = search_requests.filter_clauses(filters, typed=2)  # marked texts beside the plain ones
    unmarked, _ = search_requests.filter_clauses(filters, typed=1)  # an index made before the marks
    plain, _ = search_requests.filter_clauses(Filters.of({"year": 2001}), typed=0)
    assert {"terms": {"filter_typed.year": ["2001", n + "2001", n + "2001.0"]}} in typed
    assert {"terms": {"filter_typed.flag": [b + "true"]}} in typed
    assert {"terms": {"filter_texts.year": ["2001", n + "2001", n + "2001.0"]}} in format2
    assert {"terms": {"filter_texts.year": ["2001", "2001.0"]}} in unmarked
    assert {"terms": {"filter_texts.flag": ["true"]}} in unmarked
    # absence: no value a filter compares (an object, [] and [null] are absent too)
    # (no term of its own: exists would find the passages with key missing.x)
    assert {"bool": {"must_not": [{"prefix": {"filter_typed.missing": {"value": ""}}}]}} in typed
    assert {"bool": {"must_not": [{"prefix": {"filter_texts.missing": {"value": ""}}}]}} in format2
    assert plain == [{"term": {"fields.year": 2001}}]  # an index made before filter_texts: as it was
    fields = {"year": 2001.0, "tags": ["a", 3], "flag": False, "obj": {"x": 1}, "none": None}
    # a number's or boolean's plain text too, for Kibana and the search template
    assert index_requests.filter_texts(fields) == {
        "year": [n + "2001.0", "2001.0"], "tags": ["a", n + "3", "3"], "flag": [b + "false", "false"]}
    assert index_requests.filter_texts(fields, marked=False) == {"year": ["2001.0"], "tags": ["a", "3"], "flag": ["false"]}
    # format 3: each value once in filter_texts (a Kibana aggregation showed numbers twice: an audit),
    # the marked texts apart
    assert index_requests.filter_fields(fields, 3) == {
        "filter_texts": {"year": ["2001.0"], "tags": ["a", "3"], "flag": ["false"]},
        "filter_typed": {"year": [n + "2001.0"], "tags": ["a", n + "3"], "flag": [b + "false"]}}
    assert index_requests.filter_fields(fields, 2) == {"filter_texts": index_requests.filter_texts(fields)}
    assert [index_requests.filter_format(m) for m in (None, {}, {"filter_texts": True}, {"filter_texts": 2})] == [0, 0, 1, 2]
    # a number stored as Inf has no plain copy: the filter text "Inf" would find it here only (a review)
    assert index_requests.filter_texts({"h": 10**400, "l": -(10**400)}) == {"h": [n + "Inf"], "l": [n + "-Inf"]}
    # an index made before the marks keeps its plain texts, that one included, as it was written before
    assert index_requests.filter_texts({"h": 10**400}, marked=False) == {"h": ["Inf"]}
    # keys no filter can name are left out (Elasticsearch refused "" and " ")
    assert index_requests.filter_texts({"": 1, " ": 2, "a b": 3, "spans.x": 4, "meta.lang": 5}) == {"meta.lang": [n + "5", "5"]}
