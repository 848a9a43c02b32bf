"""Training the span adapter: the loop shared by gold-only and silver training, and the gold loss.

The adapter maps a span's token states to a residual added to the span's mean state, so that span
vectors sit near the phrase embeddings of their types. Both trainers use :func:`fit_adapter`: fresh
zero-residual weights, AdamW, and either a fixed number of steps or early stopping on span
R-Precision of types held out of the adapter's training spans. What differs is how a batch is drawn
and scored: gold-only training (:func:`train_adapter`) uses :func:`infonce_loss` over the gold
phrases; silver training (``silver_train``) a multi-positive loss over thousands of WordNet types.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import related
from .features import SpanFeatures, adapter_vectors, base_slice
from .figures import macro_r_precision, span_r_precision
from .model import SpanTypeEncoder
from .train_config import TrainConfig

log = logging.getLogger(__name__)

Sample = Callable[[], list[int]]  # draws a batch of span indices
# (adapted vectors of the batch, its span indices, their untrained mean states) -> loss
BatchLoss = Callable[[torch.Tensor, list[int], torch.Tensor], torch.Tensor]


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
    sample: Sample,
    batch_loss: BatchLoss,
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
    Returns ``best_step``, ``best_score`` and the ``history`` of (step, loss, score).
    """
    fresh = type(model.adapter)(
        model.adapter.start_proj.in_features, model.adapter.start_proj.out_features, model.dims
    )
    model.adapter.load_state_dict(fresh.state_dict())
    opt = torch.optim.AdamW(model.adapter.parameters(), lr=cfg.adapter_lr, weight_decay=0.01)

    def step() -> float:
        return _adapter_step(model, train_sf, opt, sample(), batch_loss)

    def evaluate() -> float:
        model.adapter.eval()
        with torch.no_grad():
            v = adapter_vectors(model, val_sf)
        return macro_r_precision(span_r_precision(v, val_sf.phrases, eval_queries, type_vecs))

    run = run_protocol(
        model.adapter, step, evaluate, fixed_steps=fixed_steps,
        every=cfg.adapter_eval_every, patience=cfg.adapter_patience, max_steps=max_steps, label=label,
    )  # fmt: skip
    model.adapter.eval()
    return run


def _adapter_step(
    model: SpanTypeEncoder, train_sf: SpanFeatures, opt: torch.optim.Optimizer, batch: list[int], batch_loss: BatchLoss
) -> float:
    """One optimiser step on a batch of spans; returns its loss."""
    model.adapter.train()
    bs = base_slice(model)
    idx = torch.tensor(batch)
    xs, xe, xm = (t[idx].float() for t in (train_sf.start, train_sf.end, train_sf.mean))
    v = F.normalize(xm[:, bs] + model.adapter.residual_from_features(xs, xe, xm), dim=-1)
    return optimiser_step(opt, batch_loss(v, batch, xm[:, bs]))


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One optimiser step on ``loss``; its value (what every training loop logs)."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def run_protocol(
    weights: nn.Module,
    step: Callable[[], float],
    evaluate: Callable[[], float],
    *,
    fixed_steps: int | None,
    every: int,
    patience: int,
    max_steps: int,
    label: str,
) -> dict[str, Any]:
    """The training protocol's two runs: run 1 stops early on the held-out validation types
    (:func:`early_stopped`); run 2 (``fixed_steps``: run 1's best step) trains on every type for
    exactly that many steps, evaluating nothing (``best_score`` -1, no history)."""
    if fixed_steps is None:
        return early_stopped(weights, step, evaluate, every=every, patience=patience, max_steps=max_steps, label=label)
    for _ in range(fixed_steps):
        step()
    return {"best_step": fixed_steps, "best_score": -1.0, "history": []}


def early_stopped(
    weights: nn.Module,
    step: Callable[[], float],
    evaluate: Callable[[], float],
    *,
    every: int,
    patience: int,
    max_steps: int,
    label: str,
) -> dict[str, Any]:
    """Steps until ``patience`` evaluations (one every ``every`` steps, and one after the last
    step) bring no gain; the best ``weights`` are restored. ``step`` trains one batch and returns
    its loss. Why the last step is always evaluated: with ``max_steps`` under ``every`` nothing was,
    so step 0 stayed the best and the run trained nothing (an audit: ``--adapter-max-steps 3``)."""
    history: list[tuple[int, float | None, float]] = []
    best_state = {k: v.clone() for k, v in weights.state_dict().items()}
    best_step, bad = 0, 0
    best_score = evaluate()
    history.append((0, None, best_score))  # no loss before the first step (JSON has no NaN)
    if math.isnan(best_score):  # no validation type in the dev data (a --limit run): nothing to stop by
        log.warning("%s: no validation type has a gold span in the dev data; training all %d steps", label, max_steps)
        losses = [step() for _ in range(max_steps)]
        history.append((max_steps, losses[-1] if losses else None, best_score))
        return {"best_step": max_steps, "best_score": best_score, "history": history}
    for n in range(1, max_steps + 1):
        loss = step()
        if n % every and n < max_steps:
            continue
        score = evaluate()
        history.append((n, loss, score))
        log.info("%s step %d loss %.4f val R-Prec %.4f", label, n, loss, score)
        if score > best_score:
            best_step, best_score, bad = n, score, 0
            best_state = {k: v.clone() for k, v in weights.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    weights.load_state_dict(best_state)
    return {"best_step": best_step, "best_score": best_score, "history": history}
