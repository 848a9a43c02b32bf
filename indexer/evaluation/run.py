"""One evaluation run: index the benchmark corpus, search every type, score system and baselines.

The system is measured through the real pipeline, store and search (``index_passages`` into an
embedded store, ``NerIndex.search(..., exhaustive=True)``), i.e. what ``nerindex search --all``
gives a user (``rankings`` module); the baselines reuse the same encodings.

Ranking metrics (R-Precision, Recall@k, P@10) use each method's full ranking; set and span metrics
use what the method returns at its operating threshold (``metrics`` module docstring). Searches ask
for ``min_similarity=-1`` so one search per type yields the full ranking; returning at a threshold
is then a filter, identical to searching with that threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from ..model_card import ModelCard
from ..model_folder import ModelInfo
from .benchmark_io import Benchmark
from .familiarity import split_familiarity
from .methods import DEFAULT_METHODS, METHODS, SYSTEM_METHODS
from .rankings import Rankings, compute_rankings
from .scoring import calibrate_methods, detection_summary, round6, score_methods
from .seen_types import Training, training_from_card

FAMILIARITY_DEFINITION = (
    "Golde et al. 2025 (arXiv:2412.10121): Zipf-weighted mean clipped cosine "
    "of the test type to the k=1000 most similar training mentions"
)


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

    if encoder is None:
        encoder = OnnxEncoder.from_dir(model_dir, device=device)
    info = encoder.info
    training = training_from_card(
        info.card, train_types=train_types, train_data=train_data, data_roots=data_roots, mapping_file=mapping_file
    )
    rankings, stats = compute_rankings(
        bench, encoder, store_dir=store_dir, methods=methods, batch_size=batch_size, passage_weight=passage_weight,
        feedback=feedback,
    )
    thresholds, threshold_source = operating_thresholds(rankings, info.card, info.similarity_threshold, threshold)
    calibration = calibrate_methods(bench, rankings, training, groups=calibrate_on) if calibrate_on else None
    if calibration:
        # report set metrics at the thresholds just chosen (what the written model.json will hold)
        for key, chosen in calibration["methods"].items():
            thresholds[key] = chosen["chosen"]["threshold"]
            threshold_source[key] = f"calibrated in this run on the {'/'.join(calibrate_on)} types"
    phrases = [q.text for q in bench.scored_queries()]
    # Without any record of the training types, Familiarity is unknown (not 0): leave it out.
    fam = split_familiarity(phrases, training.counts, encoder.embed_types)[0] if training.counts else {}
    scored = score_methods(bench, rankings, thresholds, training, fam)
    out = _result(bench, info, rankings, thresholds, threshold_source, training, scored, stats)
    if calibration:
        out["calibration"] = calibration
    return out


def operating_thresholds(
    rankings: Rankings, card: ModelCard, model_threshold: float, threshold: float | None
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Each method's operating threshold and where it comes from: --threshold or the model's for
    the system, the card's calibration for baselines, none for ranking-only methods."""
    calibrated = card.calibration
    stored = calibrated.method_thresholds if calibrated else {}
    thresholds: dict[str, float | None] = {}
    source: dict[str, str] = {}
    for key in rankings:
        if not METHODS[key].thresholded:
            thresholds[key] = None
            source[key] = "none (ranking only)"
        elif key in SYSTEM_METHODS:
            thresholds[key] = threshold if threshold is not None else model_threshold
            source[key] = "--threshold" if threshold is not None else (
                "model.json similarity_threshold (calibrated)" if calibrated else
                "model.json similarity_threshold (not calibrated)"
            )
        elif key in stored:
            thresholds[key] = stored[key]
            source[key] = "model.json calibration (same dev data and rule as the system)"
        else:
            thresholds[key] = None
            source[key] = "not calibrated: set metrics omitted"
    return thresholds, source


def _result(
    bench: Benchmark,
    info: ModelInfo,
    rankings: Rankings,
    thresholds: Mapping[str, float | None],
    threshold_source: Mapping[str, str],
    training: Training,
    scored: dict[str, Any],
    stats: dict[str, Any],
) -> dict[str, Any]:
    """The JSON-ready result, sections in the order reports and saved results have always had."""
    from .baselines import bm25_description

    out: dict[str, Any] = {
        "benchmark": {
            "name": bench.name,
            "sources": bench.sources,
            "passages": len(bench.corpus),
            "queries_scored": len(bench.scored_queries()),
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
                "threshold": round6(thresholds[key]),
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
            "definition": FAMILIARITY_DEFINITION,
            "embedding": f"the evaluated model's type encoder (embed_types of {info.id} {info.version}; "
            f"backbone {info.card.backbone.name or '?'})",
            "k": 1000,
            "weighting": "zipf",
            "by_group": scored.pop("familiarity_by_group"),
        },
        **scored,
        "detection": detection_summary(bench, stats.pop("detection_by_query", {}), training),
        "run": stats,
    }
    if "bm25" in out["methods"]:
        out["methods"]["bm25"]["description"] = bm25_description()
    return out
