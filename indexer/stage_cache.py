"""A folder of files nerindex can make again: the staged runner's cut graphs (:mod:`indexer.staged`).

Why: cutting a model's graph needs the ``onnx`` package, and ``import onnx`` alone took 1.4–1.8 s
on a 2-core machine (most of it in ``ml_dtypes``'s extension), more than an index command of a few
hundred passages spends encoding. The cut graphs depend only on the graph file's bytes and on how
nerindex cuts, so they are kept under the cache folder (:func:`indexer.config.cache_dir`) by a key
of both and read back by the next command, with no ``onnx`` import.

An entry is a folder named by its key: ``entry.json`` (the caller's facts and each file's sha256)
and the files. It is written whole into a temporary folder and renamed into place, so a reader sees
a complete entry or none. A file whose checksum does not match, or anything unreadable, is a miss:
the caller makes the files again and :func:`write` replaces the entry. Nothing here is needed for
an answer: a cache folder that cannot be read or written costs the time it would have saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
TEMP_MARK = ".tmp-"  # <key>.tmp-<pid>-<token>: an entry being written
STALE_TEMP_SECONDS = 3600  # a temporary folder this old was left by a killed process
MAX_ENTRIES = 8  # the least recently used beyond these are removed (a graph's cut graphs: ~30 MB)


@dataclass(frozen=True)
class Entry:
    """What one key holds: the caller's facts (JSON) and its files' bytes, by name."""

    facts: dict[str, Any]
    files: dict[str, bytes]


def entry_key(source: Path, version: str) -> str:
    """The key of what is made from the file ``source`` by the maker of ``version``: its sha256."""
    digest = hashlib.sha256(version.encode() + b"\0")
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read(root: Path | None, key: str) -> Entry | None:
    """The entry of ``key`` under ``root``, or ``None`` (no entry, caching off, or an entry that is
    incomplete or corrupt: logged)."""
    if root is None:
        return None
    folder = root / key
    try:
        text = (folder / ENTRY_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.info("%s: cache entry unreadable, made again (%s)", folder, exc)
        return None
    try:
        facts = json.loads(text)
        sums = facts["sha256"]
        if not isinstance(sums, dict) or not all(isinstance(v, str) for v in sums.values()):
            raise ValueError("sha256 is not an object of file name to checksum")
        files = {name: (folder / name).read_bytes() for name in sums}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("%s: cache entry unreadable, made again (%s)", folder, exc)
        return None
    if any(hashlib.sha256(data).hexdigest() != sums[name] for name, data in files.items()):
        log.info("%s: cache entry does not match its checksums, made again", folder)
        return None
    with contextlib.suppress(OSError):
        os.utime(folder)  # used now: the last to go (_tidy)
    return Entry({k: v for k, v in facts.items() if k != "sha256"}, files)


def write(root: Path | None, key: str, entry: Entry) -> None:
    """Keep ``entry`` under ``key``, replacing what is there; never raises (logs why not)."""
    if root is None:
        return
    temp = root / f"{key}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temp.mkdir(parents=True)
        for name, data in entry.files.items():
            (temp / name).write_bytes(data)
        sums = {name: hashlib.sha256(data).hexdigest() for name, data in entry.files.items()}
        (temp / ENTRY_FILE).write_text(json.dumps({**entry.facts, "sha256": sums}), encoding="utf-8")
        _move_into_place(temp, root / key)
    except OSError as exc:
        log.info("%s: cache not written (%s)", root, exc)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    _tidy(root)


def _move_into_place(temp: Path, folder: Path) -> None:
    """Rename ``temp`` to ``folder``; an entry already there (corrupt, or another process's) is
    moved aside and removed first. Two processes writing one key leave one whole entry."""
    try:
        temp.rename(folder)
        return
    except OSError:
        if not folder.exists():
            raise
    aside = folder.with_name(f"{folder.name}{TEMP_MARK}old-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(aside)
    except FileNotFoundError:
        pass  # another process moved it first
    shutil.rmtree(aside, ignore_errors=True)
    try:
        temp.rename(folder)
    except OSError:
        if not folder.exists():  # another process's entry took the place: keep it
            raise


def _tidy(root: Path) -> None:
    """Remove temporary folders of processes killed while writing (older than an hour) and the
    least recently used entries beyond :data:`MAX_ENTRIES` (a reader of one of them misses)."""
    try:
        paths = [(p, p.stat().st_mtime) for p in root.iterdir()]
    except OSError:
        return
    entries = sorted((mtime, p) for p, mtime in paths if TEMP_MARK not in p.name)
    stale = [p for p, mtime in paths if TEMP_MARK in p.name and time.time() - mtime > STALE_TEMP_SECONDS]
    for path in stale + [p for _, p in entries[: max(0, len(entries) - MAX_ENTRIES)]]:
        shutil.rmtree(path, ignore_errors=True)
