"""`nerindex train` and `nerindex export`: the click commands of the ``[train]`` extra.

``train`` writes a run folder (``heads.safetensors`` + ``train.json`` with thresholds and figures);
``export`` turns a run folder into a model folder (docs/model-folder.md). Progress goes to stderr.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from ..errors import InputError, ModelError
from .options import CountRange, NumberRange


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # onnxruntime's quantiser logs every tensor it skips at INFO on the root logger
    logging.getLogger().setLevel(logging.WARNING)
    if verbose:
        logging.getLogger("indexer").setLevel(logging.INFO)


@click.command("train")
@click.option("--data", "data_dir", required=True, envvar="NERINDEX_DATA", show_envvar=True,
              type=click.Path(file_okay=False), help="Folder of the labelled sets (one folder per set: multiconer2_en/, wnut17/, btc/, wikigold/, crossner/<domain>/, their CoNLL files named as in EVALUATION.md's commands).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder to write (heads.safetensors, train.json).")
@click.option("--backbone", default=None, help="Backbone path or hub name (default all-MiniLM-L6-v2).")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed of batches and initial weights.")
@click.option("--threads", default=2, show_default=True, type=CountRange(min=1), help="torch CPU threads.")
@click.option("--adapter-max-steps", default=None, type=CountRange(min=1),
              help="Upper bound on adapter steps (default 300; 600 with --silver).")
@click.option("--head-epochs", default=None, type=NumberRange(min=0, min_open=True),
              help="Upper bound on entity-head epochs (default 3).")
@click.option("--limit", default=None, type=CountRange(min=1), help="Only the first N sentences of each split (smoke test).")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Keep the backbone's token states here between runs.")
@click.option("--silver", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Silver file of the train split (`nerindex silver --out`): WordNet spans and types.")
@click.option("--silver-dev", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Silver file of the dev split (`nerindex silver --split dev`), for the detection threshold.")
@click.option("--silver-share", default=None, type=NumberRange(0, 1, min_open=True, max_open=True),
              help="Share of silver spans in an adapter batch (0.5).")
@click.option("--silver-ablation", "silver_ablation", multiple=True, type=click.Choice(["no-mask", "no-detection"]),
              help="Switch one silver ingredient off: hierarchy masking, or silver spans for the entity head.")
@click.option("--silver-guide", is_flag=True,
              help="Mask likely false negatives (types the frozen backbone ranks above the span's best positive).")
@click.option("--silver-negatives", type=click.Choice(["all", "mined"]), default=None,
              help="Negative types: the whole vocabulary (all, the default), or the current model's ranks 5-50 plus "
                   "256 at random.")
@click.option("--silver-batches", type=click.Choice(["balanced", "clustered"]), default=None,
              help="Silver spans balanced over their nearest type (balanced, the default), or drawn a k-means "
                   "cluster at a time (NGAME).")
@click.option("--span-decoding", type=click.Choice(["nested", "flat"]), default="nested", show_default=True,
              help="Overlapping detected spans: keep spans nested in others (only crossings refused), or none.")
@click.option("--force", is_flag=True, help="Replace a finished run in --out (one with train.json); a folder "
              "holding other files is refused.")
@click.option("--quiet", is_flag=True, help="Only warnings and the summary.")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object on stdout (else on stderr).")
def train_command(data_dir, out_dir, backbone, seed, threads, adapter_max_steps, head_epochs, limit,
                  cache_dir, silver, silver_dev, silver_share, silver_ablation, silver_guide,
                  silver_negatives, silver_batches, span_decoding, force, quiet, as_json) -> None:  # fmt: skip
    """Train the span adapter and entity head (backbone frozen) on labelled NER data."""
    from ..training.model import DEFAULT_BACKBONE
    from ..training.train import run_training
    from ..training.train_config import TrainConfig, backbone_reference

    _logging(not quiet)
    silver_only = {"--silver-dev": silver_dev, "--silver-share": silver_share, "--silver-ablation": silver_ablation,
                   "--silver-guide": silver_guide, "--silver-negatives": silver_negatives,
                   "--silver-batches": silver_batches}
    given = [name for name, value in silver_only.items() if value]
    if given and not silver:  # an audit: ignored, and recorded in train.json as if used
        raise click.UsageError(f"{', '.join(given)} shape(s) training with silver data: give --silver too")
    if silver_dev and "no-detection" in silver_ablation:
        raise click.UsageError("--silver-dev is for the entity head's silver spans, which --silver-ablation "
                               "no-detection leaves out: give one of them")
    if not Path(data_dir).is_dir():
        raise InputError("no such data folder", path=data_dir)
    if silver:  # an audit: a missing or mismatched hierarchy was found only after the corpus was read
        from ..training.silver.hierarchy import TypeHierarchy, hierarchy_path

        hierarchy = hierarchy_path(silver)
        if not hierarchy.is_file():
            raise InputError(f"no {hierarchy.name} beside it (nerindex silver writes both files)", path=silver)
        TypeHierarchy.load(hierarchy, silver=silver)
    cfg = TrainConfig(data_dir=str(data_dir), backbone=backbone_reference(backbone or DEFAULT_BACKBONE), seed=seed,
                      threads=threads, limit=limit, cache_dir=cache_dir, silver=silver,
                      silver_dev=silver_dev)  # fmt: skip
    if silver_share is not None:
        cfg.silver_share = silver_share
    cfg.silver_mask = "no-mask" not in silver_ablation
    cfg.silver_detection = "no-detection" not in silver_ablation
    cfg.silver_guide = silver_guide
    cfg.silver_negatives = silver_negatives or "all"
    cfg.silver_batches = silver_batches or "balanced"
    cfg.span_decoding = span_decoding
    if adapter_max_steps is not None:
        cfg.adapter_max_steps = adapter_max_steps
        cfg.silver_adapter_max_steps = adapter_max_steps
    if head_epochs is not None:
        cfg.head_max_epochs = head_epochs
    record = run_training(cfg, out_dir, force=force)
    fig = record["training"]["figures"]
    summary = {
        "out": str(out_dir),
        "detection_threshold": record["detection_threshold"],
        "similarity_threshold": record["similarity_threshold"],
        "adapter_steps": fig["adapter"]["steps_trained"],
        # NaN (no validation type in a small run) as null, as train.json writes it: strict JSON parsers refuse NaN
        "val_span_r_precision": [None if v != v else v for v in (fig["adapter"]["val_span_r_precision_before"],
                                                                 fig["adapter"]["val_span_r_precision_after"])],
        "dev_detection": fig["entity_head"]["dev"],
        "seconds": fig["seconds"]["total"],
    }  # fmt: skip
    _summary(summary, as_json)


def _summary(summary: dict, as_json: bool) -> None:
    """A command's summary: one JSON line on stdout for scripts (``--json``), else indented on
    stderr beside the progress."""
    click.echo(json.dumps(summary) if as_json else json.dumps(summary, indent=2), err=not as_json)


@click.command("export")
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model folder to write (e.g. onnx_models/mine).")
@click.option("--force", is_flag=True, help="Replace an existing model folder (one with a model.json, or an empty folder; anything else is refused).")
@click.option("--keep-fp32", is_flag=True, help="Also ship encoder.fp32.onnx.")
@click.option("--backbone", default=None, help="Where to load the backbone from (overrides the run's).")
@click.option("--catalog", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Type catalog (one phrase a line); default: the model folder's own when RUN_DIR is one, "
                   "else the packaged catalog.")
@click.option("--id", "model_id", default=None,
              help="Model id in model.json (default: nerindex-custom; a model folder's own when RUN_DIR is one).")
@click.option("--version", "model_version", default=None,
              help="Model version in model.json (default: 0.0.0; a model folder's own when RUN_DIR is one).")
@click.option("--untrained", is_flag=True, help="Export the untrained model (no RUN_DIR needed).")
@click.option("--span-side", default=None, metavar="PREFIX",
              help="Span vectors from a span side trained apart: its own copy of the backbone's top layers "
                   "and adapter, saved as PREFIX-<i>.safetensors (docs/eval/finetune_backbone.py --save).")
@click.option("--candidate-head", default=None, metavar="RUN_OR_MODEL_FOLDER",
              type=click.Path(exists=True, file_okay=False),
              help="A second entity head, taken from another run (e.g. `nerindex train --silver`), whose "
                   "spans rank passages but are never marked; its detection threshold becomes "
                   "model.json's candidate_threshold.")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON object on stdout (else on stderr).")
def export_command(run_dir, out_dir, force, keep_fp32, backbone, catalog, model_id, model_version,
                   untrained, span_side, candidate_head, as_json) -> None:  # fmt: skip
    """Export a training run to an ONNX model folder (int8 CPU and fp16 CUDA graphs).

    RUN_DIR is a `nerindex train --out` folder, or a model folder to export again (its evaluation
    section is dropped: it describes its own graphs; its thresholds and catalog are kept, and the
    calibration record names that folder as the one they were chosen on: calibrate the new one again)."""
    from ..training.export import backbone_section, check_out, read_source, threshold_origin, write_model_folder
    from ..training.model import HeadConfig, SpanTypeEncoder, load_backbone

    _logging(True)
    if untrained and run_dir is not None:  # an audit: RUN_DIR was ignored, an untrained model written
        raise click.UsageError("--untrained exports no run: give RUN_DIR or --untrained, not both")
    check_out(Path(out_dir).resolve(), force=force)
    if untrained:
        card: dict = {"training": {"note": "untrained: zero-initialised adapter, random entity head"}}
        name, heads_cfg = backbone, {}
    else:
        if run_dir is None:
            raise click.UsageError("give RUN_DIR (a `nerindex train --out` folder) or --untrained")
        source = read_source(Path(run_dir))
        card, name, heads_cfg = source.card, source.backbone, source.heads_config
        catalog = catalog or source.catalog  # a model folder keeps its own (an audit: the packaged one replaced it)
    if backbone:  # the one the graphs are built from (the train audit: MiniLM was recorded, and exporting
        card["backbone"] = backbone_section(backbone)  # the folder again built MiniLM's graphs)
    if model_id:
        card["id"] = model_id
    if model_version:
        card["version"] = model_version
    import torch

    torch.manual_seed(0)
    model = SpanTypeEncoder(load_backbone(backbone or name), HeadConfig.from_dict(heads_cfg, source=run_dir or "--untrained"))
    if not untrained:
        _load_heads(model, source.heads)
    model.eval()
    if span_side:
        from ..training.span_side import side_record, with_span_side

        model = with_span_side(model, span_side)
        card["training"] = {**card.get("training", {}), "span_side": side_record(span_side)}
    if candidate_head:
        from ..training.candidate import head_identity, read_candidate_head, with_candidate_head

        weights, threshold, record = read_candidate_head(candidate_head, model=head_identity(backbone or name, card, heads_cfg))
        model = with_candidate_head(model, weights)
        card["candidate_threshold"] = threshold
        card["training"] = {**card.get("training", {}), "candidate_head": record}
    meta = write_model_folder(
        model, out_dir, card=card, backbone=backbone or name, catalog=catalog, force=force,
        keep_fp32=keep_fp32,
    )  # fmt: skip
    sizes = {f: (Path(out_dir) / f).stat().st_size for f in meta["files"]}
    thresholds = "untrained: not chosen on any data" if untrained else threshold_origin(
        card, out_dir, from_folder=(Path(run_dir) / "model.json").is_file(), graphs_changed=bool(span_side or candidate_head))
    _summary({"out": str(out_dir), "files": sizes, "thresholds": thresholds}, as_json)


def _load_heads(model: Any, heads: Path) -> None:
    """The trained heads into ``model``, or a ModelError naming the file: one safetensors cannot read
    (its own traceback before, an audit), or one that does not fit the heads_config the model was
    built from (torch's traceback, exit 1: a model audit)."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(heads))
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors: a SafetensorError traceback (an audit)
        raise ModelError(f"{heads}: cannot read the trained heads ({exc}): train again") from exc
    try:
        model.load_head_state_dict(state)
    except (ValueError, RuntimeError) as exc:  # the first line of torch's message
        raise ModelError(f"{heads}: does not fit the heads_config it was exported with "
                         f"({str(exc).splitlines()[0][:200]}): train again") from exc
