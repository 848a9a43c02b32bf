"""The benchmark as a BEIR-style folder, so other systems are scored on exactly the same task.

```
DIR/corpus.jsonl     {"_id", "title": "", "text", "metadata": {...}, "entities": [{"start", "end", "label", "type"}]}
DIR/queries.jsonl    {"_id", "text", "metadata": {"labels": [...], "coarse": bool}}
DIR/qrels.tsv        query-id TAB corpus-id TAB score (header line; score 1 = relevant)
DIR/qrels/test.tsv   the same file where BEIR's loaders look for it
DIR/benchmark.json   name, sources, mapping, protocol and how it was judged
```

Entity offsets are characters of ``text``, end exclusive; ``type`` is the query phrase of the
mention's label (``null`` for misc). A BEIR folder judges every type on every passage, so a
benchmark that judges a type on some files only (``Benchmark.judged``) is not written as one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from ..atomic_files import raise_named
from ..errors import InputError
from ..json_lines import json_lines
from ..processes import writer_running
from ..records import GoldSpan, Passage
from ..text import invalid_utf8, strict_json
from .benchmark_io import PROTOCOL, Benchmark, Query

log = logging.getLogger(__name__)

# benchmark.json's record that every type is judged on every passage (exports refuse anything else)
JUDGED_EVERYWHERE = "every type on every passage"


def export_benchmark(bench: Benchmark, folder: str | Path) -> Path:
    """Write the benchmark as a BEIR-style folder (see the module docstring); returns the folder."""
    if bench.judged:
        only = ", ".join(sorted(q.text for q in bench.queries if q.id in bench.judged)[:5])
        raise InputError(
            f"these files label different types ({only}, … are judged on some files only), and a BEIR "
            "folder counts every passage of its corpus as judged: export each collection (a data set's files "
            "in one folder) on its own",
            path=bench.name,
        )
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError("is a file: export into a folder", path=str(out))
    other = _other_files(out)
    if other:  # a store folder, say: the benchmark's files were put beside store.sqlite (a CLI audit)
        raise InputError(f"holds files no benchmark export writes ({', '.join(other[:3])}): export into a new or "
                         "empty folder, or one an export made", path=str(out))
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(".export.*.tmp"):  # what an export killed here left (its process is gone)
        pid = old.name.split(".")[2]
        if not (pid.isdigit() and writer_running(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    tmp = out / f".export.{os.getpid()}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        _write_folder(bench, tmp)
        for name in BEIR_FILES:  # on disk before the renames make them the folder's
            with open(tmp / name, "rb") as handle:
                os.fsync(handle.fileno())
        # the slow part is done; each file now replaces its old copy by a rename (an audit: a Ctrl-C
        # while corpus.jsonl was written left new passages beside the old queries, and eval took them)
        for name in BEIR_FILES:
            (out / name).parent.mkdir(exist_ok=True)
            os.replace(tmp / name, out / name)
    except OSError as exc:  # a full disk named no file at all (an audit): the folder written
        raise_named(exc, out, str(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


BEIR_FILES = ("corpus.jsonl", "queries.jsonl", "qrels.tsv", "qrels/test.tsv", "benchmark.json")


def _other_files(out: Path) -> list[str]:
    """What ``out`` holds besides an export's files and folders (its ``qrels/``), as paths in it;
    hidden ones (its temporary ``.export.*.tmp``, a ``.DS_Store``: the review) are not counted;
    none where it does not exist."""
    if not out.is_dir():
        return []
    ours = set(BEIR_FILES) | {"qrels"}
    found = [p.relative_to(out) for p in out.rglob("*")]
    return sorted(rel.as_posix() for rel in found
                  if rel.as_posix() not in ours and not any(part.startswith(".") for part in rel.parts))


def _write_folder(bench: Benchmark, out: Path) -> None:
    """The files of :data:`BEIR_FILES` in ``out`` (a new folder)."""
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for p in bench.corpus:
            doc = {
                "_id": p.id,
                "title": "",
                "text": p.text,
                "metadata": p.fields,
                "entities": [
                    {"start": g.start, "end": g.end, "label": g.label, "type": bench.mapping.get(g.label)}
                    for g in p.gold
                ],
            }
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    # only the types that have a relevant passage here, as eval scores them: a type these files do
    # not tag (a book in CrossNER politics is "misc") was written with no qrels, as if judged absent (an audit)
    queries = bench.scored_queries()
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in queries:
            meta = {"labels": list(q.labels), "coarse": q.coarse}
            fh.write(json.dumps({"_id": q.id, "text": q.text, "metadata": meta}, ensure_ascii=False) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    order = {p.id: i for i, p in enumerate(bench.corpus)}
    for q in queries:
        for pid in sorted(bench.qrels.get(q.id, ()), key=lambda x: order.get(x, 0)):
            lines.append(f"{q.id}\t{pid}\t1")
    text = "\n".join(lines) + "\n"
    (out / "qrels.tsv").write_text(text, encoding="utf-8")
    (out / "qrels" / "test.tsv").write_text(text, encoding="utf-8")
    meta = {
        "name": bench.name,
        "sources": bench.sources,
        "mapping": bench.mapping,
        "protocol": PROTOCOL,
        "judged": JUDGED_EVERYWHERE,
        "passages": len(bench.corpus),
        "queries": len(queries),
    }
    (out / "benchmark.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line, object) of a BEIR JSONL file, each an object with an ``_id`` used once: a repeated
    passage was counted twice by the baselines and once by the store, a repeated query weighed
    double in every macro average."""
    first_line: dict[str, int] = {}
    for lineno, obj in json_lines(path):
        if not isinstance(obj, dict) or "_id" not in obj:
            raise InputError("expected an object with an '_id'", path=str(path), line=lineno)
        key = str(obj["_id"])
        if key in first_line:
            raise InputError(f"_id {key!r} repeats line {first_line[key]}", path=str(path), line=lineno)
        first_line[key] = lineno
        yield lineno, obj


def is_beir_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "corpus.jsonl").is_file() and (p / "queries.jsonl").is_file()


def import_benchmark(folder: str | Path) -> Benchmark:
    """Read a BEIR-style folder (this module's layout; ``entities`` optional) into a benchmark."""
    root = Path(folder)
    corpus, mapping = _read_corpus(root / "corpus.jsonl")
    if not corpus:
        raise InputError("no passages", path=str(root / "corpus.jsonl"))
    queries = []
    for lineno, q in _jsonl(root / "queries.jsonl"):
        query = str(q["_id"])
        if not isinstance(q.get("text"), str) or not q["text"].strip():  # a KeyError before (an audit)
            raise InputError("'text' must be the query's phrase (a non-empty string)", path=str(root / "queries.jsonl"),
                             line=lineno)
        meta = q.get("metadata") if isinstance(q.get("metadata"), dict) else {}
        labels = tuple(str(x) for x in meta.get("labels", ()))
        queries.append(Query(query, str(q["text"]), labels, coarse=bool(meta.get("coarse", False))))
    qrels_path = root / "qrels.tsv"
    if not qrels_path.is_file():
        qrels_path = root / "qrels" / "test.tsv"
    qrels = _read_qrels(qrels_path, queries, {p.id for p in corpus})
    gold: dict[str, dict[str, list[tuple[int, int]]]] = {q.id: {} for q in queries}
    for q in queries:
        tags = set(q.labels)
        for p in corpus:
            if p.id not in qrels.get(q.id, ()):
                continue
            spans = [(g.start, g.end) for g in p.gold if g.label in tags]
            if spans:
                gold[q.id][p.id] = spans
    meta_path = root / "benchmark.json"
    name = root.name
    sources = [str(root)]
    if meta_path.is_file():
        try:
            meta = strict_json(meta_path.read_text(encoding="utf-8"))
        except ValueError as exc:  # was passed over: the export's name and tag mapping dropped without a word
            raise InputError(f"not a benchmark.json of nerindex eval --export-benchmark: {exc}", path=str(meta_path)) from exc
        if not isinstance(meta, dict):
            raise InputError("not a benchmark.json of nerindex eval --export-benchmark: not an object", path=str(meta_path))
        name = meta.get("name", name)
        mapping = {**meta.get("mapping", {}), **mapping}
        if len(meta.get("sources", ())) > 1 and meta.get("judged") != JUDGED_EVERYWHERE:
            log.warning("%s: exported from %d files before nerindex judged each type only on the files "
                        "that tag it: its types are judged on every passage (export each file again)",
                        meta_path, len(meta["sources"]))
    return Benchmark(name, corpus, queries, qrels, gold, sources, mapping)


def _read_corpus(path: Path) -> tuple[list[Passage], dict[str, str | None]]:
    """Passages of ``corpus.jsonl`` with their gold entities, and the tag → type phrase mapping
    the entities' ``type`` fields give."""
    corpus: list[Passage] = []
    mapping: dict[str, str | None] = {}
    for lineno, doc in _jsonl(path):
        doc_id = str(doc["_id"])
        text = doc.get("text")
        if not isinstance(text, str):
            raise InputError("'text' must be a string", path=str(path), line=lineno)
        title = doc.get("title") or ""
        if title:
            text = f"{title} {text}"  # BEIR convention; offsets of 'entities' must then include it
        spans = []
        for ent in doc.get("entities") or ():
            try:
                start, end, label = int(ent["start"]), int(ent["end"]), str(ent["label"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError("each entity needs start, end and label", path=str(path), line=lineno) from exc
            if not 0 <= start < end <= len(text):
                raise InputError(f"entity offsets {start}..{end} outside the text", path=str(path), line=lineno)
            spans.append(GoldSpan(start, end, label))
            if "type" in ent:
                mapping.setdefault(label, ent["type"])
        fields = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
        corpus.append(Passage(id=doc_id, text=text, fields=fields, gold=tuple(spans)))
    return corpus, mapping


def _read_qrels(path: Path, queries: list[Query], corpus_ids: set[str]) -> dict[str, set[str]]:
    """Relevant passage ids per query id (score > 0) from a BEIR qrels TSV (header optional).

    A relevant passage missing from the corpus stays relevant and unfindable, as BEIR's own tools
    count it (published sets have a few: ArguAna), and a judgement of a query missing from
    ``queries`` is scored nowhere; both with a warning, which a cut corpus used to be without (its
    recall capped at 0.667 without a word)."""
    qrels: dict[str, set[str]] = {q.id: set() for q in queries}
    missing: dict[str, list[int]] = {"passages": [], "queries": []}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot open qrels: {exc.strerror}", path=str(path)) from exc
    try:
        lines = [line.rstrip("\r") for line in raw.decode("utf-8-sig").split("\n")]  # not splitlines: \x1c, U+2028
    except UnicodeDecodeError as exc:  # a traceback before (an audit)
        raise InputError(invalid_utf8(exc), path=str(path), line=raw.count(b"\n", 0, exc.start) + 1) from exc
    for lineno, line in enumerate(lines, start=1):
        cols = line.split("\t")
        if not line.strip() or (lineno == 1 and cols[0] == "query-id"):
            continue
        if len(cols) < 3:
            raise InputError("expected query-id TAB corpus-id TAB score", path=str(path), line=lineno)
        try:
            score = float(cols[2])
        except ValueError as exc:
            raise InputError(f"score is not a number: {cols[2]!r}", path=str(path), line=lineno) from exc
        if score > 0:
            if cols[0] not in qrels:
                missing["queries"].append(lineno)
                continue
            if cols[1] not in corpus_ids:
                missing["passages"].append(lineno)
            qrels[cols[0]].add(cols[1])
    for what, lines in missing.items():
        if lines:
            where = "queries.jsonl" if what == "queries" else "corpus.jsonl"
            effect = "scored nowhere" if what == "queries" else "relevant and never found (recall can not reach 1)"
            log.warning("%s: %d relevance judgement(s) name %s not in %s (first at line %d): %s",
                        path, len(lines), what, where, lines[0], effect)
    return qrels
