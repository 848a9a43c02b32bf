"""HTTP search throughput and latency of `nerindex serve` with 1, 8 and 32 concurrent clients.

    python bench/bench_serve.py --passages 100000 --duration 10 --concurrency 1 8 32

The store (embedded, in --store, reused when it holds exactly --passages passages) is filled with real
sentences from $NERINDEX_DATA or --data (CoNLL files; cycled to reach --passages) whose spans are the gold
mentions, with *synthetic* span vectors: running 100k passages through the encoder would take
~30 minutes on 2 cores and measures the encoder, not the service (bench_indexing.py does that).
Span vectors are drawn around the real type vectors of the benchmark's query phrases (and around
random centres) at cosines spread over 0.3-0.9, so each query matches a realistic few hundred
passages at the model's default threshold. The store carries the shipped model's stamp, so the
server opens it with the real model; the type phrases are embedded by the real encoder during the
warm-up and then come from its phrase cache, as repeated queries do, so timed requests run no encoder.

Each level runs `--duration` seconds of closed-loop clients (asyncio + httpx, keep-alive, one
connection per client) against `nerindex serve` in a separate process on 127.0.0.1, after a
warm-up. Client and server share the machine's cores, so the figures are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

import numpy as np
from bench_args import count, run, seconds  # noqa: E402

QUERIES = [
    "dinosaur", "politician", "city", "football club", "disease", "musician", "company", "river",
    "country", "political party", "film", "book", "athlete", "drug", "university", "band",
]
DATA = Path(os.environ.get("NERINDEX_DATA", "$NERINDEX_DATA"))  # the labelled sets, as `nerindex train` finds them


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def conll_files(data: Path) -> list[Path]:
    """``data`` itself, or the ``*.conll`` files under it, or its ``*.txt`` ones where it has none
    (CrossNER's; an audit: only ``*.conll`` was read, and the help said "CoNLL files")."""
    if data.is_file():
        return [data]
    for pattern in ("*.conll", "*.txt"):
        files = sorted(p for p in data.rglob(pattern) if p.is_file())
        if files:
            return files
    raise SystemExit(f"error: no CoNLL files (*.conll, or *.txt) under {data}: give --data or set NERINDEX_DATA")


def corpus_passages(data: Path, n: int):
    """Real sentences with their gold mention offsets, cycled (with fresh ids) up to n."""
    from indexer.conll import read_conll

    files = conll_files(data)
    made = 0
    while True:
        for path in files:
            for passage in read_conll(path):
                if made >= n:
                    return
                yield made, path.parent.name, passage
                made += 1


def build_store(path: Path, n: int, *, data: Path, seed: int = 0) -> float:
    """Write n synthetic EncodedPassages into an embedded store stamped with the shipped model."""
    from indexer.api import NerIndex
    from indexer.records import EncodedPassage, EncodedSpan, Passage
    from indexer.stores.embedded import EmbeddedStore

    rng = np.random.default_rng(seed)
    conll_files(data)  # no data: refused before a store is made
    with NerIndex.open(path, create=True) as ix:
        stamp = ix.encoder.info.stamp
        dims = stamp.dims
        centres = np.concatenate([ix.embed(QUERIES), unit_rows(rng.standard_normal((184, dims)))])
    store = EmbeddedStore.open(path)
    store.check_model(stamp)
    began = time.perf_counter()
    batch: list = []
    for i, source, p in corpus_passages(data, n):
        words = p.text.split(" ")
        offsets = [s for s in p.gold][:4]
        spans = [(g.start, g.end) for g in offsets]
        if not spans:  # a sentence with no gold mention: one random word
            k = int(rng.integers(len(words)))
            start = sum(len(w) + 1 for w in words[:k])
            spans = [(start, start + len(words[k]))]
        which = rng.integers(0, len(centres), size=len(spans))
        scale = rng.uniform(0.5, 3.0, size=(len(spans), 1))
        noise = unit_rows(rng.standard_normal((len(spans), dims)))
        vectors = unit_rows(centres[which] + scale * noise)
        encoded = tuple(
            EncodedSpan(s, e, p.text[s:e], 0.9, vectors[j], ()) for j, (s, e) in enumerate(spans)
        )
        passage = Passage(f"bench-{i}", p.text, {"source": source, "part": str(i % 10)})
        batch.append(EncodedPassage(passage, encoded, vectors[0]))
        if len(batch) == 2000:
            store.write(batch)
            batch = []
    if batch:
        store.write(batch)
    store.close()
    return time.perf_counter() - began


def store_size(path: Path) -> int:
    from indexer.stores.embedded import DB_NAME, EmbeddedStore

    if not (path / DB_NAME).exists():
        return 0
    store = EmbeddedStore.open(path, create=False)
    try:
        return store.counts().passages
    finally:
        store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answer(response) -> dict:
    """A 200 answer's JSON; any other status ends the run with the server's error in one line
    (an audit: --threshold 5 was refused with a 422, then a KeyError)."""
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except Exception:  # noqa: BLE001 - not the service's error shape
            message = response.text.strip()[:200]
        raise SystemExit(f"error: the server answered {response.status_code} to {response.request.url.path}: {message}")
    return response.json()


def relay(stream, tail: deque) -> None:
    """Copy the server's stderr to ours as it comes, keeping its last lines for an error at start."""
    for line in stream:
        sys.stderr.write(line)
        tail.append(line.rstrip())


async def wait_healthy(client, url: str, died: Callable[[], str | None], timeout: float = 120.0) -> None:
    """Until the server answers its health check; a server process that ended is reported at once
    (``died``), not after the timeout (an audit: 120 s for a store the server refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = died()
        if why:
            raise SystemExit(f"error: {why}")
        try:
            if (await client.get(f"{url}/api/v1/health")).status_code == 200:
                return
        except Exception:
            pass
        await asyncio.sleep(0.3)
    raise SystemExit(f"error: the server at {url} did not answer its health check within {timeout:.0f} s")


async def run_level(url: str, concurrency: int, duration: float, body_extra: dict) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    matched: list[int] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + duration

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < deadline:
                body = {"type": QUERIES[i % len(QUERIES)], "limit": 10, **body_extra}
                i += concurrency
                began = time.perf_counter()
                response = await client.post(f"{url}/api/v1/search", json=body)
                elapsed = time.perf_counter() - began
                if response.status_code == 200:
                    latencies.append(elapsed * 1000)
                    matched.append(len(response.json()["hits"]))
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - began
    lat = np.asarray(latencies)
    return {
        "concurrency": concurrency,
        "requests": int(lat.size),
        "errors": errors,
        "rps": round(lat.size / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if lat.size else None,
        "mean_hits": round(float(np.mean(matched)), 1) if matched else 0,
    }


async def bench(url: str, levels: list[int], duration: float, warmup: float, body_extra: dict,
                died: Callable[[], str | None]) -> list[dict]:
    import httpx

    async with httpx.AsyncClient(timeout=120) as client:
        await wait_healthy(client, url, died)
        info = answer(await client.get(f"{url}/api/v1/info"))
        size = {"passages": info["store"]["passages"], "spans": info["store"]["spans"]}  # in every row (an audit)
        print(f"# store: {size['passages']} passages, {size['spans']} spans; "
              f"model {info['model']['id']} {info['model']['version']}", file=sys.stderr)
        for q in QUERIES:  # loads the vectors and warms the type-phrase path
            answer(await client.post(f"{url}/api/v1/search", json={"type": q, "limit": 10, **body_extra}))
        totals = answer(await client.post(f"{url}/api/v1/search", json={"type": QUERIES[0], "limit": 1, "all": True, **body_extra}))
        print(f"# '{QUERIES[0]}' matches {totals['total']} passages at threshold {totals['threshold']}", file=sys.stderr)
    await run_level(url, max(levels), warmup, body_extra)
    rows = []
    for c in levels:
        row = {**await run_level(url, c, duration, body_extra), **size}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=count, default=100_000, help="passages in the store (default: %(default)s)")
    parser.add_argument("--store", type=Path, default=Path("/tmp/nerindex-bench-serve"),
                        help="embedded store folder, built there or reused when it holds --passages (default: %(default)s)")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="a CoNLL file, or a folder searched for *.conll files (or *.txt ones where it has "
                             "none, as CrossNER's), for the texts (default: %(default)s)")
    parser.add_argument("--duration", type=seconds, default=10.0, help="seconds per concurrency level (default: %(default)s)")
    parser.add_argument("--warmup", type=seconds, default=3.0,
                        help="seconds of requests at the highest concurrency before timing (default: %(default)s)")
    parser.add_argument("--concurrency", type=count, nargs="+", default=[1, 8, 32],
                        help="concurrent clients, one level each (default: %(default)s)")
    parser.add_argument("--workers", type=count, default=None, help="server search threads (serve --workers; default: its own)")
    parser.add_argument("--threshold", type=float, default=None, help="per-request threshold (default: the model's)")
    parser.add_argument("--url", default=None, help="benchmark an already running server instead")
    args = parser.parse_args()

    if args.url is None:
        have = store_size(args.store)
        if have and have != args.passages:  # an audit: a larger store was measured as if it held --passages
            raise SystemExit(f"error: {args.store} holds {have} passages, not {args.passages}; remove it or pick another --store")
        if not have:
            built_s = build_store(args.store, args.passages, data=args.data)
            print(f"# built {args.passages} passages in {built_s:.0f}s into {args.store}", file=sys.stderr)
    body_extra = {} if args.threshold is None else {"threshold": args.threshold}

    server = None
    tail: deque[str] = deque(maxlen=5)
    reader = None
    url = args.url
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "indexer.cli", "serve", "--store", str(args.store), "--port", str(port),
               "--log-level", "warning", "--timeout", "60"]
        if args.workers:
            cmd += ["--workers", str(args.workers)]
        server = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=relay, args=(server.stderr, tail), daemon=True)
        reader.start()

    def died() -> str | None:
        """Why the server process ended, with its last stderr line; None while it runs (or with --url)."""
        if server is None or server.poll() is None:
            return None
        reader.join(timeout=5)  # its last lines
        last = tail[-1].removeprefix("error: ") if tail else "no message"
        return f"nerindex serve exited with code {server.returncode} at start: {last}"

    try:
        random.seed(0)
        asyncio.run(bench(url, args.concurrency, args.duration, args.warmup, body_extra, died))
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            reader.join(timeout=5)  # its last lines, relayed before this process ends


if __name__ == "__main__":
    run(main)
