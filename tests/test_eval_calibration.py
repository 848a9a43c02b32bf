"""Threshold choice and storing it in model.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.errors import ModelError
from indexer.evaluation.calibration import (
    DEFAULT_GRID, Thresholds, calibrate, choose_threshold, write_calibration, write_evaluation,
)
from indexer.model_card import files_checksum
from indexer.evaluation.metrics import Ranked, SweepPoint


def test_grid_covers_zero_to_one():
    assert DEFAULT_GRID[0] == 0.0 and DEFAULT_GRID[-1] == 1.0 and len(DEFAULT_GRID) == 101


def test_choose_threshold_prefers_best_f1_then_higher_threshold():
    pts = [
        SweepPoint(0.1, 0.2, 1.0, 0.3, 0.2, 1.0),
        SweepPoint(0.4, 0.6, 0.6, 0.6, 0.6, 0.6),
        SweepPoint(0.5, 0.7, 0.5, 0.6, 0.7, 0.5),
        SweepPoint(0.9, 1.0, 0.1, 0.2, 1.0, 0.1),
    ]
    assert choose_threshold(pts).threshold == 0.5


def test_calibrate_finds_the_gap_between_relevant_and_irrelevant():
    # relevant passages score >= .6, irrelevant <= .4: any t in (.4, .6] gives F1 = 1;
    # ties go to the highest such threshold, 0.6
    rankings = {
        "q1": [Ranked("a", 0.9), Ranked("b", 0.6), Ranked("x", 0.4), Ranked("y", 0.1)],
        "q2": [Ranked("c", 0.7), Ranked("z", 0.3)],
    }
    relevant = {"q1": {"a", "b"}, "q2": {"c"}}
    chosen, curve = calibrate(rankings, relevant, grid=[0.0, 0.3, 0.5, 0.6, 0.65, 0.8])
    assert chosen.threshold == 0.6 and chosen.f1 == 1.0
    # at 0.65, q1 loses b: P 1, R .5, F1 2/3; q2 keeps c: F1 1 -> macro 5/6
    assert curve[4].f1 == pytest.approx(5 / 6)


def test_write_calibration_keeps_the_rest_of_model_json(tmp_path: Path):
    card = {"id": "m", "similarity_threshold": 0.5, "files": {"a.onnx": "abc"}, "training": {"types": ["x"]}}
    (tmp_path / "model.json").write_text(json.dumps(card), encoding="utf-8")
    write_calibration(tmp_path, Thresholds(0.4321, {"rule": "max macro F1", "types": ["x"]}), checksum=files_checksum(card["files"]))
    back = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert back["similarity_threshold"] == 0.4321
    assert back["calibration"] == {"rule": "max macro F1", "types": ["x"], "label_threshold_follows": False}
    assert back["files"] == card["files"] and back["training"] == card["training"]
    assert list(back)[:3] == ["id", "similarity_threshold", "files"]  # key order kept


def test_label_threshold_follows_when_it_was_equal(tmp_path: Path):
    card = {"similarity_threshold": 0.5, "label_threshold": 0.5}
    (tmp_path / "model.json").write_text(json.dumps(card), encoding="utf-8")
    write_calibration(tmp_path, Thresholds(0.3, {}), checksum=files_checksum({}))
    back = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert back["label_threshold"] == 0.3 and back["calibration"]["label_threshold_follows"] is True


def test_write_calibration_needs_a_model_folder(tmp_path: Path):
    with pytest.raises(ModelError):
        write_calibration(tmp_path, Thresholds(0.5, {}), checksum=files_checksum({}))


def test_calibrating_on_data_without_unseen_types_keeps_the_unseen_thresholds(tmp_path: Path):
    """They were deleted, so unseen phrases fell back to the seen threshold and the changed
    (stamped) unseen_label_threshold locked every store built with the card (audit2-model)."""
    unseen_record = {"types": ["u"], "methods": {"system": {"threshold": 0.27}}}
    card = {
        "similarity_threshold": 0.36, "label_threshold": 0.36,
        "unseen_similarity_threshold": 0.27, "unseen_label_threshold": 0.27,
        "calibration": {"rule": "old", "unseen": unseen_record},
    }  # fmt: skip
    (tmp_path / "model.json").write_text(json.dumps(card), encoding="utf-8")
    write_calibration(tmp_path, Thresholds(0.3, {"rule": "new"}), checksum=files_checksum({}))
    back = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert back["similarity_threshold"] == 0.3 and back["label_threshold"] == 0.3
    assert back["unseen_similarity_threshold"] == 0.27 and back["unseen_label_threshold"] == 0.27
    assert back["calibration"] == {"unseen": unseen_record, "rule": "new", "label_threshold_follows": True}
    # with an unseen threshold both move, and the new record replaces the old one
    write_calibration(tmp_path, Thresholds(0.3, {"rule": "newer"}, 0.2), checksum=files_checksum({}))
    back = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert back["unseen_similarity_threshold"] == 0.2 and back["unseen_label_threshold"] == 0.2
    assert back["calibration"] == {"rule": "newer", "label_threshold_follows": True}


def test_thresholds_are_written_only_into_the_card_of_the_model_calibrated(tmp_path: Path):
    """An audit: write_calibration had no checksum check, so a folder exported again while the
    evaluation ran got the other model's thresholds (and then the summary was refused: half written)."""
    card = {"similarity_threshold": 0.5, "files": {"a.onnx": "new"}, "evaluation": {}}
    (tmp_path / "model.json").write_text(json.dumps(card), encoding="utf-8")
    before = (tmp_path / "model.json").read_bytes()
    measured = files_checksum({"a.onnx": "old"})
    with pytest.raises(ModelError, match="model.json: these figures were measured with another model"):
        write_calibration(tmp_path, Thresholds(0.3, {"rule": "r"}), checksum=measured)
    with pytest.raises(ModelError, match="model.json: these figures were measured with another model"):
        write_evaluation(tmp_path, "dev", {"passages": 1}, checksum=measured, thresholds=Thresholds(0.3, {"rule": "r"}))
    assert (tmp_path / "model.json").read_bytes() == before
    # the model's own: thresholds and summary in one save
    write_evaluation(tmp_path, "dev", {"passages": 1}, checksum=files_checksum(card["files"]),
                     thresholds=Thresholds(0.3, {"rule": "r"}))
    back = json.loads((tmp_path / "model.json").read_text(encoding="utf-8"))
    assert back["similarity_threshold"] == 0.3 and back["calibration"]["rule"] == "r"
    assert back["evaluation"] == {"dev": {"passages": 1}}
