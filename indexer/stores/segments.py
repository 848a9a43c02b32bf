"""Span and passage vectors of the embedded store as int8 segments that grow with each write.

SQLite stays the source of truth (float32 blobs); this module keeps a derived, quantised copy that
a search scans. Each vector is stored as int8 with its own scale (``scale = max|v| / 127``,
``v ≈ q · scale``): a quarter of float32's memory, scanned by the kernel of :mod:`.int8_scan`, for
which a segment stores its span vectors transposed (``[dims, rows]``) with each row's sum.

Layout (``cache/``, every folder trusted only through ``derived.py``'s manifest):

- ``cache/`` itself is the *base* segment: every live span and passage up to some rowid, made in
  one snapshot. Its manifest's state names what it covers:
  ``seg4:s<lo>-<hi>:p<lo>-<hi>:t<seq>:w<mark>`` (span rowids, passage rowids, the last tombstone
  already left out, and the store's last write when its rows were read: ``g<generation>.<token>``).
  ``seg4`` segments hold each span's mention flag (``mentions.npy``); older ones (``seg3`` and
  before) lack it and are rebuilt, never read as if every span were a mention.
- ``cache/tail-<hex>/`` are *tail* segments, one per refresh after a write: the spans and
  passages with rowids above the previous segment's. ``cache/segments.json`` lists them in
  order with the base they extend; a chain that does not join up is cut where it breaks, and
  what it misses is read from SQLite.

Rows never change once written: the store gives every new span and passage a rowid above any
used before (``EmbeddedStore.write``), and a replaced or deleted row leaves a *tombstone* row in
SQLite (a trigger), which marks it dead here. So a segment stays valid after any later write, and a
refresh after writing one passage reads one passage, not the store. A loaded set is accepted only
when its live rows add up to the store's row counts; anything else (a store written by an older
nerindex that reused a rowid, a lost file) means a full rebuild, never a wrong answer; so does a
segment whose write mark the store's write log lacks (``embedded_schema.LOG_WRITE_SQL``).

Quantised scores are approximate: ``|int8 score − float32 score| < EPSILON`` for the unit vectors
the encoder makes (the error is about 0.001; see the tests). The store re-scores from the float32
blobs every span whose approximate score is within EPSILON of the decision it takes part in, so
answers are the exact ones whenever that bound holds.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from ..atomic_files import write_bytes
from . import derived
from .base import StoreVersion
from .int8_scan import quantise, release, scan_dots

log = logging.getLogger(__name__)

EPSILON = 0.01
FILES = ("vectors.npy", "sums.npy", "scales.npy", "ids.npy", "passage_vectors.npy", "passage_scales.npy",
         "passage_ids.npy", "details.npy", "labels.npy", "mentions.npy")
MMAP = ("vectors.npy", "passage_vectors.npy", "ids.npy", "details.npy")  # ids: read once into SegmentSet, then dropped
LIST = "segments.json"
MAX_TAILS = 16  # more tails than this are merged into one
ORPHAN_AGE_S = 600.0  # an unlisted tail folder older than this is a leftover (remove_orphan_tails)
_STATE = re.compile(r"^seg4:s(\d+)-(\d+):p(\d+)-(\d+):t(\d+):w(g\d+\.[0-9a-f]*)$")


def dots(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``matrix @ query`` as float32, the same for a row wherever it sits in ``matrix``.

    Why: a float32 matrix-vector product sums a row in an order that depends on its position (the
    kernel's blocks and tails), so identical passages got cosines 7e-9 apart, and their order, and
    which of them made a top-k, changed with ``--limit`` (an audit). Here each row is summed in
    float64 (float32 and int8 products are exact there; sums in another order differ by ~1e-16,
    which the rounding to float32 removes), cast chunk by chunk by einsum: ~3x a float32 product's
    time (24 against 8 ms for 100k rows of 384), not the 13x of a float64 copy of the matrix. The
    exact scores (``embedded_read``) and the int8 passage cosines of a big ``--all`` use it."""
    return np.einsum("ij,j->i", matrix, np.asarray(query, np.float64), dtype=np.float64).astype(np.float32)


class SpanDetails(NamedTuple):
    """What a hit shows of some spans: start, end and an index into ``texts``, the label lists
    as SQLite holds them (JSON)."""

    starts: np.ndarray
    ends: np.ndarray
    labels: np.ndarray
    texts: list[str]


@dataclass
class Segment:
    """One segment: rows of spans (rowid ascending) and of passages, with what it covers."""

    span_lo: int  # covers span rowids in (span_lo, span_hi]
    span_hi: int
    passage_lo: int
    passage_hi: int
    vectors: np.ndarray  # int8 [d, n]: transposed, see int8_dots
    sums: np.ndarray  # int32 [n]: each span's int8 components summed
    scales: np.ndarray  # float32 [n]
    ids: np.ndarray  # int64 [n, 2]: passage rowid, span rowid
    passage_vectors: np.ndarray  # int8 [m, d]
    passage_scales: np.ndarray  # float32 [m]
    passage_ids: np.ndarray  # int64 [m]
    # what a hit shows of a span, so an --all of 33k passages reads no span row (0.1 s at 10M):
    details: np.ndarray  # int32 [n, 3]: start, end, index into the label lists
    labels: np.ndarray  # uint8: UTF-8 JSON list of the segment's distinct label lists, each as SQLite holds it
    mentions: np.ndarray  # bool [n]: False for a candidate (ranks, is never marked: records.EncodedSpan)
    tombstone: int = 0  # base only: tombstones up to this seq are already left out
    name: str = ""  # "" for the base, else its folder in cache/
    written: str = ""  # the store's written mark when its rows were read (embedded_schema.written_mark)
    _texts: list[str] | None = field(default=None, repr=False, compare=False)  # labels, parsed once

    def state(self) -> str:
        return f"seg4:s{self.span_lo}-{self.span_hi}:p{self.passage_lo}-{self.passage_hi}:t{self.tombstone}:w{self.written}"

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(zip(FILES, (self.vectors, self.sums, self.scales, self.ids, self.passage_vectors,
                                self.passage_scales, self.passage_ids, self.details, self.labels, self.mentions)))

    def label_texts(self) -> list[str]:
        if self._texts is None:
            self._texts = json.loads(self.labels.tobytes()) if self.labels.size else []
        return self._texts

    @classmethod
    def from_rows(cls, span_rows: Sequence[tuple], passage_rows: Sequence[tuple[int, bytes | None]],
                  dims: int, lo: tuple[int, int], hi: tuple[int, int], tombstone: int = 0, name: str = "",
                  written: str = "") -> "Segment":
        """A segment from SQLite rows: (passage, span rowid, float32 blob, start, end, labels,
        mention) and (rowid, blob)."""
        spans = _matrix([r[2] for r in span_rows], dims)
        zero = bytes(4 * dims)
        passages = _matrix([b if b and len(b) == len(zero) else zero for _, b in passage_rows], dims)
        vectors, scales = quantise(spans)
        pvectors, pscales = quantise(passages)
        ids = np.asarray([(r[0], r[1]) for r in span_rows], dtype=np.int64).reshape(-1, 2)
        pids = np.asarray([r[0] for r in passage_rows], dtype=np.int64)
        sums = vectors.sum(axis=1, dtype=np.int32)
        texts: dict[str, int] = {}
        details = np.asarray([(r[3], r[4], texts.setdefault(r[5], len(texts))) for r in span_rows],
                             dtype=np.int32).reshape(-1, 3)
        mentions = np.asarray([bool(r[6]) for r in span_rows], dtype=bool)
        return cls(lo[0], hi[0], lo[1], hi[1], np.ascontiguousarray(vectors.T), sums, scales, ids, pvectors, pscales,
                   pids, details, label_bytes(list(texts)), mentions, tombstone, name, written)

    @classmethod
    def merged(cls, parts: Sequence["Segment"], name: str) -> "Segment":
        """Consecutive tails as one."""
        def cat(attr: str) -> np.ndarray:
            return np.concatenate([getattr(p, attr) for p in parts])

        vectors = np.concatenate([p.vectors for p in parts], axis=1)
        details, texts = joined_details(parts)
        return cls(parts[0].span_lo, parts[-1].span_hi, parts[0].passage_lo, parts[-1].passage_hi,
                   vectors, cat("sums"), cat("scales"), cat("ids"), cat("passage_vectors"), cat("passage_scales"),
                   cat("passage_ids"), details, label_bytes(texts), cat("mentions"), 0, name, parts[-1].written)


def label_bytes(texts: list[str]) -> np.ndarray:
    return np.frombuffer(json.dumps(texts, ensure_ascii=False).encode("utf-8"), dtype=np.uint8).copy()


def joined_details(parts: Sequence[Segment]) -> tuple[np.ndarray, list[str]]:
    """The parts' span details end to end, their label indexes into one list of distinct texts."""
    texts: dict[str, int] = {}
    out = []
    for part in parts:
        details = np.array(part.details, dtype=np.int32)
        details[:, 2] = label_indexes(part, texts)
        out.append(details)
    return (np.concatenate(out) if out else np.zeros((0, 3), np.int32)), list(texts)


def label_indexes(part: Segment, texts: dict[str, int]) -> np.ndarray:
    """``part``'s label indexes as indexes into ``texts`` (distinct texts, extended as needed)."""
    remap = np.asarray([texts.setdefault(t, len(texts)) for t in part.label_texts()] or [0], dtype=np.int32)
    return remap[part.details[:, 2]]


def _matrix(blobs: Sequence[bytes], dims: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dims), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dims)


@dataclass
class SegmentSet:
    """Every segment of one store version in memory, with the rows tombstones mark dead."""

    version: StoreVersion | None
    segments: list[Segment]
    dead_spans: set[int] = field(default_factory=set)
    dead_passages: set[int] = field(default_factory=set)
    tombstone: int = 0  # last tombstone seq applied
    persisted: bool = False  # the segments are on disk, so tails may be added there
    lazy: bool = False  # only read for span_hi / passage_hi / tombstone, then extended

    def __post_init__(self) -> None:
        if not self.lazy:
            self.reindex()

    def reindex(self) -> None:
        segs = self.segments
        self.passage = np.concatenate([s.ids[:, 0] for s in segs]) if segs else np.zeros(0, np.int64)
        self.span = np.concatenate([s.ids[:, 1] for s in segs]) if segs else np.zeros(0, np.int64)
        for s in segs:
            release(s.ids)
        self.scales = np.concatenate([s.scales for s in segs]) if segs else np.zeros(0, np.float32)
        self.mention = np.concatenate([s.mentions for s in segs]) if segs else np.zeros(0, bool)
        # whether any span is a candidate: a store without any pays nothing for the mention rules
        self.candidates = not bool(self.mention.all())
        self.passage_rows = np.concatenate([s.passage_ids for s in segs]) if segs else np.zeros(0, np.int64)
        self.alive = np.ones(len(self.span), dtype=bool)
        self.passage_sorted: bool | None = None  # see spans_of
        if self.dead_spans:
            self.alive &= ~np.isin(self.span, np.fromiter(self.dead_spans, dtype=np.int64))
        self.use(segs)

    def spans_of(self, passages: np.ndarray) -> np.ndarray:
        """Span rowids of these passage rowids (dead ones too). Spans are stored in rowid order and
        a passage's spans get rowids after those of every earlier passage (``EmbeddedStore.write``),
        so each passage's spans are one range, found by bisection; a set where that does not
        hold (checked once) takes the slow way."""
        if self.passage_sorted is None:
            self.passage_sorted = bool(np.all(self.passage[1:] >= self.passage[:-1]))
        if not self.passage_sorted:
            return self.span[np.isin(self.passage, passages)]
        lo = np.searchsorted(self.passage, passages, side="left")
        counts = np.searchsorted(self.passage, passages, side="right") - lo
        firsts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
        return self.span[np.arange(int(counts.sum())) + firsts]

    def use(self, segs: list[Segment]) -> None:
        """The same rows, in other segments (consecutive tails merged into one)."""
        self.segments = segs
        self.offsets = np.cumsum([0] + [len(s.ids) for s in segs])
        self.passage_offsets = np.cumsum([0] + [len(s.passage_ids) for s in segs])

    def extended(self, version: StoreVersion, tail: Segment | None,
                 tombstones: Sequence[tuple[int, str, int]]) -> "SegmentSet":
        """A new set: this one plus ``tail``, less the rows the tombstones mark dead."""
        dead_spans, dead_passages = set(self.dead_spans), set(self.dead_passages)
        for _, kind, row in tombstones:
            (dead_spans if kind == "s" else dead_passages).add(row)
        return SegmentSet(version, self.segments + ([tail] if tail is not None else []), dead_spans, dead_passages,
                          tombstones[-1][0] if tombstones else self.tombstone, self.persisted)

    @property
    def span_hi(self) -> int:
        return self.segments[-1].span_hi if self.segments else 0

    @property
    def passage_hi(self) -> int:
        return self.segments[-1].passage_hi if self.segments else 0

    def live_counts(self) -> tuple[int, int]:
        passages = len(self.passage_rows)
        if self.dead_passages:
            passages -= int(np.isin(self.passage_rows, np.fromiter(self.dead_passages, dtype=np.int64)).sum())
        return int(self.alive.sum()), passages

    def positions(self, span_ids: np.ndarray) -> np.ndarray:
        """Positions of these span rowids in the set (spans are in rowid order); rowids it does not
        hold (added to a shared ANN index by a newer set while a search runs) are left out."""
        at = np.minimum(np.searchsorted(self.span, span_ids), max(len(self.span) - 1, 0))
        held = self.span[at] == span_ids if len(self.span) else np.zeros(len(span_ids), dtype=bool)
        return at[held]

    def span_details(self, at: np.ndarray) -> SpanDetails:
        """Start, end and labels (as SQLite holds them) of the rows at positions ``at``, in that
        order, read from each segment's (mapped) details: nothing is gathered when a set is made."""
        rows = np.empty((len(at), 3), dtype=np.int32)
        texts: list[str] = []
        seg_of = np.searchsorted(self.offsets, at, side="right") - 1
        for k, seg in enumerate(self.segments):
            mine = seg_of == k
            if mine.any():
                rows[mine] = seg.details[at[mine] - self.offsets[k]]
                rows[mine, 2] += len(texts)  # each segment numbers its own label lists
                texts += seg.label_texts()
        return SpanDetails(rows[:, 0], rows[:, 1], rows[:, 2], texts)

    def approx_sims(self, query: np.ndarray) -> np.ndarray:
        """Approximate cosine of every row (dead rows included: mask them with ``alive``)."""
        (q,), (qscale,) = quantise(query.reshape(1, -1))
        out = np.empty(len(self.span), dtype=np.float32)
        for seg, start in zip(self.segments, self.offsets):
            out[start : start + len(seg.ids)] = scan_dots(seg.vectors, seg.sums, q)
        out *= self.scales
        out *= qscale
        return out

    def approx_all_passage_sims(self, query: np.ndarray, block: int = 16384) -> np.ndarray:
        """Approximate cos(query, passage vector) of every passage row of the set, in
        ``passage_rows`` order (dead rows included), a block of rows at a time (each block's float32
        copy ~25 MB, not the whole matrix's); each memory-mapped segment's pages are dropped from
        the process after it, as every whole read does (a review: 115 MB stayed mapped at 300k)."""
        out = np.empty(len(self.passage_rows), dtype=np.float32)
        q = np.asarray(query, dtype=np.float32)
        for seg, start in zip(self.segments, self.passage_offsets):
            for lo in range(0, len(seg.passage_ids), block):
                hi = min(lo + block, len(seg.passage_ids))
                rows = seg.passage_vectors[lo:hi].astype(np.float32) @ q
                out[start + lo : start + hi] = rows * seg.passage_scales[lo:hi]
            release(seg.passage_vectors)
        return out

    def approx_passage_sims(self, rowids: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Approximate cos(query, passage vector) of passage rowids present in the set."""
        where = np.searchsorted(self.passage_rows, rowids)
        seg_of = np.searchsorted(self.passage_offsets, where, side="right") - 1
        out = np.empty(len(rowids), dtype=np.float32)
        for k, seg in enumerate(self.segments):
            mask = seg_of == k
            if mask.any():
                local = where[mask] - self.passage_offsets[k]
                # the final scores of a big --all: identical passages get one cosine (a review)
                out[mask] = dots(seg.passage_vectors[local], query) * seg.passage_scales[local]
        return out


# ---------------------------------------------------------------------------- on disk


def _parse(state: str) -> tuple[tuple[int, ...], str] | None:  # (span lo, hi, passage lo, hi, tombstone), mark
    match = _STATE.match(state)
    return (tuple(int(g) for g in match.groups()[:5]), match.group(6)) if match else None


def _check(dims: int):
    def consistent(a: dict[str, np.ndarray]) -> str | None:
        v, sums, s, ids, pv, ps, pids, details, labels, mentions = (a[name] for name in FILES)
        if v.dtype != np.int8 or v.ndim != 2 or v.shape[0] != dims or pv.ndim != 2 or pv.shape[1] != dims:
            return f"vectors of shape {v.shape} and {pv.shape}, the model has {dims} dims"
        n = v.shape[1]
        if sums.shape != (n,) or s.shape != (n,) or ids.shape != (n, 2) or ps.shape != (len(pv),) \
                or pids.shape != (len(pv),) or details.shape != (n, 3) or labels.dtype != np.uint8 \
                or mentions.shape != (n,) or mentions.dtype != np.bool_:
            return "ids, scales and vectors differ in length"
        return None

    return consistent


def _load(folder: Path, identity: str, state: str, dims: int, name: str,
          in_history: Callable[[str], bool]) -> Segment | None:
    parsed = _parse(state)
    if parsed is None:
        log.info("%s: rebuilding from the store: made by an older nerindex", folder)
        return None
    bounds, written = parsed
    arrays = derived.load_arrays(folder, StoreVersion(identity, state), FILES, mmap=MMAP, check=_check(dims))
    if arrays is None:  # another store, or damaged: says which
        return None
    if not in_history(written):
        log.warning("%s: made after a write this store.sqlite has not seen (a restored backup?): unused", folder)
        return None
    s_lo, s_hi, p_lo, p_hi, tomb = bounds
    mapped = getattr(arrays["vectors.npy"], "_mmap", None)
    if mapped is not None:  # a miss while scanning reads 2 MB folios too
        derived.prefer_huge_pages(mapped)
    return Segment(s_lo, s_hi, p_lo, p_hi, *(arrays[n] for n in FILES), tomb, name, written)


def _read_list(cache: Path) -> dict:
    try:
        listing = json.loads((cache / LIST).read_bytes())
        return listing if isinstance(listing, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_list(cache: Path, base: Segment, tails: Sequence[Segment], *, quiet: bool = False) -> bool:
    """Write the segment list; ``quiet``: a cache that cannot be written is said at info level (a
    reader of a read-only store cuts the list on every open)."""
    listing = {"base": base.state(), "tails": [{"name": t.name, "state": t.state()} for t in tails]}
    text = json.dumps(listing, indent=1).encode("utf-8")
    try:
        write_bytes(cache / LIST, text)
    except OSError as exc:
        log.log(logging.INFO if quiet else logging.WARNING, "%s: cannot save the segment list (%s)", cache,
                exc.strerror or exc)
        return False
    return True


def load(cache: Path, identity: str, dims: int, in_history: Callable[[str], bool]) -> list[Segment]:
    """The base segment and the tails that extend it, as far as they check out ([] if no base);
    ``in_history``: whether a segment's write mark is in the store's history (``embedded_schema``)."""
    state = derived.manifest_state(cache)
    base = _load(cache, identity, state or "", dims, "", in_history) if state is not None else None
    if state is None:
        derived.load_arrays(cache, StoreVersion(identity, ""), FILES)  # says why (quietly if no manifest)
    if base is None:
        return []
    segments = [base]
    listing = _read_list(cache)
    if listing.get("base") != base.state():
        return segments
    for entry in listing.get("tails", []):
        try:
            name, tail_state = str(entry["name"]), str(entry["state"])
        except (KeyError, TypeError):
            break
        parsed = _parse(tail_state)
        if parsed is None or not re.fullmatch(r"tail-[0-9a-f]+", name) or parsed[0][0] != segments[-1].span_hi \
                or parsed[0][2] != segments[-1].passage_hi:
            break
        tail = _load(cache / name, identity, tail_state, dims, name, in_history)
        if tail is None:
            if not in_history(parsed[1]):  # refused for the history it was made in, not as damaged
                _delist_lost(cache, listing, base, segments[1:])
            break
        segments.append(tail)
    return segments


def _delist_lost(cache: Path, listing: dict, base: Segment, kept: Sequence[Segment]) -> None:
    """Cut the list before a tail made in a history store.sqlite lacks (a restored backup): no
    process can use it or what follows it, and listed on it made every later ``save_tail`` see
    another's chain, so no tail was saved again and every process read the rows since the backup
    from SQLite (the stale-answer audit, round 30). Only a list still as it was read is cut: one
    that another process rewrote meanwhile (a merge) is left to it (a review)."""
    if _read_list(cache) == listing:
        _write_list(cache, base, kept, quiet=True)


def save_base(cache: Path, identity: str, base: Segment) -> bool:
    """Save a new base segment; the tails of the old one are removed. False (after one warning)
    where ``cache/`` cannot be written: the search goes on from memory."""
    try:
        (cache / LIST).unlink(missing_ok=True)
    except OSError as exc:  # a read-only cache/ (EROFS even for a missing file), or a file named cache
        log.warning("%s: cannot save the vector segments (%s): answering from memory", cache, exc.strerror or exc)
        return False
    if not derived.save_arrays(cache, StoreVersion(identity, base.state()), base.arrays()):
        return False
    for old in cache.glob("tail-*"):
        shutil.rmtree(old, ignore_errors=True)
    return _write_list(cache, base, [])


def save_tail(cache: Path, identity: str, segments: list[Segment], tail: Segment) -> list[Segment]:
    """Append ``tail`` on disk (merging the tails when there are too many); returns the segments
    to use in memory. Nothing is saved when the list on disk is not the chain this process holds
    (another process rebuilt or extended it): a later process reads what it misses from SQLite."""
    base, tails = segments[0], segments[1:]
    listing = _read_list(cache)
    on_disk = [e.get("name") for e in listing.get("tails", []) if isinstance(e, dict)]
    # the list on disk must be this process's chain, compared before a merge replaces it (after
    # one, an empty chain never equalled the 16 names on disk, so no tail was saved again: an audit)
    ours = listing.get("base") == base.state() and on_disk == [t.name for t in tails]
    if len(tails) + 1 > MAX_TAILS:
        tail = Segment.merged(tails + [tail], "")
        tails = []
    tail.name = f"tail-{secrets.token_hex(6)}"
    if not ours:
        return [base, *tails, tail]
    folder = cache / tail.name
    try:
        folder.mkdir()
    except OSError:
        return [base, *tails, tail]
    if not derived.save_arrays(folder, StoreVersion(identity, tail.state()), tail.arrays()):
        shutil.rmtree(folder, ignore_errors=True)
        return [base, *tails, tail]
    if _write_list(cache, base, [*tails, tail]):
        for name in on_disk:
            if name not in [t.name for t in tails]:  # merged into the new tail
                shutil.rmtree(cache / name, ignore_errors=True)
        remove_orphan_tails(cache, {t.name for t in (*tails, tail)})
    return [base, *tails, tail]


def remove_orphan_tails(cache: Path, listed: set[str], *, older_than: float = ORPHAN_AGE_S) -> None:
    """Remove ``tail-*`` folders the list does not name, unless younger than ``older_than``
    seconds (another process may be saving one: a save takes well under a second). A process that
    lost a race to save its tail, or was killed while saving, left one behind until the next base
    rebuild, which an append-only store may never need."""
    now = time.time()
    for folder in cache.glob("tail-*"):
        try:
            stale = folder.name not in listed and now - folder.stat().st_mtime > older_than
        except OSError:
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def remove_stale_temp_files(cache: Path) -> None:
    """Temp files of killed writers in ``cache/``, its tails and the ANN indexes' folders (the last
    were left for good: an audit found a 34 MB ``.index.faiss.<pid>.tmp`` after a kill -9)."""
    derived.remove_stale_temp_files(cache)
    for folder in (*cache.glob("tail-*"), *cache.glob("ann-*")):
        derived.remove_stale_temp_files(folder)
