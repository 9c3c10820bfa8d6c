"""Escape sequences in events, file names and answers are shown on a terminal, never obeyed."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ctcli.cli.report import JsonReporter, NdjsonReporter, TableReporter, escape_controls
from ctcli.delivery.pipeline import Summary
from ctcli.models import InputItem, Result, Status

ROOT = Path(__file__).resolve().parents[2]

CONTROLS = [chr(code) for code in [*range(0x00, 0x20), *range(0x7F, 0xA0)]]
UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")

# Every code point, lone surrogates included (a file name's undecodable bytes become those),
# with the control characters drawn often enough to meet each other and ordinary text.
EVERY_CODE_POINT = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
ANY_CHARACTER = st.one_of(EVERY_CODE_POINT, st.sampled_from([*CONTROLS, "\ud800", "\udc9b"]))
SAFE_CHARACTER = EVERY_CODE_POINT.filter(lambda char: not UNSAFE.match(char))
ESCAPE = re.compile(r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|[ntr])")


# --- escape_controls ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\x1b]0;pwned\x07b", "a\\x1b]0;pwned\\x07b"),  # OSC: set the window title
        ("\x1b[2J", "\\x1b[2J"),  # CSI: clear the screen
        ("x\x9b2Jy", "x\\x9b2Jy"),  # C1 CSI
        ("ring\x07", "ring\\x07"),
        ("del\x7f", "del\\x7f"),
        ("two\nlines\tand\rback", "two\\nlines\\tand\\rback"),
        ("bad\udcffname", "bad\\udcffname"),  # an undecodable byte of a file name
    ],
)
def test_control_characters_become_visible_escapes(raw, shown):
    assert escape_controls(raw) == shown


def test_text_without_controls_comes_back_as_the_same_object():
    text = "user-12 Émilie 日本 😀"
    assert escape_controls(text) is text


def test_every_control_character_becomes_a_printable_backslash_escape():
    for char in [*CONTROLS, "\ud800", "\udfff"]:
        shown = escape_controls(char)
        assert shown.startswith("\\") and shown.isascii() and shown.isprintable(), repr(char)


@given(st.text(alphabet=ANY_CHARACTER))
def test_the_result_never_holds_a_c0_c1_del_or_surrogate_character(text):
    assert not UNSAFE.search(escape_controls(text))


@given(st.text(alphabet=SAFE_CHARACTER))
def test_printable_text_and_any_other_text_free_of_controls_is_unchanged(text):
    assert escape_controls(text) == text  # e.g. NBSP or an emoji's zero-width joiner too


@given(st.text(alphabet=ANY_CHARACTER.filter(lambda char: char != "\\")))
def test_only_the_control_characters_change(text):
    # (a literal backslash in the input may look like an escape: that text is left out here)
    assert ESCAPE.sub("", escape_controls(text)) == UNSAFE.sub("", text)


# --- the reporters -------------------------------------------------------------------------


def _result(**fields) -> Result:
    values = dict(
        source="in.ndjson",
        line=1,
        type="track",
        event="Signed Up",
        action="upload",
        identity="user-1",
        status=Status.FAILED,
        code=None,
        error=None,
    )
    values.update(fields)
    return Result(**values)


HOSTILE = [
    _result(source="e\x1b[5m.ndjson", identity="osc\x1b]0;pwned\x07id"),
    _result(line=2, event="Clear\x1b[2J", identity="c1\x9bid", status=Status.INVALID),
    _result(line=3, identity="two\nlines\ttab", error="CleverTap: \x1b]8;;http://x\x07link\x9b"),
]


def _item(result: Result) -> InputItem:
    return InputItem(source=result.source, line=result.line, event={})


def test_table_cells_from_input_and_answers_are_escaped_one_row_each(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # wide enough that no cell folds
    out = io.StringIO()
    reporter = TableReporter(out, io.StringIO(), show="all")
    for result in HOSTILE:
        reporter(_item(result), [result])
    reporter.finish(Summary(events=len(HOSTILE), failed=2, invalid=1))
    printed = out.getvalue()

    assert not UNSAFE.search(printed.replace("\n", ""))
    rows = [line for line in printed.splitlines() if line.startswith("│")]
    assert len(rows) == len(HOSTILE)  # a newline in an identity does not start a new row
    for shown in [
        "e\\x1b[5m.ndjson:1",
        "osc\\x1b]0;pwned\\x07id",
        "track Clear\\x1b[2J",
        "c1\\x9bid",
        "two\\nlines\\ttab",
        "CleverTap: \\x1b]8;;http://x\\x07link\\x9b",
    ]:
        assert shown in printed


def test_ndjson_output_keeps_the_data_byte_exact():
    out = io.BytesIO()
    reporter = NdjsonReporter(out, io.StringIO())
    for result in HOSTILE:
        reporter(_item(result), [result])
    reporter.finish(Summary(events=len(HOSTILE)))
    expected = b"".join(
        orjson.dumps(r.to_dict(), option=orjson.OPT_APPEND_NEWLINE) for r in HOSTILE
    )
    assert out.getvalue() == expected
    assert [json.loads(line)["identity"] for line in out.getvalue().splitlines()] == [
        r.identity for r in HOSTILE
    ]


def test_json_output_keeps_the_data_exact():
    out = io.BytesIO()
    reporter = JsonReporter(out)
    for result in HOSTILE:
        reporter(_item(result), [result])
    reporter.finish(Summary(events=len(HOSTILE)))
    assert json.loads(out.getvalue())["results"] == [r.to_dict() for r in HOSTILE]


# --- a real terminal -----------------------------------------------------------------------

# What rich itself writes to a terminal with NO_COLOR: styles, hiding the cursor while the
# progress bar runs, and erasing that bar. Any other escape sequence came from the data.
RICH_OWN = re.compile(r"\x1b\[(?:[0-9;]*m|\?25[lh]|2K|[0-9]*A)")

EVENTS = [
    {"type": "identify", "userId": "osc\x1b]0;pwned\x07id", "traits": {"Phone": "\x9b2J"}},
    {"type": "identify", "userId": "csi\x1b[2Jid", "traits": {"Email": "m\x1b]0;t\x07"}},
    {"type": "identify", "userId": "c1\x9bn\nt\tid", "traits": {"name": "\x1b]0;title\x07"}},
    {"type": "track", "event": "Bell\x07\x7fEv", "userId": "u-4", "properties": {}},
]


def _run_in_a_terminal(args: list[str], cwd: Path) -> bytes:
    """Run ctcli with stdout and stderr on a pseudo-terminal; everything it wrote there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLEVERTAP_", "CTCLI_"))
    }
    env.update(
        COLUMNS="120",
        LINES="40",
        TERM="xterm",
        NO_COLOR="1",
        PYTHONPATH=str(ROOT),
        CTCLI_CONFIG=str(cwd / "config.toml"),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ctcli", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None and not select.select([master], [], [], 0)[0]:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the process has exited and every byte was read
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    assert process.returncode == 1, bytes(received)  # the invalid events make it exit 1
    return bytes(received)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
@pytest.mark.parametrize("command", ["replay", "upload"])
def test_a_terminal_sees_the_data_s_escape_sequences_but_never_obeys_them(command, tmp_path):
    name = "e\x1b[5m.ndjson"  # a file name can carry escape sequences too
    (tmp_path / name).write_text("".join(json.dumps(event) + "\n" for event in EVENTS))

    received = _run_in_a_terminal([command, "--dry-run", "-o", "table", name], tmp_path)
    shown = received.decode("utf-8")

    assert "events:" in shown  # the summary came: everything was read
    assert b"\x1b]" not in received  # no OSC (window title, hyperlinks)
    assert b"\x1b[2J" not in received and b"\x1b[5m" not in received
    assert b"\x07" not in received and b"\x7f" not in received
    assert not any(0x80 <= ord(char) <= 0x9F for char in shown)  # no C1 (UTF-8 c2 9b)
    assert "\x1b" not in RICH_OWN.sub("", shown)  # every ESC left is rich's own
    for visible in [
        "e\\x1b[5m.ndjson:1",
        "osc\\x1b]0;pwned\\x07id",
        "Phone '\\x9b2J'",
        "csi\\x1b[2Jid",
        "c1\\x9bn\\nt\\tid",
        "Bell\\x07\\x7fEv",
    ]:
        assert visible in shown, visible
