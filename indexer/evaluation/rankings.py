"""Every method's ranking of the corpus for every query of one evaluation run.

The corpus is encoded once with ``with_base=True``; the indexing pipeline is fed those encodings
(:class:`_EncodedOnce`) and the system is searched through the real embedded store and
``NerIndex.iter_search`` (a top-k as long as the corpus); the baselines reuse the same encodings: the
backbone's span vectors on the very same detected spans, and its mean-pooled passage vectors.
BM25 reads the passage text. Searches ask for ``min_similarity=-1`` so one search per type yields
the full ranking.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..records import EncodedPassage, Passage
from .benchmark_io import Benchmark
from .methods import DEFAULT_METHODS, SYSTEM_METHODS
from .metrics import Ranked, ScoredSpan
from .scoring import detection_by_query

log = logging.getLogger(__name__)

Rankings = dict[str, dict[str, list[Ranked]]]  # method -> query id -> ranking


class _EncodedOnce:
    """Feeds the indexing pipeline the encodings already computed, so the corpus is encoded once."""

    def __init__(self, encoder: Any, encoded: Mapping[str, EncodedPassage]) -> None:
        self.info = encoder.info
        self._encoded = encoded

    def encode(
        self,
        passages: Sequence[Passage],
        *,
        batch_size: int = 32,
        progress: Callable[[int], None] | None = None,
        windows: Callable[[int, int], None] | None = None,  # nothing is encoded here: no windows to report
    ) -> list[EncodedPassage]:
        docs = [self._encoded[p.id] for p in passages]
        if progress is not None:
            progress(len(docs))
        return docs


def _hits_to_ranking(hits: Iterable[Any]) -> list[Ranked]:
    """Store hits as a ranking; the threshold applies to the best marked span, a mention (hybrid
    scoring and candidates rank by more): a hit without one is in no answer set."""
    return [
        Ranked(
            h.id,
            float(h.score),
            tuple(ScoredSpan(s.start, s.end, float(s.similarity)) for s in h.spans),
            max((float(s.similarity) for s in h.spans), default=float("-inf")),
        )
        for h in hits
    ]


def compute_rankings(
    bench: Benchmark,
    encoder: Any,
    *,
    store_dir: str | Path | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    batch_size: int = 32,
    passage_weight: float | None = None,
    feedback: Any = None,
) -> tuple[Rankings, dict[str, Any]]:
    """Rankings of every method for every query, and timings/counts of the run.

    ``passage_weight`` (default: the model's for each phrase) is the system's λ of hybrid scoring; when it is not 0
    the same searches are also ranked by best span alone (``system_spans``). ``system_prf`` is the
    system's search with query-time feedback (``feedback``: an :class:`indexer.feedback.Feedback`,
    default weight 0.5, top 10).
    """
    from .baselines import bm25_rankings, dense_rankings, span_rankings

    corpus = bench.corpus
    queries = bench.scored_queries()
    stats: dict[str, Any] = {"passages": len(corpus), "queries": len(queries)}
    began = time.perf_counter()
    encoded = _encode_corpus(encoder, corpus, batch_size)
    stats["encode_seconds"] = round(time.perf_counter() - began, 2)
    stats["spans"] = sum(len(e.spans) for e in encoded)
    stats["detection_by_query"] = detection_by_query(bench, encoded)
    stats["passages_without_spans"] = sum(1 for e in encoded if not e.spans)
    ids = [p.id for p in corpus]
    phrases = [q.text for q in queries]
    type_vectors = encoder.embed_types(phrases) if phrases else np.zeros((0, encoder.info.dims))
    rankings: Rankings = {}
    if set(methods) & set(SYSTEM_METHODS):
        rankings.update(
            _system_rankings(bench, encoder, encoded, stats, store_dir=store_dir, methods=methods,
                             passage_weight=passage_weight, feedback=feedback)
        )  # fmt: skip
    qvecs = [(q.id, type_vectors[i]) for i, q in enumerate(queries)]
    if "span_base" in methods:
        spans = [
            [(s.start, s.end, s.base_vector, s.mention) for s in e.spans if s.base_vector is not None] for e in encoded
        ]
        rankings["span_base"] = span_rankings(ids, spans, qvecs)
    if "dense" in methods:
        rankings["dense"] = dense_rankings(ids, np.stack([e.vector for e in encoded]), qvecs)
    if "bm25" in methods:
        rankings["bm25"] = bm25_rankings(ids, [p.text for p in corpus], [(q.id, q.text) for q in queries])
    stats["total_seconds"] = round(time.perf_counter() - began, 2)
    return rankings, stats


def _benchmark_store(folder: Path, corpus: Sequence[Passage]) -> Any:
    """The embedded store at ``folder``. One that holds passages outside the benchmark (a --store
    given) would rank them among its answers and count them wrong: refused. One that holds the
    benchmark already (an earlier run) is fine."""
    from ..config import Settings
    from ..stores.factory import open_store

    store = open_store(Settings(store=str(folder)))
    held = store.counts().passages
    ids = [p.id for p in corpus]
    ours = sum(len(store.existing_ids(ids[i : i + 10_000])) for i in range(0, len(ids), 10_000)) if held else 0
    if held > ours:
        store.close()
        raise InputError(
            f"the store holds {held - ours} passage(s) that are not in the benchmark, which would rank among "
            "its answers: give an empty folder, or leave --store out", path=str(folder),
        )
    return store


def _encode_corpus(encoder: Any, corpus: Sequence[Passage], batch_size: int) -> list[EncodedPassage]:
    """The corpus encoded once, base vectors included, logging progress every 500 passages."""
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 500 < n or done[0] == len(corpus):
            log.info("encoded %d/%d passages", done[0], len(corpus))

    return encoder.encode(corpus, batch_size=batch_size, with_base=True, progress=progress)


def _index_benchmark(
    corpus: Sequence[Passage], encoder: Any, encoded: Sequence[EncodedPassage], store: Any, stats: dict[str, Any]
) -> None:
    """Store the encoded corpus; every passage or none: one the store refuses would be ranked by
    the baselines and not by the system (an audit: exit 0, one count in the JSON)."""
    from ..pipeline import index_passages

    t0 = time.perf_counter()
    report = index_passages(corpus, _EncodedOnce(encoder, {e.passage.id: e for e in encoded}), store)
    stats["index_seconds"] = round(time.perf_counter() - t0, 2)
    stats["index"] = {k: v for k, v in report.to_dict().items() if k != "errors"}
    if report.failed:
        raise InputError(f"the store refused {report.failed} of the benchmark's passages, so the methods "
                         f"would not rank the same corpus; first: {report.errors[0]}")


def _system_rankings(
    bench: Benchmark,
    encoder: Any,
    encoded: Sequence[EncodedPassage],
    stats: dict[str, Any],
    *,
    store_dir: str | Path | None,
    methods: Sequence[str],
    passage_weight: float | None,
    feedback: Any,
) -> Rankings:
    """The system's rankings, searched through an embedded store indexed with ``encoded``;
    timings, the index report, λ and the feedback used go into ``stats``."""
    from ..api import NerIndex
    from ..feedback import Feedback

    corpus, queries = bench.corpus, bench.scored_queries()
    rankings: Rankings = {}
    with tempfile.TemporaryDirectory(prefix="nerindex-eval-") as tmp:
        folder = Path(store_dir) if store_dir else Path(tmp) / "store"
        store = _benchmark_store(folder, corpus)  # always embedded: a folder of its own
        try:
            _index_benchmark(corpus, encoder, encoded, store, stats)
            ix = NerIndex(encoder, store, description=str(folder))
            t0 = time.perf_counter()

            def ranked(weight: float | None, fb: Any = None) -> dict[str, list[Ranked]]:
                # a top-k as long as the corpus: every passage with a span ranks, candidates
                # included; the marks (mentions) make each item's gate, so the set metrics at a
                # threshold are the --all answer (stores/base.py, Store.search)
                return {
                    q.id: _hits_to_ranking(
                        ix.iter_search(q.text, min_similarity=-1.0, limit=max(len(corpus), 1), passage_weight=weight,
                                       feedback=fb)
                    )
                    for q in queries
                }

            per_query = max(len(queries), 1)
            stats.update(_weights(encoder.info, passage_weight))
            if "system" in methods:
                rankings["system"] = ranked(passage_weight)
                stats["search_seconds_per_query"] = round((time.perf_counter() - t0) / per_query, 4)
            # with λ 0 the system ranks by spans alone: the same ranking, left out, unless it is the one asked
            # for (an audit: --methods system_spans --passage-weight 0 had nothing to report, a traceback)
            spans_differ = stats["passage_weight"] or stats.get("unseen_passage_weight") or "system" not in methods
            if spans_differ and "system_spans" in methods:
                rankings["system_spans"] = ranked(0.0)
            if "system_prf" in methods:
                fb = feedback if feedback is not None else Feedback()
                stats["feedback"] = {"weight": fb.weight, "top": fb.top, "vectors": "passage"}
                t0 = time.perf_counter()
                rankings["system_prf"] = ranked(passage_weight, fb)
                stats["feedback_search_seconds_per_query"] = round((time.perf_counter() - t0) / per_query, 4)
        finally:
            store.close()
    return rankings


def _weights(info: Any, passage_weight: float | None) -> dict[str, float]:
    """The λ the system's searches used: the one given, else the model's (two where the card has
    ``unseen_passage_weight``: ``ModelInfo.passage_weight_for``)."""
    if passage_weight is not None:
        return {"passage_weight": float(passage_weight)}
    out = {"passage_weight": info.passage_weight}
    if info.unseen_passage_weight is not None:
        out["unseen_passage_weight"] = info.unseen_passage_weight
    return out
