"""The cache of cut graphs: a later load reads them back without ``onnx`` and gives the very same
answers; a corrupt, foreign or unwritable cache costs time, never an answer; where the folder is."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")

from indexer import stage_cache  # noqa: E402
from indexer.assets import default_model_dir  # noqa: E402
from indexer.config import cache_dir  # noqa: E402
from indexer.runtime import CPU, open_session  # noqa: E402
from indexer.staged import CUT_VERSION, STAGE_FILES, SpanBatch, load_stages  # noqa: E402

GRAPH = default_model_dir() / "encoder.int8.onnx"
REPO = Path(__file__).resolve().parents[1]

# Encodes the example corpus, prints a digest of every span and vector; with BLOCK_ONNX set the
# onnx package cannot be imported, so the staged runner must come from the cache.
ENCODE = """
import hashlib, json, os, sys
if os.environ.get("BLOCK_ONNX"):
    sys.modules["onnx"] = None
from indexer.encoder import OnnxEncoder
from indexer.records import Passage
enc = OnnxEncoder.from_dir(device="cpu")
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
passages = [Passage(str(i), json.loads(line)["text"]) for i, line in enumerate(lines)]
digest = hashlib.sha256()
for e in enc.encode(passages, with_base=True):
    digest.update(e.vector.tobytes())
    for s in e.spans:
        digest.update(repr((s.start, s.end, s.score, s.mention)).encode() + s.vector.tobytes() + s.base_vector.tobytes())
print(json.dumps({"staged": enc.stages is not None, "onnx": "onnx" in sys.modules and sys.modules["onnx"] is not None,
                  "digest": digest.hexdigest()}))
"""


def encode_in_a_process(cache: str, *, block_onnx: bool = False) -> dict:
    env = {**os.environ, "NERINDEX_CACHE": cache} | ({"BLOCK_ONNX": "1"} if block_onnx else {})
    done = subprocess.run([sys.executable, "-c", ENCODE, str(REPO / "examples" / "corpus.jsonl")], env=env,
                          capture_output=True, text=True, timeout=300, cwd=REPO)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_the_cut_graphs_without_onnx_and_answers_the_same(tmp_path):
    cache = tmp_path / "cache"
    first = encode_in_a_process(str(cache))
    assert first["staged"] and first["onnx"]  # cut here, with onnx
    assert len(list((cache / "stages").iterdir())) == 1
    second = encode_in_a_process(str(cache), block_onnx=True)
    assert second == {"staged": True, "onnx": False, "digest": first["digest"]}
    off = encode_in_a_process("off", block_onnx=True)  # no cache, no onnx: the whole graph, as before
    assert not off["staged"] and not off["onnx"]


def stage_outputs(stages) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 5000, size=(1, 24)).astype(np.int64)
    spans = SpanBatch(np.zeros(6, np.int64), np.arange(6, dtype=np.int64), np.arange(6, dtype=np.int64) + 2)
    out = stages.run(ids, np.ones_like(ids), spans, 0.0)
    return [out.scores, out.vectors, out.passage_vectors]


def load(cache: Path | None):
    return load_stages(GRAPH, lambda data: open_session(data, CPU), cache)


@pytest.fixture(scope="module")
def reference():
    return stage_outputs(load(None))


def entry_folder(cache: Path) -> Path:
    return cache / stage_cache.entry_key(GRAPH, CUT_VERSION)


@pytest.mark.parametrize("damage", ["flip a weight byte", "truncate", "remove a file", "garble entry.json", "foreign cuts"])
def test_a_damaged_entry_is_cut_again_and_replaced(tmp_path, reference, damage, caplog):
    load(tmp_path)
    folder = entry_folder(tmp_path)
    tokens = folder / "tokens.onnx"
    if damage == "flip a weight byte":
        data = bytearray(tokens.read_bytes())
        data[len(data) // 2] ^= 0x40  # within the weights: the graph would still load, with another weight
        tokens.write_bytes(bytes(data))
    elif damage == "truncate":
        tokens.write_bytes(tokens.read_bytes()[:1000])
    elif damage == "remove a file":
        (folder / "scores.onnx").unlink()
    elif damage == "garble entry.json":
        (folder / "entry.json").write_text("{", encoding="utf-8")
    else:  # an entry.json whose cuts this version cannot read
        facts = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
        facts["cuts"]["not_a_field"] = 1
        (folder / "entry.json").write_text(json.dumps(facts), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="indexer"):
        got = stage_outputs(load(tmp_path))
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    assert "made again" in caplog.text or "cut again" in caplog.text
    entry = stage_cache.read(tmp_path, folder.name)  # replaced by a whole, matching entry
    assert entry is not None and set(entry.files) == set(STAGE_FILES) and "not_a_field" not in entry.facts["cuts"]


def test_cached_stages_give_the_cut_stages_answers_exactly(tmp_path, reference):
    load(tmp_path)
    for a, b in zip(stage_outputs(load(tmp_path)), reference):
        np.testing.assert_array_equal(a, b)


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(tmp_path, reference, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="indexer.stage_cache"):
        got = stage_outputs(load(blocker / "stages"))
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    assert "cache not written" in caplog.text


def test_a_graph_that_runs_whole_is_remembered(tmp_path, caplog, monkeypatch):
    fp16 = default_model_dir() / "encoder.fp16.onnx"  # the CUDA graph: not cut
    assert load_stages(fp16, lambda data: open_session(data, CPU), tmp_path) is None
    monkeypatch.setitem(sys.modules, "onnx", None)  # the second time from the entry alone
    with caplog.at_level(logging.INFO, logger="indexer.staged"):
        assert load_stages(fp16, lambda data: open_session(data, CPU), tmp_path) is None
    assert "runs whole (" in caplog.text
    assert "onnx package is missing" not in caplog.text


def test_the_key_follows_the_bytes_and_the_cut_version(tmp_path):
    copy = tmp_path / "g.onnx"
    copy.write_bytes(GRAPH.read_bytes())
    assert stage_cache.entry_key(copy, CUT_VERSION) == stage_cache.entry_key(GRAPH, CUT_VERSION)
    assert stage_cache.entry_key(GRAPH, CUT_VERSION + "x") != stage_cache.entry_key(GRAPH, CUT_VERSION)
    copy.write_bytes(GRAPH.read_bytes() + b"\0")
    assert stage_cache.entry_key(copy, CUT_VERSION) != stage_cache.entry_key(GRAPH, CUT_VERSION)


def test_writers_of_one_key_leave_one_whole_entry(tmp_path):
    entries = [stage_cache.Entry({"n": i}, {"a": bytes([i]) * 100_000, "b": bytes([i])}) for i in range(6)]
    threads = [threading.Thread(target=stage_cache.write, args=(tmp_path, "k", e)) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = stage_cache.read(tmp_path, "k")
    assert got is not None and got.files == entries[got.facts["n"]].files
    assert [p.name for p in tmp_path.iterdir()] == ["k"]  # no temporary folder left


def test_a_killed_writers_temporary_folder_is_removed_later(tmp_path):
    stale = tmp_path / f"k{stage_cache.TEMP_MARK}123-abcd"
    stale.mkdir()
    (stale / "tokens.onnx").write_bytes(b"half")
    os.utime(stale, (1, 1))
    fresh = tmp_path / f"j{stage_cache.TEMP_MARK}456-abcd"  # another process writing now
    fresh.mkdir()
    stage_cache.write(tmp_path, "k", stage_cache.Entry({}, {"a": b"x"}))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["k", fresh.name])
    assert hashlib.sha256(b"x").hexdigest() in (tmp_path / "k" / "entry.json").read_text(encoding="utf-8")


def test_the_least_recently_used_entries_go_beyond_the_limit(tmp_path):
    for i in range(stage_cache.MAX_ENTRIES):
        stage_cache.write(tmp_path, f"k{i}", stage_cache.Entry({}, {"a": b"x"}))
        os.utime(tmp_path / f"k{i}", (100 + i, 100 + i))
    assert stage_cache.read(tmp_path, "k0") is not None  # used now: kept
    stage_cache.write(tmp_path, "new", stage_cache.Entry({}, {"a": b"y"}))
    names = {p.name for p in tmp_path.iterdir()}
    assert len(names) == stage_cache.MAX_ENTRIES and "k0" in names and "new" in names and "k1" not in names


def test_the_cache_folder_from_the_environment(tmp_path):
    assert cache_dir({"NERINDEX_CACHE": str(tmp_path)}) == tmp_path
    assert cache_dir({"NERINDEX_CACHE": "off"}) is None
    assert cache_dir({"NERINDEX_CACHE": " ", "XDG_CACHE_HOME": "/x"}) == Path("/x/nerindex")  # empty counts as unset
    assert cache_dir({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "nerindex"
