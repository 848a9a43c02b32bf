"""The methods an evaluation run scores: the system (searched through the real store) and baselines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """A scored method: whether it returns spans and whether it has a similarity threshold."""

    key: str
    label: str
    spans: bool
    thresholded: bool


METHODS: dict[str, Method] = {
    "system": Method("system", "nerindex (trained span vectors)", spans=True, thresholded=True),
    # the same search ranked by best span alone; reported when the system uses hybrid scoring
    "system_spans": Method("system_spans", "nerindex, spans only (λ = 0)", spans=True, thresholded=True),
    # the system with query-time feedback (indexer.feedback): off unless named in --methods
    "system_prf": Method("system_prf", "nerindex + query-time feedback (Rocchio, passage vectors)", spans=True, thresholded=True),
    "span_base": Method("span_base", "untrained span vectors (same spans)", spans=True, thresholded=True),
    "dense": Method("dense", "dense passage retrieval (backbone)", spans=False, thresholded=True),
    "bm25": Method("bm25", "BM25 (passage text)", spans=False, thresholded=False),
}
# what ``nerindex eval`` scores when --methods is not given (feedback is an experiment, not a default)
DEFAULT_METHODS: tuple[str, ...] = ("system", "system_spans", "span_base", "dense", "bm25")
SYSTEM_METHODS = ("system", "system_spans", "system_prf")  # searched through the store, at the model's threshold
