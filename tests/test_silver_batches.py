"""Mined hard negatives and clustered batches of silver training (pure tensor code, no WordNet)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from indexer.training.silver_train import BatchSampler, SilverSpans, kmeans, mined_negatives  # noqa: E402


def test_mined_negatives_keep_the_rank_window_and_drop_the_top():
    logits = torch.tensor([[0.9, 0.1, 0.8, 0.3, 0.7, 0.2]])
    cand = torch.ones_like(logits, dtype=torch.bool)
    cand[0, 4] = False  # a positive or masked type: never a negative
    g = torch.Generator().manual_seed(0)
    # candidates by score: 0 (.9), 2 (.8), 3 (.3), 5 (.2), 1 (.1); ranks 2-3 -> types 2 and 3
    neg = mined_negatives(logits, cand, (2, 3), 0, g)
    assert neg[0].nonzero().flatten().tolist() == [2, 3]
    # random negatives come from below the dropped top only
    neg = mined_negatives(logits, cand, (2, 3), 6, g)
    assert neg[0].nonzero().flatten().tolist() == [1, 2, 3, 5]


def test_kmeans_separates_clear_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 8)) * 0.05 + np.eye(8)[0]
    b = rng.normal(size=(20, 8)) * 0.05 + np.eye(8)[1]
    labels = kmeans(torch.tensor(np.vstack([a, b]), dtype=torch.float32), 2, seed=1)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]


def test_clustered_sampler_draws_a_cluster_at_a_time():
    n = 40
    ss = SilverSpans(
        spans=[(i, 0, 0, "person" if i < 4 else None) for i in range(n)],
        positives=[np.array([0]) for _ in range(n)],
        is_gold=np.array([i < 4 for i in range(n)]),
        first_type=[0] * n,
        vocab=["person"],
    )
    clusters = np.array([0] * 4 + [1] * 18 + [2] * 18)
    sampler = BatchSampler(ss, keep=np.ones(n, bool), silver_share=0.5, seed=0, clusters=clusters, take=9)
    batch = sampler.sample(36)
    gold, silver = batch[:18], batch[18:]
    assert all(i < 4 for i in gold)
    # two clusters of 9: each run of 9 silver spans comes from one cluster
    assert [len({clusters[i] for i in silver[k : k + 9]}) for k in (0, 9)] == [1, 1]
