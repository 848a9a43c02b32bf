"""Elasticsearch against the embedded store on the same synthetic passages: bulk indexing, top-10 kNN.

Passages as bench_search.py makes them (span vectors drawn around 200 type centres plus noise,
384 dims), here 9 spans each and three metadata fields, go through each store's real write path:
``ElasticsearchStore.write`` (``streaming_bulk``, 200 passages a request, refresh relaxed during
the load) and ``EmbeddedStore.write``, batch by batch, each timed alone. Both times run until the passages are
searchable: Elasticsearch's final refresh, and the embedded store's ``prepare`` (its int8 segments and,
from 300k spans, its ANN index, which ``nerindex index`` builds at its end), both included. Then, after a warm-up, top-10
searches through each store's ``search`` (what ``nerindex search`` runs: nested kNN with inner
hits on Elasticsearch; on the embedded store exact, or its ANN index from 300k spans on) with and without a metadata filter, repeated,
and how many of the exact top 10 Elasticsearch's approximate kNN finds (recall@10).

    python bench/bench_es.py --es-url http://127.0.0.1:9201 --passages 100000 --json

The load average is recorded with every phase: on a shared machine the figures are only as quiet
as it was. The index is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from bench_search import CENTRES, DIMS, STAMP, load, passages, timed_searches, unit_rows

from indexer.config import resolve
from indexer.stores.base import SearchRequest
from indexer.stores.filter_rules import Filters
from indexer.stores.embedded import EmbeddedStore
from indexer.stores.factory import open_elasticsearch
from bench_args import count, count_list, run  # noqa: E402

SOURCES = ("wiki", "news", "forum", "blog")
FILTER = {"part": "3"}  # one passage in ten


def metadata(pid: int) -> dict[str, str]:
    return {"part": str(pid % 10), "source": SOURCES[pid % len(SOURCES)], "year": str(1990 + pid % 35)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def note(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] load {load()}: {message}", file=sys.stderr, flush=True)


def summary(runs: list[list[float]]) -> dict[str, Any]:
    """p50/p95 of each repeat; their median and range across repeats."""
    p50 = [pct(ms, 50) for ms in runs]
    p95 = [pct(ms, 95) for ms in runs]
    return {
        "p50_ms": round(statistics.median(p50), 1),
        "p95_ms": round(statistics.median(p95), 1),
        "p50_range_ms": [round(min(p50), 1), round(max(p50), 1)],
        "p95_range_ms": [round(min(p95), 1), round(max(p95), 1)],
        "per_repeat_p50_ms": [round(x, 1) for x in p50],
        "per_repeat_p95_ms": [round(x, 1) for x in p95],
    }


def recall_at_10(approximate: list[list[str]], exact: list[list[str]]) -> float | None:
    found = [len(set(a) & set(e)) / len(e) for a, e in zip(approximate, exact) if e]
    return round(float(np.mean(found)), 4) if found else None  # no query matched: nothing to measure (NaN is no JSON)


def es_index_stats(store) -> dict[str, Any]:
    stats = store.client.indices.stats(index=store.alias, metric=["store", "segments", "docs"]).body
    (index,) = stats["indices"].values()
    primaries = index["primaries"]
    jvm = next(iter(store.client.nodes.stats(node_id="_local", metric="jvm").body["nodes"].values()))["jvm"]
    return {
        "segments": primaries["segments"]["count"],
        "lucene_docs": primaries["docs"]["count"],  # passages + nested spans
        "store_mb": round(primaries["store"]["size_in_bytes"] / 2**20, 1),
        "heap_used_percent": jvm["mem"]["heap_used_percent"],
        "heap_max_mb": round(jvm["mem"]["heap_max_in_bytes"] / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=count, default=100_000)
    parser.add_argument("--es-url", default=None, help="default: NERINDEX_ES_URL")
    parser.add_argument("--spans-per-passage", type=count, default=9)
    parser.add_argument("--index-options", default="int8_hnsw", help="dense_vector index type (the store's default)")
    parser.add_argument("--queries", type=count, default=30, help="queries per figure and repeat")
    parser.add_argument("--repeats", type=count, default=3)
    parser.add_argument("--warmup", type=int, default=10, help="queries of each kind before timing")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--batch", type=count, default=2000, help="passages per store.write call")
    parser.add_argument("--no-embedded", action="store_true", help="skip the embedded store")
    parser.add_argument("--keep", action="store_true", help="keep the Elasticsearch index")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--num-candidates", type=count_list, default=[],
                        help="comma-separated num_candidates to time beside the store's default, each through its "
                             "own handle on the same index, run after the others in each repeat (e.g. 100,300)")
    args = parser.parse_args()

    settings = resolve(es_url=args.es_url, es_index=f"nerindex-bench-{uuid.uuid4().hex[:8]}")
    if not settings.es_url:
        parser.error("no Elasticsearch URL: pass --es-url or set NERINDEX_ES_URL")
    rng = np.random.default_rng(0)
    centres = unit_rows(rng.standard_normal((CENTRES, DIMS)))
    spans = args.passages * args.spans_per_passage
    result: dict[str, Any] = {
        "passages": args.passages, "spans": spans, "dims": DIMS, "index_options": args.index_options,
        "machine": {"cpus": os.cpu_count(), "load_start": load()},
    }
    es = open_elasticsearch(settings, index_options=args.index_options, request_timeout=600.0)
    tmp = tempfile.TemporaryDirectory(prefix="bench-es-")
    embedded = None if args.no_embedded else EmbeddedStore.open(Path(tmp.name) / "store")
    extra: list = []  # handles with other num_candidates on the same index
    try:
        result["server"] = ".".join(map(str, es.server_version()))
        es.check_model(STAMP)
        if embedded is not None:
            embedded.check_model(STAMP)
        es_s = emb_s = 0.0
        failed = written = 0
        for start in range(0, args.passages, args.batch):
            docs = passages(start, min(args.batch, args.passages - start), rng, centres,
                            spans_per_passage=args.spans_per_passage, fields=metadata)
            began = time.perf_counter()
            # new passages, written as `nerindex index` writes them (not replacing: "create" actions;
            # a replacing write also looks up the stored ids first, one _mget a request)
            outcomes = es.write(docs, replace=False)
            es_s += time.perf_counter() - began
            failed += sum(not o.ok for o in outcomes)
            if embedded is not None:
                began = time.perf_counter()
                embedded.write(docs, replace=False)
                emb_s += time.perf_counter() - began
            written += len(docs)
            if written % (args.batch * 5) == 0 or written == args.passages:
                note(f"{written} passages written (Elasticsearch {es_s:.0f} s, embedded {emb_s:.0f} s)")
        began = time.perf_counter()
        es.flush()  # restore the refresh interval, refresh: searchable from here on
        refresh_s = time.perf_counter() - began
        total = es_s + refresh_s
        result["es_index"] = {
            "bulk_s": round(es_s, 1), "final_refresh_s": round(refresh_s, 1),
            "docs_per_s": round(args.passages / total, 1), "spans_per_s": round(spans / total, 1),
            "failed": failed, "load_after": load(), **es_index_stats(es),
        }
        counts = es.counts()
        result["es_index"]["counted"] = {"passages": counts.passages, "spans": counts.spans}
        if embedded is not None:
            # until searchable, as Elasticsearch's figure: the search structures `nerindex index` builds
            # at its end (Store.prepare: int8 segments, the ANN index from 300k spans), timed here too
            # (an audit: they were left to the first search, and the ratio compared unequal work)
            began = time.perf_counter()
            embedded.prepare()
            prepare_s = time.perf_counter() - began
            began = time.perf_counter()
            list(embedded.search(SearchRequest(centres[0], args.threshold, limit=10)))
            load_s = time.perf_counter() - began
            ready = emb_s + prepare_s
            result["embedded_index"] = {
                "write_s": round(emb_s, 1), "prepare_s": round(prepare_s, 1), "docs_per_s": round(args.passages / ready, 1),
                "spans_per_s": round(spans / ready, 1), "first_search_s": round(load_s, 1),
            }
            result["es_over_embedded_until_searchable"] = round(total / ready, 2)
        note("indexed; warming up")

        stores = {"es": es, **({"embedded": embedded} if embedded is not None else {})}
        for n in args.num_candidates:
            extra.append(open_elasticsearch(settings, num_candidates=n, request_timeout=600.0))
            stores[f"es_nc{n}"] = extra[-1]
        queries = [centres[i % CENTRES] for i in range(args.queries)]
        kinds = {
            "topk": [SearchRequest(q, args.threshold, limit=10) for q in queries],
            "topk_filtered": [SearchRequest(q, args.threshold, limit=10, filters=Filters.of(FILTER)) for q in queries],
        }
        warm = [centres[(CENTRES // 2 + i) % CENTRES] for i in range(args.warmup)]
        for store in stores.values():
            for filters in ({}, FILTER):
                timed_searches(store, [SearchRequest(q, args.threshold, limit=10, filters=Filters.of(filters)) for q in warm])
        runs: dict[tuple[str, str], list[list[float]]] = {(s, k): [] for s in stores for k in kinds}
        ids: dict[tuple[str, str], list[list[str]]] = {}
        loads = []
        for repeat in range(args.repeats):
            for name, store in stores.items():
                for kind, requests in kinds.items():
                    ms, ids[name, kind] = timed_searches(store, requests)
                    runs[name, kind].append(ms)
            loads.append(load())
            note(f"latency repeat {repeat + 1}/{args.repeats} done")
        for (name, kind), repeats in runs.items():
            result.setdefault(f"{name}_search", {})[kind] = summary(repeats)
        result["search_queries"] = {"per_repeat": args.queries, "repeats": args.repeats, "warmup": args.warmup,
                                    "filter": FILTER, "threshold": args.threshold, "load_per_repeat": loads}
        hits = [len(h) for h in ids["es", "topk"]]
        result["es_search"]["hits_per_query_median"] = statistics.median(hits)
        if embedded is not None:
            # the exact top 10 is the embedded store's scan: its timed searches go through the ANN
            # index from ann.MIN_ROWS spans up (an audit: recall was measured against those)
            embedded.use_ann = False
            exact = {kind: timed_searches(embedded, requests)[1] for kind, requests in kinds.items()}
            embedded.use_ann = True
            result["recall_at_10"] = {kind: recall_at_10(ids["es", kind], exact[kind]) for kind in kinds}
            result["recall_at_10_embedded"] = {kind: recall_at_10(ids["embedded", kind], exact[kind]) for kind in kinds}
            for name in stores:
                if name.startswith("es_nc"):
                    result[f"recall_at_10_{name}"] = {kind: recall_at_10(ids[name, kind], exact[kind]) for kind in kinds}
        result["machine"]["load_end"] = load()
    finally:
        if not args.keep:
            client = es.client.options(ignore_status=[404])
            try:  # a server that went away must not hide the error that ended the run (an audit)
                for name in es.versioned_indices():
                    client.indices.delete(index=name)
            except Exception as exc:  # noqa: BLE001
                note(f"could not delete the benchmark's indices {es.alias}-*: {exc}")
        for handle in extra:
            handle.close()
        es.close()
        if embedded is not None:
            embedded.close()
        tmp.cleanup()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    run(main)
