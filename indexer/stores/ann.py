"""Approximate nearest vectors for top-k search: a faiss IVF index, a derived file of the store.

Why faiss, and IVF with 8-bit residual codes: at 10M spans × 384 dims an index that keeps its own
float32 vectors (HNSW in usearch or hnswlib, faiss IVF-Flat) holds 15+ GB. IVF with 8-bit
scalar-quantised residuals (per-dimension ranges) keeps 384 bytes a row (3.8 GB at 10M) in a file
that is memory-mapped, not read (below), so the searching process holds only the lists it probes.
Of faiss's scalar quantisers the 8-bit one is the fastest to scan (SIMD; 6-bit codes, 288 bytes a
row, scanned 2.8× slower with 6× the error on the benchmark's vectors) and its error (~0.001) is
well under the int8 copies' own; product quantisation is smaller still, but its error, ~0.03 on the
benchmark's vectors, is as large as the spread of the scores it has to rank. IVF is extended by
``add_with_ids`` without retraining (a write adds its rows, nothing is rebuilt) and takes an ID
selector (filtered search). A single query's lists are scanned on every core
(``parallel_mode = 1``; faiss's default splits only a batch of queries). Its scores are only close,
so it *proposes* candidates: the store scores them exactly and stops on a bound (``ann_ranking.py``).

``max_error`` bounds how far an index score may lie from the exact cosine. It is measured on each
index when it is built (the largest error on the top answers of sample queries, doubled) and kept
in its manifest. A row the index did not return scores at most the last returned score plus that
error, unless the probed lists missed it: that part is approximate, and measured as recall
(``bench/bench_search.py``: ``recall_at_10``).

On disk (``cache/ann-spans/``, ``cache/ann-passages/``): ``index.faiss``, trusted only through
its ``derived.py`` manifest, whose state names the base segment it was built on, the highest row
id it holds and its error bound (``ann2:<base state>:r<hi>:e<error>``). A saved index is
memory-mapped, not read (faiss ``IO_FLAG_MMAP``): opening costs no memory, and a search holds
only the pages of the lists it probes (at 10M spans the file is 3.8 GB; the 2.9 GB of 6-bit codes,
read whole, put the searching process over 4 GB). A mapped index is read-only, so rows above the saved ones (later
writes, in the tail segments) go to a small in-memory *delta* index with the same trained
quantisers, searched beside it; the file is saved again (merged) only when ``RESAVE_ROWS`` rows
were added since, so a write never waits for the whole index to be rewritten. Merging reads the
whole index into memory, so only ``Store.prepare()`` (the end of ``nerindex index``) does it; a
searching process maps the writer's new file instead.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import math
import mmap
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import derived
from .base import StoreVersion

log = logging.getLogger(__name__)

MIN_ROWS = 300_000  # below this the exact int8 scan is about as fast (BENCHMARKS.md, int8 segments)
TRAIN_PER_LIST = 32  # k-means training rows per inverted list
RESAVE_ROWS = 200_000  # rows added since the last save that make a new save worth it
RELEASE_BYTES = 1 << 30  # list bytes a mapped index may have probed before its pages are dropped
FILE = "index.faiss"
_STATE = re.compile(r"^ann3:(.*):r(\d+):w(g\d+\.[0-9a-f]*):e([0-9.]+)$")  # ann1: 6-bit codes; ann2: no write mark


def available() -> bool:
    """Whether faiss is installed (the [cpu] and [gpu] extras install it)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def lists_for(rows: int) -> int:
    """Inverted lists for ``rows`` vectors: √n, at most 1024. Assigning the rows costs rows · lists
    · dims multiply-adds (the exact coarse quantiser: an HNSW one returned too few lists to probe),
    so the cap keeps a 10M build to minutes; a search then scans ~10k rows a list at 10M."""
    return int(min(1024, max(1, math.sqrt(max(rows, 1)))))


@dataclass
class Index:
    """One IVF index over unit vectors with their store row ids, and what it covers: a base
    (memory-mapped once saved) and the rows added to it since (``delta``, in memory)."""

    faiss_index: object
    base_state: str  # the base segment it was built on
    row_hi: int  # highest row id added
    max_error: float  # |index score − exact cosine| bound measured at build time
    saved_hi: int = 0  # highest row id in the saved file (0: not saved)
    build_s: float = 0.0
    mapped: bool = False  # faiss_index is a read-only mapping of the saved file
    delta: object = None  # rows added to a mapped index, in an in-memory index like it
    probed_bytes: int = 0  # list bytes of the mapping searched since its pages were last dropped
    written: str = ""  # the store's write mark (segments.Segment.written) its newest rows come from

    def __post_init__(self) -> None:
        self.lock = threading.Lock()  # faiss indexes may not be searched while rows are added

    def state(self, row_hi: int | None = None) -> str:
        hi = self.row_hi if row_hi is None else row_hi
        return f"ann3:{self.base_state}:r{hi}:w{self.written}:e{self.max_error:.6f}"

    @property
    def lists(self) -> int:
        return int(self.faiss_index.nlist)

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add float32 rows (ids above ``row_hi``): to the index itself, or to the delta when it is mapped."""
        if len(ids):
            with self.lock:
                if self.mapped and self.delta is None:
                    self.delta = _empty_like(self.faiss_index)
                target = self.delta if self.mapped else self.faiss_index
                target.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
                self.row_hi = max(self.row_hi, int(ids.max()))

    def search(self, query: np.ndarray, k: int, probes: int, allowed_bits: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(row ids, index scores) of up to ``k`` rows, best first, from ``probes`` lists; only
        ids whose bit is set in ``allowed_bits`` (a little-endian bitmap by id) when given."""
        import faiss

        params = faiss.SearchParametersIVF(nprobe=int(min(probes, self.lists)))
        if allowed_bits is not None:
            selector = faiss.IDSelectorBitmap(len(allowed_bits), faiss.swig_ptr(allowed_bits))  # size in bytes
            params.sel = selector
        q = query.reshape(1, -1).astype(np.float32)
        with self.lock:
            scores, ids = self.faiss_index.search(q, int(k), params=params)
            if self.delta is not None and self.delta.ntotal:
                more_scores, more_ids = self.delta.search(q, int(k), params=params)
                scores, ids = np.hstack([scores, more_scores]), np.hstack([ids, more_ids])
                order = np.argsort(-scores[0], kind="stable")[: int(k)]
                scores, ids = scores[:, order], ids[:, order]
            if self.mapped:
                self.probed_bytes += params.nprobe * _list_bytes(self.faiss_index)
                if self.probed_bytes >= RELEASE_BYTES:
                    _release(self.faiss_index)
                    self.probed_bytes = 0
        keep = ids[0] >= 0
        return ids[0][keep], scores[0][keep]


def _mapping(index) -> tuple[int, int]:
    """(address, bytes) of a mapped index's lists; (0, 0) for one in memory."""
    import faiss

    lists = faiss.downcast_InvertedLists(faiss.downcast_index(index).invlists)
    return int(getattr(lists, "ptr", 0) or 0), int(getattr(lists, "totsize", 0) or 0)


def _list_bytes(index) -> int:
    """The mean size of one inverted list of a mapped index: what probing it maps, about."""
    return _mapping(index)[1] // max(int(index.nlist), 1)


def _release(index) -> None:
    """Drop the pages of a mapped index's lists from this process. They stay in the page cache,
    so mapping them again costs a minor fault a page (~0.7 µs), but while mapped they count in the
    process's memory: without this every list a search ever probed would stay counted, all 3.8 GB
    of them at 10M spans once filtered searches have probed widely. Dropped once searches have
    probed ``RELEASE_BYTES`` of lists, not after each: dropping and re-mapping the 128 lists a deep
    filtered search probes cost ~40 % of its time at 10M spans."""
    address, size = _mapping(index)
    if address and size and hasattr(mmap, "MADV_DONTNEED"):
        start = address - address % mmap.PAGESIZE
        _libc().madvise(start, size + address - start, mmap.MADV_DONTNEED)


@functools.lru_cache(maxsize=1)
def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc


def _empty_like(index) -> object:
    """An empty in-memory IVF index with the trained quantisers of ``index`` (so their codes and
    scores are alike, and one can be merged into the other)."""
    import faiss

    ivf = faiss.downcast_index(index)
    empty = faiss.IndexIVFScalarQuantizer(faiss.clone_index(ivf.quantizer), ivf.d, ivf.nlist, ivf.sq.qtype,
                                          ivf.metric_type, ivf.by_residual)
    empty.sq = ivf.sq
    empty.is_trained = True
    return _searching_on_every_core(empty)


def _map(folder: Path) -> object:
    """The index saved in ``folder``, memory-mapped (read-only); RuntimeError where faiss cannot."""
    import faiss

    return _searching_on_every_core(faiss.read_index(str(folder / FILE), faiss.IO_FLAG_MMAP))


def _searching_on_every_core(index):
    """``index``, set to scan one query's probed lists in parallel."""
    index.parallel_mode = 1
    return index


def build(chunks: Iterable[tuple[np.ndarray, np.ndarray]], rows: int, base_state: str, sample: np.ndarray,
          sample_ids: np.ndarray) -> Index:
    """Train on ``sample`` (float32 rows spread over the store, with their ids ascending), add
    every chunk of (vectors, ids), and measure the error bound on the sample rows."""
    import faiss

    began = time.perf_counter()
    dims = sample.shape[1]
    lists = min(lists_for(rows), max(1, len(sample)))
    quantiser = faiss.IndexFlatIP(dims)  # exact list choice (an HNSW one missed lists: rows never probed)
    index = faiss.IndexIVFScalarQuantizer(quantiser, dims, lists, faiss.ScalarQuantizer.QT_8bit,
                                          faiss.METRIC_INNER_PRODUCT, True)
    index.cp.min_points_per_centroid = 1  # small stores: fewer training rows per list are fine
    index.cp.niter = 8
    _searching_on_every_core(index)
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    out = Index(index, base_state, 0, 0.0)
    for vectors, ids in chunks:
        out.add(vectors, ids)
    out.max_error = measure_error(out, sample, sample_ids)
    out.build_s = time.perf_counter() - began
    log.info("ANN index: %d rows in %d lists, built in %.1f s, error bound %.4f", rows, lists, out.build_s,
             out.max_error)
    return out


def measure_error(index: Index, sample: np.ndarray, sample_ids: np.ndarray, queries: int = 16, k: int = 256) -> float:
    """Twice the largest |index score − cosine| over the top ``k`` sample rows answering
    ``queries`` sample rows used as queries, and never below 0.01 (the rows given to the index are
    int8 copies, themselves within ~0.002 of the float32 vectors)."""
    if len(sample_ids) == 0:
        return 0.01
    bits = np.zeros(int(sample_ids.max()) + 1, dtype=bool)
    bits[sample_ids] = True
    bits = np.packbits(bits, bitorder="little")
    worst = 0.0
    rng = np.random.default_rng(0)
    for i in rng.choice(len(sample), size=min(queries, len(sample)), replace=False):
        q = sample[i] / max(float(np.linalg.norm(sample[i])), 1e-12)
        ids, scores = index.search(q, k, probes=min(index.lists, 256), allowed_bits=bits)
        if len(ids):
            exact = sample[np.searchsorted(sample_ids, ids)] @ q
            worst = max(worst, float(np.abs(exact - scores).max()))
    return max(0.01, 2 * worst)


# ---------------------------------------------------------------------------- on disk


def load(folder: Path, identity: str, base_state: str, in_history: Callable[[str], bool]) -> Index | None:
    """The saved index when its manifest names this store and base segment, the write its newest
    rows come from is in the store's history (``embedded_schema.in_history``: not so in a
    store.sqlite restored from a backup and written again) and its file checks out; else None
    (the caller rebuilds)."""
    state = derived.manifest_state(folder)
    match = _STATE.match(state or "")
    if match is None or match.group(1) != base_state:
        if state is not None:
            log.info("%s: rebuilding the ANN index: made for another base segment (or by an older nerindex)", folder)
        return None
    if not in_history(match.group(3)):
        log.warning("%s: rebuilding the ANN index: made from a write this store.sqlite has not seen", folder)
        return None
    checked = derived.trusted(folder, StoreVersion(identity, state or ""), (FILE,))
    if checked is None:
        return None
    try:
        index = _map(folder)
    except RuntimeError as exc:
        log.warning("%s: rebuilding the ANN index: unreadable (%s)", folder, exc)
        return None
    if not derived.unchanged(folder, checked):  # saved again between the check and the mapping
        log.info("%s: rebuilding the ANN index: saved again while it was read", folder)
        return None
    row_hi = int(match.group(2))
    return Index(index, base_state, row_hi, float(match.group(4)), row_hi, mapped=True, written=match.group(3))


def saved_hi(folder: Path, base_state: str) -> int:
    """The highest row id in the index saved in ``folder`` for ``base_state`` (0: none), from its
    manifest alone (a small file: cheap enough to look at on every search)."""
    match = _STATE.match(derived.manifest_state(folder) or "")
    return int(match.group(2)) if match is not None and match.group(1) == base_state else 0


def save(folder: Path, identity: str, index: Index) -> bool:
    """Save the index with a manifest naming what it covers, then map the saved file in place of
    the index in memory. A mapped index with a delta is read whole, merged and written again:
    the one time its size is held in memory (every ``RESAVE_ROWS`` added rows)."""
    import faiss

    with index.lock:
        whole = index.faiss_index
        if index.mapped and index.delta is not None and index.delta.ntotal:
            if saved_hi(folder, index.base_state) != index.saved_hi:
                return False  # another process saved a newer file since this one was mapped: map that instead
            whole = faiss.read_index(str(folder / FILE))
            whole.merge_from(index.delta, 0)
        elif index.mapped:
            return True  # nothing added since it was saved

        def write(handle) -> None:
            faiss.write_index(whole, faiss.PyCallbackIOWriter(handle.write))

        row_hi = index.row_hi
        ok = derived.save_files(folder, StoreVersion(identity, index.state(row_hi)), {FILE: write})
        if ok:
            index.saved_hi = row_hi
            try:  # the file on disk, if it is still this save's (a review: a rival's, renamed in
                mapped = _map(folder)  # just after, was mapped as this one's rows)
                if mapped.ntotal != whole.ntotal or derived.manifest_state(folder) != index.state(row_hi):
                    raise RuntimeError("another process saved it again meanwhile")
                index.faiss_index, index.mapped, index.delta = mapped, True, None
            except RuntimeError as exc:  # keep the index in memory: it is whole
                log.warning("%s: the saved ANN index could not be mapped (%s)", folder, exc)
                index.faiss_index, index.mapped, index.delta = whole, False, None
    return ok
