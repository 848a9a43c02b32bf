"""One evaluation run: index the benchmark corpus, search every type, score system and baselines.

The system is measured through the real pipeline, store and search (``index_passages`` into an
embedded store, ``NerIndex.search(..., exhaustive=True)``), i.e. what ``nerindex search --all``
gives a user. The corpus is encoded once with ``with_base=True``; the indexing pipeline is fed those
encodings, and the baselines reuse them: the backbone's span vectors before training on the very
same detected spans, and the backbone's mean-pooled passage vectors (dense passage retrieval).
BM25 reads the passage text.

Ranking metrics (R-Precision, Recall@k, P@10) use each method's full ranking; set and span metrics
use what the method returns at its operating threshold (``metrics`` module docstring). Searches ask
for ``min_similarity=-1`` so one search per type yields the full ranking; returning at a threshold
is then a filter, identical to searching with that threshold.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence

import numpy as np

from ..model_card import ModelCard
from ..records import EncodedPassage, Passage
from .benchmark_io import Benchmark, Query, read_mapping_file, resolve_mapping
from .calibration import DEFAULT_GRID, calibrate, point_dict
from .familiarity import split_familiarity
from .metrics import QueryScores, Ranked, ScoredSpan, macro_scores, match_spans, score_query, sweep_thresholds

log = logging.getLogger(__name__)

Group = Literal["seen", "unseen", "coarse"]
GROUPS: tuple[str, ...] = ("seen", "unseen", "coarse")


@dataclass(frozen=True)
class Method:
    """A scored method: whether it returns spans and whether it has a similarity threshold."""

    key: str
    label: str
    spans: bool
    thresholded: bool


METHODS: dict[str, Method] = {
    "system": Method("system", "nerindex (trained span vectors)", spans=True, thresholded=True),
    # the same search ranked by best span alone; reported when the system uses hybrid scoring
    "system_spans": Method("system_spans", "nerindex, spans only (λ = 0)", spans=True, thresholded=True),
    # the system with query-time feedback (indexer.feedback): off unless named in --methods
    "system_prf": Method("system_prf", "nerindex + query-time feedback (Rocchio, passage vectors)", spans=True, thresholded=True),
    "span_base": Method("span_base", "untrained span vectors (same spans)", spans=True, thresholded=True),
    "dense": Method("dense", "dense passage retrieval (backbone)", spans=False, thresholded=True),
    "bm25": Method("bm25", "BM25 (passage text)", spans=False, thresholded=False),
}
# what ``nerindex eval`` scores when --methods is not given (feedback is an experiment, not a default)
DEFAULT_METHODS: tuple[str, ...] = ("system", "system_spans", "span_base", "dense", "bm25")
SYSTEM_METHODS = ("system", "system_spans", "system_prf")  # searched through the store, at the model's threshold


@dataclass
class Training:
    """What the model was trained on: seen type phrases and mention counts per phrase."""

    types: set[str]
    held_out: set[str] = field(default_factory=set)
    counts: dict[str, int] = field(default_factory=dict)
    counts_source: str = "none"
    source: str = "model.json"


def group_of(query: Query, training: Training) -> Group:
    """coarse (scored apart, see COARSE_TAGS) · seen (phrase trained on) · unseen."""
    if query.coarse:
        return "coarse"
    return "seen" if query.text in training.types else "unseen"


# ---------------------------------------------------------------- training record


def count_training_mentions(
    paths: Sequence[str | Path],
    *,
    mapping_file: str | Path | None = None,
    held_out: Iterable[str] = (),
) -> dict[str, int]:
    """Mentions per query phrase in training files, skipping sentences with a held-out type.

    Mirrors how the shipped model was trained (sentences holding a held-out type were dropped), so
    Familiarity weights each training type by how often the model actually saw it.
    """
    from ..conll import read_conll
    from .benchmark_io import PHRASES_FILE

    data = read_mapping_file(mapping_file or PHRASES_FILE)
    held = set(held_out)
    counts: dict[str, int] = {}
    for path in paths:
        mapping, _, _ = resolve_mapping(data, path, source=str(mapping_file or PHRASES_FILE))
        for p in read_conll(path):
            phrases = [mapping.get(g.label) for g in p.gold]
            if any(ph in held or g.label in held for ph, g in zip(phrases, p.gold)):
                continue
            for ph in phrases:
                if ph is not None:
                    counts[ph] = counts.get(ph, 0) + 1
    return counts


def training_from_card(
    card: ModelCard,
    *,
    train_types: Sequence[str] | None = None,
    train_data: Sequence[str | Path] = (),
    data_roots: Sequence[str | Path] = (),
    mapping_file: str | Path | None = None,
) -> Training:
    """Seen types and their counts from ``model.json`` (``training``), or the user's overrides.

    Counts come from, in order: ``--train-data`` files; ``training.type_counts``; the files named in
    ``training.data`` when found (as given, or under one of ``data_roots``); else every seen type
    counts once (and the report says so).
    """
    rec = card.training
    held = set(rec.held_out_types)
    if train_types is not None:
        types, source = {t.strip() for t in train_types if t.strip()}, "--train-types"
    else:
        types, source = set(rec.types), "model.json training.types"
    if train_data:
        counts = count_training_mentions(train_data, mapping_file=mapping_file, held_out=held)
        return Training(types or set(counts), held, counts, "mentions counted in --train-data files", source)
    if rec.type_counts is not None:
        counts = rec.type_counts
        return Training(types or set(counts), held, counts, "model.json training.type_counts", source)
    files = []
    for entry in rec.data:
        name = entry.get("path") if isinstance(entry, dict) else entry
        if not isinstance(name, str):
            continue
        # entries are paths, or "dataset:file" as the training step records them
        rel = Path(*name.split(":", 1)) if ":" in name and not Path(name).exists() else Path(name)
        candidates = [rel] + [Path(root) / rel for root in data_roots]
        found = next((c for c in candidates if c.is_file()), None)
        if found is not None:
            files.append(found)
    if files:
        counts = count_training_mentions(files, mapping_file=mapping_file, held_out=held)
        return Training(types or set(counts), held, counts, "mentions counted in training.data files", source)
    return Training(types, held, {t: 1 for t in types}, "unweighted (no training counts available)", source)


# ---------------------------------------------------------------- scoring (pure)


def score_methods(
    bench: Benchmark,
    rankings: Mapping[str, Mapping[str, Sequence[Ranked]]],
    thresholds: Mapping[str, float | None],
    training: Training,
    familiarity: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Per-type scores, macro summaries per group, and threshold curves, as JSON-ready data."""
    familiarity = familiarity or {}
    queries = bench.scored_queries()
    per_type = []
    by_method: dict[str, dict[str, list[QueryScores]]] = {
        m: {g: [] for g in ("all",) + GROUPS} for m in rankings
    }
    for q in queries:
        group = group_of(q, training)
        row: dict[str, Any] = {
            "query": q.id,
            "type": q.text,
            "labels": list(q.labels),
            "group": group,
            "relevant": len(bench.qrels[q.id]),
            "familiarity": _r(familiarity.get(q.text)),
            "scores": {},
        }
        for key, by_query in rankings.items():
            method = METHODS.get(key, Method(key, key, spans=False, thresholded=False))
            s = score_query(
                list(by_query.get(q.id, ())),
                bench.qrels[q.id],
                threshold=thresholds.get(key) if method.thresholded else None,
                gold_spans=bench.gold.get(q.id, {}),
                with_spans=method.spans,
            )
            row["scores"][key] = s.to_dict()
            by_method[key]["all"].append(s)
            by_method[key][group].append(s)
        per_type.append(row)
    summary = {
        key: {g: macro_scores(rows) for g, rows in groups.items()} for key, groups in by_method.items()
    }
    relevant = {q.id: bench.qrels[q.id] for q in queries}
    sweeps = {
        key: [point_dict(p) for p in sweep_thresholds(by_query, relevant, DEFAULT_GRID)]
        for key, by_query in rankings.items()
        if METHODS.get(key) and METHODS[key].thresholded
    }
    fam_groups: dict[str, float | None] = {}
    for g in ("all",) + GROUPS:
        vals = [familiarity[r["type"]] for r in per_type if (g == "all" or r["group"] == g) and r["type"] in familiarity]
        fam_groups[g] = _r(float(np.mean(vals))) if vals else None
    return {
        "per_type": per_type,
        "summary": summary,
        "familiarity_by_group": fam_groups,
        "groups": {g: [r["type"] for r in per_type if r["group"] == g] for g in GROUPS},
        "skipped_queries": [q.text for q in bench.queries if not bench.qrels.get(q.id)],
        "sweeps": sweeps,
    }


def calibrate_methods(
    bench: Benchmark,
    rankings: Mapping[str, Mapping[str, Sequence[Ranked]]],
    training: Training,
    *,
    groups: Sequence[str] = ("seen",),
) -> dict[str, Any]:
    """Choose each thresholded method's threshold on the queries of ``groups`` (seen types)."""
    queries = [q for q in bench.scored_queries() if group_of(q, training) in groups]
    relevant = {q.id: bench.qrels[q.id] for q in queries}
    out: dict[str, Any] = {"types": [q.text for q in queries], "methods": {}}
    for key, by_query in rankings.items():
        method = METHODS.get(key)
        if method is None or not method.thresholded or not queries:
            continue
        chosen, curve = calibrate({q: by_query.get(q, ()) for q in relevant}, relevant)
        out["methods"][key] = {"chosen": point_dict(chosen), "curve": [point_dict(p) for p in curve]}
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


# ---------------------------------------------------------------- the real run


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
    """Store hits as a ranking; the threshold applies to the best span (hybrid scoring ranks by more)."""
    return [
        Ranked(
            h.id,
            float(h.score),
            tuple(ScoredSpan(s.start, s.end, float(s.similarity)) for s in h.spans),
            max((float(s.similarity) for s in h.spans), default=None),
        )
        for h in hits
    ]


def detection_by_query(bench: Benchmark, encoded: Sequence[Any]) -> dict[str, list[int]]:
    """Per query: [gold mentions, those overlapped by a detected span with IoU ≥ 0.5].

    The entity detector bounds every span metric: a mention it does not propose can be found by no
    type vector, so its recall is reported per type and group beside the retrieval figures.
    """
    spans_of = {e.passage.id: [(s.start, s.end) for s in e.spans] for e in encoded}
    out: dict[str, list[int]] = {}
    for q in bench.scored_queries():
        gold = found = 0
        for pid, mentions in bench.gold.get(q.id, {}).items():
            hit, _ = match_spans(mentions, spans_of.get(pid, []))
            gold += len(mentions)
            found += hit
        out[q.id] = [gold, found]
    return out


def detection_summary(bench: Benchmark, counts: Mapping[str, Sequence[int]], training: Training) -> dict[str, Any]:
    """Detection recall (micro over mentions) per group and per type."""
    groups: dict[str, list[int]] = {}
    by_type = {}
    for q in bench.scored_queries():
        gold, found = counts.get(q.id, (0, 0))
        if not gold:
            continue
        by_type[q.text] = round(found / gold, 4)
        for g in ("all", group_of(q, training)):
            row = groups.setdefault(g, [0, 0])
            row[0] += gold
            row[1] += found
    return {
        "definition": "share of gold mentions overlapped (IoU >= 0.5) by a span the entity detector proposes",
        "by_group": {g: {"mentions": n, "recall": round(f / n, 4)} for g, (n, f) in groups.items()},
        "by_type": by_type,
    }


def compute_rankings(
    bench: Benchmark,
    encoder: Any,
    *,
    store_dir: str | Path | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    batch_size: int = 32,
    passage_weight: float | None = None,
    feedback: Any = None,
) -> tuple[dict[str, dict[str, list[Ranked]]], dict[str, Any]]:
    """Rankings of every method for every query, and timings/counts of the run.

    ``passage_weight`` (default: the model's) is the system's λ of hybrid scoring; when it is not 0
    the same searches are also ranked by best span alone (``system_spans``). ``system_prf`` is the
    system's search with query-time feedback (``feedback``: an :class:`indexer.feedback.Feedback`,
    default weight 0.5, top 10).
    """
    from ..feedback import Feedback
    from ..api import NerIndex
    from ..pipeline import index_passages
    from ..stores.embedded import EmbeddedStore
    from .baselines import bm25_rankings, dense_rankings, span_rankings

    corpus = bench.corpus
    queries = bench.scored_queries()
    stats: dict[str, Any] = {"passages": len(corpus), "queries": len(queries)}
    began = time.perf_counter()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if done[0] % 500 < n or done[0] == len(corpus):
            log.info("encoded %d/%d passages", done[0], len(corpus))

    encoded = encoder.encode(corpus, batch_size=batch_size, with_base=True, progress=progress)
    stats["encode_seconds"] = round(time.perf_counter() - began, 2)
    stats["spans"] = sum(len(e.spans) for e in encoded)
    stats["detection_by_query"] = detection_by_query(bench, encoded)
    stats["passages_without_spans"] = sum(1 for e in encoded if not e.spans)
    ids = [p.id for p in corpus]
    phrases = [q.text for q in queries]
    type_vectors = encoder.embed_types(phrases) if phrases else np.zeros((0, encoder.info.dims))
    rankings: dict[str, dict[str, list[Ranked]]] = {}

    if set(methods) & set(SYSTEM_METHODS):
        with tempfile.TemporaryDirectory(prefix="nerindex-eval-") as tmp:
            folder = Path(store_dir) if store_dir else Path(tmp) / "store"
            store = EmbeddedStore.open(folder)
            try:
                t0 = time.perf_counter()
                report = index_passages(corpus, _EncodedOnce(encoder, {e.passage.id: e for e in encoded}), store)
                stats["index_seconds"] = round(time.perf_counter() - t0, 2)
                stats["index"] = {k: v for k, v in report.to_dict().items() if k != "errors"}
                ix = NerIndex(encoder, store, description=str(folder))
                t0 = time.perf_counter()
                def ranked(weight: float | None, fb: Any = None) -> dict[str, list[Ranked]]:
                    return {
                        q.id: _hits_to_ranking(
                            ix.iter_search(q.text, min_similarity=-1.0, exhaustive=True, passage_weight=weight,
                                           feedback=fb)
                        )
                        for q in queries
                    }

                per_query = max(len(queries), 1)
                weight = encoder.info.passage_weight if passage_weight is None else float(passage_weight)
                stats["passage_weight"] = weight
                if "system" in methods:
                    rankings["system"] = ranked(passage_weight)
                    stats["search_seconds_per_query"] = round((time.perf_counter() - t0) / per_query, 4)
                if stats["passage_weight"] and "system_spans" in methods:
                    rankings["system_spans"] = ranked(0.0)
                if "system_prf" in methods:
                    fb = feedback if feedback is not None else Feedback()
                    stats["feedback"] = {"weight": fb.weight, "top": fb.top, "vectors": "passage"}
                    t0 = time.perf_counter()
                    rankings["system_prf"] = ranked(passage_weight, fb)
                    stats["feedback_search_seconds_per_query"] = round((time.perf_counter() - t0) / per_query, 4)
            finally:
                store.close()
    qvecs = [(q.id, type_vectors[i]) for i, q in enumerate(queries)]
    if "span_base" in methods:
        spans = [
            [(s.start, s.end, s.base_vector) for s in e.spans if s.base_vector is not None] for e in encoded
        ]
        rankings["span_base"] = span_rankings(ids, spans, qvecs)
    if "dense" in methods:
        rankings["dense"] = dense_rankings(ids, np.stack([e.vector for e in encoded]), qvecs)
    if "bm25" in methods:
        rankings["bm25"] = bm25_rankings(ids, [p.text for p in corpus], [(q.id, q.text) for q in queries])
    stats["total_seconds"] = round(time.perf_counter() - began, 2)
    return rankings, stats


def run_eval(
    bench: Benchmark,
    *,
    model_dir: str | Path | None = None,
    store_dir: str | Path | None = None,
    device: str = "cpu",
    methods: Sequence[str] = DEFAULT_METHODS,
    threshold: float | None = None,
    train_types: Sequence[str] | None = None,
    train_data: Sequence[str | Path] = (),
    data_roots: Sequence[str | Path] = (),
    mapping_file: str | Path | None = None,
    calibrate_on: Sequence[str] | None = None,
    batch_size: int = 32,
    encoder: Any = None,
    passage_weight: float | None = None,
    feedback: Any = None,
) -> dict[str, Any]:
    """Run the whole evaluation and return the JSON-ready result (see ``report`` for rendering).

    ``calibrate_on`` (groups, e.g. ``("seen",)``) also chooses thresholds on those types' queries;
    the caller decides whether to store the system's in ``model.json``.
    """
    from ..encoder import OnnxEncoder
    from .baselines import bm25_description

    if encoder is None:
        encoder = OnnxEncoder.from_dir(model_dir, device=device)
    info = encoder.info
    card = info.card
    training = training_from_card(
        card, train_types=train_types, train_data=train_data, data_roots=data_roots, mapping_file=mapping_file
    )
    rankings, stats = compute_rankings(
        bench, encoder, store_dir=store_dir, methods=methods, batch_size=batch_size, passage_weight=passage_weight,
        feedback=feedback,
    )

    calibrated = card.calibration
    stored = calibrated.method_thresholds if calibrated else {}
    thresholds: dict[str, float | None] = {}
    threshold_source: dict[str, str] = {}
    for key in rankings:
        if not METHODS[key].thresholded:
            thresholds[key] = None
            threshold_source[key] = "none (ranking only)"
        elif key in SYSTEM_METHODS:
            thresholds[key] = threshold if threshold is not None else info.similarity_threshold
            threshold_source[key] = "--threshold" if threshold is not None else (
                "model.json similarity_threshold (calibrated)" if calibrated else
                "model.json similarity_threshold (not calibrated)"
            )
        elif key in stored:
            thresholds[key] = stored[key]
            threshold_source[key] = "model.json calibration (same dev data and rule as the system)"
        else:
            thresholds[key] = None
            threshold_source[key] = "not calibrated: set metrics omitted"

    calibration = calibrate_methods(bench, rankings, training, groups=calibrate_on) if calibrate_on else None
    if calibration:
        # report set metrics at the thresholds just chosen (what the written model.json will hold)
        for key, chosen in calibration["methods"].items():
            thresholds[key] = chosen["chosen"]["threshold"]
            threshold_source[key] = f"calibrated in this run on the {'/'.join(calibrate_on)} types"

    scored = bench.scored_queries()
    phrases = [q.text for q in scored]
    # Without any record of the training types, Familiarity is unknown (not 0): leave it out.
    fam = split_familiarity(phrases, training.counts, encoder.embed_types)[0] if training.counts else {}
    result = score_methods(bench, rankings, thresholds, training, fam)
    out: dict[str, Any] = {
        "benchmark": {
            "name": bench.name,
            "sources": bench.sources,
            "passages": len(bench.corpus),
            "queries_scored": len(scored),
        },
        "model": {
            "path": str(info.path),
            "id": info.id,
            "version": info.version,
            "checksum": info.checksum,
            "similarity_threshold": info.similarity_threshold,
            "detection_threshold": info.detection_threshold,
            "passage_weight": stats.get("passage_weight", info.passage_weight),
            **({"feedback": stats["feedback"]} if "feedback" in stats else {}),
        },
        "methods": {
            key: {
                "label": METHODS[key].label,
                "threshold": _r(thresholds[key]),
                "threshold_source": threshold_source[key],
            }
            for key in rankings
        },
        "training": {
            "types_source": training.source,
            "types": sorted(training.types),
            "held_out_types": sorted(training.held_out),
            "counts_source": training.counts_source,
        },
        "familiarity": {
            "definition": "Golde et al. 2025 (arXiv:2412.10121): Zipf-weighted mean clipped cosine "
            "of the test type to the k=1000 most similar training mentions",
            "embedding": f"the evaluated model's type encoder (embed_types of {info.id} {info.version}; "
            f"backbone {card.backbone.name or '?'})",
            "k": 1000,
            "weighting": "zipf",
            "by_group": result.pop("familiarity_by_group"),
        },
        **result,
        "detection": detection_summary(bench, stats.pop("detection_by_query", {}), training),
        "run": stats,
    }
    if "bm25" in out["methods"]:
        out["methods"]["bm25"]["description"] = bm25_description()
    if calibration:
        out["calibration"] = calibration
    return out
