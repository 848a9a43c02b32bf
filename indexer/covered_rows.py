"""The span side's last layer, run only on the tokens inside kept spans (models with ``span_layers``).

A model whose span side has its own copy of the backbone's top layers (model 0.3.0 on) ran that
copy over every token of every window, then the adapter's per-token projection over its output;
yet only the tokens inside a span that detection keeps are ever read (the span vector is built
from the start, end and mean of its tokens): on the benchmark passages 56 % of the tokens. The
copy's *last* layer needs every token only as keys and values of its attention; its queries, the
attention output, the feed-forward part and the adapter's projection are per token. So on the CPU
the staged runner cuts that layer and the adapter projection into a fourth graph, **rows**, where
the query path and the residual take only the rows of ``span_rows`` (``Gather``), while keys and
values still see every token:

- **tokens** then returns the entity heads' projection, the layer's input, the attention mask it
  adds and the other full-length inputs of the adapter's projection (instead of the fused
  projection and the copy's last states);
- **rows** (``span_rows``: the token positions inside a kept span, ascending) returns the copy's
  last states and the adapter's projection of those positions.

Everything is found by the graph's structure: the nodes between the layer's input and its output
(``Cuts.span_last``), the one ``Softmax`` and the products around it, the ``Reshape`` of the queries
and of the attention output (whose shapes take the query rows from the tensor itself); no generated
node name is relied on. A graph where this is not found keeps the three graphs of :mod:`.staged`.

Answers: kept spans and their scores are the same to the bit (detection does not read these
layers); span vectors differ by dynamic int8 quantisation, which now scales the per-token
activations of this layer over the kept rows instead of all tokens (on the 48 benchmark passages
compared: the same 2,652 spans at a mean 1 − cos of 0.0041 to the float32 graph's vectors, against
0.0042 for the three graphs; ``tests/test_staged.py`` bounds the difference).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError

ROWS_INPUT = "span_rows"  # [Q] int64: token positions, ascending, shared by every row of the batch
_PROJECTIONS = ("MatMul", "MatMulInteger")


@dataclass(frozen=True)
class RowCuts:
    """Where the graph is cut for the rows graph, and how the fused projection is made of parts."""

    layer_in: str  # [B, T, D] the last span layer's input (keys and values read every token)
    mask: str  # the additive attention mask its scores take
    adapter_inputs: tuple[str, ...]  # other [B, T, *] inputs of the adapter's projection, gathered
    entity: str  # [B, T, Ce] the projection the entity heads' columns of the fused one are sliced from
    adapter: str  # [B, T, Ca] the adapter's projection (output of the rows graph, at the rows)
    # the fused projection's parts in order: (0 for entity / 1 for adapter, first column, end column
    # or None for "to the end")
    parts: tuple[tuple[int, int, int | None], ...]

    def facts(self) -> dict[str, Any]:
        """As JSON values, for the cache."""
        return {**dataclasses.asdict(self), "adapter_inputs": list(self.adapter_inputs),
                "parts": [list(p) for p in self.parts]}  # fmt: skip

    @classmethod
    def from_facts(cls, facts: dict[str, Any]) -> "RowCuts":
        return cls(**{**facts, "adapter_inputs": tuple(facts["adapter_inputs"]),
                      "parts": tuple(tuple(p) for p in facts["parts"])})  # fmt: skip

    def split(self, fused: slice, widths: tuple[int, int]) -> tuple[int, slice]:
        """The source (0 entity, 1 adapter) and its columns of one column range of the fused
        projection; :class:`ModelError` when the range is not inside one part."""
        offset = 0
        for source, first, end in self.parts:
            stop = widths[source] if end is None else min(end, widths[source])
            size = stop - first
            if offset <= fused.start and fused.stop <= offset + size:
                return source, slice(first + fused.start - offset, first + fused.stop - offset)
            offset += size
        raise ModelError(f"columns {fused.start}:{fused.stop} of the fused projection span two of its parts")


def find_row_cuts(model: Any, proj: str, span_last: str) -> RowCuts:
    """The cut of :class:`RowCuts` in an exported graph whose span side has its own top layers
    (``proj``: the fused projection, ``span_last``: the copy's last states, from :func:`.staged.find_cuts`).
    :class:`ModelError` names what is missing."""
    g = _Graph(model.graph)
    layer = _Layer.of(g, span_last)
    entity, adapter, parts = _proj_parts(g, proj, span_last)
    between = g.descendants({span_last}) & g.ancestors(adapter)
    made = g.outputs_of(between)
    gathered = tuple(dict.fromkeys(x for i in between for x in g.nodes[i].input
                                   if x and x not in made and x != span_last and not g.fixed(x)))  # fmt: skip
    below = g.descendants({layer.input})
    for name in gathered:  # only whole-window states may be gathered by rows: inputs of one Concat
        if any(g.nodes[i].op_type != "Concat" for i in g.consumers.get(name, []) if i in between):
            raise ModelError(f"the adapter's projection reads {name} other than through a Concat")
        # the layer's own input, or a state made from it (a review: feature layers (5, 6) with one
        # copied layer read the copy's input, which the rows graph takes already)
        if name in (layer.input, layer.mask) or g.producer.get(name) in below:
            raise ModelError(f"the adapter's projection reads {name}, which the span layer's input makes")
    return RowCuts(layer.input, layer.mask, gathered, entity, adapter, parts)


def rows_graph(model: Any, rc: RowCuts, span_last: str) -> Any:
    """The rows graph: ``layer_in``, ``mask``, the adapter's other inputs and :data:`ROWS_INPUT` →
    ``span_last`` and the adapter's projection at those rows. Edits a copy of ``model``."""
    import onnx
    from onnx import TensorProto, helper
    from onnx.utils import Extractor

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = _Graph(m.graph)
    layer = _Layer.of(g, span_last)
    new: list[Any] = []

    def const(name: str, value: int) -> str:
        new.append(helper.make_node("Constant", [], [name], name=name,
                                    value=helper.make_tensor(name, TensorProto.INT64, [1], [value])))  # fmt: skip
        return name

    def rows_of(tensor: str) -> str:
        out = f"{tensor}__rows"
        if not any(out in n.output for n in new):
            new.append(helper.make_node("Gather", [tensor, ROWS_INPUT], [out], axis=1, name=out))
        return out

    def rewire(i: int, tensor: str, to: str) -> None:
        node = g.nodes[i]
        node.input[:] = [to if name == tensor else name for name in node.input]  # every use (a review)

    rewire(layer.query, layer.query_in, rows_of(layer.query_in))
    rewire(layer.residual, rc.layer_in, rows_of(rc.layer_in))
    zero, two, end = const("rows__0", 0), const("rows__2", 2), const("rows__end", 2**62)
    for i in (layer.query_reshape, layer.out_reshape):  # shape [B, T, ...] -> [B, rows, ...]
        reshape = g.nodes[i]
        tag = reshape.output[0]
        new += [
            helper.make_node("Shape", [reshape.input[0]], [f"{tag}__shape"], name=f"{tag}__shape"),
            helper.make_node("Slice", [f"{tag}__shape", zero, two], [f"{tag}__head"], name=f"{tag}__head"),
            helper.make_node("Slice", [reshape.input[1], two, end], [f"{tag}__tail"], name=f"{tag}__tail"),
            helper.make_node("Concat", [f"{tag}__head", f"{tag}__tail"], [f"{tag}__rowshape"], axis=0, name=f"{tag}__rowshape"),
        ]
        reshape.input[1] = f"{tag}__rowshape"
    for i in g.descendants({span_last}) & g.ancestors(rc.adapter):
        for name in rc.adapter_inputs:
            if name in g.nodes[i].input:
                rewire(i, name, rows_of(name))
    m.graph.node.extend(new)
    m.graph.input.append(helper.make_tensor_value_info(ROWS_INPUT, TensorProto.INT64, ["rows"]))
    stale = g.outputs_of(g.descendants({layer.query_in, rc.layer_in, span_last})) | {span_last}
    kept = [v for v in m.graph.value_info if v.name not in stale]
    del m.graph.value_info[:]
    m.graph.value_info.extend(kept)
    m.graph.value_info.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in (span_last, rc.adapter))
    return Extractor(m).extract_model([rc.layer_in, rc.mask, *rc.adapter_inputs, ROWS_INPUT], [span_last, rc.adapter])


def covered_rows(starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """Ascending token positions inside at least one span (inclusive ``starts``..``ends``), of any row."""
    edge = np.zeros(length + 1, dtype=np.int64)
    np.add.at(edge, starts, 1)
    np.add.at(edge, ends + 1, -1)
    return np.nonzero(np.cumsum(edge[:length]) > 0)[0].astype(np.int64)


@dataclass(frozen=True)
class _Layer:
    """The nodes (indices) of the span side's last transformer layer that the rows graph changes.

    A post-LayerNorm transformer layer (BERT's): ``out = LN(ffn(h1) + h1)``, ``h1 = LN(attn(h) + h)``.
    From ``span_last`` back: the two residual Adds, the layer input ``h`` (the Add input a
    LayerNormalization made), the layer's nodes (between ``h`` and ``span_last``), its one Softmax, the Add of the mask before it, the query-key product, the query projection."""

    input: str
    mask: str
    query: int  # the query projection (MatMul or MatMulInteger); its input ``query_in``
    query_in: str  # the layer input, or its quantised form
    residual: int  # the Add of the attention output and the layer input
    query_reshape: int
    out_reshape: int  # the Reshape of the attention's heads back to [B, T, D]

    @classmethod
    def of(cls, g: "_Graph", span_last: str) -> "_Layer":
        h1 = g.residual_in(span_last)
        h = g.residual_in(h1)
        residual = g.producer[g.nodes[g.producer[h1]].input[0]]
        layer = g.ancestors(span_last) & g.descendants({h})
        softmaxes = [i for i in layer if g.nodes[i].op_type == "Softmax"]
        if len(softmaxes) != 1:
            raise ModelError("the span side's last layer has no single attention Softmax")
        softmax = softmaxes[0]
        scaled = g.nodes[g.producer.get(g.nodes[softmax].input[0], -1)] if g.nodes[softmax].input[0] in g.producer else None
        if scaled is None or scaled.op_type != "Add":
            raise ModelError("the last span layer's attention scores are not an Add of a mask")
        inside = [x for x in scaled.input if g.producer.get(x) in layer]
        masks = [x for x in scaled.input if x not in inside]
        after = g.descendants({g.nodes[softmax].output[0]})
        products = [i for i in g.ancestors(inside[0]) & layer if g.nodes[i].op_type == "MatMul"
                    and not any(g.fixed(x) for x in g.nodes[i].input) and i not in after] if len(inside) == 1 else []  # fmt: skip
        if len(masks) != 1 or len(products) != 1:
            raise ModelError("the last span layer has no single query-key product and mask")
        q_side = g.ancestors(g.nodes[products[0]].input[0]) & layer
        queries = [i for i in q_side if g.nodes[i].op_type in _PROJECTIONS and any(g.fixed(x) for x in g.nodes[i].input[1:])]
        if len(queries) != 1:
            raise ModelError("the last span layer has no single query projection")
        query = queries[0]
        query_in = g.nodes[query].input[0]
        if query_in != h and g.nodes[g.producer.get(query_in, query)].op_type != "DynamicQuantizeLinear":
            raise ModelError("the query projection does not read the layer input")
        below_q = g.descendants({g.nodes[query].output[0]})
        q_reshapes = [i for i in q_side if g.nodes[i].op_type == "Reshape" and i in below_q]
        out_reshapes = [i for i in layer & after if g.nodes[i].op_type == "Reshape"]
        if len(q_reshapes) != 1 or len(out_reshapes) != 1:
            raise ModelError("the last span layer has no single query Reshape and output Reshape")
        return cls(h, masks[0], query, query_in, residual, q_reshapes[0], out_reshapes[0])


def _proj_parts(g: "_Graph", proj: str, span_last: str) -> tuple[str, str, tuple[tuple[int, int, int | None], ...]]:
    """(the entity projection, the adapter's, the fused projection's parts): ``proj`` must be a
    Concat over its last axis of column Slices of two tensors, the adapter's the one computed
    from ``span_last``."""
    from onnx import numpy_helper

    concat = g.node_of(proj)
    if concat is None or concat.op_type != "Concat":
        raise ModelError("the fused projection is not a Concat")
    slices = [g.node_of(x) for x in concat.input]
    if any(s is None or s.op_type != "Slice" or len(s.input) < 4 for s in slices):
        raise ModelError("the fused projection is not a Concat of column Slices")
    sources = list(dict.fromkeys(s.input[0] for s in slices))
    adapters = [s for s in sources if g.producer.get(span_last) in g.ancestors(s)]
    if len(sources) != 2 or len(adapters) != 1:
        raise ModelError("the fused projection is not sliced from one entity and one adapter projection")
    adapter = adapters[0]
    entity = next(s for s in sources if s != adapter)

    def value(name: str) -> int:
        node = g.node_of(name)
        tensor = g.inits.get(name) if node is None else next((a.t for a in node.attribute if a.name == "value"), None)
        if tensor is None:
            raise ModelError(f"a Slice bound of the fused projection is not a constant: {name}")
        return int(numpy_helper.to_array(tensor).reshape(-1)[0])

    parts = []
    for s in slices:
        first, end, axis = value(s.input[1]), value(s.input[2]), value(s.input[3])
        step = value(s.input[4]) if len(s.input) > 4 else 1
        if axis not in (-1, 2) or step != 1 or first < 0:
            raise ModelError("the fused projection's Slices are not column ranges")
        parts.append((int(s.input[0] == adapter), first, None if end >= 2**62 else end))
    return entity, adapter, tuple(parts)


class _Graph:
    """Lookups over an ONNX graph by node index: producers, consumers, weights, nodes up and down."""

    def __init__(self, graph: Any) -> None:
        self.nodes = list(graph.node)
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.output}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for name in n.input:
                self.consumers.setdefault(name, []).append(i)
        self.inits = {t.name: t for t in graph.initializer}
        self._up: dict[str, frozenset[int]] = {}

    def node_of(self, name: str) -> Any:
        i = self.producer.get(name)
        return None if i is None else self.nodes[i]

    def fixed(self, name: str) -> bool:
        """A stored weight or a Constant's output."""
        node = self.node_of(name)
        return name in self.inits or (node is not None and node.op_type == "Constant")

    def ancestors(self, name: str) -> set[int]:
        """Every node ``name`` is computed from, its producer included."""
        if name not in self._up:
            seen: set[int] = set()
            stack = [name]
            while stack:
                i = self.producer.get(stack.pop())
                if i is not None and i not in seen:
                    seen.add(i)
                    stack.extend(self.nodes[i].input)
            self._up[name] = frozenset(seen)
        return set(self._up[name])

    def descendants(self, names: set[str]) -> set[int]:
        """Every node that reads any of ``names``, directly or not."""
        seen: set[int] = set()
        stack = list(names)
        while stack:
            for i in self.consumers.get(stack.pop(), []):
                if i not in seen:
                    seen.add(i)
                    stack.extend(self.nodes[i].output)
        return seen

    def outputs_of(self, nodes: set[int]) -> set[str]:
        return {out for i in nodes for out in self.nodes[i].output}

    def residual_in(self, name: str) -> str:
        """``name`` is LayerNormalization(Add(x, r)): the ``r`` a LayerNormalization made."""
        ln = self.node_of(name)
        add = self.node_of(ln.input[0]) if ln is not None and ln.op_type == "LayerNormalization" else None
        inputs = [x for x in add.input if getattr(self.node_of(x), "op_type", None) == "LayerNormalization"] if add is not None and add.op_type == "Add" else []
        if len(inputs) != 1:
            raise ModelError(f"{name} is not a LayerNormalization of a residual Add")
        return inputs[0]
