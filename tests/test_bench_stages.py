"""bench/bench_stages.py breaks encode's time into the staged graphs and the Python around them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "indexer" / "assets" / "default_model"


def test_the_stages_add_up_to_encode_and_a_baseline_is_compared():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_stages.py"), "--example-corpus", "--data", "/nonexistent/test.txt",
         "--passages", "3", "--rounds", "1", "--baseline-model", str(MODEL), "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert "example corpus" in report["data"] and report["passages"] == 3
    for stages in report["stages"].values():
        parts = sum(stages[k]["seconds"] for k in ("tokens", "scores", "rows", "vectors", "python"))
        assert parts == pytest.approx(stages["encode"]["seconds"], abs=2e-3)
        assert stages["tokens"]["seconds"] > 0 and stages["rows"]["seconds"] > 0  # the shipped span side has rows
    assert set(report["added_ms_per_passage"]) == {"tokens", "scores", "rows", "vectors", "python", "encode"}
    assert report["encode_ratio"] > 0


def test_zero_passages_are_refused_in_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_stages.py"), "--passages", "0"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "give 1 or more" in done.stderr and "Traceback" not in done.stderr
