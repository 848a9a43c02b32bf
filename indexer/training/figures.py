"""The retrieval figures training reports and the similarity threshold it ships.

Span R-Precision (a type against a pool of gold spans) picks the adapter's early-stopping step;
passage R-Precision and the passage-level similarity threshold are measured on the dev split the
way ``nerindex search`` ranks passages (best detected span). The metrics themselves are
``indexer.evaluation``'s; this module turns training's tensors into what they take.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch

from ..evaluation.calibration import sweep_score_arrays
from ..evaluation.metrics import macro, r_precision
from .data import Corpus, relevant_phrases
from .features import Features, adapter_vectors, span_features
from .model import SpanTypeEncoder

log = logging.getLogger(__name__)

# thresholds the similarity calibration tries
SIMILARITY_GRID = tuple(round(x, 3) for x in np.arange(0.05, 0.951, 0.01))


def ranked_r_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """R-Precision of items ranked by score (ties in index order); ``relevant`` is a mask with
    at least one relevant item."""
    n_relevant = int(relevant.sum())
    top = np.argsort(-scores, kind="stable")[:n_relevant]  # R-Precision looks no further
    return r_precision([str(i) for i in top], {str(i) for i in np.flatnonzero(relevant)})


def macro_r_precision(per_type: dict[str, float]) -> float:
    """Mean over types; NaN when there is none (written as null in train.json)."""
    mean = macro(per_type.values())
    return float("nan") if mean is None else mean


def span_r_precision(
    vectors: torch.Tensor, phrases: Sequence[str | None], queries: Sequence[str], type_vecs: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Type → span R-Precision over a pool of gold spans (a span is relevant if its type matches)."""
    out = {}
    ph = np.array([p or "" for p in phrases], dtype=object)
    for q in queries:
        rel = np.isin(ph, list(relevant_phrases(q)))
        if rel.sum() == 0:
            continue
        scores = (vectors @ type_vecs[q]).numpy()
        out[q] = ranked_r_precision(scores, rel)
    return out


def detected_span_vectors(
    model: SpanTypeEncoder, feats: Features, corpus: Corpus, decoded, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(trained, base) vectors of the spans kept at ``threshold``, and the passage of each."""
    spans = []
    owner = []
    for pi, kept in enumerate(decoded):
        for s, e, sc, ei, ci in kept:
            if sc < threshold:
                break
            a, b = corpus.examples[ei].cand_tok[ci]
            spans.append((ei, int(a), int(b), None))
            owner.append(pi)
    sf = span_features(feats, corpus, spans)
    with torch.no_grad():
        return adapter_vectors(model, sf), adapter_vectors(model, sf, base=True), np.array(owner, dtype=np.int64)


def passage_scores(vecs: torch.Tensor, owner: np.ndarray, n_passages: int, query: torch.Tensor) -> np.ndarray:
    """Best span similarity per passage (-1 where no span was detected)."""
    out = np.full(n_passages, -1.0, dtype=np.float64)
    if len(owner):
        sims = (vecs @ query).numpy()
        np.maximum.at(out, owner, sims)
    return out


def passage_relevance(corpus: Corpus, query: str) -> np.ndarray:
    """Per passage: does it hold a gold span of ``query`` (or of a narrower type)?"""
    rel = relevant_phrases(query)
    return np.array([bool(ph & rel) for ph in corpus.passage_phrases])


def calibrate_similarity(
    scores_by_type: dict[str, np.ndarray], relevance: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The passage-level similarity threshold with the best macro F1 over types.

    Among equal best points the lowest threshold wins (``calibration.choose_threshold``, used by
    ``nerindex eval --calibrate``, takes the highest); kept so trained thresholds stay as they were.
    """
    points = sweep_score_arrays(scores_by_type, relevance, SIMILARITY_GRID)
    best = max(points, key=lambda p: p.f1)
    if not best.f1:  # an audit: the run ended well with a threshold taken from an all-zero curve
        log.warning("no similarity threshold returns a relevant dev passage (F1 0 at every one): the model's "
                    "similarity_threshold (%s) is not calibrated; train on more data, or calibrate it with "
                    "nerindex eval --calibrate --write-model on a validation split", best.threshold)
    curve = [(p.threshold, round(p.f1, 4)) for p in points if round(p.threshold * 100) % 5 == 0]
    return {"threshold": best.threshold, "macro_f1": best.f1, "curve": curve}


def chosen_passage_weight(table: dict[float, float]) -> tuple[float, bool]:
    """(λ with the best validation passage R-Precision, ties to the lower; whether it was chosen):
    where no validation type has figures (every value NaN) λ is 0 (spans only), said and recorded
    as not chosen (an audit: 0 was taken silently from a table of NaN)."""
    if all(np.isnan(v) for v in table.values()):
        log.warning("no validation type has a relevant dev passage: passage_weight (λ) is not chosen, 0 (spans "
                    "only); train on more data, or measure λ with nerindex eval --passage-weight on a validation split")
        return 0.0, False
    return max(table, key=lambda lam: (table[lam], -lam)), True


def passage_figures(
    model: SpanTypeEncoder,
    feats: Features,
    corpus: Corpus,
    decoded,
    threshold: float,
    type_vecs: dict[str, torch.Tensor],
    queries: Sequence[str],
    *,
    passage_weights: Sequence[float] = (),
) -> dict[str, Any]:
    """Passage-level R-Precision per query for dense passage, base spans and trained spans.

    ``passage_weights``: also hybrid scoring, best span similarity + λ · passage similarity, per λ.
    """
    vecs, base, owner = detected_span_vectors(model, feats, corpus, decoded, threshold)
    n = len(corpus.passages)
    # a passage vector per passage: the first window's (training sentences fit one window)
    pv = torch.zeros(n, model.dims)
    for ei, ex in enumerate(corpus.examples):
        pv[ex.passage_index] = feats.passage[ei]
    out: dict[str, dict[str, float]] = {"dense_passage": {}, "base_spans": {}, "trained_spans": {}}
    for lam in passage_weights:
        out[f"hybrid_{lam:g}"] = {}
    scores, relevance = {}, {}
    for q in queries:
        rel = passage_relevance(corpus, q)
        if not rel.any():
            continue
        relevance[q] = rel
        tq = type_vecs[q]
        out["dense_passage"][q] = ranked_r_precision((pv @ tq).numpy(), rel)
        out["base_spans"][q] = ranked_r_precision(passage_scores(base, owner, n, tq), rel)
        scores[q] = passage_scores(vecs, owner, n, tq)
        out["trained_spans"][q] = ranked_r_precision(scores[q], rel)
        if passage_weights:
            dense = (pv @ tq).numpy()
            for lam in passage_weights:
                out[f"hybrid_{lam:g}"][q] = ranked_r_precision(scores[q] + lam * dense, rel)
    return {
        "r_precision": {k: round(macro_r_precision(v), 4) for k, v in out.items()},
        "per_type": {k: {q: round(x, 4) for q, x in v.items()} for k, v in out.items()},
        "scores": scores,
        "relevance": relevance,
    }
