"""bench/bench_indexing.py says which data it used, refuses missing data, and marks loaded runs."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_indexing", ROOT / "bench" / "bench_indexing.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_indexing"] = module  # dataclasses look their module up there
    sys.path.insert(0, str(ROOT / "bench"))  # its sibling bench_args, as `python bench/...` finds it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return module


def test_missing_data_is_refused_in_one_line(bench, tmp_path):
    missing = tmp_path / "test.txt"
    with pytest.raises(SystemExit) as exc:
        bench.load_sentences(missing, example_corpus=False)
    message = str(exc.value)
    assert str(missing) in message and "--example-corpus" in message and "\n" not in message


def test_the_example_corpus_only_when_asked_and_named(bench, tmp_path):
    sentences, source = bench.load_sentences(tmp_path / "test.txt", example_corpus=True)
    assert sentences and "example corpus" in source and "corpus.jsonl" in source


def test_a_run_is_loaded_when_others_use_the_cores(bench, monkeypatch):
    limits = argparse.Namespace(others_max=0.25, load_max=1.5, threads=2)
    busy = iter([100.0, 110.0])  # 10 CPU seconds of everyone, this process used ~none
    monkeypatch.setattr(bench, "busy_seconds", lambda: next(busy))
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    run = bench.timed("encode", 0, lambda: None, 10, limits)
    assert run.loaded and run.others_cpu_s > 9
    busy = iter([100.0, 100.0])
    assert not bench.timed("encode", 0, lambda: None, 10, limits).loaded
    monkeypatch.setattr(bench.os, "getloadavg", lambda: (4.0, 4.0, 4.0))  # 1.5 beyond our 2 threads
    busy = iter([100.0, 100.0])
    assert bench.timed("encode", 0, lambda: None, 10, limits).loaded


def test_a_data_file_without_sentences_is_refused_in_one_line(bench, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:  # not a ZeroDivisionError in make_passages (an audit)
        bench.load_sentences(empty, example_corpus=False)
    message = str(exc.value)
    assert str(empty) in message and "no sentences" in message and "\n" not in message
