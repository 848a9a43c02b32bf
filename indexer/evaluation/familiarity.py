"""Familiarity of a zero-shot split (Golde et al., NAACL 2025, arXiv:2412.10121).

How close each evaluated type is to what the model saw in training, weighting training types by how
often they occurred. For a test type *t*: order the training *mentions* by the clipped cosine
similarity ``max(0, cos(t, type of the mention))`` of their type phrases to *t*, most similar first,
keep the first ``k`` (default 1000), and take their Zipf-weighted mean (weight ``1/i`` at rank *i*).
A test type whose nearest training types are frequent and similar scores near 1; a truly new type
scores low. The Familiarity of a split is the unweighted mean over its test types, as in the
reference implementation (flairNLP/familiarity).

Which embedding model computes the similarities changes the numbers, so reports always name it;
nerindex uses the evaluated model's own type encoder, every phrase in the card's ``type_template``
(``embed_phrases``: the backbone's phrase embedding the span side was trained against; a search for
a phrase the model was not trained on uses another template, which would compare unlike with
like). One deviation from the reference: when the training set has fewer than ``k`` mentions, the
mean runs over all of them (the reference would fail).
"""

from __future__ import annotations

from typing import Callable, Literal, Mapping, Sequence

import numpy as np

Weighting = Literal["zipf", "linear_decay", "unweighted"]


def type_familiarity(
    test_vector: np.ndarray,
    train_vectors: np.ndarray,
    train_counts: Sequence[int],
    *,
    k: int = 1000,
    weighting: Weighting = "zipf",
) -> float:
    """Familiarity of one test type given unit vectors and mention counts of the training types."""
    counts = np.asarray(train_counts, dtype=np.int64)
    if train_vectors.shape[0] != counts.shape[0]:
        raise ValueError("one count per training type is needed")
    if k <= 0:
        raise ValueError("k must be positive")
    keep = counts > 0
    if not keep.any():
        return 0.0
    sims = np.clip(train_vectors[keep] @ test_vector, 0.0, None)
    counts = counts[keep]
    order = np.argsort(-sims, kind="stable")
    mentions = np.repeat(sims[order], counts[order])[:k]
    n = mentions.shape[0]
    ranks = np.arange(1, n + 1, dtype=np.float64)
    if weighting == "zipf":
        weights = 1.0 / ranks
    elif weighting == "linear_decay":
        weights = (n + 1 - ranks) / n
    elif weighting == "unweighted":
        weights = np.ones(n)
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    return float(np.dot(weights, mentions) / weights.sum())


def split_familiarity(
    test_types: Sequence[str],
    train_counts: Mapping[str, int],
    embed: Callable[[Sequence[str]], np.ndarray],
    *,
    k: int = 1000,
    weighting: Weighting = "zipf",
) -> tuple[dict[str, float], float | None]:
    """Per-type Familiarity and its mean over ``test_types``; ``embed`` returns unit vectors."""
    if not test_types:
        return {}, None
    train_types = [t for t, c in train_counts.items() if c > 0]
    if not train_types:
        return {t: 0.0 for t in test_types}, 0.0
    vectors = np.asarray(embed(list(train_types) + list(test_types)), dtype=np.float64)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    train_vecs, test_vecs = vectors[: len(train_types)], vectors[len(train_types) :]
    counts = [train_counts[t] for t in train_types]
    per_type = {
        t: type_familiarity(test_vecs[i], train_vecs, counts, k=k, weighting=weighting)
        for i, t in enumerate(test_types)
    }
    return per_type, float(np.mean(list(per_type.values())))
