"""Reading user input into passages: JSONL, CSV, TSV, Parquet, folders of .txt files, CoNLL/BIO.

``read_passages`` is lazy (one record in memory at a time, plus the ids seen so far for the
duplicate check) and validates as it goes: a bad record raises :class:`InputError` naming the file
and 1-based line (Parquet: row), or, with ``on_error="skip"``, is counted in :class:`ReadStats` and
left out. An input with no passages at all is an error either way: indexing nothing is never meant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

from ..errors import InputError
from ..records import Passage, text_id
from ..text import first_named
from .detect import FORMATS, Format, left_out, resolve_format
from .parquet import parquet_items
from .plain import conll_items, txt_items
from .structured import Item, Located, RecordRules, delimited_items, jsonl_items

__all__ = ["FORMATS", "Format", "OnError", "ReadStats", "read_passages", "resolve_format"]

log = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]
MAX_ERROR_MESSAGES = 10


@dataclass
class ReadStats:
    """What a read did: passages yielded, records skipped, and the first few skip messages."""

    read: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    format: str | None = None  # the format actually used (after "auto" was resolved)
    id_field: str | None = None  # the key or column ids came from; None: text hashes, file paths
    left_out: list[str] = field(default_factory=list)  # what a folder's format does not read (detect.left_out)

    def left_out_text(self) -> str:
        """The files and folders left out, the first three named: ``a.parquet, b.parquet, ...``."""
        return first_named(self.left_out)

    def skip(self, error: InputError) -> None:
        self.skipped += 1
        if len(self.errors) < MAX_ERROR_MESSAGES:
            self.errors.append(str(error))
        log.debug("skipped: %s", error)


def read_passages(
    path: str | Path,
    *,
    format: Format = "auto",
    id_field: str | None = None,
    text_field: str = "text",
    on_error: OnError = "raise",
    stats: ReadStats | None = None,
) -> Iterator[Passage]:
    """Passages from a file or folder, lazily; see the module docstring for errors and skipping.

    ``id_field``/``text_field`` name the keys (JSONL) or columns (CSV, TSV, Parquet) holding the id
    and the text; every other key becomes a field. By default (``id_field=None``) a key or column
    named ``id`` is the id when the input has one (the header decides, or JSONL's first record), and
    ``stats.id_field`` says which was used; ``id_field=""`` makes the id a hash of the text.
    Text files get their relative path as id; CoNLL sentences an id from file, line and text.
    The path and format are checked at call time; records as they are iterated.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    if not text_field:
        raise ValueError("text_field must be a non-empty column name")
    p = Path(path)
    resolved = resolve_format(p, format)
    name = str(path)
    if resolved in ("txt", "conll") and (id_field is not None or text_field != "text"):
        raise InputError(
            f"id_field and text_field apply to jsonl, csv, tsv and parquet input, not {resolved}", path=name
        )
    if stats is None:
        stats = ReadStats()
    stats.format = resolved
    if p.is_dir():
        stats.left_out = left_out(p, resolved)
    rules = RecordRules(path=name, id_field=id_field, text_field=text_field, unit="row" if resolved == "parquet" else "line")
    return _checked(_items(p, resolved, rules), name, on_error, stats, rules)


def _items(p: Path, fmt: str, rules: RecordRules) -> Iterator[Item]:
    if fmt == "jsonl":
        return jsonl_items(p, rules)
    if fmt in ("csv", "tsv"):
        return delimited_items(p, rules, delimiter="," if fmt == "csv" else "\t")
    if fmt == "parquet":
        return parquet_items(p, rules)
    if fmt == "txt":
        return txt_items(p)
    return conll_items(p)


def _where(loc: Located, other: Located) -> str:
    """How to name ``other`` in a message about ``loc``: just the line when in the same file."""
    if other.line is None:
        return other.path
    if other.path == loc.path:
        return f"{other.unit} {other.line}"
    return f"{other.path}:{other.line}" if other.unit == "line" else f"{other.path}, {other.unit} {other.line}"


def _checked(
    items: Iterator[Item], name: str, on_error: OnError, stats: ReadStats, rules: RecordRules
) -> Iterator[Passage]:
    seen: dict[str, Located] = {}
    for item in items:
        stats.id_field = rules.id_field  # settled by the header or the first record
        if isinstance(item, Located):
            first = seen.get(item.passage.id)
            if first is None:
                seen[item.passage.id] = item._replace(passage=None)  # type: ignore[arg-type]
                stats.read += 1
                yield item.passage
                continue
            item = _duplicate(item, first)
        if on_error == "raise":
            raise item
        stats.skip(item)
    if stats.read == 0:
        if stats.skipped:
            raise InputError(
                f"no valid passages: all {stats.skipped} records were skipped (first: {stats.errors[0]})",
                path=name,
            )
        if stats.left_out:  # a Spark or pyarrow dataset folder was "empty" (an audit)
            raise InputError(f"no passages found: a folder is read as {stats.format} files, and it holds only "
                             f"{len(stats.left_out)} other file(s) or linked folder(s) ({stats.left_out_text()}): "
                             "index each file on its own", path=name)
        what = {"csv": "no records after the header, if any", "tsv": "no records after the header, if any",
                "parquet": "the file has no rows"}.get(stats.format or "", "the input is empty")
        raise InputError(f"no passages found ({what})", path=name)  # a header-only CSV was "empty" (an audit)


def _duplicate(item: Located, first: Located) -> InputError:
    pid = item.passage.id
    where = _where(item, first)
    if pid == text_id(item.passage.text):
        message = f"same text as {where} (the id is a hash of the text; set an id field to keep both)"
    else:
        message = f"duplicate id {pid!r} (first at {where})"
    return InputError(message, path=item.path, line=item.line, unit=item.unit)
