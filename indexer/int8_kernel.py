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
:func:`exact_products` turns on onnxruntime's own remedy for it, the session option
``session.x64quantprecision``: its graph optimiser (``Avx2WeightS8ToU8Transformer``) gives every
constant int8 weight of an integer product (``MatMulInteger``, ``QLinearMatMul`` up to opset 20,
``QGemm``, ``DynamicQuantizeMatMul``, ``QAttention`` and the rest) that goes beyond ±64 uint8 weights
``w + 128`` with the zero point moved with them: the same products, computed by the uint8 × uint8
kernel, which widens to int16 before it multiplies and so never saturates (weights within ±64 never
reach the limit). Weights the graph also lists among its inputs are not constant to onnxruntime
and stay as they are; :func:`unconverted_products` names such products, and ``nerindex export``
refuses to write a graph with one. The scan, whose int8 matrix is an input and not a
weight, splits its query in two instead (``int8_scan``). The model files and their checksum do not
change, and the vectors are those a VNNI machine computes (CrossNER politics dev then reproduces
docs/eval's figures to within onnxruntime versions' float noise: 0.0006 on average, R-Precision and
span hit equal). Until December 2026 nerindex rewrote the graph itself with the ``onnx`` package
(the same uint8 weights, bit for bit); parsing the graph in Python made a ``nerindex search`` on
such a CPU take 2.49 s instead of the option's 1.09 s (BENCHMARKS.md).

onnxruntime before 1.30 converts only products whose zero point is a constant input: with the
option set it aborts the process on a ``MatMulInteger`` without one, and leaves one given as ``""``
on the saturating kernel (so ``[cpu]`` asks for 1.30 where Python has it). Every graph ``nerindex
export`` writes (``quantize_dynamic``) gives them as constants, and export checks it.
"""

from __future__ import annotations

import base64
import threading

import numpy as np

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


# onnxruntime's session config key (kOrtSessionOptionsAvx2PrecisionMode): integer products with
# constant int8 weights run on the uint8 x uint8 kernel, on x86 CPUs; elsewhere it changes nothing
PRECISION_OPTION = "session.x64quantprecision"


def exact_products(options: object) -> None:
    """Ask onnxruntime for exact integer products in sessions made with ``options``, where this CPU's
    kernel saturates. Not elsewhere: onnxruntime applies the option on every x86 CPU with AVX2, so
    on a VNNI CPU, whose products are exact already, it would trade its VNNI kernel for the uint8 ×
    uint8 one, which onnxruntime documents as slower (not measured here: no VNNI machine)."""
    if saturates():
        options.add_session_config_entry(PRECISION_OPTION, "1")


# integer products with int8 weights: (input of the weights, input of their zero point or None)
INTEGER_PRODUCTS = {"MatMulInteger": (1, 3), "QLinearMatMul": (3, 5), "QLinearConv": (3, 5), "ConvInteger": (1, 3),
                    "MatMulIntegerToFloat": (1, None), "DynamicQuantizeMatMul": (1, None), "QGemm": (3, None),
                    "QAttention": (1, None), "DynamicQuantizeLSTM": (1, None)}
# those the precision option converts (onnxruntime's Avx2WeightS8ToU8Transformer; QLinearMatMul up to opset 20)
CONVERTED = set(INTEGER_PRODUCTS) - {"ConvInteger"}


def unconverted_products(model: object) -> list[str]:
    """The integer products of a parsed graph that the precision option could leave on the saturating
    kernel, as ``op (node name)``: weights or zero point that are not int8 constants (computed by a
    node, an initializer the graph also lists among its inputs, which onnxruntime treats as
    overridable, or a zero point absent or ``""``, which onnxruntime before 1.30 does not take),
    ``QLinearMatMul`` of opset 21 or later, and ops the option does not know. Inside If and Loop
    subgraphs too. ``nerindex export`` refuses to write a graph with one (every graph it writes has
    none: ``quantize_dynamic`` gives constant zero points)."""
    from onnx import TensorProto

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    listed = {i.name for i in model.graph.input}

    def unconverted(node: object, inits: dict[str, int]) -> bool:
        weights, point = INTEGER_PRODUCTS[node.op_type]
        names = [node.input[i] if len(node.input) > i else "" for i in (weights, point) if i is not None]
        if inits.get(names[0]) == TensorProto.UINT8:  # uint8 weights: the kernel that does not saturate
            return False
        return (any(inits.get(name) != TensorProto.INT8 for name in names) or node.op_type not in CONVERTED
                or (node.op_type == "QLinearMatMul" and opset >= 21))

    def walk(graph: object) -> list[str]:
        inits = {t.name: t.data_type for t in graph.initializer if t.name not in listed}
        found = []
        for node in graph.node:
            if node.op_type in INTEGER_PRODUCTS and unconverted(node, inits):
                found.append(f"{node.op_type} ({node.name or 'unnamed'})")
            for attr in node.attribute:
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    found += walk(sub)
        return found

    return walk(model.graph)
