"""Choosing the similarity thresholds a model ships with.

``nerindex search --all`` returns every passage whose best span passes the threshold, so the
threshold decides what a user gets. It is chosen on development data (never on the unseen-type
test: that would tune on the test), by sweeping a grid and taking the threshold with the best macro
F1 of the returned passage sets, and stored in ``model.json`` (``similarity_threshold`` plus a
``calibration`` record saying how): on the types the model was trained on, and, when the data has
types it was not trained on (the validation split's held-out types), a second threshold on those
(``unseen_similarity_threshold``), used for every phrase outside ``training.types``; data without
unseen types leaves the card's unseen thresholds as they were. ``model.json`` is not among the
checksummed ``files``, so the model checksum is unchanged and stores built with the card still
search with it; but when ``label_threshold`` follows the similarity threshold (the shipped card)
a new ``label_threshold`` / ``unseen_label_threshold`` is a stored setting, so those stores refuse
further indexing with the recalibrated card (``stores.base.check_stamp``): index into a new store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ModelError
from ..model_card import CARD_FILE, ModelCard
from .metrics import Ranked, SweepPoint, sweep_thresholds

DEFAULT_GRID: tuple[float, ...] = tuple(round(float(x), 2) for x in np.arange(0.0, 1.0001, 0.01))


def choose_threshold(points: Sequence[SweepPoint]) -> SweepPoint:
    """The sweep point with the best macro F1; among equals, the highest threshold (fewer hits)."""
    if not points:
        raise ValueError("empty sweep")
    return max(points, key=lambda p: (round(p.f1, 9), p.threshold))


def calibrate(
    rankings: Mapping[str, Sequence[Ranked]],
    relevant: Mapping[str, set[str]],
    *,
    grid: Sequence[float] = DEFAULT_GRID,
) -> tuple[SweepPoint, list[SweepPoint]]:
    """(chosen point, the whole curve) for one method's rankings."""
    points = sweep_thresholds(rankings, relevant, grid)
    return choose_threshold(points), points


def point_dict(p: SweepPoint) -> dict[str, Any]:
    d = asdict(p)
    d.pop("extra", None)
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


@dataclass(frozen=True)
class Thresholds:
    """What a calibration stores: the seen threshold, the ``calibration`` record, and the unseen
    threshold (None: the card's unseen thresholds are kept, :meth:`ModelCard.calibrated`)."""

    threshold: float
    record: Mapping[str, Any]
    unseen_threshold: float | None = None

    def applied(self, card: ModelCard) -> ModelCard:
        return card.calibrated(self.threshold, self.record, unseen_threshold=self.unseen_threshold)


def model_card_of(model_dir: str | Path, checksum: str) -> ModelCard:
    """The folder's card, when it is the card of the model with ``checksum`` (the one measured);
    :class:`ModelError` naming model.json otherwise: a folder exported again since (or another
    model's result) must not get figures or thresholds measured with other graphs."""
    card = ModelCard.load(model_dir)
    if card.checksum != checksum:
        raise ModelError(
            f"{Path(model_dir) / CARD_FILE}: these figures were measured with another model (checksum {checksum[:12]})"
        )
    return card


def write_calibration(model_dir: str | Path, thresholds: Thresholds, *, checksum: str) -> Path:
    """Store the chosen threshold(s) and how they were chosen in the folder's ``model.json``, if it
    is the card of the model calibrated (an audit: it was written into a folder replaced meanwhile)."""
    return thresholds.applied(model_card_of(model_dir, checksum)).save(model_dir)


def unseen_applied(calibration: Mapping[str, Any]) -> bool:
    """Whether a calibration chose (and applied) thresholds for the unseen types: it has some, and
    the system's curve there is not flat at F1 0 (then the model's unseen thresholds stand)."""
    unseen = calibration.get("unseen")
    return bool(unseen) and unseen.get("applied", True)


def calibration_record(result: Mapping[str, Any], *, date: str) -> dict[str, Any]:
    """The ``calibration`` section of model.json for a calibrating run: the rule, the data, the
    types, the model calibrated and each method's chosen point."""
    calibration = result["calibration"]
    return {
        "rule": "threshold with the best macro F1 (over types) of the returned passage sets; "
        "grid 0.00-1.00 step 0.01; ties to the higher threshold",
        "data": result["benchmark"]["sources"],
        "types": calibration["types"],
        "date": date,
        "model_checksum": result["model"]["checksum"],
        "methods": _chosen(calibration),
        **({"unseen": {"types": calibration["unseen"]["types"], "methods": _chosen(calibration["unseen"])}}
           if unseen_applied(calibration) else {}),
    }  # fmt: skip


def _chosen(calibration: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: {k: v for k, v in m["chosen"].items() if k in ("threshold", "precision", "recall", "f1")}
        for key, m in calibration["methods"].items()
    }


def evaluation_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The few figures of one run worth keeping on the model card: macro R-Precision per method and
    type group, with the number of types and their Familiarity."""
    fam = (result.get("familiarity") or {}).get("by_group", {})
    groups: dict[str, Any] = {}
    for g in ("all", "seen", "unseen", "coarse"):
        first = next(iter(result["summary"].values()), {})
        n = first.get(g, {}).get("n", 0)
        if not n:
            continue
        groups[g] = {
            "types": n,
            "familiarity": fam.get(g),
            "r_precision": {m: s[g]["r_precision"] for m, s in result["summary"].items()},
        }
    run = result.get("run", {})
    return {
        "passages": result["benchmark"]["passages"],
        "sources": result["benchmark"]["sources"],
        "thresholds": {m: v.get("threshold") for m, v in result["methods"].items()},
        # phrases outside training.types are searched with these (a second threshold and λ)
        "thresholds_unseen": {m: v.get("threshold_unseen") for m, v in result["methods"].items()},
        "passage_weight": run.get("passage_weight"),
        "unseen_passage_weight": run.get("unseen_passage_weight"),
        "groups": groups,
    }


def write_evaluation(model_dir: str | Path, name: str, summary: Mapping[str, Any], *, checksum: str,
                     thresholds: Thresholds | None = None) -> Path:  # fmt: skip
    """Record a run's summary under ``evaluation[name]`` in ``model.json`` (with ``thresholds``, the
    calibration too), if it is this model's: one check, one atomic save. An audit: calibration and
    summary were two saves, the first unchecked, so a folder exported again meanwhile got the other
    model's thresholds and the run was half written when the second refused."""
    card = model_card_of(model_dir, checksum)
    if thresholds is not None:
        card = thresholds.applied(card)
    return card.with_evaluation(name, summary).save(model_dir)


def sweep_score_arrays(
    scores: Mapping[str, np.ndarray], relevance: Mapping[str, np.ndarray], grid: Sequence[float]
) -> list[SweepPoint]:
    """:func:`sweep_thresholds` over one fixed list of items scored for every query (training's
    dev passages): ``scores[q][i]`` is item i's score for q, ``relevance[q][i]`` whether it is relevant."""
    rankings = {q: [Ranked(str(i), float(s)) for i, s in enumerate(sc)] for q, sc in scores.items()}
    relevant = {q: {str(i) for i in np.flatnonzero(relevance[q])} for q in scores}
    return sweep_thresholds(rankings, relevant, grid)
