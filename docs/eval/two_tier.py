"""Research script (issue 13): rank over one detector's spans, mark only another detector's.

Model 0.3.0 (gold entity head) marks mentions well but proposes few literature and medical
mentions; the same span side with the silver entity head ranks better (0.593 pooled unseen) but
marks topic words (EVALUATION.md, "Model 0.3.0: the silver entity head that was not shipped").
This script measures the obvious combination without building it: each set is encoded by both
model folders (same span side, so the same span vectors up to int8 noise), and a passage is

- **ranked** by its best span over the union of both detectors' spans + λ · passage similarity,
- **returned** (``--all``) when that best span passes the threshold (``--return-by union``) or when
  its best *marking* span does (``--return-by mark``),
- **marked** only with the spans of the ``--mark`` model's detector that pass the threshold.

Thresholds are calibrated as `nerindex eval --calibrate` does, on the validation split: on its seen
types for trained-on phrases and on its unseen types for the others (the two-threshold rule), then
the dev sets give R-Precision, set F1, span hit rate and highlight precision per group, pooled over
the four dev sets as ``docs/eval/pool.py`` pools them. Rows for each model alone come from the same
encodings (``--rows``).

    python docs/eval/two_tier.py --data ../shared/data --silver-model runs/silver-combo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from indexer.assets import default_model_dir
from indexer.encoder import OnnxEncoder
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.calibration import calibrate
from indexer.evaluation.metrics import Ranked, ScoredSpan, macro, r_precision, score_query
from indexer.evaluation.seen_types import group_of, training_from_card

SETS = {  # as span_score_rules.py
    "crossner-politics-dev": ["crossner/politics/dev.txt"],
    "crossner-literature-dev": ["crossner/literature/dev.txt"],
    "multiconer-dev": ["multiconer2_en/en-dev.conll"],
    "wnut17-dev": ["wnut17/dev.conll"],
    "validation": ["multiconer2_en/en-train10.conll", "wnut17/dev.conll"],
}
DEV = tuple(SETS)[:4]
METRICS = ("r_precision", "set_f1", "span_hit_rate", "highlight_precision")


def encode(files: list[Path], name: str, encoders: dict[str, OnnxEncoder]) -> dict:
    """The benchmark, each model's spans per passage ((start, end) -> vector) and the passage vectors."""
    bench = benchmark_from_conll(files, name=name)
    out = {"bench": bench, "spans": {}}
    for key, enc in encoders.items():
        docs = enc.encode(bench.corpus, batch_size=32)
        out["spans"][key] = [{(s.start, s.end): s.vector for s in d.spans} for d in docs]
        out.setdefault("passages", np.stack([d.vector for d in docs]))  # the backbone's: same in both
        out.setdefault("ids", [d.passage.id for d in docs])
    return out


def ranking(data: dict, q: np.ndarray, rank_by: tuple[str, ...], mark: str, return_by: str, weight: float,
            need_mark: bool = False, discount: float = 0.0, mark_candidates: float | None = None) -> list[Ranked]:
    """Every passage with a ranking span (``need_mark``: and a marking span), best total first; marks
    and the returned-by value as described. ``discount``: a span that is not a marking span ranks at
    its similarity less this."""
    dense = data["passages"] @ q
    rows = []
    for i, pid in enumerate(data["ids"]):
        union = {}
        for key in rank_by:
            union.update(data["spans"][key][i])
        if not union or (need_mark and not data["spans"][mark][i]):
            continue
        marking = data["spans"][mark][i]
        best = max(float(v @ q) - (0.0 if k in marking else discount) for k, v in union.items())
        marks = tuple(ScoredSpan(a, b, float(v @ q)) for (a, b), v in data["spans"][mark][i].items())
        gate = best if return_by == "union" else max((s.similarity for s in marks), default=-1.0)
        if mark_candidates is not None:  # candidates marked too, at the threshold + this; the gate stays the mentions'
            marks += tuple(ScoredSpan(a, b, float(v @ q) - mark_candidates) for (a, b), v in union.items()
                           if (a, b) not in marking)
        rows.append(Ranked(pid, best + weight * float(dense[i]), marks, gate))
    return sorted(rows, key=lambda r: -r.score)


def evaluate(sets: dict, queries: dict, how: dict, info) -> dict:
    """Thresholds calibrated on the validation split (seen / unseen types), then dev figures per group.

    Each phrase is searched as the product does (``info``: the marking model's ``ModelInfo``): λ
    ``passage_weight_for`` it, and the seen threshold for a phrase the model was trained on (coarse
    types included), the unseen one for any other.
    """
    val = sets["validation"]
    thresholds = {}
    for group in ("seen", "unseen"):
        calib = {q.id: val["bench"].judged_only(q.id, ranking(val, v, **how, weight=info.passage_weight_for(q.text)))
                 for q, v, g in queries["validation"] if g == group}  # fmt: skip
        thresholds[group] = calibrate(calib, {q: val["bench"].qrels[q] for q in calib})[0].threshold
    per: dict[str, list[dict]] = {}
    for name in DEV:
        data = sets[name]
        for q, v, g in queries[name]:
            ranked = ranking(data, v, **how, weight=info.passage_weight_for(q.text))
            relevant = data["bench"].qrels[q.id]
            t = thresholds["seen" if info.is_trained_phrase(q.text) else "unseen"]  # the rule: trained-on phrase or not
            s = score_query(ranked, relevant, threshold=t, gold_spans=data["bench"].gold.get(q.id, {}), with_spans=True)
            per.setdefault(g, []).append({"r_precision": r_precision([r.id for r in ranked], relevant),
                                          **{m: getattr(s, m) for m in METRICS[1:]}, "set": name})  # fmt: skip
    out = {"thresholds": thresholds, "validation_r_precision": {
        g: _round(macro(r_precision([r.id for r in val["bench"].judged_only(q.id, ranking(val, v, **how, weight=info.passage_weight_for(q.text)))],
                                    val["bench"].qrels[q.id])
                        for q, v, gg in queries["validation"] if gg == g)) for g in ("seen", "unseen")}}
    for g, rows in per.items():
        out[g] = {m: _round(macro(r[m] for r in rows)) for m in METRICS} | {"n": len(rows)}
        out[g]["r_precision_by_set"] = {n: round(float(np.mean([r["r_precision"] for r in rows if r["set"] == n])), 4)
                                        for n in DEV if any(r["set"] == n for r in rows)}  # fmt: skip
    return out


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--gold-model", type=Path, default=None, help="the marking detector's model (default: the shipped one)")
    parser.add_argument("--silver-model", type=Path, required=True, help="the other detector's model (same span side)")
    parser.add_argument("--discounts", type=float, nargs="*", default=[],
                        help="only rows ranking candidates (not marking spans) at their similarity less each value")
    parser.add_argument("--mark-candidates", type=float, nargs="*", default=[],
                        help="only rows also marking candidates whose similarity passes the threshold + each value")
    args = parser.parse_args()
    encoders = {"gold": OnnxEncoder.from_dir(args.gold_model or default_model_dir(), device="cpu"),
                "silver": OnnxEncoder.from_dir(args.silver_model, device="cpu")}  # fmt: skip
    gold = encoders["gold"]
    training = training_from_card(gold.info.card)
    sets = {name: encode([args.data / f for f in files], name, encoders) for name, files in SETS.items()}
    queries = {}
    for name, data in sets.items():
        qs = data["bench"].scored_queries()
        vecs = gold.embed_types([q.text for q in qs])  # the type side is the backbone's: same in both
        queries[name] = [(q, v, group_of(q, training)) for q, v in zip(qs, vecs)]
    variants = {f"rank union, candidates less {d}, mark gold, return by mark": {
        "rank_by": ("gold", "silver"), "mark": "gold", "return_by": "mark", "discount": d} for d in args.discounts}
    variants.update({f"rank union, mark gold + candidates at threshold + {d}, return by mark": {
        "rank_by": ("gold", "silver"), "mark": "gold", "return_by": "mark", "mark_candidates": d} for d in args.mark_candidates})
    variants = variants if args.discounts or args.mark_candidates else {
        "gold alone (0.3.0)": {"rank_by": ("gold",), "mark": "gold", "return_by": "union"},
        "silver alone": {"rank_by": ("silver",), "mark": "silver", "return_by": "union"},
        "rank union, mark gold, return by union": {"rank_by": ("gold", "silver"), "mark": "gold", "return_by": "union"},
        "rank union, mark gold, return by mark": {"rank_by": ("gold", "silver"), "mark": "gold", "return_by": "mark"},
        "rank silver, mark gold, return by mark": {"rank_by": ("silver",), "mark": "gold", "return_by": "mark"},
        "rank union, mark gold, only passages with a mark": {"rank_by": ("gold", "silver"), "mark": "gold",
                                                             "return_by": "mark", "need_mark": True},
    }
    results = {}
    for label, how in variants.items():
        results[label] = r = evaluate(sets, queries, how, gold.info)
        u, s = r["unseen"], r["seen"]
        print(f"{label:42s} thr {r['thresholds']['seen']:.2f}/{r['thresholds']['unseen']:.2f} | unseen R-Prec {u['r_precision']:.3f} "
              f"({' / '.join(f'{v:.3f}' for v in u['r_precision_by_set'].values())}) set F1 {u['set_f1']:.3f} "
              f"hit {u['span_hit_rate']:.3f} hlP {u['highlight_precision']:.3f} | seen R-Prec {s['r_precision']:.3f} "
              f"set F1 {s['set_f1']:.3f} hit {s['span_hit_rate']:.3f} | validation R-Prec seen/unseen "
              f"{r['validation_r_precision']['seen']:.3f}/{r['validation_r_precision']['unseen']:.3f}", file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
