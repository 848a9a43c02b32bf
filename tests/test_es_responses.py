"""Parsing of Elasticsearch responses shaped as its documentation shows them (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.errors import SearchError, StoreError
from indexer.records import SpanMatch
from indexer.stores.base import ModelStamp, StoreCounts, WriteOutcome
from indexer.stores.elasticsearch import responses as rs
from indexer.stores.elasticsearch import server_facts as sf

RESPONSES = Path(__file__).parent / "golden" / "es" / "responses"


def load(name: str):
    return json.loads((RESPONSES / f"{name}.json").read_text(encoding="utf-8"))


# --- search ---------------------------------------------------------------------------------------


def test_nested_knn_with_inner_hits():
    hits = rs.parse_hits(load("knn_nested_inner_hits"), scoring="knn", metric="cosine", min_similarity=0.5)
    assert [h.id for h in hits] == ["p-2", "p-1"]  # response order is kept by the parser
    p1 = hits[1]
    # _score = (1 + cos) / 2  ->  cos = 2 * _score - 1; the passage scores as its best span.
    assert p1.score == pytest.approx(0.9)
    assert p1.text.startswith("Barack Obama") and p1.fields == {"source": "wiki", "year": 2009}
    assert p1.spans == (
        SpanMatch(0, 12, "Barack Obama", pytest.approx(0.9), ("politician", "person")),
        SpanMatch(17, 30, "Angela Merkel", pytest.approx(0.6), ("politician",)),
    )
    ranked = rs.rank(hits)
    assert [h.id for h in ranked] == ["p-1", "p-2"]
    assert ranked[1].score == pytest.approx(0.7)


def test_spans_below_threshold_are_dropped_and_empty_hits_vanish():
    hits = rs.parse_hits(load("knn_nested_inner_hits"), scoring="knn", metric="cosine", min_similarity=0.75)
    assert [h.id for h in hits] == ["p-1"]
    assert [s.text for s in hits[0].spans] == ["Barack Obama"]


def test_threshold_is_inclusive_despite_float32_rounding():
    hit = {"_id": "x", "_score": 0.75, "_source": {"id": "x", "text": "t"},
           "inner_hits": {"spans": {"hits": {"hits": [
               {"_score": 0.7499999, "fields": {"spans": [{"start": [0], "end": [1], "text": ["t"]}]}}]}}}}
    parsed = rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.5)
    assert parsed is not None and parsed.spans[0].labels == ()


def marked_hit(pid: str, best: float, *marks: float) -> dict:
    """A hit as nerindex's searches return it: its best span (mention or candidate) in
    ``best_span``, its matching mentions in ``spans``."""
    hit = hybrid_hit(pid, best, *marks)
    hit["inner_hits"]["best_span"] = {"hits": {"hits": [{"_score": best}]}}
    return hit


def test_scored_by_the_best_span_and_marked_by_the_mentions():
    response = {"hits": {"hits": [
        marked_hit("c1", 1.0, 0.75),  # a candidate at cos 1.0, a mention at 0.5
        marked_hit("c2", 0.975),  # a candidate at cos 0.95 alone: ranked, nothing marked
        marked_hit("c4", 0.85, 0.6),  # a candidate at 0.7, a mention at 0.2 (below 0.4: not marked)
        marked_hit("c5", 0.65, 0.65),  # best span at cos 0.3: not a hit
    ]}}
    hits = rs.parse_hits(response, scoring="knn", metric="cosine", min_similarity=0.4)
    assert [(h.id, round(h.score, 6), [round(s.similarity, 6) for s in h.spans]) for h in hits] == [
        ("c1", 1.0, [0.5]), ("c2", 0.95, []), ("c4", 0.7, [])]
    # hybrid scoring reads the span part from best_span too
    weighted = marked_hit("c1", 1.0, 0.75)
    weighted["_score"] = 1.0 + 0.5 * 0.5
    weighted["matched_queries"] = {"nerindex_passage": 0.5 * 0.5}  # passage cos 0.0
    parsed = rs.parse_hit(weighted, scoring="knn", metric="cosine", min_similarity=0.4, passage_weight=0.5)
    assert parsed.score == pytest.approx(1.0) and [s.similarity for s in parsed.spans] == [pytest.approx(0.5)]


def test_a_hit_names_the_candidate_that_ranked_it():
    """``best_span``'s fields name the span; its ``mention`` flag says whether it is a candidate
    (``Hit.ranked_by``); a span written before the flag existed is a mention."""
    def best(flag: list) -> dict:
        span = {"start": [0], "end": [11], "text": ["Triceratops"], "labels": ["dinosaur"], "mention": flag}
        return {"hits": {"hits": [{"_score": 1.0, "fields": {"spans": [{k: v for k, v in span.items() if v}]}}]}}

    hit = marked_hit("c1", 1.0, 0.75)
    hit["_source"]["text"] = "Triceratops skulls and fossils."
    hit["inner_hits"]["best_span"] = best([False])
    parsed = rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.4)
    assert parsed.ranked_by == SpanMatch(0, 11, "Triceratops", pytest.approx(1.0), ("dinosaur",))
    assert [s.similarity for s in parsed.spans] == [pytest.approx(0.5)]  # the marks are the mentions still
    for flag in ([True], []):  # a mention ranked it (no flag: written before candidates existed)
        hit["inner_hits"]["best_span"] = best(flag)
        assert rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.4).ranked_by is None
    hit["inner_hits"]["best_span"] = {"hits": {"hits": [{"_score": 1.0}]}}  # asked without its fields
    assert rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.4).ranked_by is None


def test_exhaustive_page_with_script_scores_and_source_inner_hits():
    response = load("exhaustive_page")
    hits = rs.parse_hits(response, scoring="script", metric="cosine", min_similarity=0.5)
    assert [(h.id, round(h.score, 6)) for h in hits] == [("p-1", 0.9), ("p-5", 0.55)]
    assert hits[1].spans == (SpanMatch(0, 10, "Parliament", pytest.approx(0.55), ("organization",)),)
    assert rs.last_sort_values(response) == [1.55, 4294967299]
    assert rs.last_sort_values({"hits": {"hits": []}}) is None


def test_hit_without_inner_hits_uses_its_own_score():
    hit = {"_id": "abc", "_score": 0.8, "_source": {"text": "x"}}
    parsed = rs.parse_hit(hit, scoring="knn", metric="dot_product", min_similarity=0.5)
    assert parsed.id == "abc" and parsed.score == pytest.approx(0.6) and parsed.spans == ()
    assert rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.7) is None


def hybrid_hit(pid: str, score: float, *span_scores: float) -> dict:
    """A hit of a hybrid-scoring kNN search: script _score, inner hits with their kNN scores."""
    inner = [{"_score": s, "fields": {"spans": [{"start": [i], "end": [i + 1], "text": [f"w{i}"]}]}}
             for i, s in enumerate(span_scores)]
    return {"_id": pid, "_score": score, "_source": {"id": pid, "text": "t"},
            "inner_hits": {"spans": {"hits": {"hits": inner}}}}


def test_passage_weight_score_is_read_back_from_the_native_knn_score():
    # _score = span kNN score + λ · passage kNN score, kNN scores (1 + cos) / 2, λ = 0.5
    response = {"hits": {"hits": [
        hybrid_hit("h2", 0.9 + 0.5 * 1.0, 0.9, 0.7),   # spans at cos 0.8 and 0.4 (below 0.5: dropped), passage cos 1
        hybrid_hit("h1", 0.95 + 0.5 * 0.5, 0.95),      # span cos 0.9, passage cos 0.0
        hybrid_hit("h3", 0.6 + 0.5 * 1.0, 0.6),        # span cos 0.2 only: not a hit, whatever λ
    ]}}
    hits = rs.parse_hits(response, scoring="knn", metric="cosine", min_similarity=0.5, passage_weight=0.5)
    assert [(h.id, round(h.score, 6)) for h in hits] == [("h2", 1.3), ("h1", 0.9)]
    assert [round(s.similarity, 6) for s in hits[0].spans] == [0.8]  # spans keep their own similarity
    assert [h.id for h in rs.rank(list(reversed(hits)))] == ["h2", "h1"]
    # the same response read without λ: the best span decides
    plain = rs.parse_hits(response, scoring="knn", metric="cosine", min_similarity=0.5)
    assert [(h.id, round(h.score, 6)) for h in rs.rank(plain)] == [("h1", 0.9), ("h2", 0.8)]
    # the span part is read from the inner hits: without them the score cannot be split
    bare = {"_id": "x", "_score": 1.4, "_source": {"id": "x"}, "inner_hits": {"spans": {"hits": {"hits": [{"_score": None}]}}}}
    with pytest.raises(SearchError, match="inner hits"):
        rs.combined_score(bare, 0.5, scoring="knn", metric="cosine")


def test_passage_weight_reads_the_named_passage_clause_first():
    """With int8 rescoring the nested _score can lag the best inner hit (Elasticsearch keeps the
    score of the span the int8 search picked); the named passage clause's score is exact."""
    hit = hybrid_hit("p", 0.88 + 0.5 * 0.75, 0.9)  # _score: another span (0.88) than the best inner hit (0.9)
    hit["matched_queries"] = {"nerindex_passage": 0.5 * 0.75}  # passage cos 0.5
    parsed = rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.5, passage_weight=0.5)
    assert parsed.score == pytest.approx(0.8 + 0.5 * 0.5)
    del hit["matched_queries"]  # without it: _score minus the best inner hit, 0.02 low here
    parsed = rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.5, passage_weight=0.5)
    assert parsed.score == pytest.approx(0.8 + 0.5 * 0.5 - 0.04)
    hit["matched_queries"] = {"nerindex_passage_missing": 0.5 * 0.5}  # no passage vector: cosine 0
    assert rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.5, passage_weight=0.5).score == pytest.approx(0.8)


def test_passage_weight_exhaustive_page():
    # nested span script: cos + 1; outer script adds λ · (passage cos + 1)
    hit = hybrid_hit("p", 1.7 + 2.0 * (0.25 + 1), 1.7)
    parsed = rs.parse_hit(hit, scoring="script", metric="cosine", min_similarity=0.5, passage_weight=2.0)
    assert parsed.score == pytest.approx(0.7 + 2.0 * 0.25) and parsed.spans[0].similarity == pytest.approx(0.7)


def test_passage_weight_needs_the_hit_score():
    hit = hybrid_hit("p", 2.0, 0.9)
    del hit["_score"]
    with pytest.raises(SearchError, match="_score"):
        rs.parse_hit(hit, scoring="knn", metric="cosine", min_similarity=0.5, passage_weight=0.5)


@pytest.mark.parametrize("span_cos, passage_cos, weight", [(0.9, 0.0, 0.5), (-1.0, -1.0, 3.0), (0.3, 0.7, 0.01)])
def test_combined_from_hybrid_score(span_cos, passage_cos, weight):
    from indexer.stores.elasticsearch.similarity import combined_from_hybrid_score

    shifted = (span_cos + 1) + weight * (passage_cos + 1)
    assert shifted >= 0
    assert combined_from_hybrid_score(shifted, weight) == pytest.approx(span_cos + weight * passage_cos)


def test_span_fields_read_every_shape():
    fields_api = {"fields": {"spans": [{"start": [3], "end": [9], "text": ["Obama"], "labels": ["a", "b"]}]}}
    nested_source = {"_source": {"start": 3, "end": 9, "text": "Obama", "labels": ["a", "b"]}}
    full_path_source = {"_source": {"spans": {"start": 3, "end": 9, "text": "Obama", "labels": "a"}}}
    # no mention flag: a span written before it existed (a mention)
    expected = {"start": 3, "end": 9, "text": "Obama", "labels": ["a", "b"], "mention": None}
    assert rs.span_fields(fields_api) == expected
    assert rs.span_fields(nested_source) == expected
    assert rs.span_fields(full_path_source) == {**expected, "labels": ["a"]}
    assert rs.span_fields({"fields": {"spans": [{"start": [1], "end": [2]}]}})["labels"] == []
    assert rs.span_fields({"fields": {"spans": [{"start": [1], "end": [2], "mention": [False]}]}})["mention"] is False
    assert rs.span_fields({"_source": {"start": 1, "end": 2, "mention": False}})["mention"] is False


# --- bulk -----------------------------------------------------------------------------------------


def test_bulk_partial_failures_become_outcomes():
    items = load("bulk_partial_failure")["items"]
    results = [(200 <= next(iter(i.values()))["status"] < 300, i) for i in items]
    outcomes = rs.bulk_outcomes(["p-1", "p-2", "p-3", "p-4"], ["p-1", "p-2", "p-3", "p-4"], results)
    assert outcomes[0] == WriteOutcome("p-1", True, "created")
    assert outcomes[1] == WriteOutcome("p-2", True, "updated")
    assert outcomes[2].ok is False and outcomes[2].action == "failed"
    assert outcomes[2].error.startswith("HTTP 400: document_parsing_exception: [1:57] failed to parse")
    assert "caused by illegal_argument_exception" in outcomes[2].error
    assert outcomes[3].error.startswith("HTTP 429: es_rejected_execution_exception")
    assert rs.count_failures(outcomes) == 2


def test_bulk_outcomes_follow_input_order_and_report_missing_answers():
    # Retried documents come back last; a duplicated id gets one answer each; one never answered.
    results = [
        (True, {"index": {"_id": "b", "status": 201, "result": "created"}}),
        (True, {"index": {"_id": "a", "status": 201, "result": "created"}}),
        (True, {"index": {"_id": "a", "status": 200, "result": "updated"}}),
    ]
    outcomes = rs.bulk_outcomes(["a", "b", "a", "c"], ["a", "b", "a", "c"], results)
    assert [(o.id, o.action) for o in outcomes] == [("a", "created"), ("b", "created"), ("a", "updated"), ("c", "failed")]
    assert "no result" in outcomes[3].error


def test_bulk_outcome_maps_hashed_ids_back_to_passage_ids():
    results = [(True, {"index": {"_id": "sha256:ab", "status": 201, "result": "created"}})]
    assert rs.bulk_outcomes(["sha256:ab"], ["a very long id"], results) == [WriteOutcome("a very long id", True, "created")]


def test_bulk_item_of_a_failed_chunk():
    """raise_on_exception=False: the helper marks every document of a failed request like this."""
    info = {"index": {"error": "ApiError(503, 'unavailable')", "status": 503, "exception": RuntimeError(), "_index": "x", "_id": "p"}}
    assert rs.parse_bulk_item(info) == ("p", False, "failed", "HTTP 503: ApiError(503, 'unavailable')")


def test_a_create_refused_for_a_stored_id_is_a_skip_not_a_failure():
    """``replace=False`` sends ``create``; the server answers 409 for an id it holds (Store.write)."""
    conflict = {"create": {"_id": "p", "status": 409, "error": {
        "type": "version_conflict_engine_exception", "reason": "[p]: version conflict, document already exists"}}}
    assert rs.parse_bulk_item(conflict) == ("p", True, "skipped", None)
    replaced = {"index": {"_id": "p", "status": 409, "error": {"type": "version_conflict_engine_exception"}}}
    assert rs.parse_bulk_item(replaced)[1:3] == (False, "failed")  # only a create's conflict is a skip


# --- index facts ----------------------------------------------------------------------------------


def test_model_stamp_from_mapping_meta():
    index, mapping = rs.index_mapping(load("get_mapping"), target="nerindex")
    assert index == "nerindex-000003"
    stamp = rs.stamp_from_meta(mapping["_meta"])
    assert stamp == ModelStamp("nerindex-minilm-l6", "0.1.0", 384,
                               "9f2c1e0b7a5d4c3b2a190817263544536271809a1b2c3d4e5f60718293a4b5c6", "cosine")
    assert rs.stamp_from_meta({}) is None and rs.stamp_from_meta(None) is None
    with pytest.raises(StoreError):
        rs.stamp_from_meta({"model": {"id": "x"}})


def test_index_meta_keeps_every_stored_setting_and_reads_0_2_0_meta():
    from indexer.assets import default_model_dir
    from indexer.model_folder import ModelInfo
    from indexer.stores.elasticsearch import index_requests

    stamp = ModelInfo.load(default_model_dir(), verify=False).stamp
    assert rs.stamp_from_meta(index_requests.index_meta(stamp)) == stamp
    old = rs.stamp_from_meta({"model": {"id": "m", "version": "1", "dims": 384, "checksum": "c"}})
    assert old.detection_threshold is None and old.catalog is None


def test_store_version_from_stats():
    shard = {"routing": {"state": "STARTED", "primary": True, "node": "n1"}, "commit": {"generation": 1},
             "docs": {"count": 40, "deleted": 2}, "refresh": {"external_total": 7}}
    replica = {**shard, "routing": {"state": "STARTED", "primary": False, "node": "n2"}}
    body = {"indices": {"nerindex-000002": {"uuid": "Xy1", "primaries": {
        "docs": {"count": 40, "deleted": 2}, "indexing": {"index_total": 42, "delete_total": 0},
        "refresh": {"total": 9, "external_total": 7}}, "shards": {"0": [shard, replica]}}}}
    primaries = body["indices"]["nerindex-000002"]["primaries"]
    version = rs.store_version(body, target="nerindex")
    assert version.identity == "nerindex-000002:Xy1" and version.state == "7-0:1@n1"
    # the refresh that makes writes visible to search moves the version even when nothing else does
    primaries["refresh"]["external_total"] = 8
    assert rs.store_version(body, target="nerindex").state == "8-0:1@n1"
    primaries["indexing"]["index_total"] = 50  # written, not yet visible: a load moved it every ~100 ms
    primaries["docs"]["count"] = 48  # a real-time GET's internal refresh, search sees nothing new
    assert rs.store_version(body, target="nerindex").state == "8-0:1@n1"
    # closed and opened (reviews): the refresh counter starts again, opening the shard commits anew
    primaries["refresh"]["external_total"], shard["commit"]["generation"] = 7, 2
    assert rs.store_version(body, target="nerindex") != version
    shard["commit"]["generation"], shard["routing"]["node"] = 1, "n3"  # the shard moved
    assert rs.store_version(body, target="nerindex") != version
    with pytest.raises(StoreError, match="2 indices"):
        rs.store_version({"indices": {"a": {}, "b": {}}}, target="nerindex")


def test_alias_over_several_indices_is_refused():
    with pytest.raises(StoreError, match="several indices.*To keep 'a-000002': POST _aliases"):
        rs.index_mapping({"a-000001": {"mappings": {}}, "a-000002": {"mappings": {}}}, target="a")
    # a name nerindex does not number (its types index, a backup) is no guess of which to keep (a review)
    with pytest.raises(StoreError, match=r"\(a-000002, a-types\); nerindex keeps its alias on one index: remove") as err:
        rs.index_mapping({"a-000002": {"mappings": {}}, "a-types": {"mappings": {}}}, target="a")
    assert "To keep" not in str(err.value)


def test_mismatch_message_says_both_models_and_the_way_out():
    stored = ModelStamp("model-a", "1.0", 384, "a" * 64)
    wanted = ModelStamp("model-b", "2.0", 256, "b" * 64)
    message = rs.mismatch_message("nerindex", "nerindex-000001", stored, wanted)
    for part in ("model-a 1.0", "model-b 2.0", "384 dims", "256 dims", "nerindex es reindex", "nerindex-000001"):
        assert part in message


def test_counts_mget_version_settings_alias():
    assert rs.parse_counts(load("counts")) == StoreCounts(passages=1523, spans=4871)
    assert set(rs.found_sources(load("mget"))) == {"p-1"}
    assert rs.refresh_interval({"nerindex-000001": {"settings": {"index": {"refresh_interval": "30s"}}}}) == "30s"
    assert rs.refresh_interval({"nerindex-000001": {"settings": {}}}) is None
    assert rs.alias_indices({"n-000002": {"aliases": {"n": {}}}, "n-000001": {"aliases": {}}}, "n") == ["n-000002"]


def test_server_facts_from_the_nodes_api():
    # captured from the CI node (integ-test-zip 8.19.21: no lang-painless, no lang-mustache)
    facts = sf.server_facts(load("nodes_plugins"))
    assert facts.version == (8, 19, 21)
    assert "x-pack-core" in facts.modules and "lang-painless" not in facts.modules
    # several nodes: the oldest version, and only what every node has
    mixed = {"nodes": {
        "a": {"version": "9.2.0-SNAPSHOT", "modules": [{"name": "lang-painless"}, {"name": "x-pack-core"}]},
        "b": {"version": "8.19.3", "modules": [{"name": "x-pack-core"}], "plugins": [{"name": "lang-painless"}]},
        "c": {"version": "9.1.0", "modules": [{"name": "x-pack-core"}]},
    }}
    assert sf.server_facts(mixed) == sf.ServerFacts((8, 19, 3), frozenset({"x-pack-core"}))
    for broken in ({"nodes": {}}, {}, {"nodes": {"a": {"version": "x"}}}):
        with pytest.raises(StoreError, match="version"):
            sf.server_facts(broken)


def test_api_error_reason_prefers_the_root_cause():
    reason = rs.api_error_reason(load("error_bad_request"))
    assert reason == (
        "search_phase_execution_exception: all shards failed "
        "(illegal_argument_exception: [knn] queries are only supported on [dense_vector] fields)"
    )
    assert rs.api_error_reason("plain", "fallback") == "fallback"


def test_cut_marks_names_the_hits_that_carry_fewer_marks_than_they_have():
    def hit(pid: str, total: int | None, carried: int) -> dict:
        inner = {"hits": [{"_score": 0.9}] * carried}
        if total is not None:
            inner["total"] = {"value": total, "relation": "eq"}
        return {"_id": "x" + pid, "_source": {"id": pid}, "inner_hits": {"spans": {"hits": inner}}}

    response = {"hits": {"hits": [hit("a", 150, 100), hit("b", 100, 100), hit("c", None, 3), {"_id": "d"}]}}
    assert rs.cut_marks(response) == {"a": 150}
    assert rs.cut_marks({}) == {}


def test_inner_hits_window_reads_the_setting_a_refusal_names():
    refusal = ("BadRequestError(400, 'search_phase_execution_exception', \"Inner result window is too large, the inner "
               "hit definition's [spans]'s from + size must be less than or equal to: [180] but was [300]. This limit "
               "can be set by changing the [index.max_inner_result_window] index level setting.\")")
    assert rs.inner_hits_window(refusal) == 180
    assert rs.inner_hits_window("Result window is too large ... less than or equal to: [10000] ... max_result_window") is None


def test_a_failed_search_of_a_multi_search_is_an_error_not_an_empty_answer():
    """A review: read as no hits, a failed bound search passed as "the pool holds every match"."""
    ok = {"hits": {"hits": [{"_id": "a", "_score": 0.9}]}}
    assert rs.msearch_hits({"responses": [ok, {"hits": {"hits": []}}]}) == [[{"_id": "a", "_score": 0.9}], []]
    refused = {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 400}
    with pytest.raises(SearchError, match="failed one search of a multi-search to search 'x': HTTP 400: search_phase"):
        rs.msearch_hits({"responses": [ok, refused]}, "search 'x'")
    with pytest.raises(StoreError, match="HTTP 503"):
        rs.msearch_hits({"responses": [dict(refused, status=503)]})
