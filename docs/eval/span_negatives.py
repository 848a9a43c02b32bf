"""Research script (issue 13): teach the span side what is *not* a mention of a type (O-span negatives).

Every loss that trained the span side so far ranks types for a gold span (span → type) and gold
spans for a type (type → span), but only over spans that are mentions of *some* type: the spans the
detectors propose that are no entity at all ("novel", "Book", "read", a year, a name cut in half)
never appear. Yet they are what a search marks wrongly: for "book" the word "novel" scores 0.53
where the title next to it scores 0.15 (EVALUATION.md, "Why unseen mentions go unmarked").

This script measures, without rebuilding the graph, what a span side trained with those spans as
negatives would do. It encodes MultiCoNER en-train90 (the shipped model's main training set, its
held-out medical sentences dropped as training dropped them) with the shipped model, labels every
stored span (mention or candidate) with the gold types it matches (IoU >= 0.5) or as *O* (no gold
mention of any type matches it), and trains a residual map on the stored span vectors,
``unit(v + W2·gelu(W1·v + b1) + b2)`` with ``W2``, ``b2`` zero at step 0 (so step 0 is the shipped
model), with a loss like the adapter's (symmetric multi-positive InfoNCE, τ 0.05, type-balanced
batches; unlike it, related types are not left out of the softmaxes, and span → type scores all of
a span's positive types at once) where the type → span softmax also runs over O spans. Type vectors are the frozen phrase embedding,
each training type bare (as seen queries are asked) and in the unseen template (as unseen ones are).
``--o-share 0`` is the control: the same map and steps without O spans.

Each map is then applied to the stored span vectors of the validation split and the dev sets, and
scored as ``template_ensembles.py`` scores (``nerindex eval``'s ``calibrate`` and ``score_query``):
a threshold per group calibrated on the validation split, then ranking, ``--all`` sets and marks.
The rule to choose by is the marking rule of the latest rounds: the best span F1 of the validation
split's unseen types (``--wide-validation`` adds CrossNER's train splits as a check).

    python docs/eval/span_negatives.py --data ../shared/data --wide-validation
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from indexer.assets import default_model_dir
from indexer.encoder import OnnxEncoder
from indexer.evaluation.benchmark_io import benchmark_from_conll
from indexer.evaluation.heldout import MEDICAL_TYPES
from indexer.evaluation.metrics import span_iou
from indexer.evaluation.seen_types import training_from_card

sys.path.insert(0, str(Path(__file__).parent))
from marking_rules import WIDE_VALIDATION  # noqa: E402
from template_ensembles import encode, evaluate  # noqa: E402
from two_tier import DEV, SETS  # noqa: E402

TRAIN_FILE = "multiconer2_en/en-train90.conll"
TAU = 0.05


def training_spans(enc: OnnxEncoder, path: Path, limit: int) -> dict:
    """Stored span vectors of the training set's passages (medical sentences dropped), each with its
    gold phrases (IoU >= 0.5) or none (an O span), and whether it is a mention."""
    bench = benchmark_from_conll([path], name="train")
    medical = {t for t, p in bench.mapping.items() if p in MEDICAL_TYPES}
    corpus = [p for p in bench.corpus if not any(g.label in medical for g in p.gold)][:limit]
    docs = enc.encode(corpus, batch_size=32)
    vectors, labels, mention = [], [], []
    for doc in docs:
        gold = [(g.start, g.end, bench.mapping.get(g.label)) for g in doc.passage.gold]
        for s in doc.spans:
            vectors.append(s.vector)
            mention.append(s.mention)
            labels.append(sorted({p for a, b, p in gold if p and span_iou((s.start, s.end), (a, b)) >= 0.5}
                                 | ({"<entity>"} if any(p is None and span_iou((s.start, s.end), (a, b)) >= 0.5
                                                        for a, b, p in gold) else set())))  # fmt: skip
    return {"vectors": np.stack(vectors).astype(np.float32), "labels": labels,
            "mention": np.array(mention, dtype=bool), "passages": len(docs)}  # fmt: skip


class SpanMap(torch.nn.Module):
    """unit(v + W2·gelu(W1·v + b1) + b2); the identity (on unit vectors) at step 0."""

    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.inner = torch.nn.Linear(dims, hidden)
        self.out = torch.nn.Linear(hidden, dims)
        torch.nn.init.zeros_(self.out.weight)
        torch.nn.init.zeros_(self.out.bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return F.normalize(v + self.out(F.gelu(self.inner(v))), dim=-1)


def loss_of(v: torch.Tensor, types: torch.Tensor, pos: torch.Tensor, n_views: int) -> torch.Tensor:
    """Symmetric multi-positive InfoNCE; O spans (rows without a positive) are negatives of every
    type in the type → span direction and take no part in span → type. ``types`` holds
    ``n_views`` views of each phrase, view-major; span → type uses the first view (bare)."""
    k = pos.shape[1]
    logits = v @ types.t() / TAU  # [B, views*K]
    has = pos.any(1)
    bare = logits[has, :k]
    loss_st = -(torch.logsumexp(bare.masked_fill(~pos[has], -1e9), 1) - torch.logsumexp(bare, 1)).mean()
    pos_all = pos.repeat(1, n_views)  # [B, views*K]
    present = pos_all.any(0)
    lt = logits.t()[present]  # [K', B]
    pt = pos_all.t()[present].float()
    logp = torch.log_softmax(lt, dim=1)
    loss_ts = (-(logp * pt).sum(1) / pt.sum(1)).mean()
    return 0.5 * (loss_st + loss_ts)


def train_maps(train: dict, type_vecs: np.ndarray, phrases: list[str], *, o_share: float, steps: list[int],
               batch: int, lr: float, seed: int, make: Callable[[], torch.nn.Module],
               side: str = "span") -> dict[int, torch.nn.Module]:  # fmt: skip
    """The map ``make()`` after each of ``steps`` optimiser steps (a copy per step), applied to the
    span vectors (``side`` "span") or to the type vectors ("type": ``marking_map.py``)."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    index = {p: i for i, p in enumerate(phrases)}
    by_type: dict[int, list[int]] = defaultdict(list)
    o_rows = []
    for r, labels in enumerate(train["labels"]):
        known = [index[p] for p in labels if p in index]
        if known:
            for k in known:
                by_type[k].append(r)
        elif not labels:
            o_rows.append(r)
    groups = list(by_type.values())
    vecs = torch.from_numpy(train["vectors"])
    types = torch.from_numpy(type_vecs)
    n_views = types.shape[0] // len(phrases)
    model = make()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    kept: dict[int, torch.nn.Module] = {}
    n_o = int(round(batch * o_share))
    for step in range(1, max(steps) + 1):
        rows = [rng.choice(rng.choice(groups)) for _ in range(batch - n_o)] + [rng.choice(o_rows) for _ in range(n_o)]
        pos = torch.zeros(len(rows), len(phrases), dtype=torch.bool)
        for i, r in enumerate(rows):
            for p in train["labels"][r]:
                if p in index:
                    pos[i, index[p]] = True
        spans, queries = (model(vecs[rows]), types) if side == "span" else (vecs[rows], model(types))
        loss = loss_of(spans, queries, pos, n_views)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in steps:
            copy = make()
            copy.load_state_dict(model.state_dict())
            kept[step] = copy.eval()
            print(f"  step {step} loss {loss.item():.4f}", file=sys.stderr)
    return kept


@torch.no_grad()
def mapped(sets: dict, span_map: SpanMap | None) -> dict:
    """The encoded sets with every stored span vector passed through ``span_map`` (None: as stored)."""
    if span_map is None:
        return sets
    out = {}
    for name, data in sets.items():
        spans = [None if v is None else span_map(torch.from_numpy(v)).numpy() for v in data["spans"]]
        out[name] = {**data, "spans": spans}
    return out


def row_of(enc: OnnxEncoder, sets: dict, training, wide: bool) -> dict:
    """Validation (calibrated here), wide validation and dev figures, unseen and seen types."""
    def vector_of(phrase: str) -> np.ndarray:
        return enc.embed_types([phrase])[0]  # as a search asks: the unseen template for unseen phrases

    row = {}
    for group in ("unseen", "seen"):
        val = evaluate(enc, sets, ("validation",), vector_of, training, group=group)
        row[f"validation {group}"] = val
        if wide and group == "unseen":
            row["wide validation unseen"] = evaluate(enc, sets, ("wide",), vector_of, training, val["threshold"], group)
        row[f"dev {group}"] = evaluate(enc, sets, DEV, vector_of, training, val["threshold"], group)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("NERINDEX_DATA"), required="NERINDEX_DATA" not in os.environ)
    parser.add_argument("--wide-validation", action="store_true", help="also score CrossNER's train splits with the validation split")
    parser.add_argument("--limit", type=int, default=8000, help="training passages encoded (MultiCoNER en-train90, in file order)")
    parser.add_argument("--o-share", type=float, nargs="*", default=[0.5, 0.0], help="share of O spans in a batch (0: the control)")
    parser.add_argument("--steps", type=int, nargs="*", default=[25, 50, 100, 200])
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--cache", type=Path, default=None,
                        help="pickle of the encoded sets, reused when present (delete it when eval's judging changes)")
    args = parser.parse_args()
    started = time.monotonic()
    enc = OnnxEncoder.from_dir(default_model_dir(), device="cpu")
    training = training_from_card(enc.info.card)
    if args.cache and args.cache.exists():
        sets, train = pickle.loads(args.cache.read_bytes())
    else:
        files = {**SETS, **({"wide": [*SETS["validation"], *WIDE_VALIDATION]} if args.wide_validation else {})}
        sets = {name: encode([args.data / f for f in fs], name, enc) for name, fs in files.items()}
        train = training_spans(enc, args.data / TRAIN_FILE, args.limit)
        if args.cache:
            args.cache.parent.mkdir(parents=True, exist_ok=True)  # .cache/ in a fresh checkout (an audit)
            args.cache.write_bytes(pickle.dumps((sets, train)))
    n_o = sum(not labels for labels in train["labels"])
    print(f"training: {train['passages']} passages, {len(train['labels'])} spans, {n_o} O "
          f"({int((~train['mention'][[not x for x in train['labels']]]).sum())} of them candidates); "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr)  # fmt: skip
    phrases = sorted({p for labels in train["labels"] for p in labels if p != "<entity>"})
    views = [enc.embed_phrases(phrases), enc.embed_phrases([(enc.info.unseen_type_template or "{}").format(p) for p in phrases])]
    type_vecs = np.concatenate(views).astype(np.float32)
    results = {"shipped": row_of(enc, sets, training, args.wide_validation)}
    print(f"shipped {json.dumps(results['shipped'])}", file=sys.stderr)
    for share in args.o_share:
        maps = train_maps(train, type_vecs, phrases, o_share=share, steps=args.steps, batch=args.batch, lr=args.lr,
                          seed=args.seed, make=lambda: SpanMap(type_vecs.shape[1], args.hidden))  # fmt: skip
        for step, span_map in maps.items():
            label = f"O share {share}, step {step}"
            results[label] = row_of(enc, mapped(sets, span_map), training, args.wide_validation)
            print(label + " " + " | ".join(
                f"{k}: t {r['threshold']} R {r['r_precision']:.3f} setF1 {r['set_f1']:.3f} hit {r['span_hit_rate']:.3f} "
                f"hlP {r['highlight_precision']:.3f} F1 {r['span_f1']:.3f}" for k, r in results[label].items()),
                file=sys.stderr)  # fmt: skip
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
