"""The retrieval benchmark built from labelled NER data, and its BEIR-style folder form.

Corpus = the sentences of the labelled files; one query per readable type phrase; a passage is
relevant to a query when it holds at least one gold mention of a tag mapped to that phrase (NER
Retriever's protocol). Tags mapped to no phrase (``misc``) make no query; their mentions stay
entities. The same benchmark can be written as a BEIR-style folder so other systems are scored on
exactly the same task:

```
DIR/corpus.jsonl     {"_id", "title": "", "text", "metadata": {...}, "entities": [{"start", "end", "label", "type"}]}
DIR/queries.jsonl    {"_id", "text", "metadata": {"labels": [...], "coarse": bool}}
DIR/qrels.tsv        query-id TAB corpus-id TAB score (header line; score 1 = relevant)
DIR/qrels/test.tsv   the same file where BEIR's loaders look for it
DIR/benchmark.json   name, sources, mapping and protocol
```

Entity offsets are characters of ``text``, end exclusive; ``type`` is the query phrase of the
mention's label (``null`` for misc).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence, TypeVar

from ..assets import phrases_file
from ..conll import read_conll
from ..errors import InputError
from ..records import GoldSpan, Passage

PHRASES_FILE = phrases_file()

# Tags that a data set uses only where no finer tag applies (shared/data/README.md): their relevance
# judgements are incomplete (a politician is not labelled "person"), so they are scored apart.
COARSE_TAGS: dict[str, frozenset[str]] = {
    "crossner": frozenset({"person", "organisation", "location", "country"}),
}

PROTOCOL = (
    "corpus = sentences of labelled NER data; query = readable type phrase; relevant = passages "
    "with at least one gold mention of a tag mapped to that phrase"
)


class _HasId(Protocol):
    id: str


R = TypeVar("R", bound=_HasId)


@dataclass(frozen=True)
class Query:
    """A type query: its id, the phrase a person types, and the gold tags it stands for."""

    id: str
    text: str
    labels: tuple[str, ...]
    coarse: bool = False


@dataclass
class Benchmark:
    """Corpus, queries, relevance and the gold mentions of each query's type per passage."""

    name: str
    corpus: list[Passage]
    queries: list[Query]
    qrels: dict[str, set[str]]
    gold: dict[str, dict[str, list[tuple[int, int]]]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    mapping: dict[str, str | None] = field(default_factory=dict)
    # Per query, the passages judged for it where that is not the whole corpus: a merged benchmark
    # whose files label different types judges each type only on the files that label it (a
    # passage of a file without the tag may well mention such an entity, unlabelled).
    judged: dict[str, frozenset[str]] = field(default_factory=dict)

    def scored_queries(self) -> list[Query]:
        """Queries with at least one relevant passage (a type absent from the corpus is skipped)."""
        return [q for q in self.queries if self.qrels.get(q.id)]

    def judged_only(self, query: str, ranking: Sequence[R]) -> list[R]:
        """``ranking`` (items with an ``id``) without the passages ``query`` was not judged on."""
        scope = self.judged.get(query)
        return list(ranking) if scope is None else [r for r in ranking if r.id in scope]

    def scope_rankings(self, rankings: Mapping[str, Mapping[str, Sequence[R]]]) -> dict[str, dict[str, list[R]]]:
        """Every method's ranking of every query through :meth:`judged_only`."""
        return {m: {q: self.judged_only(q, r) for q, r in by_query.items()} for m, by_query in rankings.items()}


def query_id(phrase: str) -> str:
    """A readable, stable query id from the phrase."""
    return "q-" + re.sub(r"[^a-z0-9]+", "-", phrase.lower()).strip("-")


# ---------------------------------------------------------------- mappings


def _not_a_query(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and not value.strip())


def _flat(section: Mapping[str, Any], *, path: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for tag, value in section.items():
        if tag.startswith("_"):
            continue
        if _not_a_query(value):
            out[tag] = None
        elif isinstance(value, str):
            out[tag] = value.strip()
        else:
            raise InputError(f"tag {tag!r}: phrase must be a string or null, got {value!r}", path=path)
    return out


def read_mapping_file(path: str | Path) -> dict[str, Any]:
    """A tag → phrase mapping file (JSON, or TOML where ``""``/``false`` stands for null)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read mapping: {exc.strerror}", path=str(p)) from exc
    try:
        if p.suffix.lower() == ".toml":
            try:
                import tomllib  # Python ≥ 3.11
            except ModuleNotFoundError:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not a valid mapping file: {exc}", path=str(p)) from exc
    if not isinstance(data, dict):
        raise InputError("a mapping file holds an object of tag → phrase", path=str(p))
    return data


def detect_dataset(path: str | Path, sections: Iterable[str]) -> str | None:
    """The mapping section a file belongs to, from its folder names (e.g. ``…/crossner/politics``)."""
    parts = [part.lower() for part in Path(path).resolve().parts]
    for name in sections:
        if name.lower() in parts:
            return name
    return None


def resolve_mapping(
    data: Mapping[str, Any], path: str | Path, *, dataset: str | None = None, source: str = "mapping"
) -> tuple[dict[str, str | None], frozenset[str], str | None]:
    """(tag → phrase, coarse tags, section name) for one data file.

    A flat mapping (values are phrases) applies to every file; a sectioned one (values are objects,
    like ``indexer/assets/phrases.json``) is picked by ``dataset`` or by the file's folder names. A
    section (or flat file) may list ``"_coarse": [tags]``.
    """
    sectioned = any(isinstance(v, dict) for k, v in data.items() if not k.startswith("_"))
    if not sectioned:
        coarse = frozenset(data.get("_coarse", ()))
        return _flat(data, path=source), coarse, dataset
    sections = [k for k, v in data.items() if isinstance(v, dict) and not k.startswith("_")]
    name = dataset or detect_dataset(path, sections)
    if dataset is not None and dataset not in data:
        raise InputError(f"--dataset {dataset!r} is not one of {', '.join(sections)}", path=str(path))
    if name is None or name not in data:
        raise InputError(
            f"cannot tell which data set this file is; pass --dataset (one of {', '.join(sections)}) "
            "or --mapping with a flat tag → phrase file",
            path=str(path),
        )
    section = data[name]
    coarse = frozenset(section.get("_coarse", COARSE_TAGS.get(name, ())))
    return _flat(section, path=source), coarse, name


# ---------------------------------------------------------------- building


def build_benchmark(
    passages: Iterable[Passage],
    mapping: Mapping[str, str | None],
    *,
    name: str,
    coarse_tags: Iterable[str] = (),
    sources: Sequence[str] = (),
    source: str = "<input>",
) -> Benchmark:
    """Queries, qrels and per-query gold mentions from passages with gold spans."""
    corpus = list(passages)
    unknown = sorted({g.label for p in corpus for g in p.gold} - set(mapping))
    if unknown:
        raise InputError(
            f"tags without a query phrase: {', '.join(unknown)} (add them to the mapping; "
            "null marks a tag that is not a query)",
            path=source,
        )
    coarse = set(coarse_tags)
    # one query per id (``query_id``: case, spacing and punctuation aside): two phrases with one id
    # were two queries that shared their qrels and were scored twice; now they are one type, written
    # as the first of them in tag order
    by_id: dict[str, tuple[str, list[str]]] = {}
    for tag, phrase in sorted(mapping.items()):
        if phrase is not None:
            by_id.setdefault(query_id(phrase), (phrase, []))[1].append(tag)
    queries = [
        Query(qid, phrase, tuple(sorted(tags)), coarse=all(t in coarse for t in tags))
        for qid, (phrase, tags) in sorted(by_id.items(), key=lambda item: item[1][0])
    ]
    qid_of_tag = {tag: q.id for q in queries for tag in q.labels}
    qrels: dict[str, set[str]] = {q.id: set() for q in queries}
    gold: dict[str, dict[str, list[tuple[int, int]]]] = {q.id: {} for q in queries}
    for p in corpus:
        for g in p.gold:
            qid = qid_of_tag.get(g.label)
            if qid is None:
                continue
            qrels[qid].add(p.id)
            gold[qid].setdefault(p.id, []).append((g.start, g.end))
    return Benchmark(name, corpus, queries, qrels, gold, list(sources), dict(mapping))


def merge_benchmarks(parts: Sequence[Benchmark], *, name: str) -> Benchmark:
    """One benchmark over the union of several corpora; queries with the same phrase are merged.

    A query is judged only on the corpora of the parts that have it (``Benchmark.judged``): CoNLL
    files of data sets with different tags do not say whether their passages mention the other
    sets' types, so counting those passages as not relevant would be a guess (WNUT-17's tweets were
    "not relevant" to "organization", MultiCoNER's sentences to "corporation").
    """
    corpus: list[Passage] = []
    seen_ids: set[str] = set()
    queries: dict[str, Query] = {}
    qrels: dict[str, set[str]] = {}
    gold: dict[str, dict[str, list[tuple[int, int]]]] = {}
    mapping: dict[str, str | None] = {}
    sources: list[str] = []
    judged: dict[str, set[str]] = {}
    for part in parts:
        for p in part.corpus:
            if p.id not in seen_ids:
                seen_ids.add(p.id)
                corpus.append(p)
        ids = {p.id for p in part.corpus}
        for q in part.queries:
            judged.setdefault(q.id, set()).update(part.judged.get(q.id, ids))
            old = queries.get(q.id)
            if old is None:
                queries[q.id] = q
            else:
                labels = tuple(sorted(set(old.labels) | set(q.labels)))
                queries[q.id] = Query(q.id, q.text, labels, coarse=old.coarse and q.coarse)
            qrels.setdefault(q.id, set()).update(part.qrels.get(q.id, ()))
            for pid, spans in part.gold.get(q.id, {}).items():
                gold.setdefault(q.id, {}).setdefault(pid, []).extend(spans)
        mapping.update(part.mapping)
        sources.extend(part.sources)
    ordered = [queries[k] for k in sorted(queries)]
    scoped = {q: frozenset(ids) for q, ids in judged.items() if len(ids) < len(seen_ids)}
    return Benchmark(name, corpus, ordered, qrels, gold, sources, mapping, scoped)


def benchmark_from_conll(
    paths: Sequence[str | Path],
    *,
    mapping_file: str | Path | None = None,
    dataset: str | None = None,
    name: str | None = None,
) -> Benchmark:
    """Read CoNLL/BIO files (any variant in shared/data) into one benchmark."""
    if not paths:
        raise InputError("no data files given")
    data = read_mapping_file(mapping_file or PHRASES_FILE)
    source = str(mapping_file or PHRASES_FILE)
    parts = []
    for path in paths:
        mapping, coarse, section = resolve_mapping(data, path, dataset=dataset, source=source)
        passages = list(read_conll(path))
        if not passages:
            raise InputError("no sentences found", path=str(path))
        label = _label(path, section)
        parts.append(
            build_benchmark(
                passages, mapping, name=label, coarse_tags=coarse, sources=[str(path)], source=str(path)
            )
        )
    if len(parts) == 1:
        bench = parts[0]
        if name:
            bench.name = name
        return bench
    return merge_benchmarks(parts, name=name or "+".join(p.name for p in parts))


def _label(path: str | Path, section: str | None) -> str:
    """A readable name for a data file: from its data-set folder down (``crossner/politics/dev.txt``)."""
    parts = Path(path).resolve().parts
    if section:
        lowered = [p.lower() for p in parts]
        if section.lower() in lowered:
            return "/".join(parts[lowered.index(section.lower()) :])
        return f"{section}/{parts[-1]}"
    return parts[-1]


# ---------------------------------------------------------------- BEIR-style folder


def export_benchmark(bench: Benchmark, folder: str | Path) -> Path:
    """Write the benchmark as a BEIR-style folder (see the module docstring); returns the folder."""
    if bench.judged:
        only = ", ".join(sorted(q.text for q in bench.queries if q.id in bench.judged)[:5])
        raise InputError(
            f"these files label different types ({only}, … are judged on some files only), and a BEIR "
            "folder counts every passage of its corpus as judged: export each file on its own",
            path=bench.name,
        )
    out = Path(folder)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
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
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q in bench.queries:
            meta = {"labels": list(q.labels), "coarse": q.coarse}
            fh.write(json.dumps({"_id": q.id, "text": q.text, "metadata": meta}, ensure_ascii=False) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    order = {p.id: i for i, p in enumerate(bench.corpus)}
    for q in bench.queries:
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
        "passages": len(bench.corpus),
        "queries": len(bench.queries),
    }
    (out / "benchmark.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def _jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror}", path=str(path)) from exc
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise InputError(f"not JSON: {exc.msg}", path=str(path), line=lineno) from exc
            if not isinstance(obj, dict) or "_id" not in obj:
                raise InputError("expected an object with an '_id'", path=str(path), line=lineno)
            yield lineno, obj


def is_beir_folder(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "corpus.jsonl").is_file() and (p / "queries.jsonl").is_file()


def import_benchmark(folder: str | Path) -> Benchmark:
    """Read a BEIR-style folder (this module's layout; ``entities`` optional) into a benchmark."""
    root = Path(folder)
    corpus, mapping = _read_corpus(root / "corpus.jsonl")
    queries = []
    for _, q in _jsonl(root / "queries.jsonl"):
        meta = q.get("metadata") if isinstance(q.get("metadata"), dict) else {}
        labels = tuple(str(x) for x in meta.get("labels", ()))
        queries.append(Query(str(q["_id"]), str(q["text"]), labels, coarse=bool(meta.get("coarse", False))))
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
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            name = meta.get("name", name)
            mapping = {**meta.get("mapping", {}), **mapping}
        except ValueError:
            pass
    return Benchmark(name, corpus, queries, qrels, gold, sources, mapping)


def _read_corpus(path: Path) -> tuple[list[Passage], dict[str, str | None]]:
    """Passages of ``corpus.jsonl`` with their gold entities, and the tag → type phrase mapping
    the entities' ``type`` fields give."""
    corpus: list[Passage] = []
    mapping: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    for lineno, doc in _jsonl(path):
        doc_id = str(doc["_id"])
        if doc_id in first_line:  # one passage counted twice by the baselines, once by the store
            raise InputError(f"_id {doc_id!r} repeats line {first_line[doc_id]}", path=str(path), line=lineno)
        first_line[doc_id] = lineno
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

    A relevant passage missing from the corpus, or a query missing from ``queries``, is an error:
    left in, it would cap the query's recall (or be scored nowhere) without a word."""
    qrels: dict[str, set[str]] = {q.id: set() for q in queries}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot open qrels: {exc.strerror}", path=str(path)) from exc
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
                raise InputError(f"query {cols[0]!r} is not in queries.jsonl", path=str(path), line=lineno)
            if cols[1] not in corpus_ids:
                raise InputError(f"passage {cols[1]!r} is not in corpus.jsonl", path=str(path), line=lineno)
            qrels[cols[0]].add(cols[1])
    return qrels
