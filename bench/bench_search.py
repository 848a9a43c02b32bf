"""Search latency of the embedded store: p50/p95 for one type query, top-k and --all.

The store is filled with synthetic spans (5 per passage) whose vectors are drawn around 200 type
centres plus noise, so a query at a centre matches a realistic share of spans (about 0.5%) rather
than none; the texts are short real-looking sentences. Encoding 1M real spans would take hours on
2 cores and measures the encoder, not search: that is what bench_indexing.py is for.

    python bench/bench_search.py --spans 100000 1000000 --queries 30
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores.base import ModelStamp, SearchRequest
from indexer.stores.embedded import EmbeddedStore

DIMS = 384
SPANS_PER_PASSAGE = 5
CENTRES = 200
STAMP = ModelStamp("bench", "1", DIMS, "0" * 64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def part_field(pid: int) -> dict[str, str]:
    return {"part": str(pid % 10)}


def synthetic_batches(
    n_passages: int,
    rng: np.random.Generator,
    centres: np.ndarray,
    *,
    spans_per_passage: int = SPANS_PER_PASSAGE,
    fields: Callable[[int], dict[str, str]] = part_field,
    batch: int = 2000,
) -> Iterator[list[EncodedPassage]]:
    """Passages in batches: span vectors around random type centres plus noise, real-looking text.

    Each span covers a word of the text and is labelled with its centre; the passage vector is
    that of its first span. The same seed gives the same passages, whichever store they go to.
    """
    for start in range(0, n_passages, batch):
        count = min(batch, n_passages - start)
        which = rng.integers(0, len(centres), size=count * spans_per_passage)
        noise = rng.standard_normal((count * spans_per_passage, centres.shape[1])).astype(np.float32)
        vecs = unit_rows(centres[which] * 1.0 + noise * 0.085)
        docs = []
        for k in range(count):
            pid = start + k
            text = f"Passage {pid} mentions Alpha{pid} and Beta{pid} near Gamma{pid}, Delta and Epsilon."
            words = [(m.start(), m.end()) for m in re.finditer(r"\w+", text)]
            spans = []
            for j in range(spans_per_passage):
                row = k * spans_per_passage + j
                begin, end = words[j % len(words)]
                spans.append(EncodedSpan(begin, end, text[begin:end], 0.9, vecs[row], (f"type-{which[row]}",)))
            docs.append(EncodedPassage(Passage(str(pid), text, fields(pid)), tuple(spans), vecs[k * spans_per_passage]))
        yield docs


def build(path: Path, n_spans: int, rng: np.random.Generator) -> tuple[EmbeddedStore, np.ndarray, float]:
    centres = unit_rows(rng.standard_normal((CENTRES, DIMS)))
    store = EmbeddedStore.open(path)
    store.check_model(STAMP)
    began = time.perf_counter()
    for docs in synthetic_batches(n_spans // SPANS_PER_PASSAGE, rng, centres):
        store.write(docs)
    return store, centres, time.perf_counter() - began


def timed_searches(store, requests: Sequence[SearchRequest]) -> tuple[list[float], list[list[str]]]:
    """Each search's latency in ms (the whole ``store.search``, hits consumed) and its hit ids."""
    ms: list[float] = []
    ids: list[list[str]] = []
    for request in requests:
        began = time.perf_counter()
        hits = list(store.search(request))
        ms.append((time.perf_counter() - began) * 1000)
        ids.append([hit.id for hit in hits])
    return ms, ids


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    results = []
    for n in args.spans:
        with tempfile.TemporaryDirectory() as tmp:
            store, centres, build_s = build(Path(tmp) / "s", n, rng)
            began = time.perf_counter()
            store._load_vectors()
            load_s = time.perf_counter() - began
            store.close()
            # a new process on an unchanged store: the memory-mapped cache
            began = time.perf_counter()
            store = EmbeddedStore.open(Path(tmp) / "s", create=False)
            store._load_vectors()
            cached_load_s = time.perf_counter() - began
            queries = [centres[i % CENTRES] for i in range(args.queries)]
            it = iter(queries)
            matched: list[int] = []

            def every() -> None:
                matched.append(len(list(store.search(SearchRequest(next(it), args.threshold, exhaustive=True)))))

            hybrid_it = iter(queries * 2)

            def hybrid_topk() -> None:
                list(store.search(SearchRequest(next(hybrid_it), args.threshold, limit=10, passage_weight=2.0)))

            def hybrid_every() -> None:
                list(store.search(SearchRequest(next(hybrid_it), args.threshold, exhaustive=True, passage_weight=2.0)))

            t_top, _ = timed_searches(store, [SearchRequest(q, args.threshold, limit=10) for q in queries])
            t_all = timed(every, args.queries)
            t_filter, _ = timed_searches(
                store, [SearchRequest(q, args.threshold, limit=10, filters={"part": "3"}) for q in queries]
            )
            t_htop = timed(hybrid_topk, args.queries)
            t_hall = timed(hybrid_every, args.queries)
            row = {
                "spans": n,
                "passages": n // SPANS_PER_PASSAGE,
                "build_s": round(build_s, 1),
                "vector_load_s": round(load_s, 2),
                "cached_open_s": round(cached_load_s, 3),
                "topk_p50_ms": round(pct(t_top, 50), 1),
                "topk_p95_ms": round(pct(t_top, 95), 1),
                "all_p50_ms": round(pct(t_all, 50), 1),
                "all_p95_ms": round(pct(t_all, 95), 1),
                "all_passages_median": int(statistics.median(matched)),
                "filtered_topk_p50_ms": round(pct(t_filter, 50), 1),
                "filtered_topk_p95_ms": round(pct(t_filter, 95), 1),
                # hybrid scoring (λ = 2): + one passage-vector dot product per matching passage
                "hybrid_topk_p50_ms": round(pct(t_htop, 50), 1),
                "hybrid_all_p50_ms": round(pct(t_hall, 50), 1),
            }
            results.append(row)
            store.close()
            print(json.dumps(row) if args.json else row, flush=True)


if __name__ == "__main__":
    main()
