"""Derived files of a store: arrays rebuilt from the source of truth, trusted only through a manifest.

The embedded store keeps every vector in SQLite (the source of truth) and a copy as ``.npy`` arrays
in ``cache/``, so that a new process need not read a million blobs. A derived folder is trusted
only when its manifest, written last after every array is durably on disk, names the store
version it was made from (:class:`~indexer.stores.base.StoreVersion`: store UUID, write generation,
row counts) and the size and CRC-32 of each file, and every file still matches. Anything else
(no manifest, another store, another state, a short, empty or altered file) makes the caller
rebuild from the source. A save that fails (read-only folder, disk full) leaves no temporary file
behind; the caller goes on with the arrays in memory.

Files are written as ``.<name>.<token>.<pid>.tmp``, fsynced, renamed into place, and the folder is fsynced,
so a crash leaves either the old file or the new one, never a torn one. Temporary files of
processes that no longer run are removed when a store opens.

CRC-32 is the checksum because it is the cheapest that catches corruption of the same size: about
80 ms for the 154 MB of 100k spans × 384 dims on one core (sha256 126 ms, blake2b 217 ms), paid
when a process loads a cache it did not write. It guards against accidents (a torn copy, a bad
block, a stray write), not against tampering.

Nothing here knows what the arrays mean, so later segment files can reuse it as they are.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Sequence

import numpy as np

from ..atomic_files import write_bytes, write_file
from ..processes import writer_running
from .base import StoreVersion

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_TEMP = re.compile(r"^\..+?(?:\.(\d+))?\.tmp$")  # .<name>[.<token>].<pid>.tmp (the pid last), or nerindex 0.2.0's .<name>.tmp
CHUNK = 1 << 20


class _Checksummed:
    """A write-only file wrapper that keeps the size and CRC-32 of what passes through it."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.size = 0
        self.crc = 0

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.crc = zlib.crc32(view, self.crc)
        self.size += len(view)
        return self.handle.write(view)


def prefer_huge_pages(mapped: mmap.mmap) -> None:
    """Ask Linux to read a mapped file into the page cache in 2 MB folios, and so to map it with
    2 MB pages (transparent huge pages in "madvise" or "always" mode; a no-op elsewhere).

    Why: a span scan maps the whole int8 matrix again each time (it drops the pages after each
    block to keep its RSS low). A file cached in 4 KB folios costs ~60k page faults and ~0.3 s of
    kernel time per scan at 10M spans, in 2 MB folios ~4k faults and ~0.02 s (BENCHMARKS.md). The
    folio size is fixed when a page is read from disk: a read through a plain mapping reads 4 KB
    folios, ``read()`` folios no larger than the device's read-ahead (often 128 KB), a read through
    a mapping with this hint 2 MB ones."""
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mapped.madvise(mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages
            pass


def drop_pages(mapped: mmap.mmap) -> None:
    """Drop a mapping's pages from this process (they stay in the page cache): what keeps a scan
    or a checksum read of a large file from counting it in the process's RSS."""
    if hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


FileIdentity = tuple[int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns


def identity(status: os.stat_result) -> FileIdentity:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def file_crc(path: Path) -> tuple[int, FileIdentity]:
    """CRC-32 of a whole file and the identity of the file read (:func:`unchanged`), read through
    a mapping with :func:`prefer_huge_pages` (this is what first brings a derived file into the
    page cache), 1 MiB at a time, the pages dropped from the process every 64 MiB so the check
    adds no more than that to its RSS."""
    crc = 0
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        size = status.st_size
        if size == 0:
            return crc, identity(status)
        with mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ) as mapped:
            prefer_huge_pages(mapped)
            with memoryview(mapped) as view:
                for at in range(0, size, CHUNK):
                    with view[at : at + CHUNK] as chunk:
                        crc = zlib.crc32(chunk, crc)
                    if (at + CHUNK) % (64 * CHUNK) == 0:
                        drop_pages(mapped)
    return crc, identity(status)


def fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def npy_writer(array: np.ndarray) -> Callable[[BinaryIO], None]:
    """A :func:`save_files` callback that saves ``array`` as .npy."""

    def write(handle: BinaryIO) -> None:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)

    return write


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete ``.<name>[.<token>].<pid>.tmp`` files whose writer no longer runs (left by a crash or a kill)
    and nerindex 0.2.0's ``.<name>.tmp``; those of a save in progress in another process stay.
    Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        match = _TEMP.match(path.name)
        if match is None or (match.group(1) is not None and writer_running(int(match.group(1)))):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def save_arrays(folder: Path, version: StoreVersion, arrays: Mapping[str, np.ndarray]) -> bool:
    """Save arrays as ``<name>`` .npy files and then the manifest naming ``version`` (see
    :func:`save_files`)."""
    return save_files(folder, version, {name: npy_writer(array) for name, array in arrays.items()})


def save_files(folder: Path, version: StoreVersion, writers: Mapping[str, Callable[[BinaryIO], None]]) -> bool:
    """Save files, each written by its callback, and then the manifest naming ``version`` with
    the size and CRC-32 of each.

    The old manifest goes first, so a crash half-way leaves a folder nobody trusts. Returns False
    (after one warning) when the folder cannot be written; nothing is left half-written then.
    """

    def checksummed(write: Callable[[BinaryIO], None]) -> Callable[[BinaryIO], dict[str, int]]:
        def run(handle: BinaryIO) -> dict[str, int]:
            out = _Checksummed(handle)
            write(out)  # type: ignore[arg-type]
            return {"size": out.size, "crc32": out.crc}

        return run

    try:
        folder.mkdir(exist_ok=True)
        (folder / MANIFEST).unlink(missing_ok=True)
        fsync_dir(folder)
        files = {name: write_file(folder, name, checksummed(write)) for name, write in writers.items()}
        store = {"identity": version.identity, "state": version.state}
        manifest = {"format": MANIFEST_FORMAT, "store": store, "files": files}
        text = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
        write_bytes(folder / MANIFEST, text)
        fsync_dir(folder)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        log.warning("%s: cannot save (%s); searching from the copy in memory, which each new process rebuilds",
                    folder, reason)
        return False
    return True


def trusted(folder: Path, version: StoreVersion, names: Sequence[str]) -> dict[str, FileIdentity] | None:
    """The identities of the named files when the folder's manifest names ``version`` and every one
    matches it (for files the caller reads itself, then checks with :func:`unchanged`); else None,
    after logging why, like :func:`load_arrays`."""
    checked: dict[str, FileIdentity] = {}
    problem, warn = _problem(folder, version, names, checked)
    if problem is not None:
        (log.warning if warn else log.info)("%s: rebuilding from the store: %s", folder, problem)
        return None
    return checked


def unchanged(folder: Path, checked: Mapping[str, FileIdentity]) -> bool:
    """Whether each file is still the one whose checksum was checked. A file is checked through
    one open and read through another (``np.load``, faiss): a process saving the folder between
    the two renamed new files in, which were then read unchecked, and two bases of equal counts
    paired one's rows with the other's vectors, for the life of the process (a store audit)."""
    try:
        return all(identity(os.stat(folder / name)) == seen for name, seen in checked.items())
    except OSError:
        return False


def manifest_state(folder: Path) -> str | None:
    """The store state the folder's manifest names (None: no readable manifest)."""
    try:
        return str(json.loads((folder / MANIFEST).read_bytes())["store"]["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _problem(folder: Path, version: StoreVersion, names: Sequence[str],
             checked: dict[str, FileIdentity]) -> tuple[str | None, bool]:
    """(why the folder cannot be trusted for ``version``, whether that is worth a warning), or
    (None, False) when every file matches its manifest; ``checked`` gets each file's identity as
    it passes (:func:`unchanged`)."""
    try:
        raw = (folder / MANIFEST).read_bytes()
    except FileNotFoundError:
        return "no manifest", False  # never written, or a save was cut short: rebuilt quietly
    except OSError as exc:
        return f"manifest unreadable ({exc.strerror})", True
    try:
        manifest = json.loads(raw)
        if manifest["format"] != MANIFEST_FORMAT:
            return f"manifest format {manifest['format']!r} is not {MANIFEST_FORMAT}", True
        made_for = StoreVersion(str(manifest["store"]["identity"]), str(manifest["store"]["state"]))
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError):
        return "manifest unreadable", True
    if made_for.identity != version.identity:
        return (f"it was made for another store ({made_for.identity}; this one is {version.identity}): "
                "store.sqlite was replaced"), True
    if made_for.state != version.state:
        return "the store changed since it was made", False  # the normal case after a write
    for name in names:
        expected = files.get(name)
        if not isinstance(expected, dict):
            return f"{name} is not in the manifest", True
        path = folder / name
        try:
            size = path.stat().st_size
            if size != expected.get("size"):
                return f"{name} has {size} bytes, the manifest says {expected.get('size')}", True
            crc, checked[name] = file_crc(path)
            if crc != expected.get("crc32") or checked[name][2] != size:
                return f"{name} does not match its checksum (corrupt or altered)", True
        except OSError as exc:
            return f"{name} unreadable ({exc.strerror})", True
    return None, False


def load_arrays(
    folder: Path,
    version: StoreVersion,
    names: Sequence[str],
    *,
    mmap: Sequence[str] = (),
    check: Callable[[dict[str, np.ndarray]], str | None] = lambda arrays: None,
) -> dict[str, np.ndarray] | None:
    """The named arrays when the folder's manifest names ``version``, every file matches it and
    ``check`` finds nothing wrong with them (it returns a problem, or None); else None, after one
    warning line when something is wrong rather than merely out of date."""
    checked: dict[str, FileIdentity] = {}
    problem, warn = _problem(folder, version, names, checked)
    if problem is None:
        saved_again = False  # another process's save won the race: rebuilt quietly, nothing is wrong
        try:
            arrays = {
                name: np.load(folder / name, mmap_mode="r" if name in mmap else None, allow_pickle=False)
                for name in names
            }
            saved_again = not unchanged(folder, checked)
            problem = "saved again while it was read" if saved_again else check(arrays)
            if problem is None:
                return arrays
        except Exception as exc:  # noqa: BLE001 - whatever a derived file does wrong, the fix is a rebuild
            problem = f"unreadable ({type(exc).__name__}: {exc})"
        warn = not saved_again
    (log.warning if warn else log.info)("%s: rebuilding from the store: %s", folder, problem)
    return None

