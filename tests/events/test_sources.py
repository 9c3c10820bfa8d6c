"""ctcli.events.sources: every input format, line numbers, bad content, resume, errors."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ctcli.errors import InputError
from ctcli.events.sources import open_source, read_source, read_sources
from ctcli.models import InputItem

IDENTIFY = {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}}
TRACK = {"type": "track", "userId": "u2", "event": "Order Completed"}
PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(tmp_path: Path, name: str, data: bytes, *, compress: bool = False) -> str:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if compress else data)
    return str(path)


def read_bytes(data: bytes, **kwargs: int) -> list[InputItem]:
    return list(read_source("-", stdin=io.BytesIO(data), **kwargs))


def events(items: list[InputItem]) -> list[tuple[int, object]]:
    return [(item.line, item.event) for item in items]


def ndjson(*objects: object) -> bytes:
    return b"".join(orjson.dumps(obj) + b"\n" for obj in objects)


# --- formats, plain and gzipped --------------------------------------------------------------

FORMATS = {
    "ndjson": (ndjson(IDENTIFY, TRACK), [(1, IDENTIFY), (2, TRACK)]),
    "array": (json.dumps([IDENTIFY, TRACK], indent=2).encode(), [(1, IDENTIFY), (2, TRACK)]),
    "one-line array": (orjson.dumps([IDENTIFY, TRACK]), [(1, IDENTIFY), (2, TRACK)]),
    "pretty object": (json.dumps(IDENTIFY, indent=2).encode(), [(1, IDENTIFY)]),
    "pretty envelope": (
        json.dumps({"batch": [IDENTIFY, TRACK], "sentAt": "2024-01-01"}, indent=2).encode(),
        [(1, IDENTIFY), (2, TRACK)],
    ),
    "one-line envelope": (orjson.dumps({"batch": [IDENTIFY, TRACK]}), [(1, IDENTIFY), (2, TRACK)]),
}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "name, compress", [("in.json", False), ("in.json.gz", True), ("in.json", True)]
)
def test_each_format_reads_plain_and_gzipped(tmp_path, fmt, name, compress):
    data, expected = FORMATS[fmt]
    path = write(tmp_path, name, data, compress=compress)
    items = list(read_source(path))
    assert events(items) == expected
    assert all(item.source == path and item.error is None for item in items)


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_reads_from_stdin(fmt):
    data, expected = FORMATS[fmt]
    assert events(read_bytes(data)) == expected
    assert events(read_bytes(gzip.compress(data))) == expected


def test_stdin_items_are_named_dash():
    assert [item.source for item in read_bytes(ndjson(IDENTIFY))] == ["-"]


def test_stdin_defaults_to_sys_stdin_buffer(monkeypatch):
    fake = io.TextIOWrapper(io.BytesIO(ndjson(IDENTIFY)))
    monkeypatch.setattr(sys, "stdin", fake)
    assert events(list(read_source("-"))) == [(1, IDENTIFY)]


def test_file_named_gz_that_is_not_gzip_reads_as_plain(tmp_path):
    path = write(tmp_path, "plain.ndjson.gz", ndjson(IDENTIFY))
    assert events(list(read_source(path))) == [(1, IDENTIFY)]


def test_open_source_decompresses_gzip_detected_by_content(tmp_path):
    path = write(tmp_path, "noext", b"hello\n", compress=True)
    with open_source(path) as stream:
        assert stream.read() == b"hello\n"


def test_open_source_reads_stdin_from_the_start():
    with open_source("-", stdin=io.BytesIO(b"\x1fabc")) as stream:
        assert stream.read() == b"\x1fabc"


def test_multi_member_gzip_reads_every_member(tmp_path):
    path = write(tmp_path, "x.gz", gzip.compress(ndjson(IDENTIFY)) + gzip.compress(ndjson(TRACK)))
    assert events(list(read_source(path))) == [(1, IDENTIFY), (2, TRACK)]


def test_empty_input_yields_nothing():
    assert read_bytes(b"") == []
    assert read_bytes(b"\n  \r\n\t\n") == []


def test_read_sources_chains_files_in_order(tmp_path):
    first = write(tmp_path, "a.ndjson", ndjson(IDENTIFY))
    second = write(tmp_path, "b.ndjson", ndjson(TRACK, IDENTIFY))
    items = list(read_sources([first, second]))
    assert [(item.source, item.line) for item in items] == [(first, 1), (second, 1), (second, 2)]


def test_read_sources_reads_stdin_for_dash(tmp_path):
    path = write(tmp_path, "a.ndjson", ndjson(IDENTIFY))
    items = list(read_sources([path, "-"], stdin=io.BytesIO(ndjson(TRACK))))
    assert [(item.source, item.event) for item in items] == [(path, IDENTIFY), ("-", TRACK)]


# --- line numbers and offsets ---------------------------------------------------------------


def test_blank_lines_are_skipped_but_counted():
    data = b"\n" + ndjson(IDENTIFY) + b"   \n\t\n" + ndjson(TRACK) + b"\n"
    assert events(read_bytes(data)) == [(2, IDENTIFY), (5, TRACK)]


def test_end_offset_is_just_past_each_lines_newline():
    data = ndjson(IDENTIFY) + b"\n" + ndjson(TRACK)
    items = read_bytes(data)
    assert [item.end_offset for item in items] == [len(ndjson(IDENTIFY)), len(data)]


def test_crlf_line_endings_are_tolerated():
    data = (
        ndjson(IDENTIFY).replace(b"\n", b"\r\n") + b"\r\n" + ndjson(TRACK).replace(b"\n", b"\r\n")
    )
    items = read_bytes(data)
    assert events(items) == [(1, IDENTIFY), (3, TRACK)]
    assert items[-1].end_offset == len(data)


def test_utf8_bom_at_start_is_tolerated_and_counted_in_offsets():
    data = b"\xef\xbb\xbf" + ndjson(IDENTIFY, TRACK)
    items = read_bytes(data)
    assert events(items) == [(1, IDENTIFY), (2, TRACK)]
    assert items[-1].end_offset == len(data)


def test_utf8_bom_before_a_pretty_document_is_tolerated():
    assert events(read_bytes(b"\xef\xbb\xbf" + FORMATS["array"][0])) == [(1, IDENTIFY), (2, TRACK)]


def test_last_line_without_newline_is_read():
    data = ndjson(IDENTIFY) + orjson.dumps(TRACK)
    items = read_bytes(data)
    assert events(items) == [(1, IDENTIFY), (2, TRACK)]
    assert items[-1].end_offset == len(data)


def test_envelopes_on_ndjson_lines_number_items_by_running_position():
    data = ndjson({"batch": [IDENTIFY, TRACK]}, {"batch": [TRACK]})
    items = read_bytes(data)
    assert events(items) == [(1, IDENTIFY), (2, TRACK), (3, TRACK)]
    # Only an envelope's last item may move a checkpoint past its line.
    first_line = len(ndjson({"batch": [IDENTIFY, TRACK]}))
    assert [item.end_offset for item in items] == [None, first_line, len(data)]


# --- bad content ----------------------------------------------------------------------------


def test_invalid_json_line_becomes_error_and_the_rest_is_read():
    data = ndjson(IDENTIFY) + b'{"type": "track",,}\n' + ndjson(TRACK)
    items = read_bytes(data)
    assert events(items) == [(1, IDENTIFY), (2, None), (3, TRACK)]
    bad = items[1]
    assert (
        bad.error == "invalid JSON: expecting property name enclosed in double quotes at column 18"
    )
    assert bad.raw == '{"type": "track",,}'
    assert bad.end_offset == len(ndjson(IDENTIFY)) + len(b'{"type": "track",,}\n')


def test_invalid_json_raw_drops_the_crlf():
    items = read_bytes(ndjson(IDENTIFY) + b"nope\r\n")
    assert items[1].raw == "nope"
    assert items[1].error.startswith("invalid JSON:")


@pytest.mark.parametrize(
    "line, kind",
    [
        (b"[1, 2]", "array"),
        (b'"text"', "string"),
        (b"12", "number"),
        (b"1.5", "number"),
        (b"true", "boolean"),
        (b"null", "null"),
    ],
)
def test_valid_json_that_is_not_an_object_becomes_error(line, kind):
    items = read_bytes(ndjson(IDENTIFY) + line + b"\n" + ndjson(TRACK))
    assert events(items) == [(1, IDENTIFY), (2, None), (3, TRACK)]
    assert items[1].error == f"not a JSON object (got {kind})"
    assert items[1].raw == line.decode()


def test_ndjson_of_arrays_reports_each_line():
    items = read_bytes(b"[1]\n[2]\n")
    assert [(item.line, item.error) for item in items] == [
        (1, "not a JSON object (got array)"),
        (2, "not a JSON object (got array)"),
    ]


def test_invalid_utf8_becomes_error_with_its_raw_bytes_kept_exactly():
    items = read_bytes(ndjson(IDENTIFY) + b'{"name": "caf\xe9"}\n' + ndjson(TRACK))
    assert events(items) == [(1, IDENTIFY), (2, None), (3, TRACK)]
    assert items[1].error == "invalid UTF-8: byte 0xe9 at column 14"
    assert items[1].raw.encode("utf-8", "surrogateescape") == b'{"name": "caf\xe9"}'


def test_non_array_element_of_a_json_array_becomes_error_at_its_position():
    items = read_bytes(b'[{"a": 1}, 7, {"b": 2}]')
    assert [(item.line, item.event, item.error) for item in items] == [
        (1, {"a": 1}, None),
        (2, None, "not a JSON object (got number)"),
        (3, {"b": 2}, None),
    ]
    assert items[1].raw == "7"


def test_truncated_array_is_one_error_at_line_1():
    items = read_bytes(b'[\n  {"a": 1},\n  {"b": 2')
    assert len(items) == 1
    assert items[0].line == 1
    assert items[0].event is None
    assert items[0].error == "invalid JSON: expecting ',' delimiter at line 3 column 10"


def test_truncated_pretty_object_is_one_error_at_line_1():
    items = read_bytes(b'{\n  "type": "identify",\n')
    assert [(item.line, item.event) for item in items] == [(1, None)]
    assert items[0].error.startswith("invalid JSON: ")


def test_ndjson_whose_first_line_is_cut_short_still_reads_the_rest():
    items = read_bytes(b'{"type": "identify"\n' + ndjson(TRACK, IDENTIFY))
    assert events(items) == [(1, None), (2, TRACK), (3, IDENTIFY)]
    assert items[0].error == "invalid JSON: expecting ',' delimiter at column 20"


def test_integers_beyond_64_bits_are_read_exactly():
    big = 123456789012345678901234567890
    data = (
        b'{"id": 123456789012345678901234567890, "neg": -9223372036854775809,'
        b' "max": 18446744073709551615}\n'
    )
    assert read_bytes(data)[0].event == {"id": big, "neg": -(2**63) - 1, "max": 2**64 - 1}


def test_long_digit_runs_in_strings_do_not_change_the_value():
    event = {"id": "12345678901234567890123", "n": 1.5}
    assert read_bytes(ndjson(event))[0].event == event


@pytest.mark.parametrize(
    "line, error",
    [
        (b'{"a": NaN}', "invalid JSON: NaN is not a JSON number"),
        (b'{"a": -Infinity}', "invalid JSON: -Infinity is not a JSON number"),
        (b'{"a": 1e400}', "invalid JSON: number out of range: 1e400"),
        (b'{"a": "\\ud800"}', "invalid JSON: lone UTF-16 surrogate escape in a string"),
        (b'{"a": "x', "invalid JSON: unterminated string starting at column 7"),
    ],
)
def test_values_json_does_not_allow_become_errors(line, error):
    assert [item.error for item in read_bytes(ndjson(IDENTIFY) + line + b"\n")] == [None, error]


def test_deeply_nested_line_becomes_error_not_exception():
    items = read_bytes(ndjson(IDENTIFY) + b'{"a":' + b"[" * 100_000 + b"\n" + ndjson(TRACK))
    assert events(items) == [(1, IDENTIFY), (2, None), (3, TRACK)]
    assert items[1].error.startswith("invalid JSON:")


def test_nesting_up_to_the_limit_reads_and_deeper_is_invalid_with_the_rest_read_on():
    from ctcli.events.sources import MAX_DEPTH

    deepest = {"a": json.loads("[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1))}
    too_deep = '{"a":' * 1000 + "1" + "}" * 1000  # orjson takes it; recursion would not
    items = read_bytes(
        ndjson(IDENTIFY) + json.dumps(deepest).encode() + b"\n" + too_deep.encode() + b"\n"
        + ndjson(TRACK)
    )  # fmt: skip
    assert items[1].event == deepest
    assert items[2].event is None and items[2].error == f"nested more than {MAX_DEPTH} levels deep"
    assert items[2].raw == too_deep
    assert items[3].event == TRACK


def test_a_too_deep_item_of_a_json_array_is_invalid_alone():
    deep = {"a": json.loads("[" * 200 + "]" * 200)}
    items = read_bytes(json.dumps([IDENTIFY, deep, TRACK]).encode())
    assert [item.error is None for item in items] == [True, False, True]
    assert "nested more than" in items[1].error and items[1].line == 2


# --- --failed lines -------------------------------------------------------------------------


def failed_line(event: object, action: str | None = "upload", status: str = "failed") -> dict:
    return {
        "event": event,
        "source": "events.ndjson",
        "line": 7,
        "action": action,
        "status": status,
        "code": 500,
        "error": "boom",
    }


def test_failed_line_with_object_event_yields_that_event_and_action():
    items = read_bytes(ndjson(IDENTIFY, failed_line(TRACK, "delete")))
    assert events(items) == [(1, IDENTIFY), (2, TRACK)]
    assert [item.only_action for item in items] == [None, "delete"]
    assert items[1].source == "-"


def test_failed_line_with_string_event_is_parsed_again():
    items = read_bytes(ndjson(failed_line(orjson.dumps(TRACK).decode(), None, "invalid")))
    assert events(items) == [(1, TRACK)]
    assert items[0].only_action is None


def test_failed_line_with_bad_string_event_stays_an_error_with_that_raw_text():
    items = read_bytes(ndjson(failed_line("{broken", None, "invalid")))
    assert events(items) == [(1, None)]
    assert items[0].raw == "{broken"
    assert items[0].error.startswith("invalid JSON:")


def test_failed_line_with_string_event_that_is_not_an_object_is_an_error():
    items = read_bytes(ndjson(failed_line("[1]", "upload", "invalid")))
    assert [(item.error, item.raw, item.only_action) for item in items] == [
        ("not a JSON object (got array)", "[1]", "upload")
    ]


def test_failed_lines_in_a_json_array_are_unwrapped_too():
    items = read_bytes(orjson.dumps([failed_line(IDENTIFY), failed_line(TRACK, "delete")]))
    assert [(item.line, item.event, item.only_action) for item in items] == [
        (1, IDENTIFY, "upload"),
        (2, TRACK, "delete"),
    ]


def test_object_with_other_status_is_an_ordinary_event():
    event = {"type": "track", "status": "failed", "event": "x"}
    assert events(read_bytes(ndjson(event))) == [(1, event)]


# --- resume ---------------------------------------------------------------------------------

RESUME_DATA = ndjson(IDENTIFY) + b"\n" + b"bad\r\n" + ndjson(TRACK, [1]) + orjson.dumps(IDENTIFY)


@pytest.mark.parametrize("how", ["plain", "gzip", "stdin"])
def test_resume_from_any_end_offset_equals_the_tail_of_a_full_read(tmp_path, how):
    path = write(tmp_path, "r.ndjson", RESUME_DATA, compress=how == "gzip")

    def read(**kwargs: int) -> list[InputItem]:
        if how == "stdin":
            return read_bytes(RESUME_DATA, **kwargs)
        return list(read_source(path, **kwargs))

    full = read()
    assert len(full) == 5
    for index, item in enumerate(full):
        assert read(start_offset=item.end_offset, start_line=item.line) == full[index + 1 :]


def test_resume_past_the_end_yields_nothing(tmp_path):
    path = write(tmp_path, "r.ndjson", ndjson(IDENTIFY))
    assert list(read_source(path, start_offset=10_000, start_line=1)) == []


# --- files that cannot be read --------------------------------------------------------------


def test_missing_file_is_an_input_error_naming_it(tmp_path):
    path = str(tmp_path / "x.ndjson")
    with pytest.raises(InputError) as info:
        read_source(path)
    assert str(info.value) == f"cannot read {path!r}: No such file or directory"


def test_directory_is_an_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match=r"cannot read .*: Is a directory"):
        read_source(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_an_input_error(tmp_path):
    path = write(tmp_path, "secret.ndjson", ndjson(IDENTIFY))
    os.chmod(path, 0)
    with pytest.raises(InputError, match="Permission denied"):
        read_source(path)


def test_read_sources_checks_every_file_before_reading_any(tmp_path):
    good = write(tmp_path, "a.ndjson", ndjson(IDENTIFY))
    missing = str(tmp_path / "missing.ndjson")
    with pytest.raises(InputError, match=r"missing\.ndjson"):
        read_sources([good, missing])
    with pytest.raises(InputError, match="Is a directory"):
        read_sources([good, str(tmp_path)])


def test_truncated_gzip_yields_what_it_can_then_raises_input_error(tmp_path):
    data = gzip.compress(ndjson(*[IDENTIFY] * 2000), compresslevel=0)
    path = write(tmp_path, "cut.gz", data[: len(data) // 2])
    items = []
    with pytest.raises(InputError, match=r"cannot read .*cut\.gz"):
        items.extend(read_source(path))
    assert items
    assert all(item.event == IDENTIFY for item in items)


# --- properties -----------------------------------------------------------------------------

LINE_BYTES = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b" ", b"\r", b"\t \r", b"{}", b"[]", b"{", b"null", b'"\xff"']),
    st.builds(
        lambda obj: json.dumps(obj).encode(), st.dictionaries(st.text(max_size=5), st.integers())
    ),
).map(lambda line: line.replace(b"\n", b""))


@PROPERTIES
@given(lines=st.lists(LINE_BYTES, max_size=30), trailing_newline=st.booleans())
def test_arbitrary_lines_never_raise_and_yield_one_item_per_non_blank_line(lines, trailing_newline):
    # "batch" could turn a line into an envelope of several items.
    assume(not any(b"batch" in line for line in lines))
    # A first line that is an event keeps the input NDJSON whatever follows.
    lines = [orjson.dumps(IDENTIFY), *lines]
    data = b"\n".join(lines) + (b"\n" if trailing_newline else b"")
    items = read_bytes(data)
    ends = [len(b"\n".join(lines[:number])) + 1 for number in range(1, len(lines) + 1)]
    ends[-1] = len(data)
    expected = [(number, ends[number - 1]) for number, line in enumerate(lines, 1) if line.strip()]
    assert [(item.line, item.end_offset) for item in items] == expected
    assert all((item.event is None) != (item.error is None) for item in items)


@PROPERTIES
@given(data=st.one_of(st.binary(max_size=200), st.lists(LINE_BYTES).map(b"\n".join)))
def test_any_input_at_all_never_raises_and_numbers_items_within_the_input(data):
    # Bytes opening with the gzip magic are a corrupt gzip file: an InputError, not content.
    assume(not data.startswith(b"\x1f\x8b"))
    items = read_bytes(data)
    assert all((item.event is None) != (item.error is None) for item in items)
    assert all(item.line >= 1 for item in items)
    # Items of NDJSON lines (those with an offset) carry line numbers within the input.
    lines = data.count(b"\n") + 1
    assert all(item.line <= lines for item in items if item.end_offset and b"batch" not in data)


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
# Top-level "batch" or "status" keys could make an object an envelope or a --failed line.
EVENT_OBJECTS = st.dictionaries(
    st.text().filter(lambda key: key not in ("batch", "status")), JSON_VALUES, max_size=6
)


@PROPERTIES
@given(
    objects=st.lists(EVENT_OBJECTS, max_size=10),
    ascii_only=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_json_objects_written_as_ndjson_read_back_equal_with_line_numbers(
    objects, ascii_only, newline
):
    text = "".join(json.dumps(obj, ensure_ascii=ascii_only) + newline for obj in objects)
    items = read_bytes(text.encode())
    assert events(items) == list(enumerate(objects, 1))


# --- memory ---------------------------------------------------------------------------------

PEAK_RSS_SCRIPT = textwrap.dedent(
    """
    import resource, sys, orjson
    from ctcli.events.sources import read_source

    path, count = sys.argv[1], int(sys.argv[2])
    with open(path, "wb") as out:
        for i in range(count):
            out.write(orjson.dumps({
                "type": "identify", "userId": f"user-{i}", "messageId": f"msg-{i:012d}",
                "anonymousId": "3f1c2a9e-8b7d-4e5f-9a0b-1c2d3e4f5a6b",
                "timestamp": "2024-05-06T07:08:09.123Z",
                "traits": {"email": f"user{i}@example.com", "name": f"User {i}",
                           "phone": "+919876543210", "plan": "premium", "age": i % 90},
                "context": {"ip": "10.1.2.3", "library": {"name": "analytics.js"}},
            }) + b"\\n")
    seen = 0
    for item in read_source(path):
        seen += item.event is not None
    assert seen == count, seen
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def peak_rss_kib(tmp_path: Path, count: int) -> int:
    path = tmp_path / f"events-{count}.ndjson"
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(path), str(count)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.strip())


def test_streaming_ndjson_memory_does_not_grow_with_the_input(tmp_path):
    small = peak_rss_kib(tmp_path, 30_000)
    large = peak_rss_kib(tmp_path, 300_000)
    assert large - small < 15 * 1024
