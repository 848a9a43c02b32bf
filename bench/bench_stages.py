"""Where encoding time goes: each staged graph of the CPU runtime, and the Python around them.

Issue 13's speed bound compares a model's indexing with 0.2.0's weights on today's runtime
(``bench_indexing.py``); this script says which part of ``OnnxEncoder.encode`` makes the difference.
For the model folder and, with ``--baseline-model``, another one, interleaved round by round in one
process on the same passages, it times every call of the staged runner's graphs
(:mod:`indexer.staged`: **tokens**, the transformer and the per-token projections; **scores**, the
entity heads on every candidate span; **rows**, a span side's last copied layer on the kept spans'
tokens, :mod:`indexer.covered_rows`; **vectors**, the kept spans' vectors) and counts the rest of
``encode`` (tokenisation, windows, span sums in numpy, overlap resolution, catalog labels) as
**python**. One worker thread, so the graphs' times add up to the wall time.

    python bench/bench_stages.py --passages 64 --rounds 5 --baseline-model <0.2.0 folder> --json

The passages are those of ``bench_indexing.py`` (CrossNER politics test sentences joined to ~100
words; ``--example-corpus`` where ``$NERINDEX_DATA`` lacks them). Per engine and stage the median
seconds over the rounds, and the stage's share of that engine's median ``encode`` time, are printed;
with a baseline, each stage's difference too (the seconds it adds per passage).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_args import count, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's indexer, not whichever one the environment installed
STAGES = ("tokens", "scores", "rows", "vectors")


class TimedSession:
    """An onnxruntime session whose ``run`` adds its wall time to ``totals[name]``."""

    def __init__(self, inner: Any, name: str, totals: collections.Counter) -> None:
        self.inner, self.name, self.totals = inner, name, totals

    def run(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner.run(*args, **kwargs)
        finally:
            self.totals[self.name] += time.perf_counter() - start

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def timed_encoder(folder: Path) -> tuple[Any, collections.Counter]:
    """An encoder of ``folder`` on one CPU thread whose staged graphs count their time; refused when
    the graph cannot be run in stages (then there is nothing to break down)."""
    from indexer.encoder import OnnxEncoder

    encoder = OnnxEncoder.from_dir(folder, device="cpu", threads=1)
    staged = encoder.stages
    if staged is None:
        sys.exit(f"bench_stages: {folder} is run as a whole graph here (see the log): no stages to time")
    totals: collections.Counter = collections.Counter()
    for name in STAGES:
        session = getattr(staged, name)
        if session is not None:
            setattr(staged, name, TimedSession(session, name, totals))
    return encoder, totals


def one_round(encoder: Any, totals: collections.Counter, passages: list) -> dict[str, float]:
    """Seconds of each stage, of ``python`` (the rest) and of the whole ``encode``, for one pass."""
    totals.clear()
    start = time.perf_counter()
    encoder.encode(passages)
    wall = time.perf_counter() - start
    out = {name: totals.get(name, 0.0) for name in STAGES}
    out["python"] = wall - sum(out.values())
    out["encode"] = wall
    return out


def summary(rounds: list[dict[str, float]], passages: int) -> dict[str, dict[str, float]]:
    """Per stage: median seconds, ms per passage and share of the median ``encode``."""
    encode = statistics.median(r["encode"] for r in rounds)
    out = {}
    for name in (*STAGES, "python", "encode"):
        med = statistics.median(r[name] for r in rounds)
        out[name] = {"seconds": round(med, 4), "ms_per_passage": round(1000 * med / passages, 3),
                     "share": round(med / encode, 3) if encode else 0.0}  # fmt: skip
    return out


def main() -> None:
    from bench_indexing import DATA, load_sentences, make_passages  # the same passages

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=count, default=64, help="passages encoded each round (default: %(default)s)")
    parser.add_argument("--rounds", type=count, default=5, help="rounds, every engine once a round, alternating (default: %(default)s)")
    parser.add_argument("--words", type=count, default=100, help="words a passage, about (default: %(default)s)")
    parser.add_argument("--model", help="model folder (default: the shipped model)")
    parser.add_argument("--baseline-model", help="another model folder, timed the same way in the same rounds")
    parser.add_argument("--data", type=Path, default=DATA, help="CoNLL file of sentences (default: $NERINDEX_DATA/crossner/politics/test.txt)")
    parser.add_argument("--example-corpus", action="store_true", help="use examples/corpus.jsonl where --data is missing")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()

    from indexer.assets import default_model_dir

    sentences, source = load_sentences(args.data, args.example_corpus)
    passages = make_passages(sentences, args.passages, args.words)
    folders = {"model": Path(args.model) if args.model else default_model_dir()}
    if args.baseline_model:
        folders["baseline"] = Path(args.baseline_model)
    engines = {name: timed_encoder(folder) for name, folder in folders.items()}
    for encoder, _ in engines.values():  # warm-up: sessions, scratch arrays
        encoder.encode(passages[:8])
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in engines}
    for r in range(args.rounds):
        order = list(engines) if r % 2 == 0 else list(reversed(engines))
        for name in order:
            rounds[name].append(one_round(*engines[name], passages))
    report: dict[str, Any] = {
        "data": source, "passages": len(passages), "rounds": args.rounds, "threads": 1,
        "models": {name: f"{enc.info.id} {enc.info.version} ({folders[name]})" for name, (enc, _) in engines.items()},
        "stages": {name: summary(rs, len(passages)) for name, rs in rounds.items()},
    }  # fmt: skip
    if "baseline" in engines:
        model, base = report["stages"]["model"], report["stages"]["baseline"]
        report["added_ms_per_passage"] = {k: round(model[k]["ms_per_passage"] - base[k]["ms_per_passage"], 3) for k in model}
        report["encode_ratio"] = round(base["encode"]["seconds"] / model["encode"]["seconds"], 3)  # baseline time / model time
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['passages']} passages of {source}, {args.rounds} rounds, one thread; medians")
    for name, stages in report["stages"].items():
        print(f"{name}: {report['models'][name]}")
        for stage, row in stages.items():
            print(f"  {stage:8s} {row['seconds']:8.3f} s  {row['ms_per_passage']:7.2f} ms/passage  {row['share']:6.1%}")
    if "added_ms_per_passage" in report:
        added = ", ".join(f"{k} {v:+.2f}" for k, v in report["added_ms_per_passage"].items())
        print(f"the model against the baseline, ms a passage: {added}")
        print(f"throughput ratio, encode (baseline time / model time): {report['encode_ratio']:.3f}")


if __name__ == "__main__":
    run(main)
