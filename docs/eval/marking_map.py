"""Research script (issue 13): a second query vector for marking only, trained against non-entity spans.

``span_negatives.py`` showed that training against non-entity (O) spans makes marks more precise,
but the same threshold also returns passages and the ``--all`` sets got worse; keeping the old
vectors for returning and new ones for marking would need a second vector per span. A map on the
*type* side needs no second stored vector: this script trains ``t' = unit(t + W t + b)`` (W, b
zero at step 0) with span_negatives' loss (O spans as negatives of every type in type -> span),
the stored span vectors fixed. A search would then *return* and *rank* passages exactly as
shipped (type vector t, the shipped thresholds) and *mark* the mentions of a returned passage whose
similarity to t' passes a marking threshold m of its own, calibrated on the validation split's
unseen types for the best span F1 (the marking rule of the latest rounds).

R-Precision and set F1 are unchanged by construction; printed: span hit, highlight precision and
span F1 on validation (where m is chosen), the wide validation split (a check) and the dev sets.

    python docs/eval/marking_map.py --data ../shared/data --cache .cache/span-negatives.pkl

``--cache`` is ``span_negatives.py``'s (the encoded sets and training spans; made here when missing,
about 2 minutes on 2 cores); the rest takes about 2.5 minutes for two O shares at two step counts.
The cache holds the benchmarks as they were judged when it was made: delete it after a change to
how ``nerindex eval`` judges merged files (a stale one gave the wider split's old figures).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from indexer.assets import default_model_dir  # noqa: E402
from indexer.encoder import OnnxEncoder  # noqa: E402
from indexer.evaluation.calibration import calibrate  # noqa: E402
from indexer.evaluation.metrics import Ranked, ScoredSpan, macro, score_query  # noqa: E402
from indexer.evaluation.seen_types import group_of, training_from_card  # noqa: E402
from marking_rules import WIDE_VALIDATION  # noqa: E402
from span_negatives import TRAIN_FILE, train_maps, training_spans  # noqa: E402
from template_ensembles import encode  # noqa: E402
from two_tier import DEV, SETS  # noqa: E402
from type_side import TypeSide  # noqa: E402  (unit(t + W t + b), the identity at the start)


def runs_of(enc: OnnxEncoder, sets: dict, names: tuple[str, ...], training, group: str,
            mark_of: Callable[[np.ndarray], np.ndarray]) -> list[tuple]:  # fmt: skip
    """Per query of ``group``: (bench, query, rows); a row per passage judged for it: (encoded passage,
    hybrid score, best mention similarity, [(mention, similarity, marking similarity)])."""
    out = []
    for name in names:
        data = sets[name]
        bench = data["bench"]
        for query in bench.scored_queries():
            if group_of(query, training) != group:
                continue
            q = enc.embed_types([query.text])[0]
            qm = mark_of(q)
            w = enc.info.passage_weight_for(query.text)
            psims = data["passages"] @ q
            rows = []
            scope = bench.judged.get(query.id)  # a merged split judges a type on the files that label it
            for doc, vectors, p in zip(data["docs"], data["spans"], psims):
                if vectors is None or (scope is not None and doc.passage.id not in scope):
                    continue
                sims, msims = vectors @ q, vectors @ qm
                ment = [i for i, s in enumerate(doc.spans) if s.mention]
                rows.append((doc, float(sims.max()) + w * float(p),
                             max((float(sims[i]) for i in ment), default=float("-inf")),
                             [(doc.spans[i], float(sims[i]), float(msims[i])) for i in ment]))
            out.append((bench, query, rows))
    return out


def figures(runs: list[tuple], threshold: float, mark_threshold: float | None) -> dict:
    """Macro figures with passages returned at ``threshold`` (shipped sims), marked at
    ``mark_threshold`` (marking sims; None: the shipped rule)."""
    scores = []
    for bench, query, rows in runs:
        ranking = []
        for doc, score, best, spans in rows:
            if mark_threshold is None:
                marks = tuple(ScoredSpan(s.start, s.end, x) for s, x, _ in spans)
            else:
                marks = tuple(ScoredSpan(s.start, s.end, m - mark_threshold + threshold) for s, _, m in spans)
            ranking.append(Ranked(doc.passage.id, score, marks, best))
        ranking.sort(key=lambda r: -r.score)
        scores.append(score_query(ranking, bench.qrels[query.id], threshold=threshold,
                                  gold_spans=bench.gold.get(query.id, {}), with_spans=True))
    hit = macro(s.span_hit_rate for s in scores) or 0.0
    hp = macro(s.highlight_precision for s in scores) or 0.0
    return {"set_f1": round(macro(s.set_f1 for s in scores), 4), "hit": round(hit, 4), "hlP": round(hp, 4),
            "span_f1": round(2 * hit * hp / (hit + hp) if hit + hp else 0.0, 4)}


def calibrated_threshold(runs: list[tuple]) -> float:
    """The threshold ``nerindex eval --calibrate``'s rule picks for these queries (best macro set F1)."""
    rankings = {}
    rel = {}
    for bench, query, rows in runs:
        key = f"{bench.name}/{query.id}"
        rankings[key] = sorted((Ranked(d.passage.id, sc, (), b) for d, sc, b, _ in rows), key=lambda r: -r.score)
        rel[key] = bench.qrels[query.id]
    return calibrate(rankings, rel)[0].threshold


def marking_vector(type_map: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """The marking vector of a type vector: ``type_map`` applied to it."""
    @torch.no_grad()
    def apply(q: np.ndarray) -> np.ndarray:
        return type_map(torch.from_numpy(np.asarray(q, dtype=np.float32))[None])[0].numpy()

    return apply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    ap.add_argument("--cache", type=Path, required=True, help="span_negatives.py's cache (made when missing)")
    ap.add_argument("--limit", type=int, default=8000, help="training passages encoded when the cache is made")
    ap.add_argument("--o-share", type=float, nargs="*", default=[0.5, 0.8])
    ap.add_argument("--steps", type=int, nargs="*", default=[400, 1600])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--groups", nargs="*", default=["unseen"])
    args = ap.parse_args()
    t0 = time.monotonic()
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    training = training_from_card(enc.info.card)
    if args.cache.exists():
        sets, train = pickle.loads(args.cache.read_bytes())
        if "wide" not in sets:  # an audit: a KeyError later on
            raise SystemExit(f"{args.cache} holds no wide validation split: make it with "
                             "span_negatives.py --wide-validation, or give another --cache")
    else:
        files = {**SETS, "wide": [*SETS["validation"], *WIDE_VALIDATION]}
        sets = {name: encode([args.data / f for f in fs], name, enc) for name, fs in files.items()}
        train = training_spans(enc, args.data / TRAIN_FILE, args.limit)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        args.cache.write_bytes(pickle.dumps((sets, train)))
    phrases = sorted({p for labels in train["labels"] for p in labels if p != "<entity>"})
    views = [enc.embed_phrases(phrases), enc.embed_phrases([(enc.info.unseen_type_template or "{}").format(p) for p in phrases])]
    type_vecs = np.concatenate(views).astype(np.float32)
    grid = [round(x, 3) for x in np.arange(0.0, 0.8, 0.01)]
    results = {}

    def row(mark_of, label):
        out = {}
        for group in args.groups:
            val = runs_of(enc, sets, ("validation",), training, group, mark_of)
            t = calibrated_threshold(val)
            best = max(grid, key=lambda m: (figures(val, t, m)["span_f1"], m))
            names = {"validation": val, "wide": runs_of(enc, sets, ("wide",), training, group, mark_of),
                     "dev": runs_of(enc, sets, DEV, training, group, mark_of)}
            curve = {k: [(m, figures(r, t, m)) for m in grid[10:45]] for k, r in names.items()}
            frontier = {k: {str(h): max((f["hlP"] for _, f in c if f["hit"] >= h), default=None) for h in (0.5, 0.6, 0.7, 0.75)}
                        for k, c in curve.items()}
            out[group] = {"threshold": t, "mark_threshold": best, "best hlP at hit >=": frontier,
                          **{f"{k} shipped-rule": figures(r, t, None) for k, r in names.items()},
                          **{f"{k} marked at m": figures(r, t, best) for k, r in names.items()}}
            print(label, group, json.dumps(out[group]), f"{time.monotonic() - t0:.0f}s", file=sys.stderr)
        return out

    results["identity"] = row(lambda q: q, "identity")
    for share in args.o_share:
        maps = train_maps(train, type_vecs, phrases, o_share=share, steps=args.steps, batch=args.batch, lr=args.lr,
                          seed=args.seed, make=lambda: TypeSide(type_vecs.shape[1]), side="type")
        for step, tm in maps.items():
            label = f"O share {share}, step {step}"
            results[label] = row(marking_vector(tm), label)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
