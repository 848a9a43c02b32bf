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
constant int8 weight of an integer product (``MatMulInteger``, ``QLinearMatMul``, ``QGemm``,
``DynamicQuantizeMatMul``, ``QAttention`` and the rest) uint8 weights ``w + 128`` with the zero point
moved with them: the same products, computed by the uint8 × uint8 kernel, which widens to int16
before it multiplies and so never saturates. The scan, whose int8 matrix is an input and not a
weight, splits its query in two instead (``int8_scan``). The model files and their checksum do not
change, and the vectors are those a VNNI machine computes (CrossNER politics dev then reproduces
docs/eval's figures to within onnxruntime versions' float noise: 0.0006 on average, R-Precision and
span hit equal). Until December 2026 nerindex rewrote the graph itself with the ``onnx`` package
(the same uint8 weights, bit for bit); the option does it without parsing the graph in Python,
which took a ``nerindex search`` on such a CPU from 1.09 s to 2.49 s (BENCHMARKS.md).
onnxruntime before 1.30 converts only products whose zero point is a constant input: with the
option set it aborts the process on a ``MatMulInteger`` without one, and leaves one given as ``""``
on the saturating kernel. Every graph ``nerindex export`` writes (``quantize_dynamic``) gives them
as constants; ``tests/test_int8_kernel.py`` checks the shipped one.
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
    on a VNNI CPU, whose products are exact already, it would only trade its VNNI kernel for the
    slower uint8 × uint8 one."""
    if saturates():
        options.add_session_config_entry(PRECISION_OPTION, "1")
