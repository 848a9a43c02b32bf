"""Export a SpanTypeEncoder to a model folder (docs/model-folder.md is the contract).

The folder is written into a temporary sibling directory and renamed into place at the end, so a
reader never sees half a model; an existing folder is replaced only when asked (``force``).
The fp32 graph is an intermediate: it is kept only when asked (``keep_fp32``).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..assets import default_model_dir
from ..catalog import read_phrases
from ..errors import ModelError
from ..model_folder import sha256_file
from .model import INPUT_NAMES, OUTPUT_NAMES, SpanTypeEncoder, resolve_backbone

log = logging.getLogger(__name__)

OPSET = 17
INT8_NAME = "encoder.int8.onnx"
FP16_NAME = "encoder.fp16.onnx"
FP32_NAME = "encoder.fp32.onnx"

# defaults of model.json that training overrides with measured values
DEFAULT_CARD: dict[str, Any] = {
    "format": 1,
    "id": "nerindex-minilm-l6",
    "version": "0.1.0",
    "backbone": {"name": "sentence-transformers/all-MiniLM-L6-v2", "license": "Apache-2.0"},
    "similarity": "cosine",
    "max_length": 256,
    "max_span_width": 8,
    "detection_threshold": 0.5,
    "similarity_threshold": 0.5,
    "label_threshold": 0.45,
    "labels_per_span": 3,
    "passage_weight": 0.0,
    "type_template": "{}",
}


def load_tokenizer(path: str | Path):
    """A tokenizers.Tokenizer with truncation and padding off (windows are planned by nerindex)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


def backbone_tokenizer_file(backbone: str | None) -> Path:
    """tokenizer.json of the backbone (a local folder, or fetched by transformers from a hub)."""
    path = Path(resolve_backbone(backbone))
    if (path / "tokenizer.json").is_file():
        return path / "tokenizer.json"
    from transformers import AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="nerindex-tok-"))
    AutoTokenizer.from_pretrained(str(path)).save_pretrained(str(tmp))
    return tmp / "tokenizer.json"


def export_onnx(model: SpanTypeEncoder, path: Path) -> None:
    """The fp32 graph with dynamic batch, token and span axes (TorchScript exporter: fast, one file)."""
    model.eval()
    b, t, s = 2, 16, 5
    ids = torch.randint(1000, 2000, (b, t), dtype=torch.long)
    ids[:, 0] = 101
    ids[:, -1] = 102
    mask = torch.ones(b, t, dtype=torch.long)
    starts = torch.tensor([[1, 2, 3, 0, 0], [1, 1, 4, 6, 0]], dtype=torch.long)
    ends = torch.tensor([[1, 4, 3, 0, 0], [3, 1, 8, 6, 0]], dtype=torch.long)
    axes = {
        "input_ids": {0: "B", 1: "T"},
        "attention_mask": {0: "B", 1: "T"},
        "span_starts": {0: "B", 1: "S"},
        "span_ends": {0: "B", 1: "S"},
        "span_scores": {0: "B", 1: "S"},
        "span_vectors": {0: "B", 1: "S"},
        "span_base_vectors": {0: "B", 1: "S"},
        "passage_vectors": {0: "B"},
        "type_vectors": {0: "B"},
    }
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, starts, ends),
            str(path),
            input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES,
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 with per-channel weights (per-tensor lost ~3 points of cosine, DESIGN.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and compute with float32 inputs/outputs; span means stay float32.

    A cumulative sum over hundreds of tokens in fp16 loses most of a short span's mean, so the nodes
    of the ``/span_mean`` scope are kept in float32 (casts are inserted around them).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    block = [n.name for n in model.graph.node if n.name.startswith("/span_mean/")]
    model16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=block)
    _dedupe_casts(model16.graph)
    onnx.save(model16, str(dst))


def _dedupe_casts(graph) -> None:
    """Drop the identical Cast nodes the converter inserts once per blocked consumer of a tensor.

    It names them after the tensor, so a tensor read by two blocked nodes gets two same-named casts
    with the same output, which onnxruntime rejects; one is enough.
    """
    seen: set[str] = set()
    keep = []
    for node in graph.node:
        if node.op_type == "Cast" and node.name in seen:
            continue
        seen.add(node.name)
        keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    names: set[str] = set()
    infos = []
    for vi in graph.value_info:
        if vi.name not in names:
            names.add(vi.name)
            infos.append(vi)
    del graph.value_info[:]
    graph.value_info.extend(infos)


def check_graph(path: Path) -> list[str]:
    """Load a graph in onnxruntime (CPU) and check its input/output names against the contract."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if ins != INPUT_NAMES or outs != OUTPUT_NAMES:
        raise ModelError(f"{path}: graph inputs {ins} / outputs {outs} do not match the contract")
    return outs


def embed_phrases_onnx(
    graph: Path, tokenizer, phrases: Sequence[str], *, template: str = "{}", batch_size: int = 64
) -> np.ndarray:
    """Type vectors of phrases through an exported graph (one dummy span each)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    out: list[np.ndarray] = []
    for i in range(0, len(phrases), batch_size):
        encs = [tokenizer.encode(template.format(p)) for p in phrases[i : i + batch_size]]
        t = max(len(e.ids) for e in encs)
        ids = np.zeros((len(encs), t), dtype=np.int64)
        mask = np.zeros((len(encs), t), dtype=np.int64)
        for r, e in enumerate(encs):
            ids[r, : len(e.ids)] = e.ids
            mask[r, : len(e.ids)] = 1
        zeros = np.zeros((len(encs), 1), dtype=np.int64)
        (vec,) = sess.run(
            ["type_vectors"],
            {"input_ids": ids, "attention_mask": mask, "span_starts": zeros, "span_ends": zeros},
        )
        out.append(vec.astype(np.float32))
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), dtype=np.float32)



def default_catalog_path() -> Path:
    """The default model's catalog: a new model ships the same type phrases unless given others."""
    return default_model_dir() / "catalog.txt"


def write_model_folder(
    model: SpanTypeEncoder,
    out: str | Path,
    *,
    card: dict[str, Any] | None = None,
    backbone: str | None = None,
    catalog: str | Path | None = None,
    force: bool = False,
    keep_fp32: bool = False,
) -> dict[str, Any]:
    """Export ``model`` into the model folder ``out`` atomically; returns the written model.json.

    ``card`` holds model.json values that override the defaults (thresholds, training record...).
    """
    from safetensors.torch import save_file

    out = Path(out).resolve()
    if out.exists() and not force:
        raise ModelError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix="nerindex-export-"))
    try:
        fp32 = (tmp if keep_fp32 else scratch) / FP32_NAME
        log.info("exporting the fp32 graph")
        export_onnx(model, fp32)
        check_graph(fp32)
        log.info("quantising to int8 (per-channel)")
        quantize_int8(fp32, tmp / INT8_NAME)
        check_graph(tmp / INT8_NAME)
        log.info("converting to fp16")
        convert_fp16(fp32, tmp / FP16_NAME)
        check_graph(tmp / FP16_NAME)

        tok_src = backbone_tokenizer_file(backbone)
        tok_json = json.loads(tok_src.read_text(encoding="utf-8"))
        tok_json["truncation"] = None
        tok_json["padding"] = None
        (tmp / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")

        save_file(model.head_state_dict(), str(tmp / "heads.safetensors"))

        meta: dict[str, Any] = dict(DEFAULT_CARD)
        meta.update(card or {})
        phrases = read_phrases(catalog or default_catalog_path())
        (tmp / "catalog.txt").write_text("".join(p + "\n" for p in phrases), encoding="utf-8")
        tokenizer = load_tokenizer(tmp / "tokenizer.json")
        vecs = embed_phrases_onnx(
            tmp / INT8_NAME, tokenizer, phrases, template=meta.get("type_template", "{}")
        )
        np.save(tmp / "catalog.npy", vecs.astype(np.float32))

        meta.update(
            {
                "dims": model.dims,
                "graphs": {"cpu": INT8_NAME, "cuda": FP16_NAME},
                "inputs": list(INPUT_NAMES),
                "outputs": list(OUTPUT_NAMES),
                "tokenizer": "tokenizer.json",
                "heads": "heads.safetensors",
                "heads_config": model.config.to_dict(),
                "catalog": {"phrases": "catalog.txt", "vectors": "catalog.npy"},
            }
        )
        meta.setdefault("training", {})
        meta.setdefault("evaluation", {})
        files = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != "model.json")
        meta["files"] = {name: sha256_file(tmp / name) for name in files}
        ordered = _ordered_card(meta)
        (tmp / "model.json").write_text(json.dumps(ordered, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        # mkdtemp makes a private folder; a shipped model is world-readable like any checkout
        tmp.chmod(0o755)
        for p in tmp.iterdir():
            p.chmod(0o644)

        if out.exists():
            old = out.parent / f".{out.name}.old"
            if old.exists():
                shutil.rmtree(old)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
        return ordered
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_KEY_ORDER = [
    "format", "id", "version", "backbone", "dims", "similarity", "max_length", "max_span_width",
    "detection_threshold", "span_decoding", "similarity_threshold", "label_threshold", "labels_per_span",
    "passage_weight", "type_template", "graphs", "inputs", "outputs", "tokenizer", "heads", "heads_config", "catalog",
    "files", "training", "evaluation",
]  # fmt: skip


def _ordered_card(meta: dict[str, Any]) -> dict[str, Any]:
    """model.json keys in the order of the contract, unknown keys after them."""
    out = {k: meta[k] for k in _KEY_ORDER if k in meta}
    out.update({k: v for k, v in meta.items() if k not in out})
    return out


__all__ = ["write_model_folder", "embed_phrases_onnx", "load_tokenizer"]
