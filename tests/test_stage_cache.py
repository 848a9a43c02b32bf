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
from indexer.errors import ModelError  # noqa: E402
from indexer.model_folder import sha256_file  # noqa: E402
from indexer.runtime import CPU, open_session  # noqa: E402
from indexer.stage_loading import ROWS_FILE, STAGE_FILES, cut_version, load_stages  # noqa: E402
from indexer.staged import SpanBatch  # noqa: E402

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


def entry_folder(cache: Path, graph: Path = GRAPH) -> Path:
    return cache / stage_cache.entry_key(sha256_file(graph), cut_version())


@pytest.mark.parametrize("damage", ["flip a weight byte", "truncate", "remove a file", "garble entry.json", "changed facts"])
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
    else:  # facts changed without their checksum: a width table of 2 rows would shift every score
        record = json.loads((folder / "entry.json").read_text(encoding="utf-8"))
        record["facts"]["cuts"]["width_buckets"] = 2
        (folder / "entry.json").write_text(json.dumps(record), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="indexer"):
        got = stage_outputs(load(tmp_path))
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    assert "made again" in caplog.text or "cut again" in caplog.text
    entry = stage_cache.read(tmp_path, folder.name)  # replaced by a whole, matching entry
    assert entry is not None and set(entry.files) == {*STAGE_FILES, ROWS_FILE} and entry.facts["cuts"]["width_buckets"] == 16


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
    assert "cache not used" in caplog.text


def test_a_graph_that_runs_whole_is_remembered(tmp_path, caplog, monkeypatch):
    fp16 = default_model_dir() / "encoder.fp16.onnx"  # the CUDA graph: not cut
    assert load_stages(fp16, lambda data: open_session(data, CPU), tmp_path) is None
    monkeypatch.setitem(sys.modules, "onnx", None)  # the second time from the entry alone
    with caplog.at_level(logging.INFO, logger="indexer.stage_loading"):
        assert load_stages(fp16, lambda data: open_session(data, CPU), tmp_path) is None
    assert "runs whole (" in caplog.text
    assert "onnx package is missing" not in caplog.text


def test_the_key_follows_the_bytes_and_the_code_that_cuts(tmp_path, monkeypatch):
    copy = tmp_path / "g.onnx"
    copy.write_bytes(GRAPH.read_bytes())
    same, other = sha256_file(GRAPH), sha256_file(copy)
    assert stage_cache.entry_key(same, "v") == stage_cache.entry_key(other, "v") != stage_cache.entry_key(same, "w")
    copy.write_bytes(GRAPH.read_bytes() + b"\0")
    assert stage_cache.entry_key(sha256_file(copy), "v") != stage_cache.entry_key(same, "v")
    from indexer import staged

    edited = tmp_path / "staged.py"  # how nerindex cuts changed, and nobody bumped a number
    edited.write_bytes(Path(staged.__file__).read_bytes() + b"\n# changed\n")
    before = cut_version.__wrapped__()
    monkeypatch.setattr(staged, "__file__", str(edited))
    assert cut_version.__wrapped__() != before


def external_copy(folder: Path) -> Path:
    """The shipped int8 graph saved with its weights in ``weights.bin`` beside it."""
    onnx = pytest.importorskip("onnx")
    folder.mkdir()
    graph = folder / "encoder.int8.onnx"
    onnx.save(onnx.load(str(GRAPH)), str(graph), save_as_external_data=True, location="weights.bin", size_threshold=1024)
    return graph


def other_weights(graph: Path) -> None:
    weights = bytearray((graph.parent / "weights.bin").read_bytes())  # the same graph file, other weights
    weights[len(weights) // 2 : len(weights) // 2 + 4096] = bytes(4096)
    (graph.parent / "weights.bin").write_bytes(bytes(weights))


@pytest.mark.parametrize("where", ["changed in place", "another folder"])
def test_a_graph_with_other_external_data_gets_its_own_cut(tmp_path, reference, where):
    first = external_copy(tmp_path / "a")
    graph = first if where == "changed in place" else external_copy(tmp_path / "b")
    cache = tmp_path / "cache"
    for a, b in zip(stage_outputs(load_stages(first, lambda data: open_session(data, CPU), cache)), reference):
        np.testing.assert_array_equal(a, b)
    other_weights(graph)
    assert graph.read_bytes() == first.read_bytes()  # the key's bytes are the same
    got = stage_outputs(load_stages(graph, lambda data: open_session(data, CPU), cache))
    want = stage_outputs(load_stages(graph, lambda data: open_session(data, CPU)))  # a fresh cut
    assert any(not np.array_equal(a, b) for a, b in zip(want, reference))
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_external_data_outside_the_graphs_folder_is_refused_before_it_is_read(tmp_path):
    onnx = pytest.importorskip("onnx")
    graph = external_copy(tmp_path / "a")
    model = onnx.load(str(graph), load_external_data=False)
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "/dev/zero"  # hashing it first would never end
    onnx.save(model, str(graph))
    with pytest.raises(ModelError, match="cannot load its external data"):
        load_stages(graph, lambda data: open_session(data, CPU), tmp_path / "cache")


def test_a_cached_graph_onnxruntime_will_not_open_is_cut_again(tmp_path, reference, caplog):
    load(tmp_path)
    folder = entry_folder(tmp_path)
    entry = stage_cache.read(tmp_path, folder.name)
    broken = stage_cache.Entry(entry.facts, {**entry.files, "scores.onnx": b"not a graph"}, entry.sources)
    stage_cache.write(tmp_path, folder.name, broken)  # checksums of the broken file: it reads back
    with caplog.at_level(logging.INFO, logger="indexer"):
        got = stage_outputs(load(tmp_path))
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    assert "cut again" in caplog.text


@pytest.mark.parametrize("cached", [False, True], ids=["cut here", "cut by another process"])
def test_a_graph_replaced_since_its_folder_was_loaded_is_refused(tmp_path, cached):
    """An audit: the encoder cuts at its first passage, from the graph's path; a folder exported
    again meanwhile gave the other model's spans under the first model's checksum."""
    fp16 = default_model_dir() / "encoder.fp16.onnx"  # other bytes (runs whole: quick to "cut")
    graph = tmp_path / "encoder.int8.onnx"
    graph.write_bytes(fp16.read_bytes())
    cache = tmp_path / "cache" if cached else None
    if cached:
        assert load_stages(graph, lambda data: open_session(data, CPU), cache) is None  # an entry of the new bytes
    with pytest.raises(ModelError, match="encoder.int8.onnx: the model folder changed since it was loaded"):
        load_stages(graph, lambda data: open_session(data, CPU), cache, expected=sha256_file(GRAPH))
    assert load_stages(graph, lambda data: open_session(data, CPU), cache, expected=sha256_file(fp16)) is None


def test_an_encoder_whose_folder_was_replaced_before_its_first_passage_refuses(tmp_path, monkeypatch):
    from indexer.encoder import OnnxEncoder
    from indexer.records import Passage

    monkeypatch.setenv("NERINDEX_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    for path in default_model_dir().iterdir():
        (folder / path.name).symlink_to(path)
    encoder = OnnxEncoder.from_dir(folder, device="cpu")
    (folder / "encoder.int8.onnx").unlink()  # another export renames its folder into place
    (folder / "encoder.int8.onnx").symlink_to(default_model_dir() / "encoder.fp16.onnx")
    with pytest.raises(ModelError, match="the model folder changed since it was loaded"):
        encoder.encode([Passage("1", "Barack Obama visited Paris.")])


def test_only_folders_named_like_entries_are_ever_removed(tmp_path):
    mine = tmp_path / "experiment"
    mine.mkdir()
    os.utime(mine, (1, 1))
    old_temp_named = tmp_path / f"notes{stage_cache.TEMP_MARK}1"
    old_temp_named.mkdir()
    os.utime(old_temp_named, (1, 1))
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (tmp_path / ("e" * 64)).symlink_to(elsewhere)  # a link named like an entry: not followed, not removed
    for i in range(stage_cache.MAX_ENTRIES + 2):
        stage_cache.write(tmp_path, f"{i:064x}", stage_cache.Entry({}, {"a": b"x"}))
    names = {p.name for p in tmp_path.iterdir()}
    assert {"experiment", old_temp_named.name, "e" * 64} <= names and elsewhere.is_dir()
    assert len([n for n in names if n.startswith("0" * 60)]) == stage_cache.MAX_ENTRIES


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to give a folder to another user")
def test_a_cache_folder_of_another_user_is_not_used(tmp_path, caplog):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 65534, -1)
    with caplog.at_level(logging.WARNING, logger="indexer.stage_cache"):
        stage_cache.write(shared, "0" * 64, stage_cache.Entry({}, {"a": b"x"}))
        assert stage_cache.read(shared, "0" * 64) is None
    assert list(shared.iterdir()) == [] and "another user owns it" in caplog.text


def test_a_cache_folder_of_this_user_that_others_can_write_is_closed(tmp_path):
    own = tmp_path / "own"  # as a umask of 002 makes it
    own.mkdir()
    own.chmod(0o775)
    stage_cache.write(own, "0" * 64, stage_cache.Entry({}, {"a": b"x"}))
    assert stage_cache.read(own, "0" * 64) is not None and own.stat().st_mode & 0o777 == 0o755


def test_writers_of_one_key_leave_one_whole_entry(tmp_path):
    key = "c" * 64
    entries = [stage_cache.Entry({"n": i}, {"a": bytes([i]) * 100_000, "b": bytes([i])}) for i in range(6)]
    threads = [threading.Thread(target=stage_cache.write, args=(tmp_path, key, e)) for e in entries]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = stage_cache.read(tmp_path, key)
    assert got is not None and got.files == entries[got.facts["n"]].files
    assert [p.name for p in tmp_path.iterdir()] == [key]  # no temporary folder left


def test_a_killed_writers_temporary_folder_is_removed_later(tmp_path):
    key = "a" * 64
    stale = tmp_path / f"{key}{stage_cache.TEMP_MARK}123-abcd"
    stale.mkdir()
    (stale / "tokens.onnx").write_bytes(b"half")
    os.utime(stale, (1, 1))
    fresh = tmp_path / f"{'b' * 64}{stage_cache.TEMP_MARK}456-abcd"  # another process writing now
    fresh.mkdir()
    stage_cache.write(tmp_path, key, stage_cache.Entry({}, {"a": b"x"}))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, fresh.name])
    assert hashlib.sha256(b"x").hexdigest() in (tmp_path / key / "entry.json").read_text(encoding="utf-8")


def test_the_least_recently_used_entries_go_beyond_the_limit(tmp_path):
    keys = [f"{i:064x}" for i in range(stage_cache.MAX_ENTRIES + 1)]
    for i, key in enumerate(keys[:-1]):
        stage_cache.write(tmp_path, key, stage_cache.Entry({}, {"a": b"x"}))
        os.utime(tmp_path / key, (100 + i, 100 + i))
    assert stage_cache.read(tmp_path, keys[0]) is not None  # used now: kept
    stage_cache.write(tmp_path, keys[-1], stage_cache.Entry({}, {"a": b"y"}))
    names = {p.name for p in tmp_path.iterdir()}
    assert len(names) == stage_cache.MAX_ENTRIES and keys[0] in names and keys[-1] in names and keys[1] not in names


def test_the_cache_folder_from_the_environment(tmp_path, monkeypatch, caplog):
    assert cache_dir({"NERINDEX_CACHE": str(tmp_path)}) == tmp_path
    assert cache_dir({"NERINDEX_CACHE": "off"}) is None and cache_dir({"NERINDEX_CACHE": "OFF"}) is None
    assert cache_dir({"NERINDEX_CACHE": " ", "XDG_CACHE_HOME": "/x"}) == Path("/x/nerindex")  # empty counts as unset
    assert cache_dir({"HOME": str(tmp_path)}) == tmp_path / ".cache" / "nerindex"
    assert cache_dir({"HOME": str(tmp_path), "XDG_CACHE_HOME": "rel"}) == tmp_path / ".cache" / "nerindex"  # XDG: absolute only
    monkeypatch.chdir(tmp_path)
    assert cache_dir({"NERINDEX_CACHE": "c"}) == tmp_path / "c"  # relative: to the folder it was set in
    with caplog.at_level(logging.WARNING, logger="indexer.config"):
        assert cache_dir({"NERINDEX_CACHE": "~no-such-user-here/c"}) is None
    assert "set NERINDEX_CACHE" in caplog.text
