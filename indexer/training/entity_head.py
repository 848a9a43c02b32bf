"""Training the entity head and choosing the detection threshold.

The head scores every candidate span of a window (is it an entity?). Training: balanced binary
cross-entropy, gold spans (every type, misc included) against every other candidate, early-stopped
on dev span F-beta after greedy overlap resolution. Detection figures are exact character matches
of decoded spans against gold (or silver) spans, swept over thresholds.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..evaluation.metrics import f1
from ..spans import resolve_overlaps
from .adapter import optimiser_step
from .data import Corpus
from .features import Features
from .model import SpanTypeEncoder
from .train_config import TrainConfig

log = logging.getLogger(__name__)

# a passage's decoded spans: (char start, char end, score, example, candidate), best first
Decoded = list[list[tuple[int, int, float, int, int]]]


def head_steps(cfg: TrainConfig, windows: int) -> int:
    """The entity head's optimiser steps; none at all is a one-line error about the options and
    the data (exit 2; OneCycleLR failed with a bare ValueError: an audit), which training checks
    before it runs the backbone over the data (an audit: exit 3, "the model", after the encoding)."""
    total = int(cfg.head_max_epochs * max(1, windows // cfg.head_batch))
    if total < 1:
        raise InputError(f"--head-epochs {cfg.head_max_epochs:g} over {windows} training windows in batches of "
                         f"{cfg.head_batch} gives no optimiser step (more epochs or more data)")  # the option's fault, not a file's
    return total


def warm_up_share(total: int) -> float:
    """OneCycleLR's warm-up share: 5 %, but not where it ends its first phase on step 0 (20 steps
    divided by zero: an audit)."""
    return 0.05 if abs(0.05 * total - 1) > 1e-9 else 0.06


def pad_batch(
    feats: Features, corpus: Corpus, idx: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Examples ``idx`` as padded tensors: states, candidate starts and ends, labels, validity."""
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
        x, s, e, _, valid = pad_batch(feats, corpus, idx)
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
        f = f1(p, r)
        b2 = beta * beta
        fb = (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0
        rows.append({"threshold": th, "precision": p, "recall": r, "f1": f, "fbeta": fb})
    best = max(rows, key=lambda r: (r["fbeta"], -abs(r["threshold"] - 0.5)))
    return {"best": best, "sweep": rows, "gold_spans": n_gold}


def detection_threshold(corpus: Corpus, decoded: list[Decoded], *, beta: float) -> dict[str, Any]:
    """The best point of :func:`detection_sweep`; where no threshold detects a dev span (F 0 at
    every one) its 0.5 is marked ``calibrated: False`` and said (an audit: the run ended well with
    a threshold taken from an all-zero curve, as the similarity threshold once did)."""
    best = dict(detection_sweep(corpus, decoded, beta=beta)["best"])
    if not best["fbeta"]:
        log.warning("no detection threshold finds a dev span (F 0 at every one): the model's detection_threshold "
                    "(%s) is not calibrated; train on more data (a larger --limit, more --head-epochs)", best["threshold"])
        best["calibrated"] = False
    return best


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
    t0 = time.time()
    run = _fit_head(model, train, train_feats, dev, dev_feats, cfg, offset=offset)
    with torch.no_grad():
        model.entity.out.bias -= offset
    model.entity.eval()
    return {
        "best": run["best"], "history": run["history"], "steps": run["steps"], "seconds": round(time.time() - t0, 1),
        "prior_logit_offset": round(offset, 4), "train_candidates": n_all, "train_positives": int(n_pos),
    }  # fmt: skip


def _fit_head(
    model: SpanTypeEncoder,
    train: Corpus,
    train_feats: Features,
    dev: Corpus,
    dev_feats: Features,
    cfg: TrainConfig,
    *,
    offset: float,
) -> dict[str, Any]:
    """The head's loop: AdamW with one-cycle learning rates over length-bucketed batches, dev
    F-beta every ``head_eval_every`` steps, stopping after ``head_patience`` evaluations without
    gain; the best weights are restored."""
    rng = random.Random(cfg.seed + 1)
    opt = torch.optim.AdamW(list(model.entity.parameters()), lr=cfg.head_lr, weight_decay=0.01)
    n = len(train.examples)
    total = head_steps(cfg, n)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.head_lr, total_steps=total, pct_start=warm_up_share(total))
    # length-bucketed batches keep padding (and time) low
    order = sorted(range(n), key=lambda i: len(train.examples[i].ids))
    buckets = [order[i : i + cfg.head_batch] for i in range(0, n, cfg.head_batch)]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"f1": -1.0}
    best_state = None
    bad = step = 0
    t0 = time.time()
    while True:
        rng.shuffle(buckets)
        for idx in buckets:
            loss = _head_step(model, *pad_batch(train_feats, train, idx), opt)
            sched.step()
            step += 1
            if step % cfg.head_eval_every and step != total:
                continue
            b = _dev_detection(model, dev, dev_feats, cfg, offset=offset)
            history.append({"step": step, "loss": loss, **{k: round(v, 4) for k, v in b.items()}})
            log.info(
                "head step %d (%.0f s) loss %.4f dev F1 %.4f (P %.3f R %.3f @ %.3f)",
                step, time.time() - t0, loss, b["f1"], b["precision"], b["recall"], b["threshold"],
            )  # fmt: skip
            if b["fbeta"] > best.get("fbeta", -1):
                best = dict(b, step=step)
                best_state = {k: v.clone() for k, v in model.entity.state_dict().items()}
                bad = 0
            else:
                bad += 1
            if bad >= cfg.head_patience or step >= total:
                if best_state is not None:
                    model.entity.load_state_dict(best_state)
                return {"best": best, "history": history, "steps": step}


def _head_step(
    model: SpanTypeEncoder,
    x: torch.Tensor,
    s: torch.Tensor,
    e: torch.Tensor,
    y: torch.Tensor,
    valid: torch.Tensor,
    opt: torch.optim.Optimizer,
) -> float:
    """One optimiser step of balanced BCE (positives and negatives weigh half each); its loss."""
    model.entity.train()
    logits = model.entity(x, s, e, model.span_mean)
    pos = (y > 0.5) & valid
    neg = (y < 0.5) & valid
    w = torch.zeros_like(y)
    if pos.any():
        w[pos] = 0.5 / pos.sum()
    w[neg] = 0.5 / neg.sum().clamp(min=1)
    return optimiser_step(opt, (F.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum())


def _dev_detection(
    model: SpanTypeEncoder, dev: Corpus, dev_feats: Features, cfg: TrainConfig, *, offset: float
) -> dict[str, float]:
    """The best row of the dev detection sweep (flat decoding, ``detection_beta``)."""
    scores = score_candidates(model, dev_feats, dev, logit_offset=offset)
    return detection_sweep(dev, decoded_spans(dev, scores), beta=cfg.detection_beta)["best"]


def gold_recall_by_source(corpus: Corpus, decoded: Decoded, threshold: float) -> dict[str, dict[str, float]]:
    """Share of gold spans (exact match) detected at ``threshold``, per source file, and spans kept."""
    gold_by: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # gold, found, detected
    source_of = {}
    for ex in corpus.examples:
        source_of.setdefault(ex.passage_index, ex.source)
    for pi, p in enumerate(corpus.passages):
        src = source_of.get(pi, "?")
        kept = {(s, e) for s, e, sc, _, _ in decoded[pi] if sc >= threshold}
        gold = {(g.start, g.end) for g in p.gold}
        row = gold_by[src]
        row[0] += len(gold)
        row[1] += len(gold & kept)
        row[2] += len(kept)
    return {
        src: {"gold_spans": g, "recall": round(f / g, 4) if g else 0.0, "detected_spans": d}
        for src, (g, f, d) in sorted(gold_by.items())
    }


def detection_by_source(corpus: Corpus, decoded: Decoded, threshold: float) -> dict[str, dict[str, float]]:
    """Detection precision/recall/F1 at ``threshold`` on each source file's passages."""
    out = {}
    for name in sorted({ex.source for ex in corpus.examples}):
        keep = sorted({ex.passage_index for ex in corpus.examples if ex.source == name})
        sub = Corpus([], [corpus.passages[i] for i in keep], [corpus.passage_phrases[i] for i in keep], {})
        if corpus.detection_targets is not None:
            sub.detection_targets = [corpus.detection_targets[i] for i in keep]
        if corpus.detection_ignore is not None:
            sub.detection_ignore = [corpus.detection_ignore[i] for i in keep]
        sweep = detection_sweep(sub, [decoded[i] for i in keep])
        row = min(sweep["sweep"], key=lambda r: abs(r["threshold"] - threshold))
        out[name] = {k: round(v, 4) for k, v in row.items() if k != "fbeta"}
    return out
