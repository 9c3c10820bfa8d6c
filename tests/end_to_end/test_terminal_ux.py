"""What a person sees at a real terminal (a pseudo-terminal of a given size)."""

from __future__ import annotations

import fcntl
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

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")


def on_a_terminal(
    args: list[str], cwd: Path, *, columns: int, stdout_file: Path | None = None
) -> tuple[int, str]:
    """Run ctcli with stderr (and stdout, unless `stdout_file`) on a terminal `columns` wide."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))}
    env.pop("COLUMNS", None)  # the terminal's own size, as a user's shell has it
    env.update(TERM="xterm-256color", CTCLI_CONFIG=str(cwd / "config.toml"))
    out = open(stdout_file, "wb") if stdout_file else None  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "ctcli", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out or slave,
        stderr=slave,
    )
    os.close(slave)
    received = bytearray()
    deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if process.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        os.close(master)
        if out:
            out.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    return process.returncode, received.decode("utf-8", "replace")


def screen_lines(raw: str) -> list[str]:
    """The lines a terminal shows, each progress frame (ended by a carriage return) apart."""
    text = ANSI.sub("", raw).replace("\r\n", "\n").replace("\r", "\n")
    return [line.rstrip() for line in text.split("\n")]


def write_events(path: Path, count: int, bad_every: int) -> Path:
    with path.open("w") as handle:
        for n in range(1, count + 1):
            traits = {"phone": f"55{n}"} if n % bad_every == 0 else {"plan": "pro"}
            event = {"type": "identify", "userId": f"user-{n}", "traits": traits}
            handle.write(json.dumps(event) + "\n")
    return path


def test_the_table_fits_80_columns_names_the_file_once_and_drops_empty_columns(tmp_path):
    source = write_events(tmp_path / "a-rather-long-export-file-name.ndjson", 30, 3)
    status, raw = on_a_terminal(["upload", "--dry-run", source.name], tmp_path, columns=80)
    assert status == 1
    lines = screen_lines(raw)
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert lines.count(f"{source.name}:") == 1  # named once, above the table, whole
    rows = [line for line in lines if line.startswith("│")]
    assert sum(bool(re.match(r"│ \d+ +│", row)) for row in rows) == 30  # one per event
    assert not any(source.name in row for row in rows)
    header = next(line for line in lines if "status" in line and "identity" in line)
    assert "code" not in header and "line" in header and "error" in header
    assert any("user-3" in line and "invalid" in line for line in lines)
    assert any(line.startswith("30 events: 10 invalid, 20 dry-run") for line in lines)
    assert any("10 invalid: Phone ... is not" in line for line in lines)  # the reason breakdown


def test_a_run_writing_results_to_a_file_shows_progress_with_eta_and_failures(tmp_path):
    source = write_events(tmp_path / "big.ndjson", 150_000, 7)
    results = tmp_path / "results.ndjson"
    args = ["upload", "--dry-run", "-o", "ndjson", str(source)]
    status, raw = on_a_terminal(args, tmp_path, columns=100, stdout_file=results)
    assert status == 1
    frames = [ANSI.sub("", frame) for frame in raw.split("\r")]
    progress = [frame for frame in frames if " eta " in frame and " invalid" in frame]
    assert progress, raw[-2000:]
    counted = [re.search(r"([\d,]+) invalid", frame) for frame in progress]
    assert any(match and int(match.group(1).replace(",", "")) > 0 for match in counted)
    assert all(len(frame.rstrip()) <= 100 for frame in progress)
    assert sum(1 for _ in results.open()) == 150_000  # every result went to the file


def test_a_back_off_is_shown_above_the_progress_line_with_why_and_how_long(tmp_path):
    from ctcli.sandbox import Sandbox

    source = write_events(tmp_path / "in.ndjson", 50, 1000)
    with Sandbox(project_id="ACC", passcode="pw") as sandbox:
        sandbox.set_faults(fail_every=2, fail_status=503)
        (tmp_path / "config.toml").write_text(
            f'[profiles.default]\nproject_id = "ACC"\npasscode = "pw"\nendpoint = "{sandbox.url}"\n'
        )
        (tmp_path / "config.toml").chmod(0o600)
        args = ["upload", "-o", "ndjson", "--batch-size", "10", str(source)]
        status, raw = on_a_terminal(args, tmp_path, columns=100, stdout_file=tmp_path / "out")
    assert status == 0
    lines = screen_lines(raw)
    backoffs = [line for line in lines if line.startswith("ctcli: backing off ")]
    pattern = r"ctcli: backing off \d+\.\d s \(retry \d/5\): HTTP 503 Service Unavailable"
    assert backoffs and all(re.fullmatch(pattern, line) for line in backoffs)


def test_a_terminal_lists_a_screenful_of_failures_then_says_how_to_see_all(tmp_path):
    source = write_events(tmp_path / "many.ndjson", 3000, 2)  # 1,500 invalid
    status, raw = on_a_terminal(["upload", "--dry-run", source.name], tmp_path, columns=100)
    assert status == 1
    lines = screen_lines(raw)
    rows = [line for line in lines if re.match(r"│ \d+ +│", line)]
    assert 10 <= len(rows) <= 40 - 12  # a screenful of a 40-line terminal
    hidden = f"{1500 - len(rows):,} more failed and invalid events not listed: --show failed"
    assert any(hidden in line for line in lines)
    assert any(line.startswith("  1,500 invalid: Phone ... is not") for line in lines)
