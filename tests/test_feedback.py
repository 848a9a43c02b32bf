"""Query-time pseudo-relevance feedback: the Rocchio rule (pure) and the two-pass search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from indexer.errors import SearchError
from indexer.feedback import Feedback, feedback_vector, search_with_feedback
from indexer.stores.base import SearchRequest
from indexer.stores.filter_rules import Filters


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_rocchio_adds_the_weighted_mean_of_unit_feedback_vectors():
    q = unit([1, 0, 0])
    rows = np.array([[0, 2, 0], [0, 0, 3]], dtype=np.float32)  # lengths do not matter
    got = feedback_vector(q, rows, 0.5)
    want = unit(q + 0.5 * np.array([0, 0.5, 0.5]))
    assert got == pytest.approx(want, abs=1e-6)
    assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-6)
    assert got.dtype == np.float32


def test_weight_zero_or_no_feedback_leaves_the_query():
    q = np.array([3.0, 4.0, 0.0])
    assert feedback_vector(q, np.ones((2, 3)), 0.0) == pytest.approx([0.6, 0.8, 0.0])
    assert feedback_vector(q, np.zeros((0, 3)), 1.0) == pytest.approx([0.6, 0.8, 0.0])
    assert feedback_vector(q, [], 1.0) == pytest.approx([0.6, 0.8, 0.0])
    # a zero row (no vector) is ignored rather than pulling the mean towards 0
    assert feedback_vector(q, [[0, 0, 0], [0, 0, 1]], 1.0) == pytest.approx(unit([0.6, 0.8, 1.0]), abs=1e-6)


def test_a_large_weight_tends_to_the_feedback_centroid():
    got = feedback_vector(unit([1, 0]), [[0, 1]], 1000.0)
    assert got == pytest.approx([0.001, 1.0], abs=1e-5)


@pytest.mark.parametrize("weight, top", [(-0.1, 10), (10.5, 10), (0.5, 0), (0.5, 1001)])
def test_feedback_settings_are_checked(weight, top):
    with pytest.raises(SearchError):
        Feedback(weight, top)


@dataclass
class _Hit:
    id: str


class RecordingStore:
    """Answers every search with the same ids and records the requests."""

    def __init__(self, ids, vectors):
        self.ids, self.vectors, self.requests, self.asked = ids, vectors, [], []

    def search(self, request):
        self.requests.append(request)
        return iter([_Hit(i) for i in self.ids[: None if request.exhaustive else request.limit]])

    def passage_vectors(self, ids):
        self.asked.append(list(ids))
        return np.stack([self.vectors[i] for i in ids])


def test_search_with_feedback_searches_twice_with_the_moved_query():
    store = RecordingStore(["a", "b", "c"], {"a": unit([0, 1, 0]), "b": unit([0, 0, 1])})
    request = SearchRequest(vector=unit([1, 0, 0]), min_similarity=0.2, filters=Filters.of({"lang": "en"}),
                            text="rex", limit=50, exhaustive=True, passage_weight=1.0)
    hits = list(search_with_feedback(store, request, Feedback(weight=1.0, top=2)))
    assert [h.id for h in hits] == ["a", "b", "c"]
    first, second = store.requests
    assert (first.limit, first.exhaustive) == (2, False)  # the first pass only needs the top
    assert store.asked == [["a", "b"]]
    # the second pass is the request itself with the moved vector
    assert (second.limit, second.exhaustive, second.filters, second.text, second.min_similarity,
            second.passage_weight) == (50, True, Filters.of({"lang": "en"}), "rex", 0.2, 1.0)
    assert second.vector == pytest.approx(unit([1, 0.5, 0.5]), abs=1e-6)


def test_search_with_feedback_and_no_first_hits_searches_once_more_unchanged():
    store = RecordingStore([], {})
    request = SearchRequest(vector=unit([1, 0]), min_similarity=0.9)
    assert list(search_with_feedback(store, request, Feedback())) == []
    assert store.asked == [] and store.requests[-1] is request
