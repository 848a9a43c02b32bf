"""The CPU's uint8 × int8 kernel (``indexer.int8_kernel``): where it saturates (no VNNI), the shipped
graph's products run on one that does not (onnxruntime's precision option) and give the vectors every
other CPU gives.

The golden vectors (``golden/encoder/example.npz``) are the shipped model's on the example corpus,
computed with exact integer products; after an intended model change regenerate them with
``NERINDEX_UPDATE_GOLDEN=1`` (and review the change). On an AMD EPYC with AVX2 only, the shipped graph
as it was gave passage vectors down to cosine 0.985 of these, and 209 spans instead of 206.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from indexer import int8_kernel
from indexer.assets import default_model_dir
from indexer.encoder import OnnxEncoder
from indexer.reading import read_passages

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "encoder" / "example.npz"
PHRASES = ["dinosaur", "book", "musical instrument", "political party", "the name of a river"]
ORT_VERSION = tuple(int(part) for part in __import__("onnxruntime").__version__.split(".")[:2])


def matmul_integer_graph(weights: np.ndarray, zero_point: np.ndarray | None) -> onnx.ModelProto:
    """x (uint8) · weights (int8 initializer, with or without a zero point) -> int32."""
    inputs = ["x", "w", "", "wz"] if zero_point is not None else ["x", "w"]
    inits = [numpy_helper.from_array(weights, "w")] + ([numpy_helper.from_array(zero_point, "wz")] if zero_point is not None else [])
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", inputs, ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["m", weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["m", weights.shape[1]])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, x: np.ndarray, *, exact: bool) -> np.ndarray:
    """The graph through the runtime's own session (``exact``: as the runtime opens graphs), or a
    plain onnxruntime session, which runs this CPU's uint8 x int8 kernel as it is."""
    import onnxruntime as ort

    from indexer.runtime import CPU, open_session

    data = model.SerializeToString()
    session = open_session(data, CPU) if exact else ort.InferenceSession(data, providers=[CPU])
    return session.run(None, {"x": x})[0]


def largest_levels(zero_point: np.ndarray | None) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    """A MatMulInteger with weights at +127 and -128 and inputs at 255, and the exact products."""
    rng = np.random.default_rng(0)
    weights = np.concatenate([rng.integers(-127, 128, (64, 8)), np.full((64, 2), 127), np.full((64, 2), -128)], axis=1).astype(np.int8)
    x = np.concatenate([rng.integers(0, 256, (3, 64)), np.full((1, 64), 255)]).astype(np.uint8)
    z = 0 if zero_point is None else int(zero_point)
    return matmul_integer_graph(weights, zero_point), x, x.astype(np.int64) @ (weights.astype(np.int64) - z)


# onnxruntime before 1.30, with the precision option, aborts the process on a MatMulInteger without
# a zero point input and leaves one whose zero point is "" on the saturating kernel (measured with
# 1.19, 1.22, 1.26 and 1.29); every graph nerindex exports gives its zero points as constants
BEFORE_1_30 = pytest.mark.skipif(ORT_VERSION < (1, 30), reason="onnxruntime before 1.30 needs constant zero points")


@pytest.mark.parametrize("forced", [False, True], ids=["as this CPU needs", "the option forced"])
@pytest.mark.parametrize("zero_point", [pytest.param(None, marks=BEFORE_1_30), np.array(0, np.int8), np.array(3, np.int8)])
def test_the_runtimes_sessions_give_exact_integer_products(zero_point, forced, monkeypatch):
    """At the largest levels too, where the uint8 x int8 kernel saturates on CPUs without VNNI; the
    forced rows turn onnxruntime's precision option on on every CPU."""
    if forced:
        monkeypatch.setattr(int8_kernel, "_saturates", True)
    model, x, want = largest_levels(zero_point)
    assert np.array_equal(run(model, x, exact=True), want)


@BEFORE_1_30
def test_a_zero_point_slot_given_as_empty_gets_exact_products_too(monkeypatch):
    """An exporter may write the optional zero point as "" (it broke nerindex's own rewrite once)."""
    monkeypatch.setattr(int8_kernel, "_saturates", True)
    model, x, want = largest_levels(np.array(0, np.int8))
    model.graph.node[0].input[3] = ""
    assert np.array_equal(run(model, x, exact=True), want)


def test_without_the_option_this_cpu_saturates_where_the_probe_says_so():
    """The control: a plain session gets other products exactly where :func:`saturates` is true
    (so the test above can fail on such a CPU: it did with the runtime before December 2026)."""
    model, x, want = largest_levels(np.array(0, np.int8))
    assert (not np.array_equal(run(model, x, exact=False), want)) == int8_kernel.saturates()


def test_the_shipped_graphs_int8_products_are_all_ones_the_option_converts():
    """What the precision option needs from a graph on every onnxruntime nerindex supports (above)."""
    model = onnx.load(str(default_model_dir() / "encoder.int8.onnx"))
    assert sum(n.op_type == "MatMulInteger" for n in model.graph.node) == 55
    assert int8_kernel.unconverted_products(model) == []


def test_products_the_option_could_leave_saturating_are_named():
    """A review: weights also listed among the graph's inputs and QLinearMatMul of opset 21 stay
    saturated with onnxruntime 1.30-1.32; an absent or "" zero point before 1.30."""
    def named(model: onnx.ModelProto) -> list[str]:
        model.graph.node[0].name = "p"
        return int8_kernel.unconverted_products(model)

    assert named(matmul_integer_graph(np.ones((4, 2), np.int8), np.array(0, np.int8))) == []
    assert named(matmul_integer_graph(np.ones((4, 2), np.int8), None)) == ["MatMulInteger (p)"]
    listed = matmul_integer_graph(np.ones((4, 2), np.int8), np.array(0, np.int8))
    listed.graph.input.extend([helper.make_tensor_value_info("w", TensorProto.INT8, [4, 2])])
    assert named(listed) == ["MatMulInteger (p)"]
    uint8 = matmul_integer_graph(np.ones((4, 2), np.int8), None)
    uint8.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 2), np.uint8), "w"))
    assert named(uint8) == []  # uint8 weights run on the kernel that does not saturate
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    inits = [numpy_helper.from_array(np.ones((4, 2), np.int8), "w"), numpy_helper.from_array(np.array(0, np.int8), "wz")]
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 2])], inits)
    for opset, want in ((13, []), (21, ["QLinearMatMul (p)"])):
        assert named(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])) == want


def test_the_runtimes_sessions_carry_the_option_only_where_the_kernel_saturates(monkeypatch):
    """On a VNNI CPU onnxruntime would still swap its exact VNNI kernel for the slower uint8 one."""
    from indexer.runtime import CPU, open_session

    data = largest_levels(np.array(0, np.int8))[0].SerializeToString()
    for saturating in (False, True):
        monkeypatch.setattr(int8_kernel, "_saturates", saturating)
        options = open_session(data, CPU).get_session_options()
        if saturating:
            assert options.get_session_config_entry(int8_kernel.PRECISION_OPTION) == "1"
        else:
            with pytest.raises(RuntimeError, match="does not have configuration"):  # never set
                options.get_session_config_entry(int8_kernel.PRECISION_OPTION)


def test_an_unreadable_graph_is_a_model_error_where_the_kernel_saturates(tmp_path, monkeypatch):
    from indexer.errors import ModelError
    from indexer.runtime import CPU, open_session

    monkeypatch.setattr(int8_kernel, "_saturates", True)
    bad = tmp_path / "encoder.int8.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(ModelError, match="encoder.int8.onnx: onnxruntime cannot load the graph"):
        open_session(bad, CPU)


def example_vectors(encoder: OnnxEncoder) -> dict[str, np.ndarray]:
    docs = encoder.encode(list(read_passages(str(ROOT / "examples" / "corpus.jsonl"))))
    return {"passages": np.stack([d.vector for d in docs]), "types": encoder.embed_types(PHRASES)}


@pytest.mark.parametrize("forced", [False, True], ids=["as this CPU needs", "the option forced"])
def test_the_shipped_model_gives_the_exact_kernels_vectors_on_this_cpu(forced, monkeypatch):
    """Whichever kernel this CPU runs, the vectors are those of exact integer products (within the
    float noise of onnxruntime versions); the forced row turns the precision option on on every CPU."""
    if forced:
        monkeypatch.setattr(int8_kernel, "_saturates", True)
    got = example_vectors(OnnxEncoder.from_dir(default_model_dir(), device="cpu"))
    if os.environ.get("NERINDEX_UPDATE_GOLDEN") and int8_kernel.saturates():
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(GOLDEN, **{k: v.astype(np.float16) for k, v in got.items()})
    want = np.load(GOLDEN)
    # onnxruntime before 1.30 computes the graph's float parts a little differently (an audit: passage
    # cosine 0.9955 with 1.19 to 1.29; 1.30 to 1.32: 0.99996); a saturating kernel gives 0.985
    bound = 0.999 if ORT_VERSION >= (1, 30) else 0.99
    for key in ("passages", "types"):
        cosines = np.sum(got[key] * want[key].astype(np.float32), axis=1)
        assert cosines.min() > bound, (key, float(cosines.min()))
