"""Train the span adapter and the entity head on labelled NER data, with the backbone frozen.

One run is a sequence of stages, each a function returning a dataclass whose ``to_record()`` is its
part of the run folder's ``train.json`` (and later of model.json):

1. **data** (:func:`prepare_data`): corpora, frozen-backbone states, type vectors, span features,
   silver data when given.
2. **span adapter** (:func:`fit_span_adapter`, ``adapter.py``): InfoNCE between gold span vectors and
   the phrase embeddings of their types. Early stopping on *held-out training types* (types nearly
   absent from the adapter's training spans, scored by span R-Precision on dev gold spans); the
   chosen number of steps is then trained again on all types.
3. **entity head** (:func:`fit_detection`, ``entity_head.py``): balanced BCE, early-stopped on dev
   span F1; the detection threshold maximises dev span F-beta.
4. **hybrid scoring** (:func:`choose_passage_weight`): λ of span + λ · passage similarity.
5. **similarity threshold** (:func:`calibrate_passages`): the best passage-level macro F1 over dev
   types (passage score = best detected span), with the zero-shot check on the held-out types.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save

from ..atomic_files import write_bytes
from .adapter import train_adapter
from .data import (
    Corpus, Source, build_corpus, check_sources, crossner_only, default_sources, limit_corpus, seen_phrases,
    sentences_per_source,
)
from .entity_head import (
    Decoded, decoded_spans, detection_by_source, detection_threshold, gold_recall_by_source, head_steps,
    score_candidates, train_entity_head,
)
from ..encoder import load_tokenizer
from ..errors import ModelError
from ..model_folder import normal_phrase, normal_phrases
from .export import backbone_tokenizer_file
from .features import Features, SpanFeatures, adapter_vectors, cached_encode, embed_phrases, gold_spans, span_features
from .figures import (
    calibrate_similarity, chosen_passage_weight, macro_r_precision, passage_figures, passage_relevance, span_r_precision,
)
from .model import SpanTypeEncoder, build_model
from .run_folder import check_run_folder
from .silver.hierarchy import TypeHierarchy, hierarchy_path
from .silver.records import read_silver
from .silver.coverage import check_silver_cover
from .silver_train import align_silver, related_index, set_silver_detection_targets, train_silver_adapter
from .train_config import TrainConfig

log = logging.getLogger(__name__)

# λ grid of hybrid scoring (span similarity + λ · passage similarity)
PASSAGE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def run_training(cfg: TrainConfig, out_dir: str | Path, *, force: bool = False) -> dict[str, Any]:
    """Train the shipped configuration and write ``heads.safetensors`` + ``train.json`` to ``out_dir``
    (made first, so an unwritable one fails early; removed if the run fails: an audit found them left empty)."""
    out_dir = Path(out_dir)
    check_run_folder(out_dir, force=force)
    if cfg.heads.span_layers:
        # the adapter is fitted on cached states of the frozen backbone, which a span-side copy
        # of the top layers would not read: such a side is trained apart (nerindex export --span-side)
        raise ModelError("nerindex train fits heads on the frozen backbone: heads.span_layers must be 0")
    check_sources(cfg.data_dir)  # before the backbone loads and --out is made (an audit: it was left empty)
    made = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, out_dir)
    except BaseException:
        if made and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()
        raise


def _train(cfg: TrainConfig, out_dir: Path) -> dict[str, Any]:
    """Every stage of :func:`run_training`, in order."""
    t_start = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = build_model(cfg.backbone, config=cfg.heads, seed=cfg.seed)
    data = prepare_data(cfg, model)
    adapter = fit_span_adapter(cfg, model, data)
    detection = fit_detection(cfg, model, data)
    hybrid = choose_passage_weight(model, data, adapter, detection)
    similarity = calibrate_passages(cfg, model, data, detection, hybrid.passage_weight)
    seconds = {
        "encode": round(data.encode_seconds, 1),
        "adapter": round(adapter.seconds, 1),
        "head": detection.head["seconds"],
        "total": round(time.time() - t_start, 1),
    }
    figures = {
        "adapter": adapter.to_record(),
        "entity_head": detection.to_record(),
        "similarity": similarity.to_record(),
        "hybrid": hybrid.to_record(),
        "seconds": seconds,
    }
    record = {
        "backbone": cfg.backbone,
        "heads_config": cfg.heads.to_dict(),
        "max_length": cfg.max_length,
        "max_span_width": cfg.max_span_width,
        "detection_threshold": detection.threshold,
        "span_decoding": cfg.span_decoding,
        "similarity_threshold": similarity.threshold,
        "passage_weight": hybrid.passage_weight,
        # a span is tagged with a catalog phrase exactly when searching for that phrase would match it
        "label_threshold": similarity.threshold,
        "training": {
            **data.to_record(),
            "config": cfg.to_dict(),
            "counts": data.counts_record(),
            "figures": figures,
            **data.type_counts_record(),
        },
    }
    # each whole or not at all: a run killed while writing left half a file (an audit)
    heads = save(model.head_state_dict())
    record["heads_sha256"] = hashlib.sha256(heads).hexdigest()  # export checks the pair: a kill between the writes
    write_bytes(out_dir / "heads.safetensors", heads)
    write_train_json(out_dir, record)
    log.info("training done in %.0f s", time.time() - t_start)
    return record


def write_train_json(out_dir: Path, record: dict[str, Any]) -> None:
    """``train.json`` as strict JSON: a figure with nothing to measure (NaN, e.g. a ``--limit``
    smoke run) is written as null. Why: ``json.dumps`` writes NaN by default, which no strict
    reader takes and which ``nerindex export`` then refused to copy into model.json."""
    text = json.dumps(_finite_or_null(record), indent=2, allow_nan=False) + "\n"
    write_bytes(out_dir / "train.json", text.encode("utf-8"))


def _finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float (nested in dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# 1. data


@dataclass
class TrainingData:
    """The corpora of a run, their frozen-backbone states, type vectors and span features."""

    sources: dict[str, list[Source]]
    train: Corpus
    dev: Corpus
    zeroshot: Corpus  # the held-out (medical) types, for the zero-shot check
    train_f: Features
    dev_f: Features
    zs_f: Features
    types: list[str]  # gold phrases seen in training
    held: tuple[str, ...]  # types held out of training
    type_vecs: dict[str, torch.Tensor]  # every phrase any stage queries
    train_sf: SpanFeatures  # every gold span of train
    dev_sf: SpanFeatures  # the typed gold spans of dev
    zs_sf: SpanFeatures  # the typed gold spans of the zero-shot corpus
    silver: dict[str, Any] | None  # load_silver's result
    encode_seconds: float

    def to_record(self) -> dict[str, Any]:
        """The data part of train.json's ``training``: files, types, held-out types."""
        types = self.types if self.silver is None else sorted(set(self.types) | set(self.silver["spans"].vocab))
        held = set(self.held) | crossner_only(self.types) | set(self.silver["held_out"] if self.silver else ())
        trained = normal_phrases(types)  # a silver type is trained on (an audit: "writer" was both)
        held = {t for t in held if normal_phrase(t) not in trained}
        used = {split: sentences_per_source(getattr(self, split), self.sources[split]) for split in self.sources}
        return {
            # only files a sentence was trained on: a --limit run or an empty file used to be listed
            # as training data all the same (an audit); "sentences" has every file, 0 included
            "data": [name for name, n in used["train"].items() if n],
            "validation_data": [name for name, n in used["dev"].items() if n],
            "zeroshot_check_data": [name for name, n in used["zeroshot"].items() if n],
            "sentences": used,
            "types": types,
            "held_out_types": sorted(held),
            "not_used": ["crossner (all sets)"],
        }

    def counts_record(self) -> dict[str, Any]:
        """``training.counts``: windows, spans and what was dropped, per split."""
        return {
            "train": self.train.counts, "dev": self.dev.counts, "zeroshot": self.zeroshot.counts,
            "adapter_train_spans": len([p for p in self.train_sf.phrases if p]),
        }  # fmt: skip

    def type_counts_record(self) -> dict[str, Any]:
        """``training.type_counts`` (mentions per type trained on; a gold run had none, and Familiarity
        counted whole files found beside the evaluated data: an audit), and a silver run's ``training.silver``."""
        if not self.silver:
            return {"type_counts": dict(sorted(Counter(p for p in self.train_sf.phrases if p).items()))}
        return {
            "silver": {k: v for k, v in self.silver.items() if k not in ("spans", "related")},
            "type_counts": self.silver["spans"].type_counts(),
        }


def prepare_data(cfg: TrainConfig, model: SpanTypeEncoder) -> TrainingData:
    """Read and window the splits, align silver data, run the backbone once, embed every type phrase."""
    tokenizer = load_tokenizer(backbone_tokenizer_file(cfg.backbone))
    sources = default_sources(cfg.data_dir)
    held = tuple(cfg.held_out_types)
    kw = dict(max_length=cfg.max_length, max_span_width=cfg.max_span_width)
    log.info("reading and tokenizing the labelled data in %s (all of it, before any --limit)", cfg.data_dir)
    train = build_corpus(sources["train"], tokenizer, exclude_phrases=held, **kw)
    dev = build_corpus(sources["dev"], tokenizer, exclude_phrases=held, **kw)
    zs = build_corpus(sources["zeroshot"], tokenizer, **kw)
    if cfg.limit:
        train, dev, zs = (limit_corpus(c, cfg.limit) for c in (train, dev, zs))
    log.info("train %s; dev %s", train.counts, dev.counts)
    head_steps(cfg, len(train.examples))  # options that give the head no step fail now, not after the encoding
    silver = load_silver(cfg, train, dev) if cfg.silver else None

    t0 = time.time()
    train_f, dev_f, zs_f = (
        cached_encode(model, c, cfg, name) for c, name in ((train, "train"), (dev, "dev"), (zs, "zeroshot"))
    )
    encode_s = time.time() - t0

    types = seen_phrases(train)
    all_queries = sorted(set(types) | set(held) | set(seen_phrases(dev)) | set(cfg.validation_types))
    if silver is not None:
        all_queries = sorted(set(all_queries) | set(silver["spans"].vocab))
    type_vecs = embed_phrases(model, tokenizer, all_queries)
    return TrainingData(
        sources=sources, train=train, dev=dev, zeroshot=zs, train_f=train_f, dev_f=dev_f, zs_f=zs_f,
        types=types, held=held, type_vecs=type_vecs,
        train_sf=span_features(train_f, train, gold_spans(train)),
        dev_sf=span_features(dev_f, dev, [g for g in gold_spans(dev) if g[3]]),
        zs_sf=span_features(zs_f, zs, [g for g in gold_spans(zs) if g[3]]),
        silver=silver, encode_seconds=encode_s,
    )  # fmt: skip


def load_silver(cfg: TrainConfig, train: Corpus, dev: Corpus) -> dict[str, Any]:
    """Align the silver files onto the train (and dev) corpora; the hierarchy as mask indices."""
    spans, counts = align_silver(train, read_silver(cfg.silver), mark_labels=cfg.silver_detection)
    check_silver_cover(cfg.silver, counts.get("examples_without_silver", 0), len(train.examples), spans.vocab)
    hier_path = cfg.silver_hierarchy or str(hierarchy_path(cfg.silver))
    hierarchy = TypeHierarchy.load(hier_path, silver=cfg.silver)
    out: dict[str, Any] = {
        "file": cfg.silver, "hierarchy": hier_path, "counts": counts, "vocabulary": len(spans.vocab),
        "held_out": hierarchy.held_out,
        "spans": spans,
        "related": related_index(spans.vocab, hierarchy) if cfg.silver_mask
        else [np.zeros(0, dtype=np.int64) for _ in spans.vocab],
    }  # fmt: skip
    if cfg.silver_dev and cfg.silver_detection:
        out["dev_file"] = cfg.silver_dev
        out["dev_counts"] = set_silver_detection_targets(dev, cfg.silver_dev)
    log.info("silver: %s", {k: v for k, v in out.items() if k not in ("spans", "related")})
    return out


# ---------------------------------------------------------------------------------------------
# 2. span adapter


@dataclass
class AdapterFit:
    """Span R-Precision before and after the adapter; the adapter that never saw the validation types."""

    validation_types: list[str]  # the validation types present in dev
    early_stop_step: int  # run 1 (validation types held out)
    steps_trained: int  # run 2, the shipped adapter
    history: list[tuple[int, float | None, float]]  # run 1: (step, loss, validation R-Precision)
    val_before: dict[str, float]
    val_after: dict[str, float]  # run 1
    val_shipped: dict[str, float]  # run 2
    seen_before: dict[str, float]  # dev types seen in training
    seen_after: dict[str, float]
    zeroshot_before: dict[str, float]  # the held-out (medical) types
    zeroshot_after: dict[str, float]
    run1_state: dict[str, torch.Tensor]  # the adapter that never saw the validation types
    seconds: float

    def to_record(self) -> dict[str, Any]:
        """``figures.adapter`` of train.json."""
        return {
            "validation_types": self.validation_types,
            "early_stop_step": self.early_stop_step,
            "steps_trained": self.steps_trained,
            "val_span_r_precision_before": round(macro_r_precision(self.val_before), 4),
            "val_span_r_precision_after": round(macro_r_precision(self.val_after), 4),
            "val_per_type_before": _r(self.val_before),
            "val_per_type_after": _r(self.val_after),
            "val_span_r_precision_shipped": round(macro_r_precision(self.val_shipped), 4),
            "history": [(s, None if l is None else round(l, 4), round(r, 4)) for s, l, r in self.history],
            "dev_seen_span_r_precision_before": round(macro_r_precision(self.seen_before), 4),
            "dev_seen_span_r_precision_after": round(macro_r_precision(self.seen_after), 4),
            "zeroshot_medical_span_r_precision_before": round(macro_r_precision(self.zeroshot_before), 4),
            "zeroshot_medical_span_r_precision_after": round(macro_r_precision(self.zeroshot_after), 4),
            "zeroshot_medical_per_type_before": _r(self.zeroshot_before),
            "zeroshot_medical_per_type_after": _r(self.zeroshot_after),
        }


def fit_span_adapter(cfg: TrainConfig, model: SpanTypeEncoder, data: TrainingData) -> AdapterFit:
    """Run 1 with the validation types held out chooses the number of steps; run 2, on all types,
    trains that many steps and is the shipped adapter."""
    t0 = time.time()
    dev_sf, zs_sf, tv = data.dev_sf, data.zs_sf, data.type_vecs
    dev_phrases = set(dev_sf.phrases)
    val_queries = [q for q in cfg.validation_types if q in dev_phrases]
    seen_queries = [q for q in data.types if q in dev_phrases]
    with torch.no_grad():
        base_dev = adapter_vectors(model, dev_sf, base=True)
    val_before = span_r_precision(base_dev, dev_sf.phrases, val_queries, tv)
    seen_before = span_r_precision(base_dev, dev_sf.phrases, seen_queries, tv)
    adapter_run = _adapter_runner(cfg, model, data)
    run1 = adapter_run(exclude_types=cfg.validation_types, eval_queries=val_queries)
    run1_state = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    with torch.no_grad():
        val_after = span_r_precision(adapter_vectors(model, dev_sf), dev_sf.phrases, val_queries, tv)
    best_steps = max(run1["best_step"], 1) if run1["best_step"] else 0
    adapter_run(fixed_steps=best_steps)
    with torch.no_grad():
        dev_vecs = adapter_vectors(model, dev_sf)
        seen_after = span_r_precision(dev_vecs, dev_sf.phrases, seen_queries, tv)
        val_shipped = span_r_precision(dev_vecs, dev_sf.phrases, val_queries, tv)
        zs_before = span_r_precision(adapter_vectors(model, zs_sf, base=True), zs_sf.phrases, data.held, tv)
        zs_after = span_r_precision(adapter_vectors(model, zs_sf), zs_sf.phrases, data.held, tv)
    return AdapterFit(
        validation_types=val_queries, early_stop_step=run1["best_step"], steps_trained=best_steps,
        history=run1["history"], val_before=val_before, val_after=val_after, val_shipped=val_shipped,
        seen_before=seen_before, seen_after=seen_after, zeroshot_before=zs_before, zeroshot_after=zs_after,
        run1_state=run1_state, seconds=time.time() - t0,
    )  # fmt: skip


def _adapter_runner(cfg: TrainConfig, model: SpanTypeEncoder, data: TrainingData) -> Callable[..., dict[str, Any]]:
    """The adapter trainer of this run (gold-only or silver), bound to its data."""
    if data.silver is None:
        return lambda **kw: train_adapter(model, data.train_sf, data.dev_sf, data.type_vecs, cfg, **kw)
    ss = data.silver["spans"]
    silver_sf = span_features(data.train_f, data.train, ss.spans)
    type_matrix = torch.stack([data.type_vecs[t] for t in ss.vocab])
    return lambda **kw: train_silver_adapter(
        model, silver_sf, ss, type_matrix, data.silver["related"], data.dev_sf, data.type_vecs, cfg, **kw
    )


# ---------------------------------------------------------------------------------------------
# 3. entity head and detection threshold


@dataclass
class DetectionFit:
    """The trained entity head, its detection threshold and dev detection figures."""

    head: dict[str, Any]  # train_entity_head's result
    best: dict[str, float | bool]  # the dev sweep row of the shipped threshold (calibrated: False, entity_head.detection_threshold)
    threshold: float
    by_source: dict[str, dict[str, float]]
    gold_recall: dict[str, dict[str, float]]
    dev_decoded: Decoded  # dev spans decoded as the shipped model decodes them
    rule: str

    def to_record(self) -> dict[str, Any]:
        """``figures.entity_head`` of train.json."""
        return {
            "dev": {k: v if isinstance(v, bool) else round(v, 4) for k, v in self.best.items()},
            "dev_by_source": self.by_source,
            "dev_gold_recall_by_source": self.gold_recall,
            "best_step": self.head["best"].get("step"),
            "steps": self.head["steps"],
            "prior_logit_offset": self.head["prior_logit_offset"],
            "train_candidates": self.head["train_candidates"],
            "train_positives": self.head["train_positives"],
            "history": self.head["history"],
            "threshold_rule": self.rule,
        }


def fit_detection(cfg: TrainConfig, model: SpanTypeEncoder, data: TrainingData) -> DetectionFit:
    """Train the entity head; the detection threshold is the best dev F-beta with the shipped decoding."""
    head = train_entity_head(model, data.train, data.train_f, data.dev, data.dev_f, cfg)
    dev = data.dev
    dev_dec = decoded_spans(dev, score_candidates(model, data.dev_f, dev), nested=cfg.span_decoding == "nested")
    best = detection_threshold(dev, dev_dec, beta=cfg.threshold_beta)
    threshold = float(best["threshold"])
    return DetectionFit(
        head=head, best=best, threshold=threshold,
        by_source=detection_by_source(dev, dev_dec, threshold),
        gold_recall=gold_recall_by_source(dev, dev_dec, threshold),
        dev_decoded=dev_dec,
        rule=f"F{cfg.threshold_beta:g} on dev spans (exact match, {cfg.span_decoding} greedy "
        f"decoding); early stopping on F{cfg.detection_beta:g} with flat decoding",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# 4. hybrid scoring


@dataclass
class HybridFit:
    """λ of hybrid scoring and the validation passage R-Precision behind it."""

    passage_weight: float
    by_weight: dict[float, float]  # λ -> macro passage R-Precision on the validation types
    validation_r_precision: dict[str, float]  # per scoring method
    chosen: bool = True  # False: no validation type had figures, λ 0 (figures.chosen_passage_weight)

    def to_record(self) -> dict[str, Any]:
        """``figures.hybrid`` of train.json."""
        return {
            "rule": "passage score = best span similarity + λ · passage similarity; λ with the best "
                    "passage R-Precision on the validation types, run-1 adapter (types unseen)",
            "passage_weight": self.passage_weight,
            "chosen": self.chosen,
            "validation_r_precision_by_weight": {f"{k:g}": v for k, v in self.by_weight.items()},
            "validation_r_precision": self.validation_r_precision,
        }  # fmt: skip


def choose_passage_weight(
    model: SpanTypeEncoder, data: TrainingData, adapter: AdapterFit, detection: DetectionFit
) -> HybridFit:
    """λ with the best passage R-Precision on the validation types, measured with the run-1 adapter
    (for which they are unseen); the shipped adapter is put back afterwards."""
    dev = data.dev
    queries = [q for q in adapter.validation_types if passage_relevance(dev, q).any()]
    shipped_state = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    model.adapter.load_state_dict(adapter.run1_state)
    val_pf = passage_figures(model, data.dev_f, dev, detection.dev_decoded, detection.threshold, data.type_vecs,
                             queries, passage_weights=PASSAGE_WEIGHTS)  # fmt: skip
    model.adapter.load_state_dict(shipped_state)
    table = {lam: val_pf["r_precision"][f"hybrid_{lam:g}"] for lam in PASSAGE_WEIGHTS}
    best, chosen = chosen_passage_weight(table)
    return HybridFit(best, table, val_pf["r_precision"], chosen)


# ---------------------------------------------------------------------------------------------
# 5. similarity threshold and the zero-shot check


@dataclass
class SimilarityFit:
    """The passage-level similarity threshold, and passage figures on dev and on the held-out types."""

    threshold: float
    macro_f1: float
    curve: list[tuple[float, float]]
    dev_r_precision: dict[str, float]  # per scoring method
    zeroshot: dict[str, Any]  # passage_figures of the held-out types

    def to_record(self) -> dict[str, Any]:
        """``figures.similarity`` of train.json."""
        return {
            "threshold": self.threshold,
            "dev_passage_macro_f1": round(self.macro_f1, 4),
            "dev_passage_macro_f1_curve": self.curve,
            "dev_passage_r_precision": self.dev_r_precision,
            "zeroshot_medical_passage_r_precision": self.zeroshot["r_precision"],
            "zeroshot_medical_passage_per_type": self.zeroshot["per_type"],
        }


def calibrate_passages(
    cfg: TrainConfig, model: SpanTypeEncoder, data: TrainingData, detection: DetectionFit, passage_weight: float
) -> SimilarityFit:
    """The similarity threshold at passage level on dev (all seen types present there), and the
    zero-shot passage figures of the held-out types with the chosen λ."""
    dev = data.dev
    dev_queries = [q for q in data.types if passage_relevance(dev, q).any()]
    pf = passage_figures(model, data.dev_f, dev, detection.dev_decoded, detection.threshold, data.type_vecs, dev_queries)
    sim = calibrate_similarity(pf["scores"], pf["relevance"])
    zs = data.zeroshot
    zs_dec = decoded_spans(zs, score_candidates(model, data.zs_f, zs), nested=cfg.span_decoding == "nested")
    zs_pf = passage_figures(model, data.zs_f, zs, zs_dec, detection.threshold, data.type_vecs, list(data.held),
                            passage_weights=(passage_weight,))  # fmt: skip
    return SimilarityFit(sim["threshold"], sim["macro_f1"], sim["curve"], pf["r_precision"], zs_pf)


def _r(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}
