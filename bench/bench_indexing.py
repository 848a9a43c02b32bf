"""Indexing throughput against the transformer alone, on the same batches, with the load recorded.

Engines, run interleaved in one process (round r runs them all, the order rotated by r):

- ``transformer``: the bare transformer cut from the model's own graph (``input_ids``,
  ``attention_mask`` → last-layer token states, and the last-layer states of a span side's copy of
  the top layers where the model has one; ``onnx.utils.Extractor``), run on exactly the
  ``(input_ids, attention_mask)`` batches that ``encode`` feeds (``OnnxEncoder.token_batches``,
  built before timing; on the CPU one window each), spread over the same worker threads with the
  same one-thread session (``encoder.ordered_map``). It is the floor: no span work, no Python
  around it (except that with a span side's copy, ``encode`` runs the copy's last layer only on
  the tokens of kept spans, ``indexer/covered_rows.py``, and this engine on every token).
- ``encode``: ``OnnxEncoder.encode`` as shipped (tokenisation, windows, candidate spans, the staged
  graph on the CPU, overlap resolution, catalog labels).
- ``encode-whole``: the same, but the whole graph embeds every candidate span (issue 14's "before",
  run window by window as today's runtime runs; ``baseline-whole`` batches windows as it did then).
- ``index``: ``NerIndex.index`` into a fresh temporary embedded store (encode + write).
- ``encode-every-token`` (``--engines``): ``encode`` with the span side's copy of the top layers
  run on every token, as before ``indexer/covered_rows.py`` (its rows graph left out of the cut);
  the ratio ``encode / encode-every-token`` is printed beside the baseline ratios.
- ``encode-batched`` (``--engines``): ``encode`` as it ran before batch-invariant encoding: windows
  batched by length (``--batch-size``), one session and staged runner of ``--threads`` threads; the
  ratio ``encode / encode-batched`` is printed beside the baseline ratios.
- ``onnx-fp32``, ``torch-eager`` (``--engines``; need the ``[train]`` extra): the same model's fp32
  graph and PyTorch eager behind the whole-graph path, window by window on the same worker threads
  as ``encode`` (one thread a call).
- ``baseline``, ``baseline-whole``, ``baseline-index``, ``baseline-whole-index``
  (``--baseline-model DIR``, added to the engines when given): ``encode`` of another model folder
  on today's runtime, and that folder's whole graph run in the way nerindex 0.2.0–0.4.0 batched it
  (windows batched by length, one session of ``--threads`` threads); the ``-index`` engines are
  ``NerIndex.index`` with those encoders into a fresh store, as ``index``. So a new model is compared
  with the old one in the same run, encoding with encoding and indexing with indexing (the
  ratios printed). ``baseline-whole`` with 0.2.0's folder is 0.2.0's graph run whole and batched,
  inside today's Python: today's tokenisation, window planning, span selection, labels and session
  options (no spinning threads, the precision option), not 0.2.0's own code, which was slower
  around the graph (BENCHMARKS.md).

Every run records the 1-minute load average before and after it and the CPU time the *other*
processes used during it (``/proc/stat`` busy time minus this process's ``os.times()``), as a share
of the machine's cores. A run is marked ``loaded`` when the others used more than ``--others-max``
of the cores, or the load average exceeded ``--load-max`` plus this benchmark's own threads (the
load average counts them too). Medians and ranges are printed over all runs and over quiet runs.

The passages are CrossNER politics test sentences joined to ~``--words`` words, read from
``$NERINDEX_DATA`` (or ``--data``); when that file is missing the script stops
with a one-line error unless ``--example-corpus`` is given, and the output always names the data.

    python bench/bench_indexing.py --passages 128 --rounds 5 --json
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from bench_args import count, run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the labelled sets' folder as `nerindex train` finds it (NERINDEX_DATA; no default outside the repository)
DATA = Path(os.environ.get("NERINDEX_DATA", "$NERINDEX_DATA")) / "crossner" / "politics" / "test.txt"
EXAMPLE = ROOT / "examples" / "corpus.jsonl"
sys.path.insert(0, str(ROOT))  # this checkout's indexer, not whichever one the environment installed
DEFAULT_ENGINES = ("transformer", "encode", "encode-whole", "index")
BASELINE_ENGINES = ("baseline", "baseline-whole", "baseline-index", "baseline-whole-index")
# which baseline each engine is divided by: encoding by encoding, indexing by indexing (an audit:
# `index` was divided by the baselines' encode alone, and read as "0.2.0's indexing throughput")
BASELINE_PAIRS = (("encode", "baseline"), ("encode", "baseline-whole"), ("index", "baseline-index"),
                  ("index", "baseline-whole-index"), ("encode", "encode-batched"), ("index", "encode-batched"),
                  ("encode", "encode-every-token"))
ALL_ENGINES = DEFAULT_ENGINES + ("encode-batched", "encode-every-token", "onnx-fp32", "torch-eager") + BASELINE_ENGINES



def load_sentences(path: Path, example_corpus: bool) -> tuple[list[str], str]:
    """Sentences and a line saying where they came from; a missing file is refused unless the
    example corpus is asked for, and then the description says so."""
    from indexer.conll import read_conll

    if path.is_file():
        sentences = [p.text for p in read_conll(path)]
        if not sentences:  # an audit: a ZeroDivisionError in make_passages
            sys.exit(f"bench_indexing: {path} holds no sentences (pass a CoNLL file with --data)")
        return sentences, str(path)
    if not example_corpus:
        sys.exit(f"bench_indexing: {path} is missing (pass --data FILE or set NERINDEX_DATA, or --example-corpus to use {EXAMPLE.name})")
    sentences = [json.loads(line)["text"] for line in EXAMPLE.open(encoding="utf-8")]
    return sentences, f"{EXAMPLE} (example corpus: {path} is missing)"


def make_passages(sentences: list[str], n: int, words: int) -> list:
    """``n`` passages of about ``words`` words each, consecutive sentences joined."""
    from indexer.records import Passage, text_id

    out = []
    i = 0
    while len(out) < n:
        buf: list[str] = []
        while sum(len(s.split()) for s in buf) < words:
            buf.append(sentences[i % len(sentences)])
            i += 1
        text = " ".join(buf)
        out.append(Passage(text_id(f"{len(out)}:{text}"), text))
    return out


def busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (``/proc/stat``; idle and iowait excluded)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Run:
    engine: str
    round: int
    seconds: float
    passages_per_s: float
    load1_before: float
    load1_after: float
    others_cpu_s: float
    others_share: float  # of all cores, over the run
    loaded: bool


def timed(engine: str, round_: int, fn: Callable[[], None], n: int, limits: argparse.Namespace) -> Run:
    """One run of ``fn`` with the load around it."""
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]
    busy0, own0, t0 = busy_seconds(), own_seconds(), time.perf_counter()
    fn()
    wall = time.perf_counter() - t0
    others = max(0.0, (busy_seconds() - busy0) - (own_seconds() - own0))
    load_after = os.getloadavg()[0]
    share = others / (wall * cores)
    loaded = share > limits.others_max or max(load_before, load_after) > limits.load_max + limits.threads
    return Run(engine, round_, round(wall, 3), round(n / wall, 2), round(load_before, 2), round(load_after, 2),
               round(others, 2), round(share, 3), loaded)


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3), "n": len(values)}


def build_engines(names: list[str], args: argparse.Namespace, passages: list) -> tuple[dict[str, Callable[[], None]], dict]:
    """One callable per engine, each doing a full pass over ``passages``; plus facts about the batches."""
    import onnx
    from onnx.utils import Extractor

    from indexer.api import NerIndex
    from indexer.assets import default_model_dir
    from indexer.config import Settings
    from indexer.encoder import CPU, OnnxEncoder, graph_for, open_session, ordered_map
    from indexer.staged import find_cuts
    from indexer.stores.factory import open_store

    folder = Path(args.model) if args.model else default_model_dir()
    enc = OnnxEncoder.from_dir(folder, device="cpu", threads=args.threads)
    whole = OnnxEncoder(enc.info, enc.session, enc.tokenizer, provider=enc.provider, catalog=enc.catalog,
                        workers=enc.workers)  # fmt: skip
    graph_path = graph_for(enc.info, CPU)
    graph = onnx.load(str(graph_path))
    cuts = find_cuts(graph)
    # every transformer layer of the graph: a span side's copy of the top layers too (model 0.3.0)
    lasts = [cuts.last] + ([cuts.span_last] if cuts.span_last else [])
    bare_graph = Extractor(graph).extract_model(["input_ids", "attention_mask"], lasts)
    bare = open_session(bare_graph.SerializeToString(), CPU, threads=1, name=graph_path)  # as encode's windows
    feeds = [{"input_ids": ids, "attention_mask": mask} for ids, mask in enc.token_batches(passages, batch_size=args.batch_size)]
    last = [o.name for o in bare.get_outputs()]

    def indexing(encoder) -> Callable[[], None]:
        """``NerIndex.index`` with ``encoder`` into a fresh embedded store (writes and prepare included)."""
        def index() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                nx = NerIndex(encoder, open_store(Settings(store=str(Path(tmp) / "store"))))
                nx.index(passages, batch_size=args.batch_size)
                nx.close()
        return index

    index = indexing(enc)

    engines: dict[str, Callable[[], None]] = {
        "transformer": lambda: list(ordered_map(lambda f: bare.run(last, f), feeds, enc.workers)),
        "encode": lambda: enc.encode(passages, batch_size=args.batch_size),
        "encode-whole": lambda: whole.encode(passages, batch_size=args.batch_size),
        "index": index,
    }
    if "encode-batched" in names:  # the runtime before batch-invariant encoding
        batched = batched_encoder(enc, args.threads, staged=True)
        engines["encode-batched"] = lambda: batched.encode(passages, batch_size=args.batch_size)
    if "encode-every-token" in names:  # the span side's last layer on every token (no rows graph)
        from indexer.stage_loading import load_stages

        every = OnnxEncoder(enc.info, enc.session, enc.tokenizer, provider=enc.provider, catalog=enc.catalog,
                            workers=enc.workers, stages=lambda: load_stages(
                                graph_path, lambda data: open_session(data, CPU, threads=1, name=graph_path), rows=False))  # fmt: skip
        engines["encode-every-token"] = lambda: every.encode(passages, batch_size=args.batch_size)
    if {"onnx-fp32", "torch-eager"} & set(names):
        engines.update(torch_engines(args, folder, enc, passages))
    if set(BASELINE_ENGINES) & set(names):
        base = OnnxEncoder.from_dir(Path(args.baseline_model), device="cpu", threads=args.threads)
        base_whole = batched_encoder(base, args.threads, staged=False)  # as released: the whole graph
        engines["baseline"] = lambda: base.encode(passages, batch_size=args.batch_size)
        engines["baseline-whole"] = lambda: base_whole.encode(passages, batch_size=args.batch_size)
        engines["baseline-index"] = indexing(base)
        engines["baseline-whole-index"] = indexing(base_whole)
    facts = {
        "model": f"{enc.info.id} {enc.info.version}",
        "baseline_model": f"{base.info.id} {base.info.version} ({args.baseline_model})" if "baseline" in engines else None,
        "graph": graph_path.name,
        "staged": enc.stages is not None,
        "batches": len(feeds),
        "windows": sum(len(f["input_ids"]) for f in feeds),
        "tokens": sum(int(f["attention_mask"].sum()) for f in feeds),
    }
    return {name: engines[name] for name in names}, facts


def batched_encoder(enc, threads: int, *, staged: bool):
    """``enc``'s model run as nerindex ran it before batch-invariant encoding (0.2.0–0.4.0): windows
    batched by length, one session of ``threads`` threads, and with ``staged`` the staged runner
    on such sessions too (without it, the whole graph: 0.2.0 as released)."""
    from indexer.encoder import CPU, OnnxEncoder, graph_for, open_session
    from indexer.stage_loading import load_stages

    graph = graph_for(enc.info, CPU)

    def session(data=graph):
        return open_session(data, CPU, threads=threads, name=graph)

    out = OnnxEncoder(enc.info, session(), enc.tokenizer, provider=CPU, catalog=enc.catalog,
                      stages=(lambda: load_stages(graph, session)) if staged else None)  # fmt: skip
    out.window_calls = False
    return out


def torch_engines(args: argparse.Namespace, folder: Path, enc, passages: list) -> dict[str, Callable[[], None]]:
    """The fp32 graph (exported now) and PyTorch eager, both behind the whole-graph path."""
    import torch

    from indexer.encoder import OnnxEncoder, open_session
    from indexer.training.export import export_onnx
    from indexer.training.model import load_model_from_folder

    # one thread a call, on the ONNX engines' worker threads: each engine runs window by window the
    # way the CPU runtime does (an audit: eager ran batches of 32 on one thread of --threads)
    torch.set_num_threads(1)
    model = load_model_from_folder(folder)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fp32-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # 110 MB left behind by every run (an audit)
    export_onnx(model, tmp / "encoder.fp32.onnx")
    fp32 = OnnxEncoder(enc.info, open_session(tmp / "encoder.fp32.onnx", enc.provider, threads=1),
                       enc.tokenizer, provider=enc.provider, catalog=enc.catalog, workers=enc.workers)
    eager = OnnxEncoder(enc.info, TorchSession(model), enc.tokenizer, provider="torch-eager", catalog=enc.catalog,
                        workers=enc.workers, window_calls=enc.window_calls)
    return {
        "onnx-fp32": lambda: fp32.encode(passages, batch_size=args.batch_size),
        "torch-eager": lambda: eager.encode(passages, batch_size=args.batch_size),
    }


class TorchSession:
    """Stands in for an onnxruntime session: the same inputs and outputs, run by PyTorch eager."""

    def __init__(self, model) -> None:
        self.model = model
        # the graph's outputs, in the model's order: model 0.4.0 adds candidate_scores (an audit: a KeyError)
        self.names = list(model.output_names())

    def run(self, outputs, feeds):
        import torch

        with torch.inference_mode():
            result = self.model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "span_starts", "span_ends")))
        named = dict(zip(self.names, result))
        return [named[name].numpy() for name in outputs]


def ratios(runs: list[Run], numerator: str, rounds: int, denominator: str = "transformer") -> dict:
    """``numerator`` passages/s over ``denominator`` passages/s, per round: both runs of one round,
    which the rotation of the engines' order can put up to (engines - 1) runs apart, so a round with
    a load change between them shows as an outlier (the load of each run is recorded)."""
    by = {(r.engine, r.round): r for r in runs}
    pairs = [(by[(numerator, i)], by[(denominator, i)]) for i in range(rounds) if (numerator, i) in by and (denominator, i) in by]
    every = [a.passages_per_s / b.passages_per_s for a, b in pairs]
    quiet = [a.passages_per_s / b.passages_per_s for a, b in pairs if not (a.loaded or b.loaded)]
    return {"all": summary(every), "quiet": summary(quiet)}


def main() -> None:
    # the whole docstring: --help is where the engines are described (an audit)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passages", type=count, default=128, help="passages timed per run (default: %(default)s)")
    parser.add_argument("--words", type=count, default=100, help="approximate words per passage (default: %(default)s)")
    parser.add_argument("--batch-size", type=count, default=32,
                        help="encode's batch_size: CUDA batches, and the windows batched by length of encode-batched "
                             "and baseline-whole(-index); on the CPU encode runs window by window (default: %(default)s)")
    parser.add_argument("--rounds", type=count, default=5, help="runs of every engine, interleaved (default: %(default)s)")
    parser.add_argument("--threads", type=count, default=2, help="encoder threads (default: %(default)s)")
    parser.add_argument("--engines", default=",".join(DEFAULT_ENGINES),
                        help=f"comma-separated, of {', '.join(ALL_ENGINES)} (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="a CoNLL file whose sentences make the passages (default: %(default)s)")
    parser.add_argument("--example-corpus", action="store_true", help="use examples/corpus.jsonl when --data is missing")
    parser.add_argument("--model", help="a model folder (default: the shipped model)")
    parser.add_argument("--others-max", type=float, default=0.25,
                        help="others' CPU share above which a run is loaded (default: %(default)s)")
    parser.add_argument("--load-max", type=float, default=1.5,
                        help="load average (beyond our threads) above which a run is loaded (default: %(default)s)")
    parser.add_argument("--baseline-model", help="another model folder to time beside it (adds the engines "
                        f"{', '.join(BASELINE_ENGINES)})")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.rounds < 1:  # 0 ended in a StatisticsError or TypeError (an audit)
        parser.error("--rounds must be at least 1")
    names = [n for n in args.engines.split(",") if n]
    if args.baseline_model:
        names += [n for n in BASELINE_ENGINES if n not in names]
    elif set(BASELINE_ENGINES) & set(names):
        sys.exit("bench_indexing: the baseline engines need --baseline-model DIR")
    unknown = [n for n in names if n not in ALL_ENGINES]
    if unknown or "transformer" not in names:
        sys.exit(f"bench_indexing: engines must include transformer and come from {', '.join(ALL_ENGINES)} (got {args.engines})")

    load_at_start = os.getloadavg()[0]
    sentences, source = load_sentences(args.data, args.example_corpus)
    passages = make_passages(sentences, args.passages, args.words)
    engines, facts = build_engines(names, args, passages)
    for fn in engines.values():  # warm-up: sessions, the staged graphs, caches
        fn()
    runs: list[Run] = []
    for round_ in range(args.rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            runs.append(timed(name, round_, engines[name], len(passages), args))
    report = {
        "data": source,
        "passages": len(passages),
        **facts,
        "tokens_per_passage": round(facts["tokens"] / len(passages), 1),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "cores": os.cpu_count(),
        "load1_at_start": round(load_at_start, 2),
        "loaded_rule": f"others' CPU > {args.others_max:.0%} of the cores, or load1 > {args.load_max} + {args.threads} threads",
        "engines": {
            name: {
                "passages_per_s": summary([r.passages_per_s for r in runs if r.engine == name]),
                "passages_per_s_quiet": summary([r.passages_per_s for r in runs if r.engine == name and not r.loaded]),
                "loaded_runs": sum(r.loaded for r in runs if r.engine == name),
            }
            for name in names
        },
        "ratio_to_transformer": {name: ratios(runs, name, args.rounds) for name in names if name != "transformer"},
        "ratio_to_baseline": {
            **{f"{name} / {base}": ratios(runs, name, args.rounds, base)
               for name, base in BASELINE_PAIRS if name in names and base in names},
            # the ONNX engines against PyTorch eager, per round (an audit: only their medians could be compared)
            **{f"{name} / torch-eager": ratios(runs, name, args.rounds, "torch-eager")
               for name in ("encode", "encode-whole", "onnx-fp32") if name in names and "torch-eager" in names},
        },
        "runs": [asdict(r) for r in runs],
    }
    print(json.dumps(report) if args.json else render(report))


def render(report: dict) -> str:
    lines = [
        f"data: {report['data']}",
        f"{report['passages']} passages, {report['tokens']} tokens ({report['tokens_per_passage']}/passage), "
        f"{report['windows']} windows in {report['batches']} batches, batch {report['batch_size']}, "
        f"{report['threads']} threads on {report['cores']} cores; model {report['model']} ({report['graph']}, staged: {report['staged']})",
        f"load1 at start {report['load1_at_start']}; loaded = {report['loaded_rule']}",
    ]
    for run in report["runs"]:
        mark = "  LOADED" if run["loaded"] else ""
        lines.append(f"  round {run['round']} {run['engine']:20s} {run['passages_per_s']:7.1f} passages/s  load1 {run['load1_before']:.2f}→{run['load1_after']:.2f}  others {run['others_share']:.0%}{mark}")
    for name, row in report["engines"].items():
        a, q = row["passages_per_s"], row["passages_per_s_quiet"]
        quiet = f"quiet median {q['median']} ({q['n']} runs)" if q["n"] else "no quiet run"
        lines.append(f"{name:20s} median {a['median']:7.1f} passages/s, range {a['min']}–{a['max']} ({a['n']} runs, {row['loaded_runs']} loaded); {quiet}")
    if report.get("baseline_model"):
        lines.append(f"baseline model: {report['baseline_model']}")
    named = {f"{name} / transformer": r for name, r in report["ratio_to_transformer"].items()}
    for name, ratio in {**named, **report["ratio_to_baseline"]}.items():
        a, q = ratio["all"], ratio["quiet"]
        quiet = f"quiet median {q['median']} ({q['n']} rounds)" if q["n"] else "no quiet round"
        lines.append(f"{name}: median {a['median']}, range {a['min']}–{a['max']} ({a['n']} rounds); {quiet}")
    return "\n".join(lines)


if __name__ == "__main__":
    run(main)
