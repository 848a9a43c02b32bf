"""The silver JSONL records: one sentence a line with its typed spans (read and written here only)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ...atomic_files import write_file
from ...errors import InputError
from ...json_lines import json_lines


@dataclass
class SilverSpan:
    """A typed span: character offsets, its type phrases nearest first, where it came from."""

    start: int
    end: int
    types: list[str]
    depths: list[int]  # per type: 0 gold phrase or its synonyms, k = k levels above
    source: str  # "gold" | "wordnet"
    synset: str | None = None
    label: str | None = None  # the gold phrase (gold spans only; None for misc)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class SilverSentence:
    """One sentence of a silver file: its spans and the nouns left untyped (``ignore``)."""

    id: str
    source: str
    text: str
    spans: list[SilverSpan] = field(default_factory=list)
    # nouns found but not made spans (abstract, generic, modifiers): neither entity nor non-entity
    # for the entity head, since the silver annotation is incomplete there
    ignore: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "text": self.text,
                "spans": [s.to_dict() for s in self.spans],
                "ignore": [list(r) for r in self.ignore]}  # fmt: skip


def read_silver(path: str | Path) -> Iterator[SilverSentence]:
    """Sentences of a silver JSONL file; a line that is not a silver record is an InputError naming
    it (an audit: a JSONDecodeError or TypeError traceback without the file or line)."""
    for lineno, d in json_lines(path):
        try:
            spans = [SilverSpan(**s) for s in d["spans"]]
            ignore = [tuple(r) for r in d.get("ignore", ())]
            yield _checked(SilverSentence(d["id"], d["source"], d["text"], spans, ignore))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"not a silver record ({exc}; files of 'nerindex silver --out')", path=str(path),
                             line=lineno) from exc


def _checked(sentence: SilverSentence) -> SilverSentence:
    """``sentence`` if its values have the shapes training reads, else ValueError saying which (the
    train audit, round 29: ``"types": "person"`` trained six one-letter types, and a span past the
    text's end was dropped without a word)."""
    if not isinstance(sentence.id, str) or not isinstance(sentence.text, str):
        raise ValueError("id and text must be strings")
    for span in sentence.spans:
        where = f"span {span.start!r}-{span.end!r}"
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (span.start, span.end)):
            raise ValueError(f"{where}: start and end must be whole numbers")
        if not 0 <= span.start < span.end <= len(sentence.text):
            raise ValueError(f"{where}: not within the text's {len(sentence.text)} characters")
        if not isinstance(span.types, list) or not all(isinstance(t, str) and t.strip() for t in span.types):
            raise ValueError(f"{where}: types must be a list of type phrases, not {span.types!r}")
        if not isinstance(span.depths, list) or len(span.depths) != len(span.types) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in span.depths):
            raise ValueError(f"{where}: depths must be one whole number ≥ 0 per type")
        if span.source not in ("gold", "wordnet"):
            raise ValueError(f"{where}: source must be 'gold' or 'wordnet', not {span.source!r}")
    for pair in sentence.ignore:
        if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
            raise ValueError(f"ignore holds {list(pair)!r}, not a [start, end] pair")
    return sentence


def write_silver(path: str | Path, sentences: Iterable[SilverSentence]) -> str:
    """Write sentences as a silver JSONL file (what :func:`read_silver` reads), all or nothing (an
    audit: a Ctrl-C left the first lines, each valid, which training took); returns its sha256."""
    path = Path(path)

    def write(handle: BinaryIO) -> str:
        digest = hashlib.sha256()
        for s in sentences:
            line = (json.dumps(s.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            handle.write(line)
        return digest.hexdigest()

    return write_file(path.parent, path.name, write)

