"""The types index without a server: ids, bodies (golden files, the client's DSL), the lookup form,
``nerindex index`` storing the catalog once, and ``nerindex es add-types`` through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("elasticsearch")

from elasticsearch.dsl import Mapping  # noqa: E402
from test_es_requests import QUERY, STAMP, check_golden  # noqa: E402

from indexer.api import NerIndex  # noqa: E402
from indexer.catalog import Catalog  # noqa: E402
from indexer.cli import cli  # noqa: E402
from indexer.errors import ModelMismatchError, StoreError  # noqa: E402
from indexer.records import Passage  # noqa: E402
from indexer.cli import elasticsearch as es_cli  # noqa: E402
from indexer.stores.base import WriteOutcome  # noqa: E402
from indexer.stores.filter_rules import Filters  # noqa: E402
from indexer.stores.elasticsearch import index_requests, search_requests  # noqa: E402
from indexer.stores.elasticsearch import templates  # noqa: E402
from indexer.stores.elasticsearch import type_index as ti  # noqa: E402


@pytest.mark.parametrize(
    "phrase, normalised",
    [("political party", "political party"), ("  Political \t Party ", "political party"),
     ("Café", "café"), ("Cafe\u0301", "café")],
)
def test_phrases_normalise_to_their_id(phrase, normalised):
    assert ti.normalise_phrase(phrase) == normalised


@pytest.mark.parametrize("phrase", ["ΟΔΟΣ", "οδος", "sea\x1fcreature", "x\u200by", "a\u2028b", "a\xa0b", "İstanbul",
                                    "Political  Party", "x\ue000y", "a\x85b"])
def test_a_phrase_and_its_id_are_the_same_tokens(phrase):
    """An audit: the id of "ΟΔΟΣ" was "οδος" (str.lower's final sigma), which the shipped tokenizer
    reads as other tokens, so 'es add-types' stored another vector than 'nerindex embed' printed
    (cosine 0.87); "sea\x1fcreature" became "sea creature" where the tokenizer drops the control."""
    from tokenizers import Tokenizer

    from indexer.assets import default_model_dir

    tokenizer = Tokenizer.from_file(str(default_model_dir() / "tokenizer.json"))
    assert tokenizer.encode(ti.normalise_phrase(phrase)).tokens == tokenizer.encode(phrase).tokens


@pytest.mark.parametrize("phrase, problem", [("  ", "empty"), ("x" * 513, "512 bytes")])
def test_phrases_that_cannot_be_ids(phrase, problem):
    with pytest.raises(StoreError, match=problem):
        ti.normalise_phrase(phrase)


def test_unique_phrases_keep_the_first_vector_of_each():
    assert ti.unique_phrases(["Dinosaur", "dinosaur ", "city"], [1, 2, 3]) == [("dinosaur", 1), ("city", 3)]
    assert ti.unique_phrases(["a", "A"]) == [("a", None)]


def test_types_index_body_golden_and_valid_for_the_dsl():
    body = ti.types_index_body(STAMP)
    check_golden("types_index", body)
    mapping = Mapping()
    mapping._update_from_dict(body["mappings"])
    assert mapping.to_dict() == body["mappings"]
    assert templates.placeholders(body) == set()
    assert body["mappings"]["_meta"] == index_requests.index_meta(STAMP)
    assert body["mappings"]["properties"]["vector"]["dims"] == STAMP.dims
    assert ti.types_index_name("corpus") == "corpus-types"


def test_type_document_has_only_mapped_fields():
    source = ti.type_document("  Dinosaur", QUERY, STAMP, ti.ADDED)
    assert set(source) == set(ti.types_index_body(STAMP)["mappings"]["properties"])
    assert source["phrase"] == "dinosaur" and source["vector"] == index_requests.vector_values(QUERY)
    (action,) = ti.type_actions("corpus-types", [("dinosaur", QUERY)], STAMP, ti.CATALOG)
    assert action["_id"] == "dinosaur" and action["_index"] == "corpus-types"
    assert action["_source"]["origin"] == "catalog"


def test_lookup_knn_body_is_the_span_knn_without_a_vector():
    options = dict(min_similarity=0.5, limit=10, filters=Filters.of({"source": "wiki"}))
    body = ti.lookup_knn_body("Political Party", types_index="corpus-types", **options)
    check_golden("knn_search_lookup", body)
    builder = {"lookup": {"index": "corpus-types", "id": "political party", "path": "vector"}}
    looked_up = []  # every kNN clause (the ranking one and the marks') reads the vector by phrase

    def with_the_vector(node):
        if isinstance(node, dict):
            if "query_vector_builder" in node:
                looked_up.append(node["query_vector_builder"])
                node = {**{k: v for k, v in node.items() if k != "query_vector_builder"},
                        "query_vector": index_requests.vector_values(QUERY)}
            return {k: with_the_vector(v) for k, v in node.items()}
        return [with_the_vector(v) for v in node] if isinstance(node, list) else node

    assert with_the_vector(body) == search_requests.knn_search_body(QUERY, **options)
    assert looked_up == [builder, builder] and "query_vector\"" not in json.dumps(body)


def test_a_vector_outside_knn_cannot_be_looked_up():
    script = {"script_score": {"script": {"params": {"query_vector": [1.0]}}}}
    with pytest.raises(StoreError, match="outside kNN"):
        ti.with_vector_lookup(script, ti.vector_lookup("x", types_index="t"))


def test_type_vector_read_back_from_doc_values():
    assert ti.type_vector_body(" Dinosaur") == {
        "size": 1, "query": {"ids": {"values": ["dinosaur"]}}, "_source": False, "docvalue_fields": ["vector"],
    }
    response = {"hits": {"hits": [{"_id": "dinosaur", "fields": {"vector": [[0.5, 0.5, 0.5, 0.5]]}}]}}
    assert ti.type_vector_from(response).tolist() == [0.5, 0.5, 0.5, 0.5]
    assert ti.type_vector_from({"hits": {"hits": []}}) is None


# --- nerindex index stores the catalog once ------------------------------------------------------


class FakeEncoder:
    def __init__(self, stamp, catalog):
        self.info = type("Info", (), {"stamp": stamp, "query_identity": lambda self: "templates"})()
        self.catalog = catalog

    def query_catalog(self):  # the catalog's phrases as a search embeds them: here, doubled vectors
        return Catalog(self.catalog.phrases, self.catalog.vectors * 2)

    def embed_types(self, phrases):
        return np.ones((len(phrases), 8), dtype=np.float32)

    def encode(self, passages, *, batch_size=32, progress=None, windows=None):
        from store_conformance import corpus

        return corpus()[: len(passages)]


class TypeKeepingStore:
    """A store with the optional ``ensure_type_index`` hook; everything else succeeds."""

    def __init__(self, fail=False):
        self.calls, self.fail = [], fail

    def check_model(self, stamp):
        pass

    def existing_ids(self, ids):
        return set()

    def stored_texts(self, ids):
        return {}

    def stored_records(self, ids):
        return {}

    def write(self, docs, *, replace=True):
        return [WriteOutcome(d.passage.id, True, "created") for d in docs]

    def prepare(self):
        pass

    def ensure_type_index(self, catalog, stamp, *, queries, embed):
        self.calls.append((catalog, stamp, queries))
        if self.fail == "partly":
            return [WriteOutcome(catalog.phrases[0], False, "failed", "mapper_parsing_exception")]
        if self.fail:
            raise StoreError("not allowed to create index")


def test_indexing_hands_the_catalog_to_a_store_that_keeps_type_vectors(stamp, caplog):
    catalog = Catalog(("dinosaur",), np.ones((1, 8), dtype=np.float32))
    store = TypeKeepingStore()
    NerIndex(FakeEncoder(stamp, catalog), store).index([Passage("p1", "Tyrannosaurus")])
    ((handed, handed_stamp, queries),) = store.calls
    assert handed.phrases == catalog.phrases and handed_stamp == stamp and queries == "templates"
    np.testing.assert_array_equal(handed.vectors, catalog.vectors * 2)  # query vectors, not catalog.npy's
    failing = TypeKeepingStore(fail=True)
    report = NerIndex(FakeEncoder(stamp, catalog), failing).index([Passage("p1", "Tyrannosaurus")])
    assert report.created == 1 and "es add-types --catalog" in caplog.text  # a warning, not a failure
    caplog.clear()  # some phrases failed: said at warning level, with the first one (INFO only, before)
    report = NerIndex(FakeEncoder(stamp, catalog), TypeKeepingStore(fail="partly")).index([Passage("p1", "T")])
    assert report.created == 1
    assert "type vectors: 1 of 1 phrases not stored (first: 'dinosaur', mapper_parsing_exception)" in caplog.text
    assert all(r.levelname == "WARNING" for r in caplog.records if "type vectors" in r.getMessage())


# --- nerindex es add-types -------------------------------------------------------------------------


class StubTypes:
    """TypeIndex at the edge: records what it is asked to store."""

    made: list["StubTypes"] = []
    previously_added: tuple[str, ...] = ()

    def __init__(self, store):
        self.name, self.stored, self.deleted = f"{store.alias}-types", [], False
        StubTypes.made.append(self)

    def delete(self):
        self.deleted = True
        return True

    def added_phrases(self):
        return [] if self.deleted else list(self.previously_added)

    def check_model(self, stamp):
        return False

    def add(self, phrases, vectors, stamp, *, origin=ti.ADDED):
        self.stored += [(p, origin, np.asarray(v)) for p, v in zip(phrases, vectors)]
        return [WriteOutcome(p, True, "created") for p in phrases]

    def count(self):
        return 486 + len(self.stored)


@pytest.fixture
def stub_types(monkeypatch):
    from test_es_commands import StubStore

    StubTypes.made = []
    monkeypatch.setattr(es_cli, "open_elasticsearch", lambda settings, **extra: StubStore(settings))
    monkeypatch.setattr(ti, "TypeIndex", StubTypes)
    monkeypatch.setattr(ti, "fill_with_catalog", lambda types, catalog, stamp, **kw: types.add(
        catalog.phrases[:3], catalog.vectors[:3], stamp, origin=ti.CATALOG))
    return StubTypes.made


def test_add_types_embeds_each_phrase_like_embed(stub_types, monkeypatch):
    from indexer.encoder import OnnxEncoder

    encoder = OnnxEncoder.from_dir(None)
    monkeypatch.setattr(OnnxEncoder, "from_dir", classmethod(lambda cls, *a, **k: encoder))
    monkeypatch.setattr("test_es_commands.STAMP", encoder.info.stamp)  # the passage index's model
    result = CliRunner().invoke(cli, ["es", "add-types", "Political  Party", "dinosaur", "political party",
                                      "--catalog", "--replace", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (types,) = stub_types
    assert report["phrases"] == ["political party", "dinosaur"] and report["stored"] == 5
    assert types.deleted and report["replaced"] and report["index"] == "corpus-types"
    added = {p: v for p, origin, v in types.stored if origin == ti.ADDED}
    assert list(added) == ["political party", "dinosaur"]
    # first (a stopped run keeps them) and again after the catalog, whose fill would mark one it holds as its own
    origins = [origin for _, origin, _ in types.stored]
    assert origins[:2] == [ti.ADDED] * 2 and origins[-2:] == [ti.ADDED] * 2
    np.testing.assert_allclose(added["dinosaur"], encoder.embed_types(["dinosaur"])[0], atol=1e-6)
    assert [o for _, o, _ in types.stored].count(ti.CATALOG) == 3


def test_add_types_replace_embeds_the_phrases_added_by_hand_again(stub_types, monkeypatch):
    from indexer.encoder import OnnxEncoder

    encoder = OnnxEncoder.from_dir(None)
    monkeypatch.setattr(OnnxEncoder, "from_dir", classmethod(lambda cls, *a, **k: encoder))
    monkeypatch.setattr("test_es_commands.STAMP", encoder.info.stamp)
    monkeypatch.setattr(StubTypes, "previously_added", ("sea creature", "dinosaur"))
    result = CliRunner().invoke(cli, ["es", "add-types", "Dinosaur", "--catalog", "--replace", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (types,) = stub_types
    added = {p: v for p, origin, v in types.stored if origin == ti.ADDED}
    assert list(added) == ["dinosaur", "sea creature"] and report["kept"] == ["sea creature"]  # it was dropped
    # stored before the catalog: a run stopped during the catalog's fill lost them (an audit)
    assert [origin for _, origin, _ in types.stored][:2] == [ti.ADDED, ti.ADDED]
    np.testing.assert_allclose(added["sea creature"], encoder.embed_types(["sea creature"])[0], atol=1e-6)


def test_add_types_replace_deletes_nothing_when_it_cannot_store_again(stub_types, monkeypatch):
    from indexer.encoder import OnnxEncoder

    encoder = OnnxEncoder.from_dir(None)
    monkeypatch.setattr(OnnxEncoder, "from_dir", classmethod(lambda cls, *a, **k: encoder))
    monkeypatch.setattr("test_es_commands.STAMP", encoder.info.stamp)
    monkeypatch.setattr(StubTypes, "previously_added", ("sea creature",))
    monkeypatch.setattr(encoder, "catalog", None)  # a model without a catalog: --catalog cannot be done
    result = CliRunner().invoke(cli, ["es", "add-types", "--catalog", "--replace"])
    assert isinstance(result.exception, StoreError) and "has no catalog" in str(result.exception)
    assert not stub_types[0].deleted  # it was deleted first, and the phrases added by hand with it
    monkeypatch.setattr(encoder, "catalog", object())  # a catalog whose phrases cannot be embedded

    def broken():
        raise RuntimeError("embedding failed")

    monkeypatch.setattr(encoder, "query_catalog", broken)
    result = CliRunner().invoke(cli, ["es", "add-types", "--catalog", "--replace"])
    assert "embedding failed" in str(result.exception) and not stub_types[-1].deleted  # (a review: it embedded after)


def test_add_types_refuses_another_model_than_the_passages(stub_types):
    result = CliRunner().invoke(cli, ["es", "add-types", "dinosaur"])  # StubStore's model is not the shipped one
    assert isinstance(result.exception, ModelMismatchError) and "never mix" in str(result.exception)
    assert not stub_types or not stub_types[0].stored


def test_add_types_needs_something_to_add(stub_types):
    result = CliRunner().invoke(cli, ["es", "add-types"])
    assert result.exit_code == 2 and "--catalog" in result.output
