"""Where the staged runner's graphs come from: the cache folder, or a cut of the model's graph.

Cutting (:func:`cut_graph`) needs the ``onnx`` package and takes seconds; its result depends only on
the graph's bytes, the external data files the graph names, and the code that cuts. So the key is
a hash of the graph's bytes and of that code (:func:`cut_version`: the source of :mod:`.staged`
and of this module and the onnx release, so that a change to how nerindex cuts makes new keys
without anyone remembering to bump a number); a cut is filed under the hash of the very bytes it
was cut from, so a graph replaced meanwhile cannot file its cuts under the other's key; the
external data files are recorded as the entry's sources, by their names in the graph's folder, and
:mod:`.stage_cache` checks them in the reading graph's folder every time. An entry that cannot be
used in any way, down to a cut graph onnxruntime will not open, is cut again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
from pathlib import Path
from typing import Callable

from . import covered_rows, stage_cache
from .covered_rows import RowCuts, find_row_cuts, rows_graph
from .errors import ModelError
from .model_folder import CANDIDATE_OUTPUT, sha256_file
from .staged import Cuts, StagedGraph, find_cuts, split_layout

log = logging.getLogger(__name__)

STAGE_FILES = ("tokens.onnx", "scores.onnx", "vectors.onnx")
ROWS_FILE = "rows.onnx"  # the span side's last layer on the tokens of kept spans (:mod:`.covered_rows`)


@functools.cache
def cut_version() -> str:
    """How this nerindex cuts, for the cache key: a hash of the cutting modules' source and of the
    onnx release that cuts."""
    from . import staged

    digest = hashlib.sha256(f"onnx {_release('onnx')}".encode())  # its shape inference decides too
    for module in (staged, covered_rows, sys.modules[__name__]):
        try:
            digest.update(Path(module.__file__).read_bytes())
        except (OSError, TypeError):  # installed without sources: the release stands for them
            digest.update(f"{module.__name__} {_release('nerindex')}".encode())
    return digest.hexdigest()


def _release(distribution: str) -> str:
    """An installed distribution's version, read from its metadata (no import), or "none"."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "none"


def load_stages(graph_path: Path, open_graph: Callable[[bytes], object], cache: Path | None = None, *,
                expected: str | None = None, rows: bool = True) -> StagedGraph | None:  # fmt: skip
    """The staged runner of a graph file, or ``None`` (logged) when the graph cannot be cut.

    ``open_graph`` makes an onnxruntime session of serialised graph bytes (the encoder's provider
    and thread settings). The cut graphs, or why the graph runs whole, come from ``cache`` when it
    has them; otherwise they are cut here, which needs ``onnx`` (the ``[cpu]`` extra), and kept there.
    ``expected``: the sha256 model.json records for the graph (:class:`ModelError` when the bytes
    read are others: the encoder cuts at its first passage, and a folder replaced since it was
    loaded gave another model's spans under the first one's stamp, an audit). ``rows=False`` leaves
    out :mod:`.covered_rows`' graph (the span side on every token: ``bench/bench_indexing.py``'s
    ``encode-every-token`` engine); it is cut in the process, never cached.
    """
    staged = None
    cache = cache if rows else None
    if cache is not None:
        digest = _unchanged(graph_path, sha256_file(graph_path), expected)
        cached = stage_cache.read(cache, stage_cache.entry_key(digest, cut_version()), graph_path.parent)
        staged = None if cached is None else _from_entry(cached, graph_path, open_graph)
    if staged is None:
        digest, entry = cut_graph(graph_path, expected=expected, rows=rows)
        if entry is None:
            return None
        stage_cache.write(cache, stage_cache.entry_key(digest, cut_version()), entry)
        staged = _from_entry(entry, graph_path, open_graph, cached=False)
    return staged if isinstance(staged, StagedGraph) else None


def _unchanged(graph_path: Path, digest: str, expected: str | None) -> str:
    """``digest`` (the sha256 of the graph bytes read), once it is the one model.json recorded."""
    if expected is not None and digest != expected:
        raise ModelError(f"{graph_path}: the model folder changed since it was loaded: the graph's sha256 is not "
                         "the one its model.json recorded (exported again meanwhile?): load the model again")
    return digest


def _from_entry(entry: stage_cache.Entry, graph_path: Path, open_graph: Callable[[bytes], object], *,
                cached: bool = True) -> StagedGraph | bool | None:  # fmt: skip
    """The runner of an entry; ``False`` (logged) where the graph runs whole; ``None`` where a cache
    entry cannot be used (logged: cut again). A fresh cut that cannot be opened raises."""
    if "whole" in entry.facts:
        log.info("%s: runs whole (%s)", graph_path, entry.facts["whole"])
        return False
    try:
        cuts = Cuts.from_facts(entry.facts["cuts"])
        rows = entry.facts.get("rows")
        return StagedGraph(cuts, *(open_graph(entry.files[name]) for name in STAGE_FILES),
                           rows=None if rows is None else (RowCuts.from_facts(rows), open_graph(entry.files[ROWS_FILE])))
    except (KeyError, TypeError, ValueError, ModelError) as exc:
        if not cached:
            raise
        log.info("%s: cached cut graphs not used, cut again (%s)", graph_path, exc)
        return None


def cut_graph(graph_path: Path, *, expected: str | None = None, rows: bool = True) -> tuple[str, stage_cache.Entry | None]:
    """(the sha256 of the graph file's bytes, the cut graphs of those very bytes (three, and
    :mod:`.covered_rows`' fourth where the span side has its own layers) and where they were cut,
    or why the graph runs whole: the fact ``whole``); no entry (logged) without the
    ``onnx`` package. The bytes are read once: a file replaced meanwhile cannot file its cuts under
    the other's key (a review), nor be cut when they are not ``expected`` (see :func:`load_stages`)."""
    try:
        import onnx
        from onnx.external_data_helper import load_external_data_for_model, uses_external_data
        from onnx.utils import Extractor
    except ImportError:
        log.warning("the onnx package is missing: candidate spans are embedded in full (slower); install nerindex[cpu]")
        return "", None
    data = graph_path.read_bytes()
    digest = _unchanged(graph_path, hashlib.sha256(data).hexdigest(), expected)
    model = onnx.load_model_from_string(data)
    del data  # the parsed graph holds what it needs: ~25 MB less at the peak
    folder = graph_path.parent
    tensors = [*model.graph.initializer, *(a.t for n in model.graph.node for a in n.attribute if a.HasField("t"))]
    named = sorted({e.value for t in tensors if uses_external_data(t) for e in t.external_data if e.key == "location"})
    if named:  # loaded first: onnx refuses locations outside the folder before anything reads them
        try:
            load_external_data_for_model(model, str(folder))
        except Exception as exc:  # onnx's ValidationError, OSError: not a graph nerindex can cut
            raise ModelError(f"{graph_path}: cannot load its external data: {exc}") from exc
    sources = {name: sha256_file(folder / name) for name in named}
    try:
        cuts = find_cuts(model)
    except ModelError as exc:
        return digest, stage_cache.Entry({"whole": str(exc)}, {}, sources)
    rows = _row_cuts(model, cuts, graph_path) if rows else None
    floats = tuple(n for n in (cuts.entity_in, cuts.adapter_in, cuts.base_in, cuts.span_base_in) if n)
    named_out = {*floats, *cuts.width_in, *((rows.entity, rows.mask, rows.layer_in, *rows.adapter_inputs) if rows else ())}
    if not named_out <= {v.name for v in model.graph.value_info}:
        model = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    if any(types.get(name) != onnx.TensorProto.FLOAT for name in floats):
        return digest, stage_cache.Entry({"whole": "its span layers are not float32"}, {}, sources)
    rows_bytes = _rows_graph(model, rows, cuts, graph_path) if rows is not None else None
    rows = rows if rows_bytes is not None else None
    extract = Extractor(model).extract_model
    tokens_out = ([cuts.proj, cuts.last, "passage_vectors"] + ([cuts.span_last] if cuts.span_last else []) if rows is None
                  else [rows.entity, cuts.last, "passage_vectors", rows.layer_in, rows.mask, *rows.adapter_inputs])  # fmt: skip
    graphs = (
        extract(["input_ids", "attention_mask"], tokens_out),
        extract([cuts.entity_in, *cuts.width_in], ["span_scores"] + ([CANDIDATE_OUTPUT] if cuts.candidate else [])),
        extract([cuts.adapter_in, cuts.base_in] + ([cuts.span_base_in] if cuts.span_base_in else []), ["span_vectors", "span_base_vectors"]),
    )
    files = {name: g.SerializeToString() for name, g in zip(STAGE_FILES, graphs)}
    facts: dict = {"cuts": cuts.facts()}
    if rows is not None:
        files[ROWS_FILE] = rows_bytes
        facts["rows"] = rows.facts()
    return digest, stage_cache.Entry(facts, files, sources)


def _rows_graph(model: object, rows: RowCuts, cuts: Cuts, graph_path: Path) -> bytes | None:
    """:mod:`.covered_rows`' graph, serialised; None (logged: the span side then runs on every
    token) where the attention mask is not one row per window ([B, 1, 1, T]: the queries may then
    be fewer than the keys), the fused projection's layout does not fit its two sources, or the
    graph cannot be made (a review: it raised instead of falling back)."""
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in model.graph.value_info}  # fmt: skip
    if shapes.get(rows.mask, [])[1:3] != [1, 1] or len(shapes.get(rows.mask, [])) != 4:
        return _every_token(graph_path, "its attention mask is not [B, 1, 1, T]")
    width = (shapes.get(rows.entity) or [None])[-1]
    if not width:
        return _every_token(graph_path, "the width of the entity heads' projection is not known")
    try:
        split_layout(rows, width, cuts.adapter_hidden, cuts.entity_bias.shape[0])
        return rows_graph(model, rows, cuts.span_last).SerializeToString()
    except (ModelError, ValueError, KeyError) as exc:
        return _every_token(graph_path, str(exc))


def _row_cuts(model: object, cuts: Cuts, graph_path: Path) -> RowCuts | None:
    """The cut of :mod:`.covered_rows` for a graph whose span side has its own top layers; None
    (logged) where the graph has none or it is not found (the span side then runs on every token)."""
    if cuts.span_last is None:
        return None
    try:
        return find_row_cuts(model, cuts.proj, cuts.span_last)
    except ModelError as exc:
        return _every_token(graph_path, str(exc))


def _every_token(graph_path: Path, why: str) -> None:
    """Say why the span side's last layer runs on every token (no rows graph)."""
    log.info("%s: its span side's last layer runs on every token (%s)", graph_path, why)
