"""Baselines on tiny hand-made corpora: BM25 (bm25s), dense passage retrieval, span-vector scoring."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluation.baselines import bm25_rankings, dense_rankings, span_rankings

bm25s = pytest.importorskip("bm25s")


def test_bm25_ranks_term_matches_and_drops_non_matches():
    ids = ["a", "b", "c", "d"]
    texts = [
        "the senator spoke",
        "political parties met in Rome",  # stems: polit, parti
        "a cat sat",
        "the party party was political",  # more matches, longer
    ]
    out = bm25_rankings(ids, texts, [("q1", "political party"), ("q2", "dinosaur"), ("q3", "the")])
    assert [r.id for r in out["q1"]] and {r.id for r in out["q1"]} == {"b", "d"}
    assert out["q1"][0].score >= out["q1"][1].score > 0
    assert out["q2"] == []  # no term in the vocabulary
    assert out["q3"] == []  # stop word only


def test_dense_rankings_order_by_cosine():
    vecs = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    out = dense_rankings(["a", "b", "c"], vecs, [("q", np.array([0.0, 1.0]))])
    assert [r.id for r in out["q"]] == ["c", "b", "a"]
    assert [round(r.score, 3) for r in out["q"]] == [1.0, 0.8, 0.0]


def test_span_rankings_best_span_and_all_spans_returned():
    e = np.eye(3, dtype=np.float32)
    spans = [
        [(0, 4, e[0]), (5, 9, e[1])],  # p0: best span for q=e1 is (5,9), cos 1
        [],  # p1: no spans -> never retrieved
        [(0, 3, (e[1] + e[2]) / np.sqrt(2))],  # p2: cos .707
    ]
    out = span_rankings(["p0", "p1", "p2"], spans, [("q", e[1]), ("r", e[2])])
    q = out["q"]
    assert [r.id for r in q] == ["p0", "p2"]
    assert q[0].score == pytest.approx(1.0)
    assert [(s.start, s.end) for s in q[0].spans] == [(5, 9), (0, 4)]  # best first
    assert q[1].score == pytest.approx(0.7071, abs=1e-4)
    assert [r.id for r in out["r"]] == ["p2", "p0"]


def test_span_rankings_gate_and_mark_by_mentions_only():
    """The system's rule: a candidate ranks its passage but is never marked, and a passage ranked
    through candidates alone is in no answer set (its match is -inf)."""
    e = np.eye(2, dtype=np.float32)
    spans = [
        [(0, 4, e[0], True), (5, 9, e[1], False)],  # best span for q=e1 is the candidate
        [(0, 3, e[1], False)],  # candidates only
    ]
    out = span_rankings(["p0", "p1"], spans, [("q", e[1])])["q"]
    assert [(r.id, r.score) for r in out] == [("p0", pytest.approx(1.0)), ("p1", pytest.approx(1.0))]
    assert [(s.start, s.end) for s in out[0].spans] == [(0, 4)]
    assert out[0].gate == pytest.approx(0.0)
    assert out[1].spans == () and out[1].gate == float("-inf")


def test_span_rankings_without_any_span():
    assert span_rankings(["a"], [[]], [("q", np.ones(2))]) == {"q": []}
