"""Training on silver data (docs/silver.md): thousands of WordNet types, hierarchy-aware InfoNCE.

What changes against gold-only training (``adapter.train_adapter``, ``entity_head``), and why:

- **Entity head**: candidates that are WordNet spans of the silver file become positives too, so
  "musical instrument" can find "cello"; nouns the silver file found but did not type (``ignore``)
  are neither positive nor negative (label 0.5, weight 0), since the silver annotation is incomplete
  there. Windows, candidates and gold labels stay exactly those of ``data.build_corpus``: the silver
  file is only *aligned* onto them (by character offsets on tokenizer words).
- **Span adapter**: every span (gold and WordNet) has several positive types: its gold phrase,
  the lemmas of its hypernyms and their synonyms. The loss is InfoNCE over the *whole* type
  vocabulary at every step (6.5k phrases: a [batch, vocabulary] matrix is cheap), each positive
  scored against the negatives only (positives do not compete with each other), in both
  directions. Types related to a positive in the hierarchy (ancestors beyond the listed depth,
  descendants, synonyms: ``TypeHierarchy.masked``) are neither positive nor negative.
- **False negatives** (optional, ``silver_guide``): GISTEmbed's filter with the frozen backbone as
  the guide: a type that the backbone's own span vector finds closer than the span's best positive is
  masked rather than pushed away.
- **Batches**: half type-balanced over gold phrases (as in gold-only training), half silver spans
  balanced over their nearest type, so neither the 31 gold types nor the most frequent WordNet
  classes dominate.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .adapter import BatchLoss, fit_adapter
from .data import Corpus
from .features import SpanFeatures, base_slice
from .model import SpanTypeEncoder
from .silver.coverage import check_split_cover
from .silver.hierarchy import TypeHierarchy
from .silver.records import SilverSentence, read_silver
from .train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class SilverSpans:
    """Adapter training spans aligned to a corpus, with their positive types as vocabulary indices."""

    spans: list[tuple[int, int, int, str | None]]  # (example, tok_start, tok_end, gold phrase or None)
    positives: list[np.ndarray]  # per span: indices into vocab
    is_gold: np.ndarray  # [N] bool: a gold span (with a readable phrase)
    first_type: list[int]  # per span: its nearest type (gold phrase for gold spans)
    vocab: list[str]

    def type_counts(self) -> dict[str, int]:
        """Mentions per type phrase ((span, type) pairs): Familiarity weights for ``nerindex eval``."""
        counts = np.bincount(np.concatenate(self.positives), minlength=len(self.vocab)) if self.positives else []
        return {t: int(c) for t, c in zip(self.vocab, counts)}


def align_silver(
    corpus: Corpus, sentences: Iterable[SilverSentence], *, mark_labels: bool = True
) -> tuple[SilverSpans, dict[str, int]]:
    """Align a silver file onto a corpus's windows: entity labels (in place) and adapter spans.

    Sentences are matched to passages by text. With ``mark_labels`` WordNet spans become entity
    positives (``cand_label`` 1) and ignored nouns get 0.5 unless they are gold spans.
    """
    by_text: dict[str, SilverSentence] = {}
    for s in sentences:
        by_text.setdefault(s.text, s)
    counts = defaultdict(int)
    vocab_index: dict[str, int] = {}
    spans: list[tuple[int, int, int, str | None]] = []
    positives: list[np.ndarray] = []
    is_gold: list[bool] = []
    first: list[int] = []
    placed: set[tuple[int, int, int]] = set()  # (passage, start, end) spans given to some window
    for ei, ex in enumerate(corpus.examples):
        passage = corpus.passages[ex.passage_index]
        sent = by_text.get(passage.text)
        if sent is None:
            counts["examples_without_silver"] += 1
            continue
        where = {(int(a), int(b)): ci for ci, (a, b) in enumerate(ex.cand_char)}
        for sp in sent.spans:
            ci = where.get((sp.start, sp.end))
            if ci is None:
                continue
            placed.add((ex.passage_index, sp.start, sp.end))
            if mark_labels and sp.source == "wordnet" and ex.cand_label[ci] < 1.0:
                ex.cand_label[ci] = 1.0
                counts["silver_positives"] += 1
            if not sp.types:
                continue  # misc gold spans: entities without a query phrase
            idx = np.array([vocab_index.setdefault(t, len(vocab_index)) for t in sp.types], dtype=np.int64)
            a, b = ex.cand_tok[ci]
            spans.append((ei, int(a), int(b), sp.label))
            positives.append(idx)
            is_gold.append(sp.source == "gold" and sp.label is not None)
            first.append(int(idx[0]))
        if mark_labels:
            for a, b in sent.ignore:
                ci = where.get((a, b))
                if ci is not None and ex.cand_label[ci] == 0.0:
                    ex.cand_label[ci] = 0.5
                    counts["ignored_candidates"] += 1
    n_silver = sum(len(s.spans) for s in by_text.values())
    counts["silver_spans_in_file"] = n_silver
    counts["spans_aligned"] = len(placed)
    counts["adapter_spans"] = len(spans)
    counts["adapter_spans_gold"] = int(sum(is_gold))
    vocab = [None] * len(vocab_index)
    for t, i in vocab_index.items():
        vocab[i] = t
    return SilverSpans(spans, positives, np.array(is_gold, dtype=bool), first, vocab), dict(counts)  # type: ignore[arg-type]


def related_index(vocab: Sequence[str], hierarchy: TypeHierarchy) -> list[np.ndarray]:
    """Per vocabulary phrase: indices of the phrases to mask when it is a positive."""
    index = {t: i for i, t in enumerate(vocab)}
    out = []
    for t in vocab:
        rel = hierarchy.masked([t])
        out.append(np.array(sorted(index[r] for r in rel if r in index), dtype=np.int64))
    return out


def multi_positive_infonce(
    span_vecs: torch.Tensor, type_vecs: torch.Tensor, pos: torch.Tensor, ign: torch.Tensor, tau: float
) -> torch.Tensor:
    """Symmetric InfoNCE with several positives per span, each scored against the negatives only.

    ``pos[i, k]``: type k is a positive of span i; ``ign[i, k]``: neither positive nor negative.
    Span → type: for each positive p of span i, -log(e^p / (e^p + Σ_neg e^n)), averaged over the
    positives of i. Type → span: the same over the batch's spans, for every type positive somewhere.
    """
    logits = span_vecs @ type_vecs.t() / tau  # [B, V]
    neg = ~(pos | ign)
    very_neg = torch.finfo(logits.dtype).min
    lse_neg = torch.logsumexp(logits.masked_fill(~neg, very_neg), dim=1, keepdim=True)
    per = F.softplus(lse_neg - logits)  # -log sigmoid(logit - lse_neg)
    posf = pos.to(logits.dtype)
    loss_st = ((per * posf).sum(1) / posf.sum(1).clamp(min=1)).mean()
    present = pos.any(0)
    lt = logits.t()[present]  # [K, B]
    neg_t = neg.t()[present]
    pos_t = posf.t()[present]
    lse_t = torch.logsumexp(lt.masked_fill(~neg_t, very_neg), dim=1, keepdim=True)
    per_t = F.softplus(lse_t - lt)
    loss_ts = ((per_t * pos_t).sum(1) / pos_t.sum(1).clamp(min=1)).mean()
    return 0.5 * (loss_st + loss_ts)


class BatchSampler:
    """Half type-balanced over gold phrases, half silver spans.

    Silver spans are drawn balanced over their nearest type, or (``clusters`` given, NGAME) a
    cluster at a time: ``take`` spans from one cluster of similar spans, then the next cluster, so
    the spans of a batch are near each other and the type → span direction of the loss meets
    informative in-batch negatives.
    """

    def __init__(
        self,
        ss: SilverSpans,
        *,
        keep: np.ndarray,
        silver_share: float,
        seed: int,
        clusters: np.ndarray | None = None,
        take: int = 32,
    ) -> None:
        self.rng = random.Random(seed)
        self.take = take
        gold_by: dict[str, list[int]] = defaultdict(list)
        silver_by: dict[int, list[int]] = defaultdict(list)
        for i in np.nonzero(keep)[0]:
            i = int(i)
            if ss.is_gold[i]:
                gold_by[ss.spans[i][3]].append(i)  # type: ignore[index]
            else:
                key = int(clusters[i]) if clusters is not None else ss.first_type[i]
                silver_by[key].append(i)
        self.gold = list(gold_by.values())
        self.silver = list(silver_by.values())
        self.clustered = clusters is not None
        self.share = silver_share if self.silver else 0.0
        if not self.gold:
            self.share = 1.0

    def sample(self, n: int) -> list[int]:
        n_silver = int(round(n * self.share))
        out = [self.rng.choice(self.rng.choice(self.gold)) for _ in range(n - n_silver)]
        if not self.clustered:
            return out + [self.rng.choice(self.rng.choice(self.silver)) for _ in range(n_silver)]
        while n_silver > 0:
            group = self.rng.choice(self.silver)
            k = min(n_silver, self.take, len(group))
            out += self.rng.sample(group, k)
            n_silver -= k
        return out


def kmeans(x: torch.Tensor, k: int, *, iters: int = 10, seed: int = 0) -> np.ndarray:
    """Spherical k-means of unit rows; the cluster of each row (NGAME's clustered batches)."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(x.float(), dim=-1)
    k = max(1, min(k, x.shape[0]))
    centres = x[torch.randperm(x.shape[0], generator=g)[:k]].clone()
    assign = torch.zeros(x.shape[0], dtype=torch.long)
    for _ in range(iters):
        assign = torch.cat([(part @ centres.t()).argmax(1) for part in x.split(65536)])
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = sums.norm(dim=1) == 0
        centres = torch.where(empty[:, None], centres, F.normalize(sums, dim=-1))
    return assign.numpy()


def mined_negatives(
    logits: torch.Tensor, candidates: torch.Tensor, ranks: tuple[int, int], n_random: int, generator: torch.Generator
) -> torch.Tensor:
    """ANCE/STAR-style negatives: each span's ``candidates`` ranked by the current model, ranks
    ``ranks`` (1-based, inclusive) kept, the ones above them dropped (the likeliest false
    negatives), plus ``n_random`` random candidates for stability. Returns the negative mask.
    """
    lo, hi = ranks
    scores = logits.detach().masked_fill(~candidates, float("-inf"))
    order = scores.argsort(dim=1, descending=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order))
    neg = candidates & (rank >= lo - 1) & (rank <= hi - 1)
    if n_random:
        noise = torch.rand(logits.shape, generator=generator)
        pick = noise.masked_fill(~candidates, -1.0).topk(min(n_random, logits.shape[1]), dim=1).indices
        rnd = torch.zeros_like(candidates).scatter_(1, pick, True) & candidates
        neg |= rnd & (rank >= lo - 1)
    return neg


def train_silver_adapter(
    model: SpanTypeEncoder,
    train_sf: SpanFeatures,
    ss: SilverSpans,
    type_matrix: torch.Tensor,
    related: list[np.ndarray],
    val_sf: SpanFeatures,
    type_vecs: dict[str, torch.Tensor],
    cfg: TrainConfig,
    *,
    exclude_types: Sequence[str] = (),
    fixed_steps: int | None = None,
    eval_queries: Sequence[str] = (),
) -> dict[str, Any]:
    """The adapter on silver spans; early-stopped on ``eval_queries`` unless ``fixed_steps``.

    ``exclude_types`` (the validation types) are held out completely: their gold spans are not
    trained on, and they and every phrase related to them are masked for every span.
    """
    torch.manual_seed(cfg.seed)
    held_cols, keep = _held_out(ss, related, exclude_types)
    clusters = None
    if cfg.silver_batches == "clustered":
        clusters = kmeans(train_sf.mean[:, base_slice(model)], cfg.silver_clusters, seed=cfg.seed)
    sampler = BatchSampler(ss, keep=keep, silver_share=cfg.silver_share, seed=cfg.seed,
                           clusters=clusters, take=cfg.silver_cluster_take)  # fmt: skip
    run = fit_adapter(
        model,
        train_sf,
        val_sf,
        type_vecs,
        cfg,
        sample=lambda: sampler.sample(cfg.adapter_batch),
        batch_loss=_silver_loss(ss, type_matrix, related, torch.from_numpy(held_cols), cfg),
        max_steps=cfg.silver_adapter_max_steps,
        fixed_steps=fixed_steps,
        eval_queries=eval_queries,
        label="silver adapter",
    )
    return {**run, "spans": int(keep.sum()), "vocabulary": len(ss.vocab)}


def _held_out(
    ss: SilverSpans, related: list[np.ndarray], exclude_types: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(vocabulary columns masked for every span: the excluded types and their relatives,
    spans kept: not of an excluded gold type and with some positive left)."""
    vocab_index = {t: i for i, t in enumerate(ss.vocab)}
    excluded = set(exclude_types)
    held_cols = np.zeros(len(ss.vocab), dtype=bool)
    for t in excluded:
        if t in vocab_index:
            held_cols[vocab_index[t]] = True
            held_cols[related[vocab_index[t]]] = True
    keep = np.array([
        (sp[3] not in excluded) and not held_cols[pos].all()
        for sp, pos in zip(ss.spans, ss.positives)
    ], dtype=bool)  # fmt: skip
    return held_cols, keep


def _silver_loss(
    ss: SilverSpans, type_matrix: torch.Tensor, related: list[np.ndarray], held_t: torch.Tensor, cfg: TrainConfig
) -> BatchLoss:
    """The batch loss: multi-positive InfoNCE over the whole vocabulary, related types masked,
    optionally with guide-filtered or mined negatives (``silver_guide``, ``silver_negatives``)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    n_vocab = len(ss.vocab)

    def batch_loss(v: torch.Tensor, batch: list[int], base: torch.Tensor) -> torch.Tensor:
        pos = torch.zeros(len(batch), n_vocab, dtype=torch.bool)
        ign = torch.zeros(len(batch), n_vocab, dtype=torch.bool)
        for r, i in enumerate(batch):
            p = ss.positives[i]
            pos[r, torch.from_numpy(p)] = True
            rel = np.concatenate([related[k] for k in p]) if len(p) else np.zeros(0, dtype=np.int64)
            if len(rel):
                ign[r, torch.from_numpy(rel)] = True
        pos &= ~held_t
        ign |= held_t
        if cfg.silver_guide:
            # GISTEmbed: the frozen backbone (base span vector) is the guide; a negative type it
            # finds closer to the span than the span's best positive is a likely false negative
            with torch.no_grad():
                guide = F.normalize(base, dim=-1) @ type_matrix.t()
                best_pos = guide.masked_fill(~pos, -2.0).max(1, keepdim=True).values
                ign |= guide > best_pos
        ign &= ~pos
        if cfg.silver_negatives == "mined":
            with torch.no_grad():
                logits = v @ type_matrix.t()
            neg = mined_negatives(logits, ~(pos | ign), cfg.silver_mined_ranks, cfg.silver_random_negatives, gen)
            ign |= ~(pos | neg)
        return multi_positive_infonce(v, type_matrix, pos, ign, cfg.tau)

    return batch_loss


def set_silver_detection_targets(dev: Corpus, path: str) -> dict[str, int]:
    """The dev split's detection targets: gold spans and the silver file's, its untyped nouns
    ignored (the entity head's threshold is chosen on them); the alignment counts."""
    sentences = list(read_silver(path))
    _, counts = align_silver(dev, sentences)
    check_split_cover(path, counts.get("examples_without_silver", 0), len(dev.examples), "dev")  # an audit: used silently
    by_text = {s.text: s for s in sentences}
    targets, ignore = [], []
    for p in dev.passages:
        s = by_text.get(p.text)
        gold = {(g.start, g.end) for g in p.gold}
        targets.append(gold | ({(x.start, x.end) for x in s.spans} if s else set()))
        ignore.append({tuple(r) for r in s.ignore} if s else set())
    dev.detection_targets, dev.detection_ignore = targets, ignore
    return counts
