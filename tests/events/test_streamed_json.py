"""Large JSON arrays and batch envelopes are read item by item, in memory that does not grow.

A document longer than sources._STREAMED_FROM (1 MiB) is streamed. Most tests here lower that
threshold so that small documents take the streamed path; a few use real large ones.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from collections.abc import Iterator
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctcli.errors import InputError
from ctcli.events import sources
from ctcli.events.sources import MAX_DEPTH, read_source
from ctcli.models import InputItem
from tests.helpers import invoke

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def event(n: int) -> dict[str, Any]:
    return {
        "type": "identify",
        "userId": f"user-{n}",
        "messageId": f"msg-{n:012d}",
        "traits": {"email": f"user{n}@example.com", "plan": "premium", "age": n % 90},
        "context": {"ip": "10.1.2.3", "library": {"name": "analytics.js", "version": "2.1"}},
    }


def one_line_array(events: list[Any]) -> bytes:
    return json.dumps(events).encode()  # orjson refuses integers beyond 64 bits


def pretty_array(events: list[Any]) -> bytes:
    return json.dumps(events, indent=2).encode()


def one_line_envelope(events: list[Any]) -> bytes:
    envelope = {"context": {"library": {"name": "x"}}, "batch": events, "sentAt": "t"}
    return json.dumps(envelope, separators=(",", ":")).encode()


def pretty_envelope(events: list[Any]) -> bytes:
    envelope = {"context": {"library": {"name": "x"}}, "batch": events, "sentAt": "t"}
    return json.dumps(envelope, indent=4).encode()


LAYOUTS = {
    "one-line array": one_line_array,
    "pretty array": pretty_array,
    "one-line envelope": one_line_envelope,
    "pretty envelope": pretty_envelope,
}


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every document longer than 4 bytes is streamed."""
    monkeypatch.setattr(sources, "_STREAMED_FROM", 4)


def read(data: bytes) -> list[InputItem]:
    return list(read_source("-", stdin=io.BytesIO(data)))


def rows(items: list[InputItem]) -> list[tuple[int, Any, str | None]]:
    return [(item.line, item.event, item.error) for item in items]


# --- what is read ------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("compress", [False, True])
def test_a_large_document_reads_every_item_at_its_position(tmp_path, layout, compress):
    events = [event(n) for n in range(6000)]
    data = LAYOUTS[layout](events)
    assert len(data) > sources._STREAMED_FROM  # the real threshold: this one is streamed
    path = tmp_path / ("in.json.gz" if compress else "in.json")
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    items = list(read_source(str(path)))
    assert rows(items) == [(n, events[n - 1], None) for n in range(1, 6001)]
    assert all(item.source == str(path) and item.end_offset is None for item in items)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_small_documents_streamed_read_as_they_do_whole(streamed, layout):
    events = [event(1), {"status": "active", "n": 1}, 7, "x", None, [1, {"a": 2}], {}, event(2)]
    data = LAYOUTS[layout](events)
    with mock.patch.object(sources, "_STREAMED_FROM", 1 << 20):
        whole = read(data)
    got = read(data)
    assert [(i.line, i.event, i.error, i.raw) for i in got] == [
        (i.line, i.event, i.error, i.raw) for i in whole
    ]
    assert rows(got)[0] == (1, event(1), None)
    assert rows(got)[2] == (3, None, "not a JSON object (got number)")


def test_keys_around_the_batch_are_passed_over_whatever_they_hold(streamed):
    data = (
        b'{"context": {"tricky": "] } \\" , [", "list": [1, {"batch": [9]}]}, "writeKey": null,'
        b' "batch": [{"a": 1}, {"b": 2}], "sentAt": "2024-01-01", "extra": [{"c": [3]}]}\n'
    )
    assert rows(read(data)) == [(1, {"a": 1}, None), (2, {"b": 2}, None)]


def test_an_object_with_type_or_event_before_its_batch_is_one_event(streamed):
    for key in ("type", "event"):
        obj = {key: "track", "batch": [{"a": 1}, {"b": 2}]}
        assert rows(read(json.dumps(obj, indent=2).encode())) == [(1, obj, None)]


def test_a_large_single_object_is_one_event(tmp_path):
    obj = {
        "type": "track",
        "event": "Big",
        "properties": {f"k{n}": "v" * 100 for n in range(12000)},
    }
    path = tmp_path / "one.json"
    path.write_text(json.dumps(obj, indent=2))
    assert rows(list(read_source(str(path)))) == [(1, obj, None)]


@pytest.mark.parametrize("data", [b"[]", b"[ \n ]\n", b'{"batch": []}', b'{"batch": [ ], "a": 1}'])
def test_an_empty_array_or_batch_yields_nothing(streamed, data):
    assert read(data) == []


def test_a_large_empty_array_yields_nothing():
    assert read(b"[" + b" " * (2 << 20) + b"]\n") == []


def test_a_bom_before_a_streamed_document_is_tolerated(streamed):
    assert rows(read(b"\xef\xbb\xbf" + pretty_array([event(1), event(2)]))) == [
        (1, event(1), None),
        (2, event(2), None),
    ]


def test_big_integers_are_read_exactly_and_digit_runs_in_strings_change_nothing(streamed):
    big = {"id": 123456789012345678901234567890, "neg": -(2**63) - 1, "max": 2**64 - 1}
    text = {"id": "12345678901234567890123", "n": 1.5}
    events = [event(1), big, text, event(2)]
    assert rows(read(one_line_array(events))) == [(n, e, None) for n, e in enumerate(events, 1)]


def test_a_number_of_too_many_digits_is_invalid_alone(streamed):
    huge = b'{"n": ' + b"9" * 5000 + b"}"
    items = read(b'[{"a": 1}, ' + huge + b', {"b": 2}]')
    assert rows(items)[0] == (1, {"a": 1}, None) and rows(items)[2] == (3, {"b": 2}, None)
    assert items[1].error == "invalid JSON: a number with more than 4300 digits"


@pytest.mark.parametrize(
    "bad, error",
    [
        (b'{"a": NaN}', "invalid JSON: NaN is not a JSON number"),
        (b'{"a": 1e400}', "invalid JSON: number out of range: 1e400"),
        (b'{"a": "\\ud800"}', "invalid JSON: lone UTF-16 surrogate escape in a string"),
    ],
)
def test_values_json_does_not_allow_are_invalid_alone_and_the_rest_is_read(streamed, bad, error):
    items = read(b'[{"a": 1},\n ' + bad + b',\n {"b": 2}]')
    assert rows(items) == [(1, {"a": 1}, None), (2, None, error), (3, {"b": 2}, None)]
    assert items[1].raw == bad.decode()


def test_bad_utf8_inside_an_item_is_invalid_alone_with_its_bytes_kept(streamed):
    items = read(b'[\n  {"a": 1},\n  {"name": "caf\xe9"},\n  {"b": 2}\n]\n')
    assert rows(items) == [
        (1, {"a": 1}, None),
        (2, None, "invalid UTF-8: byte 0xe9 at line 3 column 16"),
        (3, {"b": 2}, None),
    ]
    assert items[1].raw.encode("utf-8", "surrogateescape") == b'{"name": "caf\xe9"}'


def test_items_nested_too_deep_are_invalid_alone_and_the_limit_itself_reads(streamed):
    deepest = {"a": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))}
    deeper = {"a": json.loads("[" * 200 + "]" * 200)}
    deepest_text = '{"a":' * 3000 + "1" + "}" * 3000  # beyond orjson and recursion
    data = json.dumps([deepest, deeper, 7]).encode()[:-1] + b", " + deepest_text.encode() + b"]"
    items = read(data)
    assert rows(items)[0] == (1, deepest, None)
    assert rows(items)[1] == (2, None, f"nested more than {MAX_DEPTH} levels deep")
    assert rows(items)[2] == (3, None, "not a JSON object (got number)")
    assert rows(items)[3] == (4, None, "invalid JSON: nested too deeply")
    assert items[3].raw == deepest_text


def test_strings_holding_brackets_quotes_and_escapes_do_not_split_items(streamed):
    events = [{"a": '},{"b": 1}, {'}, {"a": '\\"}]'}, {"a": "\n\t\u00e9\u2028"}, {"b": ["}"]}]
    for layout in LAYOUTS.values():
        assert rows(read(layout(events))) == [(n, e, None) for n, e in enumerate(events, 1)]


def test_an_item_with_many_nested_objects_is_found_whole(streamed):
    item = {"type": "track", "products": [{"sku": n, "tags": [{"t": n}]} for n in range(300)]}
    events = [event(1), item, event(2)]
    assert rows(read(pretty_array(events))) == [(n, e, None) for n, e in enumerate(events, 1)]
    assert rows(read(one_line_array(events))) == [(n, e, None) for n, e in enumerate(events, 1)]


def test_items_of_mixed_sizes_with_inner_objects_and_stray_brackets_are_each_found(streamed):
    def order(n: int, products: int) -> dict[str, Any]:
        items = [{"sku": f"s{k}", "tags": [{"t": k}]} for k in range(products)]
        return {"type": "track", "userId": f"u{n}", "properties": {"products": items}}

    events = [
        order(1, 8),
        {"a": 1},
        order(2, 1),
        {"note": "a stray ] and } and [{ in text"},
        order(3, 30),
        {"b": [{"c": "}]"}]},
        event(4),
        order(5, 0),
        {"x": "{{{{"},
        order(6, 3),
    ]
    expected = [(n, e, None) for n, e in enumerate(events, 1)]
    for layout in LAYOUTS.values():
        assert rows(read(layout(events))) == expected
        assert rows(read(layout(events * 50))) == [
            (n, e, None) for n, e in enumerate(events * 50, 1)
        ]


def test_failed_lines_in_a_streamed_array_are_unwrapped(streamed):
    failed = {
        "ctcli": "failed",
        "event": {"type": "track", "userId": "u"},
        "source": "x",
        "line": 3,
        "action": "delete",
        "status": "failed",
        "code": 500,
        "error": "boom",
    }
    items = read(one_line_array([event(1), failed]))
    assert [(i.line, i.event, i.only_action) for i in items] == [
        (1, event(1), None),
        (2, {"type": "track", "userId": "u"}, "delete"),
    ]


# --- a break part-way --------------------------------------------------------------------------


def test_a_document_cut_short_yields_the_items_before_then_one_invalid_item(streamed):
    data = pretty_array([event(n) for n in range(1, 6)])
    cut = data.index(b'"user-4"')
    items = read(data[:cut])
    assert rows(items)[:3] == [(n, event(n), None) for n in range(1, 4)]
    assert len(items) == 4
    assert items[3].line == 4
    assert items[3].error.startswith("invalid JSON: ")
    line = data[:cut].count(b"\n") + 1
    assert f" at line {line} column " in items[3].error
    assert items[3].raw.startswith("{")


def test_a_missing_comma_is_an_invalid_item_where_it_is_and_nothing_after_is_read(streamed):
    data = b'[\n  {"a": 1},\n  {"b": 2}\n  {"c": 3},\n  {"d": 4}\n]\n'
    items = read(data)
    assert rows(items) == [
        (1, {"a": 1}, None),
        (2, {"b": 2}, None),
        (3, None, "invalid JSON: expecting ',' delimiter at line 4 column 3"),
    ]
    assert items[2].raw == '{"c": 3},'


def test_an_item_broken_inside_is_invalid_and_ends_the_document(streamed):
    items = read(b'[{"a": 1}, {"b": [1}, {"c": 3}]')
    assert rows(items) == [
        (1, {"a": 1}, None),
        (2, None, "invalid JSON: expecting ',' delimiter at line 1 column 20"),
    ]
    assert items[1].raw == '{"b": [1}'


@pytest.mark.parametrize(
    "data, error",
    [
        (b'[{"a": 1},]', "invalid JSON: expecting value at line 1 column 11"),
        (b'[{"a": 1}', "invalid JSON: expecting ',' delimiter at line 1 column 10"),
        (b'[{"a": 1},', "invalid JSON: expecting value at line 1 column 11"),
        (b'[{"a": 1}] x', "invalid JSON: extra data at line 1 column 12"),
        (b'{"batch": [{"a": 1}], "sentAt": "x', "invalid JSON: unterminated string starting at"
         " line 1 column 33"),
        (b'{"batch": [{"a": 1}] "sentAt": 1}', "invalid JSON: expecting ',' delimiter at line 1"
         " column 22"),
        (b'{"batch": [{"a": 1}], "type": "x"}', 'invalid batch envelope: a "type" key after'
         ' "batch" at line 1 column 23'),
        (b'{"batch": [{"a": 1}], "batch": []}', 'invalid batch envelope: a second "batch" key at'
         " line 1 column 23"),
    ],
)  # fmt: skip
def test_a_fault_after_the_last_item_is_an_invalid_item_after_it(streamed, data, error):
    items = read(data)
    assert rows(items) == [(1, {"a": 1}, None), (2, None, error)]


def test_lines_after_a_streamed_document_are_read_as_ndjson(streamed):
    data = one_line_envelope([event(1), event(2)]) + b"\n" + orjson.dumps({"batch": [event(3)]})
    data += b"\n\n" + orjson.dumps(event(4)) + b"\n"
    items = read(data)
    assert [(i.line, i.event) for i in items] == [(1, event(1)), (2, event(2)), (3, event(3)),
                                                  (4, event(4))]  # fmt: skip
    assert items[-1].end_offset == len(data)


def test_ndjson_whose_first_line_is_cut_short_still_reads_as_ndjson(streamed):
    data = b'{"type": "identify", "userId": "u"\n' + b"".join(
        orjson.dumps(event(n)) + b"\n" for n in range(3)
    )
    items = read(data)
    assert rows(items)[1:] == [(2, event(0), None), (3, event(1), None), (4, event(2), None)]
    assert items[0].error == "invalid JSON: expecting ',' delimiter at column 35"


def test_a_truncated_gzip_document_yields_what_it_can_then_raises_input_error(tmp_path):
    data = gzip.compress(one_line_array([event(n) for n in range(20000)]), compresslevel=0)
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    items: list[InputItem] = []
    with pytest.raises(InputError, match=r"cannot read .*cut\.json\.gz"):
        items.extend(read_source(str(path)))
    assert len(items) > 1000  # items came before the end of the document was reached
    assert rows(items) == [(n, event(n - 1), None) for n in range(1, len(items) + 1)]


class Failing(io.RawIOBase):
    """A stream of `data` whose read after it fails, as a disk or a pipe can."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.data:
            raise OSError(5, "Input/output error")
        count = min(len(buffer), len(self.data))
        buffer[:count] = self.data[:count]
        self.data = self.data[count:]
        return count


def test_a_read_error_part_way_comes_after_the_items_before_it():
    data = one_line_array([event(n) for n in range(20000)])
    items: list[InputItem] = []
    with pytest.raises(InputError, match="cannot read stdin: Input/output error"):
        items.extend(read_source("-", stdin=io.BufferedReader(Failing(data[: len(data) // 2]))))
    assert len(items) > 1000
    assert rows(items) == [(n, event(n - 1), None) for n in range(1, len(items) + 1)]


# --- properties --------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@PROPERTIES
@given(
    values=st.lists(JSON_VALUES, max_size=8),
    layout=st.sampled_from(sorted(LAYOUTS)),
    limit=st.integers(min_value=3, max_value=300),
)
def test_any_valid_document_streamed_reads_as_it_does_whole(values, layout, limit):
    data = LAYOUTS[layout](values)
    whole = read(data)
    with mock.patch.object(sources, "_STREAMED_FROM", limit):
        got = read(data)
    assert [(i.line, i.event, i.error, i.raw) for i in got] == [
        (i.line, i.event, i.error, i.raw) for i in whole
    ]


@PROPERTIES
@given(
    data=st.one_of(
        st.binary(max_size=120).map(lambda tail: b"[" + tail),
        st.binary(max_size=120).map(lambda tail: b'{"batch": [' + tail),
        st.lists(JSON_VALUES, max_size=4)
        .map(one_line_array)
        .flatmap(
            lambda doc: st.integers(0, len(doc)).map(lambda cut: doc[:cut] + b"\n" + doc[cut:])
        ),
    ),
    limit=st.integers(min_value=3, max_value=64),
)
def test_any_bytes_streamed_never_raise_and_every_item_is_an_event_or_an_error(data, limit):
    with mock.patch.object(sources, "_STREAMED_FROM", limit):
        items = read(data)
    assert all((item.event is None) != (item.error is None) for item in items)
    assert all(item.line >= 1 for item in items)


# --- memory ------------------------------------------------------------------------------------


class Generated(io.RawIOBase):
    """A JSON array of `blocks` x 1000 events, made as it is read: never held whole."""

    def __init__(self, blocks: int, *, envelope: bool = False) -> None:
        block = b",".join(orjson.dumps(event(n)) for n in range(1000))
        opening, closing = (b"[", b"]")
        if envelope:
            opening, closing = (b'{"context": {}, "batch": [', b'], "sentAt": "t"}')
        self.pieces: Iterator[bytes] = iter(
            [opening, block] + [b"," + block] * (blocks - 1) + [closing]
        )
        self.size = len(opening) + blocks * (len(block) + 1) - 1 + len(closing)
        self.current = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.current:
            piece = next(self.pieces, None)
            if piece is None:
                return 0
            self.current = piece
        count = min(len(buffer), len(self.current))
        buffer[:count] = self.current[:count]
        self.current = self.current[count:]
        return count


def peak_while_reading(items: Iterator[InputItem]) -> tuple[int, int]:
    """(items, peak bytes traced) of reading `items` to the end, keeping none of them."""
    tracemalloc.start()
    try:
        count = sum(1 for item in items if item.event is not None)
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("envelope", [False, True])
def test_reading_a_generated_7_mb_document_holds_less_than_5_mb(envelope):
    stream = Generated(32, envelope=envelope)
    assert stream.size > 6 << 20  # more than the bound below: it is never held whole
    count, peak = peak_while_reading(read_source("-", stdin=io.BufferedReader(stream)))
    assert count == 32_000
    assert peak < 5 << 20, peak


def test_reading_a_gzipped_7_mb_array_holds_less_than_5_mb(tmp_path):
    path = tmp_path / "big.json.gz"
    generated = Generated(32)
    with gzip.open(path, "wb", compresslevel=1) as out:
        while chunk := generated.read(1 << 20):
            out.write(chunk)
    count, peak = peak_while_reading(read_source(str(path)))
    assert count == 32_000
    assert peak < 5 << 20, peak


# --- parse workers -----------------------------------------------------------------------------


def test_a_large_array_reads_the_same_through_parse_workers_as_in_one_process(
    env, tmp_path, monkeypatch
):
    events: list[Any] = [event(n) for n in range(5000)]
    events[10] = 7
    events[20] = {"type": "identify", "userId": "x", "traits": {"phone": "555"}}
    events[30] = {"type": "track", "event": "Delete User", "userId": "u30"}
    data = pretty_array(events)
    data = data.replace(b'"user-40"', b'"user-\xe9"')  # one item of bad UTF-8
    assert len(data) > sources._STREAMED_FROM
    path = tmp_path / "big.json"
    path.write_bytes(data)
    outputs = []
    for workers in ("0", "1"):
        monkeypatch.setenv("CTCLI_WORKERS", workers)
        result = invoke("upload", "--dry-run", "-o", "ndjson", str(path))
        outputs.append((result.exit_code, result.stdout))
    assert outputs[0] == outputs[1]
    lines = [row for row in map(json.loads, outputs[0][1].splitlines()) if "line" in row]
    assert len(lines) == 5000
    assert [row["line"] for row in lines] == list(range(1, 5001))
    assert lines[40]["status"] == "invalid" and "UTF-8" in lines[40]["error"]
