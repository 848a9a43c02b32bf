"""A span side trained apart, fitted into a model: its copy of the backbone's top layers and its adapter.

``docs/eval/finetune_backbone.py --save`` trains the span side alone (a copy of the backbone's top N
layers plus a span adapter, against the frozen type vectors) and writes it as safetensors shards
``<prefix>-<i>.safetensors`` with keys ``top.<k>.…`` and ``adapter.…`` and the metadata
``top_layers``. :func:`with_span_side` builds the model that runs it: the same backbone, entity head
and detection, ``HeadConfig.span_layers = N``, the side's layers as ``span_top`` and its adapter in
place of the model's. ``nerindex export --span-side PREFIX`` writes that model's folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from ..errors import ModelError
from .model import SpanTypeEncoder


def side_files(prefix: str | Path) -> list[Path]:
    """The shards of the span side saved under ``prefix``; :class:`ModelError` when there are none."""
    prefix = Path(prefix)
    paths = sorted(prefix.parent.glob(f"{prefix.name}-*.safetensors"))
    if not paths:
        raise ModelError(f"{prefix}: no span side saved there (expected {prefix.name}-0.safetensors)")
    return paths


def side_metadata(prefix: str | Path) -> tuple[list[Path], dict[str, str]]:
    """(the shards, the first shard's metadata) of a saved span side, without reading its weights;
    :class:`ModelError` when that metadata has no ``top_layers``."""
    from safetensors import safe_open

    paths = side_files(prefix)
    with safe_open(str(paths[0]), "pt") as f:
        meta = f.metadata() or {}
    if "top_layers" not in meta:
        raise ModelError(f"{paths[0]}: no top_layers in its metadata: not a saved span side")
    return paths, meta


def read_span_side(prefix: str | Path) -> tuple[int, dict[str, torch.Tensor]]:
    """(number of top layers, float32 weights keyed ``top.…`` / ``adapter.…``) of a saved span side."""
    from safetensors.torch import load_file

    paths, meta = side_metadata(prefix)
    state = {k: v.float() for p in paths for k, v in load_file(str(p)).items()}
    return int(meta["top_layers"]), state


def with_span_side(model: SpanTypeEncoder, prefix: str | Path) -> SpanTypeEncoder:
    """A copy of ``model`` whose span vectors come from the span side saved under ``prefix``."""
    n, side = read_span_side(prefix)
    unknown = sorted(k for k in side if not k.startswith(("top.", "adapter.")))
    if unknown:
        raise ModelError(f"{prefix}: unexpected weights in a span side: {unknown[:3]}")
    state = {k: v for k, v in model.head_state_dict().items() if not k.startswith(("adapter.", "span_top."))}
    state.update({("span_top." + k[4:] if k.startswith("top.") else k): v for k, v in side.items()})
    built = SpanTypeEncoder(model.backbone, dataclasses.replace(model.config, span_layers=n, **pruned_sizes(model, side)))
    try:
        built.load_head_state_dict(state)
    except (ValueError, RuntimeError) as exc:  # shapes or names of another backbone
        raise ModelError(f"{prefix}: the span side does not fit this model: {exc}") from exc
    return built.eval()


def pruned_sizes(model: SpanTypeEncoder, side: dict[str, torch.Tensor]) -> dict[str, int]:
    """``span_ffn`` / ``span_heads`` of a side whose copied layers were pruned (docs/eval/prune_span_side.py),
    read off its first layer's weights; 0 where a size is the backbone's."""
    cfg = model.backbone.config
    ffn = side.get("top.0.intermediate.dense.weight")
    query = side.get("top.0.attention.self.query.weight")
    if ffn is None or query is None:
        return {}  # not BERT-shaped: load_head_state_dict names the mismatch
    heads = query.shape[0] // (cfg.hidden_size // cfg.num_attention_heads)
    return {"span_ffn": 0 if ffn.shape[0] == cfg.intermediate_size else int(ffn.shape[0]),
            "span_heads": 0 if heads == cfg.num_attention_heads else int(heads)}  # fmt: skip


def side_record(prefix: str | Path) -> dict:
    """What model.json says of the span side: its top layers, the sha256 of each shard, and what
    trained it (the shards' ``trained_by`` metadata; finetune_backbone.py's run 2 wrote none)."""
    paths, meta = side_metadata(prefix)  # the weights themselves are hashed, not loaded
    return {
        "top_layers": int(meta["top_layers"]),
        "files": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths},
        "trained_by": meta.get("trained_by", "docs/eval/finetune_backbone.py --save (its run 2)"),
        "note": "span vectors come from this side: its copy of the top layers and its adapter, which "
        "replaces the one training.figures.adapter describes; detection, passage and type vectors are unchanged",
    }


__all__ = ["pruned_sizes", "read_span_side", "side_files", "side_metadata", "side_record", "with_span_side"]
