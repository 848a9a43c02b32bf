"""Research script (issue 13): rank passages by other span-score rules, over every candidate span.

Not product code: the stores rank by ``best span similarity + λ · passage similarity`` over the
spans the detector kept (entity score ≥ ``detection_threshold``). This script encodes each set
once with the detection threshold lowered to ``--floor`` (so every candidate down to it has a
vector and its entity score), then ranks the passages of every query under several rules in numpy
and scores them with `nerindex eval`'s own R-Precision, per type group (seen, unseen, coarse as
`nerindex eval` assigns them). With rule ``gate:0.08`` it reproduces the system's figures for a model
with one λ and one threshold, such as 0.2.0 (EVALUATION.md's sections that use it were measured with
0.2.0). Model 0.4.0 chooses both by phrase (λ 0 and 0.38 for trained-on types, λ 1 and 0.21 for the
others); this script ranks every phrase with the trained-on λ unless ``--passage-weight`` is given,
and ``--marking`` calibrates one threshold, so with 0.4.0 its figures are not the system's (an audit:
``gate:0.08`` gives pooled unseen 0.583 against the system's 0.599).

Rules (``s`` = span similarity to the type vector, ``d`` = the span's entity score):

- ``gate:t``: spans with d ≥ t, ranked by s (what the stores do, with t the detection threshold);
- ``pen:β``: every span, ranked by s + β · ln d (a confident span needs less similarity);
- ``soft:β``: every span, s + β · min(0, ln(d / 0.08)) (spans the shipped detector keeps unchanged);
- ``gp:t,β``: spans with d ≥ t, s + β · ln d;
- ``dense``: no spans, every passage by its passage similarity (the dense passage baseline, so that
  ``--feedback`` can be measured on it too);
- any rule ``+base:α``: adds α · the similarity of the span's *untrained* vector (the backbone's
  span mean, the "untrained spans" baseline) to the type vector.

A passage scores its best span + λ · passage similarity (λ from the model, or ``--passage-weight``);
passages without a span are not ranked, as in the stores. ``--fusion K,W`` ranks every passage
by reciprocal-rank fusion instead, W / (K + its rank by best span) + 1 / (K + its rank by passage
similarity) (a passage without a span has no span rank). ``--feedback W`` searches twice, as
`nerindex search --feedback` does (``indexer/feedback.py``): the type vector moves towards the
passage vectors of the first ranking's top ``--feedback-top`` passages, and the second ranking (spans
and passages) uses the moved vector.

    python docs/eval/span_score_rules.py --data ../shared/data > rules.json
    python docs/eval/span_score_rules.py --data ../shared/data --marking gate:0.08 pen:0.05 > marking.json
    python docs/eval/span_score_rules.py --data ../shared/data --rules pen:0.03 pen:0.03+base:1 --feedback 1 > fb.json

prints one line per rule and set, and the JSON of every figure at the end (``--json`` only the JSON).
``--marking RULE…`` scores what a search returns and marks under those rules instead: each rule's
threshold (on its own span score) is calibrated as `nerindex eval --calibrate` does it (validation
split, seen types, best macro F1 of the returned sets, ties to the higher threshold), then the dev
sets give set F1, span hit rate and highlight precision per group at that threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from indexer.feedback import feedback_vector
from indexer.model_card import ModelCard

SETS = {  # name -> files under --data
    "crossner-politics-dev": ["crossner/politics/dev.txt"],
    "crossner-literature-dev": ["crossner/literature/dev.txt"],
    "multiconer-dev": ["multiconer2_en/en-dev.conll"],
    "wnut17-dev": ["wnut17/dev.conll"],
    "validation": ["multiconer2_en/en-train10.conll", "wnut17/dev.conll"],
}
RULES = ["gate:0.08", "gate:0.04", "gate:0.01", "gate:0.001"] + [f"pen:{b}" for b in (0.005, 0.01, 0.02, 0.03, 0.05)] \
    + [f"soft:{b}" for b in (0.01, 0.02, 0.05, 0.1)] \
    + [f"gp:{t},{b}" for t in (0.02, 0.01, 0.005) for b in (0.01, 0.02, 0.03, 0.05)]  # fmt: skip


def span_scores(rule: str, q: np.ndarray, encoded: dict) -> np.ndarray:
    """Each span's ranking score under ``rule`` for the type vector ``q``; -inf for spans it leaves out."""
    rule, _, extra = rule.partition("+base:")
    sims = encoded["vectors"] @ q
    if extra:
        sims = sims + float(extra) * (encoded["base"] @ q)
    det = encoded["det"]
    kind, _, arg = rule.partition(":")
    log_det = np.log(np.maximum(det, 1e-6))
    if kind == "gate":
        return np.where(det >= float(arg), sims, -np.inf)
    if kind == "pen":
        return sims + float(arg) * log_det
    if kind == "soft":
        return sims + float(arg) * np.minimum(0.0, log_det - np.log(0.08))
    if kind == "gp":
        floor, beta = (float(x) for x in arg.split(","))
        return np.where(det >= floor, sims + beta * log_det, -np.inf)
    raise ValueError(rule)


@dataclasses.dataclass(frozen=True)
class Combine:
    """How a passage's score is made from its spans and its own vector, and the feedback pass."""

    weight: float  # λ of best span + λ · passage similarity
    fusion: tuple[float, float] | None = None  # (K, W) of reciprocal-rank fusion, instead of λ
    feedback: float = 0.0  # Rocchio weight; 0 = one search
    feedback_top: int = 10


def _ranks_once(rule: str, q: np.ndarray, encoded: dict, how: Combine) -> tuple[np.ndarray, ...]:
    dense = encoded["passages"] @ q
    if rule == "dense":
        return np.full(len(encoded["det"]), -np.inf), np.full(len(dense), -np.inf), dense, np.argsort(-dense, kind="stable")
    scores = span_scores(rule, q, encoded)
    best = np.full(len(encoded["ids"]), -np.inf)
    np.maximum.at(best, encoded["passage"], scores)
    has_span = np.isfinite(best)
    if how.fusion is None:
        total = best + how.weight * dense
        ranked = np.nonzero(has_span)[0]
    else:
        k, w = how.fusion
        span_rank = np.empty(len(best))
        span_rank[np.argsort(-np.where(has_span, best, -np.inf), kind="stable")] = np.arange(len(best))
        dense_rank = np.empty(len(best))
        dense_rank[np.argsort(-dense, kind="stable")] = np.arange(len(best))
        total = np.where(has_span, w / (k + span_rank), 0.0) + 1.0 / (k + dense_rank)
        ranked = np.arange(len(best))
    return scores, best, total, ranked[np.argsort(-total[ranked], kind="stable")]


def ranks(rule: str, q: np.ndarray, encoded: dict, how: Combine) -> tuple[np.ndarray, ...]:
    """(each span's score, each passage's best span, its total, the ranked passages, best total
    first), after the feedback pass when ``how`` asks for one."""
    got = _ranks_once(rule, q, encoded, how)
    if not how.feedback:
        return got
    top = got[3][: how.feedback_top]
    return _ranks_once(rule, feedback_vector(q, encoded["passages"][top], how.feedback), encoded, how)


def ranking(rule: str, q: np.ndarray, encoded: dict, how: Combine) -> list[str]:
    """Passage ids, best first."""
    return [encoded["ids"][i] for i in ranks(rule, q, encoded, how)[3]]


def encode_set(files: list[Path], name: str, enc: OnnxEncoder, card: ModelCard) -> tuple:
    """(benchmark, encoded arrays, scored queries, their type vectors, their groups)."""
    bench = benchmark_from_conll(files, name=name)
    training = training_from_card(card)
    docs = enc.encode(bench.corpus, batch_size=32, with_base=True)
    encoded = {
        "ids": [d.passage.id for d in docs],
        "passages": np.stack([d.vector for d in docs]),
        "passage": np.array([i for i, d in enumerate(docs) for _ in d.spans], dtype=np.int64),
        "det": np.array([s.score for d in docs for s in d.spans], dtype=np.float32),
        "vectors": np.stack([s.vector for d in docs for s in d.spans]),
        "base": np.stack([s.base_vector for d in docs for s in d.spans]),
        "offsets": np.array([(s.start, s.end) for d in docs for s in d.spans], dtype=np.int64),
        "texts": [d.passage.text for d in docs],
    }
    queries = bench.scored_queries()
    return bench, encoded, queries, enc.embed_types([q.text for q in queries]), [group_of(q, training) for q in queries]


def ranked_with_spans(rule: str, q: np.ndarray, encoded: dict, how: Combine) -> list[Ranked]:
    """The rule's full ranking as `nerindex eval` scores it: each passage with its spans (rule score
    ≥ 0, the lowest threshold of the calibration grid) and its best span as the gated value."""
    scores, best, total, ranked = ranks(rule, q, encoded, how)
    spans: dict[int, list[ScoredSpan]] = {}
    for k in np.nonzero(scores >= 0)[0]:
        start, end = encoded["offsets"][k]
        spans.setdefault(int(encoded["passage"][k]), []).append(ScoredSpan(int(start), int(end), float(scores[k])))
    return [Ranked(encoded["ids"][i], float(total[i]), tuple(spans.get(int(i), ())), float(best[i])) for i in ranked]


def marking(rules: list[str], sets: dict[str, tuple], how: Combine, calibrate_on: tuple[str, ...] = ("seen",)) -> dict:
    """rule -> {"threshold", set -> group -> macro set F1, span hit rate, highlight precision}; each
    rule's threshold calibrated on the validation split's types of the groups ``calibrate_on``."""
    out: dict = {}
    for rule in rules:
        bench, encoded, queries, vectors, groups = sets["validation"]
        calib = {q.id: bench.judged_only(q.id, ranked_with_spans(rule, v, encoded, how))
                 for q, v, g in zip(queries, vectors, groups) if g in calibrate_on}
        chosen, _ = calibrate(calib, {q: bench.qrels[q] for q in calib})
        out[rule] = {"threshold": chosen.threshold}
        for name, (bench, encoded, queries, vectors, groups) in sets.items():
            per: dict[str, list] = {}
            for q, v, g in zip(queries, vectors, groups):
                per.setdefault(g, []).append(score_query(bench.judged_only(q.id, ranked_with_spans(rule, v, encoded, how)), bench.qrels[q.id],
                                                         threshold=chosen.threshold, gold_spans=bench.gold.get(q.id, {}),
                                                         with_spans=True))
            out[rule][name] = {g: {m: macro(getattr(x, m) for x in rows) for m in ("set_f1", "span_hit_rate", "highlight_precision")}
                               | {"n": len(rows)} for g, rows in per.items()}
    return out


def run_set(encoded_set: tuple, rules: list[str], how: Combine) -> dict[str, dict[str, list]]:
    """rule -> group -> [macro R-Precision, number of types]."""
    bench, encoded, queries, vectors, groups = encoded_set
    out: dict[str, dict[str, list]] = {}
    for rule in rules:
        per: dict[str, list[float]] = {}
        for q, v, g in zip(queries, vectors, groups):
            scope = bench.judged.get(q.id)
            ids = [i for i in ranking(rule, v, encoded, how) if scope is None or i in scope]
            per.setdefault(g, []).append(r_precision(ids, bench.qrels[q.id]))
        out[rule] = {g: [round(float(np.mean(x)), 4), len(x)] for g, x in per.items()}
    return out


DEV = ("crossner-politics-dev", "crossner-literature-dev", "multiconer-dev", "wnut17-dev")


def summary(results: dict, rule: str) -> str:
    """One line: the validation groups, unseen types per dev set, and the dev sets pooled per group
    (macro over all their types, as ``docs/eval/pool.py`` pools `nerindex eval` runs)."""
    cell = {name: results[name][rule] for name in results}
    pooled = {}
    for group in ("unseen", "seen", "coarse"):
        pairs = [cell[name][group] for name in DEV if group in cell[name]]
        pooled[group] = sum(v * n for v, n in pairs) / sum(n for _, n in pairs)
    per_set = " ".join(f"{label} {cell[name]['unseen'][0]:.3f}" for label, name in zip(("pol", "lit", "med"), DEV))
    val = cell["validation"]
    return (f"validation seen {val['seen'][0]:.3f} unseen {val['unseen'][0]:.3f} | unseen {per_set} | "
            f"dev pooled unseen {pooled['unseen']:.3f} seen {pooled['seen']:.3f} coarse {pooled['coarse']:.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ, help="shared/data folder")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    parser.add_argument("--floor", type=float, default=0.001, help="detection threshold to encode with")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--marking", nargs="+", metavar="RULE", help="score returned sets and marks under these rules")
    parser.add_argument("--calibrate-on", nargs="+", default=["seen"], choices=["seen", "unseen", "coarse"],
                        help="with --marking: the validation split's type groups the threshold is calibrated on")
    parser.add_argument("--rules", nargs="+", metavar="RULE", default=RULES, help="rules to rank by (default: the grid)")
    parser.add_argument("--passage-weight", type=float, default=None, help="λ (default: the model's)")
    parser.add_argument("--fusion", metavar="K,W", default=None, help="reciprocal-rank fusion of span and passage ranks instead of λ")
    parser.add_argument("--feedback", type=float, default=0.0, metavar="W", help="Rocchio weight of a second search (0: none)")
    parser.add_argument("--span-side", metavar="PREFIX", default=None,
                        help="span vectors from a span side saved by finetune_backbone.py --save ('shipped': the "
                             "shipped adapter, computed the same way); needs the [train] extra")
    parser.add_argument("--feedback-top", type=int, default=10, metavar="N", help="first-search passages the feedback uses")
    args = parser.parse_args()
    folder = args.model or default_model_dir()
    enc = OnnxEncoder.from_dir(folder, device="cpu")
    card = ModelCard.load(folder)
    enc.info = dataclasses.replace(enc.info, detection_threshold=args.floor)
    sets = {name: encode_set([args.data / f for f in files], name, enc, card) for name, files in SETS.items()}
    if args.span_side:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from finetune_backbone import replace_span_vectors

        left = replace_span_vectors(sets, args.span_side, Path(folder), enc.info.max_length)
        print(f"span side {args.span_side}: spans past max_length left with graph vectors {left}", file=sys.stderr)
    fusion = tuple(float(x) for x in args.fusion.split(",")) if args.fusion else None
    how = Combine(weight=enc.info.passage_weight if args.passage_weight is None else args.passage_weight,
                  fusion=fusion, feedback=args.feedback, feedback_top=args.feedback_top)  # fmt: skip
    head = {"floor": args.floor, "span_side": args.span_side} | dataclasses.asdict(how)
    if args.marking:
        marks = marking(args.marking, sets, how, tuple(args.calibrate_on))
        print(json.dumps(head | {"calibrate_on": args.calibrate_on, "marking": marks}, indent=1))
        return
    results = {name: run_set(encoded_set, args.rules, how) for name, encoded_set in sets.items()}
    if not args.json:
        for rule in args.rules:
            print(f"{rule:18s} " + summary(results, rule), file=sys.stderr)
    print(json.dumps(head | {"results": results}, indent=1))

if __name__ == "__main__":
    main()
