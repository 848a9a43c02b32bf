"""One evaluation run: index the benchmark corpus, search every type, score system and baselines.

The system is measured through the real pipeline, store and search (``index_passages`` into an
embedded store, then one ``NerIndex.search`` per type as long as the corpus: ``rankings`` module);
the baselines reuse the same encodings.

Ranking metrics (R-Precision, Recall@k, P@10) use each method's full ranking, i.e. what a top-k
search ranks (candidate spans included); set and span metrics use what the method returns at its
operating threshold (``metrics`` module docstring), i.e. what ``nerindex search --all`` gives a user:
the passages whose best *mention* passes it, with those mentions marked. Searches ask for
``min_similarity=-1`` so one search per type yields the full ranking and every mention's similarity;
returning at a threshold is then a filter, identical to ``--all`` with that threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..model_folder import ModelInfo
from .benchmark_io import Benchmark
from .calibration import unseen_applied
from .familiarity import split_familiarity
from .methods import DEFAULT_METHODS, METHODS, SYSTEM_METHODS
from .rankings import Rankings, compute_rankings
from .scoring import Threshold, calibrate_methods, detection_summary, round6, score_methods
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
    rankings = bench.scope_rankings(rankings)  # a type is scored only on the passages judged for it
    thresholds, threshold_source = operating_thresholds(rankings, info, threshold)
    calibration = _calibrate(bench, rankings, training, calibrate_on, info, thresholds, threshold_source) if calibrate_on else None
    phrases = [q.text for q in bench.scored_queries()]
    # Without any record of the training types, Familiarity is unknown (not 0): leave it out.
    fam = split_familiarity(phrases, training.counts, encoder.embed_phrases)[0] if training.counts else {}
    scored = score_methods(bench, rankings, thresholds, training, fam)
    out = _result(bench, info, rankings, thresholds, threshold_source, training, scored, stats)
    if calibration:
        out["calibration"] = calibration
    return out


def _calibrate(bench: Benchmark, rankings: Rankings, training: Training, groups: Sequence[str], info: ModelInfo,
               thresholds: dict[str, Threshold], source: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """Choose thresholds on ``groups``' types and report set metrics at them (what the written
    model.json will hold; ``thresholds`` and ``source`` are updated). Calibrating on the seen types
    also chooses the threshold of phrases the model was not trained on, on the unseen types."""
    calibration = calibrate_methods(bench, rankings, training, groups=groups)
    if "seen" in groups and "unseen" not in groups:
        unseen = calibrate_methods(bench, rankings, training, groups=("unseen",))
        if unseen["methods"]:
            calibration["unseen"] = unseen
            system = unseen["methods"].get("system")
            if system is not None and not system["chosen"]["f1"]:
                # F1 0 at every threshold: nothing to choose, so the model's unseen thresholds stand
                # for every method, as --write-model keeps them (an audit: the tie rule's 1.0 was
                # applied and recorded while model.json kept 0.21)
                unseen["applied"] = False
    seen = calibration["methods"]
    others = calibration["unseen"]["methods"] if unseen_applied(calibration) else {}
    # every threshold chosen is the one scored (an audit: with no seen types the unseen one was
    # reported as chosen and not applied, and a phrase outside both groups got the seen one)
    for key in dict.fromkeys([*seen, *others]):
        trained, other = _two_thresholds(thresholds.get(key))
        where = []
        if key in seen:
            trained = seen[key]["chosen"]["threshold"]
            where.append(f"on the {'/'.join(groups)} types (trained-on phrases)")
        if key in others:  # baselines get two as well: their set figures are not handicapped by the system's rule
            other = others[key]["chosen"]["threshold"]
            where.append("on the unseen types (other phrases)")
        # one threshold where only one is known: a card without a second keeps none when written,
        # and a search applies its one to every phrase (a review: coarse types were scored at the old)
        trained, other = (other, other) if trained is None else (trained, trained if other is None else other)
        thresholds[key] = PhraseThresholds(trained, other, training.is_trained)
        source[key] = "calibrated in this run " + " and ".join(where)
    return calibration


def _two_thresholds(threshold: Threshold) -> tuple[float | None, float | None]:
    """(trained-on phrases', other phrases') of a method's threshold before calibration; a single
    threshold has no second (None)."""
    if isinstance(threshold, PhraseThresholds):
        return threshold.trained, threshold.other
    return threshold, None


@dataclass(frozen=True)
class PhraseThresholds:
    """The system's two thresholds: one for phrases the model was trained on, one for the others.
    Uncalibrated, by ``ModelInfo.threshold_for``'s rule, so that eval applies what a search
    applies; calibrated, by the report's seen/unseen split (``--train-types`` may give another),
    so that each group is scored at the threshold chosen on it."""

    trained: float
    other: float
    is_trained: Callable[[str], bool]

    def __call__(self, phrase: str) -> float:
        return self.trained if self.is_trained(phrase) else self.other


def operating_thresholds(
    rankings: Rankings, info: ModelInfo, threshold: float | None
) -> tuple[dict[str, Threshold], dict[str, str]]:
    """Each method's operating threshold and where it comes from: --threshold or the model's for
    the system (two when the card has ``unseen_similarity_threshold``), the card's calibration for
    baselines, none for ranking-only methods."""
    calibrated = info.card.calibration
    stored = calibrated.method_thresholds if calibrated else {}
    thresholds: dict[str, Threshold] = {}
    source: dict[str, str] = {}
    for key in rankings:
        if not METHODS[key].thresholded:
            thresholds[key] = None
            source[key] = "none (ranking only)"
        elif key in SYSTEM_METHODS and threshold is not None:
            thresholds[key] = threshold
            source[key] = "--threshold"
        elif key in SYSTEM_METHODS:
            thresholds[key] = info.similarity_threshold
            source[key] = "model.json similarity_threshold" + _calibrated_note(calibrated)
            if info.unseen_similarity_threshold is not None:
                thresholds[key] = PhraseThresholds(info.similarity_threshold, info.unseen_similarity_threshold, info.is_trained_phrase)
                source[key] += ", unseen_similarity_threshold for phrases not in training.types"
        elif key in stored:
            thresholds[key] = stored[key]
            source[key] = "model.json calibration (same dev data and rule as the system)"
            if key in calibrated.unseen_method_thresholds:
                thresholds[key] = PhraseThresholds(stored[key], calibrated.unseen_method_thresholds[key], info.is_trained_phrase)
                source[key] += ", its unseen-type threshold for phrases not in training.types"
        else:
            thresholds[key] = None
            source[key] = "not calibrated: set metrics omitted"
    return thresholds, source


def _calibrated_note(calibrated: Any) -> str:
    """How the card's thresholds were chosen, for the report's threshold source."""
    if not calibrated:
        return " (not calibrated)"
    if calibrated.exported_from:  # another folder's graphs: the same weights, or not (--span-side)
        return f" (calibrated on {calibrated.exported_from}, which this folder was exported from)"
    if calibrated.unseen_exported_from:
        return f" (calibrated; the unseen one on {calibrated.unseen_exported_from}, which this folder was exported from)"
    return " (calibrated)"


def _method_entry(key: str, threshold: Threshold, source: str) -> dict[str, Any]:
    """A method's label and operating threshold(s) in the result."""
    entry: dict[str, Any] = {"label": METHODS[key].label}
    if isinstance(threshold, PhraseThresholds):
        entry["threshold"] = round6(threshold.trained)
        entry["threshold_unseen"] = round6(threshold.other)
    else:
        entry["threshold"] = round6(threshold)
    entry["threshold_source"] = source
    return entry


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
            "unseen_similarity_threshold": info.unseen_similarity_threshold,
            "detection_threshold": info.detection_threshold,
            "passage_weight": stats.get("passage_weight", info.passage_weight),
            **({"unseen_passage_weight": stats["unseen_passage_weight"]} if "unseen_passage_weight" in stats else {}),
            "candidate_threshold": info.candidate_threshold,
            "type_template": info.type_template,
            "unseen_type_template": info.unseen_type_template,
            **({"feedback": stats["feedback"]} if "feedback" in stats else {}),
        },
        "methods": {key: _method_entry(key, thresholds[key], threshold_source[key]) for key in rankings},
        "training": {
            "types_source": training.source,
            "types": sorted(training.types),
            "held_out_types": sorted(training.held_out),
            "counts_source": training.counts_source,
        },
        "familiarity": {
            "definition": FAMILIARITY_DEFINITION,
            "embedding": f"the evaluated model's type encoder, every phrase in type_template (embed_phrases of {info.id} {info.version}; "
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
