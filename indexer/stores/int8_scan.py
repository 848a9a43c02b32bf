"""The int8 dot-product kernel the embedded store's segments are scanned with.

numpy's int8 matmul is slower than its float32 one, so the scan runs onnxruntime's
``MatMulInteger`` (a one-node graph). The kernel is fast for a uint8 left operand and an int8 right
one, so the matrix is stored transposed (``[dims, rows]``), the query goes in as ``q + 128``
(uint8), and ``128 · Σ row`` (each row's sum, kept with the matrix) is subtracted again: exact
int32 dot products, ~46 ms for 1M × 384 on 2 cores where the float32 product takes ~140 ms (same
machine, same minute). On a CPU without VNNI the kernel saturates (:mod:`indexer.int8_kernel`):
``255 · 127 + 128 · 95`` > 32767, and rows close to the query scored far too low (an audit, an AMD
EPYC with AVX2 only: 0.22 for a cosine of 0.8, never re-scored, so missing from answers). There
the uint8 query goes in as two halves that cannot saturate, ``u = 2 · (u >> 1) + (u & 1)``: two
passes, the same exact products (~56 against ~28 ms for 1M × 384 there; float32 ~81 ms).
Memory-mapped matrices are scanned in blocks whose pages are dropped after use (:func:`scan_dots`),
so a scan of a 10M-row file does not count it in the process's RSS.
"""

from __future__ import annotations

import numpy as np

from .. import int8_kernel
from . import derived

SCAN_BYTES = 512 << 20  # a scan maps at most this much of a matrix at a time (see scan_dots)
SCAN_BLOCKS = 8  # and splits its dims into at least this many blocks


def quantise(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int8 rows, float32 scale per row) with ``row ≈ int8 · scale``; zero rows get scale 1."""
    matrix = np.asarray(matrix, dtype=np.float32)
    scales = np.abs(matrix).max(axis=1, initial=0.0) / 127.0
    scales[scales == 0] = 1.0
    q = np.rint(matrix / scales[:, None]).clip(-127, 127).astype(np.int8)
    return q, scales.astype(np.float32)


def int8_dots(matrix: np.ndarray, sums: np.ndarray, query: np.ndarray) -> np.ndarray:
    """int32 dot product of an int8 query with every column of an int8 ``[dims, rows]`` matrix
    whose column sums are ``sums`` (onnxruntime; numpy, slower, where it is not installed)."""
    dots = _raw_dots(matrix, query)
    if dots.size:
        dots -= 128 * sums
    return dots


def _raw_dots(matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Σ (query + 128) · column for each column: the kernel's uint8 × int8 product (in two
    passes where it would saturate, :func:`indexer.int8_kernel.saturates`)."""
    if matrix.shape[1] == 0:
        return np.zeros(0, dtype=np.int32)
    session = int8_kernel.dots_session()
    shifted = (query.astype(np.int16) + 128).astype(np.uint8).reshape(1, -1)
    if session is False:
        q = shifted.astype(np.float32).reshape(-1)
        step = 65536
        return np.concatenate(
            [np.rint(q @ matrix[:, i : i + step].astype(np.float32)).astype(np.int32) for i in range(0, matrix.shape[1], step)]
        )
    matrix = np.ascontiguousarray(matrix)
    if not int8_kernel.saturates():
        return session.run(None, {"query": shifted, "matrix": matrix})[0].reshape(-1)
    (high,) = session.run(None, {"query": shifted >> 1, "matrix": matrix})  # levels 0..127: no pair overflows
    (low,) = session.run(None, {"query": shifted & 1, "matrix": matrix})
    return (2 * high + low).reshape(-1)


def scan_dots(matrix: np.ndarray, sums: np.ndarray, query: np.ndarray) -> np.ndarray:
    """:func:`int8_dots` over a memory-mapped matrix in blocks of rows (each contiguous: the
    matrix is ``[dims, rows]``), summing the blocks' int32 products and dropping each block's
    pages from the process after it: a scan of 10M rows would otherwise leave 3.8 GB of mapped
    file counted in the searching process's RSS. The pages stay in the page cache, so the next
    scan does not read the disk again. A block is an eighth of the dims, or less where that is
    over ``SCAN_BYTES``: each block costs one pass over the int32 sums, so a fixed byte size
    would make the passes grow with the square of the rows (128 MB blocks: 30 passes at 10M,
    ~0.1 s of a 0.4 s scan)."""
    n = matrix.shape[1]
    step = max(1, min(-(-matrix.shape[0] // SCAN_BLOCKS), SCAN_BYTES // max(n, 1)))
    if getattr(matrix, "_mmap", None) is None or matrix.nbytes <= SCAN_BYTES // SCAN_BLOCKS:
        dots = int8_dots(matrix, sums, query)  # a tail, or small: one call
        release(matrix)
        return dots
    dots = np.zeros(n, dtype=np.int32)
    for r in range(0, matrix.shape[0], step):
        dots += _raw_dots(matrix[r : r + step], query[r : r + step])
        release(matrix)
    dots -= 128 * sums
    return dots


def release(array: np.ndarray) -> None:
    """Drop a memory-mapped array's pages from this process (a no-op for one in memory)."""
    mapped = getattr(array, "_mmap", None)
    if mapped is not None:
        derived.drop_pages(mapped)
