"""Conversions between cosine similarity (what nerindex thresholds speak) and Elasticsearch scores.

Elasticsearch's kNN ``similarity`` parameter is the raw similarity of the field's metric, while the
``_score`` it returns is a transformed value (for ``cosine`` and ``dot_product``:
``_score = (1 + cos) / 2``). The exact search (``--all``) scores spans with a script that returns
``cos + 1`` because Lucene scores must not be negative. Vectors are unit length, so every metric
can be mapped to and from the cosine.

Hybrid scoring (``passage_weight`` λ > 0, see ``stores/base.py``) adds λ · cos(type, passage vector)
to a passage's best span. Top-k searches do it natively: the nested span kNN and a kNN on the
passage vector boosted by λ are summed by Elasticsearch, so ``_score`` = span kNN score
+ λ · passage kNN score, both in the metric's score units (:func:`combined_from_knn_scores` turns
it back into cosines, given the best span's own score from the inner hits). The exact search
(``--all``) adds the term in a Painless ``script_score`` returning ``(span cos + 1) + λ ·
(passage cos + 1)``, shifted by ``1 + λ`` so it is never negative
(:func:`combined_from_hybrid_score` undoes the shift).
"""

from __future__ import annotations

import math
from typing import Literal

from ...errors import StoreError

Metric = Literal["cosine", "dot_product", "l2_norm", "max_inner_product"]
METRICS: tuple[str, ...] = ("cosine", "dot_product", "l2_norm", "max_inner_product")

# Added to the cosine in the exact-search script (scores must be >= 0).
SCRIPT_OFFSET = 1.0


def check_metric(metric: str) -> str:
    """The metric name if Elasticsearch supports it for dense_vector, else a StoreError."""
    if metric not in METRICS:
        raise StoreError(
            f"model similarity {metric!r} is not an Elasticsearch dense_vector similarity "
            f"(one of {', '.join(METRICS)})"
        )
    return metric


def knn_similarity(min_cosine: float, metric: str) -> float:
    """The kNN ``similarity`` parameter that keeps exactly the vectors with cos >= ``min_cosine``."""
    check_metric(metric)
    if metric == "l2_norm":
        # For unit vectors ||a - b||^2 = 2 - 2 cos; the parameter is a maximum distance.
        return math.sqrt(max(0.0, 2.0 - 2.0 * float(min_cosine)))
    return float(min_cosine)


def cosine_from_knn_score(score: float, metric: str) -> float:
    """The cosine behind a kNN ``_score`` (inverse of Elasticsearch's score transform)."""
    check_metric(metric)
    score = float(score)
    if metric in ("cosine", "dot_product"):
        return 2.0 * score - 1.0
    if metric == "l2_norm":
        if score <= 0.0:
            return -1.0
        squared_distance = 1.0 / score - 1.0
        return 1.0 - squared_distance / 2.0
    # max_inner_product: _score = 1 / (1 - dot) when dot < 0, else dot + 1.
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def knn_score_from_cosine(cosine: float, metric: str) -> float:
    """The kNN ``_score`` of a unit vector at this cosine (inverse of :func:`cosine_from_knn_score`)."""
    check_metric(metric)
    cosine = float(cosine)
    if metric in ("cosine", "dot_product"):
        return (1.0 + cosine) / 2.0
    if metric == "l2_norm":
        return 1.0 / (1.0 + (2.0 - 2.0 * cosine))
    return cosine + 1.0 if cosine >= 0.0 else 1.0 / (1.0 - cosine)


def linear_knn_score(metric: str) -> bool:
    """Whether the kNN ``_score`` is an affine function of the cosine, so that Elasticsearch's
    order by span score + λ · passage score is the order by span cos + λ · passage cos."""
    return check_metric(metric) in ("cosine", "dot_product")


def combined_from_knn_scores(
    score: float, span_score: float, passage_weight: float, metric: str
) -> float:
    """Best span cos + λ · passage cos of a native hybrid hit.

    ``score`` is the hit's ``_score`` (span kNN score + λ · passage kNN score), ``span_score`` the
    kNN score of its best span (its best inner hit: the nested ``max``).
    """
    weight = float(passage_weight)
    passage_score = (float(score) - float(span_score)) / weight
    return cosine_from_knn_score(span_score, metric) + weight * cosine_from_knn_score(
        max(passage_score, 1e-12), metric
    )


def cosine_from_script_score(score: float) -> float:
    """The cosine behind an exact-search (script_score) span score."""
    return float(score) - SCRIPT_OFFSET


def script_source(field: str = "spans.vector") -> str:
    """Painless source scoring one span by cosine, shifted to be non-negative."""
    return f"cosineSimilarity(params.query_vector, '{field}') + {SCRIPT_OFFSET}"


# --- hybrid scoring -------------------------------------------------------------------------------


def passage_similarity_source(field: str = "vector") -> str:
    """Painless cos(query, passage vector); a passage stored without a vector counts as 0.

    Scripts fail on a document without a value for the vector field, hence the check (the
    embedded store treats a missing passage vector as a zero vector, i.e. cosine 0, too).
    """
    return f"(doc['{field}'].size() == 0 ? 0.0 : cosineSimilarity(params.query_vector, '{field}'))"


def hybrid_exact_script_source(field: str = "vector") -> str:
    """Script around the exact span search, whose ``_score`` already is span cos + 1."""
    return f"_score + params.passage_weight * ({passage_similarity_source(field)} + {SCRIPT_OFFSET})"


def combined_from_hybrid_score(score: float, passage_weight: float) -> float:
    """Best span cos + λ · passage cos, from the score of a hybrid script (undoes the shift)."""
    return float(score) - SCRIPT_OFFSET * (1.0 + float(passage_weight))
