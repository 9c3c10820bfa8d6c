"""Profile tables (CSV, TSV, Parquet): one row becomes one identify event.

A row is read as `{"type": "identify", "userId": <identity>, "traits": {<header>: <cell>}}`, so
routing, mapping (CleverTap's standard keys by header name, ISO-8601 conversion), validation,
results, the --failed file and --state checkpoints treat it as they treat any identify event.

- The identity column is `identity`, `userId` or `user_id` (any case), or the one named by
  --identity-column. Its cell, stripped of spaces, is the identity; it is not also an attribute.
- Every other non-empty cell (a cell of spaces is empty) is a person attribute under its header.
- CSV and TSV cells are text unless the header gives a type after a colon: `Logins:int`,
  `Score:float`, `Active:bool` (true/false, yes/no, 1/0, any case), `Signup:date` (a CleverTap
  date, `$D_<epoch seconds>`, from any date birthday takes), `Plan:str`. The type is the word after
  the last colon; a name holding a colon ends in `:str` (`utm:source:str`). CleverTap's boolean
  keys (MSG-email, MSG-push, MSG-sms, MSG-whatsapp) are `:bool` unless the header says otherwise.
- Parquet columns keep the file's types: numbers, booleans, lists and structs as they are,
  decimals as numbers, dates and timestamps as ISO-8601 text (naive ones taken as UTC), so the
  usual conversion applies. Nulls and NaN are empty cells. Column names carry no types.
- `line` is the physical line a CSV row starts on (the header is line 1; quoted cells may span
  lines); for Parquet it is the row number, from 1. A bad row is an item with `error` set.

CSV is read with the csv module over a UTF-8 text stream (a BOM is dropped, gzip is told by its
magic bytes), Parquet with pyarrow, which is optional (`pip install 'ctcli[parquet]'`) and
imported only when a Parquet file is read. Both stream: memory does not grow with the file.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
import os
import re
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO

from ctcli.errors import InputError, UsageError
from ctcli.events.timestamps import parse_created_at
from ctcli.models import InputItem

__all__ = [
    "FORMATS",
    "PARQUET_NEEDS_PYARROW",
    "TABLE_FORMATS",
    "check_table",
    "kind_name",
    "read_table",
    "table_kind",
]

FORMATS = ("auto", "ndjson", "json", "csv", "tsv", "parquet")
TABLE_FORMATS = ("csv", "tsv", "parquet")
PARQUET_NEEDS_PYARROW = "reading Parquet needs pyarrow: pip install 'ctcli[parquet]'"

# Told apart by name; `.gz` may follow the CSV and TSV ones (gzip itself is told by content).
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
_PARQUET_MAGIC = b"PAR1"
_DEFAULT_IDENTITIES = ("identity", "userid", "user_id")  # compared lowercased
_KIND_NAMES = {"csv": "CSV", "tsv": "TSV", "parquet": "Parquet"}
_TYPES = ("str", "int", "float", "bool", "date")
# A type is a word of letters right after the last colon: "Time: start" keeps its name whole.
_TYPED_HEADER = re.compile(r"(.*):([A-Za-z]+)", re.DOTALL)
_BOOLEAN_KEYS = frozenset({"MSG-email", "MSG-push", "MSG-sms", "MSG-whatsapp"})
_SHOWN_COLUMNS = 12  # a message lists this many of a file's columns, then says how many more
_PARQUET_BATCH_ROWS = 2048


# --- which reader --------------------------------------------------------------------------------


def table_kind(name: str, format: str = "auto") -> str | None:
    """How `name` is read: as a "csv", "tsv" or "parquet" table, or (None) as an event stream.

    `format` "auto" goes by the file name, and takes a regular file that starts like Parquet
    for Parquet whatever its name; stdin is an event stream unless `format` says otherwise.
    """
    if format in TABLE_FORMATS:
        return format
    if format != "auto" or name == "-":
        return None
    lowered = name.lower().removesuffix(".gz")
    kind = _EXTENSIONS.get(os.path.splitext(lowered)[1])
    if kind == "parquet" and lowered != name.lower():
        kind = None  # a gzipped Parquet file is not something pyarrow reads
    if kind is not None:
        return kind
    try:
        if os.path.isfile(name):
            with open(name, "rb") as handle:
                if handle.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC:
                    return "parquet"
    except OSError:
        pass  # check_readable says why
    return None


def kind_name(kind: str) -> str:
    return _KIND_NAMES[kind]


# --- headers -------------------------------------------------------------------------------------

Converter = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class _Column:
    header: str  # as written (stripped), for messages
    name: str  # the attribute key: the header without its type
    kind: str  # one of _TYPES, "" when the header gave none


@dataclass(frozen=True, slots=True)
class _Layout:
    """What a table's header says: its columns and which one holds the identity."""

    columns: tuple[_Column, ...]
    identity: int  # index into `columns`


def _parse_header(headers: Sequence[str], shown: str, *, typed: bool) -> tuple[_Column, ...]:
    columns: list[_Column] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(headers, start=1):
        header = raw.strip()
        name, kind = header, ""
        match = _TYPED_HEADER.fullmatch(header) if typed else None
        if match is not None:
            kind = match.group(2).lower()
            name = match.group(1).rstrip()
            if kind not in _TYPES:
                raise InputError(
                    f"{shown}, column {number} {header!r}: unknown type {match.group(2)!r} "
                    f"(types: {', '.join(_TYPES)}; a name with a colon in it ends in ':str')"
                )
            if not name:
                raise InputError(f"{shown}, column {number} {header!r}: a type but no name")
        if name:
            if name in seen:
                raise InputError(
                    f"{shown}: column {name!r} appears twice (columns {seen[name]} and {number})"
                )
            seen[name] = number
        columns.append(_Column(header, name, kind))
    return tuple(columns)


def _columns_text(columns: Sequence[_Column]) -> str:
    named = [column.header for column in columns if column.header]
    shown = ", ".join(named[:_SHOWN_COLUMNS])
    if len(named) > _SHOWN_COLUMNS:
        shown += f", ... ({len(named)} in all)"
    return shown or "none"


def _layout(columns: tuple[_Column, ...], identity_column: str | None, shown: str) -> _Layout:
    """Find the identity column; InputError (one line, naming the file's columns) if none."""
    if identity_column is not None:
        wanted = identity_column.strip()
        for index, column in enumerate(columns):
            if wanted in (column.name, column.header) and column.name:
                return _Layout(columns, index)
        raise InputError(
            f"{shown} has no column {identity_column!r} (--identity-column); "
            f"its columns: {_columns_text(columns)}"
        )
    found = [i for i, column in enumerate(columns) if column.name.lower() in _DEFAULT_IDENTITIES]
    if len(found) > 1:
        both = " and ".join(repr(columns[i].header) for i in found)
        raise InputError(f"{shown} has {both}: choose the identity with --identity-column")
    if not found:
        raise InputError(
            f"{shown} has no identity column: name one identity, userId or user_id, or give "
            f"--identity-column (its columns: {_columns_text(columns)})"
        )
    return _Layout(columns, found[0])


# --- typed cells ---------------------------------------------------------------------------------


class _BadCell(ValueError):
    """A cell that is not what its header says; str() is the reason, naming the column."""


_INT = re.compile(r"[+-]?[0-9]+")
# What JSON calls a number, plus a leading + and a bare fraction: no "nan", "inf" or "1_0".
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _shown_cell(cell: str) -> str:
    return repr(cell if len(cell) <= 40 else cell[:37] + "...")


def _to_int(text: str) -> int:
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)  # ValueError beyond sys.get_int_max_str_digits(): not a number then
    raise ValueError


def _to_float(text: str) -> float:
    text = text.strip()
    if _FLOAT.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return number
    raise ValueError


def _to_bool(text: str) -> bool:
    return _BOOLEANS[text.strip().lower()]  # KeyError: not one of them


def _to_date(text: str) -> str:
    text = text.strip()
    if text.startswith("$D_") and text[3:].isdigit():
        return text  # already a CleverTap date
    return f"$D_{parse_created_at(text)}"


_CONVERTERS: dict[str, tuple[Converter, str]] = {
    "int": (_to_int, "a whole number"),
    "float": (_to_float, "a number"),
    "bool": (_to_bool, "true or false (yes/no, 1/0)"),
    "date": (_to_date, "a date"),
}


def _converter(column: _Column) -> Converter | None:
    """How a column's cells become values; None: they stay text."""
    kind = column.kind
    if not kind and column.name in _BOOLEAN_KEYS:
        kind = "bool"  # CleverTap takes nothing else for these
    if not kind or kind == "str":
        return None
    convert, what = _CONVERTERS[kind]
    header = column.header

    def typed(cell: str) -> Any:
        try:
            return convert(cell)
        except (ValueError, KeyError):
            raise _BadCell(f"column {header!r}: {_shown_cell(cell)} is not {what}") from None

    return typed


# --- CSV and TSV ---------------------------------------------------------------------------------


def _cannot_read(name: str, exc: BaseException) -> InputError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    what = "stdin" if name == "-" else repr(name)
    return InputError(f"cannot read {what}: {reason or type(exc).__name__}")


def _shown(name: str) -> str:
    return "stdin" if name == "-" else repr(name)


def _open_text(name: str, stdin: BinaryIO | None) -> io.TextIOWrapper:
    from ctcli.events.sources import open_source

    stream = open_source(name, stdin=stdin)
    # newline="" hands the csv module the line ends as they are (it needs them inside quoted
    # cells); bytes that are not UTF-8 survive as surrogates, so one bad row is one bad row.
    return io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _reader(text: io.TextIOWrapper, kind: str) -> Any:
    # strict: a stray quote or a quoted cell left open is a bad row, not a silently merged one.
    return csv.reader(text, delimiter="\t" if kind == "tsv" else ",", strict=True)


def _header(rows: Any) -> list[str] | None:
    """The first row that is not blank, or None when the file has none."""
    for row in rows:
        if any(cell.strip() for cell in row):
            return list(row)
    return None


def _csv_problem(exc: csv.Error) -> str:
    reason = str(exc)
    if reason == "unexpected end of data":
        return "bad CSV: the file ends inside a quoted cell (a quote left open?)"
    if reason.startswith("field larger than field limit"):
        limit = csv.field_size_limit()
        return f"bad CSV: a cell longer than {limit} characters (a quote left open?)"
    return f"bad CSV: {reason}"


def _row_text(row: list[str], kind: str) -> str:
    """A bad row written back as the file had it, near enough, for the --failed file."""
    out = io.StringIO()
    csv.writer(out, delimiter="\t" if kind == "tsv" else ",", lineterminator="").writerow(row)
    return out.getvalue()


def _not_utf8(row: list[str]) -> bool:
    text = "".join(row)
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_csv(name: str, kind: str, identity_column: str | None) -> None:
    try:
        with _open_text(name, None) as text:
            headers = _header(_reader(text, kind))
    except csv.Error as exc:
        raise InputError(f"{_shown(name)}: the header: {_csv_problem(exc)}") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise _cannot_read(name, exc) from exc
    if headers is not None:
        _layout(_parse_header(headers, _shown(name), typed=True), identity_column, _shown(name))


def _read_csv(
    name: str, kind: str, identity_column: str | None, text: io.TextIOWrapper, after_line: int
) -> Iterator[InputItem]:
    try:
        with text:
            yield from _csv_items(name, kind, identity_column, text, after_line)
    except (OSError, EOFError, zlib.error) as exc:
        # A read error or a corrupt or truncated gzip stream, after the rows read so far.
        raise _cannot_read(name, exc) from exc


def _csv_items(
    name: str, kind: str, identity_column: str | None, text: io.TextIOWrapper, after_line: int
) -> Iterator[InputItem]:
    shown = _shown(name)
    reader = _reader(text, kind)
    try:
        headers = _header(reader)
    except csv.Error as exc:
        raise InputError(f"{shown}: the header: {_csv_problem(exc)}") from None
    if headers is None:
        return
    layout = _layout(_parse_header(headers, shown, typed=True), identity_column, shown)
    columns = layout.columns
    id_index = layout.identity
    id_header = columns[id_index].header
    width = len(columns)
    # Per column: (attribute key, converter); None for the identity and for unnamed columns.
    plan: list[tuple[str, Converter | None] | None] = [
        None if index == id_index or not column.name else (column.name, _converter(column))
        for index, column in enumerate(columns)
    ]
    unnamed = [index for index, column in enumerate(columns) if not column.name]
    item = InputItem
    last = reader.line_num  # the line the header ends on
    rows = iter(reader)
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            start, last = last + 1, reader.line_num
            if start > after_line:
                yield item(name, start, None, _csv_problem(exc))
            continue
        # csv counts the lines it has read: a row starts on the line after the last one ended.
        start, last = last + 1, reader.line_num
        if start <= after_line or not row:
            continue  # settled by an earlier run, or a blank line
        identity = row[id_index].strip() if id_index < len(row) else ""
        error = None
        if not identity:
            if not any(cell.strip() for cell in row):
                continue  # a line of separators or spaces: blank
            error = f"empty identity: column {id_header!r} has no value"
        elif len(row) > width and any(cell.strip() for cell in row[width:]):
            error = f"{len(row)} cells, but the header has {width} columns"
        elif _not_utf8(row):
            error = "not UTF-8: the row holds bytes that are not text"
        elif unnamed and any(i < len(row) and row[i].strip() for i in unnamed):
            index = next(i for i in unnamed if i < len(row) and row[i].strip())
            error = f"a value in column {index + 1}, which has no header"
        if error is not None:
            yield item(name, start, None, error, _row_text(row, kind))
            continue
        traits: dict[str, Any] = {}
        try:
            for entry, cell in zip(plan, row, strict=False):
                if entry is None or not cell or cell.isspace():
                    continue
                key, convert = entry
                traits[key] = cell if convert is None else convert(cell)
        except _BadCell as bad:
            yield item(name, start, None, str(bad), _row_text(row, kind))
            continue
        yield item(name, start, {"type": "identify", "userId": identity, "traits": traits})


# --- Parquet -------------------------------------------------------------------------------------


def _pyarrow() -> tuple[Any, Any, Any]:
    """(pyarrow, pyarrow.compute, pyarrow.parquet), or UsageError saying what to install.

    Through importlib, so that mypy does not need pyarrow (it has no type hints of its own).
    """
    if "pyarrow" not in sys.modules:
        # Arrow's default allocator (mimalloc) keeps much of what a streamed read frees: a
        # dry run of a 1M-row file peaked at 125 MB with it, 95 MB with the C allocator, which
        # stays flat. Read when pyarrow loads; a choice of the user's (the variable set, or
        # pyarrow imported before ctcli) is left alone.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    try:
        pa = importlib.import_module("pyarrow")
        compute = importlib.import_module("pyarrow.compute")
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise UsageError(PARQUET_NEEDS_PYARROW) from None
    return pa, compute, parquet


def _open_parquet(name: str) -> Any:
    pa, _, parquet = _pyarrow()
    if name == "-":
        raise UsageError("Parquet cannot be read from stdin: give the file's name")
    try:
        # Column chunks read piecewise, not buffered whole: a large row group would take its size.
        return parquet.ParquetFile(name, buffer_size=1 << 16, pre_buffer=False)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise InputError(f"cannot read {name!r}: not a Parquet file ({exc})") from None


def _parquet_layout(file: Any, identity_column: str | None, shown: str) -> _Layout:
    names = list(file.schema_arrow.names)
    return _layout(_parse_header(names, shown, typed=False), identity_column, shown)


class _BadValue:
    """A Parquet value that cannot be an attribute: the row it is in is invalid."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _decimal(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _plain(value: Any) -> Any:
    """A nested Parquet value (list, struct, map) as JSON has it."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")  # nested: kept as visible text
    if isinstance(value, list):
        if value and all(type(item) is tuple and len(item) == 2 for item in value):
            return {str(key): _plain(item) for key, item in value}  # a map's entries
        return [_plain(item) for item in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return _BadValue("binary value that is not UTF-8 text")
    isoformat = getattr(value, "isoformat", None)  # dates, datetimes, times
    if isoformat is not None:
        return isoformat()
    total_seconds = getattr(value, "total_seconds", None)  # durations
    if total_seconds is not None:
        return total_seconds()
    return str(value)


def _column_values(array: Any, pa: Any, compute: Any) -> list[Any]:
    """A batch's column as Python values in the shapes a row's traits take."""
    kind = array.type
    types = pa.types
    if types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if types.is_timestamp(kind):
        # ISO-8601 text, which the mapping converts as it converts any; zoned ones in UTC.
        if kind.tz is not None:
            utc = array.cast(pa.timestamp(kind.unit, tz="UTC"))
            return compute.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
        return compute.strftime(array, format="%Y-%m-%dT%H:%M:%S").to_pylist()
    if types.is_date(kind):
        return array.cast(pa.string()).to_pylist()
    values = array.to_pylist()
    if (
        types.is_string(kind)
        or types.is_large_string(kind)
        or types.is_integer(kind)
        or types.is_boolean(kind)
        or types.is_null(kind)
    ):
        return values
    if types.is_floating(kind):
        # pandas writes missing numbers as NaN: an empty cell, as a null is.
        return [None if value is not None and value != value else value for value in values]
    if types.is_nested(kind):
        return [None if value is None else _plain(value) for value in values]
    return [_scalar(value) for value in values]


def _identity_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    return None


def _read_parquet(
    name: str, file: Any, identity_column: str | None, after_row: int
) -> Iterator[InputItem]:
    pa, compute, _ = _pyarrow()
    with file:
        layout = _parquet_layout(file, identity_column, _shown(name))
        # Whole row groups settled by an earlier run are not read; within one, rows are skipped.
        metadata = file.metadata
        groups = list(range(metadata.num_row_groups))
        row = 0
        while groups and row + metadata.row_group(groups[0]).num_rows <= after_row:
            row += metadata.row_group(groups.pop(0)).num_rows
        if not groups:
            return
        try:
            for batch in file.iter_batches(
                batch_size=_PARQUET_BATCH_ROWS, row_groups=groups, use_threads=False
            ):
                values = [_column_values(column, pa, compute) for column in batch.columns]
                for position in range(batch.num_rows):
                    row += 1
                    if row > after_row:
                        yield _parquet_item(name, row, layout, values, position)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"cannot read {name!r}: {exc}") from None


def _parquet_item(
    name: str, row: int, layout: _Layout, values: list[list[Any]], position: int
) -> InputItem:
    columns = layout.columns
    raw_identity = values[layout.identity][position]
    identity = _identity_text(raw_identity)
    if identity is None:
        header = columns[layout.identity].header
        if raw_identity is None or isinstance(raw_identity, str):
            error = f"empty identity: column {header!r} has no value"
        else:
            what = type(raw_identity).__name__
            error = f"identity column {header!r} holds a {what}, not text or a whole number"
        return InputItem(name, row, None, error)
    traits: dict[str, Any] = {}
    for index, column in enumerate(columns):
        value = values[index][position]
        if value is None or index == layout.identity:
            continue
        if type(value) is str:
            if not value or value.isspace():
                continue
        elif type(value) is _BadValue:
            return InputItem(name, row, None, f"column {column.header!r}: {value.reason}")
        traits[column.name] = value
    return InputItem(name, row, {"type": "identify", "userId": identity, "traits": traits})


# --- the two entry points ------------------------------------------------------------------------


def check_table(name: str, kind: str, identity_column: str | None = None) -> None:
    """Raise InputError (or UsageError) now, before anything is sent, if `name` cannot be read
    as a table: no identity column, a header type that does not exist, no pyarrow for Parquet.

    Only regular files are looked into: reading a pipe's header here would take it from the run.
    """
    if kind == "parquet":
        file = _open_parquet(name)
        with file:
            _parquet_layout(file, identity_column, _shown(name))
        return
    if name != "-" and os.path.isfile(name):
        _check_csv(name, kind, identity_column)


def read_table(
    name: str,
    kind: str,
    *,
    identity_column: str | None = None,
    stdin: BinaryIO | None = None,
    after_line: int = 0,
) -> Iterator[InputItem]:
    """Lazily yield one item per row of the table `name` ("-": stdin; not for Parquet).

    Rows on lines (Parquet: rows) up to `after_line` are passed over: a checkpoint's resume.
    The file is opened at once, so a missing one raises InputError here, not at the first row.
    """
    if kind == "parquet":
        return _read_parquet(name, _open_parquet(name), identity_column, after_line)
    return _read_csv(name, kind, identity_column, _open_text(name, stdin), after_line)
