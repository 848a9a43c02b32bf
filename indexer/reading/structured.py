"""Record formats — JSONL, CSV/TSV (Parquet: :mod:`.parquet`) — read as ``(line, Passage)`` items or per-record errors.

Each source yields either ``(location, Passage)`` or an :class:`InputError` for one bad record, so the
caller decides whether a bad record stops the read or is skipped; problems that spoil the whole input
(unreadable file, missing column) are raised. Files are read as bytes and decoded line by line so an
invalid UTF-8 sequence is reported on its own line rather than somewhere in a decoded chunk.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import json
import math
import re
import zlib
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, NamedTuple, Union

from ..errors import InputError
from ..file_lines import MAX_LINE_BYTES, capped_lines
from ..records import Passage, text_id
from ..stores.filter_rules import fields_problem
from ..text import emptiness, invalid_utf8, json_value_problem, reject_constant, unique_keys, value_problem
from .detect import split_suffix


class Located(NamedTuple):
    """A passage with where it came from, for messages about it (duplicate ids, say)."""

    passage: Passage
    path: str
    line: int | None
    unit: str = "line"  # "row" for Parquet


Item = Union[Located, InputError]

_CSV_FIELD_LIMIT = MAX_LINE_BYTES  # passages can be far longer than csv's 128 KiB default; 2**31 held a bomb (an audit)
_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}


DEFAULT_ID_FIELD = "id"


class RecordRules:
    """How a record (a dict of column → value) becomes a Passage: which keys hold id and text.

    ``id_field`` None means "``id`` when the input has it": a record's own ``id`` is its identity, so
    the same file indexed with and without naming it gets the same ids (never every passage twice).
    The header decides for CSV/TSV and Parquet, the first record for JSONL. ``""`` hashes the text.
    """

    def __init__(self, *, path: str, id_field: str | None, text_field: str, unit: str = "line") -> None:
        self.path = path
        self.requested = id_field
        self.id_field: str | None = id_field or None  # the key ids come from, once decided; None: hashes
        self.decided = id_field is not None
        self.text_field = text_field
        self.unit = unit  # "line" for text files, "row" for Parquet

    def decide(self, keys: Iterable[str]) -> None:
        """Settle the default id field from the first header, schema or record seen."""
        if not self.decided:
            self.id_field = DEFAULT_ID_FIELD if DEFAULT_ID_FIELD in keys else None
            self.decided = True

    def error(self, message: str, at: int | None) -> InputError:
        return InputError(message, path=self.path, line=at, unit=self.unit)

    def check_columns(self, columns: list[str], at: int | None) -> None:
        """Fail early when the header/schema lacks the id or text column: every record would fail."""
        self.decide(columns)
        for option, col in (("text_field", self.text_field), ("id_field", self.id_field)):
            if col is not None and col not in columns:
                shown = ", ".join(repr(c) for c in columns[:20]) or "none"
                flag = "--" + option.replace("_", "-")
                raise self.error(f"no column {col!r} (columns: {shown}); set {option} ({flag}) to one of them", at)

    def _id_problem(self, what: str) -> str:
        """A message about the id field; when it was the default, how to index without it."""
        if self.requested is None:
            return f"{what} (ids come from {DEFAULT_ID_FIELD!r} by default; id_field '' (--id-field '') hashes the text)"
        return what

    def passage(self, record: dict[str, Any], at: int) -> Item:
        """The Passage for one record, or the error that says what is wrong with it. The default id
        field is decided by the first record with a text (an audit: a refused first line, a note
        such as {"note": "exported 2024"}, made ids hashes and every record with an id an error)."""
        if self.text_field not in record:
            return self.error(f"missing text field {self.text_field!r}", at)
        text = record[self.text_field]
        if not isinstance(text, str):
            return self.error(f"text field {self.text_field!r} is {_type_name(text)}, not a string", at)
        empty = emptiness(text)
        if empty is not None:
            return self.error(f"text field {self.text_field!r} is {empty}", at)
        bad = value_problem(record)
        if bad is not None:  # a JSON escape such as \ud800: no store can hold it (and hashing it failed)
            return self.error(bad, at)
        self.decide(record)
        if self.id_field is None:
            if self.requested is None and DEFAULT_ID_FIELD in record:  # the first record had no id
                return self.error(
                    f"has an {DEFAULT_ID_FIELD!r} field but the first record has none, so ids would be hashes of "
                    f"the text and this id mere metadata (indexed again, such a file stores every passage twice); "
                    f"give every record an id, or id_field '' (--id-field '') to hash every text", at)  # fmt: skip
            pid = text_id(text)
        else:
            if self.id_field not in record:
                return self.error(self._id_problem(f"missing id field {self.id_field!r}"), at)
            raw = record[self.id_field]
            if isinstance(raw, bool) or not isinstance(raw, (str, int)):
                kind = f"id field {self.id_field!r} is {_type_name(raw)}, not a string or integer"
                return self.error(self._id_problem(kind), at)
            pid = str(raw)
            if not pid.strip():
                return self.error(self._id_problem(f"id field {self.id_field!r} is empty"), at)
        fields = {k: v for k, v in record.items() if k != self.text_field and k != self.id_field}
        reserved = fields_problem(fields)
        if reserved is not None:
            return self.error(reserved, at)
        return Located(Passage(id=pid, text=text, fields=fields), self.path, at, self.unit)


def _type_name(value: Any) -> str:
    return "null" if value is None else _JSON_TYPES.get(type(value), type(value).__name__)


def _open_binary(path: Path, name: str) -> IO[bytes]:
    try:
        if split_suffix(path)[1]:
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", path=name) from exc


class _OutOfRange(ValueError):
    pass


def _finite_float(text: str) -> float:
    """A JSON number as a float; one beyond a double's range (1e400) was inf, which no store takes,
    and one too small for it (1e-400) was 0 without a word (an audit)."""
    value = float(text)
    if not math.isfinite(value):
        raise _OutOfRange(f"the number {text[:40]} is beyond the range of a 64-bit float")
    if value == 0 and _NONZERO_DIGIT.search(re.split("[eE]", text, maxsplit=1)[0]):
        raise _OutOfRange(f"the number {text[:40]} is too small for a 64-bit float (it would be 0)")
    return value


_NONZERO_DIGIT = re.compile("[1-9]")


# a JSON array (pretty-printed or on one line) where JSON Lines were expected (an audit: "malformed
# JSON: Expecting value (column 2)" at line 1)
JSON_ARRAY = ("a JSON array, not JSON Lines (one JSON object per line): convert it, e.g. "
              "jq -c '.[]' FILE.json > FILE.jsonl")
JOINED_FILES = "a byte-order mark (U+FEFF) opens this line: files joined together (cat) keep each one's; remove it"
_CR_ONLY = "the line holds a CR line break: if the file's line endings are CR only, save it with LF or CRLF ones"
# errors of a damaged stream: gzip raises EOFError when truncated, zlib.error when corrupt
_READ_ERRORS = (OSError, EOFError, zlib.error)


def _read_error(exc: BaseException, path: str, after: int) -> InputError:
    """One line for a file that cannot be read on (a damaged .gz, say), with the last line read."""
    if isinstance(exc, EOFError):
        what = "the compressed data ends early (a truncated .gz file?)"
    elif isinstance(exc, zlib.error):
        what = f"damaged compressed data ({exc})"
    else:
        what = str(exc)
    return InputError(f"cannot read{f' past line {after}' if after else ''}: {what}", path=path)


def _json_array_of_records(line: str) -> bool:
    """Whether a first line opens a JSON array of records: ``[`` of a pretty-printed one (no whole
    value), or one of objects on one line; not another array (``["id", "text"]``: that line's own
    error, a review)."""
    if not line.lstrip().startswith("["):
        return False
    try:
        value = json.loads(line)
    except ValueError:
        return True
    return isinstance(value, list) and any(isinstance(v, dict) for v in value)


def jsonl_items(path: Path, rules: RecordRules) -> Iterator[Item]:
    """One JSON object per line; blank lines are ignored and a leading BOM is accepted."""
    lineno, seen_record = 0, False
    with _open_binary(path, rules.path) as fh:
        try:
            for lineno, raw in enumerate(capped_lines(fh, rules.path), start=1):
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield rules.error(invalid_utf8(exc, of_line=True), lineno)
                    continue
                if not line.strip():
                    continue
                if not seen_record and _json_array_of_records(line):  # spoils the whole input: raised
                    raise rules.error(JSON_ARRAY, lineno)
                seen_record = True
                try:
                    obj = json.loads(line.rstrip("\r\n"), parse_constant=reject_constant, parse_float=_finite_float,
                                     object_pairs_hook=unique_keys)
                except _OutOfRange as exc:
                    yield rules.error(str(exc), lineno)
                    continue
                except json.JSONDecodeError as exc:
                    cr_only = f"; {_CR_ONLY}" if "\r" in line.rstrip("\r\n") else ""
                    if line.startswith("\ufeff"):  # Python's "(decode using utf-8-sig)" told a user nothing (an audit)
                        yield rules.error(JOINED_FILES, lineno)
                    else:
                        yield rules.error(f"malformed JSON: {exc.msg} (column {exc.colno}){cr_only}", lineno)
                    continue
                except (ValueError, RecursionError) as exc:
                    yield rules.error(f"malformed JSON: {json_value_problem(exc)}", lineno)
                    continue
                if not isinstance(obj, dict):
                    yield rules.error(f"expected a JSON object, got {_type_name(obj)}", lineno)
                    continue
                yield rules.passage(obj, lineno)
        except _READ_ERRORS as exc:  # includes a corrupt gzip stream
            raise _read_error(exc, rules.path, lineno) from exc


def delimited_items(path: Path, rules: RecordRules, *, delimiter: str) -> Iterator[Item]:
    """CSV/TSV with a header row; the line of a record is the file line it starts on."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    bad_lines: dict[int, str] = {}
    kind = "TSV" if delimiter == chr(9) else "CSV"
    with _open_binary(path, rules.path) as fh:
        # strict: a quote that opens a field must close it, and nothing but the delimiter may follow
        # it; otherwise the lenient reader took the rest of the file into one field, or dropped
        # the quotes of `"Dune" is a novel`, without a word
        last: list[str] = [""]  # the line read last (a TSV record's raw cells)
        reader = csv.reader(_decoded(fh, rules.path, bad_lines, last), delimiter=delimiter, strict=True)
        try:
            rows = _rows(reader, rules, kind)
            header = _header(rows, rules, bad_lines, delimiter)
            if header is None:
                return  # an empty file: the caller reports "no passages"
            quoting = delimiter != "\t" or '"' in last[0]
            for start, end, row in rows:
                if isinstance(row, InputError) and not quoting and start == end and _CR_ONLY not in row.reason:
                    # a TSV whose header has no quote is from a writer that never quotes: its line's
                    # cells as they are (an audit: '"Dune" is a novel.' was refused, and no option read it)
                    row = last[0].rstrip("\r\n").split("\t")
                if isinstance(row, InputError):
                    yield row  # bad quoting on one line: that record's error
                    continue
                if not row:
                    continue  # a blank line
                bad = next((ln for ln in range(start, end + 1) if ln in bad_lines), None) if bad_lines else None
                if bad is not None:
                    yield InputError(bad_lines[bad], path=rules.path, line=bad)
                    continue
                if len(row) != len(header):
                    yield rules.error(f"expected {len(header)} columns, got {len(row)}", start)
                    continue
                if delimiter == "\t" and end > start and (problem := _swallowed(row, start, end)) is not None:
                    yield rules.error(problem, start)
                    continue
                if not quoting and start == end:
                    row = _literal_quotes(row, last[0])
                # an unnamed column (a pandas index, say) cannot become a field name
                yield rules.passage({k: v for k, v in zip(header, row) if k}, start)
        except _READ_ERRORS as exc:
            raise _read_error(exc, rules.path, reader.line_num) from exc


_RECORD_START = re.compile(r"[^\t\s][^\t]*\t")  # a value, then a tab: how a TSV record starts


def _swallowed(row: list[str], start: int, end: int) -> str | None:
    """Why a TSV record that spans lines ``start``–``end`` looks like others taken into a quoted
    field (a quote opened and not closed until one that ends a later field), or None. An audit: a
    text opening with a quote took the next record in, its text ending with that record's columns,
    without a word. The sign: a line inside a field that starts with a value and a tab, as a record
    does (a tab in prose is rare; a line indented with tabs is no sign: a review found pandas' quoted
    indented text refused), its first line too: a quote opened in a record's first column takes the
    rest of that line's columns in (an audit: '"I came.' and 'I saw."' made one passage). In CSV a
    comma in a text is common, so there is no such sign: the summary's count is the check."""
    for cell in row:
        if "\n" not in cell:
            continue
        for line in cell.split("\n"):
            if _RECORD_START.match(line):
                shown = line if len(line) <= 60 else line[:57] + "..."
                return (f"a quoted field runs from line {start} to {end} and holds a line that starts like a "
                        f"record, a value and a tab ({shown!r}): an unbalanced quote?")
    return None


def _literal_quotes(row: list[str], line: str) -> list[str]:
    """A TSV record with the quotes around a whole value kept where no writer that quotes would
    have put them (the value is not empty and holds no tab, line break or quote): ``"To be, or not
    to be"`` lost its quotes without a word (an audit). Only in a file whose header has no quote,
    so R's and QUOTE_ALL writers' files, which quote every value, read as before."""
    raw = line.rstrip("\r\n").split("\t")
    if len(raw) != len(row):
        return row
    return [value if value == f'"{cell}"' and cell and not _NEEDS_QUOTES.search(cell) else cell
            for cell, value in zip(row, raw)]


_NEEDS_QUOTES = re.compile('[\t\r\n"]')


def _decoded(fh: IO[bytes], name: str, bad_lines: dict[int, str], last: list[str]) -> Iterator[str]:
    """The lines of ``fh`` decoded, a leading BOM dropped, the latest kept in ``last[0]``; invalid
    UTF-8 is noted in ``bad_lines``."""
    for lineno, raw in enumerate(capped_lines(fh, name), start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        elif raw.startswith(codecs.BOM_UTF8):  # an audit: a second file's header was read as a record
            bad_lines[lineno] = JOINED_FILES
        try:
            last[0] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_lines[lineno] = invalid_utf8(exc, of_line=True)
            last[0] = raw.decode("utf-8", errors="replace")
        yield last[0]


def _rows(reader: Any, rules: RecordRules, kind: str) -> Iterator[tuple[int, int, list[str] | InputError]]:
    """(first line, last line, the row or its quoting error) for each record of ``reader``.

    After a csv.Error the reader goes on at the next line, so a quoting error confined to its line
    is that record's error; one in a record that ran on past its line (an opening quote never
    closed) took the lines after it, and raises.
    """
    prev = 0  # the last line of the last record read (a quoted field may span lines)
    while True:
        try:
            row: list[str] | InputError = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):  # not a quote left open (a review): one record too big
                raise rules.error(f"a field longer than {_CSV_FIELD_LIMIT // 2**20} MiB, the most a {kind} field may "
                                  f"hold (read on to line {reader.line_num})", prev + 1) from exc
            if reader.line_num > prev + 1:
                raise rules.error(f"malformed {kind}: a quoted field opened in this record is not closed "
                                  f"(read on to line {reader.line_num}: {exc})", prev + 1) from exc
            # csv's "new-line character seen in unquoted field - … universal-newline mode?" is a lone CR
            problem = _CR_ONLY if "new-line character" in str(exc) else exc
            row = rules.error(f"malformed {kind}: {problem}", reader.line_num)
        start, prev = prev + 1, reader.line_num
        yield start, prev, row


def _header(rows: Iterator[tuple[int, int, list[str] | InputError]], rules: RecordRules,
            bad_lines: dict[int, str], delimiter: str) -> list[str] | None:
    """The column names (the first non-blank row), checked; None for an empty file."""
    for _, end, row in rows:
        if isinstance(row, InputError):
            raise row  # a header that cannot be read spoils every record
        other = next((c for c in "\t,;|" if c != delimiter and c in row[0]), None) if len(row) == 1 else None
        if other is not None and rules.text_field not in row:  # --text-field could not help (an audit)
            fix = {"\t": "read it with --format tsv", ",": "read it with --format csv"}.get(other, "save it as CSV or TSV")
            raise rules.error(f"the header is one column, {row[0][:60]!r}: its names are separated by {other!r}, "
                              f"not {delimiter!r}; {fix}", end)
        if row:
            break
    else:
        return None
    bad = min(bad_lines, default=None)
    if bad is not None and bad <= end:  # the columns' names would hold U+FFFD
        raise InputError(f"{bad_lines[bad]} in the header", path=rules.path, line=bad)
    if any("\x00" in h for h in row):  # an audit: "no column 'text' (columns: 'i\x00d\x00', ...)"
        raise rules.error("the header holds NUL characters (U+0000): a UTF-16 file without a byte-order mark? "
                          "save it as UTF-8", end)
    header = [h.strip() for h in row]
    seen: set[str] = set()
    for col in header:
        if col and col in seen:
            raise rules.error(f"column {col!r} appears twice in the header", end)
        seen.add(col)
    rules.check_columns(header, end)
    return header
