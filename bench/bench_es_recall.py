"""Elasticsearch's top-k against the exact one, on the same passages, before and after a replacing run.

FILE goes into a new embedded store and a new Elasticsearch alias (``nerindex index``; with
``--index-options`` other than the default, ``nerindex es reindex --index-options`` then makes the
index over); ``--replace`` indexes another file over both with ``--reindex-existing``. For each
phrase × λ (the model's, and 0) × limit, the passages of Elasticsearch's top-k are compared with
the embedded store's, which scans every span exactly below 300k spans (its ANN index starts
there, and this refuses a store that large). Prints the searches whose passage sets differ, with
the index's segments and deleted documents (spans included) beside them.

    NERINDEX_ES_URL=http://127.0.0.1:9200 python bench/bench_es_recall.py corpus.jsonl \\
        --replace corpus2.jsonl [--index-options int8_flat] [--json]
    NERINDEX_ES_URL=... python bench/bench_es_recall.py --conll ../shared/data/crossner/politics/dev.txt

``--conll`` makes both files from a CoNLL file's first 500 sentences: ``p0000`` … with their
texts, then the same ids with the texts moved on by one (every passage replaced).

The alias and the store are left for inspection (``--keep``) or deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

from indexer.api import NerIndex
from indexer.config import resolve
from indexer.stores import ann
from bench_args import count, run  # noqa: E402

PHRASES = ("person", "political party", "politician", "election", "country", "dinosaur", "chancellor",
           "organization", "location", "city", "ideology", "newspaper", "treaty", "parliament", "war")


def nerindex(*args: str) -> None:
    """``nerindex ARGS`` with this Python (a venv need not be activated); its error, on stderr
    already, ends this run with its exit code (an audit: a traceback of the call besides it)."""
    done = subprocess.run([sys.executable, "-m", "indexer.cli", *args], stdout=subprocess.DEVNULL)
    if done.returncode:
        raise SystemExit(done.returncode)


def conll_corpora(path: str, folder: str, n: int = 500) -> tuple[str, str]:
    """Two JSONL files of the same ids: the first ``n`` sentences, then each id with the next one's text."""
    from indexer.conll import iter_sentences

    texts = [" ".join(sentence.tokens) for sentence in iter_sentences(path)][: n + 1]
    files = []
    for name, shift in (("corpus.jsonl", 0), ("replaced.jsonl", 1)):
        files.append(os.path.join(folder, name))
        with open(files[-1], "w", encoding="utf-8") as out:
            for i in range(min(n, len(texts) - 1)):
                out.write(json.dumps({"id": f"p{i:04d}", "text": texts[i + shift]}) + "\n")
    return files[0], files[1]


def wrong_sets(es: NerIndex, exact: NerIndex, limits: list[int]) -> list[dict]:
    """The searches whose top-k passage sets differ, with what each side alone returned."""
    wrong = []
    for phrase in PHRASES:
        for weight in (None, 0.0):
            for limit in limits:
                got, want = ({h.id for h in ix.search(phrase, limit=limit, passage_weight=weight)} for ix in (es, exact))
                if got != want:
                    wrong.append({"phrase": phrase, "passage_weight": weight, "limit": limit,
                                  "es_only": sorted(got - want), "exact_only": sorted(want - got)})
    return wrong


def drop_alias(alias: str) -> None:
    """Delete the alias's indices (by name: wildcards need a cluster setting). A server that cannot
    be reached is one line, so it does not hide the error that ended the run (an audit)."""
    try:
        with NerIndex.open(es_index=alias, create=True) as es:
            client = es.store.client
            for name in client.indices.get(index=f"{alias}*", expand_wildcards="all", ignore_unavailable=True).body:
                client.indices.delete(index=name)
    except Exception as exc:  # noqa: BLE001
        print(f"could not delete the indices {alias}*: {exc}", file=sys.stderr)


def segments(es: NerIndex) -> dict[str, int]:
    rows = es.store.client.cat.segments(index=es.store.alias, format="json").body
    return {"segments": len(rows), "deleted_docs": sum(int(r["docs.deleted"]) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", metavar="FILE",
                        help="passages as `nerindex index` reads them (JSONL, CSV/TSV, ...), indexed into both stores")
    parser.add_argument("--replace", help="a file indexed over both with --reindex-existing")
    parser.add_argument("--conll", help="make FILE and --replace from this CoNLL file's first 500 sentences")
    parser.add_argument("--index-options", default=None, help="spans.vector index type (default: the store's, int8_hnsw)")
    parser.add_argument("--limits", type=count, nargs="+", default=[10, 20, 50],
                        help="top-k sizes compared (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="leave the alias and the store for inspection (default: both deleted)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not resolve().es_url:  # an audit: `nerindex index --es-index` without one, then tracebacks
        parser.error("set NERINDEX_ES_URL to the Elasticsearch server to measure (e.g. http://127.0.0.1:9200)")
    if not (args.file or args.conll):
        parser.error("give FILE or --conll")
    alias, folder = f"recall-{uuid.uuid4().hex[:8]}", tempfile.mkdtemp(prefix="bench-es-recall-")
    store = os.path.join(folder, "store")
    rows = []
    on_es = False  # whether an index of the alias may exist, to delete at the end
    try:
        if args.conll:
            args.file, args.replace = conll_corpora(args.conll, folder)
        nerindex("index", args.file, "--store", store)
        on_es = True
        nerindex("index", args.file, "--es-index", alias)
        if args.index_options:
            nerindex("es", "reindex", "--es-index", alias, "--index-options", args.index_options, "--delete-old")
        stages = [("fresh", None)] + ([("replaced", args.replace)] if args.replace else [])
        for stage, replace in stages:
            if replace:
                nerindex("index", replace, "--store", store, "--reindex-existing")
                nerindex("index", replace, "--es-index", alias, "--reindex-existing")
            with NerIndex.open(store, create=False) as exact, NerIndex.open(es_index=alias, create=False) as es:
                if exact.store.counts().spans >= ann.MIN_ROWS:
                    raise SystemExit("error: the embedded store is past its exact scan: use a smaller corpus")
                wrong = wrong_sets(es, exact, args.limits)
                rows.append({"stage": stage, "searches": len(PHRASES) * 2 * len(args.limits), "wrong": len(wrong),
                             **segments(es), "examples": wrong[:5]})
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
            if on_es:
                drop_alias(alias)
    result = {"file": args.file, "replace": args.replace, "index_options": args.index_options or "int8_hnsw", "rows": rows}
    if args.json:
        print(json.dumps(result))
    else:
        for row in rows:
            print(f"{row['stage']}: {row['wrong']} of {row['searches']} top-k sets differ from the exact ones "
                  f"({row['segments']} segments, {row['deleted_docs']} deleted documents)")


if __name__ == "__main__":
    run(main)
