"""Search latency and memory of the embedded store at a given size (issue 14's done-criterion).

The store is filled with synthetic spans (5 per passage) whose vectors are drawn around 200 type
centres plus noise, so a query at a centre matches a realistic share of spans (about 0.34% at a threshold of 0.5) rather
than none; the texts are short real-looking sentences. Encoding 1M real spans would take hours on
2 cores and measures the encoder, not search: that is what bench_indexing.py is for.

    python bench/bench_search.py --spans 1000000 --queries 20 --json

Each size runs in two child processes, so no size inherits another's peak memory: one builds the
store (``build_s``, ``build_peak_rss_mib``) and opens it once so the derived vectors exist; a fresh
one opens it (``cached_open_s``: a new process's first search), times top-10, ``--all`` and
metadata-filtered top-10 queries, then writes one passage and times the first search after it
(``first_search_after_write_s``). ``recall_at_10`` (``filtered_``, and ``off_centre_`` plain,
hybrid and span-label filtered: queries between two centres) compare the top-10 searches as served
(through the ANN index at sizes where the store uses one) with the exact scan; ``ann_build_s`` is the index build inside the first search after the build.
``peak_rss_mib`` is that searching process's peak RSS in MiB
(``resource.getrusage``). Every group of figures carries ``os.getloadavg()`` taken before and
after it: on a shared machine, read figures with a 1-minute load above the core count as noisy.
``--store DIR`` keeps (or reuses) the built store (with several ``--spans``, one in ``DIR/<spans>``
each), so two versions of the code can be measured on
one store, interleaved (``--measure-only``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores.base import ModelStamp, SearchRequest
from indexer.stores.filter_rules import Filters
from indexer.stores.embedded import EmbeddedStore
from bench_args import count, run  # noqa: E402

DIMS = 384
SPANS_PER_PASSAGE = 5
CENTRES = 200
SEED = 0
STAMP = ModelStamp("bench", "1", DIMS, "0" * 64)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def centres() -> np.ndarray:
    return unit_rows(np.random.default_rng(SEED).standard_normal((CENTRES, DIMS)))


def part_field(pid: int) -> dict[str, str]:
    return {"part": str(pid % 10)}


def passages(
    start: int,
    count: int,
    rng: np.random.Generator,
    c: np.ndarray,
    *,
    spans_per_passage: int = SPANS_PER_PASSAGE,
    fields: Callable[[int], dict[str, str]] = part_field,
) -> list[EncodedPassage]:
    """Passages ``start``… : span vectors around random type centres plus noise, real-looking text.

    Each span covers a word of the text and is labelled with its centre; the passage vector is
    that of its first span. The same seed gives the same passages, whichever store they go to
    (bench_es.py fills Elasticsearch and the embedded store with them).
    """
    which = rng.integers(0, len(c), size=count * spans_per_passage)
    noise = rng.standard_normal((count * spans_per_passage, c.shape[1])).astype(np.float32)
    vecs = unit_rows(c[which] * 1.0 + noise * 0.085)
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
    return docs


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


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """This process's peak RSS in MiB (``ru_maxrss`` is KiB on Linux; an audit: it was labelled MB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def build(path: Path, n_spans: int, threshold: float) -> dict:
    c = centres()
    rng = np.random.default_rng(SEED + 1)
    load_before = load()
    store = EmbeddedStore.open(path)
    store.check_model(STAMP)
    n_passages = n_spans // SPANS_PER_PASSAGE
    began = time.perf_counter()
    batch = 2000
    for start in range(0, n_passages, batch):
        store.write(passages(start, min(batch, n_passages - start), rng, c))
    build_s = time.perf_counter() - began
    began = time.perf_counter()
    list(store.search(SearchRequest(c[0], threshold, limit=10)))  # makes the derived vectors (and ANN index)
    first_s = time.perf_counter() - began
    list(store.search(SearchRequest(c[0], threshold, limit=10, passage_weight=2.0)))  # and the passage index (from 300k passages)
    ann_build_s = store._ann.built_s
    store.close()
    return {
        "spans": n_spans,
        "passages": n_passages,
        "build_s": round(build_s, 1),
        "first_search_after_build_s": round(first_s, 2),
        "ann_build_s": {kind: round(t, 1) for kind, t in ann_build_s.items()},
        "build_peak_rss_mib": peak_rss_mib(),
        "build_load": [load_before, load()],
    }


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def figures(name: str, values: list[float]) -> dict:
    return {
        f"{name}_p50_ms": round(float(np.percentile(values, 50)), 1),
        f"{name}_p95_ms": round(float(np.percentile(values, 95)), 1),
    }


WRITE_ONE_ID = 1_000_000_000  # far above any built store's passage numbers


def measure(path: Path, queries: int, threshold: float) -> dict:
    c = centres()
    row: dict = {"search_load": [load()]}
    began = time.perf_counter()
    store = EmbeddedStore.open(path, create=False)
    stamp = store.model()
    if stamp is None or (stamp.id, stamp.checksum) != (STAMP.id, STAMP.checksum):  # an audit: --measure-only wrote into a real store
        store.close()
        raise SystemExit(f"error: {path} is not a store this benchmark built (its model is not {STAMP.id!r}): "
                         "give --store a folder of bench_search.py's own")
    list(store.search(SearchRequest(c[0], threshold, limit=10)))
    row["cached_open_s"] = round(time.perf_counter() - began, 3)
    counts = store.counts()  # the store's own size, not --spans (an audit: a reused store was labelled --spans)
    row.update(spans=counts.spans, passages=counts.passages)
    qs = [c[i % CENTRES] for i in range(1, queries + 1)]
    matched: list[int] = []

    def run(request_of):
        def once(q=iter(qs)):
            return list(store.search(request_of(next(q))))
        return once

    top = run(lambda q: SearchRequest(q, threshold, limit=10))
    t_top = timed(top, queries)
    row.update(figures("top10", t_top))
    row["search_load"].append(load())
    row.update(recall(store, qs, threshold))

    def every(q=iter(qs)):
        matched.append(len(list(store.search(SearchRequest(next(q), threshold, exhaustive=True)))))

    row.update(figures("all", timed(every, queries)))
    row["all_passages_median"] = int(statistics.median(matched))
    row["search_load"].append(load())
    row.update(figures("filtered_top10", timed(run(lambda q: SearchRequest(q, threshold, limit=10, filters=Filters.of({"part": "3"}))), queries)))
    row["search_load"].append(load())
    # hybrid scoring (λ = 2): + the passage side (an int8 scan of every passage vector below 300k passages)
    row.update(figures("hybrid_top10", timed(run(lambda q: SearchRequest(q, threshold, limit=10, passage_weight=2.0)), queries)))
    row["search_load"].append(load())
    # one passage written, then the first search: what a writer waits for. Always the same id, so
    # measuring a reused store does not grow it by one a run: a new passage on a store's first
    # measurement, a replacement (its old spans deleted) on every later one
    rng = np.random.default_rng(int(time.time()))
    began = time.perf_counter()
    store.write(passages(WRITE_ONE_ID, 1, rng, c))
    row["write_one_s"] = round(time.perf_counter() - began, 3)
    began = time.perf_counter()
    list(store.search(SearchRequest(c[0], threshold, limit=10)))
    row["first_search_after_write_s"] = round(time.perf_counter() - began, 3)
    row["search_load"].append(load())
    store.close()
    row["peak_rss_mib"] = peak_rss_mib()
    return row


def recall(store: EmbeddedStore, qs: Sequence[np.ndarray], threshold: float) -> dict:
    """recall@10 of the searches as served (the ANN index where the store uses one) against the
    exact scan (``use_ann = False``), averaged over the queries: plain and metadata-filtered at the
    centres, and (an audit found these short on its own synthetic store) at points between two
    centres, which no list's centroid is near: plain, hybrid (λ 1, the unseen phrases' default) and
    filtered on the span label of the query's nearer centre."""
    c = centres()
    rng = np.random.default_rng(SEED + 1)
    pairs = [(i % CENTRES, int(rng.integers(CENTRES))) for i in range(1, len(qs) + 1)]
    off = [(unit_rows((c[i] + 0.8 * c[j] + 0.3 * unit_rows(rng.standard_normal((1, DIMS)))[0])[None])[0], i)
           for i, j in pairs]  # fmt: skip
    cases = {
        "recall_at_10": [(q, {}, 0.0) for q in qs],
        "filtered_recall_at_10": [(q, {"part": "3"}, 0.0) for q in qs],
        "off_centre_recall_at_10": [(q, {}, 0.0) for q, _ in off],
        "off_centre_hybrid_recall_at_10": [(q, {}, 1.0) for q, _ in off],
        "off_centre_label_recall_at_10": [(q, {"spans.labels": f"type-{i}"}, 0.0) for q, i in off],
    }
    out = {}
    for name, searches in cases.items():
        shares = []
        for q, filters, weight in searches:
            request = SearchRequest(q, threshold * 0.6 if name.startswith("off") else threshold, limit=10,
                                    filters=Filters.of(filters), passage_weight=weight)
            served = {hit.id for hit in store.search(request)}
            store.use_ann = False
            exact = {hit.id for hit in store.search(request)}
            store.use_ann = True
            shares.append(len(served & exact) / len(exact) if exact else 1.0)
        out[name] = round(float(np.mean(shares)), 4)
    out["ann_built_while_measuring_s"] = store._ann.built_s  # {}: the indexes were loaded, not built here
    return out


def child(*args: str) -> dict:
    """Run a phase in a process of its own; its error (on stderr already) ends this one with its code."""
    out = subprocess.run([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    if out.returncode:
        raise SystemExit(out.returncode)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=count, nargs="+", default=[100_000, 1_000_000],
                        help=f"store sizes in spans, each at least {SPANS_PER_PASSAGE} (one passage's) "
                             "(default: %(default)s)")
    parser.add_argument("--queries", type=count, default=20, help="queries per figure (default: %(default)s)")
    parser.add_argument("--threshold", type=float, default=0.5, help="span similarity threshold (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object a size")
    parser.add_argument("--store", type=Path, metavar="DIR",
                        help="build the store here (kept), or reuse it if it exists; with several --spans, "
                             "DIR/<spans> for each (default: a temporary folder, deleted)")
    parser.add_argument("--measure-only", action="store_true", help="only measure the store given by --store (it writes one passage there, the same one each run)")
    parser.add_argument("--child", choices=("build", "measure"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only and args.store is None:  # an audit: it measured an empty temporary folder
        parser.error("--measure-only measures the store of --store: give one")
    if min(args.spans) < SPANS_PER_PASSAGE:  # an audit: an empty store, recall 1.0
        parser.error(f"--spans: give {SPANS_PER_PASSAGE} or more (the spans of one passage)")
    if args.child == "build":
        print(json.dumps(build(args.store, args.spans[0], args.threshold)))
        return
    if args.child == "measure":
        print(json.dumps(measure(args.store, args.queries, args.threshold)))
        return
    common = ["--queries", str(args.queries), "--threshold", str(args.threshold)]
    for n in args.spans:
        tmp = None
        if args.store is not None:
            path = args.store if len(args.spans) == 1 else args.store / str(n)
        else:
            tmp = tempfile.mkdtemp(prefix="bench_search_")
            path = Path(tmp) / "s"
        try:
            row: dict = {"spans": n}
            if not args.measure_only and not (path / "store.sqlite").exists():
                row.update(child("--child", "build", "--store", str(path), "--spans", str(n), *common))
            row.update(child("--child", "measure", "--store", str(path), "--spans", str(n), *common))
            print(json.dumps(row) if args.json else row, flush=True)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(main)
