"""The model folder: parse ``model.json``, verify file checksums (no folder given: the shipped default).

See ``docs/model-folder.md`` for the contract. Loading checks everything once, up front, so a broken
or tampered folder fails with its path in the message instead of producing wrong vectors later.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .assets import default_model_dir
from .errors import ModelError
from .stores.base import ModelStamp

INPUT_NAMES = ("input_ids", "attention_mask", "span_starts", "span_ends")
OUTPUT_NAMES = ("span_scores", "span_vectors", "span_base_vectors", "passage_vectors", "type_vectors")
REQUIRED_KEYS = (
    "id",
    "version",
    "dims",
    "max_length",
    "max_span_width",
    "detection_threshold",
    "similarity_threshold",
    "graphs",
    "files",
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (model graphs are tens of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_checksum(files: dict[str, str]) -> str:
    """The model checksum: sha256 of the canonical JSON of the per-file checksums."""
    canonical = json.dumps(dict(sorted(files.items())), separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    """A parsed, verified model folder."""

    path: Path
    id: str
    version: str
    dims: int
    max_length: int
    max_span_width: int
    detection_threshold: float
    similarity_threshold: float
    label_threshold: float
    labels_per_span: int
    similarity: str
    type_template: str
    graphs: dict[str, str]
    files: dict[str, str]
    tokenizer: str = "tokenizer.json"
    catalog_phrases: str | None = "catalog.txt"
    catalog_vectors: str | None = "catalog.npy"
    passage_weight: float = 0.0  # λ of hybrid scoring (stores/base.py); 0 = spans only
    nested_spans: bool = False  # span decoding keeps spans nested in others (spans.resolve_overlaps)
    catalog_source: str | None = None  # "sha256:<hex>" of a catalog given instead of the model's (encoder sets it)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def checksum(self) -> str:
        return files_checksum(self.files)

    @property
    def stamp(self) -> ModelStamp:
        """What a store records so that vectors, spans and labels made two ways never mix."""
        return ModelStamp(
            id=self.id,
            version=self.version,
            dims=self.dims,
            checksum=self.checksum,
            similarity=self.similarity,
            detection_threshold=self.detection_threshold,
            span_decoding="nested" if self.nested_spans else "flat",
            max_length=self.max_length,
            max_span_width=self.max_span_width,
            label_threshold=self.label_threshold,
            labels_per_span=self.labels_per_span,
            catalog=self.catalog_source or ("model" if self.catalog_phrases else "none"),
        )

    @property
    def training_types(self) -> list[str]:
        return list(self.raw.get("training", {}).get("types", []))

    def file(self, name: str) -> Path:
        return self.path / name

    @classmethod
    def load(cls, path: str | Path | None = None, *, verify: bool = True) -> "ModelInfo":
        """Read ``model.json`` from a folder and (by default) verify every file's sha256."""
        folder = Path(path) if path is not None else default_model_dir()
        meta_path = folder / "model.json"
        if not meta_path.is_file():
            raise ModelError(f"{folder}: not a nerindex model folder (no model.json)")
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_path}: cannot read model.json: {exc}") from exc
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ModelError(f"{meta_path}: missing keys {', '.join(missing)}")
        files = dict(raw["files"])
        if verify:
            for name, expected in files.items():
                file_path = folder / name
                if not file_path.is_file():
                    raise ModelError(f"{file_path}: listed in model.json but missing")
                if sha256_file(file_path) != expected:
                    raise ModelError(f"{file_path}: checksum does not match model.json (corrupt or changed)")
        catalog = raw.get("catalog") or {}
        return cls(
            path=folder,
            id=str(raw["id"]),
            version=str(raw["version"]),
            dims=int(raw["dims"]),
            max_length=int(raw["max_length"]),
            max_span_width=int(raw["max_span_width"]),
            detection_threshold=float(raw["detection_threshold"]),
            similarity_threshold=float(raw["similarity_threshold"]),
            label_threshold=float(raw.get("label_threshold", raw["similarity_threshold"])),
            labels_per_span=int(raw.get("labels_per_span", 3)),
            similarity=str(raw.get("similarity", "cosine")),
            type_template=str(raw.get("type_template", "{}")),
            graphs=dict(raw["graphs"]),
            files=files,
            tokenizer=str(raw.get("tokenizer", "tokenizer.json")),
            catalog_phrases=catalog.get("phrases"),
            catalog_vectors=catalog.get("vectors"),
            passage_weight=float(raw.get("passage_weight", 0.0)),
            nested_spans=raw.get("span_decoding", "flat") == "nested",
            raw=raw,
        )
