"""Research script (issue 13): how much of the unseen span-hit gap detection could close.

Span hit (EVALUATION.md) counts the gold mentions of a returned relevant passage that a mark
covers. ``marking_rules.py --boundaries`` found that about one unmarked mention in ten is a long
name whose detected span is the name inside it ("1983 United Kingdom general election" stored as
"United Kingdom"). This script asks what better detection could give at most, with the shipped span
side and thresholds and the ``--all`` rule (a passage is returned when one of its mentions passes
the threshold; those mentions are its marks), on CrossNER, whose unseen types hold those names:

- **shipped**: the model's decoding (mentions at ``detection_threshold``, candidates at
  ``candidate_threshold``, nested);
- **extend >= tau**: each mention also stores the best-scoring span that contains it (entity score
  ``>= tau``, within the span width, crossing no kept span) as a mention: a rule for long names;
- **oracle**: every gold mention of any type that is a candidate span (entity or candidate score
  ``>= 0.005``, the probe's floor) stored as a mention, with the vector the span side gives it in
  its passage: detection made perfect, the span-type space unchanged.

Every candidate span is scored and embedded by the whole graph in its window (as the eval's
``--all`` path would store it). Scored with ``nerindex eval``'s ``score_query``, macro over the
unseen types of each file, pooled over the dev files as ``pool.py`` pools them; CrossNER's train
splits (never trained on, not the dev sets) are the wider validation split of ``marking_rules.py``.

    python docs/eval/detection_ceiling.py --data ../shared/data [--cache .cache/ceiling.pkl]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

from indexer.assets import default_model_dir
from indexer.encoder import CANDIDATE_OUTPUT, OnnxEncoder, _token_arrays
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.metrics import Ranked, ScoredSpan, macro, score_query
from indexer.spans import decode_spans

DEV = ["crossner/politics/dev.txt", "crossner/literature/dev.txt", "multiconer2_en/en-dev.conll"]
WIDE_VALIDATION = ["crossner/politics/train.txt", "crossner/literature/train.txt"]
METRICS = ("span_hit_rate", "highlight_precision", "set_f1")
FLOOR = 0.005  # candidates kept by the probe: entity or candidate score at least this


def probe(enc: OnnxEncoder, path: Path) -> dict:
    """Every candidate span of a file scoring ``>= FLOOR``: its characters, both scores, its vector."""
    bench = benchmark_from_conll([str(path)])
    rows = []
    for i, passage in enumerate(bench.corpus):
        parts = []
        for item in enc._plan(i, passage)[1]:
            if not len(item.spans):
                continue
            ids, mask = _token_arrays([item])
            feeds = {"input_ids": ids, "attention_mask": mask, "span_starts": item.spans[None, :, 0].astype(np.int64),
                     "span_ends": item.spans[None, :, 1].astype(np.int64)}  # fmt: skip
            score, vector, wide = (a[0] for a in enc.session.run(["span_scores", "span_vectors", CANDIDATE_OUTPUT], feeds))
            keep = np.maximum(score, wide) >= FLOOR
            parts.append((item.chars[keep], score[keep], wide[keep], vector[keep]))
        chars, score, wide, vector = (np.concatenate([p[k] for p in parts]) if parts else None for k in range(4))
        rows.append((passage.id, chars, score, wide, vector))
    queries = [q for q in bench.queries if not q.coarse and bench.qrels[q.id] and not enc.info.is_trained_phrase(q.text)]
    return {"bench": bench, "rows": rows, "queries": queries, "vectors": enc.embed_types([q.text for q in queries]),
            "thresholds": [enc.info.threshold_for(q.text) for q in queries]}  # fmt: skip


def stored(chars, score, wide, *, detection: float, candidate: float, extend: float | None = None,
           promote: float | None = None, gold: set[tuple[int, int]] = frozenset()) -> list[int]:
    """Indices of the spans a rule stores as mentions (candidates are never marked)."""
    spans = [(int(c[0]), int(c[1]), float(s), float(w), k) for k, (c, s, w) in enumerate(zip(chars, score, wide))]
    decoded = decode_spans(spans, detection, candidate, nested=True)
    mentions = [sp[4] for sp, is_mention in decoded if is_mention or promote is not None and sp[3] >= promote]
    taken = [spans[k][:2] for k in mentions]
    out = list(mentions)
    if extend is not None:
        for k in mentions:
            s, e = spans[k][:2]
            wider = [j for j in range(len(spans)) if j not in out and spans[j][0] <= s and e <= spans[j][1]
                     and spans[j][:2] != (s, e) and spans[j][2] >= extend]  # fmt: skip
            if not wider:
                continue
            j = max(wider, key=lambda j: spans[j][2])
            a, b = spans[j][:2]
            if not any(a < te and ts < b and not (ts <= a and b <= te or a <= ts and te <= b) for ts, te in taken):
                out.append(j)
                taken.append((a, b))
    out += [j for j in range(len(spans)) if j not in out and spans[j][:2] in gold]
    return out


def figures(data: dict, rule: dict) -> dict[str, dict[str, float | None]]:
    """Span hit, highlight precision and set F1 of each of the file's unseen types under ``rule``."""
    bench, every_gold = data["bench"], {}
    if rule.get("oracle"):
        for per in bench.gold.values():
            for pid, spans in per.items():
                every_gold.setdefault(pid, set()).update((int(a), int(b)) for a, b in spans)
    kept = []
    for pid, chars, score, wide, vector in data["rows"]:
        if chars is None:
            continue
        ks = stored(chars, score, wide, detection=rule["detection"], candidate=rule["candidate"],
                    extend=rule.get("extend"), promote=rule.get("promote"), gold=every_gold.get(pid, set()))  # fmt: skip
        if ks:
            kept.append((pid, chars[ks], vector[ks]))
    out = []
    for query, q, t in zip(data["queries"], data["vectors"], data["thresholds"]):
        ranking = []
        for pid, chars, vectors in kept:
            sims = vectors @ q
            spans = tuple(ScoredSpan(int(c[0]), int(c[1]), float(s)) for c, s in zip(chars, sims))
            ranking.append(Ranked(pid, float(sims.max()), spans))
        ranking.sort(key=lambda r: -r.score)
        out.append(score_query(ranking, bench.qrels[query.id], threshold=t, gold_spans=bench.gold.get(query.id, {}),
                               with_spans=True))  # fmt: skip
    return {query.text: {k: getattr(s, k) for k in METRICS} for query, s in zip(data["queries"], out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--model", type=Path, default=default_model_dir())
    parser.add_argument("--extend", type=float, nargs="*", default=[0.04, 0.02, 0.01, 0.005])
    parser.add_argument("--promote", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.9],
                        help="candidates whose candidate score passes this stored as mentions")
    parser.add_argument("--cache", type=Path, default=None, help="a pickle of the probed spans, made once")
    args = parser.parse_args()
    enc = OnnxEncoder.from_dir(args.model, device="cpu", threads=2)
    if args.cache and args.cache.exists():
        sets = pickle.loads(args.cache.read_bytes())
    else:
        sets = {f: probe(enc, args.data / f) for f in DEV + WIDE_VALIDATION}
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            args.cache.write_bytes(pickle.dumps(sets))
    base = {"detection": enc.info.detection_threshold, "candidate": enc.info.candidate_threshold}
    rules = {"shipped": base, **{f"extend >= {t}": {**base, "extend": t} for t in args.extend},
             **{f"promote >= {c}": {**base, "promote": c} for c in args.promote}, "oracle": {**base, "oracle": True}}
    results = {}
    for name, rule in rules.items():
        per_file = {f: figures(sets[f], rule) for f in sets}
        row = {}  # pooled as pool.py pools: macro over type/set pairs
        for split, files in (("dev", DEV), ("wide validation", WIDE_VALIDATION)):
            pairs = [v for f in files for v in per_file[f].values()]
            row[split] = {k: round(macro(v[k] for v in pairs), 4) for k in METRICS} | {"pairs": len(pairs)}
        results[name] = {"pooled": row, "per_file": per_file}
        print(f"{name:18} " + "   ".join(f"{s}: span hit {v['span_hit_rate']:.3f}  highlight P {v['highlight_precision']:.3f}  "
                                          f"set F1 {v['set_f1']:.3f}" for s, v in row.items()), file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
