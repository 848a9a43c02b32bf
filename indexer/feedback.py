"""Query-time pseudo-relevance feedback (Rocchio): search, move the type vector towards the
passages found first, search again.

    q' = normalise(q + weight · mean(normalise(v_1), …, normalise(v_n)))

where v_i are the passage vectors of the first search's top ``top`` hits. The second search is the
same request (threshold, filters, text, λ, limit) with q' instead of q, so spans are marked and the
threshold applied by their similarity to q'. This module owns the rule; :meth:`NerIndex.search`
(``feedback=``) and ``nerindex eval`` (method ``system_prf``) only call it. Off by default:
EVALUATION.md, "Query-time feedback", has what it measured.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace
from typing import Any, Iterator

import numpy as np

from .errors import SearchError

MAX_FEEDBACK_WEIGHT = 10.0
MAX_FEEDBACK_TOP = 1000


@dataclass(frozen=True)
class Feedback:
    """How much to move the query (``weight``) towards how many first-pass passages (``top``)."""

    weight: float = 0.5
    top: int = 10

    def __post_init__(self) -> None:  # a type checked here, not at search time ("0.5", top=2.5: TypeErrors there)
        weight, top = self.weight, self.top
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0.0 <= weight <= MAX_FEEDBACK_WEIGHT:
            raise SearchError(f"feedback weight must be a number within [0, {MAX_FEEDBACK_WEIGHT:g}], not {weight!r}")
        if isinstance(top, bool) or not isinstance(top, numbers.Integral) or not 1 <= top <= MAX_FEEDBACK_TOP:
            raise SearchError(f"feedback passages must be a whole number within [1, {MAX_FEEDBACK_TOP}], not {top!r}")


def feedback_vector(query: np.ndarray, feedback: np.ndarray, weight: float) -> np.ndarray:
    """The Rocchio query: unit(query + weight · mean of the unit feedback vectors), float32.

    Feedback rows of zero length are ignored; with none left (or weight 0) the query comes back
    unchanged (as a unit vector).
    """
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    rows = np.asarray(feedback, dtype=np.float32).reshape(-1, q.size) if np.size(feedback) else np.zeros((0, q.size), np.float32)
    norms = np.linalg.norm(rows, axis=1)
    rows = rows[norms > 0] / norms[norms > 0, None]
    moved = q / max(float(np.linalg.norm(q)), 1e-12)
    if weight and rows.shape[0]:
        moved = moved + np.float32(weight) * rows.mean(axis=0)
    norm = float(np.linalg.norm(moved))
    return (moved / norm if norm > 0 else moved).astype(np.float32)


def search_with_feedback(store: Any, request: Any, feedback: Feedback) -> Iterator[Any]:
    """Two searches: the request's top ``feedback.top`` passages, then the request again with the
    query moved towards their passage vectors (``Store.passage_vectors``)."""
    first = replace(request, exhaustive=False, limit=feedback.top)
    ids = [hit.id for hit in store.search(first)]
    if not ids or not feedback.weight:
        return store.search(request)
    vectors = store.passage_vectors(ids)
    return store.search(replace(request, vector=feedback_vector(request.vector, vectors, feedback.weight)))
