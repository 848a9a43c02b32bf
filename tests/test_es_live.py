"""The store conformance suite, and every Elasticsearch-only behaviour, against a live server.

Skipped, with the reason shown, unless ``NERINDEX_ES_URL`` is set. CI starts a real node
(``.ci/elasticsearch start``: Elastic's integ-test build, without Painless and Mustache); with the
compose stack:

    docker compose -f docker/compose.yml up -d
    NERINDEX_ES_URL=http://localhost:9200 NERINDEX_ES_USER=elastic \\
    NERINDEX_ES_PASSWORD=<ELASTIC_PASSWORD from docker/.env> \\
        python -m pytest -m elasticsearch tests/test_es_live.py -rs

Tests of what a module gives (the exhaustive search's Painless script, Mustache search templates)
skip on a server without it, saying so, and the test of the clear refusal runs instead. Every test
works in its own alias (``nerindex-test-<random>``) and deletes its indices afterwards.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from es_proxy import spoiled_bulk  # noqa: E402
from store_conformance import (  # noqa: E402
    CROWD, DINO, POL, RIVER, StoreConformance, corpus, crowded_passage, doc, hybrid_corpus, unit,
)

from indexer.config import from_env, resolve  # noqa: E402
from indexer.errors import ModelMismatchError, SearchError, StoreError  # noqa: E402
from indexer.records import EncodedPassage, EncodedSpan, Passage  # noqa: E402
from indexer.stores.base import ModelStamp, SearchRequest, StoreCounts  # noqa: E402
from indexer.stores.filter_rules import Filters  # noqa: E402
from indexer.stores.elasticsearch import BulkOptions, ElasticsearchStore  # noqa: E402
from indexer.stores.elasticsearch import index_requests, search_requests  # noqa: E402
from indexer.stores.factory import open_elasticsearch  # noqa: E402
from indexer.stores.elasticsearch import responses as rs  # noqa: E402
from indexer.stores.elasticsearch import server_facts as sf  # noqa: E402
from indexer.stores.elasticsearch.options import BULK_REFRESH_INTERVAL  # noqa: E402
from indexer.stores.elasticsearch.reindex import current_index, reindex, write_blocked  # noqa: E402
from indexer.stores.elasticsearch.store import (  # noqa: E402
    MIN_SERVER,
    MUSTACHE,
    PAINLESS,
    RESCORE_SERVER,
    SPAN_FILTER_SERVER,
)

ES_URL = os.environ.get("NERINDEX_ES_URL", "").strip()
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.elasticsearch,
    pytest.mark.skipif(
        not ES_URL,
        reason="NERINDEX_ES_URL is not set: live Elasticsearch tests skipped "
        "(.ci/elasticsearch start prints the URL to set; or docker compose -f docker/compose.yml up -d, "
        "then set NERINDEX_ES_URL, NERINDEX_ES_USER, NERINDEX_ES_PASSWORD)",
    ),
]


def need_module(store: ElasticsearchStore, module: str, what: str) -> None:
    if not store.has_module(module):
        pytest.skip(f"{what} needs the {module} module, which this server lacks (GET _nodes/plugins)")


def lack_module(store: ElasticsearchStore, module: str) -> None:
    if store.has_module(module):
        pytest.skip(f"the server has the {module} module: the refusal without it cannot happen here")


def delete_indices(store: ElasticsearchStore) -> None:
    """Remove every index this test made (by name: wildcard deletes are refused by default)."""
    client = store.client.options(ignore_status=[400, 404])
    names = list(client.indices.get(index=f"{store.alias}-*", expand_wildcards="all").body)
    for name in names + [store.alias]:
        client.indices.delete(index=name)


def new_alias() -> str:
    return f"nerindex-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_live_store():
    made: list[ElasticsearchStore] = []

    def make(index: str | None = None, **options) -> ElasticsearchStore:
        store = open_elasticsearch(resolve(es_index=index or new_alias()), **options)
        made.append(store)
        return store

    yield make
    for store in made:
        if store._closed:  # a closed store refuses its client: a handle of its own to clean up with
            store = open_elasticsearch(resolve(es_index=store.alias))
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

    def require_exhaustive(self, store) -> None:
        need_module(store, PAINLESS, "exhaustive search")

    def search(self, store, vector, threshold=0.5, filters=None, **kw):
        """Skip a top-k search with span filters on a server before 9.2, which refuses it
        (test_span_filters_in_knn_need_9_2); tests/test_es_store.py runs it on a 9.x fake."""
        if filters and Filters.of(filters).spans and not kw.get("exhaustive") and store.server_version() < SPAN_FILTER_SERVER:
            pytest.skip("span filters in top-k search need Elasticsearch >= 9.2, which this server is not")
        return super().search(store, vector, threshold, filters, **kw)


def search(store, vector, threshold=0.5, **kw):
    return list(store.search(SearchRequest(vector=vector, min_similarity=threshold, **kw)))


@pytest.fixture
def loaded(make_live_store, stamp):
    store = make_live_store()  # the default int8_hnsw
    store.check_model(stamp)
    assert all(o.ok for o in store.write(corpus()))
    return store


def score_tolerance(store: ElasticsearchStore) -> float:
    """int8 scores are exact where the server rescores with the float vectors (8.18 on)."""
    return 1e-4 if store.rescores() else 0.02


def open_contexts(store: ElasticsearchStore) -> int:
    """Search contexts held open on the cluster (every open point in time holds one)."""
    stats = store.client.nodes.stats(metric="indices", index_metric="search").body
    return sum(node["indices"]["search"]["open_contexts"] for node in stats["nodes"].values())


# --- the server -----------------------------------------------------------------------------------


def test_server_version_and_modules_come_from_the_nodes_api(make_live_store):
    store = make_live_store()
    facts = store.server_facts()
    nodes = store.client.nodes.info().body["nodes"]
    assert facts.version == min(sf.parse_version(node["version"]) for node in nodes.values())
    assert facts.version >= MIN_SERVER
    assert store.has_module("x-pack-core")
    assert not store.rescores()  # no index yet
    store.check_model(ModelStamp("test-model", "1", 8, "c" * 64))  # int8_hnsw, the default
    assert store.rescores() == (facts.version >= RESCORE_SERVER)


# --- the index, the model guard ---------------------------------------------------------------------


def test_index_is_versioned_behind_an_alias_with_the_model_meta(loaded, stamp):
    loaded.flush()  # ends the bulk load: restores the refresh interval, refreshes
    index, mapping = loaded.target()
    assert index == f"{loaded.alias}-000001"
    assert rs.stamp_from_meta(mapping["_meta"]) == stamp
    assert mapping["properties"]["spans"]["properties"]["vector"]["index_options"]["type"] == "int8_hnsw"
    settings = loaded.client.indices.get_settings(index=index).body[index]["settings"]["index"]
    assert settings.get("refresh_interval", "1s") == "1s"  # restored after the bulk load


def test_check_model_refuses_an_index_nerindex_did_not_make(make_live_store, stamp):
    store = make_live_store()
    store.client.indices.create(index=store.alias, mappings={"properties": {"title": {"type": "text"}}})
    with pytest.raises(StoreError, match="not created by nerindex"):
        store.check_model(stamp)


def test_the_version_moves_whenever_search_sees_other_passages(make_live_store, stamp):
    # a service caches results under the store version: a writer's real-time GET (existing_ids)
    # moves docs.count before search sees its writes, and the refresh that shows them moved
    # nothing the version read until it counted refresh.external_total
    writer = make_live_store()
    writer.check_model(stamp)
    first, second = corpus()[:1], corpus()[1:2]
    assert all(o.ok for o in writer.write(first))
    writer.flush()
    reader = make_live_store(writer.alias)
    seen = [(reader.version(), reader.counts().passages)]
    assert all(o.ok for o in writer.write(second))  # the refresh interval relaxed, as a chunk of nerindex index
    writer.existing_ids([d.passage.id for d in second])
    seen.append((reader.version(), reader.counts().passages))
    writer.flush()
    seen.append((reader.version(), reader.counts().passages))
    assert [n for _, n in seen][::2] == [1, 2]
    for (v1, n1), (v2, n2) in zip(seen, seen[1:]):
        assert n1 == n2 or v1 != v2, seen
    # and it stays while nothing is written or made visible: a write not yet visible (a load with
    # the refresh relaxed) moved it every ~100 ms, and the service recomputed and refused cursors (a review)
    assert reader.version() == reader.version() == seen[2][0]
    assert all(o.ok for o in writer.write(corpus()[2:3]))  # not refreshed, no real-time GET
    assert reader.version() == seen[2][0]
    # closed and opened, the refresh counter starts again: an earlier state's version must not come
    # back (a review: an old cursor then paged other results); the primary term grows instead
    index = writer.target()[0]
    writer.client.indices.close(index=index)
    writer.client.indices.open(index=index, wait_for_active_shards="1")
    assert reader.version() not in {v for v, _ in seen}


def test_check_model_skips_leftover_versions(make_live_store, stamp):
    store = make_live_store()
    store.client.indices.create(index=f"{store.alias}-000004")
    store.check_model(stamp)
    assert store.target()[0] == f"{store.alias}-000005"
    fresh = open_elasticsearch(resolve(es_index=store.alias))
    with pytest.raises(ModelMismatchError, match="nerindex es reindex"):
        fresh.check_model(ModelStamp("other", "2", 8, "d" * 64))
    fresh.close()


# --- writing --------------------------------------------------------------------------------------


def test_write_reports_every_passage_in_order(make_live_store, stamp):
    store = make_live_store()
    with pytest.raises(StoreError, match="check_model"):
        store.write(corpus())
    store.check_model(stamp)
    assert [(o.id, o.ok, o.action) for o in store.write(corpus())] == [
        (p.passage.id, True, "created") for p in corpus()
    ]
    assert [o.action for o in store.write(corpus()[:1])] == ["updated"]
    assert store.counts() == StoreCounts(passages=5, spans=8)


def test_bulk_keeps_per_document_errors_as_data(loaded):
    """A passage the server refuses (more metadata keys than an index maps: a known difference)
    fails alone, with the server's reason."""
    keys = {f"k{i}": i for i in range(1001)}
    bad_year = doc("b1", "Spinosaurus swam.", [("Spinosaurus", DINO)], **keys)
    wrong_dims = EncodedPassage(Passage("b2", "x"), (EncodedSpan(0, 1, "x", 0.9, np.ones(3)),), unit(1))
    good = doc("g1", "Iguanodon grazed.", [("Iguanodon", DINO)], year=2022)
    outcomes = loaded.write([bad_year, wrong_dims, good])
    assert [(o.id, o.ok) for o in outcomes] == [("b1", False), ("b2", False), ("g1", True)]
    assert outcomes[0].error.startswith("HTTP 400: document_parsing_exception")
    assert "Limit of total fields" in outcomes[0].error
    assert "shape (3,)" in outcomes[1].error  # caught before sending
    assert loaded.counts().passages == 6
    assert loaded.existing_ids(["b1", "b2", "g1"]) == {"g1"}


def test_a_long_id_and_an_id_spelling_its_hash_never_overwrite_each_other(make_live_store, stamp):
    """An audit: an id over 512 bytes is stored under "sha256:<hex>", also a valid literal id; a
    passage with that literal id was reported "skipped_changed", then with --reindex-existing
    "updated" over the long one, which was gone. Now the second of the two fails, the first stays."""
    store = make_live_store()
    store.check_model(stamp)
    long_id = "x" * 600
    hashed = index_requests.document_id(long_id)
    nasa, toyota = doc(long_id, "NASA launched.", [("NASA", DINO)]), doc(hashed, "Toyota builds.", [("Toyota", DINO)])
    assert [(o.ok, o.action) for o in store.write([nasa])] == [(True, "created")]
    for replace in (True, False):
        (outcome,) = store.write([toyota], replace=replace)
        assert not outcome.ok and "is that of passage 'xxx" in outcome.error and "rename one" in outcome.error
    assert store.existing_ids([long_id, hashed]) == {long_id}
    assert store.stored_texts([long_id, hashed]) == {long_id: "NASA launched."}
    # both in one write: the first holds the _id
    other = make_live_store()
    other.check_model(stamp)
    outcomes = other.write([toyota, nasa, doc("p9", "Other.", [])])
    assert [(o.id, o.ok) for o in outcomes] == [(hashed, True), (long_id, False), ("p9", True)]
    assert other.existing_ids([long_id, hashed, "p9"]) == {hashed, "p9"}


def test_refresh_interval_relaxed_during_writes_and_restored(make_live_store, stamp):
    store = make_live_store()
    store.check_model(stamp)
    index = store.target()[0]

    def interval():
        body = store.client.indices.get_settings(index=index, name="index.refresh_interval").body
        return rs.refresh_interval(body)

    assert interval() == "1s"
    store.write(corpus()[:2])
    assert interval() == BULK_REFRESH_INTERVAL
    assert search(store, DINO) and interval() == "1s"  # a search makes the writes visible first
    store.write(corpus()[2:])
    store.close()
    with pytest.raises(StoreError, match="closed"):  # closed is closed, as for the embedded store
        store.counts()
    store = make_live_store(store.alias)
    assert interval() == "1s"
    assert store.counts().passages == 5


def test_a_load_killed_while_relaxed_leaves_no_lasting_refresh_delay(make_live_store, stamp):
    """A load killed before it restored the refresh interval left 30 s on the index, and the next
    load, finding 30 s already there, never put it back (found by an audit). nerindex's own value
    is put back; an operator's 30 s is kept (the next test)."""
    killed = make_live_store()
    killed.check_model(stamp)
    killed.write(corpus()[:2])  # relaxed to 30 s; then the process dies: nothing restores it
    index = killed.target()[0]

    def interval():
        return rs.refresh_interval(killed.client.indices.get_settings(index=index, name="index.refresh_interval").body)

    assert interval() == BULK_REFRESH_INTERVAL
    killed._refresh.previous = None  # as a new process, which knows nothing of it
    rerun = make_live_store(index=killed.alias)
    rerun.write(corpus()[2:])
    rerun.flush()
    # the template's explicit 1 s, not unset: an unset interval lets a shard no search reaches go
    # search-idle and stop refreshing, so version() stood still while others wrote (an audit)
    assert interval() == "1s"


def test_a_rerun_that_writes_nothing_after_a_killed_load_makes_its_passages_searchable(make_live_store, stamp):
    """An audit: after a load killed while relaxed, the rerun found every passage stored, wrote
    nothing, and so neither put the interval back nor refreshed: another process counted 1 of the
    passages for 30 s, and the interval stayed relaxed until some later run wrote."""
    killed = make_live_store()
    killed.check_model(stamp)
    killed.write(corpus()[:3])
    index = killed.target()[0]
    killed._refresh.previous = None  # the process dies: nothing restores it or refreshes
    rerun = make_live_store(index=killed.alias)
    rerun.prepare()  # the end of the rerun's indexing, with nothing written
    body = rerun.client.indices.get_settings(index=index, name="index.refresh_interval").body
    assert rs.refresh_interval(body) == "1s"
    assert make_live_store(index=killed.alias).counts().passages == 3


def test_an_operators_own_30_s_refresh_interval_is_kept_by_a_load(make_live_store, stamp):
    """An operator's "30s" looked like one left by a killed load and was reset to 1 s (an audit)."""
    store = make_live_store()
    store.check_model(stamp)
    index = store.target()[0]
    store.client.indices.put_settings(index=index, settings={"index": {"refresh_interval": "30s"}})
    store.write(corpus()[:2])
    store.flush()
    body = store.client.indices.get_settings(index=index, name="index.refresh_interval").body
    assert rs.refresh_interval(body) == "30s"
    assert store.counts().passages == 2


@pytest.mark.parametrize("replace", [False, True], ids=["new-only", "reindex-existing"])
@pytest.mark.parametrize("spoil", [dict(delay=3.0), dict(status=504)], ids=["timeout", "gateway-504"])
def test_a_bulk_request_without_an_answer_counts_what_it_stored_as_stored(make_live_store, stamp, spoil, replace):
    """The client sent a bulk request again after a timeout (or a gateway's 504), and every passage
    its first try had stored came back "already stored": a summary of 0 new passages for a load
    that stored them all (an audit). A passage another writer stored first, with another text, is
    still left as it is. Replacing (--reindex-existing), the second try "updated" what the first
    had stored, and new passages were summed up as updates (an audit): the ids stored before the
    request went out are looked up first, and only those count as updated."""
    direct = make_live_store()
    direct.check_model(stamp)
    passages = corpus()
    rival = dataclasses.replace(passages[0], passage=dataclasses.replace(passages[0].passage, text="A rival's text."))
    assert [o.action for o in direct.write([rival])] == ["created"]
    for url in spoiled_bulk(ES_URL, **spoil):
        slow = open_elasticsearch(resolve(es_url=url, es_index=direct.alias, es_timeout=1.0))
        try:
            outcomes = slow.write(passages, replace=replace)
            slow.flush()
        finally:
            slow.close()
    assert [o.action for o in outcomes] == ["updated" if replace else "skipped"] + ["created"] * (len(passages) - 1)
    assert direct.counts().passages == len(passages)


def test_a_gateway_that_refuses_every_bulk_request_stops_the_run(make_live_store, stamp):
    """Every bulk request answered 504: after the tries the write stops with one error, as a
    timeout does, rather than waiting out the back-off for every chunk (a review)."""
    direct = make_live_store()
    direct.check_model(stamp)
    for url in spoiled_bulk(ES_URL, status=504, nth=None):
        down = open_elasticsearch(resolve(es_url=url, es_index=direct.alias, es_timeout=5.0),
                                  bulk=BulkOptions(chunk_size=2, initial_backoff=0.05))
        try:
            with pytest.raises(StoreError, match="HTTP 504"):
                down.write(corpus(), replace=False)
        finally:
            down.close()

def test_a_write_that_fails_part_way_says_how_many_passages_it_stored(make_live_store, stamp):
    """An audit: a connection lost after the first bulk request of a chunk said "0 passage(s) of
    this run were stored, in whole chunks" where 200 were. The error carries what the answered
    requests stored, and the pipeline's message counts it (tests/test_pipeline.py)."""
    direct = make_live_store()
    direct.check_model(stamp)
    passages = corpus()
    for url in spoiled_bulk(ES_URL, status=504, after=1):
        down = open_elasticsearch(resolve(es_url=url, es_index=direct.alias, es_timeout=5.0),
                                  bulk=BulkOptions(chunk_size=2, initial_backoff=0.05))
        try:
            with pytest.raises(StoreError, match="HTTP 504") as failed:
                down.write(passages)
        finally:
            down.close()
    assert failed.value.stored == 2  # the answered request's; the 504's was applied too, unanswered
    assert direct.existing_ids([p.passage.id for p in passages]) >= {p.passage.id for p in passages[:2]}


def test_only_the_request_without_an_answer_is_sent_again(make_live_store, stamp):
    """Chunks of 2: the second bulk request times out. Passages of the later chunks were never sent,
    so one a run before had stored (same text) is "already stored", not counted as this run's (a
    review), and the first chunk's answers stand."""
    direct = make_live_store()
    direct.check_model(stamp)
    passages = corpus()
    assert [o.action for o in direct.write([passages[4]])] == ["created"]  # stored before the run, in the last chunk
    for url in spoiled_bulk(ES_URL, delay=3.0, nth=2):
        slow = open_elasticsearch(resolve(es_url=url, es_index=direct.alias, es_timeout=1.0),
                                  bulk=BulkOptions(chunk_size=2))
        try:
            outcomes = slow.write(passages, replace=False)
            slow.flush()
        finally:
            slow.close()
    assert [o.action for o in outcomes] == ["created"] * 4 + ["skipped"]
    assert direct.counts().passages == len(passages)

def old_metadata_mapping(body: dict) -> dict:
    """An index body with ``fields.*`` indexed by the types Elasticsearch guesses and
    ``filter_texts`` keys read as object paths, as nerindex mapped them before ``fields`` was
    kept in ``_source`` only (an audit: conflicting types and dotted keys refused passages)."""
    mappings = body["mappings"]
    mappings["properties"]["fields"] = {"type": "object", "dynamic": True}
    mappings["properties"][index_requests.FILTER_TEXTS] = {"type": "object", "dynamic": True}
    mappings["dynamic_templates"].append({"user_metadata_strings": {
        "path_match": "fields.*", "match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 8191}}})
    return body


def index_made_before_filter_texts(store: ElasticsearchStore, stamp: ModelStamp) -> ElasticsearchStore:
    """The store's alias on an index as nerindex made it before ``filter_texts``."""
    body = old_metadata_mapping(index_requests.create_index_body(stamp, alias=store.alias))
    mappings = body["mappings"]
    mappings["_meta"].pop(index_requests.FILTER_TEXTS)
    mappings["properties"].pop(index_requests.FILTER_TEXTS)
    mappings["dynamic_templates"] = [t for t in mappings["dynamic_templates"] if index_requests.FILTER_TEXTS not in t]
    store.client.indices.create(index=f"{store.alias}-000001", **body)
    store.check_model(stamp)
    return store


def test_a_metadata_value_over_8191_characters_is_stored_but_not_filtered(make_live_store, stamp):
    """A known difference (docs/elasticsearch.md): ``ignore_above`` leaves such a value out of
    ``filter_texts``, so a filter misses it and the field counts as absent; the embedded store
    matches it."""
    store = make_live_store()
    store.check_model(stamp)
    long = "x" * 8192
    first = corpus()[0]
    docs = [dataclasses.replace(first, passage=dataclasses.replace(first.passage, id=pid, fields={"note": note}))
            for pid, note in (("long", long), ("short", "x" * 8191))]
    assert all(o.ok for o in store.write(docs))
    assert [h.fields["note"] for h in search(store, DINO, filters=Filters.of({"note": long}))] == []
    assert [h.id for h in search(store, DINO, filters=Filters.of({"note": "x" * 8191}))] == ["short"]
    assert [h.id for h in search(store, DINO, filters=Filters.of({"note": None}))] == ["long"]
    assert {h.id: len(h.fields["note"]) for h in search(store, DINO)} == {"long": 8192, "short": 8191}


def test_an_index_with_the_old_metadata_mapping_keeps_working(make_live_store, stamp):
    """An index made with ``filter_texts`` but ``fields.*`` indexed (a mapping is per index): the
    store writes and filters as on a new one, where the metadata fits the guessed types."""
    store = make_live_store()
    store.client.indices.create(index=f"{store.alias}-000001",
                                **old_metadata_mapping(index_requests.create_index_body(stamp, alias=store.alias)))
    store.check_model(stamp)
    assert store.typed_filters()
    assert all(o.ok for o in store.write(corpus()))
    assert {h.id for h in search(store, DINO, filters=Filters.of({"lang": "en"}))} == {"p1", "p2"}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"year": "2020"}))} == {"p1", "p3"}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"nowhere": None}))} == {"p1", "p2", "p3"}


def test_an_index_made_before_filter_texts_keeps_filtering_on_its_fields(make_live_store, stamp):
    """An index made by an earlier nerindex has no filter_texts (and a strict mapping that would
    refuse it): writes leave the field out and filters use the metadata fields as before."""
    store = index_made_before_filter_texts(make_live_store(), stamp)
    assert not store.typed_filters()
    assert all(o.ok for o in store.write(corpus()))
    assert {h.id for h in search(store, DINO, filters=Filters.of({"lang": "en"}))} == {"p1", "p2"}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"year": 2020}))} == {"p1", "p3"}


def test_an_index_made_before_the_type_marks_keeps_its_plain_filter_texts(make_live_store, stamp):
    """An index whose ``filter_texts`` have no type marks (``_meta.filter_texts: true``, nerindex
    before the audit that found "007" matching the string "7"): nerindex writes and filters it with
    plain texts, as it did, until ``es reindex`` makes a new index with the marks."""
    store = index_of_filter_format(make_live_store(), stamp, 1)
    assert store.typed_filters() == 1
    assert all(o.ok for o in store.write(code_passages(("s7", "7"), ("s70", "7.0"), ("n7", 7))))
    source = store.client.get(index=store.alias, id=index_requests.document_id("n7"))["_source"]
    assert source[index_requests.FILTER_TEXTS] == {"code": ["7"]}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"code": "7"}))} == {"s7", "s70", "n7"}  # as before


def index_of_filter_format(store: ElasticsearchStore, stamp: ModelStamp, version: int) -> ElasticsearchStore:
    """The store's alias on an index as nerindex made it with filter format ``version`` (1 or 2)."""
    body = index_requests.create_index_body(stamp, alias=store.alias)
    body["mappings"]["_meta"][index_requests.FILTER_TEXTS] = True if version == 1 else version
    body["mappings"]["properties"].pop(index_requests.FILTER_TYPED)
    store.client.indices.create(index=f"{store.alias}-000001", **body)
    store.check_model(stamp)
    return store


def code_passages(*codes: tuple[str, object]) -> list[EncodedPassage]:
    """The first corpus passage under each id, with the metadata ``{"code": value}``."""
    first = corpus()[0]
    return [dataclasses.replace(first, passage=dataclasses.replace(first.passage, id=pid, fields={"code": code}))
            for pid, code in codes]


def test_a_kibana_aggregation_counts_each_metadata_value_once(make_live_store, stamp):
    """filter_texts kept a number's text twice, plain and marked, and a terms aggregation showed
    2001 and an invisible mark + 2001 (an audit): the marked texts are in filter_typed now, where
    nerindex's filters still tell the number 7 from the string "7.0"."""
    store = make_live_store()
    store.check_model(stamp)
    assert all(o.ok for o in store.write(code_passages(("s7", "7"), ("s70", "7.0"), ("n7", 7), ("t", True))))
    store.flush()
    response = store.client.search(index=store.alias, size=0, aggs={"c": {"terms": {"field": "filter_texts.code"}}})
    buckets = {b["key"]: b["doc_count"] for b in response.body["aggregations"]["c"]["buckets"]}
    assert buckets == {"7": 2, "7.0": 1, "true": 1}
    # 7 and "7" name the string and the numbers that spell 7, never the string "7.0" (the embedded store's rule)
    assert {h.id for h in search(store, DINO, filters=Filters.of({"code": 7}))} == {"s7", "n7"}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"code": "7.0"}))} == {"s70", "n7"}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"code": True}))} == {"t"}


def test_an_index_of_filter_format_2_keeps_filtering_as_it_did(make_live_store, stamp):
    """An index made before filter_typed (``_meta.filter_texts: 2``) is written and filtered with
    its marked texts in filter_texts, until ``es reindex``."""
    store = index_of_filter_format(make_live_store(), stamp, 2)
    assert store.typed_filters() == 2
    assert all(o.ok for o in store.write(code_passages(("s7", "7"), ("s70", "7.0"), ("n7", 7))))
    source = store.client.get(index=store.alias, id=index_requests.document_id("n7"))["_source"]
    assert source[index_requests.FILTER_TEXTS] == {"code": ["\ufdd07", "7"]} and index_requests.FILTER_TYPED not in source
    assert {h.id for h in search(store, DINO, filters=Filters.of({"code": 7}))} == {"s7", "n7"}
    assert {h.id for h in search(store, DINO, filters=Filters.of({"code": "7.0"}))} == {"s70", "n7"}

def test_an_index_made_before_candidates_gets_the_field_at_its_first_write(make_live_store, stamp):
    """An index made before spans.mention: its spans, without the field, are mentions; its strict
    mapping would refuse a candidate, so the first write adds the field."""
    store = make_live_store()
    body = index_requests.create_index_body(stamp, alias=store.alias)
    body["mappings"]["properties"]["spans"]["properties"].pop(index_requests.MENTION)
    store.client.indices.create(index=f"{store.alias}-000001", **body)
    old = index_requests.passage_document(corpus()[0], stamp, typed_filters=True)  # Tyrannosaurus, as written before
    for span in old["spans"]:
        span.pop(index_requests.MENTION)
    store.client.index(index=store.alias, id="p1", document=old, refresh=True)
    store.check_model(stamp)
    assert [(h.id, [s.text for s in h.spans]) for h in search(store, DINO)] == [("p1", ["Tyrannosaurus"])]
    raptor = EncodedPassage(Passage("r1", "Velociraptor claws", {"lang": "en"}),
                            (EncodedSpan(0, 12, "Velociraptor", 0.9, DINO, (), mention=False),), unit(1, 1, 1))
    assert [o.ok for o in store.write([raptor])] == [True]
    index, mapping = store.target()
    assert index_requests.mention_mapped(mapping)
    hits = search(store, DINO)
    assert [(h.id, [s.text for s in h.spans]) for h in hits] == [("p1", ["Tyrannosaurus"]), ("r1", [])]


def test_candidates_never_crowd_a_mention_out_of_the_marks(make_live_store, stamp):
    """A passage with more candidates over the threshold than inner hits can list (100) still
    has its mention marked, in top-k and with hybrid scoring: the marks have their own inner hits."""
    store = make_live_store()
    store.check_model(stamp)
    text = " ".join(["Dinosaur"] * 120 + ["Allosaurus"])
    spans = tuple(EncodedSpan(9 * i, 9 * i + 8, "Dinosaur", 0.5, unit(1, 0.01 * i), (), mention=False) for i in range(120))
    mention = EncodedSpan(9 * 120, 9 * 120 + 10, "Allosaurus", 0.9, unit(0.9, 0.4359), ())
    assert all(o.ok for o in store.write([EncodedPassage(Passage("crowded", text, {}), spans + (mention,), unit(1, 1, 1))]))
    for weight in (0.0, 0.5):
        (hit,) = search(store, DINO, passage_weight=weight)
        assert [s.text for s in hit.spans] == ["Allosaurus"]
        assert hit.score == pytest.approx(1.0 + weight / np.sqrt(3), abs=score_tolerance(store))


# --- top-k search -----------------------------------------------------------------------------------


def test_default_int8_index_scores_and_threshold(loaded):
    hits = search(loaded, DINO)
    assert [h.id for h in hits] == ["p1", "p2", "p3"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6], abs=score_tolerance(loaded))
    if loaded.rescores():
        # the threshold is applied to the rescored (float) similarity: Triceratops is at 0.6
        assert [h.id for h in search(loaded, DINO, threshold=0.599)] == ["p1", "p2", "p3"]
        assert [h.id for h in search(loaded, DINO, threshold=0.6005)] == ["p1", "p2"]


def near_tie_corpus(dims: int = 384, seed: int = 0) -> tuple[np.ndarray, list[EncodedPassage]]:
    """A query vector, and passages whose spans sit within ~0.001 cosine of each other: where the
    int8 estimate picks the lesser span of a passage, its _score is that span's exact cosine."""
    rng = np.random.default_rng(seed)
    query = rng.normal(size=dims)
    query /= np.linalg.norm(query)

    def at(cos: float) -> np.ndarray:
        other = rng.normal(size=dims)
        other -= (other @ query) * query
        other /= np.linalg.norm(other)
        return (cos * query + np.sqrt(1 - cos * cos) * other).astype(np.float32)

    def passage(pid: str, spans: list[float], **fields: object) -> EncodedPassage:
        words = [f"W{pid}x{k}" for k in range(len(spans))]
        text = " and ".join(words) + "."
        made = tuple(EncodedSpan(text.index(w), text.index(w) + len(w), w, 0.9, at(c)) for w, c in zip(words, spans))
        return EncodedPassage(Passage(pid, text, dict(fields)), made, at(0.1))

    docs = [passage(f"t{i:02d}", [0.3605, 0.3595]) for i in range(40)]  # threshold 0.36 between them
    for i in range(30):  # A's best span (0.8010) beats B's (0.8005); A's other span is under B's
        docs += [passage(f"a{i:02d}", [0.8010, 0.8000], pair=i), passage(f"b{i:02d}", [0.8005], pair=i)]
    return query, docs


def test_int8_index_ranks_and_thresholds_by_the_best_span(make_live_store):
    """A nested kNN on a quantized index keeps the span its int8 estimate ranks first and rescores
    only that one: passages whose best span passes the threshold were dropped (25 of 40 returned)
    and the limit was cut on the lesser span (B before A in 6 of 30 pairs) until the store gave the
    kNN a slack and ranked by the best spans itself (search_requests.QUANTIZED_MARGIN)."""
    store = make_live_store()  # the default int8_hnsw
    stamp = ModelStamp("test-model-384", "1", 384, "d" * 64)
    store.check_model(stamp)
    if not store.rescores():
        pytest.skip("int8 scores are estimates before Elasticsearch 8.18 (no rescore_vector)")
    query, docs = near_tie_corpus()
    assert all(o.ok for o in store.write(docs))
    store.flush()
    hits = search(store, query, threshold=0.36, limit=100, filters=Filters.of({"pair": None}))
    assert sorted(h.id for h in hits) == [f"t{i:02d}" for i in range(40)]
    assert [h.score for h in hits] == pytest.approx([0.3605] * 40, abs=1e-4)
    assert all(len(h.spans) == 1 and h.spans[0].similarity >= 0.36 for h in hits)  # the marks: the threshold's
    wrong = [i for i in range(30) if [h.id for h in search(store, query, threshold=0.36, limit=1, filters=Filters.of({"pair": i}))] != [f"a{i:02d}"]]
    assert wrong == []
    both = search(store, query, threshold=0.36, limit=2, filters=Filters.of({"pair": 3}), passage_weight=0.5)
    assert [h.id for h in both] == ["a03", "b03"]


def test_passage_weight_on_the_int8_index(loaded):
    hits = search(loaded, DINO, passage_weight=0.5)
    passage = 1 / np.sqrt(3)  # every passage vector of corpus() is unit(1, 1, 1)
    assert [h.id for h in hits] == ["p1", "p2", "p3"]
    expected = [s + 0.5 * passage for s in (1.0, 0.8, 0.6)]
    assert [h.score for h in hits] == pytest.approx(expected, abs=2 * score_tolerance(loaded))
    # several matching spans per passage come back as inner hits of the nested knn query too
    (p1,) = [h for h in search(loaded, unit(1, 0, 1), threshold=0.7, passage_weight=0.5) if h.id == "p1"]
    assert [s.text for s in p1.spans] == ["Montana", "Tyrannosaurus"]


def test_passage_weight_scores_every_matching_passage_among_closer_ones(make_live_store, stamp):
    """150 passages whose passage vectors are nearer the type than m1's, none with a matching span:
    the passage kNN is pre-filtered to the span matches, so m1 still gets its own passage term."""
    store = make_live_store(num_candidates=100)
    store.check_model(stamp)
    rng = np.random.default_rng(7)

    def off_type() -> np.ndarray:  # a distinct vector with no component on the type's axis
        v = np.zeros(8, dtype=np.float32)
        v[1:] = rng.normal(size=7)
        return v / np.linalg.norm(v)

    decoys = [
        EncodedPassage(Passage(f"d{i:03d}", "Merkel spoke.", {"lang": "en"}),
                       (EncodedSpan(0, 6, "Merkel", 0.9, off_type(), ()),), unit(*(DINO * 3 + off_type())))
        for i in range(150)
    ]
    m1 = EncodedPassage(Passage("m1", "Iguanodon bones.", {"lang": "en"}),
                        (EncodedSpan(0, 9, "Iguanodon", 0.9, unit(0.8, 0.6), ()),), unit(0.6, 0, 0.8))
    assert all(o.ok for o in store.write(hybrid_corpus() + decoys + [m1]))
    hits = search(store, DINO, passage_weight=0.5)
    # h2: 0.8 + 0.5 · 1.0; m1: 0.8 + 0.5 · 0.6 (its passage is farther than all 150 decoys'); h1: 0.9 + 0
    assert [(h.id, round(h.score, 3)) for h in hits] == [("h2", 1.3), ("m1", 1.1), ("h1", 0.9)]


def test_a_hybrid_pool_that_comes_back_short_widens_until_it_stops_growing(make_live_store):
    """A store-parity audit: HNSW's candidates, cut by the threshold, gave a pool short of its size,
    which was read as "every match", so an unseen type's top 10 (λ 1) lost passages without a word
    ("bank --limit 50": 29 hits of 44). 1,000 passages, two spans each near the query, 413 match."""
    dims, rng = 16, np.random.default_rng(7)
    store = make_live_store(index_options="int8_hnsw", num_candidates=10)
    store.check_model(ModelStamp(id="pool", version="1", dims=dims, checksum="c" * 64))
    query = np.zeros(dims, np.float32)
    query[0] = 1.0

    def near() -> np.ndarray:
        v = rng.normal(size=dims).astype(np.float32)
        v[0] = abs(v[0]) + 1.5
        return v / np.linalg.norm(v)

    docs, exact = [], []
    for i in range(1000):
        text = f"Passage {i} names Alpha and Beta."
        spans = tuple(EncodedSpan(text.index(w), text.index(w) + len(w), w, 0.9, near(), ()) for w in ("Alpha", "Beta"))
        passage = rng.normal(size=dims).astype(np.float32)
        passage /= np.linalg.norm(passage)
        docs.append(EncodedPassage(Passage(f"d{i:04d}", text, {}), spans, passage))
        if (span := max(float(s.vector @ query) for s in spans)) >= 0.6:
            exact.append((span + float(passage @ query), f"d{i:04d}"))
    assert all(o.ok for o in store.write(docs))
    store.prepare()
    top = [pid for _, pid in sorted(exact, reverse=True)[:10]]
    assert [h.id for h in store.search(SearchRequest(query, 0.6, limit=10, passage_weight=1.0))] == top


def test_a_small_candidate_pool_widens_until_no_passage_outside_can_overtake(make_live_store, stamp):
    small = make_live_store(num_candidates=1)
    small.check_model(stamp)
    small.write(hybrid_corpus())
    # One candidate: the span kNN finds h1 (best span) only; h2 (0.8 + 0.5 · 1.0) could overtake
    # it from outside (0.9 < 0.8 + 0.5 · 1.0), so the pool widens and h2 comes first, as it does
    # with the default pool (100) and in the embedded store.
    assert [h.id for h in search(small, DINO, passage_weight=0.5, limit=1)] == ["h2"]
    default = open_elasticsearch(resolve(es_index=small.alias))
    assert [h.id for h in search(default, DINO, passage_weight=0.5, limit=1)] == ["h2"]
    default.close()


def test_the_dev_tools_request_of_the_docs_runs(loaded):
    """docs/elasticsearch.md's hybrid request, pasted as a user would, gives nerindex's hits."""
    import re

    docs = (ROOT / "docs" / "elasticsearch.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```\nGET nerindex/_search(?:\?\S*)?\n(.*?)```", docs, re.S) if '"should"' in b]
    body = json.loads(block.replace("[ PASTE THE VECTOR HERE ]", json.dumps(index_requests.vector_values(DINO))))
    if not loaded.rescores():
        body = json.loads(json.dumps(body).replace(', "rescore_vector": {"oversample": 1.0}', ""))
    loaded.flush()  # make the bulk load visible to this direct request
    response = loaded.client.search(index=loaded.alias, body=body, include_named_queries_score=True).body
    hits = rs.rank(rs.parse_hits(response, scoring="knn", metric="cosine", min_similarity=0.5, passage_weight=0.3))
    expected = search(loaded, DINO, passage_weight=0.3)
    assert [(h.id, round(h.score, 4)) for h in hits] == [(h.id, round(h.score, 4)) for h in expected]


def test_passage_without_a_vector_counts_as_cosine_zero(make_live_store, stamp):
    store = make_live_store()
    store.check_model(stamp)
    raptor = unit(1, 0.5)  # cos with DINO 0.894
    bare = EncodedPassage(Passage("bare", "Raptor claws", {"lang": "en"}), (EncodedSpan(0, 6, "Raptor", 0.9, raptor, ()),), None)
    assert all(o.ok for o in store.write(hybrid_corpus() + [bare]))
    expected = [("h2", 1.8), ("h1", 0.9), ("bare", 0.894)]
    assert [(h.id, round(h.score, 3)) for h in search(store, DINO, passage_weight=1.0)] == expected
    if store.has_module(PAINLESS):
        assert [(h.id, round(h.score, 3)) for h in search(store, DINO, passage_weight=1.0, exhaustive=True)] == expected


def test_span_filters_in_knn_need_9_2(loaded):
    """8.x accepts a kNN filter on a nested field and silently matches nothing: refused before."""
    request = SearchRequest(vector=POL, min_similarity=0.5, filters=Filters.of({"spans.labels": "label-merkel"}))
    if loaded.server_version() >= SPAN_FILTER_SERVER:
        assert [(h.id, [s.text for s in h.spans]) for h in loaded.search(request)] == [("p3", ["Merkel"])]
    else:
        with pytest.raises(SearchError, match=r"span fields.*>= 9\.2\.0"):
            list(loaded.search(request))


def test_passage_level_labels_are_aggregatable(loaded):
    loaded.flush()  # the bulk load relaxed the refresh interval: make the writes visible
    response = loaded.client.search(index=loaded.alias, size=0, aggs={"labels": {"terms": {"field": "labels", "size": 20}}})
    buckets = {b["key"]: b["doc_count"] for b in response.body["aggregations"]["labels"]["buckets"]}
    assert buckets["label-obama"] == 1 and buckets["label-merkel"] == 1 and len(buckets) == 8



def test_a_candidates_labels_are_not_the_passages(make_live_store, stamp):
    """The passage-level labels were a copy_to of every span's, and a dashboard counted labels
    nerindex never marks (an audit): they are the mentions' now."""
    store = make_live_store()
    store.check_model(stamp)
    (first,) = corpus()[:1]
    spans = (dataclasses.replace(first.spans[0], mention=False, labels=("label-candidate",)),) + tuple(first.spans[1:])
    store.write([dataclasses.replace(first, spans=spans)])
    store.flush()
    response = store.client.search(index=store.alias, size=0, aggs={"labels": {"terms": {"field": "labels"}}})
    keys = {b["key"] for b in response.body["aggregations"]["labels"]["buckets"]}
    assert "label-candidate" not in keys
    assert keys == {label for span in spans[1:] if span.mention for label in span.labels}


def test_bm25_boost_mode_boosts_by_words_but_keeps_the_threshold(make_live_store, stamp):
    store = make_live_store(hybrid=True, text_boost=10.0)
    store.check_model(stamp)
    store.write(corpus())
    hits = search(store, DINO, text="Triceratops")
    assert [h.id for h in hits][0] == "p3" and {h.id for h in hits} == {"p1", "p2", "p3"}
    # Only p4 has the word, but it has no dinosaur: words boost, they never add a match.
    assert {h.id for h in search(store, DINO, text="Danube")} == {"p1", "p2", "p3"}


def test_bm25_boost_with_passage_weight_keeps_elasticsearch_order(make_live_store, stamp):
    store = make_live_store(hybrid=True, text_boost=0.1)
    store.check_model(stamp)
    store.write(hybrid_corpus())
    # BM25 alone lifts h1 ("tracks") over h2 ...
    assert [h.id for h in search(store, DINO, text="tracks")] == ["h1", "h2"]
    # ... the passage term outweighs it; Hit.score stays the best span (BM25 cannot be split off).
    hits = search(store, DINO, text="tracks", passage_weight=0.5)
    assert [(h.id, round(h.score, 3)) for h in hits] == [("h2", 0.8), ("h1", 0.9)]


def test_search_on_a_missing_index_finds_nothing(make_live_store):
    store = make_live_store()
    assert search(store, DINO) == [] and store.counts() == StoreCounts(0, 0)
    assert store.existing_ids(["a"]) == set() and store.model() is None


@pytest.mark.parametrize("made_by_hand", [False, True])
def test_searching_an_index_nerindex_never_wrote_is_refused(capsys, make_live_store, made_by_hand):
    """A mistyped --es-index, or an index nerindex did not make, read as "0 shown of 0" and
    "0 passages" with exit 0 and a hint to lower the threshold (audit3-es); the embedded store
    refuses a folder without a store the same way (exit 5)."""
    from indexer.cli import main

    store = make_live_store()  # nothing created yet
    if made_by_hand:
        store.client.indices.create(index=store.alias)
    # an audit: the advice for an index made by hand was "run 'nerindex index'", which refuses it;
    # and add-types made "<alias>-types" beside any name
    expected = "was not created by nerindex" if made_by_hand else "no index or alias"
    for command in (["search", "dinosaur"], ["info"], ["es", "add-types", "sea creature"]):
        with pytest.raises(SystemExit) as exc:
            main([*command, "--es-url", ES_URL, "--es-index", store.alias])
        err = capsys.readouterr().err
        assert exc.value.code == 5 and expected in err and "check --es-index" in err, err
    assert not store.client.indices.exists(index=f"{store.alias}-types")


def test_types_index_takes_phrases_for_a_catalog_store_and_is_not_taken_for_passages(tmp_path, capsys, make_live_store):
    """audit7: add-types refused an index written with --catalog (a setting type vectors do not
    depend on), naming two identical models; and --es-index <alias>-types was read as a store of
    486 passages and 0 spans, its searches failing inside Elasticsearch."""
    from indexer.cli import main

    store = make_live_store()
    corpus_file, catalog = tmp_path / "a.jsonl", tmp_path / "types.txt"
    corpus_file.write_text('{"id": "1", "text": "Ada Lovelace lived in London."}\n', encoding="utf-8")
    catalog.write_text("person\ncity\n", encoding="utf-8")
    es = ["--es-url", ES_URL, "--es-index", store.alias]
    main(["index", str(corpus_file), *es, "--catalog", str(catalog)])  # returns on success
    capsys.readouterr()
    main(["es", "add-types", "sea creature", *es, "--json"])
    assert json.loads(capsys.readouterr().out)["stored"] == 1
    for command in (["search", "person"], ["info"]):
        with pytest.raises(SystemExit) as exc:
            main([*command, "--es-url", ES_URL, "--es-index", f"{store.alias}-types"])
        err = capsys.readouterr().err
        assert exc.value.code == 5 and f"is the types index of {store.alias!r}" in err, err


def test_a_request_the_server_rejects_is_a_search_error(make_live_store, stamp):
    store = index_made_before_filter_texts(make_live_store(), stamp)  # filters on the typed fields
    assert all(o.ok for o in store.write(corpus()))
    with pytest.raises(SearchError, match="Elasticsearch rejected the request to search"):
        search(store, DINO, filters=Filters.of({"year": "the Cretaceous"}))  # year is a long


# --- exhaustive search (Painless) ---------------------------------------------------------------------


def test_exhaustive_search_pages_with_a_point_in_time(make_live_store, stamp):
    store = make_live_store(page_size=2)
    need_module(store, PAINLESS, "exhaustive search")
    store.check_model(stamp)
    store.write(corpus())
    before = open_contexts(store)
    hits = search(store, unit(1, 0.3, 0.7), threshold=0.5, exhaustive=True)
    assert [(h.id, round(h.score, 3)) for h in hits] == [("p1", 0.796), ("p2", 0.78), ("p3", 0.668), ("p4", 0.557)]
    results = store.search(SearchRequest(vector=DINO, min_similarity=0.5, exhaustive=True))
    next(results)
    results.close()  # abandoned after the first hit
    assert open_contexts(store) == before  # every point in time closed


def test_exhaustive_span_filters_and_int8_scores(loaded):
    need_module(loaded, PAINLESS, "exhaustive search")
    request = SearchRequest(vector=POL, min_similarity=0.5, filters=Filters.of({"spans.labels": "label-merkel"}), exhaustive=True)
    assert [(h.id, [s.text for s in h.spans]) for h in loaded.search(request)] == [("p3", ["Merkel"])]
    exact = search(loaded, DINO, exhaustive=True)
    assert [round(h.score, 4) for h in exact] == [1.0, 0.8, 0.6]  # script_score uses the floats


def test_exhaustive_search_without_painless_is_refused_clearly(loaded):
    lack_module(loaded, PAINLESS)
    with pytest.raises(SearchError, match="needs the lang-painless module"):
        search(loaded, DINO, exhaustive=True)
    with pytest.raises(SearchError, match="lang-painless"):
        search(loaded, DINO, limit=20_000)  # past the kNN cap: the exact search too


# --- search template (Mustache) ---------------------------------------------------------------------


def test_stored_search_template_gives_the_same_hits(loaded):
    need_module(loaded, MUSTACHE, "a search template")
    template_id = f"{loaded.alias}-template"
    loaded.put_search_template(template_id)
    try:
        params = search_requests.search_template_params(DINO, min_similarity=0.5, limit=10)
        response = loaded.client.search_template(index=loaded.alias, id=template_id, params=params)
        hits = rs.rank(rs.parse_hits(response.body, scoring="knn", metric="cosine", min_similarity=0.5))
        assert [h.id for h in hits] == [h.id for h in search(loaded, DINO)]
    finally:
        loaded.client.options(ignore_status=[404]).delete_script(id=template_id)


def test_search_template_without_mustache_is_refused_clearly(make_live_store):
    store = make_live_store()
    lack_module(store, MUSTACHE)
    with pytest.raises(StoreError, match="needs the lang-mustache module"):
        store.put_search_template(f"{store.alias}-template")


# --- re-index ---------------------------------------------------------------------------------------


class RiverFirst:
    """A 'new model' for re-indexing: the same spans, vectors rotated by one axis; ``broken`` ids
    get a vector of the wrong size (a failed passage)."""

    def __init__(self, broken: tuple[str, ...] = ()) -> None:
        self.by_id = {p.passage.id: p for p in corpus()}
        self.broken = broken

    def encode(self, passages, *, batch_size=32):
        out = []
        for p in passages:
            old = self.by_id[p.id]
            if p.id in self.broken:
                out.append(EncodedPassage(p, (EncodedSpan(0, 1, "x", 0.9, np.ones(3), ()),), old.vector))
                continue
            spans = tuple(dataclasses.replace(s, vector=np.roll(s.vector, 1)) for s in old.spans)
            out.append(EncodedPassage(p, spans, old.vector))
        return out


def test_reindex_swaps_the_alias_to_the_new_model(make_live_store, stamp):
    store = make_live_store(page_size=2)  # the passages are read back in pages (search_after on the id)
    store.check_model(stamp)
    store.write(corpus())  # not flushed: re-indexing must see these writes all the same
    before = open_contexts(store)
    new_stamp = ModelStamp("test-model", "2", 8, "e" * 64)
    report = reindex(store, RiverFirst(), new_stamp, batch_size=2, delete_old=True)
    assert report.swapped and report.failed == 0 and report.passages == 5
    assert store.model() == new_stamp and store.target()[0] == f"{store.alias}-000002"
    assert not store.client.indices.exists(index=f"{store.alias}-000001")
    assert open_contexts(store) == before
    # Every span vector moved one axis on: dinosaurs on axis 1, politicians on axis 2 (RIVER).
    hits = search(store, unit(0, 1))
    assert [h.id for h in hits] == ["p1", "p2", "p3"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6], abs=score_tolerance(store))
    assert {h.id for h in search(store, RIVER)} == {"p2", "p3"}


def test_reindex_reads_without_a_point_in_time_that_could_expire(make_live_store, stamp, monkeypatch):
    """An audit: the passages were read through a point in time kept 5 minutes, which one page of
    long passages (minutes each on a CPU) outlived, and the run failed midway. The old index
    refuses writes while it is read, so search_after on the id reads all of it, with nothing to expire."""
    store = make_live_store(page_size=2)
    store.check_model(stamp)
    store.write(corpus())
    monkeypatch.setattr(store.client, "open_point_in_time", lambda **kw: pytest.fail("a point in time was opened"))
    read: list[str] = []

    class Recording(RiverFirst):
        def encode(self, passages, *, batch_size=32):
            read.extend(p.id for p in passages)
            return super().encode(passages, batch_size=batch_size)

    report = reindex(store, Recording(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=2, chunk_size=2)
    assert report.swapped and report.passages == 5
    assert read == sorted(e.passage.id for e in corpus())


def test_reindex_keeps_the_old_indexs_vector_options_unless_told(make_live_store, stamp):
    """A newcomer check: re-indexing for a new model after --index-options hnsw went back to int8_hnsw."""
    made = make_live_store(index_options="hnsw")
    made.check_model(stamp)
    made.write(corpus())
    store = open_elasticsearch(resolve(es_index=made.alias))  # as es reindex opens it: default options
    try:
        reindex(store, RiverFirst(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=2)
        kept = index_requests.span_vector_index_options(store.target()[1])
        assert kept == index_requests.index_options_body("hnsw")  # the whole options, not the type alone
        reindex(store, RiverFirst(), ModelStamp("test-model", "3", 8, "f" * 64), index_options="int8_hnsw", batch_size=2)
        assert index_requests.span_vector_index_type(store.target()[1]) == "int8_hnsw"
    finally:
        store.close()


def test_reindex_writes_the_new_models_candidates(loaded, stamp):
    """A new model with a candidate head: the spans it proposes only as candidates rank but are not marked."""

    class CandidateHead(RiverFirst):
        def encode(self, passages, *, batch_size=32):
            return [dataclasses.replace(p, spans=tuple(dataclasses.replace(s, mention=s.text != "Stegosaurus") for s in p.spans))
                    for p in super().encode(passages, batch_size=batch_size)]

    assert reindex(loaded, CandidateHead(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3).swapped
    hits = search(loaded, unit(0, 1))
    assert [(h.id, [s.text for s in h.spans]) for h in hits] == [("p1", ["Tyrannosaurus"]), ("p2", []), ("p3", ["Triceratops"])]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.6], abs=score_tolerance(loaded))


def test_reindex_keeps_the_alias_on_failures_unless_allowed(loaded, stamp):
    new_stamp = ModelStamp("test-model", "2", 8, "e" * 64)
    with pytest.raises(StoreError, match=f"stays on '{loaded.alias}-000001'"):
        reindex(loaded, RiverFirst(broken=("p4",)), new_stamp, batch_size=3)
    assert loaded.target()[0] == f"{loaded.alias}-000001" and loaded.model() == stamp
    report = reindex(loaded, RiverFirst(broken=("p4",)), new_stamp, batch_size=3, allow_failures=True)
    # -000002 (the failed attempt) is left for inspection; the next one is -000003
    assert (report.new_index, report.passages, report.failed, report.swapped) == (f"{loaded.alias}-000003", 5, 1, True)
    assert loaded.model() == new_stamp and loaded.counts().passages == 4
    with pytest.raises(ModelMismatchError):
        loaded.check_model(stamp)


class StoppedAfter(RiverFirst):
    """RiverFirst, stopped by Ctrl-C after its first chunk (``nerindex es reindex`` interrupted)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, passages, *, batch_size=32):
        self.calls += 1
        if self.calls > 1:
            raise KeyboardInterrupt
        return super().encode(passages, batch_size=batch_size)


def test_a_reindex_stopped_before_its_swap_deletes_its_unfinished_index(loaded, stamp):
    """A CLI audit: each interrupted run left its partly filled index beside the alias, and nothing
    removed it. The alias, its index's write block and the lock are as before the run."""
    with pytest.raises(KeyboardInterrupt):
        reindex(loaded, StoppedAfter(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3, chunk_size=2)
    assert not loaded.client.indices.exists(index=f"{loaded.alias}-000002")
    assert loaded.target()[0] == f"{loaded.alias}-000001" and loaded.model() == stamp
    report = reindex(loaded, RiverFirst(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3)
    assert report.swapped and report.passages == 5


def test_reindex_with_failures_allowed_keeps_the_old_index_it_was_told_to_delete(loaded, stamp):
    """An audit: --allow-failures --delete-old deleted the old index, the only copy of the failed passages."""
    report = reindex(loaded, RiverFirst(broken=("p4",)), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3,
                     allow_failures=True, delete_old=True)
    assert report.swapped and report.failed == 1 and not report.deleted_old
    assert loaded.client.indices.exists(index=report.old_index)


def test_reindex_counts_a_resent_swap_and_delete_as_done(make_live_store, stamp, monkeypatch):
    """The client resends a request whose answer was lost (a timeout, a proxy's 502-504): the resent
    swap and delete found their first tries done, a 404, and a run that had succeeded was reported
    failed, --delete-old skipped (an audit). Here each request is sent twice, as such a resend does."""
    store = make_live_store()
    store.check_model(stamp)
    store.write(corpus())
    indices = store.client.indices
    for name in ("update_aliases", "delete"):
        def twice(*args, _real=getattr(indices, name), **kwargs):
            _real(*args, **kwargs)  # applied; its answer lost
            return _real(*args, **kwargs)  # the transport's resend
        monkeypatch.setattr(indices, name, twice)
    report = reindex(store, RiverFirst(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=2, delete_old=True)
    monkeypatch.undo()
    assert report.swapped and report.deleted_old
    assert store.target()[0] == f"{store.alias}-000002"
    assert not store.client.indices.exists(index=f"{store.alias}-000001")


def test_reindex_does_not_copy_what_no_writer_takes_now(make_live_store, stamp):
    """A review: an index written before the type marks were refused held "\ufdd02020" as a string,
    and es reindex copied it, where a year=2020 filter then matched it as the number."""
    store = make_live_store()
    store.check_model(stamp)
    marked = dataclasses.replace(corpus()[0], passage=Passage("p1", corpus()[0].passage.text, {"year": "\ufdd02020"}))
    store.write([marked, *corpus()[1:]])  # Store.write itself does not check: an older nerindex wrote it
    new_stamp = ModelStamp("test-model", "2", 8, "e" * 64)
    with pytest.raises(StoreError, match="1 of 5 passages failed .* p1: field 'year' starts with U\\+FDD0"):
        reindex(store, RiverFirst(), new_stamp, batch_size=2)
    report = reindex(store, RiverFirst(), new_stamp, batch_size=2, allow_failures=True)
    assert (report.passages, report.failed, report.swapped) == (5, 1, True)
    assert store.counts().passages == 4 and not store.existing_ids(["p1"])


class WritesMeanwhile(RiverFirst):
    """Re-encodes as :class:`RiverFirst`, and while it does, another handle writes a passage."""

    def __init__(self, writer, broken: tuple[str, ...] = ()) -> None:
        super().__init__(broken)
        self.writer, self.outcomes = writer, None

    def encode(self, passages, *, batch_size=32):
        if self.outcomes is None:
            late = dataclasses.replace(corpus()[0], passage=Passage("late-1", "Late passage.", {}))
            self.outcomes = self.writer.write([late])
            self.writer.flush()
        return super().encode(passages, batch_size=batch_size)


def test_an_index_from_before_0_3_keeps_100_marks_a_passage_and_says_so(make_live_store, stamp, caplog):
    """An index made with Elasticsearch's default inner-hits window (100, nerindex 0.2.0) cannot give
    a passage more marks: its best 100 stay, and the warning names the setting that lifts it."""
    store = make_live_store()
    store.check_model(stamp)
    store.write([crowded_passage()])
    store.client.indices.put_settings(index=store.alias, settings={"index.max_inner_result_window": 100})
    with caplog.at_level(logging.WARNING):
        hits = search(store, DINO, 0.5, limit=1)
    assert [s.text for s in hits[0].spans] == [f"Saurus{i}" for i in range(100)]
    assert "gives at most 100 marks a passage" in caplog.text and "max_inner_result_window" in caplog.text
    store.client.indices.put_settings(index=store.alias, settings={"index.max_inner_result_window": 10_000})
    assert len(search(store, DINO, 0.5, limit=1)[0].spans) == 250


def test_a_passage_indexed_again_between_a_search_and_its_marks_keeps_its_own_marks(make_live_store, stamp, caplog):
    """The stale-answer audit: the follow-up for a passage's marks (more than 100) went to the alias,
    and a passage indexed again in between showed the first version's text with the second's marks,
    at offsets inside other words. Its marks now stay the first response's, consistent with its text."""
    store = make_live_store()
    store.check_model(stamp)
    crowd = crowded_passage()
    store.write([crowd])
    store.flush()
    shift = "Noted: "  # the same spans, later in the text: every offset moves
    moved = dataclasses.replace(
        crowd, passage=dataclasses.replace(crowd.passage, text=shift + crowd.passage.text),
        spans=tuple(dataclasses.replace(s, start=s.start + len(shift), end=s.end + len(shift)) for s in crowd.spans),
    )
    real, calls = store.client.search, []

    def search_then_write(*args, **kwargs):
        calls.append(kwargs.get("body"))
        if len(calls) == 2:  # the marks request: another process indexes the passage first
            store.write([moved])
            store.flush()
        return real(*args, **kwargs)

    store.client.search = search_then_write
    try:
        with caplog.at_level(logging.WARNING):
            hits = search(store, DINO, 0.5, limit=1)
    finally:
        store.client.search = real
    assert len(calls) == 2 and "terms" in json.dumps(calls[1])  # the follow-up for the marks was made
    (hit,) = hits
    assert hit.text == crowd.passage.text and len(hit.spans) == search_requests.INNER_HITS_SIZE
    assert all(hit.text[m.start : m.end] == m.text for m in hit.spans)
    assert "changed on" in caplog.text and "between this search's requests" in caplog.text and "crowd" in caplog.text
    # searched again, the new version shows all of its marks, at its own offsets
    (again,) = search(store, DINO, 0.5, limit=1)
    assert again.text == moved.passage.text and len(again.spans) == CROWD
    assert all(again.text[m.start : m.end] == m.text for m in again.spans)


def test_every_mark_with_a_bm25_boost_and_near_duplicate_passages(make_live_store, stamp):
    """A review: the follow-up for the marks took the BM25 boost's words as a restriction (a
    passage without one of them kept 100 marks), and its kNN at the default candidates missed a
    passage among near-duplicates (one of 18 kept 100)."""
    store = make_live_store(hybrid=True)
    store.check_model(stamp)
    crowd = crowded_passage()
    store.write([dataclasses.replace(crowd, passage=dataclasses.replace(crowd.passage, id=f"c{i}")) for i in range(30)])
    hits = search(store, DINO, 0.5, limit=30, text="Saurus0 museum")
    # (kNN over 30 × 251 identical spans finds fewer than 30 passages: approximate, as top-k is)
    assert len(hits) >= 10 and {len(h.spans) for h in hits} == {250}


def test_hybrid_top_k_on_int8_is_not_filled_by_passages_under_the_threshold(make_live_store):
    """An audit: on a quantized index the span kNN reaches 0.02 under the threshold, so passages whose
    best span is just under it but whose passage vector is close ranked first in Elasticsearch's
    order, filled the passages fetched, and were dropped here: at λ 1 the answer was empty."""
    dims, rng = 64, np.random.default_rng(3)
    q = np.zeros(dims, dtype=np.float32)
    q[0] = 1.0

    def at(cos: float) -> np.ndarray:
        r = rng.standard_normal(dims)
        r[0] = 0
        return (cos * q + np.sqrt(1 - cos * cos) * r / np.linalg.norm(r)).astype(np.float32)

    def passage(pid: str, span: float, whole: float) -> EncodedPassage:
        return EncodedPassage(Passage(pid, f"Entity in passage {pid}", {}), (EncodedSpan(0, 6, "Entity", 0.9, at(span)),), at(whole))

    docs = [passage(f"pass{i:02d}", 0.62, 0.0) for i in range(20)]  # passes 0.6: scores 0.62
    docs += [passage(f"band{i:02d}", 0.595, 0.9) for i in range(20)]  # just under it, close passage vector
    docs += [passage(f"bg{i:04d}", 0.0, 0.0) for i in range(500)]
    store = make_live_store()  # int8_hnsw
    store.check_model(ModelStamp("nerindex-test", "1", dims, "b" * 64))
    assert all(o.ok for o in store.write(docs))
    for weight in (0.0, 1.0):
        hits = search(store, q, 0.6, limit=10, passage_weight=weight)
        assert len(hits) == 10 and all(h.id.startswith("pass") and h.score == pytest.approx(0.62, abs=1e-4) for h in hits)


def test_hybrid_top_k_finds_a_passage_ranked_by_its_vector_or_says_it_may_not(make_live_store, stamp, monkeypatch, caplog):
    """Audit10: past 10,000 candidates the pool stops widening and the top k may miss a passage
    ranked by its passage vector, which it did without a word (the cap lowered to the first pool
    here); and the bound's best passage came from an HNSW search that missed it."""
    from indexer.stores.elasticsearch import searching

    store = make_live_store(index_options="hnsw")
    store.check_model(stamp)
    near = [doc(f"n{i:03d}", "Tyrannosaurus roamed.", [("Tyrannosaurus", unit(1, 0.3 + i / 1000))]) for i in range(400)]
    far = EncodedPassage(Passage("target", "Fossils of a sauropod.", {}),
                         (EncodedSpan(0, 7, "Fossils", 0.9, unit(0.5, 0, 0.866)),), DINO)  # span 0.5, passage 1.0
    store.write([dataclasses.replace(d, vector=unit(0, 0, 0, 1)) for d in near] + [far])
    # the best passage over all of them is found (400 passages share one vector: with 300 candidates
    # its HNSW search missed the target, the bound held at once and the target was missing)
    monkeypatch.setattr(searching, "MAX_NUM_CANDIDATES", search_requests.MAX_NUM_CANDIDATES)
    assert search(store, DINO, 0.3, limit=10, passage_weight=1.0)[0].id == "target"  # 0.5 + 1.0
    monkeypatch.setattr(searching, "MAX_NUM_CANDIDATES", search_requests.MIN_NUM_CANDIDATES)
    with caplog.at_level(logging.WARNING):
        search(store, DINO, 0.3, limit=10, passage_weight=1.0)
    assert "reached kNN's cap of 300 candidates before its bound held" in caplog.text


def test_a_write_during_reindex_is_refused_not_lost(loaded, stamp, caplog):
    """A passage written while the passages are copied would be missing from the new index once
    the alias moves (found by an audit: acknowledged, then gone): the old index refuses it, and
    the warning says why."""
    writer = open_elasticsearch(resolve(es_index=loaded.alias))  # closed here, before the alias goes
    try:
        new_stamp = ModelStamp("test-model", "2", 8, "e" * 64)
        encoder = WritesMeanwhile(writer)
        with caplog.at_level(logging.WARNING):
            report = reindex(loaded, encoder, new_stamp, batch_size=3)
        assert report.swapped
        assert [o.ok for o in encoder.outcomes] == [False] and "block" in encoder.outcomes[0].error
        assert "an 'es reindex' is copying from it" in caplog.text
        # when the alias cannot move, its index takes writes again
        with pytest.raises(StoreError, match="stays on"):
            reindex(loaded, RiverFirst(broken=("p4",)), stamp, batch_size=3)
        assert [o.ok for o in writer.write([corpus()[1]])] == [True]
    finally:
        writer.close()


@pytest.mark.parametrize("delete_old", [False, True])
def test_a_write_racing_a_reindex_never_lands_in_the_new_models_index(loaded, stamp, monkeypatch, delete_old):
    """An audit: a writer looked the alias up, an es reindex to another model moved it, and the
    bulk request sent through the alias stored the old model's spans in the new model's index,
    reported as created. Writes now go to the index checked, and count as failed where the alias
    left it meanwhile (with --delete-old the bulk request made that index afresh)."""
    from indexer.stores.elasticsearch import store as store_module

    writer = open_elasticsearch(resolve(es_index=loaded.alias))
    raced: list = []
    real = store_module.recheck_target
    first = current_index(loaded)

    def racing(store, checked):  # the re-index runs between the writer's look and its bulk request
        index = real(store, checked)
        if store is writer and not raced:
            raced.append(reindex(loaded, RiverFirst(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3,
                                 delete_old=delete_old))
        return index

    try:
        writer.check_model(stamp)
        monkeypatch.setattr(store_module, "recheck_target", racing)
        late = dataclasses.replace(corpus()[0], passage=Passage("late-1", "Late passage.", {}))
        outcomes = writer.write([late])
        assert raced and raced[0].swapped and raced[0].deleted_old == delete_old
        assert [o.ok for o in outcomes] == [False], outcomes
        # refused by the old index's block, or by the index the request made afresh: either way the
        # error says the alias moved (an audit: the fresh index's mapping error said nothing of it)
        assert "moved away from" in outcomes[0].error, outcomes[0].error
        assert loaded.client.indices.exists(index=first) != delete_old  # no stray index left in its place
        loaded.flush()
        assert loaded.existing_ids(["late-1"]) == set() and loaded.counts().passages == len(corpus())
        with pytest.raises(ModelMismatchError):  # the next chunk checks the model against the new index
            writer.write([late])
    finally:
        writer.close()


def test_a_second_reindex_while_one_runs_is_refused_and_leaves_the_first_alone(loaded, stamp):
    """Two runs on one alias (audit3-es): the second lifted the first's write block when it failed,
    so writes were acknowledged and then lost, or moved the alias a second time, onto two indices.
    Now the second stops before it blocks or unblocks anything, and a swap must find the alias
    where the run left it."""

    new_stamp = ModelStamp("test-model", "2", 8, "e" * 64)
    second = open_elasticsearch(resolve(es_index=loaded.alias))
    refusals: list[str] = []

    class SecondRunMeanwhile(RiverFirst):
        def encode(self, passages, *, batch_size=32):
            if not refusals:
                with pytest.raises(StoreError) as caught:
                    reindex(second, RiverFirst(), new_stamp, batch_size=3)
                refusals.append(str(caught.value))
                assert write_blocked(loaded, old)  # the first run's block holds
            return super().encode(passages, batch_size=batch_size)

    try:
        old = current_index(loaded)
        report = reindex(loaded, SecondRunMeanwhile(), new_stamp, batch_size=3)
    finally:
        second.close()
    assert f"another 'nerindex es reindex' of {loaded.alias!r} is running ('{loaded.alias}-reindexing' exists)" in refusals[0]
    assert report.swapped and current_index(loaded) == report.new_index
    assert sorted(loaded.versioned_indices()) == sorted([old, report.new_index])  # the second's index is gone
    # a swap from an index the alias has left fails whole: the alias never points at two indices
    from indexer.stores.elasticsearch.index_requests import alias_swap_actions

    with pytest.raises(Exception, match="aliases_not_found|missing"):
        loaded.client.indices.update_aliases(actions=alias_swap_actions(loaded.alias, old, old))
    assert current_index(loaded) == report.new_index


def test_a_lock_a_stopped_run_left_is_named_with_what_to_delete(loaded, stamp):
    """Two runs started together both passed the look at the old index's write block, and the
    second, stopped, lifted the block the first relied on (an audit: an acknowledged write lost).
    A run now first creates the alias's lock index; one left by a killed run is named, with the
    leftovers by name (the hint's wildcard <alias>-* matched the types index too)."""
    alias = loaded.alias
    old = current_index(loaded)
    # an earlier copy a finished run kept (numbered before the alias's index) is no leftover (an audit)
    for name in (f"{alias}-000000", f"{alias}-000007", f"{alias}-types", f"{alias}-reindexing"):
        loaded.client.indices.create(index=name)
    with pytest.raises(StoreError) as caught:
        reindex(loaded, RiverFirst(), stamp)
    message = str(caught.value)
    assert f"is running ('{alias}-reindexing' exists)" in message and f"delete '{alias}-reindexing'" in message
    assert message.endswith(f"delete what it left: {alias}-000007") and "-*" not in message, message
    assert not write_blocked(loaded, old) and current_index(loaded) == old
    assert loaded.client.indices.exists(index=f"{alias}-reindexing")  # another run's: left alone
    loaded.client.indices.delete(index=f"{alias}-reindexing")
    assert reindex(loaded, RiverFirst(), stamp, batch_size=3).swapped  # and the lock is its own, then gone
    assert not loaded.client.indices.exists(index=f"{alias}-reindexing")


def test_a_run_whose_alias_moved_before_it_held_the_lock_stops_and_says_so(loaded, stamp, monkeypatch):
    """An audit: a run that read the alias, then waited while another run swapped it, took the
    index the alias had left (blocked by then) for one a killed run had blocked, and named the
    alias's new, live index among the indices to delete. It now looks again once it holds the lock."""
    from indexer.stores.elasticsearch import reindex as reindex_module

    alias, old = loaded.alias, current_index(loaded)
    moved = f"{alias}-000008"
    loaded.client.indices.create(index=moved)
    real_lock = reindex_module._lock

    def lock_after_another_run(store, index):
        loaded.client.indices.update_aliases(actions=[{"remove": {"index": old, "alias": alias}},
                                                      {"add": {"index": moved, "alias": alias}}])
        return real_lock(store, index)

    monkeypatch.setattr(reindex_module, "_lock", lock_after_another_run)
    with pytest.raises(StoreError, match=f"moved from '{old}' to '{moved}'") as caught:
        reindex(loaded, RiverFirst(), stamp)
    assert "delete" not in str(caught.value)
    assert not loaded.client.indices.exists(index=f"{alias}-reindexing") and not write_blocked(loaded, old)
    loaded.client.indices.update_aliases(actions=[{"remove": {"index": moved, "alias": alias}},
                                                  {"add": {"index": old, "alias": alias}}])


def test_a_writer_checks_its_model_again_when_the_alias_moved(loaded, stamp):
    """An indexing run that began before 'es reindex' moved the alias wrote the rest of its
    passages into the new index with the old index's facts: another model's spans past the guard
    (audit3-es). Each write now checks where the alias points."""
    writer = open_elasticsearch(resolve(es_index=loaded.alias))
    try:
        writer.check_model(stamp)
        assert [o.ok for o in writer.write([corpus()[0]])] == [True]
        same = reindex(loaded, RiverFirst(), stamp, batch_size=3)  # the same model: writing goes on, into the new index
        late = dataclasses.replace(corpus()[0], passage=Passage("late-1", "Late passage.", {}))
        assert [o.ok for o in writer.write([late])] == [True]
        loaded.flush()
        assert loaded.existing_ids(["late-1"]) == {"late-1"} and current_index(loaded) == same.new_index
        other_model = RiverFirst()
        other_model.by_id["late-1"] = late
        reindex(loaded, other_model, ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3)
        with pytest.raises(ModelMismatchError):
            writer.write([dataclasses.replace(late, passage=Passage("late-2", "Later.", {}))])
        assert loaded.existing_ids(["late-2"]) == set()
    finally:
        writer.close()


def test_a_search_after_the_alias_moved_to_another_model_is_refused(loaded, stamp, monkeypatch):
    """A long-lived handle (the web service) read the model once; after ``es reindex`` moved the
    alias to another model's index it kept searching that index with its own query vectors
    (found by an audit). The next search now checks the model again and refuses."""
    from indexer.api import NerIndex

    class Encoder:  # what NerIndex.search needs: the model and a type vector
        info = type("Info", (), {"stamp": stamp, "passage_weight": 0.0, "threshold_for": staticmethod(lambda phrase: 0.5),
                                 "passage_weight_for": staticmethod(lambda phrase: 0.0), "id": stamp.id,
                                 "version": stamp.version, "checksum": stamp.checksum})()

        def embed_types(self, phrases):
            return np.stack([DINO for _ in phrases])

    ix = NerIndex(Encoder(), loaded)
    assert [h.id for h in ix.search("dinosaur")] == ["p1", "p2", "p3"]
    ix.check_usable()
    mover = open_elasticsearch(resolve(es_index=loaded.alias))
    try:
        reindex(mover, RiverFirst(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3)
    finally:
        mover.close()
    monkeypatch.setattr("indexer.api.model_info", lambda encoder: {})
    # info() (the service's /api/v1/info) said the old model, "same_as_model", until a search (an audit)
    assert ix.info()["store"]["model"] == {"id": "test-model", "version": "2", "checksum": "e" * 64, "same_as_model": False,
                                           "labels": None}
    with pytest.raises(ModelMismatchError):
        ix.check_usable()  # the service's health (an audit: "ok" while every search was a 409)
    with pytest.raises(ModelMismatchError):
        ix.search("dinosaur")
    # the alias moved back to the index last checked: info() kept the other model's facts (an audit)
    first, second = sorted(loaded.versioned_indices())
    loaded.client.indices.update_aliases(actions=[{"remove": {"index": second, "alias": loaded.alias}},
                                                  {"add": {"index": first, "alias": loaded.alias}}])
    assert ix.info()["store"]["model"]["same_as_model"] is True
    assert [h.id for h in ix.search("dinosaur")] == ["p1", "p2", "p3"]
    # the index deleted under the handle: health and search said ok and "no hits" (an audit)
    loaded.client.indices.delete(index=first)
    with pytest.raises(StoreError, match="the passages this handle searched are gone"):
        ix.check_usable()
    with pytest.raises(StoreError, match="are gone"):
        ix.search("dinosaur")


def test_a_search_under_way_when_the_alias_moves_answers_from_the_index_it_checked(loaded, stamp):
    """The handle checked the model, then embedded the phrase, then searched through the alias: an
    'es reindex --model' that moved the alias in between answered with the other model's spans,
    a normal answer and no error (an audit saw it live). The search now goes to the index whose
    model was checked; the next search sees the move and refuses."""
    from indexer.api import NerIndex

    def move_alias() -> None:
        mover = open_elasticsearch(resolve(es_index=loaded.alias))
        try:
            reindex(mover, RiverFirst(), ModelStamp("test-model", "2", 8, "e" * 64), batch_size=3)
        finally:
            mover.close()

    class Encoder:  # the alias moves while the phrase is embedded, after the model check
        info = type("Info", (), {"stamp": stamp, "passage_weight": 0.0, "threshold_for": staticmethod(lambda phrase: 0.5),
                                 "passage_weight_for": staticmethod(lambda phrase: 0.0), "id": stamp.id,
                                 "version": stamp.version, "checksum": stamp.checksum})()
        moves = 1

        def embed_types(self, phrases):
            if self.moves:
                self.moves -= 1
                move_alias()
            return np.stack([DINO for _ in phrases])

    ix = NerIndex(Encoder(), loaded)
    checked = current_index(loaded)
    assert [h.id for h in ix.search("dinosaur")] == ["p1", "p2", "p3"]  # the index checked, not the other model's
    assert current_index(loaded) != checked
    with pytest.raises(ModelMismatchError):
        ix.search("dinosaur")


def test_health_fails_while_a_read_block_fails_every_search(loaded):
    """An audit: with ``index.blocks.read`` set, /api/v1/health said ok (it read the mapping and
    the stats, which the block allows) while every search was a 503."""
    from indexer.api import NerIndex

    ix = NerIndex(None, loaded)  # the store's checks come before the model's, which needs an encoder
    target = sorted(loaded.versioned_indices())[-1]
    loaded.client.indices.put_settings(index=target, settings={"index.blocks.read": True})
    try:
        with pytest.raises(StoreError, match="index read"):
            ix.check_usable()
    finally:
        loaded.client.indices.put_settings(index=target, settings={"index.blocks.read": None})
    loaded.check_readable()


def test_a_create_the_client_sent_again_is_this_runs_own(make_live_store, stamp, monkeypatch):
    """An audit: with a short --es-timeout the client re-sent the new index's create, and the run
    refused itself as "another 'nerindex es reindex' is running", leaving an empty index."""
    import uuid

    from indexer.stores.elasticsearch import reindex as reindex_module
    from indexer.stores.elasticsearch.index_requests import create_index_body

    store = make_live_store()
    new = f"{store.alias}-000042"
    body = create_index_body(stamp, index_options="flat")
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=1))
    try:
        reindex_module._claim(store, new, body, "test")
        reindex_module._claim(store, new, body, "test")  # the same run's create again: its own index
        monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=2))
        with pytest.raises(StoreError, match="another 'nerindex es reindex'"):
            reindex_module._claim(store, new, body, "test")  # another run's
    finally:
        store.client.indices.delete(index=new, ignore_unavailable=True)


def test_reindex_needs_an_alias(make_live_store, stamp):
    store = make_live_store()
    with pytest.raises(StoreError, match="does not exist"):
        reindex(store, RiverFirst(), stamp)
    store.client.indices.create(index=store.alias)
    with pytest.raises(StoreError, match="is an index, not an alias"):
        reindex(store, RiverFirst(), stamp)
    loaded = make_live_store()  # the index behind an alias, named: the advice is the alias (an audit)
    loaded.check_model(stamp)
    concrete = make_live_store(index=current_index(loaded))
    with pytest.raises(StoreError, match=f"is the index behind the alias '{loaded.alias}': .* use --es-index {loaded.alias}$"):
        reindex(concrete, RiverFirst(), stamp)


# --- the command line, against the embedded store ----------------------------------------------------


def run_cli(capsys, *args: str) -> str:
    from indexer.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return capsys.readouterr().out


CLI_TYPES = ("dinosaur", "political party", "river", "city", "musical instrument")


def cli_hits(capsys, backend: list[str], phrase: str) -> list[dict]:
    return [json.loads(line) for line in run_cli(capsys, "search", phrase, "--json", *backend).splitlines()]


def test_cli_index_and_search_match_the_embedded_store(tmp_path, capsys, make_live_store):
    """nerindex index/search --es-url on examples/corpus.jsonl: the passages, marked spans and
    scores of the embedded store (exact); re-indexed with 'nerindex es reindex', the same again."""
    store = make_live_store()  # only to delete its indices afterwards
    es = ["--es-url", ES_URL, "--es-index", store.alias]
    embedded = ["--store", str(tmp_path / "store")]
    corpus_file = str(ROOT / "examples" / "corpus.jsonl")
    for backend in (embedded, es):
        summary = json.loads(run_cli(capsys, "index", corpus_file, "--id-field", "id", "--json", *backend))
        assert summary["created"] == 40 and summary["failed"] == 0
    tolerance = score_tolerance(store)

    def same_results():
        for phrase in CLI_TYPES:
            want, got = cli_hits(capsys, embedded, phrase), cli_hits(capsys, es, phrase)
            assert want, phrase
            assert [h["id"] for h in got] == [h["id"] for h in want], phrase
            for w, g in zip(want, got):
                assert [(s["start"], s["end"], s["text"], s["labels"]) for s in g["spans"]] == \
                    [(s["start"], s["end"], s["text"], s["labels"]) for s in w["spans"]], (phrase, w["id"])
                assert g["score"] == pytest.approx(w["score"], abs=tolerance)
                assert [s["similarity"] for s in g["spans"]] == pytest.approx([s["similarity"] for s in w["spans"]], abs=tolerance)
                by_w, by_g = w["ranked_by"], g["ranked_by"]  # the candidate that ranked it, if one did
                assert (by_g is None) == (by_w is None), (phrase, w["id"])
                if by_w is not None:
                    assert [by_g[k] for k in ("start", "end", "text", "labels")] == \
                        [by_w[k] for k in ("start", "end", "text", "labels")], (phrase, w["id"])
                    assert by_g["similarity"] == pytest.approx(by_w["similarity"], abs=tolerance)

    same_results()
    assert any(h["ranked_by"] for h in cli_hits(capsys, es, "musical instrument"))  # the cello
    from indexer.cli import main

    main(["search", "dinosaur", *es])  # returns on success
    hint = capsys.readouterr().err  # --all is offered only where the server can run it
    assert ("--all, which shows every passage with a marked mention, cannot run on this store: it needs the "
            "lang-painless module" in hint) == (not store.has_module("lang-painless")), hint
    report = json.loads(run_cli(capsys, "es", "reindex", "--json", "--delete-old", *es))
    assert (report["old_index"], report["new_index"]) == (f"{store.alias}-000001", f"{store.alias}-000002")
    assert report["passages"] == 40 and report["failed"] == 0 and report["swapped"] and report["deleted_old"]
    same_results()
    status = json.loads(run_cli(capsys, "es", "status", "--json", *es))
    assert status["index"] == f"{store.alias}-000002" and status["passages"] == 40
    assert status["write_blocked"] is False and status["other_indices"] == [] and status["reindex_lock"] is None
    assert status["health"] in ("green", "yellow")
    assert status["server"] == ".".join(map(str, store.server_version()))
    # an alias lost (a snapshot restored without aliases): "no index yet" sent the user to encode all again
    store.client.indices.delete_alias(index=f"{store.alias}-000002", name=store.alias)
    status = json.loads(run_cli(capsys, "es", "status", "--json", *es))
    assert status["index"] is None and status["other_indices"] == [f"{store.alias}-000002"]
    text = run_cli(capsys, "es", "status", *es)
    assert f"no alias, but indices made for it exist: {store.alias}-000002" in text and "POST _aliases" in text


def test_cli_index_makes_the_index_options_asked_for_and_refuses_others_later(capsys, make_live_store):
    """nerindex index --es-index-options int8_flat makes an exact index; asked of an index with
    other options it is refused before anything is written (they cannot change in place)."""
    from indexer.cli import main

    store = make_live_store()  # only to delete its indices afterwards
    es = ["--es-url", ES_URL, "--es-index", store.alias]
    corpus_file = str(ROOT / "examples" / "corpus.jsonl")
    run_cli(capsys, "index", corpus_file, "--id-field", "id", "--es-index-options", "int8_flat", *es)
    index, mapping = store.target()
    assert index_requests.span_vector_index_type(mapping) == "int8_flat"
    run_cli(capsys, "index", corpus_file, "--id-field", "id", "--es-index-options", "int8_flat", *es)  # the same: fine
    before = store.counts()
    with pytest.raises(SystemExit) as exc:
        main(["index", corpus_file, "--id-field", "id", "--reindex-existing", "--es-index-options", "int8_hnsw", *es])
    err = capsys.readouterr().err
    assert exc.value.code != 0 and f"{index!r} already exists with spans.vector index_options int8_flat" in err, err
    assert store.counts() == before and store.target()[0] == index


def test_cli_reindex_keeps_an_own_catalog_only_when_given_and_says_so(tmp_path, capsys, make_live_store):
    """'es reindex' replaced an index's --catalog labels with the model's, silently (audit3-es):
    it now takes --catalog, and says when the labels' catalog changes."""
    store = make_live_store()
    es = ["--es-url", ES_URL, "--es-index", store.alias]
    catalog = tmp_path / "types.txt"
    catalog.write_text("dinosaur\nriver\npolitician\n", encoding="utf-8")
    corpus_file = str(ROOT / "examples" / "corpus.jsonl")
    run_cli(capsys, "index", corpus_file, "--id-field", "id", "--catalog", str(catalog), *es)
    own = store.model().catalog
    assert own.startswith("sha256:")
    run_cli(capsys, "es", "reindex", "--catalog", str(catalog), *es)
    assert "note:" not in capsys.readouterr().err
    store.forget_index()
    assert store.model().catalog == own
    from indexer.cli import main

    main(["es", "reindex", *es])  # nothing fails (no SystemExit): the note is on stderr
    assert "the new index's come from the model catalog" in capsys.readouterr().err
    store.forget_index()
    assert store.model().catalog == "model"


@pytest.mark.skipif(not os.environ.get("NERINDEX_KIBANA_URL"), reason="NERINDEX_KIBANA_URL is not set")
def test_kibana_import(make_live_store):
    from indexer.stores.elasticsearch.kibana import import_saved_objects

    settings = from_env()
    store = make_live_store()
    report = import_saved_objects(
        settings.kibana_url, alias=store.alias, api_key=settings.es_api_key,
        basic_auth=settings.basic_auth(),
        ca_certs=settings.es_ca_certs,
    )
    assert report.success and report.success_count == 4


def test_reindex_with_a_model_that_embeds_queries_otherwise_refills_the_types_index(tmp_path, capsys, make_live_store):
    """A model folder whose only change is its query template is the same model to the passages,
    so 'es reindex --model' accepted it, and the types index kept the old template's vectors while
    the reindex and 'es status' said types_stale false (an audit: cosine 0.816 to what a search
    embeds). The reindex now stores the catalog again where what it holds is not what a search uses."""
    import shutil

    from indexer.assets import default_model_dir
    from indexer.encoder import OnnxEncoder
    from indexer.stores.elasticsearch.type_index import TypeIndex

    store = make_live_store()  # only to delete its indices afterwards
    es = ["--es-url", ES_URL, "--es-index", store.alias]
    run_cli(capsys, "index", str(ROOT / "examples" / "corpus.jsonl"), "--id-field", "id", "--json", *es)
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    card = json.loads((folder / "model.json").read_text())
    card["unseen_type_template"] = "a kind of {}"
    (folder / "model.json").write_text(json.dumps(card, indent=2))
    before = TypeIndex(store).vector("political party")
    report = json.loads(run_cli(capsys, "es", "reindex", "--model", str(folder), "--json", *es))
    assert report["failed"] == 0 and report["types_stale"] is False
    after = TypeIndex(store).vector("political party")
    wanted = OnnxEncoder.from_dir(folder, device="cpu").embed_types(["political party"])[0]
    assert float(np.dot(before, wanted)) < 0.99  # the template matters to this phrase
    assert float(np.dot(after, wanted)) == pytest.approx(1.0, abs=1e-3)


def test_a_passage_another_process_deleted_meanwhile_is_not_counted_as_deleted(loaded, monkeypatch):
    """delete() looks the ids up, then sends the deletes: one removed by another process in between
    answered 404 and was counted as this call's (a review)."""
    from indexer.stores.elasticsearch import by_id

    real = by_id.recheck_target

    def racing(store, checked):
        index = real(store, checked)
        store.client.delete(index=index, id=index_requests.document_id("p1"), refresh=True)  # the other process
        return index

    monkeypatch.setattr(by_id, "recheck_target", racing)
    assert loaded.delete(["p1", "p2"]) == ["p2"]
    assert loaded.existing_ids(["p1", "p2", "p3"]) == {"p3"}
