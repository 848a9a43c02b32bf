"""What page size the span scan's file is cached in, and what that costs each scan.

A scan maps the whole int8 matrix (``[dims, rows]``) again on every search and drops the pages
after each block (``int8_scan.scan_dots``), so its RSS stays low. Mapping 3.8 GB (10M spans) in
4 KB pages costs tens of thousands of page faults per scan, in kernel time; in 2 MB pages a few
thousand. Which one a scan gets is decided when the file is read from disk into the page cache:
through a plain mapping Linux reads 4 KB folios, through a mapping marked ``MADV_HUGEPAGE``
(``derived.prefer_huge_pages``, what the store does since issue 14's fifth round) 2 MB ones.

This benchmark evicts the file from the page cache, reads it back by scanning it through a plain
mapping or through a hinted one (interleaved: plain, hinted, plain, hinted…), then times warm scans
through a plain mapping in a fresh process, so the only difference is how the pages were first
read. It prints one JSON object per way with the median scan time, page faults and kernel time
per scan, and the load average around each round.

    python bench/bench_scan_pages.py --rows 10000000 --rounds 3
    python bench/bench_scan_pages.py --file STORE/cache/vectors.npy   # a real store's matrix

Linux only (``posix_fadvise``); the file needs ``--rows`` × 384 bytes of disk and of page cache.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.stores import derived, int8_scan
from bench_args import count, run  # noqa: E402

DIMS = 384


def make_matrix(path: Path, rows: int) -> None:
    """A random int8 ``[DIMS, rows]`` .npy, written in blocks and fsynced (clean pages can be evicted)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.int8, shape=(DIMS, rows))
    rng = np.random.default_rng(0)
    for r in range(0, DIMS, 16):
        out[r : r + 16] = rng.integers(-127, 128, size=(min(16, DIMS - r), rows), dtype=np.int8)
    out.flush()
    del out
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def scans(path: Path, count: int, hinted: bool) -> list[dict]:
    """``count`` scans of the matrix through a fresh mapping: time, page faults, kernel time each."""
    matrix = np.load(path, mmap_mode="r")
    if hinted:
        derived.prefer_huge_pages(matrix._mmap)
    sums = np.zeros(matrix.shape[1], dtype=np.int32)
    query = np.random.default_rng(1).integers(-127, 128, size=matrix.shape[0], dtype=np.int8)
    out = []
    for _ in range(count):
        before = resource.getrusage(resource.RUSAGE_SELF)
        began = time.perf_counter()
        int8_scan.scan_dots(matrix, sums, query)
        after = resource.getrusage(resource.RUSAGE_SELF)
        out.append({"ms": (time.perf_counter() - began) * 1000, "faults": after.ru_minflt - before.ru_minflt,
                    "sys_s": after.ru_stime - before.ru_stime})
    return out


def check_matrix(path: Path) -> None:
    """Refuse, in one line, a ``--file`` that is not an int8 ``[dims, rows]`` .npy before anything
    is evicted or timed (an audit: a child's traceback after the first eviction)."""
    try:
        matrix = np.load(path, mmap_mode="r")
    except ValueError:  # not a .npy (numpy's words are about pickles); a missing file is run's OSError
        raise SystemExit(f"error: {path}: not a .npy file; --file takes an int8 [dims, rows] .npy") from None
    if matrix.dtype != np.int8 or matrix.ndim != 2:
        raise SystemExit(f"error: {path}: a {matrix.dtype} array of shape {matrix.shape}; "
                         "--file takes an int8 [dims, rows] .npy")


def child(path: Path, way: str, count: int) -> list[dict]:
    """One phase in a fresh process; its failure ends this run with its last stderr line."""
    args = [sys.executable, __file__, "--child", way, "--file", str(path), "--scans", str(count)]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1].removeprefix("error: ")
        raise SystemExit(f"error: the {way} scan failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=count, default=10_000_000, help="spans in the synthetic matrix (default: %(default)s)")
    parser.add_argument("--file", type=Path, help="scan this int8 [dims, rows] .npy instead of a synthetic one")
    parser.add_argument("--rounds", type=count, default=3, help="rounds of plain and hinted reads (default: %(default)s)")
    parser.add_argument("--scans", type=count, default=7, help="warm scans timed per round (default: %(default)s)")
    parser.add_argument("--child", choices=["read-plain", "read-hinted", "warm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "warm":
            result = scans(args.file, args.scans, hinted=False)
        else:
            result = scans(args.file, 1, hinted=args.child == "read-hinted")
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("NERINDEX_BENCH_DIR")) as tmp:
        path = args.file
        if path is not None:
            check_matrix(path)
        else:
            path = Path(tmp) / "vectors.npy"
            make_matrix(path, args.rows)
        figures: dict[str, list[dict]] = {"plain": [], "hinted": []}
        loads: dict[str, list] = {"plain": [], "hinted": []}
        for _ in range(args.rounds):
            for way in ("plain", "hinted"):
                evict(path)
                loads[way].append(round(os.getloadavg()[0], 2))
                child(path, f"read-{way}", 1)  # the cold read that decides the folio size
                figures[way] += child(path, "warm", args.scans)
                loads[way].append(round(os.getloadavg()[0], 2))
        rows = np.load(path, mmap_mode="r").shape[1]
        for way, runs in figures.items():
            ms = [r["ms"] for r in runs]
            print(json.dumps({
                "first_read_through": f"{way} mapping", "rows": rows, "scans": len(runs),
                "scan_ms_median": round(statistics.median(ms), 1), "scan_ms_min": round(min(ms), 1),
                "scan_ms_max": round(max(ms), 1),
                "faults_per_scan_median": int(statistics.median(r["faults"] for r in runs)),
                "sys_s_per_scan_median": round(statistics.median(r["sys_s"] for r in runs), 3),
                "load_1min": loads[way],
            }))


if __name__ == "__main__":
    run(main)
