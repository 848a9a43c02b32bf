"""``model.json``, the model card: the one place that reads and writes it (docs/model-folder.md).

A card has a header the runtime needs (thresholds, dims, graphs, files: parsed by
:class:`indexer.model_folder.ModelInfo`) and sections written at different times: ``training``
and ``evaluation`` by ``nerindex export``, ``calibration`` and ``evaluation[name]`` by ``nerindex
eval --write-model``. :class:`ModelCard` keeps the JSON object exactly as read (key order, number
spelling) and changes only what a writer sets, so rewriting a card leaves every other byte alone.

Formatting, kept exactly as the writers have always made it: two-space indent and a final newline;
a card built by export has its keys in the contract's order (unknown keys after them) and escapes
non-ASCII characters (``\\u03bb``), while a card read and updated in place keeps its key order
(new sections go last) and writes non-ASCII characters as UTF-8.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .atomic_files import write_bytes
from .errors import ModelError
from .text import strict_json

CARD_FILE = "model.json"

# model.json values export writes unless the training run (or the user) gives others
EXPORT_DEFAULTS: dict[str, Any] = {
    "format": 1,
    # not the shipped model's id: an exported run was "nerindex-minilm-l6 0.1.0", read as an old
    # release of it (an audit); --id and --version name it
    "id": "nerindex-custom",
    "version": "0.0.0",
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

# the order of the contract's keys in a card export writes
KEY_ORDER = (
    "format", "id", "version", "backbone", "dims", "similarity", "max_length", "max_span_width",
    "detection_threshold", "candidate_threshold", "span_decoding", "similarity_threshold", "unseen_similarity_threshold",
    "label_threshold",
    "unseen_label_threshold", "labels_per_span",
    "passage_weight", "unseen_passage_weight", "type_template", "unseen_type_template", "graphs", "inputs", "outputs", "tokenizer", "heads", "heads_config", "catalog",
    "files", "training", "evaluation",
)  # fmt: skip

# Every top-level key of model.json that nerindex reads or writes (every card since 0.1.0 holds only these)
CARD_KEYS = frozenset((*KEY_ORDER, "calibration"))


def files_checksum(files: Mapping[str, str]) -> str:
    """The model checksum: sha256 of the canonical JSON of the per-file checksums."""
    canonical = json.dumps(dict(sorted(files.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Backbone:
    """The ``backbone`` section: the encoder the heads were trained on."""

    name: str | None
    license: str | None


@dataclass(frozen=True)
class TrainingRecord:
    """The ``training`` section: what the model was trained on and what training measured.

    ``data`` entries are paths, ``"dataset:file"`` strings or ``{"path": ...}`` objects;
    ``type_counts`` (mentions per seen type) is present only when training recorded it.
    """

    types: tuple[str, ...] = ()
    held_out_types: tuple[str, ...] = ()
    data: tuple[Any, ...] = ()
    type_counts: dict[str, int] | None = None
    figures: dict[str, Any] | None = None


@dataclass(frozen=True)
class Calibration:
    """The ``calibration`` section: how ``similarity_threshold`` was chosen (``nerindex eval
    --calibrate``), with the threshold chosen the same way for each other method."""

    method_thresholds: dict[str, float]
    label_threshold_follows: bool
    unseen_method_thresholds: dict[str, float] = field(default_factory=dict)  # chosen on unseen types
    exported_from: str | None = None  # "<id> <version>": chosen on the graphs of the folder this one was exported from
    unseen_exported_from: str | None = None  # the same, for unseen thresholds kept by a later calibration


def _exported_from(record: Any) -> str | None:
    """``calibration.exported_from`` as "<id> <version>" (None: calibrated on this folder's graphs)."""
    if not isinstance(record, dict):
        return None
    return f"{record.get('id', '?')} {record.get('version', '?')}"


class ModelCard:
    """The JSON object of a ``model.json``, with typed views of its sections.

    Build one with :meth:`load` (a folder's card) or :meth:`exported` (a new card); the update
    methods return a new card; :meth:`save` writes it atomically.
    """

    def __init__(self, values: Mapping[str, Any], *, escape_non_ascii: bool = False) -> None:
        self._values = dict(values)
        self._escape_non_ascii = escape_non_ascii

    # ------------------------------------------------------------------ reading and writing

    @classmethod
    def load(cls, folder: str | Path) -> "ModelCard":
        """The card of a model folder; :class:`ModelError` naming the path when there is none."""
        folder = Path(folder)
        path = folder / CARD_FILE
        if not path.is_file():
            raise ModelError(f"{folder}: not a nerindex model folder (no model.json)")
        try:
            values = strict_json(path.read_text(encoding="utf-8"), constants=True)  # NaN: model_folder says where
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: cannot read model.json: {exc}") from exc
        if not isinstance(values, dict):
            raise ModelError(f"{path}: cannot read model.json: not a JSON object")
        return cls(values)

    @classmethod
    def exported(cls, values: Mapping[str, Any]) -> "ModelCard":
        """A new card for export: :data:`EXPORT_DEFAULTS` overridden by ``values``, empty
        ``training`` and ``evaluation`` sections unless given, keys in the contract's order."""
        merged = {**EXPORT_DEFAULTS, **values}
        merged.setdefault("training", {})
        merged.setdefault("evaluation", {})
        return cls(_contract_order(merged), escape_non_ascii=True)

    def dumps(self) -> str:
        """The file's text (see the module docstring for why two spellings of non-ASCII exist)."""
        text = json.dumps(self._values, indent=2, ensure_ascii=self._escape_non_ascii, allow_nan=False)
        return text + "\n"

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/model.json`` atomically (temporary file, fsync, rename): a reader sees the
        old card or the new one, never half of one. The file keeps its permissions (0644 if new)."""
        path = Path(folder) / CARD_FILE
        data = self.dumps().encode("utf-8")
        mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
        return write_bytes(path, data, mode=mode)

    def to_dict(self) -> dict[str, Any]:
        """A copy of the JSON object, in file order."""
        return json.loads(json.dumps(self._values))

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def get(self, key: str, default: Any = None) -> Any:
        """One top-level value as stored (the header keys :class:`ModelInfo` parses)."""
        return self._values.get(key, default)

    def keys(self) -> list[str]:
        """The top-level keys, in file order."""
        return list(self._values)

    # ------------------------------------------------------------------ typed sections

    @property
    def files(self) -> dict[str, str]:
        return dict(self._values.get("files") or {})

    @property
    def checksum(self) -> str:
        return files_checksum(self.files)

    @property
    def type_template(self) -> str:
        return str(self._values.get("type_template", "{}"))

    @property
    def backbone(self) -> Backbone:
        section = self._values.get("backbone") or {}
        return Backbone(section.get("name"), section.get("license"))

    @property
    def heads_file(self) -> str:
        return str(self._values.get("heads", "heads.safetensors"))

    @property
    def heads_config(self) -> dict[str, Any]:
        return dict(self._values.get("heads_config") or {})

    @property
    def training(self) -> TrainingRecord:
        rec = self._values.get("training") or {}
        counts = rec.get("type_counts")
        return TrainingRecord(
            types=tuple(str(t) for t in rec.get("types", ())),
            held_out_types=tuple(str(t) for t in rec.get("held_out_types", ())),
            data=tuple(rec.get("data", ())),
            type_counts={str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else None,
            figures=dict(rec.get("figures") or {}),
        )

    @property
    def calibration(self) -> Calibration | None:
        """None when the threshold was never calibrated."""
        section = self._values.get("calibration")
        if not section:
            return None
        methods = section.get("methods", {})
        unseen = (section.get("unseen") or {}).get("methods", {})
        return Calibration(
            method_thresholds={k: float(m["threshold"]) for k, m in methods.items() if "threshold" in m},
            label_threshold_follows=bool(section.get("label_threshold_follows", False)),
            unseen_method_thresholds={k: float(m["threshold"]) for k, m in unseen.items() if "threshold" in m},
            exported_from=_exported_from(section.get("exported_from")),
            unseen_exported_from=_exported_from((section.get("unseen") or {}).get("exported_from")),
        )

    @property
    def evaluation(self) -> dict[str, Any]:
        """Summaries of evaluation runs, by benchmark name."""
        section = self._values.get("evaluation")
        return dict(section) if isinstance(section, dict) else {}

    # ------------------------------------------------------------------ updates (new cards)

    def with_files(self, files: Mapping[str, str]) -> "ModelCard":
        """The card with the per-file checksums of its folder (export: the last thing known)."""
        return ModelCard(_contract_order({**self._values, "files": dict(files)}), escape_non_ascii=self._escape_non_ascii)

    def calibrated(
        self, threshold: float, record: Mapping[str, Any], *, unseen_threshold: float | None = None
    ) -> "ModelCard":
        """The card with a calibrated ``similarity_threshold`` and the ``calibration`` record;
        with ``unseen_threshold``, also the threshold of phrases the model was not trained on
        (``unseen_similarity_threshold``). Without one (data with no unseen types) the card's
        unseen thresholds, and the record of how they were chosen, are kept: data that cannot
        measure them is no reason to drop them (every unseen phrase would fall back to the seen
        threshold, and a changed ``unseen_label_threshold`` locks the stores built with the card).

        ``label_threshold`` equal to the similarity threshold means "tag a span with a catalog
        phrase exactly when searching that phrase would match it": moving one moves the other,
        and ``unseen_label_threshold`` then follows ``unseen_similarity_threshold`` the same way.
        """
        values = dict(self._values)
        follows = values.get("label_threshold") == values.get("similarity_threshold")
        values["similarity_threshold"] = round(float(threshold), 4)
        if unseen_threshold is not None:
            values["unseen_similarity_threshold"] = round(float(unseen_threshold), 4)
        if follows:
            values["label_threshold"] = values["similarity_threshold"]
            if unseen_threshold is not None:
                values["unseen_label_threshold"] = values["unseen_similarity_threshold"]
        previous = values.get("calibration")
        kept = {"unseen": previous["unseen"]} if unseen_threshold is None and isinstance(previous, dict) and "unseen" in previous else {}
        if kept and previous.get("exported_from"):  # they were chosen on another folder's graphs (a review)
            kept["unseen"] = {"exported_from": previous["exported_from"], **kept["unseen"]}  # its own first
        values["calibration"] = {**kept, **record, "label_threshold_follows": follows}
        return ModelCard(values, escape_non_ascii=self._escape_non_ascii)

    def with_passage_weights(self, trained: float, unseen: float | None) -> "ModelCard":
        """The card with λ of hybrid scoring for trained-on phrases (``passage_weight``) and, when
        given, for the others (``unseen_passage_weight``; None removes it: one λ for every phrase)."""
        values = dict(self._values)
        values["passage_weight"] = float(trained)
        values.pop("unseen_passage_weight", None)
        if unseen is not None:
            values["unseen_passage_weight"] = float(unseen)
        return ModelCard(values, escape_non_ascii=self._escape_non_ascii)

    def with_unseen_type_template(self, template: str | None) -> "ModelCard":
        """The card with the template of phrases the model was not trained on
        (``unseen_type_template``; None removes it: ``type_template`` for every phrase)."""
        values = dict(self._values)
        values.pop("unseen_type_template", None)
        if template is not None:
            values["unseen_type_template"] = template
        return ModelCard(values, escape_non_ascii=self._escape_non_ascii)

    def with_evaluation(self, name: str, summary: Mapping[str, Any]) -> "ModelCard":
        """The card with a run's summary under ``evaluation[name]`` (replacing one of that name)."""
        values = dict(self._values)
        values["evaluation"] = {**self.evaluation, name: dict(summary)}
        return ModelCard(values, escape_non_ascii=self._escape_non_ascii)


def _contract_order(values: Mapping[str, Any]) -> dict[str, Any]:
    """The contract's keys in :data:`KEY_ORDER`, unknown keys after them in their own order."""
    out = {k: values[k] for k in KEY_ORDER if k in values}
    out.update({k: v for k, v in values.items() if k not in out})
    return out
