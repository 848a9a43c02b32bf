"""The store conformance suite, and Elasticsearch-only behaviours, against a live server.

Skipped, with the reason shown, unless ``NERINDEX_ES_URL`` is set. With the compose stack:

    docker compose -f docker/compose.yml up -d
    NERINDEX_ES_URL=http://localhost:9200 NERINDEX_ES_USER=elastic \\
    NERINDEX_ES_PASSWORD=<ELASTIC_PASSWORD from docker/.env> \\
        python -m pytest -m elasticsearch tests/test_es_live.py -rs

Every test works in its own alias (``nerindex-test-<random>``) and deletes its indices afterwards.
"""

from __future__ import annotations

import dataclasses
import os
import uuid

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from store_conformance import DINO, POL, RIVER, StoreConformance, corpus, unit  # noqa: E402

from indexer.config import from_env  # noqa: E402
from indexer.errors import SearchError  # noqa: E402
from indexer.records import EncodedPassage  # noqa: E402
from indexer.stores.base import SearchRequest  # noqa: E402
from indexer.stores.elasticsearch import ElasticsearchStore, open_es_store  # noqa: E402
from indexer.stores.elasticsearch import requests as rq  # noqa: E402
from indexer.stores.elasticsearch import responses as rs  # noqa: E402
from indexer.stores.elasticsearch.reindex import reindex  # noqa: E402
from indexer.stores.elasticsearch.store import SPAN_FILTER_SERVER  # noqa: E402

ES_URL = os.environ.get("NERINDEX_ES_URL", "").strip()

pytestmark = [
    pytest.mark.elasticsearch,
    pytest.mark.skipif(
        not ES_URL,
        reason="NERINDEX_ES_URL is not set: live Elasticsearch tests skipped "
        "(docker compose -f docker/compose.yml up -d, then set NERINDEX_ES_URL, "
        "NERINDEX_ES_USER, NERINDEX_ES_PASSWORD)",
    ),
]


def delete_indices(store: ElasticsearchStore) -> None:
    """Remove every index this test made (by name: wildcard deletes are refused by default)."""
    client = store.client.options(ignore_status=[400, 404])
    names = list(client.indices.get(index=f"{store.alias}-*", expand_wildcards="all").body)
    for name in names + [store.alias]:
        client.indices.delete(index=name)


@pytest.fixture
def make_live_store():
    made: list[ElasticsearchStore] = []

    def make(**options) -> ElasticsearchStore:
        store = open_es_store(from_env(), index=f"nerindex-test-{uuid.uuid4().hex[:12]}", **options)
        made.append(store)
        return store

    yield make
    for store in made:
        try:
            store.flush()
            delete_indices(store)
        finally:
            store.close()


class TestElasticsearchStore(StoreConformance):
    """The suite every backend passes. Float HNSW keeps kNN scores exact to the 4 decimals it checks."""

    @pytest.fixture
    def store(self, make_live_store, stamp):
        return make_live_store(index_options="hnsw")


def search(store, vector, threshold=0.5, **kw):
    return list(store.search(SearchRequest(vector=vector, min_similarity=threshold, **kw)))


@pytest.fixture
def loaded(make_live_store, stamp):
    store = make_live_store()  # the default int8_hnsw
    store.check_model(stamp)
    assert all(o.ok for o in store.write(corpus()))
    return store


def test_default_int8_index_ranks_like_the_exact_search(loaded):
    approximate = search(loaded, DINO)
    exact = search(loaded, DINO, exhaustive=True)
    assert [h.id for h in approximate] == [h.id for h in exact] == ["p1", "p2", "p3"]
    for a, e in zip(approximate, exact):
        assert a.score == pytest.approx(e.score, abs=0.02)  # int8 quantisation error
    assert [round(h.score, 4) for h in exact] == [1.0, 0.8, 0.6]  # script_score uses the floats


def test_passage_weight_on_the_int8_index_ranks_like_the_exact_search(loaded):
    """Hybrid scoring: the nested kNN query in a script_score against the exact paged search."""
    approximate = search(loaded, DINO, passage_weight=0.5)
    exact = search(loaded, DINO, passage_weight=0.5, exhaustive=True)
    passage = 1 / np.sqrt(3)  # every passage vector of corpus() is unit(1, 1, 1)
    assert [h.id for h in approximate] == [h.id for h in exact] == ["p1", "p2", "p3"]
    assert [h.score for h in exact] == pytest.approx([s + 0.5 * passage for s in (1.0, 0.8, 0.6)], abs=1e-4)
    for a, e in zip(approximate, exact):
        assert a.score == pytest.approx(e.score, abs=0.02)  # int8 quantisation error
    # several matching spans per passage come back as inner hits of the nested knn query too
    (p1,) = [h for h in search(loaded, unit(1, 0, 1), threshold=0.7, passage_weight=0.5) if h.id == "p1"]
    assert [s.text for s in p1.spans] == ["Montana", "Tyrannosaurus"]


def test_index_is_versioned_behind_an_alias_with_the_model_meta(loaded, stamp):
    loaded.flush()  # ends the bulk load: restores the refresh interval, refreshes
    index, mapping = loaded.target()
    assert index == f"{loaded.alias}-000001"
    assert rs.stamp_from_meta(mapping["_meta"]) == stamp
    assert mapping["properties"]["spans"]["properties"]["vector"]["index_options"]["type"] == "int8_hnsw"
    settings = loaded.client.indices.get_settings(index=index).body[index]["settings"]["index"]
    assert settings.get("refresh_interval", "1s") == "1s"  # restored after the bulk load


def test_span_level_filters(loaded):
    request = SearchRequest(vector=POL, min_similarity=0.5, filters={"spans.labels": "label-merkel"})
    exact = list(loaded.search(dataclasses.replace(request, exhaustive=True)))
    assert [(h.id, [s.text for s in h.spans]) for h in exact] == [("p3", ["Merkel"])]
    if loaded.server_version() >= SPAN_FILTER_SERVER:
        assert [h.id for h in loaded.search(request)] == ["p3"]
    else:
        with pytest.raises(SearchError, match="9.2"):
            list(loaded.search(request))


def test_passage_level_labels_are_aggregatable(loaded):
    loaded.flush()  # the bulk load relaxed the refresh interval: make the writes visible
    response = loaded.client.search(index=loaded.alias, size=0, aggs={"labels": {"terms": {"field": "labels", "size": 20}}})
    buckets = {b["key"]: b["doc_count"] for b in response.body["aggregations"]["labels"]["buckets"]}
    assert buckets["label-obama"] == 1 and buckets["label-merkel"] == 1 and len(buckets) == 8


def test_hybrid_mode_boosts_by_words_but_keeps_the_threshold(make_live_store, stamp):
    store = make_live_store(hybrid=True, text_boost=10.0)
    store.check_model(stamp)
    store.write(corpus())
    hits = search(store, DINO, text="Triceratops")
    assert [h.id for h in hits][0] == "p3" and {h.id for h in hits} == {"p1", "p2", "p3"}
    # Only p4 has the word, but it has no dinosaur: words boost, they never add a match.
    assert {h.id for h in search(store, DINO, text="Danube")} == {"p1", "p2", "p3"}


def test_exhaustive_search_pages_past_one_page(make_live_store, stamp):
    store = make_live_store(page_size=2)
    store.check_model(stamp)
    store.write(corpus())
    hits = search(store, unit(1, 0.3, 0.7), threshold=0.5, exhaustive=True)
    assert [(h.id, round(h.score, 3)) for h in hits] == [("p1", 0.796), ("p2", 0.78), ("p3", 0.668), ("p4", 0.557)]


def test_stored_search_template_gives_the_same_hits(loaded):
    template_id = f"{loaded.alias}-template"
    loaded.put_search_template(template_id)
    try:
        params = rq.search_template_params(DINO, min_similarity=0.5, limit=10)
        response = loaded.client.search_template(index=loaded.alias, id=template_id, params=params)
        hits = rs.rank(rs.parse_hits(response.body, scoring="knn", metric="cosine", min_similarity=0.5))
        assert [h.id for h in hits] == [h.id for h in search(loaded, DINO)]
    finally:
        loaded.client.options(ignore_status=[404]).delete_script(id=template_id)


class RiverFirst:
    """A 'new model' for re-indexing: the same spans, vectors rotated by one axis."""

    def __init__(self) -> None:
        self.by_id = {p.passage.id: p for p in corpus()}

    def encode(self, passages, *, batch_size=32):
        out = []
        for p in passages:
            old = self.by_id[p.id]
            spans = tuple(type(s)(s.start, s.end, s.text, s.score, np.roll(s.vector, 1), s.labels) for s in old.spans)
            out.append(EncodedPassage(p, spans, old.vector))
        return out


def test_reindex_swaps_the_alias_to_the_new_model(loaded):
    from indexer.stores.base import ModelStamp

    new_stamp = ModelStamp("test-model", "2", 8, "e" * 64)
    report = reindex(loaded, RiverFirst(), new_stamp, batch_size=2, delete_old=True)
    assert report.swapped and report.failed == 0 and report.passages == 5
    assert loaded.model() == new_stamp and loaded.target()[0] == f"{loaded.alias}-000002"
    # Every span vector moved one axis on: dinosaurs on axis 1, politicians on axis 2 (RIVER).
    hits = search(loaded, unit(0, 1))
    assert [h.id for h in hits] == ["p1", "p2", "p3"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6], abs=0.02)  # int8 index
    assert {h.id for h in search(loaded, RIVER)} == {"p2", "p3"}


@pytest.mark.skipif(not os.environ.get("NERINDEX_KIBANA_URL"), reason="NERINDEX_KIBANA_URL is not set")
def test_kibana_import(make_live_store):
    from indexer.stores.elasticsearch.kibana import import_saved_objects

    settings = from_env()
    store = make_live_store()
    report = import_saved_objects(
        settings.kibana_url, alias=store.alias, api_key=settings.es_api_key,
        basic_auth=(settings.es_user, settings.es_password) if settings.es_user else None,
        ca_certs=settings.es_ca_certs,
    )
    assert report.success and report.success_count == 4
