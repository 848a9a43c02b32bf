"""A candidate head taken from another training run: its entity head, fitted in as the model's second.

Model 0.4.0 pairs two detectors (EVALUATION.md, "Model 0.4.0"): the marking head, trained on gold
mentions, proposes the spans that are marked and make ``--all`` answers; a head trained with WordNet
silver spans too (``nerindex train --silver``) proposes many more, nouns of every kind, which rank
passages but are never marked (``EncodedSpan.mention`` False). Both heads read the same token
features, so the second is just another ``EntityHead`` in the graph (``HeadConfig.candidate_head``),
with its own threshold (model.json ``candidate_threshold``: the source run's detection threshold).
``nerindex export --candidate-head RUN`` builds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelError
from ..model_card import EXPORT_DEFAULTS
from .export import read_source
from .model import HeadConfig, SpanTypeEncoder


# what an entity head reads, besides its weights' shapes: a head trained on other features loads
# (same sizes) and scores nonsense, so the export refuses it (an audit: another backbone's head was
# accepted without a word, and the record did not name the backbone)
HEAD_FEATURES = ("feature_layers", "head_hidden", "max_width_bucket", "head_context")


def head_identity(backbone: str, card: dict[str, Any], heads_config: dict[str, Any]) -> dict[str, Any]:
    """What an entity head must share with the model it is put in: the backbone, the span width
    (model.json's, or the export default) and the head's features (``HEAD_FEATURES``; defaults
    where the config leaves them out), tuples as lists (as JSON gives them)."""
    defaults = HeadConfig()
    values = {"backbone": backbone, "max_span_width": card.get("max_span_width", EXPORT_DEFAULTS["max_span_width"]),
              **{k: heads_config.get(k, getattr(defaults, k)) for k in HEAD_FEATURES}}  # fmt: skip
    return {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in values.items()}


def read_candidate_head(source: str | Path, *, model: dict[str, Any]) -> tuple[dict[str, torch.Tensor], float, dict[str, Any]]:
    """(the entity head's weights of a ``nerindex train --out`` folder or a model folder, keyed
    ``entity.…``; its detection threshold; what model.json's ``training.candidate_head`` records).
    The source must have the model's :func:`head_identity` (``model``)."""
    from safetensors.torch import load_file

    read = read_source(Path(source))  # a model folder verified, its heads file the one its card names (an audit)
    card, heads = read.card, read.heads
    theirs = head_identity(read.backbone, card, read.heads_config)
    differ = [f"{k} {v!r} (the model: {model[k]!r})" for k, v in theirs.items() if v != model[k]]
    if differ:
        raise ModelError(f"{source}: its entity head was trained for another model: " + ", ".join(differ))
    if not heads.is_file():
        raise ModelError(f"{source}: no {heads.name}")
    state = {k: v.float() for k, v in load_file(str(heads)).items() if k.startswith("entity.")}
    if not state:
        raise ModelError(f"{heads}: no entity head weights")
    training = card.get("training", {})
    record = {
        "heads_sha256": hashlib.sha256(heads.read_bytes()).hexdigest(),
        "backbone": read.backbone,
        "detection_threshold": float(card["detection_threshold"]),
        "data": training.get("data"),
        "silver": {k: training["silver"][k] for k in ("vocabulary", "held_out") if k in training["silver"]}
        if isinstance(training.get("silver"), dict) else None,
    }  # fmt: skip
    return state, float(card["detection_threshold"]), record


def with_candidate_head(model: SpanTypeEncoder, entity_state: dict[str, torch.Tensor]) -> SpanTypeEncoder:
    """A copy of ``model`` with ``entity_state`` (an entity head's weights) as its candidate head."""
    state = {k: v for k, v in model.head_state_dict().items() if not k.startswith("candidate.")}
    state.update({"candidate." + k[len("entity."):]: v for k, v in entity_state.items()})
    built = SpanTypeEncoder(model.backbone, dataclasses.replace(model.config, candidate_head=True))
    try:
        built.load_head_state_dict(state)
    except (ValueError, RuntimeError) as exc:  # another head size, width buckets or context
        raise ModelError(f"the candidate head does not fit this model: {exc}") from exc
    return built.eval()
