"""Native hybrid top-k in Elasticsearch against the exact hybrid ranking, on labelled dev sets.

For every data file the sentences are encoded once with the model and written to a fresh
Elasticsearch index (the default ``int8_hnsw``, or ``--index-options``). For every query type the
exact ranking is computed in Python from the very same vectors (a passage matches when its best
span cos >= the threshold a search for the phrase uses, and ranks by best span + λ · passage cos,
λ the model's for the phrase: ``ModelInfo.threshold_for`` and ``passage_weight_for``) and
compared with what ``ElasticsearchStore.search`` returns (a span kNN plus a passage kNN, no
scripts):

- overlap@10: |native top 10 ∩ exact top 10| / min(10, exact matches),
- R-Precision vs exact: R = the exact matches (at most 10,000), share of the native top R that
  are exact matches (the kNN's recall of the match set),
- rank-identical: share of types whose native top 10 equals the exact top 10, in order,
- max |Δ score| over passages both return,
- and gold R-Precision (the labelled relevance of ``nerindex eval``) of both rankings.

    NERINDEX_ES_URL=http://127.0.0.1:9200 python bench/bench_es_hybrid.py \\
        ../shared/data/crossner/politics/dev.txt ../shared/data/crossner/literature/dev.txt \\
        ../shared/data/multiconer2_en/en-dev.conll

The indices are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

import numpy as np

from indexer.config import from_env, with_overrides
from indexer.encoder import OnnxEncoder
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.metrics import r_precision
from indexer.stores.base import SearchRequest
from indexer.stores.factory import open_elasticsearch
from bench_args import count, run  # noqa: E402


def exact_ranking(encoded, type_vector: np.ndarray, threshold: float, weight: float) -> list[tuple[str, float]]:
    """(id, best span + λ · passage cos) of every matching passage, best first, ties by id."""
    rows = []
    for doc in encoded:
        best = max((float(span.vector @ type_vector) for span in doc.spans), default=None)
        if best is None or best < threshold:
            continue
        passage = float(doc.vector @ type_vector) if doc.vector is not None else 0.0
        rows.append((doc.passage.id, best + weight * passage))
    return sorted(rows, key=lambda row: (-row[1], row[0]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+")
    ap.add_argument("--model", default=None)
    ap.add_argument("--index-options", default="int8_hnsw")
    ap.add_argument("--passage-weight", type=float, default=None, help="λ for every phrase (default: the model's per phrase)")
    ap.add_argument("--num-candidates", type=count, default=None,
                    help="kNN candidates per shard (default: the store's, max(300, 2 · limit))")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    settings = from_env()
    if not settings.es_url:  # before encoding anything (an audit: a traceback after the whole set was encoded)
        ap.error("set NERINDEX_ES_URL to the Elasticsearch server to measure (e.g. http://127.0.0.1:9200)")
    encoder = OnnxEncoder.from_dir(args.model or settings.model, device="cpu")
    info = encoder.info
    def weight_for(phrase: str) -> float:  # an audit: the card's one λ and threshold were used for every phrase
        return info.passage_weight_for(phrase) if args.passage_weight is None else args.passage_weight

    out: dict = {"model": f"{info.id} {info.version}",
                 "passage_weight": "per phrase" if args.passage_weight is None else args.passage_weight,
                 "threshold": "per phrase",
                 "index_options": args.index_options, "num_candidates": args.num_candidates, "sets": {}}
    for path in args.data:
        bench = benchmark_from_conll([path])
        began = time.perf_counter()
        encoded = encoder.encode(bench.corpus, batch_size=32)
        store = open_elasticsearch(with_overrides(settings, es_index=f"nerindex-bench-{uuid.uuid4().hex[:8]}"),
                                   index_options=args.index_options, num_candidates=args.num_candidates)
        try:
            store.check_model(info.stamp)
            assert all(o.ok for o in store.write(encoded))
            store.flush()
            server = ".".join(map(str, store.server_version()))
            rows = []
            for query in bench.scored_queries():
                vector = encoder.embed_types([query.text])[0]
                threshold, weight = info.threshold_for(query.text), weight_for(query.text)
                exact = exact_ranking(encoded, vector, threshold, weight)
                r = min(len(exact), 10_000)
                native = list(store.search(SearchRequest(
                    vector=vector, min_similarity=threshold, limit=max(r, 10), passage_weight=weight,
                ))) if r else []
                exact_ids, native_ids = [i for i, _ in exact], [h.id for h in native]
                exact_scores = dict(exact)
                common = [h for h in native if h.id in exact_scores]
                rows.append({
                    "type": query.text, "threshold": threshold, "passage_weight": weight,
                    "matches": len(exact),
                    "overlap@10": len(set(native_ids[:10]) & set(exact_ids[:10])) / min(10, len(exact)) if exact else 1.0,
                    "rprec_vs_exact": len(set(native_ids[:r]) & set(exact_ids)) / r if r else 1.0,
                    "top10_identical": native_ids[:10] == exact_ids[:10],
                    "max_score_diff": max((abs(h.score - exact_scores[h.id]) for h in common), default=0.0),
                    "gold_rprec_exact": r_precision(exact_ids, bench.qrels[query.id]),
                    "gold_rprec_native": r_precision(native_ids, bench.qrels[query.id]),
                })
        finally:
            store.flush()
            client = store.client.options(ignore_status=[404])
            for name in client.indices.get(index=f"{store.alias}-*").body:
                client.indices.delete(index=name)
            store.close()
        n = len(rows)
        summary = {
            "server": server, "passages": len(encoded), "spans": sum(len(e.spans) for e in encoded), "types": n,
            "overlap@10": round(float(np.mean([x["overlap@10"] for x in rows])), 4),
            "rprec_vs_exact": round(float(np.mean([x["rprec_vs_exact"] for x in rows])), 4),
            "top10_identical": f"{sum(x['top10_identical'] for x in rows)}/{n}",
            "max_score_diff": float(f"{max(x['max_score_diff'] for x in rows):.2g}"),
            "gold_rprec_exact": round(float(np.mean([x["gold_rprec_exact"] for x in rows])), 4),
            "gold_rprec_native": round(float(np.mean([x["gold_rprec_native"] for x in rows])), 4),
            "seconds": round(time.perf_counter() - began, 1),
        }
        out["sets"][path] = {"summary": summary, "types": rows}
        if not args.json:
            print(f"{path}: " + "  ".join(f"{k} {v}" for k, v in summary.items()), file=sys.stderr)
            for x in rows:
                if not x["top10_identical"] or x["rprec_vs_exact"] < 1:
                    print(f"    {x['type']}: matches {x['matches']}, overlap@10 {x['overlap@10']:.2f}, "
                          f"R-prec vs exact {x['rprec_vs_exact']:.3f}", file=sys.stderr)
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    run(main)
