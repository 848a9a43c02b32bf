"""Passages ranked by their spans' similarities: the pure numpy steps of the embedded store's search.

Spans are rows of a :class:`~.segments.SegmentSet` (``passage`` holds each span's passage rowid);
``sims`` are their similarities to the query, int8 estimates within ``segments.EPSILON`` of the
exact ones until re-scored. Every span ranks its passage; only mentions (``SegmentSet.mention``)
are marked and make a passage part of an ``--all`` (``Store.search``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import segments


class Scored(NamedTuple):
    """One passage scored exactly: its total, and its marked spans (span rowid, cosine) best first:
    the mentions that pass the threshold (a candidate ranks the passage but is never marked);
    ``ranked_by``: a candidate ranked it, and is the first of ``spans`` (:func:`with_rankers`).
    Made by ``embedded_read.score_passages`` for the passages a top-k scores from SQLite (ANN
    candidates, a small filtered set); the scan builds ``embedded_read.Ranked`` arrays instead.
    A named tuple: cheaper to make than a dataclass."""

    passage: int
    total: float
    spans: tuple[tuple[int, float], ...]
    ranked_by: bool = False


def best_first(idx: np.ndarray, sims: np.ndarray, passage: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``idx`` ordered by passage, then by descending similarity; a mask of each passage's first,
    i.e. best, span in that order)."""
    order = idx[np.lexsort((-sims[idx], passage[idx]))]
    first = np.ones(order.size, dtype=bool)
    first[1:] = passage[order][1:] != passage[order][:-1]
    return order, first


def flat_runs(order: np.ndarray, owners: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bounds, entries): the entries of ``order`` whose ``owners`` (sorted, one per entry) are
    each of ``wanted``, flat in ``wanted``'s order; those of ``wanted[i]`` are
    ``entries[bounds[i]:bounds[i + 1]]``, none where it owns none (a passage ranked by a candidate
    alone, looked up among the marked mentions)."""
    if owners.size == 0:
        return np.zeros(wanted.size + 1, dtype=np.int64), order[:0]
    starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
    at = np.minimum(np.searchsorted(owners[starts], wanted), starts.size - 1)
    counts = np.where(owners[starts[at]] == wanted, np.append(starts[1:], owners.size)[at] - starts[at], 0)
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return bounds, order[np.repeat(starts[at] - bounds[:-1], counts) + np.arange(bounds[-1])]


def with_rankers(bounds: np.ndarray, entries: np.ndarray, best: np.ndarray, candidate: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(bounds, entries) from :func:`flat_runs`' marks of ranked passages, with the best span of
    each passage ranked by a candidate (``best``, ``candidate``: one per passage, in the same
    order) put first among its entries: the hit names what ranked it (``Hit.ranked_by``), marked
    or not. The others pass through, so a set without candidates pays nothing."""
    if not candidate.any():
        return bounds, entries
    entries = np.insert(entries, bounds[:-1][candidate], best[candidate])
    return bounds + np.concatenate([[0], np.cumsum(candidate)]), entries


def answer_and_marks(order: np.ndarray, first: np.ndarray, vec: segments.SegmentSet, *, exhaustive: bool
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(the best span of each passage in the answer, the spans its hits mark), from passing spans
    grouped by :func:`best_first`: every passage ranks by its best span, mention or candidate; an
    ``--all`` keeps those with a passing mention; only mentions are marked. A set without
    candidates takes none of these steps."""
    best = order[first]
    if not vec.candidates or order.size == 0:
        return best, order
    mention = vec.mention[order]
    if exhaustive:
        best = best[np.logical_or.reduceat(mention, np.flatnonzero(first))]
    return best, order[mention]


def top_candidates(
    vec: segments.SegmentSet, idx: np.ndarray, sims: np.ndarray, query: np.ndarray, *,
    min_similarity: float, limit: int, passage_weight: float,
) -> np.ndarray:
    """Passage rowids that may be among the top ``limit`` by int8 scores (which are within
    ε of the exact ones): all whose approximate score reaches the k-th best sure match's
    less 2ε(1 + λ). Sure matches are passages whose best span scores threshold + ε or more."""
    if idx.size == 0:
        return np.zeros(0, dtype=np.int64)
    order, first = best_first(idx, sims, vec.passage)
    best = order[first]
    approx = sims[best].astype(np.float64)
    if passage_weight:
        approx += passage_weight * vec.approx_passage_sims(vec.passage[best], query)
    sure = approx[sims[best] >= min_similarity + segments.EPSILON]
    k = max(limit, 0)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if sure.size < k:
        return vec.passage[best]
    kth = np.partition(sure, sure.size - k)[sure.size - k]
    return vec.passage[best[approx >= kth - 2 * segments.EPSILON * (1 + passage_weight)]]
