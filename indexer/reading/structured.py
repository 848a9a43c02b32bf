"""Record formats — JSONL, CSV/TSV, Parquet — read as ``(line, Passage)`` items or per-record errors.

Each source yields either ``(location, Passage)`` or an :class:`InputError` for one bad record, so the
caller decides whether a bad record stops the read or is skipped; problems that spoil the whole input
(unreadable file, missing column) are raised. Files are read as bytes and decoded line by line so an
invalid UTF-8 sequence is reported on its own line rather than somewhere in a decoded chunk.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import decimal
import gzip
import json
import math
import re
import zlib
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, NamedTuple, Union

import numpy as np

from ..errors import InputError, NerindexError
from ..records import Passage, text_id
from ..stores.filter_rules import fields_problem, python_scalar
from ..text import unique_keys, value_problem
from .detect import split_suffix


class Located(NamedTuple):
    """A passage with where it came from, for messages about it (duplicate ids, say)."""

    passage: Passage
    path: str
    line: int | None
    unit: str = "line"  # "row" for Parquet


Item = Union[Located, InputError]

_CSV_FIELD_LIMIT = 2**31 - 1  # passages can be far longer than csv's 128 KiB default
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
        """The Passage for one record, or the error that says what is wrong with it."""
        self.decide(record)
        if self.text_field not in record:
            return self.error(f"missing text field {self.text_field!r}", at)
        text = record[self.text_field]
        if not isinstance(text, str):
            return self.error(f"text field {self.text_field!r} is {_type_name(text)}, not a string", at)
        if not text.strip():
            return self.error(f"text field {self.text_field!r} is empty", at)
        bad = value_problem(record)
        if bad is not None:  # a JSON escape such as \ud800: no store can hold it (and hashing it failed)
            return self.error(bad, at)
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


def _decode_error(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.start + 1].hex()
    return f"invalid UTF-8 (byte 0x{bad} at byte {exc.start + 1} of the line)"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


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


def jsonl_items(path: Path, rules: RecordRules) -> Iterator[Item]:
    """One JSON object per line; blank lines are ignored and a leading BOM is accepted."""
    lineno = 0
    with _open_binary(path, rules.path) as fh:
        try:
            for lineno, raw in enumerate(fh, start=1):
                if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield rules.error(_decode_error(exc), lineno)
                    continue
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.rstrip("\r\n"), parse_constant=_reject_constant, parse_float=_finite_float,
                                     object_pairs_hook=unique_keys)
                except _OutOfRange as exc:
                    yield rules.error(str(exc), lineno)
                    continue
                except json.JSONDecodeError as exc:
                    cr_only = f"; {_CR_ONLY}" if "\r" in line.rstrip("\r\n") else ""
                    yield rules.error(f"malformed JSON: {exc.msg} (column {exc.colno}){cr_only}", lineno)
                    continue
                except (ValueError, RecursionError) as exc:
                    yield rules.error(f"malformed JSON: {exc}", lineno)
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
        reader = csv.reader(_decoded(fh, bad_lines, last), delimiter=delimiter, strict=True)
        try:
            rows = _rows(reader, rules, kind)
            header = _header(rows, rules, bad_lines)
            if header is None:
                return  # an empty file: the caller reports "no passages"
            quoting = delimiter != "\t" or '"' in last[0]
            for start, end, row in rows:
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
    indented text refused). In CSV a comma in a text is common, so there is no such sign: the
    summary's count is the check."""
    for cell in row:
        for line in cell.split("\n")[1:]:
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


def _decoded(fh: IO[bytes], bad_lines: dict[int, str], last: list[str]) -> Iterator[str]:
    """The lines of ``fh`` decoded, a leading BOM dropped, the latest kept in ``last[0]``; invalid
    UTF-8 is noted in ``bad_lines``."""
    for lineno, raw in enumerate(fh, start=1):
        if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[3:]
        try:
            last[0] = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad_lines[lineno] = _decode_error(exc)
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
            if reader.line_num > prev + 1:
                raise rules.error(f"malformed {kind}: a quoted field opened in this record is not closed "
                                  f"(read on to line {reader.line_num}: {exc})", prev + 1) from exc
            # csv's "new-line character seen in unquoted field - … universal-newline mode?" is a lone CR
            problem = _CR_ONLY if "new-line character" in str(exc) else exc
            row = rules.error(f"malformed {kind}: {problem}", reader.line_num)
        start, prev = prev + 1, reader.line_num
        yield start, prev, row


def _header(rows: Iterator[tuple[int, int, list[str] | InputError]], rules: RecordRules,
            bad_lines: dict[int, str]) -> list[str] | None:
    """The column names (the first non-blank row), checked; None for an empty file."""
    for _, end, row in rows:
        if isinstance(row, InputError):
            raise row  # a header that cannot be read spoils every record
        if row:
            break
    else:
        return None
    bad = min(bad_lines, default=None)
    if bad is not None and bad <= end:  # the columns' names would hold U+FFFD
        raise InputError(f"{bad_lines[bad]} in the header", path=rules.path, line=bad)
    header = [h.strip() for h in row]
    seen: set[str] = set()
    for col in header:
        if col and col in seen:
            raise rules.error(f"column {col!r} appears twice in the header", end)
        seen.add(col)
    rules.check_columns(header, end)
    return header


def _jsonable(value: Any) -> Any:
    """A Parquet cell as a JSON value: dates as ISO strings, decimals as numbers, NaN as null (how
    pandas writes a missing number). ±inf is refused, as in JSONL (an audit: it became null, that
    is "absent"), and so is a decimal a float64 would round (12345678901234567.89 was stored as
    1.2345678901234568e16)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isinf(value):
            raise ValueError(f"a number that is not finite ({value}), which JSON cannot hold")
        return None if math.isnan(value) else value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        number = int(value) if value == value.to_integral_value() else float(value)
        if not value.is_finite() or decimal.Decimal(repr(number)) != value:
            raise ValueError(f"the decimal {value} has more digits than a number keeps (cast the column to text)")
        return number
    if isinstance(value, bytes):
        return value.decode("utf-8")  # UnicodeDecodeError → the caller's per-row error
    if isinstance(value, dict):
        return {_key(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    raise TypeError(f"a value of type {type(value).__name__} is not JSON-serialisable")


def _key(key: Any) -> str:
    """A map key as a JSON object's key: its JSON value's text (``true``, not ``True``; bytes as
    their text, a date in ISO form: an audit found ``"b'k'"`` and ``'2020-01-01 00:00:00'``)."""
    value = _jsonable(key)
    return value if isinstance(value, str) else json.dumps(value)


def _nested(value: Any, kind: Any, pa: Any) -> Any:
    """A nested cell (lists, structs, maps) made exact by its Arrow type, which ``to_pylist``'s
    Python value misstates: a map as an object (it is a list of pairs there, so an empty map read
    as ``[]``: an audit) and float32 inside them as the shortest decimal (0.1, not
    0.10000000149011612), as top-level columns are read (:func:`_records`)."""
    if value is None:
        return None
    if pa.types.is_map(kind):
        return _map([(_nested(k, kind.key_type, pa), _nested(v, kind.item_type, pa)) for k, v in value])
    if pa.types.is_struct(kind):
        return {field.name: _nested(value.get(field.name), field.type, pa) for field in kind}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return [_nested(v, kind.value_type, pa) for v in value]
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        return python_scalar((np.float16 if pa.types.is_float16(kind) else np.float32)(value))
    return value


def _map(pairs: list[tuple[Any, Any]]) -> dict[str, Any]:
    """An Arrow map's (key, value) pairs as a JSON object; a key given twice is refused (the last
    value was kept without a word), as JSONL refuses one."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        name = _key(key)
        if name in out:
            raise ValueError(f"a map holds the key {name!r} twice")
        out[name] = _jsonable(value)
    return out


def _import_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise NerindexError(
            "reading Parquet needs pyarrow: pip install 'nerindex[parquet]'"
        ) from exc
    return pq


def parquet_items(path: Path, rules: RecordRules, *, batch_size: int = 1024) -> Iterator[Item]:
    """Rows of a Parquet file, numbered from 1, read a batch at a time."""
    pq = _import_parquet()
    import pyarrow as pa

    try:
        pf = pq.ParquetFile(path)
        columns = [c for c in pf.schema_arrow.names if c]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:  # to_pylist keeps the last of them (an audit); CSV and JSONL refuse theirs
            raise InputError(f"column {twice[0]!r} appears twice in the schema", path=rules.path)
        rules.check_columns(columns, None)
        row = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            nested = {field.name: field.type for field in batch.schema if pa.types.is_nested(field.type)}
            for record in _records(batch, pa):
                row += 1
                if isinstance(record, Exception):
                    yield rules.error(f"cannot convert a value: {record}", row)
                    continue
                try:
                    fields = {k: (v if k == rules.text_field else _jsonable(_nested(v, nested[k], pa) if k in nested else v))
                              for k, v in record.items()}  # fmt: skip
                except (TypeError, ValueError, UnicodeDecodeError) as exc:
                    yield rules.error(f"cannot convert a value: {exc}", row)
                    continue
                yield rules.passage(fields, row)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", path=rules.path) from exc


def _ns_texts(column: Any, kind: Any, pa: Any, pc: Any) -> list[str | None]:
    """A nanosecond timestamp column as ``datetime.isoformat`` text (what a microsecond one gives,
    so pandas' default unit stores what it did), with the three more digits where they are not 0."""
    nanos = pc.cast(column, pa.int64()).to_pylist()
    # floored, as the rest is: a cast truncates towards 0, and -1 ns read as 1970-01-01T00:00:00.000000999 (an audit)
    micro = pc.cast(pa.array([None if v is None else v // 1000 for v in nanos], type=pa.int64()),
                    pa.timestamp("us", kind.tz)).to_pylist()
    rests = [None if v is None else v % 1000 for v in nanos]
    out: list[str | None] = []
    for stamp, rest in zip(micro, rests):
        if stamp is None or not rest:
            out.append(None if stamp is None else stamp.isoformat())
            continue
        text = stamp.isoformat(timespec="microseconds")
        cut = text.index(".") + 7
        out.append(f"{text[:cut]}{rest:03d}{text[cut:]}")
    return out


def _records(batch: Any, pa: Any) -> list[dict[str, Any] | Exception]:
    """A batch's rows as dicts, with the columns Python's own values would misstate made exact:
    float32 (and float16) as the shortest decimal that reads back as it (0.1, not
    0.10000000149011612, which no ``--where f=0.1`` matched: an audit) and nanosecond timestamps
    as other timestamps' ISO text, nine digits where the nanoseconds are not zero (``to_pylist``
    raised for those without pandas: an audit)."""
    import pyarrow.compute as pc

    columns = {}
    for name, column in zip(batch.schema.names, batch.columns):
        kind = column.type
        if pa.types.is_float32(kind) or pa.types.is_float16(kind):
            width = np.float16 if pa.types.is_float16(kind) else np.float32
            column = pa.array([None if v is None else python_scalar(width(v)) for v in column.to_pylist()],
                              type=pa.float64())
        elif pa.types.is_timestamp(kind) and kind.unit == "ns":
            column = pa.array(_ns_texts(column, kind, pa, pc), type=pa.string())
        columns[name] = column
    table = pa.table(columns)
    try:
        return table.to_pylist()
    except _CONVERSION_ERRORS:  # a time64[ns] with nanoseconds, a date past year 9999: find the rows
        return [_row(table, at) for at in range(table.num_rows)]


# what pyarrow raises for a value Python's datetime types cannot hold (a traceback that named no
# file or row, and that --on-error skip did not skip: an audit)
_CONVERSION_ERRORS = (ValueError, OverflowError, ArithmeticError)


def _row(table: Any, at: int) -> dict[str, Any] | Exception:
    """Row ``at`` of ``table`` as a dict, or the error converting it."""
    try:
        return table.slice(at, 1).to_pylist()[0]
    except _CONVERSION_ERRORS as exc:
        return exc
