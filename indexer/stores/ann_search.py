"""The embedded store's ANN indexes, kept in step with its int8 segments.

One index over span vectors and, on stores of 300k passages or more, one over passage vectors (built on the first top-k search with
λ > 0), each built from the segments (their int8 rows, dequantised) when none on disk matches the
base segment, and extended with the rows of later segments (writes) when a search finds it behind.
Row ids are store rowids, which are never reused, so a row in an index always has the vector it
was given; rows deleted since are still in it and are dropped when scored from SQLite.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import ann, int8_scan, segments
from .embedded_schema import parse_mark

log = logging.getLogger(__name__)

CHUNK = 65536
KINDS = ("spans", "passages")


def _take(seg: segments.Segment, kind: str, at: np.ndarray | slice) -> np.ndarray:
    """float32 rows at positions ``at`` (ascending, or a slice) of one segment, dequantised."""
    if kind == "spans":
        return seg.vectors[:, at].T.astype(np.float32) * seg.scales[at, None]
    return seg.passage_vectors[at].astype(np.float32) * seg.passage_scales[at, None]


def _ids(vec: segments.SegmentSet, kind: str) -> list[np.ndarray]:
    """Each segment's row ids (span or passage rowids, ascending), from the set's own copies (the
    segments' id files are memory-mapped and left alone)."""
    ids, offsets = (vec.span, vec.offsets) if kind == "spans" else (vec.passage_rows, vec.passage_offsets)
    return [ids[offsets[k] : offsets[k + 1]] for k in range(len(vec.segments))]


def rows_above(vec: segments.SegmentSet, kind: str, row_hi: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of (float32 rows, ids) with ids above ``row_hi``, segment by segment; each
    memory-mapped segment's pages are dropped from the process after each chunk."""
    for seg, ids in zip(vec.segments, _ids(vec, kind)):
        if len(ids) == 0 or int(ids[-1]) <= row_hi:
            continue
        start = int(np.searchsorted(ids, row_hi, side="right"))
        for lo in range(start, len(ids), CHUNK):
            hi = min(lo + CHUNK, len(ids))
            yield _take(seg, kind, slice(lo, hi)), ids[lo:hi]
            int8_scan.release(seg.vectors)
            int8_scan.release(seg.passage_vectors)


def _sample(vec: segments.SegmentSet, kind: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(``size`` rows drawn at random from every segment, their ids): k-means training rows."""
    all_ids = _ids(vec, kind)
    total = sum(len(ids) for ids in all_ids)
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(total, size=min(size, total), replace=False))
    parts, ids, offset = [], [], 0
    for seg, seg_ids in zip(vec.segments, all_ids):
        n = len(seg_ids)
        local = picks[(picks >= offset) & (picks < offset + n)] - offset
        for lo in range(0, n, CHUNK):
            inside = local[(local >= lo) & (local < lo + CHUNK)]
            if inside.size:
                parts.append(_take(seg, kind, inside))
                ids.append(seg_ids[inside])
        int8_scan.release(seg.vectors)
        int8_scan.release(seg.passage_vectors)
        offset += n
    if not parts:
        return np.zeros((0, vec.segments[0].vectors.shape[0]), np.float32), np.zeros(0, np.int64)
    return np.concatenate(parts), np.concatenate(ids)


def later_mark(a: str, b: str) -> str:
    """Of two write marks (``embedded_schema.written_mark``) of one history, the later one."""
    def generation(mark: str) -> int:
        parsed = parse_mark(mark)
        return parsed[0] if parsed else -1

    return a if generation(a) >= generation(b) else b


class AnnIndexes:
    """The ANN indexes of one store folder (``cache/ann-<kind>/``)."""

    def __init__(self, cache: Path, in_history: Callable[[str], bool]) -> None:
        self.cache = cache
        self.in_history = in_history  # embedded_schema.in_history of the store: see ann.load
        self._lock = threading.Lock()
        self._indexes: dict[str, ann.Index] = {}
        self.built_s: dict[str, float] = {}  # seconds each build in this process took, by kind

    def clear(self) -> None:
        """Forget the loaded indexes (the store was closed): their mapped files close with them."""
        with self._lock:
            self._indexes.clear()

    def get(self, vec: segments.SegmentSet, identity: str, kind: str, *, merge: bool = False) -> ann.Index:
        """The index of ``kind`` holding every row of ``vec``: loaded, built or extended.

        An index (mapped, or held in memory) whose saved file another process (a writer's
        ``prepare()``) has since replaced with a fuller one is mapped again, so a searching
        process's delta stays small.
        Only ``merge`` (``Store.prepare``) merges a delta into a new file: merging reads the
        whole index into memory (3.8 GB at 10M spans), which a searching process must not."""
        with self._lock:
            base_state = vec.segments[0].state()
            index = self._indexes.get(kind)
            folder = self.cache / f"ann-{kind}"
            if index is not None and not self.in_history(index.written):
                index = None  # store.sqlite restored from a backup and written: rows above its base may be others
            if index is None or index.base_state != base_state:
                index = ann.load(folder, identity, base_state, self.in_history) if vec.persisted else None
                if index is None:
                    index = self._build(vec, kind, base_state)
                    self.built_s[kind] = index.build_s
            elif ann.saved_hi(folder, base_state) > index.saved_hi:  # held in memory too: a save that found
                # another process's file in place of its own (a review: it then wrote over each newer one)
                index = ann.load(folder, identity, base_state, self.in_history) or index  # unreadable (mid-save): keep ours
            for rows, ids in rows_above(vec, kind, index.row_hi):
                index.add(rows, ids)
            index.written = later_mark(index.written, vec.segments[-1].written)
            due = index.row_hi - index.saved_hi >= min(ann.RESAVE_ROWS, max(index.row_hi, 1))
            if vec.persisted and due and (merge or not index.mapped):
                ann.save(folder, identity, index)
            self._indexes[kind] = index
            return index

    @staticmethod
    def _build(vec: segments.SegmentSet, kind: str, base_state: str) -> ann.Index:
        rows = sum(len(ids) for ids in _ids(vec, kind))
        sample, ids = _sample(vec, kind, ann.TRAIN_PER_LIST * ann.lists_for(rows))
        return ann.build(rows_above(vec, kind, -1), rows, base_state, sample, ids)
