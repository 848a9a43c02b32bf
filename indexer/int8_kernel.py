"""onnxruntime's uint8 × int8 matrix kernel, and the CPUs on which it saturates.

Both int8 paths of nerindex multiply uint8 by int8 with ``MatMulInteger``: the CPU encoder graph
(``encoder.int8.onnx``: activations quantised to uint8 per call, weights int8) and the embedded
store's scan (``stores/int8_scan.py``). On a CPU without VNNI (AVX2 alone, AVX-512 without it),
onnxruntime's kernel adds each pair of uint8 · int8 products in int16 with saturation
(``vpmaddubsw``): ``255 · 127 + 255 · 127`` > 32767 is cut to 32767, without an error. onnxruntime's
quantisation docs name the problem and the two ways out (weights of 7 bits, or uint8 weights). On
such a CPU (an AMD EPYC with AVX2 only, an audit of December 2026) the shipped model's span vectors
came out different from every VNNI machine's, and its figures with them (CrossNER politics dev:
172 figures off by 0.011 on average, up to 0.10; the store scan scored a cosine of 0.8 as 0.22).

:func:`saturates` probes the kernel once with its largest operands. Where it saturates,
:func:`exact_graph` gives the encoder graph uint8 weights (``w + 128``, zero point ``z + 128``: the
same products, computed by the uint8 × uint8 kernel, which widens to int16 before it multiplies and
so never saturates), and the scan splits its query in two (``int8_scan``). The model files and
their checksum do not change, and the vectors are those a VNNI machine computes (CrossNER politics
dev then reproduces docs/eval's figures to within onnxruntime versions' float noise: 0.0006 on
average, R-Precision and span hit equal).
"""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# a one-node graph: dots[m, n] = MatMulInteger(query[m, d] uint8, matrix[d, n] int8), opset 13
U8S8_DOTS_GRAPH = base64.b64decode(
    "CAgSCG5lcmluZGV4OoIBCiQKBXF1ZXJ5CgZtYXRyaXgSBGRvdHMiDU1hdE11bEludGVnZXISCWludDhfZG90c1oZCgVxdWVyeRIQ"
    "Cg4IAhIKCgMSAW0KAxIBZFoaCgZtYXRyaXgSEAoOCAMSCgoDEgFkCgMSAW5iGAoEZG90cxIQCg4IBhIKCgMSAW0KAxIBbkIECgAQDQ=="
)
_lock = threading.Lock()
_session: object | None = None  # False: no onnxruntime
_saturates: bool | None = None


def dots_session() -> object:
    """An onnxruntime session of :data:`U8S8_DOTS_GRAPH` on the CPU, or False without onnxruntime."""
    global _session
    with _lock:
        if _session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                _session = False
            else:
                options = ort.SessionOptions()
                options.log_severity_level = 3
                _session = ort.InferenceSession(U8S8_DOTS_GRAPH, options, providers=["CPUExecutionProvider"])
    return _session


def saturates() -> bool:
    """Whether this CPU's uint8 × int8 kernel saturates (no VNNI): 64 products of 255 · 127,
    probed once (False without onnxruntime: nothing of it runs)."""
    global _saturates
    if _saturates is None:
        session = dots_session()
        query, matrix = np.full((1, 64), 255, np.uint8), np.full((64, 8), 127, np.int8)
        _saturates = bool(session) and int(session.run(None, {"query": query, "matrix": matrix})[0][0, 0]) != 64 * 255 * 127
    return _saturates


def exact_graph(graph: Path | bytes) -> Path | bytes:
    """The graph to open on this CPU: itself, or where the kernel saturates and the graph has int8
    weights in ``MatMulInteger``, the serialised graph with uint8 ones (:func:`uint8_weights`).
    Without the ``onnx`` package the graph stays as it is, with a warning; so does an integer
    product the rewrite cannot move (:func:`unmoved_products`), with a warning naming it. Raises
    what ``onnx`` raises on a graph it cannot read (the caller reports it with the file's name)."""
    if not saturates():
        return graph
    try:
        import onnx
    except ImportError:
        log.warning("this CPU's int8 kernel saturates (no VNNI) and the onnx package is missing: vectors differ "
                    "from other machines'; install nerindex[cpu]")
        return graph
    model = onnx.load_model_from_string(graph) if isinstance(graph, bytes) else onnx.load(str(graph))
    changed = uint8_weights(model)
    unmoved = unmoved_products(model)
    if unmoved:
        log.warning("this CPU's int8 kernel saturates (no VNNI) and %s has integer products nerindex cannot move off "
                    "it (%s): its vectors may differ from other machines'", _name(graph), ", ".join(unmoved))
    if not changed:
        return graph
    log.info("this CPU's int8 kernel saturates (no VNNI): %s runs with uint8 weights", _name(graph))
    return model.SerializeToString()


def _name(graph: Path | bytes) -> str:
    return "a graph" if isinstance(graph, bytes) else str(graph)


# integer products and the input that holds their weights (B); their weights of int8 meet the
# saturating kernel, and only MatMulInteger's are rewritten
INTEGER_PRODUCTS = {"MatMulInteger": 1, "QLinearMatMul": 3, "MatMulIntegerToFloat": 1, "DynamicQuantizeMatMul": 1,
                    "ConvInteger": 1, "QLinearConv": 3, "QGemm": 3, "QAttention": 1, "DynamicQuantizeLSTM": 1}


def unmoved_products(model: object) -> list[str]:
    """The integer products of a graph (after :func:`uint8_weights`) that may still run on the
    saturating kernel, as ``op (node name)``: those whose weights are not a uint8 initializer (int8,
    or computed by a node, so unknown), inside If and Loop subgraphs too."""
    from onnx import TensorProto

    def walk(graph: object) -> list[str]:
        inits = {t.name: t.data_type for t in graph.initializer}
        found = []
        for node in graph.node:
            at = INTEGER_PRODUCTS.get(node.op_type)
            weights = node.input[at] if at is not None and len(node.input) > at else None
            if weights is not None and inits.get(weights) != TensorProto.UINT8:
                found.append(f"{node.op_type} ({node.name or 'unnamed'})")
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    found += walk(sub)
        return found

    return walk(model.graph)


def uint8_weights(model: object) -> int:
    """Rewrite, in place, every ``MatMulInteger`` whose weights (input B) are an int8 initializer to
    uint8 weights ``w + 128`` with zero point ``z + 128`` (``z`` 0 when absent): the same integer
    products. Returns how many nodes changed. The int8 originals no longer used are dropped (and
    their entries among the graph's inputs, where an older exporter listed initializers there)."""
    from onnx import TensorProto, numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    shifted: dict[str, str] = {}  # int8 initializer -> its uint8 copy (weights may be shared)

    def uint8_copy(name: str) -> str:
        if name not in shifted:
            values = numpy_helper.to_array(inits[name]).astype(np.int16) + 128
            model.graph.initializer.append(numpy_helper.from_array(values.astype(np.uint8), f"{name}_uint8"))
            shifted[name] = f"{name}_uint8"
        return shifted[name]

    changed = 0
    for node in model.graph.node:
        weights = node.input[1] if node.op_type == "MatMulInteger" and len(node.input) > 1 else ""
        if weights not in inits or inits[weights].data_type != TensorProto.INT8:
            continue
        point = node.input[3] if len(node.input) > 3 else ""
        if point and point not in inits:  # a computed zero point: not a weight this rewrite knows
            continue
        node.input[1] = uint8_copy(weights)
        if point:
            node.input[3] = uint8_copy(point)
        else:  # absent, or given as "" (a review: appended, it made a fifth input onnxruntime refused)
            name = f"{weights}_zero_point_uint8"
            if name not in inits:
                model.graph.initializer.append(numpy_helper.from_array(np.array(128, np.uint8), name))
                inits[name] = model.graph.initializer[-1]
            while len(node.input) < 4:
                node.input.append("")
            node.input[3] = name
        changed += 1
    used = {name for node in model.graph.node for name in node.input} | {out.name for out in model.graph.output}
    dropped = {name for name in shifted if name not in used}
    kept = [t for t in model.graph.initializer if t.name not in dropped]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    inputs = [i for i in model.graph.input if i.name not in dropped]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return changed
