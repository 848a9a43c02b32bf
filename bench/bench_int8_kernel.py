"""What the int8 kernel's saturation fix costs (``indexer/int8_kernel.py``), in one process.

On a CPU without VNNI, onnxruntime's uint8 × int8 kernel saturates; nerindex then scans the store's
int8 segments in two passes and opens its graphs with onnxruntime's precision option (the graph's
int8 weights run as uint8 ones). This prints, on the CPU it runs on (``saturates`` says which kind
it is):

- the scan of ``--rows`` int8 rows: one pass (exact only where the kernel does not saturate), the
  two passes, and the float32 product the int8 scan replaces, median ms of ``--repeats`` (the arms
  alternate within each repeat);
- the encoder: load (with the first passage, which cuts and opens the staged graphs), then encode
  ``--passages`` passages of the example corpus, with the graph as it is and with the precision
  option forced, median seconds of ``--repeats`` (alternating).

Ratios are the median (and range) of the per-repeat ratios; the 1-minute load average is printed
before and after.

    python bench/bench_int8_kernel.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from indexer import int8_kernel
from indexer.encoder import OnnxEncoder
from indexer.reading import read_passages
from indexer.stores import int8_scan
from bench_args import count, run  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus.jsonl"


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def ratio_summary(numerators: list[float], denominators: list[float]) -> dict[str, float]:
    """Median and range of the per-repeat ratios (the arms of one repeat ran next to each other):
    ratios of the arms' medians mixed repeats that ran at other loads (an audit)."""
    ratios = [a / b for a, b in zip(numerators, denominators)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def scan_figures(rows: int, dims: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    matrix = rng.integers(-127, 128, (dims, rows), dtype=np.int8)
    sums = matrix.sum(axis=0, dtype=np.int32)
    query = rng.integers(-127, 128, dims).astype(np.int8)
    floats, fquery = matrix.astype(np.float32), query.astype(np.float32)
    times: dict[str, list[float]] = {"one_pass": [], "two_passes": [], "float32": []}
    saved = int8_kernel._saturates

    def arm(name: str) -> float:
        if name == "float32":
            return timed(lambda: fquery @ floats)
        int8_kernel._saturates = name == "two_passes"
        try:
            return timed(lambda: int8_scan.int8_dots(matrix, sums, query))
        finally:
            int8_kernel._saturates = saved

    names = list(times)
    for repeat in range(repeats):  # the arms alternate, one of each a repeat (an audit: they ran in blocks)
        for name in names[repeat % 3:] + names[: repeat % 3]:
            times[name].append(arm(name))
    return {**{f"{name}_ms": 1e3 * statistics.median(t) for name, t in times.items()},
            "two_passes_vs_one": ratio_summary(times["two_passes"], times["one_pass"]),
            "two_passes_vs_float32": ratio_summary(times["two_passes"], times["float32"])}


def encoder_figures(passages: int, repeats: int) -> dict[str, Any]:
    texts = list(read_passages(str(CORPUS)))
    batch = (texts * (passages // len(texts) + 1))[:passages]
    runs: dict[str, list[float]] = {f"{kind}_{part}_s": [] for kind in ("as_is", "uint8_weights") for part in ("load", "encode")}
    saved = int8_kernel._saturates
    arms = [("as_is", False), ("uint8_weights", True)]
    try:
        OnnxEncoder.from_dir(None, device="cpu").encode(batch[:1])  # first-load costs (imports) in no arm
        for repeat in range(repeats):
            # the order alternates: the arm that ran first paid what the other then found warm (an audit)
            for kind, forced in arms if repeat % 2 == 0 else arms[::-1]:
                int8_kernel._saturates = forced
                began = time.perf_counter()
                encoder = OnnxEncoder.from_dir(None, device="cpu")
                encoder.encode(batch[:1])  # the staged graphs are cut and opened at the first encode
                loaded = time.perf_counter()
                encoder.encode(batch)
                runs[f"{kind}_load_s"].append(loaded - began)
                runs[f"{kind}_encode_s"].append(time.perf_counter() - loaded)
    finally:
        int8_kernel._saturates = saved
    figures: dict[str, Any] = {name: statistics.median(times) for name, times in runs.items()}
    for part in ("load", "encode"):
        figures[f"{part}_uint8_vs_as_is"] = ratio_summary(runs[f"uint8_weights_{part}_s"], runs[f"as_is_{part}_s"])
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=count, default=1_000_000, help="int8 rows scanned (default: %(default)s)")
    ap.add_argument("--dims", type=count, default=384, help="dimensions of each row (default: %(default)s)")
    ap.add_argument("--passages", type=count, default=80,
                    help="passages of the example corpus encoded (default: %(default)s)")
    ap.add_argument("--repeats", type=count, default=5, help="repeats of each arm, alternating (default: %(default)s)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    # "load" cuts the graph in every repeat, as it did before the cut graphs were cached (bench_startup.py
    # measures the cache): a cache filled by the first arm would have made the other's loads cheaper.
    # Set after the arguments, not on import: the tests import this script and read its options, and
    # every later test then ran without a cache (the gloss cache test failed in a full run's order).
    os.environ["NERINDEX_CACHE"] = "off"
    load_before = os.getloadavg()[0]  # a shared machine's figures are only as quiet as it was (an audit)
    result = {"saturates": int8_kernel.saturates(), "scan": scan_figures(args.rows, args.dims, args.repeats),
              "encoder": encoder_figures(args.passages, args.repeats),
              "load1": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"kernel saturates on this CPU: {result['saturates']}; load1 {result['load1']['before']} → {result['load1']['after']}")
        for part in ("scan", "encoder"):
            print(part, ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else
                                  f"{k} {v['median']:.3f} ({v['min']:.3f}–{v['max']:.3f})" for k, v in result[part].items()))


if __name__ == "__main__":
    run(main)
