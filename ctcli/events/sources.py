"""Read files, stdin and gzip into a lazy stream of InputItems (NDJSON, JSON, batch envelopes).

Formats are told apart by content, never by file name:

- gzip: the stream starts with the bytes 1f 8b; everything below applies to what it decompresses to.
- NDJSON: one JSON value per line, streamed in constant memory. Blank lines are skipped but counted,
  so `line` is always the file's own line number, and `end_offset` is the byte offset just past the
  line (what a checkpoint stores and `start_offset` resumes from).
- A JSON array of objects, or a single JSON object (pretty-printed over many lines); `line` is
  the 1-based position of the item.
- A Segment batch envelope `{"batch": [...]}`: its items, numbered by position. One per line in an
  NDJSON file is allowed too; positions then run on across the envelopes, and only an envelope's
  last item carries the line's `end_offset` (so a checkpoint never lands inside an envelope).
- An array or envelope longer than 1 MiB (or on a first line longer than that) is read item by
  item, in memory that does not grow with it (`_StreamedDocument`); a shorter document is parsed
  whole. Either way its items are the same; only a broken document differs: parsed whole, it is
  one invalid item; streamed, the items before the break are read and the break is one invalid
  item at the position where it happened.
- A line of a `--failed` file: the original event is taken back out of it.

Bad content never raises: it becomes an InputItem with `error` set. Only a file that cannot be
opened or read raises InputError.

JSON is parsed with orjson. The standard library's parser takes over when orjson refuses something
(so nothing valid is rejected) and for lines holding a run of 19 or more digits, because orjson
silently turns integers beyond 64 bits into floats, which would corrupt numeric ids.
"""

from __future__ import annotations

import base64
import errno
import gzip
import io
import itertools
import json
import math
import os
import re
import stat
import sys
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from typing import Any, BinaryIO

import orjson

from ctcli.errors import InputError
from ctcli.events.supersession import Markers, is_marker, settle
from ctcli.models import InputItem

__all__ = ["open_source", "read_source", "read_sources"]

_BUFFER_SIZE = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
# Any integer beyond 64 bits has at least 19 digits; translate() + `in` finds such a run in C,
# several times faster than a regular expression. The same pass maps { and [ to {, so that
# counting them tells, at no extra cost, whether a line could nest deeper than we take.
_DIGIT_MAP = bytes(48 if 48 <= i <= 57 else 123 if i in (91, 123) else 32 for i in range(256))
_LONG_DIGIT_RUN = b"0" * 19
# Deeper events are refused: nothing CleverTap stores nests this deep (a nested object becomes a
# string of at most 512 bytes), and recursive code further on (mapping, encoders) has limits.
MAX_DEPTH = 100
_FAILED_STATUSES = ("failed", "invalid")
FAILED_LINE_MARK = "failed"  # the value of a --failed line's "ctcli" key
# Lines written before failed lines carried their mark have exactly these keys.
_LEGACY_FAILED_KEYS = frozenset(
    {"event", "source", "line", "action", "identity", "status", "code", "error"}
)
_EXACT = object()  # marks a line that needs the standard library's parser
SKIPPED = InputItem("", 0, None)  # an item passed over unparsed: see read_source's `skip`
_MAX_DIGITS = sys.get_int_max_str_digits()
# A JSON document (array, envelope) or a first line longer than this is read item by item (see
# _StreamedDocument); a shorter one is parsed whole, and a broken one is one invalid item.
_STREAMED_FROM = _BUFFER_SIZE
_CHUNK = 1 << 20  # what a streamed document reads at a time
_RAW_LIMIT = 1024  # of the text at a break in a streamed document, kept as its raw text
_TRIES = 16  # spans orjson is asked about for one object item before it is scanned
_SKIPS = 64  # "}"s passed over as unbalanced before orjson is asked about one all the same
# _DIGIT_MAP that also maps "}" and "]" to "}": where brackets (in strings too) balance.
_SHAPE_MAP = bytes(125 if i in (93, 125) else code for i, code in enumerate(_DIGIT_MAP))
# A "}" that may end an object item: followed by the "," before the next object, or by the "]".
_OBJECT_END = re.compile(rb"\}[ \t\r\n]*+(?:,[ \t\r\n]*+(?=\{)|\])")
_SPACE = re.compile(rb"[ \t\r\n]*+")
_STRUCTURE = re.compile(rb'["\[\]{}]')
_STRING_REST = re.compile(rb'[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)  # after the opening quote
_SCALAR = re.compile(rb'[^ \t\r\n,\[\]{}"]*+')  # a number or literal, or garbage to parse
_STARTS_A_CHARACTER = bytes(i for i in range(256) if not 0x80 <= i < 0xC0)  # in UTF-8


class _BadJSON(Exception):
    """Why some bytes are not a JSON value, with where (1-based) when known."""

    def __init__(
        self,
        kind: str,
        reason: str,
        line: int | None = None,
        column: int | None = None,
        *,
        pos: int | None = None,
        at_end: bool = False,
    ) -> None:
        super().__init__(reason)
        self.kind = kind  # "JSON" or "UTF-8"
        self.reason = reason
        self.line = line
        self.column = column
        self.pos = pos  # character offset into the decoded text (JSON errors only)
        self.at_end = at_end  # the text stopped where more was expected: a prefix of a document

    def for_line(self) -> str:
        where = f" at column {self.column}" if self.column is not None else ""
        return f"invalid {self.kind}: {self.reason}{where}"

    def for_document(self) -> str:
        if self.line is None or self.column is None:
            return self.for_line()
        return f"invalid {self.kind}: {self.reason} at line {self.line} column {self.column}"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number out of range: {text}")
    return number


# NaN, Infinity and overflowing floats are not JSON; orjson refuses them and so must the fallback.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _parse_exact(data: bytes) -> Any:
    """Parse with the standard library; raise _BadJSON saying why not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
        line = data.count(b"\n", 0, start) + 1
        column = start - (data.rfind(b"\n", 0, start) + 1) + 1
        raise _BadJSON("UTF-8", f"byte 0x{data[start]:02x}", line, column) from None
    # Trailing newlines would push an "unexpected end" error onto a line of its own.
    text = text.rstrip(" \t\r\n")
    try:
        value = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        reason = exc.msg[:1].lower() + exc.msg[1:]
        # "Unterminated string starting at" already ends with "at".
        reason = reason.removesuffix(" at")
        raise _BadJSON(
            "JSON", reason, exc.lineno, exc.colno, pos=exc.pos, at_end=exc.pos >= len(text)
        ) from None
    except RecursionError:
        raise _BadJSON("JSON", "nested too deeply") from None
    except ValueError as exc:
        if "int_max_str_digits" in str(exc):
            raise _BadJSON("JSON", f"a number with more than {_MAX_DIGITS} digits") from None
        raise _BadJSON("JSON", str(exc)) from None
    # orjson refuses lone surrogates ("\ud800"); letting them through would only move the crash
    # to whoever serialises the event next.
    if "\\u" in text:
        try:
            lone = _has_lone_surrogate(value)
        except RecursionError:
            raise _BadJSON("JSON", "nested too deeply") from None
        if lone:
            raise _BadJSON("JSON", "lone UTF-16 surrogate escape in a string")
    return value


def _parse(data: bytes) -> Any:
    """Parse one JSON value from bytes, fast when possible, exactly always."""
    if _LONG_DIGIT_RUN not in data.translate(_DIGIT_MAP):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return _parse_exact(data)


def _line_text(data: bytes) -> str:
    # Lossless: bytes that are not UTF-8 survive as surrogates, for the failed file to keep.
    return data.decode("utf-8", "surrogateescape").rstrip("\r\n")


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than `limit` levels in `value` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        children = current.values() if type(current) is dict else current
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def _deep_text(value: Any) -> str:
    try:
        return _dumps_raw(value)
    except RecursionError:
        return "(not kept: nested too deeply to write out)"


def _too_deep_item(source: str, line: int, raw: str, end_offset: int | None) -> InputItem:
    error = f"nested more than {MAX_DEPTH} levels deep"
    return InputItem(source, line, None, error, raw, end_offset)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "object"


def _is_failed_line(value: dict[str, Any]) -> bool:
    if not ("event" in value and "action" in value and value.get("status") in _FAILED_STATUSES):
        return False
    if value.get("ctcli") == FAILED_LINE_MARK:
        return True
    # An older failed file: recognised by its exact keys, so that an event that happens to
    # have status, source, line and action keys of its own is not taken for one.
    return "source" in value and "line" in value and value.keys() <= _LEGACY_FAILED_KEYS


def _is_envelope(value: dict[str, Any]) -> bool:
    return type(value.get("batch")) is list and "type" not in value and "event" not in value


def _dumps_raw(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _not_object(
    source: str, line: int, value: Any, raw: str | None, end_offset: int | None, only: str | None
) -> InputItem:
    error = f"not a JSON object (got {_json_type(value)})"
    return InputItem(source, line, None, error, raw, end_offset, only)


def _unwrap_failed(
    source: str, line: int, wrapper: dict[str, Any], end_offset: int | None
) -> InputItem:
    item = _unwrapped(source, line, wrapper, end_offset)
    identity = wrapper.get("identity")
    if isinstance(identity, str):
        item.redrive_identity = identity
    return item


def _unwrapped(
    source: str, line: int, wrapper: dict[str, Any], end_offset: int | None
) -> InputItem:
    action = wrapper["action"]
    only = action if isinstance(action, str) else None
    event = wrapper["event"]
    encoded = wrapper.get("raw_base64")
    if event is None and isinstance(encoded, str):
        # Bytes that were not UTF-8, kept exactly: they are refused again, exactly as before.
        try:
            data = base64.b64decode(encoded, validate=True)
        except ValueError:
            return InputItem(source, line, None, "raw_base64 is not base64", encoded, end_offset)
        try:
            value = _parse(data)
        except _BadJSON as bad:
            return InputItem(source, line, None, bad.for_line(), _line_text(data), end_offset, only)
        if type(value) is dict:
            return InputItem(source, line, value, None, None, end_offset, only)
        return _not_object(source, line, value, _line_text(data), end_offset, only)
    if type(event) is dict:
        return InputItem(source, line, event, None, None, end_offset, only)
    if not isinstance(event, str):
        return _not_object(source, line, event, _dumps_raw(event), end_offset, only)
    # The raw text of a line that was bad last time: it may have been fixed by hand since.
    try:
        value = _parse(event.encode("utf-8", "surrogatepass"))
    except _BadJSON as bad:
        return InputItem(source, line, None, bad.for_line(), event, end_offset, only)
    if type(value) is dict:
        return InputItem(source, line, value, None, None, end_offset, only)
    return _not_object(source, line, value, event, end_offset, only)


def _to_item(
    source: str, line: int, value: Any, end_offset: int | None, raw: str | None
) -> InputItem:
    """An item for one parsed value that is not a batch envelope."""
    if type(value) is dict:
        if "status" in value:
            if _is_failed_line(value):
                return _unwrap_failed(source, line, value, end_offset)
            if is_marker(value):
                return InputItem(
                    source, line, None, None, None, end_offset, superseded=value, marker=True
                )
        return InputItem(source, line, value, None, None, end_offset)
    return _not_object(source, line, value, raw, end_offset, None)


def _batch_items(
    source: str,
    batch: list[Any],
    position: int,
    end_offset: int | None,
    file_line: int | None = None,
) -> Iterator[InputItem]:
    last = position + len(batch)
    for number, value in enumerate(batch, position + 1):
        item = _batch_item(source, number, value, end_offset if number == last else None)
        item.file_line = file_line  # items are numbered by position; a resume needs the line
        yield item


def _batch_item(source: str, number: int, value: Any, end_offset: int | None) -> InputItem:
    """The item for one value of an array or envelope, at position `number`."""
    if (type(value) is dict or type(value) is list) and too_deep(value):
        return _too_deep_item(source, number, _deep_text(value), end_offset)
    raw = None if type(value) is dict else _dumps_raw(value)
    return _to_item(source, number, value, end_offset, raw)


def _ndjson(
    source: str,
    lines: Iterable[bytes],
    lineno: int,
    offset: int,
    skip: Callable[[], bool] | None = None,
    position: int = 0,
) -> Iterator[InputItem]:
    """Items of NDJSON lines; `lineno` and `offset` are those just before the first line.

    `position`: the items of batch envelopes before these lines (envelope items run on from it).

    `skip`, asked before each line: when it says so, a line that is surely one item is yielded
    as SKIPPED without being parsed (a parse worker passing over another worker's share).
    """
    # The hot path: one translate, one orjson call, two dict lookups and one InputItem per line.
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    digit_map = _DIGIT_MAP
    long_run = _LONG_DIGIT_RUN
    item = InputItem
    for data in lines:
        lineno += 1
        offset += len(data)
        if skip is not None and skip() and _surely_one_item(data):
            yield SKIPPED
            continue
        shape = data.translate(digit_map)
        if long_run in shape:
            value = _EXACT
        else:
            try:
                value = loads(data)
            except decode_error:
                value = _EXACT
        if value is _EXACT:
            if not data.strip():
                continue
            cr_lines = _cr_lines(data)
            if cr_lines is not None:
                # Lines ended by a lone CR (old Mac files), numbered as editors number them.
                yield from _ndjson(source, cr_lines, lineno - 1, offset - len(data))
                lineno += len(cr_lines) - 1
                continue
            try:
                value = _parse_exact(data.removeprefix(_BOM))  # a BOM where files were joined
            except _BadJSON as bad:
                yield item(source, lineno, None, bad.for_line(), _line_text(data), offset)
                continue
        if (
            shape.count(b"{") > MAX_DEPTH
            and too_deep(value)
            and not (type(value) is dict and _is_envelope(value))  # its items are checked
        ):
            yield _too_deep_item(source, lineno, _line_text(data), offset)
            continue
        if type(value) is dict:
            if "status" not in value and "batch" not in value:
                yield item(source, lineno, value, None, None, offset)
            elif _is_envelope(value):
                batch = value["batch"]
                yield from _batch_items(source, batch, position, offset, lineno)
                position += len(batch)
            else:
                yield _to_item(source, lineno, value, offset, None)
        else:
            yield _to_item(source, lineno, value, offset, _line_text(data))


def _surely_one_item(data: bytes) -> bool:
    """Whether an NDJSON line yields exactly one item, whatever it holds, told without parsing.

    Not so for blank lines (none), lines split at lone CRs, envelopes (one per event) and our
    own marker lines (dropped); those are parsed as usual.
    """
    return (
        b"\r" not in data.rstrip(b"\r\n")
        and b'"batch"' not in data
        and b'"ctcli"' not in data
        and bool(data.strip())
    )


def _cr_lines(data: bytes) -> list[bytes] | None:
    """The lines of `data` split at lone CRs, if it has some and every piece is JSON."""
    body = data.rstrip(b"\r\n")
    if b"\r" not in body:
        return None
    pieces = data.split(b"\r")
    lines = [piece + b"\r" for piece in pieces[:-1]] + [pieces[-1]]
    for line in lines:
        if line.strip():
            try:
                _parse(line)
            except _BadJSON:
                return None
    return [line for line in lines if line]


def _continues_as_ndjson(document: bytes, bad: _BadJSON) -> bool:
    """Whether a document that failed to parse is really NDJSON whose first line is cut short.

    True when the parser choked at the very start of a later line and that line is a complete
    JSON value on its own: `{"a": 1` followed by `{"b": 2}`, rather than a truncated pretty object.
    """
    if bad.kind != "JSON" or bad.pos is None or bad.line is None or bad.line < 2:
        return False
    text = document.decode("utf-8")
    start = text.rfind("\n", 0, bad.pos) + 1
    if text[start : bad.pos].strip():
        return False
    end = text.find("\n", bad.pos)
    line = text[start:] if end < 0 else text[start:end]
    try:
        _parse(line.encode("utf-8"))
    except _BadJSON:
        return False
    return True


def _document(source: str, document: bytes, lineno: int, offset: int) -> Iterator[InputItem]:
    """Items of a whole JSON document: an array, an envelope or one object."""
    try:
        value = _parse(document)
    except _BadJSON as bad:
        if _continues_as_ndjson(document, bad):
            yield from _ndjson(source, io.BytesIO(document), lineno, offset)
        else:
            raw = document.decode("utf-8", "surrogateescape")
            yield InputItem(source, 1, None, bad.for_document(), raw)
        return
    if type(value) is list:
        yield from _batch_items(source, value, 0, None)
    elif type(value) is dict and _is_envelope(value):
        yield from _batch_items(source, value["batch"], 0, None)
    else:
        yield _to_item(source, 1, value, None, None)


def _detect(
    source: str,
    stream: BinaryIO,
    lineno: int,
    skip: Callable[[], bool] | None = None,
    *,
    whole: bool = False,
) -> Iterator[InputItem]:
    """Items of a stream read from its start, whatever its format.

    A document, or a first line, longer than _STREAMED_FROM is streamed (`_StreamedDocument`);
    `whole` reads it as a short one is read, whatever its size (what a streamed look hands back
    when the document turned out to be neither an array nor an envelope).
    """
    limit = _STREAMED_FROM
    pending: list[bytes] = []  # lines read while deciding, handed on to whichever reader decides
    offset = 0
    first = b""
    cut = False  # a piece of pending is part of a line longer than `limit`
    while True:
        data = stream.readline() if whole else stream.readline(limit)
        if not data:
            break
        cut = cut or (len(data) == limit and not data.endswith(b"\n"))
        if not pending and data.startswith(_BOM):
            data = data[len(_BOM) :]
            offset = len(_BOM)
        pending.append(data)
        if data.strip():
            first = data
            break
    if not first:
        return
    opener = first.lstrip()[:1]
    if cut:
        if opener in (b"{", b"["):
            yield from _StreamedDocument(source, stream, b"".join(pending), lineno, offset, skip)
        else:  # one very long line: NDJSON, with its pieces put back together
            yield from _ndjson(source, _unread(b"".join(pending), stream), lineno, offset, skip)
        return
    lines = iter(stream)
    if opener in (b"{", b"["):
        try:
            value = _parse(first)
        except _BadJSON as bad:
            if bad.at_end:
                # A prefix of a value: the first line of a pretty-printed document.
                ahead = stream.read() if whole else stream.read(limit)
                pending.append(ahead)
                if whole or len(ahead) < limit:
                    yield from _document(source, b"".join(pending), lineno, offset)
                else:
                    head = b"".join(pending)
                    yield from _StreamedDocument(source, stream, head, lineno, offset, skip)
                return
        else:
            if opener == b"[":
                # One line holding an array is the whole document unless more lines follow.
                for data in lines:
                    pending.append(data)
                    if data.strip():
                        break
                else:
                    yield from _batch_items(source, value, 0, None)
                    return
    yield from _ndjson(source, itertools.chain(pending, lines), lineno, offset, skip)


def _unread(head: bytes, stream: BinaryIO) -> BinaryIO:
    """`stream` with `head`, bytes already read from it, put back in front."""
    return io.BufferedReader(_Rewound(head, stream, owns=False), _BUFFER_SIZE)


def _chars(data: bytes) -> int:
    """How many characters UTF-8 `data` holds (bytes that start one), for error columns."""
    if data.isascii():
        return len(data)
    return len(data) - len(data.translate(None, _STARTS_A_CHARACTER))


class _StreamedDocument:
    """The items of a large JSON document: an array, or a batch envelope, item by item.

    Memory holds one item and a chunk, whatever the document's size. The document is read
    through a window of bytes (`buf`, starting `base` bytes into the stream); each item's end is
    found at depth 1, and its bytes go to `_parse` as an NDJSON line's would.

    Finding the end fast: an object item ends at a "}" followed by the "," before the next
    object or by the "]". The first such "}" whose span orjson takes is the item's end, because
    no proper prefix of a JSON value is one too. orjson saying the span is cut short (an inner
    object's "}") moves on, and from then on only a "}" where the brackets since the item's
    start balance is tried, the first looked at 3/4 of the last item's length in; a span that
    runs past the item's end makes orjson say where that end is. Anything else (orjson refusing
    a span otherwise, a digit run orjson would get wrong, an item that is not an object) is
    scanned byte by byte (`value_end`), and parsed as an NDJSON line is.

    A bad item whose end is certain (bad UTF-8, NaN, a number out of range, nested too deeply)
    is invalid alone and the items after it are read on, as an NDJSON line would be. A break in
    the document itself (a syntax error, a cut) is one invalid item at the position where it
    happened, and nothing after it is read: where later items start is no longer known.

    An object is an envelope when it has a "batch" array and no "type" or "event" key before it;
    any other object, or a document broken before its batch starts, is handed back to
    `_detect(whole=True)` with every byte read so far, and so reads exactly as a short one does.
    """

    def __init__(
        self,
        source: str,
        stream: BinaryIO,
        head: bytes,
        lineno: int,
        offset: int,
        skip: Callable[[], bool] | None,
    ) -> None:
        self.source = source
        self.stream = stream
        self.lineno = lineno
        self.skip = skip
        self.start = offset  # where the document's bytes begin (past a BOM)
        self.buf = head
        self.shape = head.translate(_SHAPE_MAP)  # digit runs and brackets
        self.base = offset  # where `buf` begins in the stream, in bytes
        self.lines = 0  # newlines before `buf`
        self.columns = 0  # characters between the last of them and `buf`
        self.eof = False
        self.hold = False  # keep every byte: the document may yet be handed back whole
        self.read1: Callable[[int], bytes] = getattr(stream, "read1", stream.read)

    def __iter__(self) -> Iterator[InputItem]:
        first = self.space(self.base)
        assert first is not None  # _detect saw a "[" or "{"
        if self.byte(first) == ord("["):
            done = yield from self.items(0, first + 1)
            if done is not None:
                yield from self.after(*done)
        else:
            yield from self.envelope(first)

    # --- the window ------------------------------------------------------------------------

    def more(self, keep: int) -> bool:
        """Read on, dropping the bytes before stream offset `keep`; False at the end."""
        if self.eof:
            return False
        drop = 0 if self.hold else keep - self.base
        kept = len(self.buf) - drop
        chunk = self.read1(_CHUNK)
        if chunk and kept > _CHUNK:
            # An item longer than a chunk: read as much again, so that it grows in linear time.
            pieces = [chunk]
            size = len(chunk)
            while size < kept:
                piece = self.read1(_CHUNK)
                if not piece:
                    break
                pieces.append(piece)
                size += len(piece)
            chunk = b"".join(pieces)
        if not chunk:
            self.eof = True
            return False
        if drop:
            dropped = self.buf[:drop]
            newline = dropped.rfind(b"\n")
            if newline < 0:
                self.columns += _chars(dropped)
            else:
                self.lines += dropped.count(b"\n")
                self.columns = _chars(dropped[newline + 1 :])
            self.buf = self.buf[drop:] + chunk
            self.shape = self.shape[drop:] + chunk.translate(_SHAPE_MAP)
            self.base = keep
        else:
            self.buf += chunk
            self.shape += chunk.translate(_SHAPE_MAP)
        return True

    def byte(self, at: int) -> int:
        return self.buf[at - self.base]

    def end(self) -> int:
        """The stream offset just past the bytes read so far."""
        return self.base + len(self.buf)

    def take(self, start: int, end: int) -> bytes:
        return self.buf[start - self.base : end - self.base]

    def space(self, at: int) -> int | None:
        """The offset of the first byte from `at` on that is not whitespace; None at the end."""
        scanned = at
        while True:
            spaces = _SPACE.match(self.buf, scanned - self.base)
            assert spaces is not None  # it matches nothing at worst
            found = spaces.end() + self.base
            if found < self.end():
                return found
            scanned = found
            if not self.more(at):
                return None

    def where(self, at: int) -> tuple[int, int]:
        """The 1-based line and column of stream offset `at` (columns in characters)."""
        index = at - self.base
        newline = self.buf.rfind(b"\n", 0, index)
        line = self.lines + self.buf.count(b"\n", 0, index) + 1
        if newline < 0:
            return line, self.columns + _chars(self.buf[:index]) + 1
        return line, _chars(self.buf[newline + 1 : index]) + 1

    # --- values scanned byte by byte -------------------------------------------------------

    def string_end(self, at: int, keep: int | None = None) -> int | None:
        """Just past the string whose quote is at `at`; None when the stream ends inside it.
        Reading on keeps the bytes from `keep` (the value it is part of) or else from `at`."""
        while True:
            found = _STRING_REST.match(self.buf, at - self.base + 1)
            if found is not None:
                return found.end() + self.base
            if not self.more(at if keep is None else keep):
                return None

    def value_end(self, at: int) -> int | None:
        """Just past the value starting at `at`, told by its structure alone; None when the
        stream ends inside it. A closing bracket that does not match ends it there: parsing
        it then says what is wrong."""
        opener = self.byte(at)
        if opener == ord('"'):
            return self.string_end(at)
        if opener not in (ord("{"), ord("[")):  # a number, true, false, null, or garbage
            while True:
                scalar = _SCALAR.match(self.buf, at - self.base)
                assert scalar is not None  # it matches nothing at worst
                end = scalar.end() + self.base
                if end < self.end() or not self.more(at):
                    return end
        closers = bytearray()
        scanned = at
        while True:
            found = _STRUCTURE.search(self.buf, scanned - self.base)
            if found is None:
                scanned = self.end()
                if not self.more(at):
                    return None
                continue
            mark = found.start() + self.base
            char = self.buf[found.start()]
            if char == ord('"'):
                string_end = self.string_end(mark, keep=at)
                if string_end is None:
                    return None
                scanned = string_end
            elif char == ord("{"):
                closers.append(ord("}"))
                scanned = mark + 1
            elif char == ord("["):
                closers.append(ord("]"))
                scanned = mark + 1
            elif closers.pop() != char or not closers:
                return mark + 1  # its end, or a bracket that does not match: broken here
            else:
                scanned = mark + 1

    # --- what is not an array ----------------------------------------------------------------

    def envelope(self, first: int) -> Iterator[InputItem]:
        """The items of the object at `first` if it is a batch envelope; else the object whole."""
        self.hold = True
        named = False  # a "type" or "event" key: an event, not an envelope
        at = first + 1
        while True:
            key_at = self.space(at)
            if key_at is None or self.byte(key_at) != ord('"'):
                break
            key_end = self.string_end(key_at)
            if key_end is None:
                break
            try:
                key = _parse(self.take(key_at, key_end))
            except _BadJSON:
                break
            colon = self.space(key_end)
            if colon is None or self.byte(colon) != ord(":"):
                break
            value_at = self.space(colon + 1)
            if value_at is None:
                break
            if key == "batch" and not named and self.byte(value_at) == ord("["):
                self.hold = False
                done = yield from self.items(0, value_at + 1)
                if done is not None:
                    yield from self.envelope_end(*done)
                return
            value_end = self.value_end(value_at)
            if value_end is None:
                break
            try:
                _parse(self.take(value_at, value_end))
            except _BadJSON:
                break  # a broken document says so as a short one does
            named = named or key in ("type", "event")
            comma = self.space(value_end)
            if comma is None or self.byte(comma) != ord(","):
                break
            at = comma + 1
        # Not an envelope, or broken before its batch: read as a short document is.
        assert self.base == self.start  # every byte was held
        head = self.buf if self.start == 0 else _BOM + self.buf
        stream = _unread(head, self.stream)
        yield from _detect(self.source, stream, self.lineno, self.skip, whole=True)

    def envelope_end(self, number: int, at: int) -> Iterator[InputItem]:
        """What follows an envelope's batch (more keys, the "}"): any fault in it is an invalid
        item after the batch's last."""
        source = self.source
        while True:
            mark = self.space(at)
            if mark is None:
                yield self.broken(number + 1, self.end(), "expecting ',' delimiter")
                return
            char = self.byte(mark)
            if char == ord("}"):
                yield from self.after(number, mark + 1)
                return
            if char != ord(","):
                yield self.broken(number + 1, mark, "expecting ',' delimiter")
                return
            key_at = self.space(mark + 1)
            if key_at is None or self.byte(key_at) != ord('"'):
                reason = "expecting property name enclosed in double quotes"
                yield self.broken(number + 1, self.end() if key_at is None else key_at, reason)
                return
            key_end = self.string_end(key_at)
            data = self.take(key_at, self.end() if key_end is None else key_end)
            try:
                key = _parse(data)
            except _BadJSON as bad:
                yield InputItem(source, number + 1, None, self.moved(bad, key_at), _line_text(data))
                return
            if key in ("type", "event", "batch"):
                # Its items went out as events already; a short document would be one event
                # (or, for a second "batch", the items of that one).
                line, column = self.where(key_at)
                what = 'a second "batch" key' if key == "batch" else f'a "{key}" key after "batch"'
                error = f"invalid batch envelope: {what} at line {line} column {column}"
                yield InputItem(source, number + 1, None, error, _line_text(data))
                return
            assert key_end is not None
            colon = self.space(key_end)
            if colon is None or self.byte(colon) != ord(":"):
                mark = self.end() if colon is None else colon
                yield self.broken(number + 1, mark, "expecting ':' delimiter")
                return
            value_at = self.space(colon + 1)
            if value_at is None:
                yield self.broken(number + 1, self.end(), "expecting value")
                return
            value_end = self.value_end(value_at)
            data = self.take(value_at, self.end() if value_end is None else value_end)
            try:
                _parse(data)
            except _BadJSON as bad:
                error = self.moved(bad, value_at)
                yield InputItem(source, number + 1, None, error, _line_text(data))
                return
            assert value_end is not None
            at = value_end

    def after(self, number: int, at: int) -> Iterator[InputItem]:
        """What follows the document, which ended just before `at`: on its last line, nothing;
        on the lines after it, NDJSON (say, more envelopes), positions running on from the
        document's `number` items."""
        found = self.space(at)
        if found is None:
            return
        newline = self.buf.find(b"\n", at - self.base, found - self.base)
        if newline < 0:
            yield self.broken(number + 1, found, "extra data")
            return
        line = self.where(at)[0]
        rest = _unread(self.buf[newline + 1 :], self.stream)
        offset = self.base + newline + 1
        yield from _ndjson(self.source, rest, self.lineno + line, offset, self.skip, number)

    # --- items -----------------------------------------------------------------------------

    def moved(self, bad: _BadJSON, start: int) -> str:
        """What is wrong with a value starting at `start`, placed in the document."""
        if bad.line is None or bad.column is None:
            return bad.for_line()
        line, column = self.where(start)
        if bad.line == 1:
            column += bad.column - 1
        else:
            line, column = line + bad.line - 1, bad.column
        return _BadJSON(bad.kind, bad.reason, line, column).for_document()

    def broken(self, number: int, at: int, reason: str) -> InputItem:
        """The invalid item for a break at `at`: the text there, to the end of its line, is
        its raw text (at most _RAW_LIMIT bytes)."""
        while self.end() - at < _RAW_LIMIT and self.more(at):
            pass
        line, column = self.where(at)
        rest = self.take(at, at + _RAW_LIMIT)
        raw = _line_text(rest.split(b"\n", 1)[0])
        error = _BadJSON("JSON", reason, line, column).for_document()
        return InputItem(self.source, number, None, error, raw)

    def items(self, number: int, at: int) -> Generator[InputItem, None, tuple[int, int] | None]:
        """Items of the array whose "[" is just before `at`, numbered on from `number`.

        Returns the last item's number and the offset just past the "]"; None after a break.
        """
        source = self.source
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        object_end = _OBJECT_END.search
        long_run = _LONG_DIGIT_RUN
        start = self.space(at)
        if start is None:
            yield self.broken(number + 1, self.end(), "expecting value")
            return None
        if self.byte(start) == ord("]"):
            return number, start + 1
        # Where the next digit run is: looked for once from `run_from` to `run_to`, it serves
        # every item in that span (-1: there is none), so that a window is searched once.
        run = -1
        run_from = run_to = 0
        # Once an item has held inner objects (say, "products": [{...}, {...}]), their "}"s
        # would each cost a parse: from then on a "}" is only tried where the brackets balance,
        # and the first looked at is `hint` bytes in (3/4 of the last item's length).
        nested = False
        hint = 0
        while True:
            number += 1
            end_at: int | None = None
            value: Any = _EXACT
            if self.byte(start) == ord("{"):
                # The hot path: per object item, one search and one orjson call, in a window
                # of bytes held in locals (they change only when more is read).
                buf, shape, base = self.buf, self.shape, self.base
                first = counted = start - base  # the item's "{"; brackets counted up to `counted`
                search = first + hint if nested else first  # where its "}" is looked for
                opened = closed = tries = skips = 0
                while True:
                    found = object_end(buf, search)
                    if found is None:
                        # Only the last "}" can still turn out an end, once more bytes come.
                        last = buf.rfind(b"}", min(search, len(buf)))
                        search = len(buf) if last < 0 else last
                        if not self.more(first + base):
                            break
                        search -= self.base - base
                        counted -= self.base - base
                        buf, shape, base = self.buf, self.shape, self.base
                        first = start - base
                        continue
                    end = found.start() + 1
                    if nested and skips < _SKIPS:
                        # A string holding a bracket only costs a few more tries.
                        opened += shape.count(b"{", counted, end)
                        closed += shape.count(b"}", counted, end)
                        counted = search = end
                        if opened != closed:
                            skips += 1
                            continue
                    if start < run_from or end + base > run_to or 0 <= run < start:
                        run = shape.find(long_run, first)
                        run = run + base if run >= 0 else -1
                        run_from, run_to = start, base + len(buf)
                    if 0 <= run < end + base:
                        break
                    try:
                        value = loads(buf[first:end])
                    except decode_error as exc:
                        if tries == _TRIES:
                            break
                        tries += 1
                        if exc.pos == end - first:  # cut short: an inner object's "}"
                            if not nested:
                                nested = True
                                opened = shape.count(b"{", first, end)
                                closed = shape.count(b"}", first, end)
                                counted = end
                            search = end
                            continue
                        if exc.msg == "unexpected content after document":
                            # Past the end, which orjson found: just before its `pos`.
                            end = first + len(buf[first : first + exc.pos].rstrip())
                            try:
                                value = loads(buf[first:end])
                            except decode_error:
                                break
                            end_at = end + base
                            hint = (end - first) * 3 // 4
                        break
                    if shape.count(b"{", first, end) > MAX_DEPTH and too_deep(value):
                        yield _too_deep_item(source, number, _deep_text(value), None)
                    elif "status" in value:
                        yield _to_item(source, number, value, None, None)
                    else:
                        yield InputItem(source, number, value)
                    hint = (end - first) * 3 // 4
                    first = counted = search = found.end()
                    if buf[first - 1] == ord("]"):
                        return number, first + base
                    number += 1  # the lookahead saw the next object's "{" at `first`
                    start = first + base
                    if nested:
                        search += hint
                    opened = closed = tries = skips = 0
            if end_at is not None:
                # Its end came from orjson: what follows it is checked below.
                if shape.count(b"{", first, end) > MAX_DEPTH and too_deep(value):
                    yield _too_deep_item(source, number, _deep_text(value), None)
                else:
                    yield _to_item(source, number, value, None, None)
            else:
                # Byte by byte: where the item ends, then what it is.
                end_at = self.value_end(start)
                data = self.take(start, self.end() if end_at is None else end_at)
                try:
                    value = _parse(data)
                except _BadJSON as bad:
                    yield InputItem(source, number, None, self.moved(bad, start), _line_text(data))
                    if bad.kind == "JSON" and bad.pos is not None:
                        return None  # a syntax error: where the next item starts is not known
                else:
                    yield _batch_item(source, number, value, None)
            if end_at is None:
                return None  # the stream ended inside the item: it was invalid
            after = self.space(end_at)
            if after is None:
                yield self.broken(number + 1, self.end(), "expecting ',' delimiter")
                return None
            char = self.byte(after)
            if char == ord("]"):
                return number, after + 1
            if char != ord(","):
                yield self.broken(number + 1, after, "expecting ',' delimiter")
                return None
            start_at = self.space(after + 1)
            if start_at is None or self.byte(start_at) == ord("]"):
                yield self.broken(number + 1, start_at or self.end(), "expecting value")
                return None
            start = start_at


class _Rewound(io.RawIOBase):
    """A stream that cannot seek, with the bytes already read to sniff it put back in front."""

    def __init__(self, head: bytes, rest: BinaryIO, *, owns: bool) -> None:
        super().__init__()
        self._head = head
        self._rest = rest
        self._owns = owns  # stdin is not ours to close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        view = memoryview(buffer).cast("B")
        if self._head:
            count = min(len(view), len(self._head))
            view[:count] = self._head[:count]
            self._head = self._head[count:]
            return count
        # read1 hands back what is already buffered, or makes one raw read: so `tail -f | ctcli`
        # sees lines as they come (readinto1 may block in a second read to fill the buffer).
        read1 = getattr(self._rest, "read1", None)
        data = read1(len(view)) if read1 is not None else self._rest.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed and self._owns:
            self._rest.close()
        super().close()


class _OwningGzipFile(gzip.GzipFile):
    """A GzipFile that closes the stream it reads from (GzipFile leaves a given fileobj open)."""

    def __init__(self, inner: BinaryIO) -> None:
        super().__init__(fileobj=inner, mode="rb")
        self._inner = inner

    def readinto(self, buffer: Any) -> int:
        # One decompressed chunk at a time: the inherited readinto fills the whole buffer first,
        # so a truncated file would lose up to a buffer's worth of good lines before the error.
        return self.readinto1(buffer)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._inner.close()


def _read_head(stream: BinaryIO, size: int) -> bytes:
    head = b""
    while len(head) < size:
        more = stream.read(size - len(head))
        if not more:
            break
        head += more
    return head


def _cannot_read(name: str, exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    reason = reason or type(exc).__name__
    what = "stdin" if name == "-" else repr(name)
    return f"cannot read {what}: {reason}"


def _open(name: str, stdin: BinaryIO | None) -> tuple[BinaryIO, bool]:
    """The readable, decompressed stream of `name`, and whether it seeks (a plain regular file)."""
    try:
        if name == "-":
            base = stdin if stdin is not None else getattr(sys.stdin, "buffer", None)
            if base is None:
                raise InputError("cannot read stdin: there is no standard input")
            head = _read_head(base, len(_GZIP_MAGIC))
            stream: BinaryIO = io.BufferedReader(_Rewound(head, base, owns=False), _BUFFER_SIZE)
        else:
            stream = open(name, "rb", buffering=_BUFFER_SIZE)  # noqa: SIM115 - returned open
            try:
                if stream.seekable():
                    head = stream.read(len(_GZIP_MAGIC))
                    stream.seek(0)
                else:  # a named pipe, /dev/stdin, a process substitution
                    head = _read_head(stream, len(_GZIP_MAGIC))
                    stream = io.BufferedReader(_Rewound(head, stream, owns=True), _BUFFER_SIZE)
            except BaseException:
                stream.close()
                raise
        if head == _GZIP_MAGIC:
            # The outer buffer lets lines be split in C instead of by GzipFile.readline.
            return io.BufferedReader(_OwningGzipFile(stream), _BUFFER_SIZE), False
        return stream, name != "-" and stream.seekable()
    except OSError as exc:
        raise InputError(_cannot_read(name, exc)) from exc


def open_source(name: str, *, stdin: BinaryIO | None = None) -> BinaryIO:
    """Open a file, or stdin for "-", as a binary stream, decompressing gzip (told by content).

    Raises InputError naming the file when it cannot be opened or read.
    """
    return _open(name, stdin)[0]


def _skip(stream: BinaryIO, count: int) -> None:
    while count > 0:
        chunk = stream.read(min(count, _BUFFER_SIZE))
        if not chunk:
            return
        count -= len(chunk)


def _read(
    name: str,
    stream: BinaryIO,
    seekable: bool,
    start_offset: int,
    start_line: int,
    skip: Callable[[], bool] | None = None,
) -> Iterator[InputItem]:
    try:
        with stream:
            if start_offset > 0:
                if seekable:
                    stream.seek(start_offset)
                else:
                    _skip(stream, start_offset)
                yield from _ndjson(name, stream, start_line, start_offset, skip)
            else:
                yield from _detect(name, stream, start_line, skip)
    except (OSError, EOFError, zlib.error) as exc:
        # A read error or a corrupt or truncated gzip stream, after the items read so far.
        raise InputError(_cannot_read(name, exc)) from exc


def read_source(
    name: str,
    *,
    stdin: BinaryIO | None = None,
    start_offset: int = 0,
    start_line: int = 0,
    skip: Callable[[], bool] | None = None,
) -> Iterator[InputItem]:
    """Lazily yield the items of one file, or of stdin for "-".

    The file is opened at once, so a missing file raises InputError here rather than at the first
    item. `start_offset`/`start_line` resume NDJSON where a checkpoint left off: reading starts at
    that byte offset of the (decompressed) stream and numbers lines after `start_line`.
    `skip`: see `_ndjson`; the items it passes over are the one object SKIPPED.
    """
    stream, seekable = _open(name, stdin)
    items = _read(name, stream, seekable, start_offset, start_line, skip)
    return _with_supersessions(name, items)


def _with_supersessions(name: str, items: Iterator[InputItem]) -> Iterator[InputItem]:
    """Items as they come until a --failed line shows up; from there, with what supersedes it.

    Markers follow the failures they supersede, so the rest of the file is looked at first:
    a file is scanned again from the start (in constant memory), a pipe is read to its end.
    """
    for item in items:
        if item.redrive_identity is None and not item.marker:
            yield item
            continue
        rest: Iterator[InputItem] = itertools.chain([item], items)
        markers = Markers()
        if name != "-" and os.path.isfile(name):
            _scan_markers(name, markers)
        else:
            held = list(rest)
            for got in held:
                if got.marker:
                    markers.add(got.line, got.superseded)
            rest = iter(held)
        yield from settle(rest, markers)
        return


def objects_with(lines: Iterable[bytes], needle: bytes) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each line that holds `needle` and is a JSON object.

    For scans of our own files (failed files): most lines are skipped without being parsed.
    """
    for line, data in enumerate(lines, start=1):
        if needle not in data:
            continue
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if type(value) is dict:
            yield line, value


def _scan_markers(name: str, markers: Markers) -> None:
    stream, _ = _open(name, None)
    try:
        with stream:
            for line, value in objects_with(stream, b'"superseded_by"'):
                if is_marker(value):
                    markers.add(line, value)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(_cannot_read(name, exc)) from exc


def check_readable(name: str) -> None:
    """Raise InputError naming `name` when it cannot be read, without opening it."""
    # stat and access rather than open: opening a named pipe just to look would block or
    # swallow its writer.
    try:
        mode = os.stat(name).st_mode
    except OSError as exc:
        raise InputError(_cannot_read(name, exc)) from exc
    if stat.S_ISDIR(mode):
        raise InputError(f"cannot read {name!r}: {os.strerror(errno.EISDIR)}")
    if not os.access(name, os.R_OK):
        raise InputError(f"cannot read {name!r}: {os.strerror(errno.EACCES)}")


def read_sources(names: Sequence[str], *, stdin: BinaryIO | None = None) -> Iterator[InputItem]:
    """Lazily yield the items of several sources in turn.

    Every named file is checked first, so a typo in the last name fails before anything is read.
    """
    for name in names:
        if name != "-":
            check_readable(name)
    return itertools.chain.from_iterable(read_source(name, stdin=stdin) for name in names)
