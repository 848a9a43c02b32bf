"""The embedded store under faults: every fault is injected for real, and the answers stay right.

Replaced or corrupted derived files, empty cache files, a full disk (a small tmpfs where this
machine lets us mount one), a failing cache save, a writer killed with SIGKILL, two writers at
once. docs/reliability.md lists them with what nerindex does about each.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from indexer.errors import StoreError
from indexer.pipeline import index_passages
from indexer.records import EncodedPassage, EncodedSpan, Passage
from indexer.stores.base import ModelStamp, SearchRequest
from indexer.stores.embedded import CACHE_DIR, CACHE_FILES, DB_NAME, EmbeddedStore

from store_conformance import DINO, POL, corpus, hybrid_corpus
from test_cli import run  # `nerindex ARGS` in-process: (exit code, stdout, stderr)

ROOT = Path(__file__).resolve().parents[1]


def ids(store: EmbeddedStore, vector=DINO, threshold: float = 0.5) -> list[tuple[str, tuple[str, ...]]]:
    """(passage id, marked span texts) of every match: wrong vectors show up in both."""
    hits = store.search(SearchRequest(vector=vector, min_similarity=threshold, exhaustive=True))
    return [(h.id, tuple(s.text for s in h.spans)) for h in hits]


def filled(folder: Path, stamp: ModelStamp, docs) -> list[tuple[str, tuple[str, ...]]]:
    """A store with ``docs`` written in one write, searched once (so its cache is saved)."""
    with EmbeddedStore.open(folder) as store:
        store.check_model(stamp)
        store.write(docs)
        found = ids(store)
    assert (folder / CACHE_DIR / "manifest.json").is_file()
    return found


def rebuild_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "cache" in r.getMessage()]


# --- stale or damaged derived files ----------------------------------------------------------------


def test_replaced_store_sqlite_never_uses_the_old_cache(tmp_path, stamp, caplog):
    """A new store.sqlite counts its writes from 0 again: same generation, other contents."""
    old = tmp_path / "old"
    filled(old, stamp, corpus())
    other = tmp_path / "other"
    expected = filled(other, stamp, hybrid_corpus())  # one write too: generation 1 in both
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        (old / name).unlink(missing_ok=True)
    shutil.copy(other / DB_NAME, old / DB_NAME)
    with caplog.at_level(logging.WARNING), EmbeddedStore.open(old, create=False) as store:
        assert ids(store) == expected
    (warning,) = rebuild_warnings(caplog)
    assert "another store" in warning and "store.sqlite was replaced" in warning


def test_a_handle_open_when_store_sqlite_is_replaced_refuses_to_go_on(tmp_path, stamp):
    """An audit: a long-lived handle (the web service) kept its connection on the old file, so it
    wrote into a deleted file, counted its rows and failed every search ("written 5 times"); a
    review of the first fix (opening the new file) found it wrote into a copy still under way and
    searched another model's store. The handle now says what happened; a new open reads the file."""
    old, other = tmp_path / "old", tmp_path / "other"
    filled(old, stamp, corpus())
    expected = filled(other, stamp, hybrid_corpus())
    extra = dataclasses.replace(corpus()[0], passage=dataclasses.replace(corpus()[0].passage, id="new"))
    with EmbeddedStore.open(old, create=False) as store:
        assert store.counts().passages == len(corpus())
        for name in (DB_NAME + "-wal", DB_NAME + "-shm"):
            (old / name).unlink(missing_ok=True)
        shutil.copy(other / DB_NAME, old / "incoming.sqlite")
        os.replace(old / "incoming.sqlite", old / DB_NAME)  # as a restore or a move does it
        for attempt in (store.counts, lambda: ids(store), lambda: store.write([extra])):
            with pytest.raises(StoreError, match="store.sqlite was replaced or removed since this process opened it"):
                attempt()
    with EmbeddedStore.open(old, create=False) as again:  # nothing was written into the new file
        assert again.counts().passages == len(hybrid_corpus()) and ids(again) == expected


def test_a_handle_whose_store_sqlite_is_removed_refuses_and_makes_no_empty_file(tmp_path, stamp):
    """A review: a removed file let the handle count and write into it (lost), and the next search's
    own connection made an empty store.sqlite in its place."""
    folder = tmp_path / "s"
    filled(folder, stamp, corpus())
    with EmbeddedStore.open(folder, create=False) as store:
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
            (folder / name).unlink(missing_ok=True)
        for attempt in (store.counts, lambda: ids(store), lambda: store.write(corpus()[:1])):
            with pytest.raises(StoreError, match="replaced or removed"):
                attempt()
    assert not (folder / DB_NAME).exists()


def test_same_size_corruption_of_the_vectors_is_detected(tmp_path, stamp, caplog):
    folder = tmp_path / "s"
    expected = filled(folder, stamp, corpus())
    vectors = folder / CACHE_DIR / "vectors.npy"
    size = vectors.stat().st_size
    matrix = np.load(vectors, mmap_mode="r+")
    matrix[:] = POL  # every span now looks like a politician: same size, plausible values
    matrix.flush()
    del matrix
    assert vectors.stat().st_size == size
    with caplog.at_level(logging.WARNING), EmbeddedStore.open(folder, create=False) as store:
        assert ids(store) == expected
    (warning,) = rebuild_warnings(caplog)
    assert "vectors.npy does not match its checksum" in warning
    with EmbeddedStore.open(folder, create=False) as store:  # the rebuilt cache is trusted again
        caplog.clear()
        assert ids(store) == expected and not rebuild_warnings(caplog)


@pytest.mark.parametrize("name", CACHE_FILES)
def test_empty_cache_file_is_rebuilt(tmp_path, stamp, name, caplog):
    folder = tmp_path / "s"
    expected = filled(folder, stamp, corpus())
    (folder / CACHE_DIR / name).write_bytes(b"")
    with caplog.at_level(logging.WARNING), EmbeddedStore.open(folder, create=False) as store:
        assert ids(store) == expected
    (warning,) = rebuild_warnings(caplog)
    assert f"{name} has 0 bytes" in warning
    assert (folder / CACHE_DIR / name).stat().st_size > 0


def test_empty_cache_file_cli_search_answers(tmp_path, capsys):
    """nerindex 0.2.0 printed 'aborted' and exited 130 on every search after this."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "Tyrannosaurus rex lived in Montana."}\n', encoding="utf-8")
    store = tmp_path / "store"
    assert run(capsys, "index", str(source), "--store", str(store), "--id-field", "id")[0] == 0
    search = ("search", "dinosaur", "--store", str(store), "--threshold", "-1", "--json")
    code, before, _ = run(capsys, *search)
    assert code == 0 and '"id": "a"' in before
    (store / CACHE_DIR / "ids.npy").write_bytes(b"")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # a real process, for its real stderr
    done = subprocess.run([sys.executable, "-m", "indexer.cli", *search], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout == before, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "cache" in line]
    assert re.search(r"/cache: rebuilding from the store: ids\.npy has 0 bytes, the manifest says \d+$", line)


def test_leftover_temporary_files_are_removed_on_open(tmp_path, stamp):
    folder = tmp_path / "s"
    filled(folder, stamp, corpus())
    cache = folder / CACHE_DIR
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftovers = [cache / ".vectors.npy.tmp", cache / f".ids.npy.{int(dead.stdout)}.tmp",
                 cache / "ann-spans" / f".index.faiss.{int(dead.stdout)}.tmp",  # an ANN index's (an audit: kept for good)
                 cache / f".sums.npy.12345678.{int(dead.stdout)}.tmp"]  # today's name: a token (all digits here), the pid
    in_progress = [cache / f".vectors.npy.{os.getpid()}.tmp",  # a live writer's: kept
                   cache / f".scales.npy.{int(dead.stdout)}.{os.getpid()}.tmp"]  # the pid is the last number
    for path in leftovers + in_progress:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"x" * 1000)
    EmbeddedStore.open(folder).close()
    assert [p.exists() for p in leftovers] == [False] * 4 and all(p.exists() for p in in_progress)


def test_a_cache_that_cannot_be_saved_still_answers_and_leaves_no_temp_files(tmp_path, stamp, monkeypatch, caplog):
    folder = tmp_path / "s"
    with EmbeddedStore.open(folder) as store:
        store.check_model(stamp)
        store.write(corpus())
    real_save = np.save

    def disk_full(file, array, **kwargs):
        file.write(b"\x93NUMPY partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", disk_full)
    with caplog.at_level(logging.WARNING), EmbeddedStore.open(folder, create=False) as store:
        assert [i for i, _ in ids(store)] == ["p1", "p2", "p3"]
    assert not list((folder / CACHE_DIR).glob(".*"))
    (warning,) = rebuild_warnings(caplog)
    assert "cannot save (No space left on device)" in warning
    monkeypatch.setattr(np, "save", real_save)
    with EmbeddedStore.open(folder, create=False) as store:
        assert [i for i, _ in ids(store)] == ["p1", "p2", "p3"]
    assert (folder / CACHE_DIR / "manifest.json").is_file()


def test_a_write_by_another_handle_is_seen_without_a_warning(tmp_path, stamp, caplog):
    folder = tmp_path / "s"
    with EmbeddedStore.open(folder) as reader, EmbeddedStore.open(folder) as writer:
        writer.check_model(stamp)
        writer.write(corpus()[1:])
        assert [i for i, _ in ids(reader, threshold=0.9)] == []
        with caplog.at_level(logging.WARNING):
            writer.write(corpus()[:1])
            assert [i for i, _ in ids(reader, threshold=0.9)] == ["p1"]
        assert not rebuild_warnings(caplog)  # out of date after a write is normal: rebuilt quietly


def test_store_uuid_is_given_to_an_old_store_and_kept(tmp_path, stamp):
    folder = tmp_path / "s"
    with EmbeddedStore.open(folder) as store:
        store.check_model(stamp)
        first = store.version().identity
    conn = sqlite3.connect(folder / DB_NAME)
    conn.execute("DELETE FROM meta WHERE key = 'uuid'")  # as nerindex 0.2.0 made it
    conn.commit()
    conn.close()
    with EmbeddedStore.open(folder) as store:
        given = store.version().identity
    with EmbeddedStore.open(folder) as store:
        assert store.version().identity == given != first and len(given) == 32


# --- writing: disk full, SIGKILL, two writers ------------------------------------------------------


DIMS = 384


class SyntheticEncoder:
    """Three random unit span vectors per passage: enough bytes to fill a small disk quickly."""

    info = SimpleNamespace(stamp=ModelStamp("synthetic", "1", DIMS, "s" * 64))

    def encode(self, passages, *, batch_size=32, progress=None, windows=None):
        out = []
        for p in passages:
            rng = np.random.default_rng(abs(hash(p.id)) % 2**32)
            vectors = rng.standard_normal((3, DIMS)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            spans = tuple(EncodedSpan(0, 4, p.text[:4], 0.9, v) for v in vectors)
            out.append(EncodedPassage(p, spans, vectors[0]))
        if progress is not None:
            progress(len(out))
        return out


def synthetic_passages(n: int) -> list[Passage]:
    return [Passage(f"p{i:05d}", f"Passage number {i} of a synthetic corpus.") for i in range(n)]


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs: a real ENOSPC from the kernel, for SQLite and the cache alike."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the injected ENOSPC test covers the cache")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_disk_full_keeps_whole_chunks_says_rerun_resumes_and_leaves_no_temp_files(small_disk, caplog):
    folder = small_disk / "store"
    items = synthetic_passages(600)  # ~3.5 MB of vectors: does not fit
    with EmbeddedStore.open(folder) as store:
        with pytest.raises(StoreError) as failure:
            index_passages(items, SyntheticEncoder(), store, chunk_size=20)
        message = str(failure.value)
        assert "full" in message and "running the same command again resumes" in message
        stored = store.counts().passages
        assert stored > 0 and stored % 20 == 0  # whole chunks only
        assert f"{stored} passage(s) of this run are known to be stored" in message
        # searching a full store still answers, from memory; the failed cache save leaves nothing
        with caplog.at_level(logging.WARNING):
            hits = list(store.search(SearchRequest(vector=SyntheticEncoder().encode(items[:1])[0].spans[0].vector,
                                                   min_similarity=-1.0, exhaustive=True)))
        assert len(hits) == stored
        assert any("cannot save" in r.getMessage() for r in caplog.records)
        assert not [p for p in folder.rglob(".*.tmp")]
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    with EmbeddedStore.open(folder) as store:  # the same run again, with room: it resumes
        report = index_passages(items, SyntheticEncoder(), store, chunk_size=20)
        assert (report.skipped_existing, report.created) == (stored, 600 - stored)
        assert store.counts().passages == 600


KILLED_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
from test_embedded_faults import SyntheticEncoder, synthetic_passages
from indexer.pipeline import index_passages
from indexer.stores.embedded import EmbeddedStore

def progress(n):
    print("chunk", flush=True)
    time.sleep(0.02)

with EmbeddedStore.open({folder!r}) as store:
    index_passages(synthetic_passages(100000), SyntheticEncoder(), store, chunk_size=10, progress=progress)
"""


def test_two_writers_of_one_file_in_one_process_do_not_share_a_temporary_file(tmp_path):
    """An audit: two store handles of one process saved cache files through one ``.<name>.<pid>.tmp``;
    the second truncated the first's file and its rename failed ("No such file or directory")."""
    from indexer.atomic_files import write_file

    inside, errors = threading.Barrier(2, timeout=10), []

    def save(data: bytes) -> None:
        def write(handle) -> None:
            handle.write(data[:3])
            inside.wait()  # both temporary files are open at once
            handle.write(data[3:])

        try:
            write_file(tmp_path, "segments.json", write)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(exc)

    threads = [threading.Thread(target=save, args=(d,)) for d in (b"first writer", b"second writer")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (tmp_path / "segments.json").read_bytes() in (b"first writer", b"second writer")
    assert [p.name for p in tmp_path.iterdir()] == ["segments.json"]


def test_a_writer_killed_with_sigkill_leaves_whole_chunks_and_a_rerun_resumes(tmp_path):
    folder = tmp_path / "store"
    script = KILLED_WRITER.format(root=str(ROOT), tests=str(ROOT / "tests"), folder=str(folder))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(8):
            assert child.stdout.readline() == "chunk\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    conn = sqlite3.connect(folder / DB_NAME)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    items = synthetic_passages(120)
    with EmbeddedStore.open(folder) as store:
        stored = store.counts().passages
        assert stored >= 70 and stored % 10 == 0 and store.counts().spans == 3 * stored
        report = index_passages(items, SyntheticEncoder(), store, chunk_size=10)
        assert report.skipped_existing == min(stored, 120)
        assert store.counts().passages == max(stored, 120)


def test_two_writers_take_turns_without_duplicates(tmp_path, stamp):
    """WAL lets readers go on; BEGIN IMMEDIATE makes a second writer wait (up to 5 s) for the first."""
    folder = tmp_path / "s"
    with EmbeddedStore.open(folder) as first, EmbeddedStore.open(folder) as second:
        first.check_model(stamp)
        holder = sqlite3.connect(folder / DB_NAME, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # a writer in the middle of its transaction
        released = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
        released.start()
        began = time.perf_counter()
        second.write(corpus())  # waits for the lock instead of failing
        assert time.perf_counter() - began >= 0.25
        released.join()
        holder.close()
        assert ids(first) == ids(second)  # the reader saw it at once
        first.write(corpus()[:2])  # both write the same ids: replaced, never duplicated
        assert first.counts().passages == 5 and second.counts().spans == 8


def test_threads_writing_through_one_handle_take_turns(tmp_path):
    """An audit: two threads sharing one handle (one NerIndex) wrote in one SQLite transaction; the
    second one's failed BEGIN rolled back the first one's rows, whose remaining inserts committed one
    by one: passages without spans or a vector, vectors without a row, and every later write failed."""
    folder = tmp_path / "s"
    encoder = SyntheticEncoder()
    errors: list[str] = []
    with EmbeddedStore.open(folder) as store:
        store.check_model(encoder.info.stamp)

        def writer(tag: str) -> None:
            for c in range(12):
                chunk = [Passage(f"{tag}{c}-{i}", f"Passage {i} of chunk {c} by {tag}.") for i in range(25)]
                try:
                    store.write(encoder.encode(chunk), replace=tag == "B")
                except Exception as exc:  # noqa: BLE001 - any failure is the finding
                    errors.append(f"{tag}{c}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=writer, args=(tag,)) for tag in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.counts().passages == 600 and store.counts().spans == 1800
        assert len(ids(store, vector=encoder.encode(synthetic_passages(1))[0].vector, threshold=-1.0)) == 600
    db = sqlite3.connect(folder / DB_NAME)
    assert db.execute("SELECT COUNT(*) FROM span_vectors").fetchone()[0] == 1800
    assert db.execute("SELECT COUNT(*) FROM passage_vectors").fetchone()[0] == 600
    db.close()


def test_a_damaged_store_says_so_in_one_line_and_still_takes_writes(tmp_path, stamp):
    """What the race above left in stores written before the fix: a span without its vector made
    every search an AssertionError traceback, a vector without its row every write a UNIQUE error."""
    folder = tmp_path / "s"
    with EmbeddedStore.open(folder) as store:
        store.check_model(stamp)
        store.write(corpus())
    db = sqlite3.connect(folder / DB_NAME, isolation_level=None)
    (top,) = db.execute("SELECT MAX(rowid) FROM passages").fetchone()
    db.execute("INSERT INTO passage_vectors(rowid, vector) VALUES (?, zeroblob(4))", (top + 1,))  # where the next row goes
    (span,) = db.execute("SELECT MIN(rowid) FROM spans").fetchone()
    db.execute("DELETE FROM span_vectors WHERE rowid = ?", (span,))
    db.close()
    with EmbeddedStore.open(folder) as store:
        store.write([dataclasses.replace(d, passage=dataclasses.replace(d.passage, id=d.passage.id + "-new"))
                     for d in corpus()[:2]])  # rowids above the orphan's
        assert store.counts().passages == len(corpus()) + 2
        with pytest.raises(StoreError, match=r"damaged: 1 of its \d+ spans have no vector.*new store") as info:
            ids(store)
        assert "\n" not in str(info.value)


def test_an_open_waits_for_another_writer_and_then_says_it_is_busy(tmp_path, monkeypatch):
    """Opening writes (meta, the write log), so it waits for a write lock; a review found opens
    failing after 5 s as "not a usable nerindex store: database is locked" while another process
    upgraded a big store once (its text index). It waits LOCK_WAIT_S (60 s) and says why."""
    from indexer.stores import embedded_schema

    EmbeddedStore.open(tmp_path / "s").close()
    monkeypatch.setattr(embedded_schema, "LOCK_WAIT_S", 0.5)
    holder = sqlite3.connect(tmp_path / "s" / DB_NAME, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="busy: another process has been writing to it"):
            EmbeddedStore.open(tmp_path / "s")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    EmbeddedStore.open(tmp_path / "s").close()


def test_a_cache_folder_that_cannot_be_written_leaves_searches_answering_from_memory(tmp_path, stamp, caplog):
    """An audit: with cache/ unwritable (here a file of that name) every search ended in a traceback
    (the segment list's unlink ran outside the handling the saves have), and so did indexing."""
    folder = tmp_path / "s"
    expected = filled(folder, stamp, corpus())
    shutil.rmtree(folder / CACHE_DIR)
    (folder / CACHE_DIR).write_text("not a folder", encoding="utf-8")
    with caplog.at_level(logging.WARNING), EmbeddedStore.open(folder, create=False) as store:
        assert ids(store) == expected
        assert [o.ok for o in store.write(corpus()[:1])] == [True]
        assert ids(store) == expected
    assert "cannot save the vector segments" in caplog.text


def test_a_store_that_cannot_be_written_is_not_called_unusable():
    """An audit: on a full or read-only disk a healthy store was "not a usable nerindex store"."""
    from indexer.stores.embedded_schema import open_problem

    for text in ("attempt to write a readonly database", "disk I/O error", "database or disk is full"):
        assert open_problem(sqlite3.OperationalError(text)).startswith("cannot write to it")
    # a read-only folder (WAL needs -shm there), or a folder named store.sqlite: not "free some space"
    assert open_problem(sqlite3.OperationalError("unable to open database file")).startswith("cannot open it")
    assert open_problem(sqlite3.DatabaseError("file is not a database")).startswith("not a usable nerindex store")


# --- closing while other threads use the store ------------------------------------------------------

CLOSE_RACE = """
import collections, sys, threading, time
sys.path.insert(0, {tests!r})
from store_conformance import DINO, corpus, stamp
from indexer.errors import StoreError
from indexer.stores.base import SearchRequest
from indexer.stores.embedded import EmbeddedStore
for round in range(8):
    store = EmbeddedStore.open({folder!r} + str(round))
    store.check_model(stamp.__wrapped__())
    store.write(corpus())
    seen, stop = collections.Counter(), threading.Event()
    def use():
        while not stop.is_set():
            try:
                store.version(); store.counts(); list(store.search(SearchRequest(DINO, 0.5, exhaustive=True)))
                seen["ok"] += 1
            except StoreError:
                seen["StoreError"] += 1
            except Exception as exc:
                seen[type(exc).__name__] += 1
    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads: t.start()
    time.sleep(0.2); store.close(); time.sleep(0.1); stop.set()
    for t in threads: t.join()
    assert set(seen) <= {{"ok", "StoreError"}}, seen
print("clean")
"""


def test_closing_while_other_threads_use_the_store_refuses_them_and_does_not_crash(tmp_path):
    """close() waits for the statements under way on the shared connection, and later uses get a
    StoreError: closing under a thread's statement crashed the process (an audit: a segmentation
    fault in 3 of 6 runs; other runs raised sqlite3.ProgrammingError)."""
    script = CLOSE_RACE.format(tests=str(ROOT / "tests"), folder=str(tmp_path / "s"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "clean", (done.returncode, done.stderr[-2000:])


def test_close_inside_a_use_of_the_same_thread_returns_and_an_interrupted_close_can_be_repeated(tmp_path, stamp):
    """A review: close() inside the thread's own use waited for itself forever; interrupted while
    it waited, it left the connection open, and a second close() returned at once."""
    store = EmbeddedStore.open(tmp_path / "a")
    store.check_model(stamp)
    with store._conn():
        store.close()  # returns: it does not wait for this thread's own use
    with pytest.raises(StoreError, match="closed"):
        store.counts()
    store = EmbeddedStore.open(tmp_path / "b")
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._conn():
            held.set()
            release.wait(5)

    worker = threading.Thread(target=hold)
    worker.start()
    held.wait(5)
    shared = store._shared
    real_wait = shared._state.wait_for
    shared._state.wait_for = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())  # Ctrl-C while waiting
    with pytest.raises(KeyboardInterrupt):
        store.close()
    shared._state.wait_for = real_wait
    release.set()
    worker.join()
    store.close()  # waits again, then closes
    assert shared._conn is None


def test_close_inside_a_use_does_not_wait_for_a_thread_waiting_for_its_turn(tmp_path, stamp):
    """A review: with uses taking turns, a thread waiting for its turn was counted as a use, and a
    close() inside the holder's own use waited for it for ever."""
    store = EmbeddedStore.open(tmp_path / "s")
    store.check_model(stamp)
    waiting, result = threading.Event(), {}

    def other() -> None:
        waiting.set()
        try:
            result["other"] = store.counts()
        except StoreError as exc:
            result["other"] = exc

    def holder() -> None:
        with store._conn():
            threading.Thread(target=other, daemon=True).start()
            waiting.wait(5)
            time.sleep(0.2)  # the other thread now waits for its turn
            store.close()  # inside this thread's own use: does not wait for itself, nor for the waiter
        result["closed"] = True

    closing = threading.Thread(target=holder, daemon=True)
    closing.start()
    closing.join(10)
    assert result.get("closed") and not closing.is_alive()
    deadline = time.monotonic() + 5
    while "other" not in result and time.monotonic() < deadline:
        time.sleep(0.01)
    assert isinstance(result["other"], StoreError) and "closed" in str(result["other"])


def test_a_top_k_search_closes_its_read_connection(tmp_path, stamp, monkeypatch):
    """A review (Python 3.13's ResourceWarning): a top-k search read its hits and left its private
    connection to the garbage collector, one a search (the service's every request)."""
    store = EmbeddedStore.open(tmp_path / "s")
    store.check_model(stamp)
    store.write(corpus())
    opened = []
    real = store._reader
    monkeypatch.setattr(store, "_reader", lambda: opened.append(real()) or opened[-1])
    assert [h.id for h in store.search(SearchRequest(DINO, 0.5, limit=2))] == ["p1", "p2"]
    assert opened
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")
    store.close()


def test_a_search_under_a_steady_writer_tries_for_a_while_then_says_busy(tmp_path, stamp, monkeypatch):
    """A web audit: five tries to fix one version failed about one search in 35 under five small
    writes a second. A search now tries for SNAPSHOT_WAIT_S, and then says the store is busy
    (StoreBusyError, a StoreError: the service's 503 store_busy) rather than unavailable."""
    from indexer.errors import StoreBusyError
    from indexer.stores import embedded, embedded_schema

    filled(tmp_path / "s", stamp, corpus())
    store = EmbeddedStore.open(tmp_path / "s", create=False)
    real = embedded_schema.read_version
    moves = {"left": 7}  # a write lands between the segments and the read, seven times in a row

    def moving(conn):
        if moves["left"] and sys._getframe(1).f_code.co_name == "_snapshot":  # the search's check only
            moves["left"] -= 1
            return "written meanwhile"
        return real(conn)

    monkeypatch.setattr(embedded.schema, "read_version", moving)
    assert ids(store)  # the old five tries gave up here
    moves["left"] = 10**9
    monkeypatch.setattr(embedded, "SNAPSHOT_WAIT_S", 0.2)
    started = time.monotonic()
    with pytest.raises(StoreBusyError, match=r"written \d+ times while a search began; search again"):
        ids(store)
    assert 0.2 <= time.monotonic() - started < 5
    store.close()


def test_searches_beside_a_writer_that_never_pauses_all_answer(tmp_path, stamp):
    """A review: each try read the vectors, then opened a reader, and a writer committing between
    the two on every try made every search fail after SNAPSHOT_WAIT_S. The refresh now hands its
    own reader to the search, so a try that had to read new rows is of one snapshot."""
    from multiprocessing import get_context

    filled(tmp_path / "s", stamp, corpus())
    ctx = get_context("spawn")
    stop = ctx.Event()
    writer = ctx.Process(target=_write_until, args=(str(tmp_path / "s"), stop))
    writer.start()
    try:
        store = EmbeddedStore.open(tmp_path / "s", create=False)
        answered, ends = 0, time.monotonic() + 3
        while time.monotonic() < ends:
            assert ids(store)  # StoreBusyError here before
            answered += 1
        store.close()
    finally:
        stop.set()
        writer.join(30)
    assert answered > 10 and writer.exitcode == 0


def _write_until(folder: str, stop) -> None:
    """One small passage a write, as fast as the store takes them (a spawned process's target)."""
    from store_conformance import DINO as dino
    from store_conformance import doc

    with EmbeddedStore.open(Path(folder)) as store:
        i = 0
        while not stop.is_set():
            store.write([doc(f"w{i}", "Allosaurus here.", [("Allosaurus", dino)])])
            i += 1
