"""What training computes from the frozen backbone: token states, span features, type vectors.

Because the backbone is frozen, its token states are computed once (float16 in memory) and both
heads train on them; span features are read from the states, and the adapted span vectors are the
last layer's span mean plus the adapter's residual, exactly as the exported graph computes them.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_files import write_file
from .data import Corpus
from .model import SpanTypeEncoder
from .train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Features:
    """Frozen-backbone token states of every example of a corpus."""

    feats: list[torch.Tensor]  # per example [T, L*D] float16
    passage: torch.Tensor  # [N, D] float32 unit vectors (sentence embeddings)


def pad_ids(rows: Sequence[Sequence[int] | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input ids, attention mask) ``[len(rows), longest]`` of token id rows, zero-padded on the right."""
    t = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    mask = torch.zeros(len(rows), t, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, : len(r)] = 1
    return ids, mask


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
        ids, mask = pad_ids([corpus.examples[k].ids for k in idx])
        f, last = model.token_states(ids, mask)
        passage[idx] = model.pool(last, mask)
        f16 = f.to(torch.float16)
        for r, k in enumerate(idx):
            feats[k] = f16[r, : len(corpus.examples[k].ids)].clone()
        i += len(idx)
    log.info("encoded %d windows in %.0f s", n, time.time() - t0)
    return Features(feats, passage)  # type: ignore[arg-type]


def cached_encode(model: SpanTypeEncoder, corpus: Corpus, cfg: TrainConfig, name: str) -> Features:
    """encode_corpus, with the states kept in ``cfg.cache_dir`` keyed by inputs and the backbone's
    weights (an audit: keyed by its name, a backbone changed in place trained the heads on the old
    one's states). A file that cannot be read is encoded again; one is written whole or not at all
    (a run killed while writing left a file that was a torch traceback in every later run)."""
    if not cfg.cache_dir:
        return encode_corpus(model, corpus, batch_tokens=cfg.encode_batch_tokens)
    h = hashlib.sha256()
    h.update(repr(cfg.heads.feature_layers).encode())
    for key, tensor in sorted(model.backbone.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for ex in corpus.examples:
        h.update(ex.ids.tobytes())
    path = Path(cfg.cache_dir) / f"states-{name}-{h.hexdigest()[:16]}.pt"
    if path.is_file():
        try:
            d = torch.load(path)
            return Features(d["feats"], d["passage"])
        except Exception as exc:  # noqa: BLE001 - any unreadable cache file is a miss
            log.warning("%s: cannot be read (%s); encoding again", path, exc)
    f = encode_corpus(model, corpus, batch_tokens=cfg.encode_batch_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path.parent, path.name, lambda handle: torch.save({"feats": f.feats, "passage": f.passage}, handle))
    return f


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
    """Every gold span of a corpus as ``(example, tok_start, tok_end, phrase)``."""
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


@torch.no_grad()
def embed_phrases(model: SpanTypeEncoder, tokenizer, phrases: Sequence[str], *, template: str = "{}") -> dict[str, torch.Tensor]:
    """The backbone's phrase embeddings (the graph's type_vectors), one unit vector per phrase."""
    out: dict[str, torch.Tensor] = {}
    phrases = list(phrases)
    for i in range(0, len(phrases), 64):
        chunk = phrases[i : i + 64]
        ids, mask = pad_ids([tokenizer.encode(template.format(p)).ids for p in chunk])
        _, last = model.token_states(ids, mask)
        vecs = model.pool(last, mask)
        for p, v in zip(chunk, vecs):
            out[p] = v
    return out
