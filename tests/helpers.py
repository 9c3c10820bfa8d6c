"""Helpers the test files share: the CLI in this process, its NDJSON, and a sandbox process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from ctcli.cli.app import app
from ctcli.cli.environment import Environment

CTCLI = [sys.executable, "-m", "ctcli"]  # ctcli as a real process

# --- ctcli in this process ---------------------------------------------------------------------


def invoke(
    *args: str, input: str | bytes | None = None, environment: Environment | None = None
) -> Result:
    """Run the ctcli command line in this process; an exception escaping it fails the test.

    `environment`: what the command is told of its streams (e.g. that stdin is a terminal).
    """
    return CliRunner().invoke(app, list(args), input=input, obj=environment, catch_exceptions=False)


def rows_of(result: Result) -> list[dict[str, Any]]:
    """The rows a run wrote to stdout as NDJSON (blank lines skipped)."""
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def write_ndjson(path: Path, events: list[Any]) -> str:
    """Write one line per event (an event that is a str is written as it is); the path, as str."""
    lines = [event if isinstance(event, str) else json.dumps(event) for event in events]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def error_lines(stderr: str) -> list[str]:
    """The error lines of a run (with -o ndjson the summary also goes to stderr)."""
    return [line for line in stderr.splitlines() if "error" in line.lower()]


def one_error_line(stderr: str) -> str:
    """The one line on stderr, which must be a `ctcli: error: ...` line."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ctcli: error: "), stderr
    return lines[0]


# --- `ctcli sandbox` as a real process ---------------------------------------------------------

SANDBOX_START_TIMEOUT = 30  # seconds: a sandbox that never starts fails, not hangs
SANDBOX_STOP_TIMEOUT = 15  # seconds: then it is killed


@dataclass
class SandboxProcess:
    url: str
    process: subprocess.Popen[str]


@contextmanager
def running_sandbox_process(passcode: str | None = None) -> Iterator[SandboxProcess]:
    """`python -m ctcli sandbox --port 0` in a subprocess, stopped with SIGINT after.

    No CTCLI_* variable of this environment reaches it, so it accepts the default credentials
    (sandbox / sandbox), or `passcode` (as CTCLI_SANDBOX_PASSCODE) when one is given. After the
    block, `process.returncode` is how it ended (negative: killed, having not stopped in time).
    """
    env = {name: value for name, value in os.environ.items() if not name.startswith("CTCLI_")}
    if passcode is not None:
        env["CTCLI_SANDBOX_PASSCODE"] = passcode
    process = subprocess.Popen(
        [*CTCLI, "sandbox", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        watchdog = threading.Timer(SANDBOX_START_TIMEOUT, process.kill)
        watchdog.start()
        try:
            first = process.stdout.readline()
        finally:
            watchdog.cancel()
        assert first.startswith("CleverTap sandbox listening on http://127.0.0.1:"), first
        yield SandboxProcess(first.split()[-1], process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.communicate(timeout=SANDBOX_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
