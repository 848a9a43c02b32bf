"""Scoring one run's rankings (pure): per-type scores, macro summaries per type group, threshold
curves, calibration on the seen types, and the entity detector's recall of gold mentions."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .benchmark_io import Benchmark
from .calibration import DEFAULT_GRID, calibrate, point_dict
from .methods import METHODS, Method
from .metrics import QueryScores, Ranked, macro_scores, match_spans, score_query, sweep_thresholds
from .seen_types import GROUPS, Training, group_of


Threshold = float | Callable[[str], float] | None  # one value, or one per type phrase (the system's rule)


def score_methods(
    bench: Benchmark,
    rankings: Mapping[str, Mapping[str, Sequence[Ranked]]],
    thresholds: Mapping[str, Threshold],
    training: Training,
    familiarity: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Per-type scores, macro summaries per group, and threshold curves, as JSON-ready data; each
    type's row names the threshold each method applied to it."""
    familiarity = familiarity or {}
    queries = bench.scored_queries()
    per_type = []
    by_method: dict[str, dict[str, list[QueryScores]]] = {
        m: {g: [] for g in ("all",) + GROUPS} for m in rankings
    }
    for q in queries:
        group = group_of(q, training)
        row: dict[str, Any] = {
            "query": q.id,
            "type": q.text,
            "labels": list(q.labels),
            "group": group,
            "relevant": len(bench.qrels[q.id]),
            "judged": len(bench.judged.get(q.id, bench.corpus)),
            "familiarity": round6(familiarity.get(q.text)),
            "thresholds": {},
            "scores": {},
        }
        for key, by_query in rankings.items():
            s, row["thresholds"][key] = _score_one(bench, q, key, by_query, thresholds.get(key))
            row["scores"][key] = s.to_dict()
            by_method[key]["all"].append(s)
            by_method[key][group].append(s)
        per_type.append(row)
    summary = {
        key: {g: macro_scores(rows) for g, rows in groups.items()} for key, groups in by_method.items()
    }
    relevant = {q.id: bench.qrels[q.id] for q in queries}
    thresholded = {key: by_query for key, by_query in rankings.items() if METHODS.get(key) and METHODS[key].thresholded}
    sweeps = {key: [point_dict(p) for p in sweep_thresholds(by_query, relevant, DEFAULT_GRID)]
              for key, by_query in thresholded.items()}  # every type at one threshold  # fmt: skip
    by_group = _group_sweeps(per_type, relevant, thresholded)
    fam_groups: dict[str, float | None] = {}
    for g in ("all",) + GROUPS:
        vals = [familiarity[r["type"]] for r in per_type if (g == "all" or r["group"] == g) and r["type"] in familiarity]
        fam_groups[g] = round6(float(np.mean(vals))) if vals else None
    return {
        "per_type": per_type,
        "summary": summary,
        "familiarity_by_group": fam_groups,
        "groups": {g: [r["type"] for r in per_type if r["group"] == g] for g in GROUPS},
        "skipped_queries": [q.text for q in bench.queries if not bench.qrels.get(q.id)],
        "sweeps": sweeps,
        "sweeps_by_group": by_group,
    }


def _group_sweeps(per_type: list[dict[str, Any]], relevant: Mapping[str, Any],
                  thresholded: Mapping[str, Mapping[str, Sequence[Ranked]]]) -> dict[str, dict[str, list]]:  # fmt: skip
    """group -> method -> the threshold curve over that group's types alone: its types are scored at
    the group's thresholds, which differ (one curve over all types misled the chart, an audit)."""
    by_group = {}
    for g in GROUPS:
        group_relevant = {r["query"]: relevant[r["query"]] for r in per_type if r["group"] == g}
        if group_relevant:
            by_group[g] = {key: [point_dict(p) for p in sweep_thresholds(by_query, group_relevant, DEFAULT_GRID)]
                           for key, by_query in thresholded.items()}  # fmt: skip
    return by_group


def _score_one(bench: Benchmark, q: Any, key: str, by_query: Mapping[str, Sequence[Ranked]],
               threshold: Threshold) -> tuple[QueryScores, float | None]:  # fmt: skip
    """One method's scores for one type, and the threshold applied to it (the value, or the
    system's rule for that phrase; none for ranking-only methods). A type with no gold mention has
    no span figures: a BEIR folder without ``entities`` (or a query without labels) scored every
    mark as wrong, highlight precision 0.000 (an audit)."""
    method = METHODS.get(key, Method(key, key, spans=False, thresholded=False))
    applied = (threshold(q.text) if callable(threshold) else threshold) if method.thresholded else None
    s = score_query(list(by_query.get(q.id, ())), bench.qrels[q.id], threshold=applied,
                    gold_spans=bench.gold.get(q.id) or None, with_spans=method.spans)  # fmt: skip
    return s, round6(applied)


def calibrate_methods(
    bench: Benchmark,
    rankings: Mapping[str, Mapping[str, Sequence[Ranked]]],
    training: Training,
    *,
    groups: Sequence[str] = ("seen",),
) -> dict[str, Any]:
    """Choose each thresholded method's threshold on the queries of ``groups`` (seen types)."""
    queries = [q for q in bench.scored_queries() if group_of(q, training) in groups]
    relevant = {q.id: bench.qrels[q.id] for q in queries}
    out: dict[str, Any] = {"types": [q.text for q in queries], "methods": {}}
    for key, by_query in rankings.items():
        method = METHODS.get(key)
        if method is None or not method.thresholded or not queries:
            continue
        chosen, curve = calibrate({q: by_query.get(q, ()) for q in relevant}, relevant)
        out["methods"][key] = {"chosen": point_dict(chosen), "curve": [point_dict(p) for p in curve]}
    return out


def round6(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def detection_by_query(bench: Benchmark, encoded: Sequence[Any]) -> dict[str, list[int]]:
    """Per query: [gold mentions, those overlapped by a stored span with IoU ≥ 0.5, those overlapped
    by a mention (a span the marking head proposed)].

    The entity detector bounds every span metric: a mention it does not propose can be found by no
    type vector, so its recall is reported per type and group beside the retrieval figures. With a
    candidate head the stored spans (what ranks) and the mentions (what is marked) differ.
    """
    spans_of = {e.passage.id: [(s.start, s.end) for s in e.spans] for e in encoded}
    marks_of = {e.passage.id: [(s.start, s.end) for s in e.spans if s.mention] for e in encoded}
    out: dict[str, list[int]] = {}
    for q in bench.scored_queries():
        gold = found = marked = 0
        for pid, mentions in bench.gold.get(q.id, {}).items():
            gold += len(mentions)
            found += match_spans(mentions, spans_of.get(pid, []))[0]
            marked += match_spans(mentions, marks_of.get(pid, []))[0]
        out[q.id] = [gold, found, marked]
    return out


def detection_summary(bench: Benchmark, counts: Mapping[str, Sequence[int]], training: Training) -> dict[str, Any]:
    """Detection recall (micro over mentions) per group and per type."""
    groups: dict[str, list[int]] = {}
    by_type = {}
    for q in bench.scored_queries():
        gold, found, *marked = counts.get(q.id, (0, 0))
        if not gold:
            continue
        by_type[q.text] = round(found / gold, 4)
        for g in ("all", group_of(q, training)):
            row = groups.setdefault(g, [0, 0, 0])
            row[0] += gold
            row[1] += found
            row[2] += marked[0] if marked else found
    return {
        "definition": "share of gold mentions overlapped (IoU >= 0.5) by a span the entity detector proposes "
                      "(recall: any stored span, candidates included; mention_recall: the marking head's)",
        "by_group": {g: {"mentions": n, "recall": round(f / n, 4), "mention_recall": round(m / n, 4)}
                     for g, (n, f, m) in groups.items()},
        "by_type": by_type,
    }  # fmt: skip
