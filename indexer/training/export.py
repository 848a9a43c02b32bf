"""Export a SpanTypeEncoder to a model folder (docs/model-folder.md is the contract).

The folder is written into a temporary sibling directory and renamed into place at the end, so a
reader never sees half a model; an existing folder is replaced only when asked (``force``), and
only when it is a model folder or empty (:func:`check_replaceable`).
The fp32 graph is an intermediate: it is kept only when asked (``keep_fp32``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..assets import default_model_dir
from ..atomic_files import raise_named
from ..catalog import read_phrases
from ..encoder import CPU, load_tokenizer, open_session
from ..type_side import embed_texts, type_text
from ..errors import InputError, ModelError
from ..int8_kernel import unconverted_products
from ..model_card import CARD_FILE, ModelCard
from ..model_folder import CANDIDATE_OUTPUT, ModelInfo, sha256_file
from ..processes import writer_running
from .model import DEFAULT_BACKBONE, INPUT_NAMES, OUTPUT_NAMES, SpanTypeEncoder, resolve_backbone
from .train_config import backbone_reference

log = logging.getLogger(__name__)

OPSET = 17
INT8_NAME = "encoder.int8.onnx"
FP16_NAME = "encoder.fp16.onnx"
FP32_NAME = "encoder.fp32.onnx"


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
        CANDIDATE_OUTPUT: {0: "B", 1: "S"},
    }
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, starts, ends),
            str(path),
            input_names=INPUT_NAMES,
            output_names=model.output_names(),
            dynamic_axes={k: v for k, v in axes.items() if k in INPUT_NAMES or k in model.output_names()},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 with per-channel weights (per-tensor lost ~3 points of cosine)."""
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


def check_graph(path: Path, outputs: list[str] | None = None) -> list[str]:
    """Load a graph in onnxruntime (CPU) and check its input/output names against the contract
    (``outputs``: the model's own, default the contract's)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    if ins != INPUT_NAMES or outs != (outputs or OUTPUT_NAMES):
        raise ModelError(f"{path}: graph inputs {ins} / outputs {outs} do not match the contract")
    return outs


def check_int8_products(path: Path) -> None:
    """Refuse an int8 graph whose products onnxruntime's precision option could leave on a saturating
    kernel (:func:`indexer.int8_kernel.unconverted_products`): its vectors would differ on CPUs
    without VNNI, or onnxruntime before 1.30 would abort on it."""
    import onnx

    unconverted = unconverted_products(onnx.load(str(path)))
    if unconverted:
        raise ModelError(f"{path}: integer products whose weights onnxruntime cannot make exact on CPUs without "
                         f"VNNI: {', '.join(unconverted[:5])}")


def default_catalog_path() -> Path:
    """The default model's catalog: a new model ships the same type phrases unless given others."""
    return default_model_dir() / "catalog.txt"


def backbone_section(name: str) -> dict[str, str]:
    """model.json's ``backbone``: the encoder (hub name, or a folder, recorded absolute so that an
    export of the folder from elsewhere finds it: a review) the graphs are built from."""
    name = backbone_reference(name)
    return {"name": name, "license": "Apache-2.0" if name == DEFAULT_BACKBONE else "see the backbone's model card"}


def card_from_run(run_dir: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(model.json values, backbone, head config) recorded by a training run's ``train.json``."""
    path = run_dir / "train.json"
    if not path.is_file():
        raise ModelError(f"{run_dir}: not a training run folder (no train.json)")
    try:
        # runs before train.json was strict JSON wrote NaN for a figure with nothing to measure: null
        rec = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read train.json: {exc}") from exc
    needed = ("max_length", "max_span_width", "detection_threshold", "similarity_threshold", "label_threshold", "training")
    missing = [key for key in needed if not isinstance(rec, dict) or key not in rec]
    if missing:  # a KeyError traceback before (an audit: a run stopped while saving)
        raise ModelError(f"{path}: not a finished run's train.json (no {', '.join(missing)}): train again")
    heads = run_dir / "heads.safetensors"
    if rec.get("heads_sha256") and heads.is_file() and sha256_file(heads) != rec["heads_sha256"]:
        # training writes the heads, then train.json: a run killed between them, into a folder of an
        # earlier run, left new heads beside the old thresholds
        raise ModelError(f"{heads}: not the heads this train.json was written with (a run stopped while "
                         "saving?): train again")
    backbone = rec.get("backbone") or DEFAULT_BACKBONE
    card = {
        "backbone": backbone_section(backbone),
        "max_length": rec["max_length"],
        "max_span_width": rec["max_span_width"],
        "detection_threshold": rec["detection_threshold"],
        "span_decoding": rec.get("span_decoding", "flat"),
        "similarity_threshold": rec["similarity_threshold"],
        "label_threshold": rec["label_threshold"],
        # λ of hybrid scoring (runs before it was a model.json key called it hybrid_passage_weight)
        "passage_weight": rec.get("passage_weight", rec.get("hybrid_passage_weight", 0.0)),
        "training": rec["training"],
    }
    return card, backbone, rec.get("heads_config", {})


@dataclass(frozen=True)
class ExportSource:
    """What export takes from a training run or a model folder: the card values, the backbone,
    the head config, the heads file (checked against what the source recorded) and, of a model
    folder, its catalog phrases (None: a run has none)."""

    card: dict[str, Any]
    backbone: str
    heads_config: dict[str, Any]
    heads: Path
    catalog: Path | None = None


def read_source(source: Path) -> ExportSource:
    """The :class:`ExportSource` of a ``nerindex train --out`` folder or of a model folder."""
    if not (source / CARD_FILE).is_file():
        return ExportSource(*card_from_run(source), heads=source / "heads.safetensors")
    info = ModelInfo.load(source)  # every file against its sha256: a swapped heads file got fresh ones (an audit)
    heads = info.card.heads_file
    if heads not in info.files:  # no "heads" key: the default name, which files must list too
        raise ModelError(f"{info.path / CARD_FILE}: heads {heads!r} is not listed in files (so never verified)")
    phrases = info.catalog_phrases
    return ExportSource(*card_from_folder(source, info.card), heads=source / heads,
                        catalog=source / phrases if phrases else None)  # fmt: skip


def card_from_folder(folder: Path, card: ModelCard | None = None) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(model.json values, backbone, head config) of an exported model folder, to export it again
    (``card``: its card, already verified by :func:`read_source`).

    What export writes itself (graphs, files, head config) is left out, and so is the
    ``evaluation`` section: it describes the folder's graphs, not a new one's. The thresholds are
    kept, and with them the ``calibration`` record of how they were chosen, which names the folder
    whose graphs they were chosen on (``exported_from``; an audit: the record was dropped and the
    kept thresholds read "not calibrated", the baselines' thresholds lost).
    """
    card = card if card is not None else ModelCard.load(folder)
    values = card.to_dict()
    for key in ("files", "evaluation", *_FOLDER_KEYS):
        values.pop(key, None)
    if isinstance(values.get("calibration"), dict):
        source = values["calibration"].get("exported_from") or {
            "id": values.get("id"), "version": values.get("version"), "checksum": card.checksum}
        values["calibration"] = {**values["calibration"], "exported_from": source}
    return values, card.backbone.name or DEFAULT_BACKBONE, card.heads_config


CALIBRATE_HINT = "nerindex eval VALIDATION-FILES --model {out} --calibrate --write-model"


def threshold_origin(card: dict[str, Any], out: str | Path, *, from_folder: bool, graphs_changed: bool) -> str:
    """What an exported folder's thresholds were chosen on, for export's summary. Export keeps the
    thresholds of its source; where the new graphs are not the ones they were chosen on (another
    folder's, or a run's with a span side or candidate head added), the summary says to choose them
    again, and how (an audit: export said nothing, and an uncalibrated folder looked finished)."""
    hint = CALIBRATE_HINT.format(out=out)
    if from_folder:
        cal = card.get("calibration")
        source = cal.get("exported_from") if isinstance(cal, dict) else None
        name = f"{source.get('id')} {source.get('version')}" if isinstance(source, dict) else "the source folder"
        return f"kept from {name}, chosen on its graphs: calibrate this folder ({hint})"
    figures = card.get("training", {}).get("figures", {})
    # what the run could not choose either, which eval --calibrate does not choose (an audit: "chosen")
    unchosen = "".join((
        "; λ (passage_weight) is not chosen: no validation type had figures, 0 kept"
        if figures.get("hybrid", {}).get("chosen") is False else "",
        "; the detection threshold is not calibrated: no threshold found a dev span (train on more data)"
        if figures.get("entity_head", {}).get("dev", {}).get("calibrated") is False else ""))
    if graphs_changed:
        return (f"chosen by the training run, without the span side or candidate head added here: calibrate this "
                f"folder ({hint}){unchosen}")
    if figures.get("similarity", {}).get("dev_passage_macro_f1") == 0:  # training warned; export said "chosen" (an audit)
        return (f"the similarity threshold is not chosen: no threshold returned a relevant dev passage in training "
                f"(F1 0 at every one): calibrate this folder ({hint}){unchosen}")
    return "chosen by the training run" + unchosen


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
    check_out(out, force=force)
    phrases = read_phrases(catalog or default_catalog_path())  # before the graphs (an audit: refused after them)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as exc:  # named by --out, not the temporary folder (a CLI audit)
        raise OSError(exc.errno, exc.strerror, str(out)) from exc
    try:
        _write_graphs(model, tmp, keep_fp32=keep_fp32)
        _write_tokenizer(backbone, tmp / "tokenizer.json")
        save_file(model.head_state_dict(), str(tmp / "heads.safetensors"))
        draft = ModelCard.exported({**(card or {}), **_folder_values(model)})
        _write_catalog(tmp, phrases, draft.type_template)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file() and p.name != CARD_FILE)
        written = draft.with_files({name: sha256_file(tmp / name) for name in files})
        written.save(tmp)
        _check_loadable(tmp, out)
        # mkdtemp makes a private folder; a shipped model is world-readable like any checkout
        tmp.chmod(0o755)
        for p in tmp.iterdir():
            p.chmod(0o644)
        _replace_folder(tmp, out)
        return written.to_dict()
    except OSError as exc:  # a full disk: named by --out (a CLI audit: "No space left on device" alone)
        shutil.rmtree(tmp, ignore_errors=True)
        raise_named(exc, out, str(tmp))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_loadable(tmp: Path, out: Path) -> None:
    """Refuse a folder the runtime would refuse (a threshold out of range in the run's train.json),
    named by ``out``, before it takes ``out``'s place (the train audit, round 29: export exited 0 with
    a folder every command then refused)."""
    try:
        ModelInfo.load(tmp, verify=False, warn_unknown=False)  # the source's load named its unknown keys
    except ModelError as exc:
        raise ModelError(f"the folder export would write is one nerindex refuses: {str(exc).replace(str(tmp), str(out))}") from None


def check_out(out: Path, *, force: bool) -> None:
    """Refuse an ``--out`` an export must not write (a wrong option, exit 2): one that exists,
    without ``force``, and one ``force`` must not delete (:func:`check_replaceable`). The CLI asks
    before it loads the backbone (a CLI audit: the refusal came after "Loading weights")."""
    recover_killed_export(out)  # first: a folder it restores is one --force must be asked for
    if out.exists() and not force:
        raise InputError("exists; pass --force to replace it", path=str(out))
    check_replaceable(out)


def check_replaceable(out: Path) -> None:
    """Refuse an existing ``out`` that ``--force`` must not delete: anything but a model folder
    (one with a model.json) or an empty folder.

    Why: ``--force`` is meant for exporting a model again; a mistyped ``--out`` naming a training
    run, a data folder or a home directory would otherwise be deleted whole.
    """
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise InputError("exists and is not a folder; --force replaces only a model folder", path=str(out))
    if not (out / CARD_FILE).is_file() and any(out.iterdir()):
        raise InputError(f"not a model folder (no {CARD_FILE}) and not empty; --force replaces only a model folder, "
                         "so choose another --out", path=str(out))


def recover_killed_export(out: Path) -> list[Path]:
    """Undo what an export of ``out`` killed by a signal (kill -9, out of memory) left beside it:
    its unfinished ``.<out>.tmp-<pid>-*`` folder (graphs of several hundred MB, one per killed run)
    and, when it died between the two renames of :func:`_replace_folder`, the previous model
    folder, which is moved back to ``out``. A folder of an export still running stays.
    Returns what was removed or restored."""
    # .<out>.tmp-<pid>-<random> (an unfinished export), .<out>.old-<pid> (or, before pids, .<out>.old:
    # the previous model between the two renames); a temporary folder without a pid is not ours
    leftover = re.compile(rf"\.{re.escape(out.name)}\.(?:tmp-(?P<tmp>\d+)(?:-.*)?|old(?:-(?P<old>\d+))?)")
    done: list[Path] = []
    for path in sorted(out.parent.glob(f".{glob.escape(out.name)}.*")):
        found = leftover.fullmatch(path.name)
        if found is None or not path.is_dir():
            continue
        pid = found["tmp"] or found["old"]
        if pid and writer_running(int(pid)):
            continue  # an export still running (an .old: between its two renames, a review)
        if found["tmp"] or out.exists():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.rename(out)
        done.append(path)
    if done:
        log.warning("removed or restored what a killed export left: %s", ", ".join(str(p) for p in done))
    return done


def _write_graphs(model: SpanTypeEncoder, folder: Path, *, keep_fp32: bool) -> None:
    """The int8 and fp16 graphs (and the fp32 one they are made from, when kept), each checked.
    The fp32 scratch graph is written inside ``folder`` (the export's own temporary folder), so
    that a killed export leaves it where :func:`recover_killed_export` finds it."""
    scratch = folder / ".fp32"
    scratch.mkdir()
    try:
        fp32 = (folder if keep_fp32 else scratch) / FP32_NAME
        log.info("exporting the fp32 graph")
        export_onnx(model, fp32)
        names = model.output_names()
        check_graph(fp32, names)
        log.info("quantising to int8 (per-channel)")
        quantize_int8(fp32, folder / INT8_NAME)
        check_graph(folder / INT8_NAME, names)
        check_int8_products(folder / INT8_NAME)
        log.info("converting to fp16")
        convert_fp16(fp32, folder / FP16_NAME)
        check_graph(folder / FP16_NAME, names)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_tokenizer(backbone: str | None, path: Path) -> None:
    """The backbone's tokenizer.json with truncation and padding off (nerindex plans windows)."""
    tok_json = json.loads(backbone_tokenizer_file(backbone).read_text(encoding="utf-8"))
    tok_json["truncation"] = None
    tok_json["padding"] = None
    path.write_text(json.dumps(tok_json, ensure_ascii=False), encoding="utf-8")


def _write_catalog(folder: Path, phrases: list[str], template: str) -> None:
    """catalog.txt and catalog.npy: the phrases embedded by the runtime's own runner on the CPU graph."""
    (folder / "catalog.txt").write_text("".join(p + "\n" for p in phrases), encoding="utf-8")
    session = open_session(folder / INT8_NAME, CPU)
    texts = [type_text(template, p) for p in phrases]
    vectors = embed_texts(session, load_tokenizer(folder / "tokenizer.json"), texts)
    np.save(folder / "catalog.npy", vectors.astype(np.float32))


_FOLDER_KEYS = ("dims", "graphs", "inputs", "outputs", "tokenizer", "heads", "heads_config", "catalog")


def _folder_values(model: SpanTypeEncoder) -> dict[str, Any]:
    """model.json values that describe the folder export writes (not the training run)."""
    return {
        "dims": model.dims,
        "graphs": {"cpu": INT8_NAME, "cuda": FP16_NAME},
        "inputs": list(INPUT_NAMES),
        "outputs": model.output_names(),
        "tokenizer": "tokenizer.json",
        "heads": "heads.safetensors",
        "heads_config": model.config.to_dict(),
        "catalog": {"phrases": "catalog.txt", "vectors": "catalog.npy"},
    }


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder into place, replacing ``out`` if it exists."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"  # named for this process: recover_killed_export
        if old.exists():
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


__all__ = ["ExportSource", "card_from_folder", "card_from_run", "read_source", "threshold_origin", "write_model_folder"]
