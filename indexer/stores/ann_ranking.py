"""Top-k passages from approximate candidates, exact where a bound says so (threshold algorithm).

A passage's total is its best span's cosine + λ · its passage cosine, counted when that best span
reaches the threshold. Candidates come from two ANN lists, spans and (when λ > 0) passage vectors,
each read best first down to some depth; every candidate passage is then scored exactly (all its
spans and its passage vector, from the float32 source). A passage in neither list has every span
at most the span list's last index score + its error bound, and its passage vector at most the
passage list's last + error, so its total is at most the sum of those. Once the k-th exact total
reaches that bound (or the span bound falls under the threshold, so no unseen passage can match)
the answer is the exact top k; else both lists are read deeper and the probed lists widened.
Only rows the probed inverted lists missed escape the bound: so once it holds, twice as many lists
are probed again, and the answer stands when that changes nothing (the type vectors of queries lie
away from the span vectors, and on real ones the nearest lists missed rows the next ones held:
``nerindex eval`` on crossner politics, BENCHMARKS.md). What is left is recall, measured by the
benchmark and the dev-set evals. A list read whole (:class:`Scanned`: every row's int8 score, as
the embedded store gives a hybrid search's passage side below ``ann.MIN_ROWS`` passages) has a
bound that holds for every row: an audit found the passage index's bound, over the lists it
probed, missing the first passage of hybrid searches (passage vectors follow topics, and a type
vector's nearest passage lists say little about where its highest passage cosines are).
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np

from .span_ranking import Scored


class Proposer(Protocol):
    """An ANN index as this module uses it (see :class:`.ann.Index`)."""

    max_error: float

    @property
    def lists(self) -> int: ...

    def search(self, query: np.ndarray, k: int, probes: int, allowed_bits: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]: ...


class Scanned:
    """Every row's approximate score at once (an int8 scan), as a :class:`Proposer`: one list,
    always probed, so its bound (the last returned score + ``max_error``, or nothing left) holds
    for every row, not only for those of the probed lists of an ANN index.

    ``scan`` gives (row ids, scores) and runs on the first search only (a search whose span bound
    falls under the threshold never asks); the rows are ordered as deep as a search has asked, by a
    partition and a sort of that prefix (a full sort of 300k scores took ~28 ms, the partition ~1)."""

    lists = 1

    def __init__(self, scan: Callable[[], tuple[np.ndarray, np.ndarray]], max_error: float) -> None:
        self.scan, self.max_error = scan, max_error
        self.ids = self.scores = None
        self.ordered = 0  # rows at the front of ids/scores in their final order

    def search(self, query: np.ndarray, k: int, probes: int, allowed_bits: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.ids is None:
            self.ids, self.scores = self.scan()
        n = len(self.scores)
        if k > self.ordered and self.ordered < n:
            upto = min(n, max(k, 4 * self.ordered))
            order = np.argpartition(-self.scores, upto - 1) if upto < n else np.arange(n)
            front = order[:upto]
            order[:upto] = front[np.argsort(-self.scores[front], kind="stable")]  # the rest stays as partitioned
            self.ids, self.scores, self.ordered = self.ids[order], self.scores[order], upto
        return self.ids[:k], self.scores[:k]


class AllLists:
    """An ANN index searched with every list probed (its scan of all the codes), as a
    :class:`Proposer` of one list: its bound then holds for every row, up to the index's
    ``max_error`` (measured on its training rows: not a strict bound, BENCHMARKS.md). The passage
    side of hybrid searches from ``ann.MIN_ROWS`` passages: probed like the span side, an audit at
    320k passages had recall@10 0.75–0.95 and the first passage missing in 2–6 of 30 searches. Like
    :class:`Scanned`, one search serves every round: it asks for rows well past the first depth and
    searches again only when a round reads deeper."""

    lists = 1

    def __init__(self, index: Proposer) -> None:
        self.index, self.max_error = index, index.max_error
        self.ids = self.scores = None
        self.asked = 0  # rows the last index search asked for (fewer came back: there are no more)

    def search(self, query: np.ndarray, k: int, probes: int, allowed_bits: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        if self.ids is None or (k > len(self.ids) == self.asked):
            self.asked = max(k, 4 * (0 if self.ids is None else len(self.ids)), 1024)
            self.ids, self.scores = self.index.search(query, self.asked, self.index.lists, allowed_bits)
        return self.ids[:k], self.scores[:k]


FIRST_DEPTH = 64
FIRST_PROBES = 16


def _bound(index: Proposer, scores: np.ndarray, depth: int, probes: int) -> float:
    """Highest score a row the index did not return can have: the last returned score + error
    when the list was cut at ``depth``; -inf when every list was probed and fewer came back
    (nothing is left); +inf when fewer came back from only some lists (unknown: probe more)."""
    if len(scores) >= depth:
        return float(scores[-1]) + index.max_error
    return -np.inf if probes >= index.lists else np.inf


def top_k(
    query: np.ndarray, *, k: int, threshold: float, weight: float,
    spans: Proposer, passages: Proposer | None,
    span_passages: Callable[[np.ndarray], np.ndarray],
    score: Callable[[np.ndarray], list[Scored]],
    span_bits: np.ndarray | None = None,
    max_depth: int = 65536,
    spread: float = 1.0,
) -> tuple[list[Scored], int] | None:
    """(the exact top ``k`` passages, the depth it took), or None when the bound did not close by
    ``max_depth`` (the caller scans exactly). ``span_passages`` maps span rowids to passage rowids;
    ``score`` scores passage rowids exactly (unmatched ones left out); ``span_bits`` restricts
    the span list (span-label filters). ``spread``: candidates to expect for each one ``score``
    keeps (a filter checked on the candidates that allows a tenth of the passages: 10), so the
    lists start that much deeper instead of deepening round by round (each round a search).

    Once the bound holds for the probed lists, the answer is checked with twice as many; with every
    list when the answer is short of ``k``, since it then says that nothing else passes the
    threshold: an audit at 640k spans had a label filter answer nothing where the exact scan found a
    passage, and a metadata filter that follows the clusters return 77 of 86 passages. (A full page
    behind such a filter stays approximate: top-100 recall 0.93–0.96 on that audit's store, where
    checking every list too gave 1.0 at the cost of a scan of the whole index; BENCHMARKS.md.)"""
    if k <= 0:
        return [], 0
    first = max(FIRST_DEPTH, 4 * k)
    depth, probes = max(first, min(int(first * spread), max_depth)), FIRST_PROBES  # spread deepens, up to max_depth
    scored: dict[int, Scored | None] = {}
    confirmed: list[int] | None = None
    while True:
        ids, scores = spans.search(query, depth, probes, span_bits)
        span_bound = _bound(spans, scores, depth, probes)
        candidates = set(span_passages(ids).tolist())
        unseen = span_bound
        if span_bound < threshold:
            unseen = -np.inf  # no passage outside the span list has a span reaching the threshold
        elif weight and passages is not None:
            pids, pscores = passages.search(query, depth, probes)
            candidates.update(pids.tolist())
            unseen += weight * _bound(passages, pscores, depth, probes)
        elif weight:
            unseen += weight  # passage cosines are at most 1
        new = np.fromiter((p for p in candidates if p not in scored), dtype=np.int64)
        if new.size:
            found = {s.passage: s for s in score(new)}
            scored.update({int(p): found.get(int(p)) for p in new})
        ranked = sorted((s for s in scored.values() if s is not None), key=lambda s: (-s.total, s.passage))
        top = [s.passage for s in ranked[:k]]
        if unseen == -np.inf or (len(ranked) >= k and ranked[k - 1].total > unseen):
            if top == confirmed or probes >= spans.lists:
                return ranked[:k], depth
            # the bound holds for the probed lists: probe twice as many once more, or all of them
            confirmed, probes = top, spans.lists if len(ranked) < k else probes * 2
            continue
        confirmed = None
        if depth >= max_depth:
            return None
        depth, probes = depth * 4, probes * 2
