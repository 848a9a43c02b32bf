"""Hybrid scoring on labelled data: passage score = best span similarity + λ · passage similarity.

Prints R-Precision (macro over types, seen/unseen/coarse apart as in ``nerindex eval``) of span-only
(λ = 0), dense passage retrieval and hybrid scoring for each model and λ, so the λ a model stores
(``training.figures.hybrid.passage_weight``, chosen on held-out training types) can be checked on
zero-shot sets before the stores implement it. Seen types are the gold training types of the first
model unless ``--train-types`` says otherwise, so every model is grouped alike.

    python bench/bench_hybrid.py --model indexer/assets/default_model --model runs/silver-model \\
        ../shared/data/crossner/politics/dev.txt ../shared/data/crossner/literature/dev.txt \\
        ../shared/data/multiconer2_en/en-dev.conll
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from indexer.encoder import OnnxEncoder
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.metrics import r_precision
from bench_args import run  # noqa: E402

GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--train-types", help="comma-separated seen types (default: first model's gold types)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    encoders = [OnnxEncoder.from_dir(m, device="cpu") for m in args.model]
    if args.train_types:
        seen = {t.strip() for t in args.train_types.split(",")}
    else:
        seen = set(encoders[0].info.training_types)
    out: dict = {}
    for path in args.data:
        bench = benchmark_from_conll([path])
        queries = bench.scored_queries()
        ids = [p.id for p in bench.corpus]
        for model_path, enc in zip(args.model, encoders):
            # λ per group, as searches apply it (ModelInfo.passage_weight_for); an audit: the training
            # figures' one λ (1.0) was printed for a model whose trained-on phrases search with 0
            info = enc.info
            lam_model = {"seen": info.passage_weight, "unseen": info.passage_weight if info.unseen_passage_weight is None
                         else info.unseen_passage_weight}
            encoded = enc.encode(bench.corpus, batch_size=32)
            pv = np.stack([e.vector for e in encoded])
            rows: dict[str, dict[str, list[float]]] = {}
            for q in queries:
                group = "coarse" if q.coarse else ("seen" if q.text in seen else "unseen")
                tv = enc.embed_types([q.text])[0]
                span = np.array([max((float(s.vector @ tv) for s in e.spans), default=-1.0) for e in encoded])
                dense = pv @ tv
                rel = bench.qrels[q.id]
                scores = {"dense": dense, **{f"hybrid_{lam:g}": span + lam * dense for lam in GRID}}
                for name, sc in scores.items():
                    ranked = [ids[i] for i in np.argsort(-sc, kind="stable")]
                    for g in (group, "all"):
                        rows.setdefault(g, {}).setdefault(name, []).append(r_precision(ranked, rel))
            res = {g: {k: round(float(np.mean(v)), 4) for k, v in d.items()} | {"n": len(next(iter(d.values())))}
                   for g, d in rows.items()}  # fmt: skip
            out.setdefault(path, {})[model_path] = {"model_lambda": lam_model, "r_precision": res}
            if not args.json:
                print(f"{path}  {model_path}  (model λ: {lam_model})", file=sys.stderr)
                for g, d in res.items():
                    cells = "  ".join(f"{k.replace('hybrid_', 'λ=')}:{v:.3f}" for k, v in d.items() if k != "n")
                    print(f"  {g:7s} n={d['n']:<3d} {cells}")
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    run(main)
