"""Choosing the similarity threshold a model ships with.

``nerindex search --all`` returns every passage whose best span passes the threshold, so the
threshold decides what a user gets. It is chosen on development data of types the model was trained
on (never on the unseen-type test: that would tune on the test), by sweeping a grid and taking the
threshold with the best macro F1 of the returned passage sets, and stored in ``model.json``
(``similarity_threshold`` plus a ``calibration`` record saying how). ``model.json`` is not among
the checksummed ``files``, so a model's checksum and the stores built with it are unaffected.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ModelError
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


def write_calibration(model_dir: str | Path, threshold: float, record: Mapping[str, Any]) -> Path:
    """Store the chosen threshold and how it was chosen in the folder's ``model.json``."""
    path = Path(model_dir) / "model.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read model.json ({exc})") from exc
    # label_threshold equal to the similarity threshold means "tag a span with a catalog phrase
    # exactly when searching that phrase would match it": keep that promise when moving it
    follows = card.get("label_threshold") == card.get("similarity_threshold")
    card["similarity_threshold"] = round(float(threshold), 4)
    if follows:
        card["label_threshold"] = card["similarity_threshold"]
    card["calibration"] = {**record, "label_threshold_follows": follows}
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


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
    return {
        "passages": result["benchmark"]["passages"],
        "sources": result["benchmark"]["sources"],
        "thresholds": {m: v.get("threshold") for m, v in result["methods"].items()},
        "groups": groups,
    }


def write_evaluation(model_dir: str | Path, name: str, summary: Mapping[str, Any], *, checksum: str) -> Path:
    """Record a run's summary under ``evaluation[name]`` in ``model.json``, if it is this model's."""
    from ..model_folder import files_checksum

    path = Path(model_dir) / "model.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: cannot read model.json ({exc})") from exc
    if files_checksum(dict(card.get("files", {}))) != checksum:
        raise ModelError(f"{path}: these figures were measured with another model (checksum {checksum[:12]})")
    evaluation = card.get("evaluation") if isinstance(card.get("evaluation"), dict) else {}
    evaluation[name] = dict(summary)
    card["evaluation"] = evaluation
    path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def sweep_score_arrays(
    scores: Mapping[str, np.ndarray], relevance: Mapping[str, np.ndarray], grid: Sequence[float]
) -> list[SweepPoint]:
    """:func:`sweep_thresholds` over one fixed list of items scored for every query (training's
    dev passages): ``scores[q][i]`` is item i's score for q, ``relevance[q][i]`` whether it is relevant."""
    rankings = {q: [Ranked(str(i), float(s)) for i, s in enumerate(sc)] for q, sc in scores.items()}
    relevant = {q: {str(i) for i in np.flatnonzero(relevance[q])} for q in scores}
    return sweep_thresholds(rankings, relevant, grid)
