"""onnxruntime at the edge: which execution provider, which graph file, a session with nerindex's
options, the graph's input/output contract, the tokenizer, and the worker threads that run
windows side by side on the CPU. The encoder (``indexer.encoder``) and the benchmarks build on these;
nothing here knows about spans or passages.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from .errors import ModelError, SettingError
from .int8_kernel import exact_products
from .model_folder import CANDIDATE_OUTPUT, INPUT_NAMES, OUTPUT_NAMES, ModelInfo

log = logging.getLogger(__name__)

VECTOR_OUTPUTS = ("span_vectors", "span_base_vectors", "passage_vectors", "type_vectors")  # [..., dims] each

T = TypeVar("T")
R = TypeVar("R")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_DEFAULT_SEVERITY = 2  # onnxruntime's logger level until told otherwise: warnings
ORT_FATAL_ONLY = 4


def choose_provider(device: str, available: Sequence[str]) -> str:
    """The one place the execution provider is picked: ``auto`` prefers CUDA when present."""
    if device not in ("auto", "cpu", "cuda"):
        raise SettingError(f"unknown device {device!r} (use auto, cpu or cuda; --device, NERINDEX_DEVICE)")
    if device == "cpu":
        return CPU
    if CUDA in available:
        return CUDA
    if device == "cuda":
        raise ModelError(
            "device 'cuda' asked for, but onnxruntime has no CUDA provider "
            f"(available: {', '.join(available)}); pip uninstall onnxruntime, then pip install 'nerindex[gpu]' "
            "(the two must never be installed together)"
        )
    return CPU


def runtime_conflict() -> str | None:
    """Why this environment's onnxruntime cannot be trusted, or None: ``onnxruntime`` and
    ``onnxruntime-gpu`` both installed (``pip install 'nerindex[cpu,gpu]'`` does it without a word).
    They are one module on disk, so which one runs depends on the order they were installed in,
    and uninstalling either breaks the other."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    if len(found) < 2:
        return None
    return (f"{' and '.join(found)} are both installed; they share one module, so neither can be trusted: "
            "pip uninstall -y onnxruntime onnxruntime-gpu, then pip install 'nerindex[cpu]' or 'nerindex[gpu]'")


def graph_for(info: ModelInfo, provider: str, graph: str | None = None) -> Path:
    """The graph file to run: an explicit choice, else fp16 on CUDA and int8 on CPU."""
    if graph is not None:
        name = info.graphs.get(graph, graph)
    elif provider == CUDA and "cuda" in info.graphs:
        name = info.graphs["cuda"]
    else:
        name = info.graphs.get("cpu") or next(iter(info.graphs.values()))
    path = Path(name) if Path(name).is_absolute() else info.path / name
    if not path.is_file():
        raise ModelError(f"{path}: graph file missing")
    return path


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow;
    ``os.cpu_count`` counts the machine's): the default number of window workers."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` run on ``workers`` threads, results in order, at most ``2 · workers``
    items in flight (a 1 MB passage is thousands of windows: not all at once). onnxruntime and
    most numpy work release the GIL, so the threads run in parallel; one worker runs in this
    thread, as a plain loop."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="nerindex-window") as pool:
        pending: deque[Future] = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def open_session(
    graph: Path | bytes, provider: str, *, threads: int | None = None, name: Path | None = None
) -> object:
    """An onnxruntime session of a graph file (or serialised graph bytes cut from the file ``name``)
    on one execution provider; errors name the graph file. Where this CPU's uint8 × int8 kernel
    saturates, an int8 graph's products run on one that does not (:mod:`.int8_kernel`: the CPU's
    nodes of any provider's session)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # Idle pool threads spin by default; between the staged graphs that takes the cores from the
    # numpy span work (and from other processes): 128 passages 9.0 s -> 5.1-6.0 s at load 5.4, 2 cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    exact_products(options)
    source = name or ("a serialised graph" if isinstance(graph, bytes) else graph)
    try:
        return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), options, providers=[provider])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelError(f"{source}: onnxruntime cannot load the graph: {exc}") from exc


def open_cuda_session(graph: Path, *, threads: int | None, quiet: bool) -> object | None:
    """A session of ``graph`` that asks for the CUDA provider; onnxruntime runs it on the CPU when
    it cannot start CUDA, so the caller reads ``get_providers()``. With ``quiet`` (``--device
    auto``) None where CUDA cannot start: without the NVIDIA driver's library nothing is tried
    (onnxruntime-gpu's CUDA libraries cost a machine without a GPU ~0.9 s and ~350 MB a command),
    and with it a one-node graph tries the provider before this graph is loaded at all.

    Why the wrapping: onnxruntime-gpu says why CUDA did not start in its own ways. ``preload_dlls``
    ``print()``s each missing library to stdout, where it broke ``--json`` output (an audit: five
    lines before the first hit), and its logger writes coloured error lines to stderr. The printed
    lines go to stderr here (to the log under ``quiet``); with ``quiet`` (where the CPU is a fine
    answer and the caller says so in one line) the logger is silenced too while the provider
    starts. Asked for CUDA, the user sees onnxruntime's reasons. Both are process-wide for that
    moment (other threads' prints and onnxruntime messages go the same way), and the logger is
    set back to onnxruntime's default, warnings: it has no getter for a level an application set
    before.
    """
    import onnxruntime as ort

    if quiet and not cuda_driver():
        log.info("onnxruntime lists CUDA, but the NVIDIA driver's library does not load: the CPU")
        return None
    printed = io.StringIO()
    if quiet:
        ort.set_default_logger_severity(ORT_FATAL_ONLY)
    try:
        with contextlib.redirect_stdout(printed):
            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
            if quiet and not cuda_starts():
                return None
            return open_session(graph, CUDA, threads=threads)
    finally:
        if quiet:
            ort.set_default_logger_severity(ORT_DEFAULT_SEVERITY)
        text = printed.getvalue()
        if text.strip():
            if quiet:
                log.info("onnxruntime, starting CUDA: %s", text.strip())
            else:
                sys.stderr.write(text)


def cuda_driver() -> bool:
    """Whether the NVIDIA driver's library loads: CUDA cannot start without it (no GPU, or a
    container started without the GPU), and trying loads onnxruntime-gpu's CUDA libraries for
    nothing."""
    if sys.platform == "darwin":
        return False
    try:
        ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return False
    return True


def cuda_starts() -> bool:
    """Whether onnxruntime starts its CUDA provider, tried on a one-node graph (``Identity``, made
    with the onnx package of nerindex[gpu]; without it, True: the real graph is the try)."""
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return True
    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "nerindex-cuda-probe", [value],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    try:
        session = open_session(model.SerializeToString(), CUDA, threads=1, name=Path("<the CUDA probe>"))
    except ModelError as exc:
        log.info("onnxruntime, starting CUDA: %s", exc)
        return False
    return session.get_providers()[0] == CUDA


# Characters that break words for Python and for a reader of the text, and that BERT's normaliser
# deletes as control or format characters, joining the words either side: a form feed (pdftotext's
# page break), a vertical tab, the information separators, NEL and the zero-width space ("Barack
# Obama\fAngela Merkel" gave the span "Barack Obama\fAngela": an audit). Each becomes a space, one
# character for one, so offsets into the text stay as they are.
WORD_BREAKS = "[\x0b\x0c\x1c-\x1f\x85\u200b]"


def load_tokenizer(path: str | Path) -> object:
    """A tokenizers.Tokenizer with truncation and padding off (windows are planned by nerindex),
    ``WORD_BREAKS`` read as spaces, and a special token's name in a text ("[SEP]" in a passage on
    BERT) read as text: it was the token itself, and the scores of the words around it moved
    (an audit: "Google" 0.73 against 0.38)."""
    from tokenizers import Regex, Tokenizer, normalizers

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: cannot load tokenizer: {exc}") from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    breaks = normalizers.Replace(Regex(WORD_BREAKS), " ")
    tokenizer.normalizer = breaks if tokenizer.normalizer is None else normalizers.Sequence([breaks, tokenizer.normalizer])
    tokenizer.encode_special_tokens = True
    return tokenizer


def check_io(
    session: object, graph_path: Path, *, candidate: bool = False, card: Path | None = None, dims: int | None = None
) -> None:
    """Fail at load, naming the graph, when its input/output names are not the contract's (with
    ``candidate``, model.json's ``candidate_threshold``, the graph needs ``candidate_scores`` too;
    without it, a graph with that output is refused naming ``card``, the model.json: its head
    would be silently off, an audit), or when a vector output's fixed width is not ``dims``, the
    card's (the train audit, round 29: a store was written with the graph's 384-dim vectors under a
    stamp of 256, then the index crashed)."""
    inputs = {i.name for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    for output in session.get_outputs():
        width = (getattr(output, "shape", None) or [None])[-1]
        if dims is not None and output.name in VECTOR_OUTPUTS and isinstance(width, int) and width != dims:
            raise ModelError(f"{card or graph_path.parent / 'model.json'}: dims is {dims}, but the graph "
                             f"{graph_path.name} gives {output.name} of {width}")
    if CANDIDATE_OUTPUT in outputs and not candidate:
        raise ModelError(f"{card or graph_path.parent / 'model.json'}: no candidate_threshold, but the graph "
                         f"{graph_path.name} has a candidate head (output {CANDIDATE_OUTPUT}): give its threshold")
    missing_in = [n for n in INPUT_NAMES if n not in inputs]
    missing_out = [n for n in (*OUTPUT_NAMES, *([CANDIDATE_OUTPUT] if candidate else [])) if n not in outputs]
    if missing_in or missing_out:
        raise ModelError(
            f"{graph_path}: not a nerindex graph: missing inputs {missing_in or '-'}, "
            f"outputs {missing_out or '-'} (see docs/model-folder.md)"
        )
