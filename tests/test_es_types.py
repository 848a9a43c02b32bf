"""The types index against a live server: made by ``nerindex index``, extended by ``nerindex es
add-types``, and searched with a stored type vector the way a Kibana user does it.

Skipped, with the reason shown, unless ``NERINDEX_ES_URL`` is set (see tests/test_es_live.py);
``.ci/elasticsearch start`` runs a node on 127.0.0.1. Each test uses its own alias and deletes it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

pytest.importorskip("elasticsearch")

from click.testing import CliRunner  # noqa: E402
from elasticsearch import BadRequestError  # noqa: E402

from indexer.cli import cli  # noqa: E402
from indexer.config import resolve  # noqa: E402
from indexer.encoder import OnnxEncoder  # noqa: E402
from indexer.errors import ModelMismatchError  # noqa: E402
from indexer.stores.base import ModelStamp, SearchRequest  # noqa: E402
from indexer.stores.factory import open_elasticsearch  # noqa: E402
from indexer.stores.elasticsearch import responses as rs  # noqa: E402
from indexer.stores.elasticsearch.type_index import LOOKUP_SERVER, TypeIndex, lookup_knn_body  # noqa: E402

ES_URL = os.environ.get("NERINDEX_ES_URL", "").strip()
CORPUS = Path(__file__).resolve().parents[1] / "examples" / "corpus.jsonl"

pytestmark = [
    pytest.mark.elasticsearch,
    pytest.mark.skipif(
        not ES_URL,
        reason="NERINDEX_ES_URL is not set: live Elasticsearch tests skipped "
        "(.ci/elasticsearch start, or docker compose -f docker/compose.yml up -d, then set NERINDEX_ES_URL)",
    ),
]


@pytest.fixture(scope="module")
def encoder():
    return OnnxEncoder.from_dir(None)


@pytest.fixture(scope="module")
def indexed(encoder):
    """The example corpus indexed into a fresh alias by the CLI, as a user would."""
    alias = f"nerindex-test-{uuid.uuid4().hex[:12]}"
    result = CliRunner().invoke(cli, ["index", str(CORPUS), "--es-index", alias, "--id-field", "id", "--json"])
    assert result.exit_code == 0, result.output
    store = open_elasticsearch(resolve(es_index=alias))
    yield store
    client = store.client.options(ignore_status=[400, 404])
    for name in list(client.indices.get(index=f"{alias}-*", expand_wildcards="all").body):
        client.indices.delete(index=name)
    store.close()


def dev_tools_get(store, phrase: str) -> dict:
    """``GET <alias>-types/_doc/<phrase>`` as docs/elasticsearch.md has it (9.2+ must ask for vectors)."""
    path = f"/{store.alias}-types/_doc/{quote(phrase)}"
    if store.server_version() >= (9, 2, 0):
        path += "?_source_exclude_vectors=false"
    return store.client.perform_request("GET", path, headers={"accept": "application/json"}).body["_source"]


def cli_json(*args: str) -> dict:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_first_index_stores_the_catalog_by_phrase(indexed, encoder):
    types = TypeIndex(indexed)
    assert types.name == f"{indexed.alias}-types" and types.model() == encoder.info.stamp
    assert types.count() == len(encoder.catalog.phrases) == 486
    doc = dev_tools_get(indexed, "politician")
    assert doc["phrase"] == "politician" and doc["origin"] == "catalog"
    # the vector 'nerindex search politician' queries with, not catalog.npy's (embedded 64 at a time)
    np.testing.assert_allclose(doc["vector"], encoder.embed_types(["politician"])[0], atol=1e-6)
    # the alias (the Kibana data view) still covers the passages only
    assert list(indexed.client.indices.get_alias(name=indexed.alias).body) == [f"{indexed.alias}-000001"]
    assert cli_json("es", "status", "--es-index", indexed.alias)["types"] == 486


def test_add_types_stores_the_embedded_phrase_under_its_normalised_id(indexed, encoder):
    report = cli_json("es", "add-types", "Sea  Creature", "dinosaur", "--es-index", indexed.alias)
    assert report["phrases"] == ["sea creature", "dinosaur"] and report["stored"] == 2 and not report["failed"]
    assert report["total"] == 487  # "dinosaur" was a catalog phrase: overwritten, not added
    stored = TypeIndex(indexed).vector("sea creature")
    # as 'nerindex embed "sea creature"' prints it, and a search for the phrase uses it
    np.testing.assert_allclose(stored, encoder.embed_types(["sea creature", "dinosaur"])[0], atol=1e-6)
    np.testing.assert_allclose(stored, encoder.embed_types(["sea creature"])[0], atol=1e-6)
    assert dev_tools_get(indexed, "dinosaur")["origin"] == "added"


def test_a_stored_type_vector_searches_like_the_phrase(indexed, encoder):
    """The two-step recipe (every version): read the vector by id, then the span kNN with it."""
    cli_json("es", "add-types", "dinosaur", "--es-index", indexed.alias)
    by_id = TypeIndex(indexed).vector("Dinosaur")
    np.testing.assert_allclose(by_id, encoder.embed_types(["dinosaur"])[0], atol=1e-6)  # the query's own vector
    threshold = encoder.info.similarity_threshold
    stored_hits = list(indexed.search(SearchRequest(by_id, threshold, limit=10)))
    assert {"dino-1", "dino-2", "dino-3"} <= {h.id for h in stored_hits}
    # What Dev Tools shows: GET <alias>-types/_doc/dinosaur, _source.vector pasted as query_vector.
    pasted = dev_tools_get(indexed, "dinosaur")["vector"]
    body = {"size": 10, "_source": ["id", "text", "fields"], "knn": {
        "field": "spans.vector", "query_vector": pasted, "k": 10, "num_candidates": 100, "similarity": threshold,
        "rescore_vector": {"oversample": 1.0}}}  # as the docs' request: exact cosines at the threshold (8.18+)
    response = indexed.client.search(index=indexed.alias, body=body).body
    assert [h["_source"]["id"] for h in response["hits"]["hits"]] == [h.id for h in stored_hits]


def test_one_step_lookup_where_the_server_has_it(indexed, encoder):
    """query_vector_builder.lookup (9.4+) gives the same hits; older servers refuse the builder."""
    threshold = encoder.info.similarity_threshold
    body = lookup_knn_body("dinosaur", types_index=f"{indexed.alias}-types", min_similarity=threshold, limit=10)
    if indexed.server_version() >= LOOKUP_SERVER:
        response = indexed.client.search(index=indexed.alias, body=body).body
        hits = rs.rank(rs.parse_hits(response, scoring="knn", metric="cosine", min_similarity=threshold))
        expected = indexed.search(SearchRequest(TypeIndex(indexed).vector("dinosaur"), threshold, limit=10))
        assert [h.id for h in hits] == [h.id for h in expected]
    else:
        with pytest.raises(BadRequestError, match="query_vector_builder"):
            indexed.client.search(index=indexed.alias, body=body)


def test_another_model_is_refused(indexed, encoder):
    other = ModelStamp("other-model", "9", encoder.info.dims, "f" * 64)
    with pytest.raises(ModelMismatchError, match="add-types --replace --catalog"):
        TypeIndex(indexed).check_model(other)


def test_every_phrase_added_by_hand_is_listed_page_after_page(indexed, encoder):
    """An audit: one page of 10,000 listed the added phrases, and 'add-types --replace', which
    embeds them again into a fresh index, deleted the rest without a word."""
    types, stamp = TypeIndex(indexed), encoder.info.stamp
    added = [f"made up type {i}" for i in range(5)]
    types.add(added, encoder.embed_types(added), stamp)
    try:
        listed = types.added_phrases(page=2)  # three pages
        assert set(added) <= set(listed) and len(listed) == len(set(listed)) and listed == sorted(listed)
    finally:
        for phrase in added:
            indexed.client.delete(index=types.name, id=phrase, refresh=True)


def test_a_types_index_that_does_not_hold_what_a_search_uses_is_filled_again(indexed, encoder):
    """A fill killed half-way stayed half-filled, silently, and after a change of the query
    templates every stored vector, the phrases added by hand too, stayed the old one (audits).
    The index records what its vectors were made with (the catalog and the query templates)."""
    from indexer.catalog import Catalog
    from indexer.stores.elasticsearch.type_index import CATALOG_FINGERPRINT, catalog_fingerprint

    types, stamp = TypeIndex(indexed), encoder.info.stamp
    catalog, queries = encoder.query_catalog(), encoder.info.query_identity()
    ensure = lambda cat, q: indexed.ensure_type_index(cat, stamp, queries=q, embed=encoder.embed_types)  # noqa: E731
    assert types.meta()[CATALOG_FINGERPRINT] == catalog_fingerprint(catalog, queries)
    assert ensure(catalog, queries) is None  # nothing to do
    # as a fill killed after 200 phrases leaves it: a fresh index, part of the catalog, no fingerprint
    types.delete()
    types.check_model(stamp)
    types.add(catalog.phrases[:200], catalog.vectors[:200], stamp)
    outcomes = ensure(catalog, queries)
    assert outcomes is not None and len(outcomes) == 486 and types.count() == 486
    # another way of embedding queries (here: vectors rolled, as a template change would move them):
    # the catalog and a phrase added by hand are stored again
    types.add(["sea creature"], np.roll(encoder.embed_types(["sea creature"]), 1, axis=1), stamp)
    moved = Catalog(catalog.phrases, np.roll(catalog.vectors, 1, axis=1))
    assert ensure(moved, "other templates") is not None
    np.testing.assert_allclose(types.vector("politician"), moved.vectors[catalog.phrases.index("politician")], atol=1e-6)
    np.testing.assert_allclose(types.vector("sea creature"), encoder.embed_types(["sea creature"])[0], atol=1e-6)
    assert ensure(moved, "other templates") is None
    ensure(catalog, queries)  # as the module's other tests expect it
