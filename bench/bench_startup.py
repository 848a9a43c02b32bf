"""What the cache of cut graphs saves a whole ``nerindex index`` process (``indexer/stage_loading.py``).

Runs ``nerindex index`` of a corpus (default: the example corpus, 40 passages) as separate
processes, in alternating pairs: one with ``NERINDEX_CACHE=off`` (the graph is cut with ``onnx`` in
every process, as before the cache), one with a cache folder filled beforehand. Prints the median
wall time and peak memory (the child's own ``ru_maxrss``) of each, with ranges, and the median of
the per-pair ratios; each process writes a new store, so both do the same work.

    python bench/bench_startup.py --pairs 10 --json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from bench_args import count, run  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "examples" / "corpus.jsonl"



def run_index(corpus: Path, store: Path, cache: str) -> tuple[float, float]:
    """(wall seconds, peak MiB) of one ``nerindex index`` process."""
    env = {**os.environ, "NERINDEX_CACHE": cache}
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "indexer.cli", "index", str(corpus), "--store", str(store)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if child.returncode != 0:
        raise SystemExit(f"nerindex index failed ({child.returncode}): {err.strip()}")
    return wall, usage.ru_maxrss / 1024


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="JSONL corpus to index (default: the example corpus)")
    parser.add_argument("--pairs", type=count, default=10, help="alternating pairs of processes")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    if args.pairs < 1:  # 0 ended in a StatisticsError or TypeError (an audit)
        parser.error("--pairs must be at least 1")
    with tempfile.TemporaryDirectory(prefix="nerindex-bench-startup-") as tmp:
        work, cache = Path(tmp), str(Path(tmp) / "cache")
        run_index(args.corpus, work / "warm-up", cache)  # fills the cache
        runs: dict[str, list[tuple[float, float]]] = {"cut": [], "cached": []}
        for i in range(args.pairs):
            order = ("cut", "cached") if i % 2 == 0 else ("cached", "cut")
            for arm in order:
                runs[arm].append(run_index(args.corpus, work / f"{arm}-{i}", "off" if arm == "cut" else cache))
    figures = {
        arm: {"wall_s": summary([w for w, _ in r]), "peak_mib": summary([m for _, m in r])} for arm, r in runs.items()
    }
    figures["wall_ratio_cached_over_cut"] = summary([c[0] / u[0] for c, u in zip(runs["cached"], runs["cut"])])
    figures["pairs"] = args.pairs
    figures["corpus"] = str(args.corpus)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for arm in ("cut", "cached"):
        w, m = figures[arm]["wall_s"], figures[arm]["peak_mib"]
        print(f"{arm:7s} wall {w['median']:.2f} s ({w['min']:.2f}-{w['max']:.2f}), peak {m['median']:.0f} MiB ({m['min']:.0f}-{m['max']:.0f})")
    r = figures["wall_ratio_cached_over_cut"]
    print(f"cached / cut, per pair: {r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f}) over {args.pairs} pairs")


if __name__ == "__main__":
    run(main)
