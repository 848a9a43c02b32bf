"""Retrieval and highlighting metrics of the nerindex yardstick (EVALUATION.md, "The task and the figures").

Pure functions over plain data, so each is unit-tested on hand-made cases. A *ranking* is a list of
:class:`Ranked` passages, best first; *relevant* is the set of passage ids with at least one gold
mention of the queried type (NER Retriever's protocol). Ranking metrics ignore thresholds (the whole
ranking counts); set and span metrics look at what a search returns at an operating threshold:
passages whose score passes it and, inside them, the spans whose similarity passes it — exactly what
``nerindex search --all`` shows a user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

IOU_MIN = 0.5


@dataclass(frozen=True)
class ScoredSpan:
    """A span returned for a query: character offsets (end exclusive) and its similarity to it."""

    start: int
    end: int
    similarity: float


@dataclass(frozen=True)
class Ranked:
    """One retrieved passage: its id, its score for the query and the spans that scored it.

    ``match`` is the similarity a threshold is applied to when it differs from the ranking score:
    with hybrid scoring a passage is ranked by span + λ · passage similarity but returned when its
    best span passes the threshold.
    """

    id: str
    score: float
    spans: tuple[ScoredSpan, ...] = ()
    match: float | None = None

    @property
    def gate(self) -> float:
        """The value compared with a threshold."""
        return self.score if self.match is None else self.match


@dataclass(frozen=True)
class QueryScores:
    """Every metric of one query (one type) for one method; ``None`` where it does not apply."""

    relevant: int
    r_precision: float
    recall_at_r: float
    recall_at_1000: float
    p_at_10: float
    retrieved: int | None = None  # passages returned at the threshold
    set_precision: float | None = None
    set_recall: float | None = None
    set_f1: float | None = None
    span_hit_rate: float | None = None
    highlight_precision: float | None = None
    highlight_precision_1to1: float | None = None  # each gold mention credits one mark (nested marks)
    gold_mentions: int | None = None  # gold mentions inside the returned relevant passages
    returned_spans: int | None = None

    def to_dict(self) -> dict[str, float | int | None]:
        return {k: _round(v) for k, v in self.__dict__.items()}


METRIC_NAMES: tuple[str, ...] = (
    "r_precision",
    "recall_at_r",
    "recall_at_1000",
    "p_at_10",
    "set_precision",
    "set_recall",
    "set_f1",
    "span_hit_rate",
    "highlight_precision",
    "highlight_precision_1to1",
)


def _round(value: float | int | None) -> float | int | None:
    if isinstance(value, float):
        return round(value, 6)
    return value


def precision_at_k(ranked_ids: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the first ``k`` ranks holding a relevant passage (missing ranks count as misses)."""
    if k <= 0:
        raise ValueError("k must be positive")
    return sum(1 for pid in ranked_ids[:k] if pid in relevant) / k


def recall_at_k(ranked_ids: Sequence[str], relevant: set[str], k: int) -> float:
    """Share of the relevant passages found in the first ``k`` ranks."""
    if not relevant:
        raise ValueError("recall is undefined without relevant passages")
    if k <= 0:
        raise ValueError("k must be positive")
    return sum(1 for pid in ranked_ids[:k] if pid in relevant) / len(relevant)


def r_precision(ranked_ids: Sequence[str], relevant: set[str]) -> float:
    """Precision at rank R = |relevant|: the primary figure (equal to Recall@R by construction)."""
    return precision_at_k(ranked_ids, relevant, len(relevant)) if relevant else 0.0


def span_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """Intersection over union of two character ranges ``[start, end)``; 0 when disjoint."""
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union


def match_spans(
    gold: Sequence[tuple[int, int]],
    predicted: Sequence[tuple[int, int]],
    *,
    iou_min: float = IOU_MIN,
) -> tuple[int, int]:
    """(gold mentions overlapped by some predicted span, predicted spans overlapping some gold).

    Each side is counted on its own, not by one-to-one matching: a gold mention is *hit* when any
    returned span covers it with IoU ≥ ``iou_min``; a returned span is *correct* when it covers any
    gold mention so. With nested decoding (the shipped model's) a search returns overlapping marks,
    and every one of them that covers a mention so is correct ("Canadian federal election" and
    "Canadian federal" for one gold mention): :func:`matched_marks` counts one mark per mention.
    """
    hit = sum(1 for g in gold if any(span_iou(g, p) >= iou_min for p in predicted))
    correct = sum(1 for p in predicted if any(span_iou(g, p) >= iou_min for g in gold))
    return hit, correct


def matched_marks(
    gold: Sequence[tuple[int, int]], predicted: Sequence[tuple[int, int]], *, iou_min: float = IOU_MIN
) -> int:
    """The most (gold mention, returned span) pairs with IoU ≥ ``iou_min`` in which no mention and
    no span appears twice (a maximum bipartite matching, by augmenting paths: a passage has a few
    dozen spans at most). Why: highlight precision by :func:`match_spans` credits every nested mark
    inside one mention (an audit: 0.290 against 0.233 one to one, unseen types pooled)."""
    options = [[g for g, gold_span in enumerate(gold) if span_iou(gold_span, p) >= iou_min] for p in predicted]
    owner: dict[int, int] = {}  # gold mention -> the span matched to it

    def place(p: int, seen: set[int]) -> bool:
        for g in options[p]:
            if g not in seen:
                seen.add(g)
                if g not in owner or place(owner[g], seen):
                    owner[g] = p
                    return True
        return False

    return sum(place(p, set()) for p in range(len(predicted)) if options[p])


def f1(precision: float | None, recall: float | None) -> float | None:
    """Harmonic mean; 0 when both are 0, ``None`` when either is undefined."""
    if precision is None or recall is None:
        return None
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def returned_at(ranking: Sequence[Ranked], threshold: float) -> list[Ranked]:
    """What a search with ``min_similarity=threshold`` returns: passages and spans that pass it."""
    out = []
    for item in ranking:
        if item.gate >= threshold:
            spans = tuple(s for s in item.spans if s.similarity >= threshold)
            out.append(Ranked(item.id, item.score, spans, item.match))
    return out


def score_query(
    ranking: Sequence[Ranked],
    relevant: set[str],
    *,
    threshold: float | None = None,
    gold_spans: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    with_spans: bool = False,
    iou_min: float = IOU_MIN,
) -> QueryScores:
    """All metrics of one query.

    ``ranking`` is the method's full ranking, best first. Set metrics need ``threshold`` (the
    method's operating point); span metrics also need ``with_spans`` (the method returns spans) and
    ``gold_spans`` (passage id → gold mentions of the queried type).
    """
    if not relevant:
        raise ValueError("a query needs at least one relevant passage")
    ids = [r.id for r in ranking]
    scores = QueryScores(
        relevant=len(relevant),
        r_precision=r_precision(ids, relevant),
        recall_at_r=recall_at_k(ids, relevant, len(relevant)),
        recall_at_1000=recall_at_k(ids, relevant, 1000),
        p_at_10=precision_at_k(ids, relevant, 10),
    )
    if threshold is None:
        return scores
    returned = returned_at(ranking, threshold)
    found = sum(1 for r in returned if r.id in relevant)
    # An empty answer counts as precision 0, as in the threshold sweep (see sweep_thresholds).
    precision = found / len(returned) if returned else 0.0
    recall = found / len(relevant)
    extra: dict[str, float | int | None] = {
        "retrieved": len(returned),
        "set_precision": precision,
        "set_recall": recall,
        "set_f1": f1(precision, recall),
    }
    if with_spans and gold_spans is not None:
        n_gold = n_hit = n_pred = n_correct = n_matched = 0
        for item in returned:
            gold = gold_spans.get(item.id, ()) if item.id in relevant else ()
            pred = [(s.start, s.end) for s in item.spans]
            hit, correct = match_spans(gold, pred, iou_min=iou_min)
            n_gold += len(gold)
            n_hit += hit
            n_pred += len(pred)
            n_correct += correct
            n_matched += matched_marks(gold, pred, iou_min=iou_min) if correct else 0
        extra.update(
            span_hit_rate=n_hit / n_gold if n_gold else None,
            highlight_precision=n_correct / n_pred if n_pred else None,
            highlight_precision_1to1=n_matched / n_pred if n_pred else None,
            gold_mentions=n_gold,
            returned_spans=n_pred,
        )
    return QueryScores(**{**scores.__dict__, **extra})


def macro(values: Iterable[float | None]) -> float | None:
    """Unweighted mean over types, skipping undefined values; ``None`` when none is defined."""
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return sum(defined) / len(defined) if defined else None


def macro_scores(per_type: Iterable[QueryScores]) -> dict[str, float | None]:
    """Macro average of every metric over a group of types (``n`` = number of types)."""
    rows = list(per_type)
    out: dict[str, float | None] = {"n": len(rows)}
    for name in METRIC_NAMES:
        out[name] = _round(macro(getattr(r, name) for r in rows))
    return out


@dataclass(frozen=True)
class SweepPoint:
    """Passage-set quality at one threshold, macro over types (plus micro precision/recall)."""

    threshold: float
    precision: float
    recall: float
    f1: float
    micro_precision: float | None
    micro_recall: float
    retrieved: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def sweep_thresholds(
    rankings: Mapping[str, Sequence[Ranked]],
    relevant: Mapping[str, set[str]],
    grid: Sequence[float],
) -> list[SweepPoint]:
    """Precision/recall/F1 of the returned passage sets at each threshold of ``grid``.

    Macro precision counts a type that returns nothing as precision 0 (a silent query is a
    failure for the person who asked), so the chosen threshold cannot win by returning nothing.
    """
    queries = [q for q in rankings if relevant.get(q)]
    points = []
    for t in grid:
        ps, rs, fs = [], [], []
        tot_ret = tot_found = tot_rel = 0
        for q in queries:
            rel = relevant[q]
            ret = [r.id for r in rankings[q] if r.gate >= t]
            found = sum(1 for pid in ret if pid in rel)
            p = found / len(ret) if ret else 0.0
            r = found / len(rel)
            ps.append(p)
            rs.append(r)
            fs.append(f1(p, r) or 0.0)
            tot_ret += len(ret)
            tot_found += found
            tot_rel += len(rel)
        n = len(queries) or 1
        points.append(
            SweepPoint(
                threshold=round(float(t), 6),
                precision=sum(ps) / n,
                recall=sum(rs) / n,
                f1=sum(fs) / n,
                micro_precision=tot_found / tot_ret if tot_ret else None,
                micro_recall=tot_found / tot_rel if tot_rel else 0.0,
                retrieved=tot_ret,
            )
        )
    return points
