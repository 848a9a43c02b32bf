"""Running a nerindex graph in stages on the CPU: span vectors only for the spans detection keeps.

The graph (docs/model-folder.md) scores *and* embeds every candidate span, ~1,000 per passage, and
its span gathers (``Expand`` + ``GatherElements`` over ``[B, S, D]`` index tensors) cost more than the
transformer; only ~4 % of candidates pass the detection threshold. So on the CPU the runtime cuts the
model folder's own graph at load (``onnx.utils.Extractor``; the files stay byte-identical and the
model checksum is unchanged) into three graphs, kept in the cache folder so that later loads read
them back without ``onnx`` (:mod:`.stage_loading`):

- **tokens**: ``input_ids, attention_mask`` → the per-token projections of both heads, the last-layer
  token states, ``passage_vectors``;
- **scores**: the entity head's first layer of each span (bias and context included, before the width
  embedding) and its width bucket → ``span_scores``; with a candidate head (``HeadConfig.candidate_head``)
  both heads' first layers as one block, before their biases, → ``span_scores`` and ``candidate_scores``;
- **vectors**: the adapter's first layer (without its bias) and the base vector of each *kept* span →
  ``span_vectors``, ``span_base_vectors``.

A model whose span side runs its own copy of the top layers (``HeadConfig.span_layers``) has a
second last-layer tensor, the copy's: the vectors graph takes its span means as a third input (the
span vector's base; ``span_base_vectors`` stays the backbone's). The copy's last layer and the
adapter's per-token projection then run after detection, on the kept spans' tokens only: a fourth
graph, **rows** (:mod:`.covered_rows`); where its cut is not found, the tokens graph returns the
copy's last states for every token.

Between them numpy does what the graph's span part did: rows of the projections at each span's start
and end, span means through cumulative sums, the context tokens before and after (the fused layout of
``indexer/training/model.py``: ``SpanTypeEncoder.span_outputs``). Every layer with weights runs in
onnxruntime on the graph's own (quantised) weights. The cut points are found by the graph's structure
(the heads' parameter names, the one ``CumSum``, the output names), not by generated node names; a
graph where they are not found is run whole (:func:`.stage_loading.load_stages` returns ``None`` and says why).

Answers: ``passage_vectors`` are bit-identical; span scores and vectors differ only where dynamic
int8 quantisation now scales activations over the real spans of a batch (padding spans no longer
count) or over the kept spans alone (``tests/test_staged.py`` bounds it).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .covered_rows import ROWS_INPUT, RowCuts, covered_rows
from .errors import ModelError
from .model_folder import CANDIDATE_OUTPUT

SPAN_BLOCK = 2048  # spans summed at a time: [2048, 384] float32 is 3 MB, within the L3 cache

ENTITY_BIAS = "entity.start_proj.bias"
ADAPTER_BIAS = "adapter.start_proj.bias"
WIDTH_TABLE = "entity.width.weight"
CANDIDATE_BIAS = "candidate.start_proj.bias"
CANDIDATE_WIDTH_TABLE = "candidate.width.weight"


@dataclass(frozen=True)
class Cuts:
    """Names of the tensors where the graph is cut, and the sizes of the fused projection layout."""

    proj: str  # [B, T, C] per-token projections of both heads' first layers
    last: str  # [B, T, D] last-layer token states
    entity_in: str  # [B, S, hh] entity first layer before the width embedding (both heads' with a candidate head)
    width_in: tuple[str, ...]  # [B, S] width bucket (token width - 1, clipped), one input per head
    adapter_in: str  # [B, S, ha] adapter first layer without its bias
    base_in: str  # [B, S, D] span mean of the last-layer states
    span_last: str | None  # [B, T, D] last-layer states of the span side's own top layers, if it has them
    span_base_in: str | None  # [B, S, D] their span mean (the base of span_vectors), with span_last
    entity_bias: np.ndarray  # [hh] added in numpy (zeros with a candidate head: the scores graph adds each head's)
    candidate: bool  # the graph has a candidate head (output candidate_scores)
    adapter_hidden: int
    width_buckets: int

    def facts(self) -> dict[str, object]:
        """As JSON values, for the cache (:mod:`.stage_loading`); float32 biases round-trip exactly."""
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "width_in": list(self.width_in), "entity_bias": [float(x) for x in self.entity_bias]}  # fmt: skip

    @classmethod
    def from_facts(cls, facts: dict[str, object]) -> "Cuts":
        return cls(**{**facts, "width_in": tuple(facts["width_in"]),
                      "entity_bias": np.asarray(facts["entity_bias"], dtype=np.float32)})  # fmt: skip


@dataclass(frozen=True)
class SpanBatch:
    """The real candidate spans of one batch, flattened: row in the batch, first and last token."""

    rows: np.ndarray  # [N] int64
    starts: np.ndarray  # [N] int64, inclusive token index into input_ids
    ends: np.ndarray  # [N] int64, inclusive


@dataclass(frozen=True)
class StagedResult:
    """Scores of every span of a :class:`SpanBatch`; vectors of the kept ones only."""

    scores: np.ndarray  # [N] float32
    candidate_scores: np.ndarray | None  # [N] float32, with a candidate head
    kept: np.ndarray  # [K] indices into the batch's spans, ascending
    vectors: np.ndarray  # [K, D] unit span vectors
    base_vectors: np.ndarray | None  # [K, D] or None when not asked for
    passage_vectors: np.ndarray  # [B, D]


@dataclass(frozen=True)
class _Index:
    """An ONNX graph's lookups: who produces each tensor, who consumes it, the stored weights."""

    nodes: list[object]
    producer: dict[str, object]
    consumers: dict[str, list[object]]
    inits: dict[str, object]

    @classmethod
    def of(cls, graph: object) -> "_Index":
        consumers: dict[str, list[object]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        return cls(list(graph.node), {out: n for n in graph.node for out in n.output}, consumers,
                   {t.name: t for t in graph.initializer})  # fmt: skip

    def other_input(self, bias: str) -> str:
        """The tensor the one Add of ``bias`` adds it to."""
        adds = [n for n in self.consumers.get(bias, []) if n.op_type == "Add"]
        if len(adds) != 1:
            raise ModelError(f"no single Add of {bias}")
        return next(name for name in adds[0].input if name != bias)

    def width_add(self, table: str) -> tuple[str, str, int]:
        """(the first-layer tensor a head adds its width embedding to, the width bucket input, the
        table's rows)."""
        widths = [n for n in self.nodes if n.op_type == "Gather" and n.input[0].startswith(table)]
        if len(widths) != 1 or widths[0].input[0] not in self.inits:
            raise ModelError(f"no single width-embedding Gather of a stored table {table}")
        width_out = widths[0].output[0]
        follow = self.consumers.get(width_out, [])
        if len(follow) == 1 and follow[0].op_type == "DequantizeLinear":  # int8 graphs store the table quantised
            width_out = follow[0].output[0]
        adds = [n for n in self.consumers.get(width_out, []) if n.op_type == "Add"]
        if len(adds) != 1:
            raise ModelError(f"no Add of the width embedding {table}")
        first = next(name for name in adds[0].input if name != width_out)
        return first, widths[0].input[1], int(self.inits[widths[0].input[0]].dims[0])

    def head_half(self, first: str, bias: str) -> str:
        """With two heads: the tensor both halves are sliced from (``first`` = its slice + ``bias``)."""
        add = self.producer.get(first)
        part = self.producer.get(next((n for n in add.input if n != bias), "")) if add is not None and bias in add.input else None
        if part is None or part.op_type != "Slice":
            raise ModelError(f"the first layer of {bias.split('.')[0]} is not a slice of both heads' plus its bias")
        return part.input[0]


def _entity_cut(g: _Index) -> tuple[str, tuple[str, ...], np.ndarray, bool, int]:
    """(the entity side's first layer to cut at, its width inputs, the bias numpy adds, whether
    there is a candidate head, the width buckets). One head: the cut is after its bias and
    context; two: before the slices each head adds its bias to, so numpy adds none."""
    from onnx import numpy_helper

    entity_first, entity_width, buckets = g.width_add(WIDTH_TABLE)
    bias = numpy_helper.to_array(g.inits[ENTITY_BIAS]).astype(np.float32)
    if CANDIDATE_BIAS not in g.inits:
        return entity_first, (entity_width,), bias, False, buckets
    candidate_first, candidate_width, candidate_buckets = g.width_add(CANDIDATE_WIDTH_TABLE)
    entity_in = g.head_half(entity_first, ENTITY_BIAS)
    if g.head_half(candidate_first, CANDIDATE_BIAS) != entity_in:
        raise ModelError("the two entity heads' first layers are not halves of one tensor")
    if candidate_buckets != buckets:
        raise ModelError(f"the entity heads have width tables of {buckets} and {candidate_buckets} rows")
    width = bias.shape[0] + numpy_helper.to_array(g.inits[CANDIDATE_BIAS]).shape[0]
    return entity_in, tuple(dict.fromkeys((entity_width, candidate_width))), np.zeros(width, np.float32), True, buckets


def find_cuts(model: object) -> Cuts:
    """Locate the cut tensors of an exported nerindex graph; :class:`ModelError` when one is missing."""
    from onnx import numpy_helper

    g = _Index.of(model.graph)
    if ENTITY_BIAS not in g.inits or ADAPTER_BIAS not in g.inits:
        raise ModelError(f"no {ENTITY_BIAS} or {ADAPTER_BIAS} among the weights")
    cumsums = [n for n in g.nodes if n.op_type == "CumSum"]
    concat = g.producer.get(cumsums[0].input[0]) if len(cumsums) == 1 else None
    if concat is None or concat.op_type != "Concat" or len(concat.input) not in (2, 3):
        raise ModelError("no single CumSum over the concatenated span-mean inputs")
    mean_slice = g.producer.get(concat.input[0])
    if mean_slice is None or mean_slice.op_type != "Slice":
        raise ModelError("the span-mean projections are not a Slice of the token projections")
    entity_in, width_in, bias, candidate, buckets = _entity_cut(g)
    base_div = g.producer.get("span_base_vectors")
    if base_div is None or base_div.op_type != "Div":
        raise ModelError("span_base_vectors is not a Div")
    span_base = _span_vector_base(g.producer)
    branched = len(concat.input) == 3
    if branched == (span_base == base_div.input[0]):
        raise ModelError("span_vectors' base does not match the span-mean inputs")
    return Cuts(
        proj=mean_slice.input[0],
        last=concat.input[1],
        entity_in=entity_in,
        width_in=width_in,
        adapter_in=g.other_input(ADAPTER_BIAS),
        base_in=base_div.input[0],
        span_last=concat.input[2] if branched else None,
        span_base_in=span_base if branched else None,
        entity_bias=bias,
        candidate=candidate,
        adapter_hidden=int(numpy_helper.to_array(g.inits[ADAPTER_BIAS]).shape[0]),
        width_buckets=buckets,
    )


def _span_vector_base(producer: dict[str, object]) -> str:
    """The span-mean tensor that ``span_vectors`` adds its residual to: the Slice among the inputs of
    the Add under its normalising Div (the base vector's own Slice unless the span side has layers)."""
    div = producer.get("span_vectors")
    add = producer.get(div.input[0]) if div is not None and div.op_type == "Div" else None
    slices = [name for name in (add.input if add is not None and add.op_type == "Add" else [])
              if getattr(producer.get(name), "op_type", None) == "Slice"]  # fmt: skip
    if len(slices) != 1:
        raise ModelError("span_vectors is not a Div of a span mean plus the adapter's residual")
    return slices[0]


class StagedGraph:
    """The three cut graphs and the numpy span gathers between them. Build with
    :func:`.stage_loading.load_stages`."""

    def __init__(self, cuts: Cuts, tokens: object, scores: object, vectors: object,
                 rows: tuple[RowCuts, object] | None = None) -> None:  # fmt: skip
        """``rows``: the cut and session of :mod:`.covered_rows`' fourth graph, with which ``tokens``
        is the tokens graph that cut goes with."""
        self.cuts = cuts
        self.tokens = tokens
        self.scores = scores
        self.vectors = vectors
        self.row_cuts, self.rows = rows if rows is not None else (None, None)
        self._local = threading.local()  # each thread's scratch arrays (_Scratch)

    @property
    def _scratch(self) -> "_Scratch":
        if not hasattr(self._local, "scratch"):
            self._local.scratch = _Scratch()
        return self._local.scratch

    def run(
        self, ids: np.ndarray, mask: np.ndarray, spans: SpanBatch, threshold: float, *, with_base: bool = False,
        candidate_threshold: float | None = None,
    ) -> StagedResult:
        """Scores for every span of the batch, vectors for those scoring ``>= threshold`` (or, with a
        candidate head, whose candidate score is ``>= candidate_threshold``)."""
        c, rc = self.cuts, self.row_cuts
        feeds = {"input_ids": ids, "attention_mask": mask}
        if rc is None:
            names = [c.proj, c.last, "passage_vectors"] + ([c.span_last] if c.span_last else [])
            proj, last, passage, *span_last = self.tokens.run(names, feeds)
            span_last = span_last[0] if span_last else None
            layout = _Layout.of(proj.shape[-1], c.adapter_hidden, c.entity_bias.shape[0])
        else:  # the span side's last layer and the adapter's projection come after detection
            proj, last, passage, *full = self.tokens.run([rc.entity, c.last, "passage_vectors", rc.layer_in, rc.mask,
                                                          *rc.adapter_inputs], feeds)  # fmt: skip
            layout = split_layout(rc, proj.shape[-1], c.adapter_hidden, c.entity_bias.shape[0])
        rows, starts, ends = spans.rows, spans.starts, spans.ends
        width = np.maximum(ends - starts + 1, 1).astype(np.float32)[:, None]
        # [N, hh] sums in a reused array (~1,000 spans a passage: fresh pages for each cost more than the sums)
        grab = self._scratch.grab
        hh, n = c.entity_bias.shape[0], rows.size
        at_start, at_end = _entity_ends(proj, layout, grab)
        entity = _span_sums(proj[..., layout.mean_e], rows, starts, ends, width, out=grab("entity", n, hh), grab=grab,
                            edges=((at_start, slice(None)), (at_end, slice(None))), bias=c.entity_bias)  # fmt: skip
        bucket = np.clip(ends - starts, 0, c.width_buckets - 1)
        scores = np.zeros(0, dtype=np.float32)
        candidates = scores if c.candidate else None
        if rows.size:  # a batch of windows without words has no spans (and quantising nothing fails)
            feeds = {c.entity_in: entity[None], **{w: bucket[None] for w in c.width_in}}
            out = self.scores.run(["span_scores", CANDIDATE_OUTPUT] if c.candidate else ["span_scores"], feeds)
            scores, candidates = out[0][0], (out[1][0] if c.candidate else None)
        keep = scores >= threshold
        if candidates is not None and candidate_threshold is not None:
            keep |= candidates >= candidate_threshold
        kept = np.nonzero(keep)[0]
        dims = last.shape[-1]
        if kept.size == 0:
            empty = np.zeros((0, dims), dtype=np.float32)
            return StagedResult(scores, candidates, kept, empty, empty if with_base else None, passage)
        kr, ks, ke, kw = rows[kept], starts[kept], ends[kept], width[kept]
        k, ha = kept.size, c.adapter_hidden
        qs, qe = ks, ke  # the kept spans' first and last row in the adapter's and span side's arrays
        if rc is not None:
            at = covered_rows(ks, ke, ids.shape[1])
            feeds = {rc.layer_in: full[0], rc.mask: full[1], **dict(zip(rc.adapter_inputs, full[2:])), ROWS_INPUT: at}
            span_last, proj = self.rows.run([c.span_last, rc.adapter], feeds)
            qs, qe = np.searchsorted(at, ks), np.searchsorted(at, ke)  # a kept span's tokens are consecutive rows
        adapter = _span_sums(proj[..., layout.mean_a], kr, qs, qe, kw, out=grab("adapter", k, ha), grab=grab,
                             edges=((proj, layout.start_a), (proj, layout.end_a)))  # fmt: skip
        base = _span_sums(last, kr, ks, ke, kw, out=grab("base", k, dims), grab=grab)
        feeds = {c.adapter_in: adapter[None], c.base_in: base[None]}
        if c.span_base_in:
            feeds[c.span_base_in] = _span_sums(span_last, kr, qs, qe, kw, out=grab("span_base", k, dims), grab=grab)[None]
        names = ["span_vectors", "span_base_vectors"] if with_base else ["span_vectors"]
        out = self.vectors.run(names, feeds)
        return StagedResult(scores, candidates, kept, out[0][0], out[1][0] if with_base else None, passage)


@functools.lru_cache(maxsize=8)
def split_layout(rc: RowCuts, entity_width: int, adapter_hidden: int, entity_hidden: int) -> "_Layout":
    """The fused projection's layout rebased onto its two sources (:mod:`.covered_rows`): the
    adapter's columns (``*_a``) within the adapter's projection, the entity heads' within theirs.
    Checked when the graph is cut (:mod:`.stage_loading`), made once per model, not per window."""
    widths = (entity_width, 3 * adapter_hidden)
    fused = _Layout.of(sum(widths), adapter_hidden, entity_hidden)
    parts = {f.name: rc.split(getattr(fused, f.name), widths) for f in dataclasses.fields(fused) if f.name != "context"}
    if any(parts[name][0] != (1 if name.endswith("_a") else 0) for name in parts):
        raise ModelError("the fused projection's adapter and entity columns are not in their own sources")
    return dataclasses.replace(fused, **{name: cols for name, (_, cols) in parts.items()})


@dataclass(frozen=True)
class _Layout:
    """Column slices of the fused projection (``span_outputs``: start, end, mean of both heads, then
    the entity head's before/after context)."""

    start_a: slice
    start_e: slice
    end_a: slice
    end_e: slice
    mean_a: slice
    mean_e: slice
    before: slice
    after: slice
    context: bool

    @classmethod
    def of(cls, width: int, ha: int, hh: int) -> "_Layout":
        hs = ha + hh
        extra = width - 3 * hs
        if extra not in (0, 2 * hh):
            raise ModelError(f"token projections of width {width} do not fit heads of {ha} + {hh}")
        return cls(
            start_a=slice(0, ha),
            start_e=slice(ha, hs),
            end_a=slice(hs, hs + ha),
            end_e=slice(hs + ha, 2 * hs),
            mean_a=slice(2 * hs, 2 * hs + ha),
            mean_e=slice(2 * hs + ha, 3 * hs),
            before=slice(3 * hs, 3 * hs + hh),
            after=slice(3 * hs + hh, 3 * hs + 2 * hh),
            context=extra > 0,
        )


class _Scratch:
    """Float32 [N, C] arrays reused from batch to batch, by name. The span sums are [N, C] with N ~
    1,000 spans a passage; allocated afresh each time, their first touch of new pages cost more than
    the sums (measured on these 2-core VMs: up to 0.3 s of a 1.2 s pass, with two entity heads)."""

    def __init__(self) -> None:
        self._arrays: dict[tuple[str, int], np.ndarray] = {}

    def grab(self, name: str, n: int, c: int) -> np.ndarray:
        """A C-contiguous [n, c] array (its values are left over: write before reading)."""
        array = self._arrays.get((name, c))
        if array is None or array.shape[0] < n:
            array = self._arrays[(name, c)] = np.empty((max(n + n // 4, 1024), c), dtype=np.float32)
        return array[:n]


def _entity_ends(proj: np.ndarray, layout: "_Layout", grab: Callable[[str, int, int], np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per token, [B, T, hh]: what a span starting there adds to the entity side's first layer (its
    start projection plus the context token before it) and what a span ending there adds (end
    projection plus the token after; both clipped at the window's edges as the graph clips them).
    Spans then read two compact arrays instead of four column blocks of the wide projection."""
    b, t, _ = proj.shape
    hh = layout.start_e.stop - layout.start_e.start
    start = grab("at_start", b * t, hh).reshape(b, t, hh)
    end = grab("at_end", b * t, hh).reshape(b, t, hh)
    start[...] = proj[..., layout.start_e]
    end[...] = proj[..., layout.end_e]
    if layout.context:
        start[:, 1:] += proj[:, :-1, layout.before]
        start[:, 0] += proj[:, 0, layout.before]
        end[:, :-1] += proj[:, 1:, layout.after]
        end[:, -1] += proj[:, -1, layout.after]
    return start, end


def _rows(x: np.ndarray, cols: slice, rows: np.ndarray, tokens: np.ndarray, *, out: np.ndarray) -> np.ndarray:
    """``x[rows[i], tokens[i], cols]`` for every i: [B, T, C] -> [N, len(cols)], into ``out``."""
    flat = x.reshape(-1, x.shape[-1])[:, cols]
    return np.take(flat, rows * x.shape[1] + tokens, axis=0, out=out)


def _span_sums(
    mean: np.ndarray, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: np.ndarray, *,
    out: np.ndarray, grab: Callable[[str, int, int], np.ndarray],
    edges: tuple[tuple[np.ndarray, slice], tuple[np.ndarray, slice]] | None = None, bias: np.ndarray | None = None,
) -> np.ndarray:
    """Per span, into ``out``: ``start[row, first] + end[row, last] + mean of mean[row, first..last]
    (+ bias)``, the parts and their order as the graph adds them (``edges``: the start and end parts,
    each a [B, T, C] array and its columns; without them, the mean alone).

    The mean is the graph's: a cumulative sum with a leading zero row, ``(csum[last + 1] -
    csum[first]) / width``. Spans go in blocks of :data:`SPAN_BLOCK`, so that every part of a block is
    added while the block is in the cache: over a whole batch (~16,000 candidates × 384 floats, 24 MB an
    array) each sum was a pass through memory, and the entity sums took twice as long."""
    csum = _token_cumsum(mean)
    flat, steps, cols = csum.reshape(-1, csum.shape[-1]), csum.shape[1], out.shape[1]
    for a in range(0, rows.size, SPAN_BLOCK):
        z = slice(a, a + SPAN_BLOCK)
        r, s, e, o = rows[z], starts[z], ends[z], out[z]
        means = o if edges is None else grab("block_mean", r.size, cols)
        np.take(flat, r * steps + e + 1, axis=0, out=means)
        means -= np.take(flat, r * steps + s, axis=0, out=grab("block_tmp", r.size, cols))
        means /= width[z]
        if edges is not None:
            (start, start_cols), (end, end_cols) = edges
            _rows(start, start_cols, r, s, out=o)
            o += _rows(end, end_cols, r, e, out=grab("block_tmp", r.size, cols))
            o += means
        if bias is not None:
            o += bias
    return out


def _token_cumsum(x: np.ndarray) -> np.ndarray:
    """[B, T, C] -> [B, T + 1, C] running sums over tokens with a leading zero row. The sum runs token
    by token, each step over all [B, C]: the same additions in the same order as ``np.cumsum(x,
    axis=1)``, which walks the middle axis with a stride and took ~10× as long (0.1 s of a 1.3 s
    indexing pass)."""
    csum = np.zeros((x.shape[0], x.shape[1] + 1, x.shape[2]), dtype=np.float32)
    for t in range(x.shape[1]):
        np.add(csum[:, t], x[:, t], out=csum[:, t + 1])
    return csum
