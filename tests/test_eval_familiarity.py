"""Familiarity (Golde et al.) on hand-made vectors and counts whose answers are worked out here."""

from __future__ import annotations

import numpy as np
import pytest

from indexer.evaluation.familiarity import split_familiarity, type_familiarity

E = np.eye(3)


def test_identical_frequent_training_type_gives_one():
    # the only training type is the test type itself, 5000 mentions >= k -> every weight on cos 1
    assert type_familiarity(E[0], E[:1], [5000]) == pytest.approx(1.0)


def test_orthogonal_types_give_zero_and_negative_cosines_are_clipped():
    assert type_familiarity(E[0], np.stack([E[1], -E[0]]), [10, 10]) == 0.0


def test_zipf_weighting_worked_example():
    # training: type A with cos 1.0 (1 mention), type B with cos 0.5 (2 mentions); k = 3.
    # mentions by similarity: [1.0, 0.5, 0.5]; zipf weights [1, 1/2, 1/3]
    # -> (1 + 0.25 + 1/6) / (1 + 1/2 + 1/3) = (17/12) / (11/6) = 17/22
    b = np.array([0.5, np.sqrt(0.75), 0.0])
    got = type_familiarity(E[0], np.stack([E[0], b]), [1, 2], k=3)
    assert got == pytest.approx(17 / 22)


def test_cutoff_k_ignores_less_similar_mentions():
    # 2 mentions at cos 1 fill k = 2; the 1000 orthogonal mentions never count
    assert type_familiarity(E[0], np.stack([E[0], E[1]]), [2, 1000], k=2) == pytest.approx(1.0)


def test_frequency_matters():
    # a frequent near-identical type makes a test type more familiar than a rare one does
    near = np.array([0.9, np.sqrt(1 - 0.81), 0.0])
    frequent = type_familiarity(E[0], np.stack([near, E[2]]), [1000, 1000])
    rare = type_familiarity(E[0], np.stack([near, E[2]]), [1, 1000])
    assert frequent == pytest.approx(0.9)
    assert rare < frequent


def test_fewer_mentions_than_k_averages_all_of_them():
    # 1 mention at cos 1, 1 at cos 0; k = 1000 but only 2 mentions: (1 + 0/2)/(1 + 1/2) = 2/3
    assert type_familiarity(E[0], np.stack([E[0], E[1]]), [1, 1]) == pytest.approx(2 / 3)


def test_linear_and_unweighted():
    # mentions [1.0, 0.0]: linear weights [1, 1/2] -> 2/3; unweighted -> 1/2
    tv = np.stack([E[0], E[1]])
    assert type_familiarity(E[0], tv, [1, 1], weighting="linear_decay") == pytest.approx(2 / 3)
    assert type_familiarity(E[0], tv, [1, 1], weighting="unweighted") == pytest.approx(0.5)


def test_split_familiarity_is_mean_over_test_types():
    vectors = {"person": E[0], "location": E[1], "human": E[0], "dinosaur": E[2]}

    def embed(phrases):
        return np.stack([vectors[p] * 3.0 for p in phrases])  # not unit: must be normalised

    per_type, mean = split_familiarity(["human", "dinosaur"], {"person": 50, "location": 50}, embed)
    # human: same vector as person -> top 50 mentions at cos 1, next 50 at 0 (k=1000 > 100 mentions)
    zipf = 1 / np.arange(1, 101)
    expected_human = zipf[:50].sum() / zipf.sum()
    assert per_type["human"] == pytest.approx(expected_human)
    assert per_type["dinosaur"] == 0.0
    assert mean == pytest.approx(expected_human / 2)


def test_split_familiarity_without_test_types():
    assert split_familiarity([], {"person": 1}, lambda p: np.zeros((len(p), 3))) == ({}, None)
