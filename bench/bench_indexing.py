"""Indexing throughput: the ONNX path (int8 and fp32) against the same model in PyTorch eager.

All three run the very same Python pipeline (tokenisation, windows, candidate spans, overlap
resolution, catalog labels); only the engine behind ``session.run`` differs, so the ratio is the
engine's. Runs alternate (int8, fp32, eager, int8, ...) in one process and medians are reported.
Needs the ``[train]`` extra (torch) for the eager engine and the fp32 export.

    python bench/bench_indexing.py --passages 256 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.conll import read_conll
from indexer.encoder import OnnxEncoder
from indexer.assets import default_model_dir
from indexer.records import Passage, text_id

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_passages(n: int, words: int) -> list[Passage]:
    """Passages of about ``words`` words built from real sentences (CrossNER politics test)."""
    source = DATA / "crossner" / "politics" / "test.txt"
    if source.is_file():
        sentences = [p.text for p in read_conll(source)]
    else:  # no shared data: the example corpus, repeated
        root = Path(__file__).resolve().parents[1]
        sentences = [json.loads(line)["text"] for line in (root / "examples" / "corpus.jsonl").open()]
    out: list[Passage] = []
    i = 0
    while len(out) < n:
        buf: list[str] = []
        while sum(len(s.split()) for s in buf) < words:
            buf.append(sentences[i % len(sentences)])
            i += 1
        text = " ".join(buf)
        out.append(Passage(text_id(f"{len(out)}:{text}"), text))
    return out


class TorchSession:
    """Stands in for an onnxruntime session: the same inputs and outputs, run by PyTorch eager."""

    NAMES = ["span_scores", "span_vectors", "span_base_vectors", "passage_vectors", "type_vectors"]

    def __init__(self, model) -> None:
        self.model = model

    def run(self, outputs, feeds):
        import torch

        with torch.inference_mode():
            result = self.model(*(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask", "span_starts", "span_ends")))
        named = dict(zip(self.NAMES, result))
        return [named[name].numpy() for name in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=256)
    parser.add_argument("--words", type=int, default=100, help="approximate words per passage")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch

    from indexer.training.export import export_onnx
    from indexer.training.model import load_model_from_folder

    torch.set_num_threads(args.threads)
    folder = default_model_dir()
    passages = make_passages(args.passages, args.words)
    int8 = OnnxEncoder.from_dir(folder, device="cpu", threads=args.threads)
    tokens = sum(len(int8.tokenizer.encode(p.text, add_special_tokens=False).ids) for p in passages)
    model = load_model_from_folder(folder)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "encoder.fp32.onnx"
        export_onnx(model, fp32_path)
        fp32 = OnnxEncoder.from_dir(folder, device="cpu", graph=str(fp32_path), threads=args.threads)
        eager = OnnxEncoder(int8.info, TorchSession(model), int8.tokenizer, provider="torch-eager", catalog=int8.catalog)
        engines = {"onnx-int8": int8, "onnx-fp32": fp32, "torch-eager": eager}
        for enc in engines.values():  # warm-up
            enc.encode(passages[: args.batch_size], batch_size=args.batch_size)
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.repeats):
            for name, enc in engines.items():
                began = time.perf_counter()
                enc.encode(passages, batch_size=args.batch_size)
                seconds[name].append(time.perf_counter() - began)
    med = {name: statistics.median(v) for name, v in seconds.items()}
    rows = {
        name: {
            "passages_per_s": round(len(passages) / med[name], 1),
            "tokens_per_s": round(tokens / med[name]),
            "median_s": round(med[name], 2),
            "runs_s": [round(x, 2) for x in seconds[name]],
            "speedup_vs_eager": round(med["torch-eager"] / med[name], 2),
        }
        for name in engines
    }
    report = {
        "passages": len(passages),
        "tokens": tokens,
        "tokens_per_passage": round(tokens / len(passages), 1),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "model": f"{int8.info.id} {int8.info.version}",
        "engines": rows,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{len(passages)} passages, {tokens} tokens ({report['tokens_per_passage']}/passage), batch {args.batch_size}, {args.threads} threads")
        for name, row in rows.items():
            print(f"  {name:12s} {row['passages_per_s']:7.1f} passages/s {row['tokens_per_s']:8d} tokens/s  x{row['speedup_vs_eager']:.2f} vs eager  runs {row['runs_s']}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
