"""The retrieval benchmark built from labelled NER data (its BEIR-style folder form: ``beir_folder``).

Corpus = the sentences of the labelled files; one query per readable type phrase; a passage is
relevant to a query when it holds at least one gold mention of a tag mapped to that phrase (NER
Retriever's protocol). Tags mapped to no phrase (``misc``) make no query; their mentions stay
entities. The files of one data set in one folder are one collection (:func:`one_collection`);
collections of several data sets are merged with each type judged only on the collections that tag
it (:func:`merge_benchmarks`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence, TypeVar

from ..assets import phrases_file
from ..conll import read_conll
from ..errors import InputError
from ..records import Passage
from ..text import strict_json

PHRASES_FILE = phrases_file()
log = logging.getLogger(__name__)

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
    """A readable, stable query id from the phrase: case, and runs of spaces, hyphens and
    underscores, aside. Every other character stays: keeping ``[a-z0-9]`` alone made every
    non-Latin phrase ``q-`` and "C++ programmer" the id of "C programmer", so different types were
    merged into one query without a word (an audit)."""
    return "q-" + re.sub(r"[\s_-]+", "-", phrase.casefold()).strip("-")


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
            data = strict_json(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"not a valid mapping file: {exc}", path=str(p)) from exc
    if not isinstance(data, dict):
        raise InputError("a mapping file holds an object of tag → phrase", path=str(p))
    return data


def detect_dataset(path: str | Path, sections: Iterable[str], *, nearest: int | None = None) -> str | None:
    """The mapping section a file belongs to, from its folder names (e.g. ``…/crossner/politics``);
    ``nearest``: from that many folders above the file only."""
    parts = [part.lower() for part in Path(path).resolve().parts]
    if nearest is not None:
        parts = parts[-nearest - 1 : -1]
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
    section (or flat file) may list ``"_coarse": [tags]``; without it, a data set whose coarse tags
    are known (:data:`COARSE_TAGS`, named by ``dataset`` or the file's two nearest folders) has those, flat or
    not (a flat copy of the shipped CrossNER section scored its coarse types as seen and unseen
    ones, unseen R-Precision 0.710 → 0.610 on a slice: an audit).
    """
    sectioned = any(isinstance(v, dict) for k, v in data.items() if not k.startswith("_"))
    if not sectioned:
        # the file's own folder or the one above (crossner/politics/dev.txt), not any ancestor: a
        # file anywhere under a folder named crossner got CrossNER's coarse tags (a review); the
        # report's coarse group shows which types were scored so
        known = dataset or detect_dataset(path, COARSE_TAGS, nearest=2)
        coarse = frozenset(data.get("_coarse", COARSE_TAGS.get(known or "", ())))
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
    if unknown:  # named at the first sentence that uses one (an audit: no line was given)
        line = next((p.fields.get("line") for p in corpus if any(g.label in unknown for g in p.gold)), None)
        raise InputError(
            f"tags without a query phrase: {', '.join(unknown)} (add them to the mapping; "
            "null marks a tag that is not a query)",
            path=source,
            line=line if isinstance(line, int) else None,
        )
    coarse = set(coarse_tags)
    # one query per id (``query_id``: case and spacing aside): two phrases with one id
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

    A query is judged only on the corpora of the parts whose gold has its tags (``Benchmark.judged``):
    collections of data sets with different tags do not say whether their passages mention the
    other sets' types, so counting those passages as not relevant would be a guess (WNUT-17's tweets
    were "not relevant" to "organization", MultiCoNER's sentences to "corporation"). The tags a
    part (a collection) uses, not its data set's mapping, decide: CrossNER's one mapping covers
    five domains, and politics has no "book" tag (a book there is ``misc``). A query coarse in one
    part is coarse (its judgements are incomplete there, so they are incomplete merged).
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
            judges = bool(part.qrels.get(q.id))  # the part's gold has the type's tags: it judges the type
            if judges:
                judged.setdefault(q.id, set()).update(part.judged.get(q.id, ids))
            old = queries.get(q.id)
            coarse = q.coarse and judges  # coarse where it is judged
            if old is None:
                queries[q.id] = Query(q.id, q.text, q.labels, coarse=coarse)
            else:
                labels = tuple(sorted(set(old.labels) | set(q.labels)))
                queries[q.id] = Query(q.id, q.text, labels, coarse=old.coarse or coarse)
            qrels.setdefault(q.id, set()).update(part.qrels.get(q.id, ()))
            for pid, spans in part.gold.get(q.id, {}).items():
                held = gold.setdefault(q.id, {}).setdefault(pid, [])  # once each: a file given twice
                held.extend(span for span in spans if span not in held)  # doubled the gold counts (an audit)
        mapping.update(part.mapping)
        sources.extend(source for source in part.sources if source not in sources)
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
    collections: dict[tuple[str | None, Path], list[Benchmark]] = {}
    # a passage's id is its file's name, line and text, so a file given twice, or a copy, counts
    # once (merge_benchmarks); two files of one name whose sentences at one line agree but whose
    # tags do not would have lost one side's mentions without a word (an audit): refused
    gold_of: dict[str, tuple[str, tuple]] = {}
    for path in paths:
        mapping, coarse, section = resolve_mapping(data, path, dataset=dataset, source=source)
        passages = list(read_conll(path))
        if not passages:
            raise InputError("no sentences found", path=str(path))
        for passage in passages:
            other, gold = gold_of.setdefault(passage.id, (str(path), passage.gold))
            if gold != passage.gold:
                raise InputError(f"the sentence at this line of {other}, a file of the same name, is tagged "
                                 "otherwise there; both cannot be one passage: rename one file",
                                 path=str(path), line=passage.fields.get("line"))  # fmt: skip
        label = _label(path, section)
        # a data set known by name (a mapping section) in one folder is one collection; with a flat
        # mapping nothing says which files are one data set, so each file is its own (a review)
        key = (section, Path(path).resolve().parent) if section else (None, Path(path).resolve())
        collections.setdefault(key, []).append(
            build_benchmark(
                passages, mapping, name=label, coarse_tags=coarse, sources=[str(path)], source=str(path)
            )
        )
    parts = [one_collection(files) for files in collections.values()]
    if len(parts) == 1:
        bench = parts[0]
        if name:
            bench.name = name
        return bench
    return merge_benchmarks(parts, name=name or "+".join(p.name for p in parts))


def one_collection(files: Sequence[Benchmark]) -> Benchmark:
    """The files of one collection (one data set's files in one folder, the data set named by a
    section of the mapping: ``dev.txt`` and ``test.txt``, or a corpus kept one file per document;
    with a flat mapping each file is a collection) as one benchmark that judges every type
    on all of them: they share one tag set, so a file with no mention of a type says that its
    passages mention none. Judged file by file, a type lost the non-relevant passages of the files
    without its mentions, and 12 files of one set scored R-Precision 0.664 where the same
    sentences in one file scored 0.533 (an audit)."""
    if len(files) == 1:
        return files[0]
    merged = merge_benchmarks(files, name="+".join(f.name for f in files))
    merged.judged = {}
    return merged


def _label(path: str | Path, section: str | None) -> str:
    """A readable name for a data file: from its data-set folder down (``crossner/politics/dev.txt``)."""
    parts = Path(path).resolve().parts
    if section:
        lowered = [p.lower() for p in parts]
        if section.lower() in lowered:
            return "/".join(parts[lowered.index(section.lower()) :])
        return f"{section}/{parts[-1]}"
    return parts[-1]
