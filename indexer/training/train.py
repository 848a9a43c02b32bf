"""Train the span adapter and the entity head on labelled NER data, with the backbone frozen.

Because the backbone is frozen, its token states are computed once (float16 in memory) and both
heads train on them; the whole shipped configuration trains in minutes on a laptop CPU.

- **Span adapter** (what held up in DESIGN.md): InfoNCE in both directions at τ≈0.05 between gold
  span vectors and the backbone's phrase embeddings of their readable type phrases, several
  positives allowed, hierarchically related types masked. Early stopping on *held-out training
  types*: types nearly absent from the adapter's training spans, scored by span-level R-Precision on
  gold spans of a validation split. The chosen number of steps is then trained again on all types.
- **Entity head**: balanced binary cross-entropy, gold spans (every type, misc included) against
  every other candidate span, early-stopped on validation span F1 after greedy overlap resolution.
- **Thresholds**: the detection threshold maximises validation span F1; the similarity threshold
  maximises passage-level macro F1 over validation types (passage score = best detected span).

Everything measured lands in the run folder's ``train.json`` and later in model.json.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..spans import resolve_overlaps
from .data import (
    MEDICAL_PHRASES,
    Corpus,
    build_corpus,
    default_sources,
    related,
    relevant_phrases,
    seen_phrases,
)
from .model import DEFAULT_BACKBONE, HeadConfig, SpanTypeEncoder, build_model

log = logging.getLogger(__name__)

# λ grid of hybrid scoring (span similarity + λ · passage similarity)
PASSAGE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)

# MultiCoNER types that en-train90 nearly lacks and en-train10 is full of: held out of the
# adapter's first run to decide when to stop.
VALIDATION_TYPES = (
    "station", "car manufacturer", "aerospace manufacturer", "drink", "private corporation", "art work",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that decides the trained model; stored in model.json."""

    data_dir: str = "../shared/data"
    backbone: str = DEFAULT_BACKBONE
    max_length: int = 256
    max_span_width: int = 8
    held_out_types: tuple[str, ...] = MEDICAL_PHRASES
    validation_types: tuple[str, ...] = VALIDATION_TYPES
    heads: HeadConfig = field(default_factory=HeadConfig)
    seed: int = 0
    threads: int = 2
    encode_batch_tokens: int = 8192
    # adapter
    tau: float = 0.05
    adapter_lr: float = 1e-4
    adapter_batch: int = 512
    adapter_max_steps: int = 300
    adapter_eval_every: int = 10
    adapter_patience: int = 10  # evaluations without improvement
    # entity head
    head_lr: float = 1e-3
    head_batch: int = 32
    head_max_epochs: float = 3.0
    head_eval_every: int = 300  # steps
    head_patience: int = 3
    detection_beta: float = 1.0  # F-beta of the entity head's early stopping (flat decoding)
    # the shipped detection threshold: F-beta on dev spans with the decoding search uses. Recall
    # weighs more (β 2): a mention the detector drops is lost to every query, while a spurious
    # span is filtered out by type similarity.
    threshold_beta: float = 2.0
    span_decoding: str = "nested"  # "flat" or "nested" (spans.resolve_overlaps), stored in model.json
    limit: int | None = None  # use only the first N sentences of each split (smoke tests)
    cache_dir: str | None = None  # keep backbone token states here between runs (development)
    # silver data (docs/silver.md, silver_train.py): `nerindex silver` files of the train/dev splits
    silver: str | None = None
    silver_dev: str | None = None
    silver_hierarchy: str | None = None  # default: the train file's *.hierarchy.json
    silver_share: float = 0.5  # share of silver spans in an adapter batch
    silver_adapter_max_steps: int = 600
    silver_mask: bool = True  # ablation: False = no hierarchy masking (related types are negatives)
    silver_detection: bool = True  # ablation: False = the entity head learns from gold spans only
    silver_guide: bool = False  # GISTEmbed false-negative filter with the frozen backbone as guide
    # "all": every non-related type of the vocabulary is a negative; "mined": only the current
    # model's ranks silver_mined_ranks (1-based, inclusive) plus silver_random_negatives at random
    silver_negatives: str = "all"
    silver_mined_ranks: tuple[int, int] = (5, 50)
    silver_random_negatives: int = 256
    # "balanced": silver spans balanced over their nearest type; "clustered": NGAME-style batches of
    # silver spans drawn a cluster at a time (k-means on the frozen span vectors)
    silver_batches: str = "balanced"
    silver_clusters: int = 512
    silver_cluster_take: int = 32  # spans drawn from one cluster

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = self.heads.to_dict()
        d["held_out_types"] = list(self.held_out_types)
        d["validation_types"] = list(self.validation_types)
        return d


# ---------------------------------------------------------------------------------------------
# token states, computed once


@dataclass
class Features:
    """Frozen-backbone token states of every example of a corpus."""

    feats: list[torch.Tensor]  # per example [T, L*D] float16
    passage: torch.Tensor  # [N, D] float32 unit vectors (sentence embeddings)


@torch.no_grad()
def encode_corpus(model: SpanTypeEncoder, corpus: Corpus, *, batch_tokens: int) -> Features:
    """Run the backbone over all examples (length-sorted batches) and keep the feature layers."""
    n = len(corpus.examples)
    order = sorted(range(n), key=lambda i: len(corpus.examples[i].ids))
    feats: list[torch.Tensor | None] = [None] * n
    passage = torch.zeros(n, model.dims)
    i = 0
    t0 = time.time()
    while i < len(order):
        t = len(corpus.examples[order[min(i + 1, len(order) - 1)]].ids)
        bs = max(1, batch_tokens // max(t, 1))
        idx = order[i : i + bs]
        tmax = max(len(corpus.examples[k].ids) for k in idx)
        ids = torch.zeros(len(idx), tmax, dtype=torch.long)
        mask = torch.zeros(len(idx), tmax, dtype=torch.long)
        for r, k in enumerate(idx):
            e = corpus.examples[k].ids
            ids[r, : len(e)] = torch.from_numpy(e)
            mask[r, : len(e)] = 1
        f, last = model.token_states(ids, mask)
        passage[idx] = model.pool(last, mask)
        f16 = f.to(torch.float16)
        for r, k in enumerate(idx):
            feats[k] = f16[r, : len(corpus.examples[k].ids)].clone()
        i += len(idx)
    log.info("encoded %d windows in %.0f s", n, time.time() - t0)
    return Features(feats, passage)  # type: ignore[arg-type]


def base_slice(model: SpanTypeEncoder) -> slice:
    """Where the last layer sits inside the concatenated feature layers."""
    layers = model.config.feature_layers
    n_layers = int(model.backbone.config.num_hidden_layers)
    if layers[-1] != n_layers:
        raise ValueError("training on cached states needs the last layer among feature_layers")
    d = model.dims
    return slice((len(layers) - 1) * d, len(layers) * d)


@dataclass
class SpanFeatures:
    """Start, end and mean token features of a set of spans, with their phrases."""

    start: torch.Tensor  # [N, L*D] float16
    end: torch.Tensor
    mean: torch.Tensor
    phrases: list[str | None]
    example: np.ndarray  # [N] index of the example


def span_features(
    feats: Features, corpus: Corpus, spans: Sequence[tuple[int, int, int, str | None]]
) -> SpanFeatures:
    """Features of ``(example, tok_start, tok_end, phrase)`` spans, read from the cached states."""
    n = len(spans)
    width = feats.feats[0].shape[-1] if feats.feats else 0
    s = torch.zeros(n, width, dtype=torch.float16)
    e = torch.zeros(n, width, dtype=torch.float16)
    m = torch.zeros(n, width, dtype=torch.float16)
    for k, (ex, a, b, _) in enumerate(spans):
        f = feats.feats[ex]
        s[k] = f[a]
        e[k] = f[b]
        m[k] = f[a : b + 1].float().mean(0).half()
    return SpanFeatures(s, e, m, [p for *_, p in spans], np.array([x[0] for x in spans], dtype=np.int64))


def gold_spans(corpus: Corpus) -> list[tuple[int, int, int, str | None]]:
    return [
        (i, g.tok_start, g.tok_end, g.phrase)
        for i, ex in enumerate(corpus.examples)
        for g in ex.gold
    ]


def adapter_vectors(model: SpanTypeEncoder, sf: SpanFeatures, *, base: bool = False, chunk: int = 4096) -> torch.Tensor:
    """Unit span vectors (trained or base) of span features."""
    bs = base_slice(model)
    outs = []
    for i in range(0, len(sf.phrases), chunk):
        xs, xe, xm = (t[i : i + chunk].float() for t in (sf.start, sf.end, sf.mean))
        v = xm[:, bs]
        if not base:
            v = v + model.adapter.residual_from_features(xs, xe, xm)
        outs.append(F.normalize(v, dim=-1))
    return torch.cat(outs) if outs else torch.zeros(0, model.dims)


# ---------------------------------------------------------------------------------------------
# metrics


def r_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    """Share of the R best-scored items that are relevant (R = number of relevant items)."""
    r = int(relevant.sum())
    if r == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:r]
    return float(relevant[top].sum() / r)


def span_r_precision(
    vectors: torch.Tensor, phrases: Sequence[str | None], queries: Sequence[str], type_vecs: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Type → span R-Precision over a pool of gold spans (a span is relevant if its type matches)."""
    out = {}
    ph = np.array([p or "" for p in phrases], dtype=object)
    for q in queries:
        rel = np.isin(ph, list(relevant_phrases(q)))
        if rel.sum() == 0:
            continue
        scores = (vectors @ type_vecs[q]).numpy()
        out[q] = r_precision(scores, rel)
    return out


def macro(d: dict[str, float]) -> float:
    vals = [v for v in d.values() if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


# ---------------------------------------------------------------------------------------------
# type phrases


@torch.no_grad()
def embed_phrases(model: SpanTypeEncoder, tokenizer, phrases: Sequence[str], *, template: str = "{}") -> dict[str, torch.Tensor]:
    """The backbone's phrase embeddings (the graph's type_vectors), one unit vector per phrase."""
    out: dict[str, torch.Tensor] = {}
    phrases = list(phrases)
    for i in range(0, len(phrases), 64):
        chunk = phrases[i : i + 64]
        encs = [tokenizer.encode(template.format(p)) for p in chunk]
        t = max(len(e.ids) for e in encs)
        ids = torch.zeros(len(encs), t, dtype=torch.long)
        mask = torch.zeros(len(encs), t, dtype=torch.long)
        for r, e in enumerate(encs):
            ids[r, : len(e.ids)] = torch.tensor(e.ids)
            mask[r, : len(e.ids)] = 1
        _, last = model.token_states(ids, mask)
        vecs = model.pool(last, mask)
        for p, v in zip(chunk, vecs):
            out[p] = v
    return out


# ---------------------------------------------------------------------------------------------
# the span adapter


def infonce_loss(
    span_vecs: torch.Tensor, type_vecs: torch.Tensor, type_idx: torch.Tensor, related_mask: torch.Tensor, tau: float
) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE; related types are left out of both softmaxes.

    ``type_idx[i]`` is the type of span i; ``related_mask[k, j]`` is true for related types k, j.
    """
    logits = span_vecs @ type_vecs.t() / tau  # [N, K]
    pos = F.one_hot(type_idx, type_vecs.shape[0]).bool()  # [N, K]
    ign = related_mask[type_idx]  # [N, K]
    neg_inf = torch.finfo(logits.dtype).min
    # span -> type
    l_st = logits.masked_fill(ign, neg_inf)
    loss_st = -(torch.log_softmax(l_st, dim=1)[pos]).mean()
    # type -> span, for the types present in the batch; every positive span counts once
    present = pos.any(0)
    lt = logits.t()[present]  # [K', N]
    pos_t = pos.t()[present]
    ign_t = ign.t()[present]
    lt = lt.masked_fill(ign_t, neg_inf)
    logp = torch.log_softmax(lt, dim=1)
    loss_ts = -(logp * pos_t).sum(1) / pos_t.sum(1)
    return 0.5 * (loss_st + loss_ts.mean())


def train_adapter(
    model: SpanTypeEncoder,
    train_sf: SpanFeatures,
    val_sf: SpanFeatures,
    type_vecs: dict[str, torch.Tensor],
    cfg: TrainConfig,
    *,
    exclude_types: Sequence[str] = (),
    fixed_steps: int | None = None,
    eval_queries: Sequence[str] = (),
) -> dict[str, Any]:
    """Train the adapter; early-stop on ``eval_queries`` unless ``fixed_steps`` is given.

    Returns the history and the best step; the adapter is left with the weights of the best step.
    """
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    excluded = set(exclude_types)
    keep = [i for i, p in enumerate(train_sf.phrases) if p and p not in excluded]
    phrases = sorted({train_sf.phrases[i] for i in keep})
    pidx = {p: k for k, p in enumerate(phrases)}
    by_type: dict[int, list[int]] = {}
    for i in keep:
        by_type.setdefault(pidx[train_sf.phrases[i]], []).append(i)
    tv = torch.stack([type_vecs[p] for p in phrases])
    rel = torch.tensor([[related(a, b) for b in phrases] for a in phrases])

    types = list(by_type)

    def sample() -> list[int]:
        # type-balanced batch: a type drawn uniformly, then one of its spans
        return [rng.choice(by_type[rng.choice(types)]) for _ in range(cfg.adapter_batch)]

    def batch_loss(v: torch.Tensor, batch: list[int], base: torch.Tensor) -> torch.Tensor:
        t_idx = torch.tensor([pidx[train_sf.phrases[i]] for i in batch])
        return infonce_loss(v, tv, t_idx, rel, cfg.tau)

    run = fit_adapter(
        model,
        train_sf,
        val_sf,
        type_vecs,
        cfg,
        sample=sample,
        batch_loss=batch_loss,
        max_steps=cfg.adapter_max_steps,
        fixed_steps=fixed_steps,
        eval_queries=eval_queries,
    )
    return {**run, "types": phrases}


def fit_adapter(
    model: SpanTypeEncoder,
    train_sf: SpanFeatures,
    val_sf: SpanFeatures,
    type_vecs: dict[str, torch.Tensor],
    cfg: TrainConfig,
    *,
    sample: Callable[[], list[int]],
    batch_loss: Callable[[torch.Tensor, list[int], torch.Tensor], torch.Tensor],
    max_steps: int,
    fixed_steps: int | None = None,
    eval_queries: Sequence[str] = (),
    label: str = "adapter",
) -> dict[str, Any]:
    """The adapter loop shared by gold and silver training: fresh zero-residual weights, AdamW,
    span R-Precision on ``eval_queries`` every ``adapter_eval_every`` steps, early stopping with
    ``adapter_patience`` and the best weights restored (unless ``fixed_steps`` is given).

    ``sample`` draws a batch of span indices; ``batch_loss(v, batch, base)`` scores the adapted
    vectors ``v`` (``base``: the spans' untrained mean states, for guide models).
    """
    fresh = type(model.adapter)(
        model.adapter.start_proj.in_features, model.adapter.start_proj.out_features, model.dims
    )
    model.adapter.load_state_dict(fresh.state_dict())
    opt = torch.optim.AdamW(model.adapter.parameters(), lr=cfg.adapter_lr, weight_decay=0.01)
    bs = base_slice(model)

    def evaluate() -> float:
        model.adapter.eval()
        with torch.no_grad():
            v = adapter_vectors(model, val_sf)
        return macro(span_r_precision(v, val_sf.phrases, eval_queries, type_vecs))

    history: list[tuple[int, float | None, float]] = []
    best_state = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    steps = fixed_steps if fixed_steps is not None else max_steps
    best_step, best_score, bad = 0, -1.0, 0
    if fixed_steps is None:
        best_score = evaluate()
        history.append((0, None, best_score))  # no loss before the first step (JSON has no NaN)
    for step in range(1, steps + 1):
        model.adapter.train()
        batch = sample()
        idx = torch.tensor(batch)
        xs, xe, xm = (t[idx].float() for t in (train_sf.start, train_sf.end, train_sf.mean))
        v = F.normalize(xm[:, bs] + model.adapter.residual_from_features(xs, xe, xm), dim=-1)
        loss = batch_loss(v, batch, xm[:, bs])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if fixed_steps is None and step % cfg.adapter_eval_every == 0:
            score = evaluate()
            history.append((step, loss.item(), score))
            log.info("%s step %d loss %.4f val R-Prec %.4f", label, step, loss.item(), score)
            if score > best_score:
                best_step, best_score, bad = step, score, 0
                best_state = {k: v.clone() for k, v in model.adapter.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.adapter_patience:
                    break
    if fixed_steps is not None:
        best_step = fixed_steps
    else:
        model.adapter.load_state_dict(best_state)
    model.adapter.eval()
    return {"best_step": best_step, "best_score": best_score, "history": history}


# ---------------------------------------------------------------------------------------------
# the entity head


def _pad_batch(feats: Features, corpus: Corpus, idx: Sequence[int]):
    exs = [corpus.examples[i] for i in idx]
    t = max(len(e.ids) for e in exs)
    s = max(max(len(e.cand_tok) for e in exs), 1)
    width = feats.feats[idx[0]].shape[-1]
    x = torch.zeros(len(idx), t, width)
    starts = torch.zeros(len(idx), s, dtype=torch.long)
    ends = torch.zeros(len(idx), s, dtype=torch.long)
    label = torch.zeros(len(idx), s)
    valid = torch.zeros(len(idx), s, dtype=torch.bool)
    for r, (i, e) in enumerate(zip(idx, exs)):
        x[r, : len(e.ids)] = feats.feats[i].float()
        n = len(e.cand_tok)
        if n:
            starts[r, :n] = torch.from_numpy(e.cand_tok[:, 0])
            ends[r, :n] = torch.from_numpy(e.cand_tok[:, 1])
            label[r, :n] = torch.from_numpy(e.cand_label)
            valid[r, :n] = True
    return x, starts, ends, label, valid


@torch.no_grad()
def score_candidates(
    model: SpanTypeEncoder, feats: Features, corpus: Corpus, *, batch: int = 64, logit_offset: float = 0.0
) -> list[np.ndarray]:
    """Entity-ness probability of every candidate of every example."""
    model.entity.eval()
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(corpus.examples)
    order = sorted(range(len(corpus.examples)), key=lambda i: len(corpus.examples[i].ids))
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        x, s, e, _, valid = _pad_batch(feats, corpus, idx)
        p = torch.sigmoid(model.entity(x, s, e, model.span_mean) - logit_offset).numpy()
        for r, k in enumerate(idx):
            out[k] = p[r, : len(corpus.examples[k].cand_tok)].astype(np.float32)
    return out


def decoded_spans(
    corpus: Corpus, scores: list[np.ndarray], *, floor: float = 0.02, nested: bool = False
) -> list[list[tuple[int, int, float, int, int]]]:
    """Per passage, the greedily decoded spans (start, end, score, example, candidate), best first.

    Greedy decoding takes spans in descending score, so the spans kept at any threshold θ ≥ floor
    are exactly those of this list with score ≥ θ: one decode serves the whole threshold sweep.
    ``nested``: spans inside one another are kept (``resolve_overlaps``), only crossings refused.
    """
    per_passage: dict[int, list[tuple[int, int, float, int, int]]] = {}
    for ei, ex in enumerate(corpus.examples):
        sc = scores[ei]
        for ci in np.nonzero(sc >= floor)[0]:
            per_passage.setdefault(ex.passage_index, []).append(
                (int(ex.cand_char[ci, 0]), int(ex.cand_char[ci, 1]), float(sc[ci]), ei, int(ci))
            )
    out: list[list[tuple[int, int, float, int, int]]] = [[] for _ in corpus.passages]
    for pi, spans in per_passage.items():
        kept = resolve_overlaps([(s, e, sc) for s, e, sc, _, _ in spans], nested=nested)
        out[pi] = sorted((spans[k] for k in kept), key=lambda x: -x[2])
    return out


def detection_sweep(
    corpus: Corpus,
    decoded,
    *,
    beta: float = 1.0,
    targets: list[set[tuple[int, int]]] | None = None,
    ignore: list[set[tuple[int, int]]] | None = None,
) -> dict[str, Any]:
    """Span precision/recall/F1 (exact character match, all gold spans) across thresholds.

    ``targets`` replaces the passages' gold spans (silver training: gold + WordNet spans);
    detected spans in ``ignore`` count neither way.
    """
    targets = targets if targets is not None else corpus.detection_targets
    ignore = ignore if ignore is not None else corpus.detection_ignore
    gold = targets if targets is not None else [{(g.start, g.end) for g in p.gold} for p in corpus.passages]
    skip = ignore if ignore is not None else [set() for _ in gold]
    n_gold = sum(len(g) for g in gold)
    grid = [round(x, 3) for x in np.arange(0.03, 0.971, 0.01)]
    rows = []
    for th in grid:
        tp = pred = 0
        for g, ig, spans in zip(gold, skip, decoded):
            for s, e, sc, _, _ in spans:
                if sc < th:
                    break
                if (s, e) in ig and (s, e) not in g:
                    continue
                pred += 1
                tp += (s, e) in g
        p = tp / pred if pred else 0.0
        r = tp / n_gold if n_gold else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        b2 = beta * beta
        fb = (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0
        rows.append({"threshold": th, "precision": p, "recall": r, "f1": f, "fbeta": fb})
    best = max(rows, key=lambda r: (r["fbeta"], -abs(r["threshold"] - 0.5)))
    return {"best": best, "sweep": rows, "gold_spans": n_gold}


def train_entity_head(
    model: SpanTypeEncoder,
    train: Corpus,
    train_feats: Features,
    dev: Corpus,
    dev_feats: Features,
    cfg: TrainConfig,
) -> dict[str, Any]:
    """Balanced BCE on all candidates; early stop on dev F1 (best threshold) every few hundred steps.

    Balanced weighting trains the odds of a span being an entity as if half the candidates were
    entities; subtracting log(negatives/positives) from the output bias afterwards (the prior
    correction) turns them back into probabilities at the real rate, so the threshold is not
    squeezed against 1.
    """
    n_pos = sum(float((ex.cand_label > 0.5).sum()) for ex in train.examples)
    n_neg = sum(float((ex.cand_label < 0.5).sum()) for ex in train.examples)
    n_all = sum(len(ex.cand_label) for ex in train.examples)
    offset = math.log(max(n_neg, 1.0) / max(n_pos, 1.0))
    rng = random.Random(cfg.seed + 1)
    params = [p for n, p in model.entity.named_parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.head_lr, weight_decay=0.01)
    n = len(train.examples)
    steps_per_epoch = max(1, n // cfg.head_batch)
    total = int(cfg.head_max_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.head_lr, total_steps=total, pct_start=0.05)
    # length-bucketed batches keep padding (and time) low
    order = sorted(range(n), key=lambda i: len(train.examples[i].ids))
    buckets = [order[i : i + cfg.head_batch] for i in range(0, n, cfg.head_batch)]
    history = []
    best = {"f1": -1.0}
    best_state = None
    bad = 0
    step = 0
    t0 = time.time()
    done = False
    while not done:
        rng.shuffle(buckets)
        for idx in buckets:
            model.entity.train()
            x, s, e, y, valid = _pad_batch(train_feats, train, idx)
            logits = model.entity(x, s, e, model.span_mean)
            pos = (y > 0.5) & valid
            neg = (y < 0.5) & valid
            w = torch.zeros_like(y)
            if pos.any():
                w[pos] = 0.5 / pos.sum()
            w[neg] = 0.5 / neg.sum().clamp(min=1)
            loss = (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % cfg.head_eval_every == 0 or step == total:
                scores = score_candidates(model, dev_feats, dev, logit_offset=offset)
                sweep = detection_sweep(dev, decoded_spans(dev, scores), beta=cfg.detection_beta)
                b = sweep["best"]
                history.append({"step": step, "loss": loss.item(), **{k: round(v, 4) for k, v in b.items()}})
                log.info(
                    "head step %d (%.0f s) loss %.4f dev F1 %.4f (P %.3f R %.3f @ %.3f)",
                    step, time.time() - t0, loss.item(), b["f1"], b["precision"], b["recall"], b["threshold"],
                )  # fmt: skip
                if b["fbeta"] > best.get("fbeta", -1):
                    best = dict(b, step=step)
                    best_state = {k: v.clone() for k, v in model.entity.state_dict().items()}
                    bad = 0
                else:
                    bad += 1
                if bad >= cfg.head_patience or step >= total:
                    done = True
                    break
    if best_state is not None:
        model.entity.load_state_dict(best_state)
    with torch.no_grad():
        model.entity.out.bias -= offset
    model.entity.eval()
    return {
        "best": best, "history": history, "steps": step, "seconds": round(time.time() - t0, 1),
        "prior_logit_offset": round(offset, 4), "train_candidates": n_all, "train_positives": int(n_pos),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# passage-level calibration and figures


def detected_span_vectors(
    model: SpanTypeEncoder, feats: Features, corpus: Corpus, decoded, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(trained, base) vectors of the spans kept at ``threshold``, and the passage of each."""
    spans = []
    owner = []
    for pi, kept in enumerate(decoded):
        for s, e, sc, ei, ci in kept:
            if sc < threshold:
                break
            a, b = corpus.examples[ei].cand_tok[ci]
            spans.append((ei, int(a), int(b), None))
            owner.append(pi)
    sf = span_features(feats, corpus, spans)
    with torch.no_grad():
        return adapter_vectors(model, sf), adapter_vectors(model, sf, base=True), np.array(owner, dtype=np.int64)


def passage_scores(vecs: torch.Tensor, owner: np.ndarray, n_passages: int, query: torch.Tensor) -> np.ndarray:
    """Best span similarity per passage (-1 where no span was detected)."""
    out = np.full(n_passages, -1.0, dtype=np.float64)
    if len(owner):
        sims = (vecs @ query).numpy()
        np.maximum.at(out, owner, sims)
    return out


def passage_relevance(corpus: Corpus, query: str) -> np.ndarray:
    rel = relevant_phrases(query)
    return np.array([bool(ph & rel) for ph in corpus.passage_phrases])


def calibrate_similarity(
    scores_by_type: dict[str, np.ndarray], relevance: dict[str, np.ndarray]
) -> dict[str, Any]:
    """The passage-level similarity threshold with the best macro F1 over types."""
    grid = [round(x, 3) for x in np.arange(0.05, 0.951, 0.01)]
    rows = []
    for th in grid:
        f1s = []
        for q, sc in scores_by_type.items():
            rel = relevance[q]
            pred = sc >= th
            tp = float((pred & rel).sum())
            p = tp / pred.sum() if pred.sum() else 0.0
            r = tp / rel.sum() if rel.sum() else 0.0
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
        rows.append((th, float(np.mean(f1s))))
    th, f1 = max(rows, key=lambda r: r[1])
    curve = [(t, round(f, 4)) for t, f in rows if round(t * 100) % 5 == 0]
    return {"threshold": th, "macro_f1": f1, "curve": curve}


def passage_figures(
    model: SpanTypeEncoder,
    feats: Features,
    corpus: Corpus,
    decoded,
    threshold: float,
    type_vecs: dict[str, torch.Tensor],
    queries: Sequence[str],
    *,
    passage_weights: Sequence[float] = (),
) -> dict[str, Any]:
    """Passage-level R-Precision per query for dense passage, base spans and trained spans.

    ``passage_weights``: also hybrid scoring, best span similarity + λ · passage similarity, per λ.
    """
    vecs, base, owner = detected_span_vectors(model, feats, corpus, decoded, threshold)
    n = len(corpus.passages)
    # a passage vector per passage: the first window's (training sentences fit one window)
    pv = torch.zeros(n, model.dims)
    for ei, ex in enumerate(corpus.examples):
        pv[ex.passage_index] = feats.passage[ei]
    out: dict[str, dict[str, float]] = {"dense_passage": {}, "base_spans": {}, "trained_spans": {}}
    for lam in passage_weights:
        out[f"hybrid_{lam:g}"] = {}
    scores, relevance = {}, {}
    for q in queries:
        rel = passage_relevance(corpus, q)
        if not rel.any():
            continue
        relevance[q] = rel
        tq = type_vecs[q]
        out["dense_passage"][q] = r_precision((pv @ tq).numpy(), rel)
        out["base_spans"][q] = r_precision(passage_scores(base, owner, n, tq), rel)
        scores[q] = passage_scores(vecs, owner, n, tq)
        out["trained_spans"][q] = r_precision(scores[q], rel)
        if passage_weights:
            dense = (pv @ tq).numpy()
            for lam in passage_weights:
                out[f"hybrid_{lam:g}"][q] = r_precision(scores[q] + lam * dense, rel)
    return {
        "r_precision": {k: round(macro(v), 4) for k, v in out.items()},
        "per_type": {k: {q: round(x, 4) for q, x in v.items()} for k, v in out.items()},
        "scores": scores,
        "relevance": relevance,
    }


# ---------------------------------------------------------------------------------------------
# the whole run


def run_training(cfg: TrainConfig, out_dir: str | Path) -> dict[str, Any]:
    """Train the shipped configuration and write ``heads.safetensors`` + ``train.json`` to ``out_dir``."""
    from safetensors.torch import save_file

    from .export import backbone_tokenizer_file, load_tokenizer

    t_start = time.time()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg.backbone, config=cfg.heads, seed=cfg.seed)
    tokenizer = load_tokenizer(backbone_tokenizer_file(cfg.backbone))
    sources = default_sources(cfg.data_dir)
    held = tuple(cfg.held_out_types)
    kw = dict(max_length=cfg.max_length, max_span_width=cfg.max_span_width)
    train = build_corpus(sources["train"], tokenizer, exclude_phrases=held, **kw)
    dev = build_corpus(sources["dev"], tokenizer, exclude_phrases=held, **kw)
    zs = build_corpus(sources["zeroshot"], tokenizer, **kw)
    if cfg.limit:
        train, dev, zs = (_limit(c, cfg.limit) for c in (train, dev, zs))
    log.info("train %s", train.counts)
    log.info("dev %s", dev.counts)
    silver = _load_silver(cfg, train, dev) if cfg.silver else None

    t0 = time.time()
    train_f, dev_f, zs_f = (
        _cached_encode(model, c, cfg, name) for c, name in ((train, "train"), (dev, "dev"), (zs, "zeroshot"))
    )
    encode_s = time.time() - t0

    types = seen_phrases(train)
    all_queries = sorted(set(types) | set(held) | set(seen_phrases(dev)) | set(cfg.validation_types))
    if silver is not None:
        all_queries = sorted(set(all_queries) | set(silver["spans"].vocab))
    type_vecs = embed_phrases(model, tokenizer, all_queries)

    train_sf = span_features(train_f, train, gold_spans(train))
    dev_sf = span_features(dev_f, dev, [g for g in gold_spans(dev) if g[3]])
    zs_gold = [g for g in gold_spans(zs) if g[3]]
    zs_sf = span_features(zs_f, zs, zs_gold)

    # 1. adapter with the validation types held out -> number of steps
    t0 = time.time()
    val_queries = [q for q in cfg.validation_types if q in set(dev_sf.phrases)]
    with torch.no_grad():
        base_dev = adapter_vectors(model, dev_sf, base=True)
    before_val = span_r_precision(base_dev, dev_sf.phrases, val_queries, type_vecs)
    seen_dev_queries = [q for q in types if q in set(dev_sf.phrases)]
    before_seen = span_r_precision(base_dev, dev_sf.phrases, seen_dev_queries, type_vecs)
    if silver is not None:
        from .silver_train import train_silver_adapter

        ss = silver["spans"]
        silver_sf = span_features(train_f, train, ss.spans)
        type_matrix = torch.stack([type_vecs[t] for t in ss.vocab])

        def adapter_run(**kw):
            return train_silver_adapter(model, silver_sf, ss, type_matrix, silver["related"], dev_sf,
                                        type_vecs, cfg, **kw)  # fmt: skip
    else:

        def adapter_run(**kw):
            return train_adapter(model, train_sf, dev_sf, type_vecs, cfg, **kw)

    run1 = adapter_run(exclude_types=cfg.validation_types, eval_queries=val_queries)
    # the adapter that never saw the validation types: hybrid scoring's λ is chosen with it
    run1_state = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    with torch.no_grad():
        after_val = span_r_precision(adapter_vectors(model, dev_sf), dev_sf.phrases, val_queries, type_vecs)
    best_steps = max(run1["best_step"], 1) if run1["best_step"] else 0
    # 2. the shipped adapter: all training types, the chosen number of steps
    adapter_run(fixed_steps=best_steps)
    with torch.no_grad():
        dev_vecs = adapter_vectors(model, dev_sf)
        after_seen = span_r_precision(dev_vecs, dev_sf.phrases, seen_dev_queries, type_vecs)
        final_val = span_r_precision(dev_vecs, dev_sf.phrases, val_queries, type_vecs)
        zs_before = span_r_precision(adapter_vectors(model, zs_sf, base=True), zs_sf.phrases, held, type_vecs)
        zs_after = span_r_precision(adapter_vectors(model, zs_sf), zs_sf.phrases, held, type_vecs)
    adapter_s = time.time() - t0

    # 3. entity head
    head = train_entity_head(model, train, train_f, dev, dev_f, cfg)
    dev_scores = score_candidates(model, dev_f, dev)
    nested = cfg.span_decoding == "nested"
    dev_dec = decoded_spans(dev, dev_scores, nested=nested)
    sweep = detection_sweep(dev, dev_dec, beta=cfg.threshold_beta)
    det = sweep["best"]
    det_th = float(det["threshold"])
    per_source = {}
    for name in sorted({ex.source for ex in dev.examples}):
        sub = _subset(dev, dev_dec, name)
        per_source[name] = _at_threshold(detection_sweep(*sub), det_th)
    from .silver_train import gold_recall_by_source

    gold_recall = gold_recall_by_source(dev, dev_dec, det_th)

    # 4. similarity threshold at passage level on the dev split (all seen types present there)
    dev_queries = [q for q in types if passage_relevance(dev, q).any()]
    pf = passage_figures(model, dev_f, dev, dev_dec, det_th, type_vecs, dev_queries)
    sim = calibrate_similarity(pf["scores"], pf["relevance"])
    # 5. hybrid scoring: λ with the best passage R-Precision on the validation types, measured with
    # the run-1 adapter (for which they are unseen); the shipped adapter is put back afterwards
    shipped_state = {k: v.clone() for k, v in model.adapter.state_dict().items()}
    model.adapter.load_state_dict(run1_state)
    val_pf = passage_figures(model, dev_f, dev, dev_dec, det_th, type_vecs,
                             [q for q in val_queries if passage_relevance(dev, q).any()],
                             passage_weights=PASSAGE_WEIGHTS)  # fmt: skip
    model.adapter.load_state_dict(shipped_state)
    lam_table = {lam: val_pf["r_precision"][f"hybrid_{lam:g}"] for lam in PASSAGE_WEIGHTS}
    best_lam = max(PASSAGE_WEIGHTS, key=lambda lam: (lam_table[lam], -lam))
    zs_scores = score_candidates(model, zs_f, zs)
    zs_dec = decoded_spans(zs, zs_scores, nested=nested)
    zs_pf = passage_figures(model, zs_f, zs, zs_dec, det_th, type_vecs, list(held), passage_weights=(best_lam,))

    figures = {
        "adapter": {
            "validation_types": val_queries,
            "early_stop_step": run1["best_step"],
            "steps_trained": best_steps,
            "val_span_r_precision_before": round(macro(before_val), 4),
            "val_span_r_precision_after": round(macro(after_val), 4),
            "val_per_type_before": _r(before_val),
            "val_per_type_after": _r(after_val),
            "val_span_r_precision_shipped": round(macro(final_val), 4),
            "history": [(s, None if l is None else round(l, 4), round(r, 4)) for s, l, r in run1["history"]],
            "dev_seen_span_r_precision_before": round(macro(before_seen), 4),
            "dev_seen_span_r_precision_after": round(macro(after_seen), 4),
            "zeroshot_medical_span_r_precision_before": round(macro(zs_before), 4),
            "zeroshot_medical_span_r_precision_after": round(macro(zs_after), 4),
            "zeroshot_medical_per_type_before": _r(zs_before),
            "zeroshot_medical_per_type_after": _r(zs_after),
        },
        "entity_head": {
            "dev": {k: round(v, 4) for k, v in det.items()},
            "dev_by_source": per_source,
            "dev_gold_recall_by_source": gold_recall,
            "best_step": head["best"].get("step"),
            "steps": head["steps"],
            "prior_logit_offset": head["prior_logit_offset"],
            "train_candidates": head["train_candidates"],
            "train_positives": head["train_positives"],
            "history": head["history"],
            "threshold_rule": f"F{cfg.threshold_beta:g} on dev spans (exact match, {cfg.span_decoding} greedy "
            f"decoding); early stopping on F{cfg.detection_beta:g} with flat decoding",
        },
        "similarity": {
            "threshold": sim["threshold"],
            "dev_passage_macro_f1": round(sim["macro_f1"], 4),
            "dev_passage_macro_f1_curve": sim["curve"],
            "dev_passage_r_precision": pf["r_precision"],
            "zeroshot_medical_passage_r_precision": zs_pf["r_precision"],
            "zeroshot_medical_passage_per_type": zs_pf["per_type"],
        },
        "hybrid": {
            "rule": "passage score = best span similarity + λ · passage similarity; λ with the best "
                    "passage R-Precision on the validation types, run-1 adapter (types unseen)",
            "passage_weight": best_lam,
            "validation_r_precision_by_weight": {f"{k:g}": v for k, v in lam_table.items()},
            "validation_r_precision": val_pf["r_precision"],
        },
        "seconds": {
            "encode": round(encode_s, 1),
            "adapter": round(adapter_s, 1),
            "head": head["seconds"],
            "total": round(time.time() - t_start, 1),
        },
    }
    record = {
        "backbone": cfg.backbone,
        "heads_config": cfg.heads.to_dict(),
        "max_length": cfg.max_length,
        "max_span_width": cfg.max_span_width,
        "detection_threshold": det_th,
        "span_decoding": cfg.span_decoding,
        "similarity_threshold": sim["threshold"],
        "passage_weight": best_lam,
        # a span is tagged with a catalog phrase exactly when searching for that phrase would match it
        "label_threshold": sim["threshold"],
        "training": {
            "data": [s.name for s in sources["train"]],
            "validation_data": [s.name for s in sources["dev"]],
            "zeroshot_check_data": [s.name for s in sources["zeroshot"]],
            "types": types if silver is None else sorted(set(types) | set(silver["spans"].vocab)),
            "held_out_types": sorted(set(held) | _crossner_only(types) | set(silver["held_out"] if silver else ())),
            "not_used": ["crossner (all sets)"],
            "config": cfg.to_dict(),
            "counts": {"train": train.counts, "dev": dev.counts, "zeroshot": zs.counts,
                       "adapter_train_spans": len([p for p in train_sf.phrases if p])},
            "figures": figures,
            **({"silver": {k: v for k, v in silver.items() if k not in ("spans", "related")},
                "type_counts": silver["spans"].type_counts()} if silver else {}),
        },
    }  # fmt: skip
    save_file(model.head_state_dict(), str(out_dir / "heads.safetensors"))
    (out_dir / "train.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("training done in %.0f s", time.time() - t_start)
    return record


def _load_silver(cfg: TrainConfig, train: Corpus, dev: Corpus) -> dict[str, Any]:
    """Align the silver files onto the train (and dev) corpora; the hierarchy as mask indices."""
    from .silver import TypeHierarchy, read_silver
    from .silver_train import align_silver, related_index

    spans, counts = align_silver(train, read_silver(cfg.silver), mark_labels=cfg.silver_detection)
    hier_path = cfg.silver_hierarchy or str(Path(cfg.silver).with_name(Path(cfg.silver).stem + ".hierarchy.json"))
    hierarchy = TypeHierarchy.load(hier_path)
    out: dict[str, Any] = {
        "file": cfg.silver, "hierarchy": hier_path, "counts": counts, "vocabulary": len(spans.vocab),
        "held_out": json.loads(Path(hier_path).read_text(encoding="utf-8")).get("held_out", []),
        "spans": spans,
        "related": related_index(spans.vocab, hierarchy) if cfg.silver_mask
        else [np.zeros(0, dtype=np.int64) for _ in spans.vocab],
    }  # fmt: skip
    if cfg.silver_dev and cfg.silver_detection:
        dev_sents = list(read_silver(cfg.silver_dev))
        _, dev_counts = align_silver(dev, dev_sents)
        by_text = {s.text: s for s in dev_sents}
        targets, ignore = [], []
        for p in dev.passages:
            s = by_text.get(p.text)
            gold = {(g.start, g.end) for g in p.gold}
            targets.append(gold | ({(x.start, x.end) for x in s.spans} if s else set()))
            ignore.append({tuple(r) for r in s.ignore} if s else set())
        dev.detection_targets, dev.detection_ignore = targets, ignore
        out["dev_file"] = cfg.silver_dev
        out["dev_counts"] = dev_counts
    log.info("silver: %s", {k: v for k, v in out.items() if k not in ("spans", "related")})
    return out


def _limit(corpus: Corpus, n: int) -> Corpus:
    """The first ``n`` passages of a corpus (and their examples)."""
    exs = [ex for ex in corpus.examples if ex.passage_index < n]
    return Corpus(exs, corpus.passages[:n], corpus.passage_phrases[:n], dict(corpus.counts, limited_to=n))


def _cached_encode(model: SpanTypeEncoder, corpus: Corpus, cfg: TrainConfig, name: str) -> Features:
    """encode_corpus, with the states kept in ``cfg.cache_dir`` keyed by inputs and backbone."""
    if not cfg.cache_dir:
        return encode_corpus(model, corpus, batch_tokens=cfg.encode_batch_tokens)
    import hashlib

    h = hashlib.sha256()
    h.update(repr((cfg.backbone, cfg.heads.feature_layers)).encode())
    for ex in corpus.examples:
        h.update(ex.ids.tobytes())
    path = Path(cfg.cache_dir) / f"states-{name}-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        d = torch.load(path)
        return Features(d["feats"], d["passage"])
    f = encode_corpus(model, corpus, batch_tokens=cfg.encode_batch_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"feats": f.feats, "passage": f.passage}, path)
    return f


def _r(d: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in d.items()}


def _crossner_only(types: Sequence[str]) -> set[str]:
    from .data import load_phrase_map

    cross = {v for v in load_phrase_map()["crossner"].values() if v}
    return cross - set(types)


def _subset(corpus: Corpus, decoded, source: str):
    keep = sorted({ex.passage_index for ex in corpus.examples if ex.source == source})
    sub = Corpus([], [corpus.passages[i] for i in keep], [corpus.passage_phrases[i] for i in keep], {})
    if corpus.detection_targets is not None:
        sub.detection_targets = [corpus.detection_targets[i] for i in keep]
    if corpus.detection_ignore is not None:
        sub.detection_ignore = [corpus.detection_ignore[i] for i in keep]
    return sub, [decoded[i] for i in keep]


def _at_threshold(sweep: dict[str, Any], th: float) -> dict[str, float]:
    row = min(sweep["sweep"], key=lambda r: abs(r["threshold"] - th))
    return {k: round(v, 4) for k, v in row.items() if k != "fbeta"}
