"""The settings of one training run (``nerindex train``); stored in train.json and model.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation.heldout import MEDICAL_TYPES
from .model import DEFAULT_BACKBONE, HeadConfig

# MultiCoNER types that en-train90 nearly lacks and en-train10 is full of: held out of the
# adapter's first run to decide when to stop.
VALIDATION_TYPES = (
    "station", "car manufacturer", "aerospace manufacturer", "drink", "private corporation", "art work",
)  # fmt: skip


def backbone_reference(name: str) -> str:
    """How a run and a model folder record their backbone: a hub name as given, a folder made
    absolute, so that a later export from another directory finds the same one (a train audit: a
    relative ``--backbone mini`` was read from export's own directory, another backbone, silently)."""
    return str(Path(name).resolve()) if name != DEFAULT_BACKBONE and Path(name).exists() else name


@dataclass
class TrainConfig:
    """Everything that decides the trained model; stored in model.json."""

    data_dir: str = ""  # the labelled sets' folder: `nerindex train --data` or NERINDEX_DATA (no default path)
    backbone: str = DEFAULT_BACKBONE
    max_length: int = 256
    max_span_width: int = 8
    held_out_types: tuple[str, ...] = MEDICAL_TYPES
    validation_types: tuple[str, ...] = VALIDATION_TYPES
    heads: HeadConfig = field(default_factory=HeadConfig)
    seed: int = 0
    threads: int = 2
    encode_batch_tokens: int = 8192
    # adapter
    tau: float = 0.05
    adapter_lr: float = 1e-4
    adapter_batch: int = 512
    adapter_max_steps: int = 300
    adapter_eval_every: int = 10
    adapter_patience: int = 10  # evaluations without improvement
    # entity head
    head_lr: float = 1e-3
    head_batch: int = 32
    head_max_epochs: float = 3.0
    head_eval_every: int = 300  # steps
    head_patience: int = 3
    detection_beta: float = 1.0  # F-beta of the entity head's early stopping (flat decoding)
    # the shipped detection threshold: F-beta on dev spans with the decoding search uses. Recall
    # weighs more (β 2): a mention the detector drops is lost to every query, while a spurious
    # span is filtered out by type similarity.
    threshold_beta: float = 2.0
    span_decoding: str = "nested"  # "flat" or "nested" (spans.resolve_overlaps), stored in model.json
    limit: int | None = None  # use only the first N sentences of each split (smoke tests)
    cache_dir: str | None = None  # keep backbone token states here between runs (development)
    # silver data (docs/silver.md, silver_train.py): `nerindex silver` files of the train/dev splits
    silver: str | None = None
    silver_dev: str | None = None
    silver_hierarchy: str | None = None  # default: the train file's *.hierarchy.json
    silver_share: float = 0.5  # share of silver spans in an adapter batch
    silver_adapter_max_steps: int = 600
    silver_mask: bool = True  # ablation: False = no hierarchy masking (related types are negatives)
    silver_detection: bool = True  # ablation: False = the entity head learns from gold spans only
    silver_guide: bool = False  # GISTEmbed false-negative filter with the frozen backbone as guide
    # "all": every non-related type of the vocabulary is a negative; "mined": only the current
    # model's ranks silver_mined_ranks (1-based, inclusive) plus silver_random_negatives at random
    silver_negatives: str = "all"
    silver_mined_ranks: tuple[int, int] = (5, 50)
    silver_random_negatives: int = 256
    # "balanced": silver spans balanced over their nearest type; "clustered": NGAME-style batches of
    # silver spans drawn a cluster at a time (k-means on the frozen span vectors)
    silver_batches: str = "balanced"
    silver_clusters: int = 512
    silver_cluster_take: int = 32  # spans drawn from one cluster

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = self.heads.to_dict()
        d["held_out_types"] = list(self.held_out_types)
        d["validation_types"] = list(self.validation_types)
        return d
