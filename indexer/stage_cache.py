"""A folder of files nerindex can make again: the staged runner's cut graphs (:mod:`indexer.staged`).

Why: cutting a model's graph needs the ``onnx`` package, and ``import onnx`` alone took 1.4–1.8 s
on a 2-core machine (most of it in ``ml_dtypes``'s extension), more than an index command of a few
hundred passages spends encoding. The cut graphs depend only on the graph's bytes (and any external
data files it names) and on how nerindex cuts, so they are kept under the cache folder
(:func:`indexer.config.cache_dir`) by a key of both and read back by the next command, without
``onnx``.

An entry is a folder named by its 64-hex key: ``entry.json`` (the caller's facts, the sha256 of the
facts and of each file, and of each *source* file the entry was made from besides the key's bytes)
and the files. It is written whole into a temporary folder and renamed into place, so a reader sees
a complete entry or none. Anything that does not match (a file, the facts, a source that changed
since), or cannot be read, is a miss: the caller makes the files again and :func:`write` replaces
the entry. Only folders named like entries are ever removed. A root that another user owns is not
used (its entries could be anyone's): the cache is then off, with one warning; one of this user's
that others can write is closed first (:func:`usable`). Nothing here is needed for an answer: a
cache that cannot be used costs the time it would have saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model_folder import sha256_file

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
TEMP_MARK = ".tmp-"  # <key>.tmp-<pid>-<token>: an entry being written (or an old one moved aside)
OURS = re.compile(rf"[0-9a-f]{{64}}(?:{re.escape(TEMP_MARK)}[0-9a-z-]+)?")  # the only names removed
STALE_TEMP_SECONDS = 3600  # a temporary folder this old was left by a killed process
MAX_ENTRIES = 8  # the least recently used beyond these are removed (a graph's cut graphs: ~30 MB)
_warned: set[Path] = set()


@dataclass(frozen=True)
class Entry:
    """What one key holds: the caller's facts (JSON), its files' bytes by name, and the sha256 of
    each file it was made from besides the key's bytes, by its path relative to the folder the
    reader names (the graph's: another folder with the same graph file has its own weights)."""

    facts: dict[str, Any]
    files: dict[str, bytes]
    sources: dict[str, str] = field(default_factory=dict)


def entry_key(source_sha256: str, version: str) -> str:
    """The key of what the maker of ``version`` makes from bytes of this sha256."""
    return hashlib.sha256(f"{version}\0{source_sha256}".encode()).hexdigest()


def _facts_sum(facts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def usable(root: Path | None) -> bool:
    """Whether ``root`` may hold entries: this user's, and nobody else may write it (created so; one
    of this user's that others may write, as a umask of 002 makes it, is closed). Another's entries
    could hold any graph, their checksums written by the same hand (pip, likewise, turns its cache
    off when another user owns it). Only this folder is checked: its parents are the user's choice
    (docs/reliability.md). Warns once per root."""
    if root is None:
        return False
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = root.stat()
        foreign = hasattr(os, "getuid") and info.st_uid != os.getuid()
        if not foreign and info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            root.chmod(stat.S_IMODE(info.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))
            info = root.stat()
    except OSError as exc:
        # a folder the user named (NERINDEX_CACHE) that cannot be one is said once (an audit: every
        # run cut the graphs again without a word); the default one quietly, as before
        chosen = bool(os.environ.get("NERINDEX_CACHE", "").strip())
        return _not_used(root, logging.WARNING if chosen else logging.INFO,
                         f"cache not used ({exc}){' (NERINDEX_CACHE)' if chosen else ''}")
    if foreign or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "another user owns it" if foreign else "others can write to it"
        return _not_used(root, logging.WARNING, f"cache not used: {who} (set NERINDEX_CACHE to a folder of your own)")
    return True


def _not_used(root: Path, level: int, why: str) -> bool:
    """Say once per root why it holds no entries (``usable``); False."""
    if root not in _warned:
        _warned.add(root)
        log.log(level, "%s: %s", root, why)
    return False


def read(root: Path | None, key: str, base: Path | None = None) -> Entry | None:
    """The entry of ``key`` under ``root``, or ``None`` (no entry, caching off, or an entry that is
    incomplete, corrupt or made from sources under ``base`` that differ: logged)."""
    if not usable(root):
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
        record = json.loads(text)
        facts, sums, sources = record["facts"], record["sha256"], record["sources"]
        if _facts_sum(facts) != record["facts_sha256"]:
            raise ValueError("the facts do not match their checksum")
        files = {name: (folder / name).read_bytes() for name in sums}
        if any(hashlib.sha256(data).hexdigest() != sums[name] for name, data in files.items()):
            raise ValueError("a file does not match its checksum")
        if sources and base is None:
            raise ValueError("made from other files, and no folder to find them in")
        if any(sha256_file(base / name) != digest for name, digest in sources.items()):
            raise ValueError("a file it was made from differs")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.info("%s: cache entry not used, made again (%s)", folder, exc)
        return None
    with contextlib.suppress(OSError):
        os.utime(folder)  # used now: the last to go (_tidy)
    return Entry(facts, files, sources)


def write(root: Path | None, key: str, entry: Entry) -> None:
    """Keep ``entry`` under ``key``, replacing what is there; never raises (logs why not)."""
    if not usable(root):
        return
    temp = root / f"{key}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        temp.mkdir(mode=0o700)
        for name, data in entry.files.items():
            (temp / name).write_bytes(data)
        record = {"facts": entry.facts, "facts_sha256": _facts_sum(entry.facts), "sources": entry.sources,
                  "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in entry.files.items()}}  # fmt: skip
        (temp / ENTRY_FILE).write_text(json.dumps(record), encoding="utf-8")
        _move_into_place(temp, root / key)
    except OSError as exc:
        log.info("%s: cache not written (%s)", root, exc)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    _tidy(root)


def _move_into_place(temp: Path, folder: Path) -> None:
    """Rename ``temp`` to ``folder``; an entry already there (corrupt, or another process's) is
    moved aside and removed first. Two processes writing one key leave one whole entry."""
    with contextlib.suppress(OSError):
        temp.rename(folder)
        return
    aside = folder.with_name(f"{folder.name}{TEMP_MARK}old-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(FileNotFoundError):  # another process moved it aside first
        folder.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)
    try:
        temp.rename(folder)
    except OSError:
        if not folder.is_dir():  # not another process's entry in its place: a real failure
            raise


def _tidy(root: Path) -> None:
    """Remove temporary folders of processes killed while writing (older than an hour) and the
    least recently used entries beyond :data:`MAX_ENTRIES` (a reader of one of them misses).
    Only real folders named like entries: whatever else is in ``root`` is left alone."""
    try:
        paths = [(p, p.lstat()) for p in root.iterdir() if OURS.fullmatch(p.name)]
    except OSError:
        return
    paths = [(p, s.st_mtime) for p, s in paths if stat.S_ISDIR(s.st_mode)]
    entries = sorted((mtime, p) for p, mtime in paths if TEMP_MARK not in p.name)
    stale = [p for p, mtime in paths if TEMP_MARK in p.name and time.time() - mtime > STALE_TEMP_SECONDS]
    for path in stale + [p for _, p in entries[: max(0, len(entries) - MAX_ENTRIES)]]:
        shutil.rmtree(path, ignore_errors=True)
