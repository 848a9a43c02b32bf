"""Parquet files read as ``(row, Passage)`` items or per-row errors (the record rules of :mod:`.structured`).

Each cell becomes the JSON value it stands for, by the column's Arrow type where Python's own value
would misstate it: float32 as the shortest decimal, nanosecond timestamps as ISO text, maps as
objects; values JSON cannot hold (±inf, decimals a float64 would round) are refused by row.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import InputError, NerindexError
from ..stores.filter_rules import python_scalar
from .structured import Item, RecordRules


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


def _unnamed_index_columns(schema: Any) -> set[str]:
    """The columns pandas wrote for an index without a name (``__index_level_0__`` and on, listed in
    its metadata): left out as a CSV's nameless column is (a docs audit: kept as metadata). A named
    index ("id", say) is a column like any other."""
    try:
        listed = (schema.pandas_metadata or {}).get("index_columns") or []
    except (ValueError, TypeError, AttributeError):  # metadata that is not pandas' JSON: no index known
        return set()
    return {c for c in listed if isinstance(c, str) and re.fullmatch(r"__index_level_\d+__", c)}


def parquet_items(path: Path, rules: RecordRules, *, batch_size: int = 1024) -> Iterator[Item]:
    """Rows of a Parquet file, numbered from 1, read a batch at a time."""
    pq = _import_parquet()
    import pyarrow as pa

    try:
        pf = pq.ParquetFile(path)
        unnamed = _unnamed_index_columns(pf.schema_arrow)
        columns = [c for c in pf.schema_arrow.names if c and c not in unnamed]
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
                fields, column = {}, None
                try:
                    for column, v in record.items():
                        fields[column] = v if column == rules.text_field else _jsonable(
                            _nested(v, nested[column], pa) if column in nested else v)
                except (TypeError, ValueError, UnicodeDecodeError) as exc:  # the column named (an audit: a wide table)
                    yield rules.error(f"column {column!r}: cannot convert a value: {exc}", row)
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
    """Row ``at`` of ``table`` as a dict, or the error converting it, naming the column and its type
    (an audit: pyarrow's words alone, with its advice to install pandas, named neither)."""
    row = table.slice(at, 1)
    try:
        return row.to_pylist()[0]
    except _CONVERSION_ERRORS as exc:
        for name, column in zip(row.schema.names, row.columns):
            try:
                column.to_pylist()
            except _CONVERSION_ERRORS as inner:
                reason = str(inner).split(" Install pandas")[0].rstrip(". ")
                return ValueError(f"column {name!r} ({column.type}): {reason}")
        return exc
