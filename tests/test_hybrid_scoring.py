"""Hybrid scoring (best span similarity + λ · passage similarity) outside the store suite: the
model's λ, the API's validation, the embedded store's cache, and the evaluation's two rankings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexer.api import NerIndex
from indexer.errors import SearchError
from indexer.evaluation.metrics import Ranked, ScoredSpan, returned_at
from indexer.assets import default_model_dir
from indexer.model_folder import ModelInfo
from indexer.stores.embedded import EmbeddedStore

from store_conformance import DINO, hybrid_corpus


class _Encoder:
    """Just what NerIndex.request needs: the model card and a type vector."""

    def __init__(self, weight: float | None) -> None:
        self.info = ModelInfo(
            path=Path("."), id="m", version="1", dims=8, max_length=8, max_span_width=2,
            detection_threshold=0.5, similarity_threshold=0.5, label_threshold=0.5, labels_per_span=1,
            similarity="cosine", type_template="{}", graphs={}, files={},
            passage_weight=0.0 if weight is None else weight,
        )  # fmt: skip

    def embed_types(self, phrases):
        return np.stack([DINO for _ in phrases])


@pytest.fixture
def store(tmp_path):
    s = EmbeddedStore.open(tmp_path / "store")
    s.check_model(_Encoder(None).info.stamp)  # the model NerIndex checks the store against
    s.write(hybrid_corpus())
    yield s
    s.close()


def test_model_json_passage_weight(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    card = json.loads((default_model_dir() / "model.json").read_text())
    card.pop("passage_weight", None)
    (folder / "model.json").write_text(json.dumps(card))
    assert ModelInfo.load(folder, verify=False).passage_weight == 0.0
    card["passage_weight"] = 1.5
    (folder / "model.json").write_text(json.dumps(card))
    assert ModelInfo.load(folder, verify=False).passage_weight == 1.5


def test_api_uses_the_model_weight_unless_given(store):
    ix = NerIndex(_Encoder(0.5), store)
    assert [h.id for h in ix.search("dinosaur")] == ["h2", "h1"]
    assert [h.id for h in ix.search("dinosaur", passage_weight=0)] == ["h1", "h2"]
    assert [h.id for h in NerIndex(_Encoder(None), store).search("dinosaur")] == ["h1", "h2"]
    with pytest.raises(SearchError, match="passage weight"):
        ix.search("dinosaur", passage_weight=-0.5)


def test_cache_holds_passage_vectors_and_old_caches_are_rebuilt(store, tmp_path):
    ix = NerIndex(_Encoder(0.5), store)
    first = [(h.id, round(h.score, 4)) for h in ix.search("dinosaur")]
    cache = tmp_path / "store" / "cache"
    assert (cache / "passage_vectors.npy").is_file() and (cache / "passage_ids.npy").is_file()
    # a cache written before hybrid scoring (no passage files) is rebuilt, not misread
    (cache / "passage_vectors.npy").unlink()
    (cache / "passage_ids.npy").unlink()
    reopened = EmbeddedStore.open(tmp_path / "store")
    try:
        again = [(h.id, round(h.score, 4)) for h in NerIndex(_Encoder(0.5), reopened).search("dinosaur")]
    finally:
        reopened.close()
    assert again == first == [("h2", 1.3), ("h1", 0.9)]


def test_threshold_gates_on_the_span_not_the_hybrid_score():
    span = (ScoredSpan(0, 1, 0.4),)
    ranking = [Ranked("a", 1.2, span, match=0.4), Ranked("b", 0.6, (ScoredSpan(0, 1, 0.6),), match=0.6)]
    assert [r.id for r in returned_at(ranking, 0.5)] == ["b"]
    assert [r.id for r in returned_at(ranking, 0.3)] == ["a", "b"]
