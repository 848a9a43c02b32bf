"""Conversions between cosine similarity (what nerindex thresholds speak) and Elasticsearch scores.

Elasticsearch's kNN ``similarity`` parameter is the raw similarity of the field's metric, while the
``_score`` it returns is a transformed value (for ``cosine`` and ``dot_product``:
``_score = (1 + cos) / 2``). The exact search (``--all``) scores spans with a script that returns
``cos + 1`` because Lucene scores must not be negative. Vectors are unit length, so every metric
can be mapped to and from the cosine.
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


def cosine_from_script_score(score: float) -> float:
    """The cosine behind an exact-search (script_score) span score."""
    return float(score) - SCRIPT_OFFSET


def script_source(field: str = "spans.vector") -> str:
    """Painless source scoring one span by cosine, shifted to be non-negative."""
    return f"cosineSimilarity(params.query_vector, '{field}') + {SCRIPT_OFFSET}"
