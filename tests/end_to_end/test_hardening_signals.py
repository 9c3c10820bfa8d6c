"""Slow servers, stalled batches and signals, with real processes over real sockets.

Each ctcli run is a `python -m ctcli` process talking to a `Sandbox` served from this test
process on loopback. Waits are bounded guards against a hang, never timing assertions: what is
asserted is what the sandbox received, what ctcli printed and its exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ctcli.sandbox import Sandbox

PROJECT_ID, PASSCODE = "SIG-ACC", "sig-passcode"
GUARD = 60  # seconds: the longest any wait here may take before the test fails as hung


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(project_id=PROJECT_ID, passcode=PASSCODE) as running:
        yield running


def environment(sandbox: Sandbox, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))}
    env.update(
        CLEVERTAP_ENDPOINT=sandbox.url,
        CLEVERTAP_PROJECT_ID=PROJECT_ID,
        CLEVERTAP_PASSCODE=PASSCODE,
        CTCLI_CONFIG=str(tmp_path / "no-config.toml"),
    )
    return env


def write_events(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for number in range(1, count + 1):
            event = {"type": "identify", "userId": f"user-{number}", "traits": {"n": number}}
            out.write(json.dumps(event) + "\n")
    return path


def start(args: list[str], env: dict[str, str], tmp_path: Path, name: str) -> subprocess.Popen:
    out = (tmp_path / f"{name}.out").open("wb")
    err = (tmp_path / f"{name}.err").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "ctcli", *args], env=env, stdout=out, stderr=err,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def results(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / f"{name}.out").read_text().splitlines()]


def stderr_of(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"{name}.err").read_text()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def wait_until_steady(read: Callable[[], int], quiet: float = 1.0) -> int:
    """Wait until `read()` stops changing for `quiet` seconds; its last value."""
    deadline = time.monotonic() + GUARD
    last, since = read(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError("the count never settled")
        time.sleep(0.05)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
    return last


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


def finish(process: subprocess.Popen) -> int:
    try:
        return process.wait(timeout=GUARD)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# -- --timeout bounds a whole request ---------------------------------------------------------


def test_a_server_dripping_its_answer_cannot_hold_a_request_past_the_timeout(sandbox, tmp_path):
    events = write_events(tmp_path / "one.ndjson", 1)
    sandbox.set_faults(drip=0.5)  # a 60-byte answer takes 30 s; every byte resets a read timeout

    process = start(
        ["upload", "-o", "ndjson", "--timeout", "1", "--max-retries", "0", str(events)],
        environment(sandbox, tmp_path), tmp_path, "drip",
    )  # fmt: skip

    assert finish(process) == 5  # not one answer in the run: CleverTap counts as unreachable
    (row,) = results(tmp_path, "drip")
    assert row["status"] == "failed"
    assert "no answer within 1 s" in row["error"]


def test_sigterm_against_a_dripping_server_exits_130_within_the_request_timeout(sandbox, tmp_path):
    events = write_events(tmp_path / "few.ndjson", 20)
    failed = tmp_path / "failed.ndjson"
    sandbox.set_faults(drip=0.5)
    process = start(
        ["upload", "-o", "ndjson", "--timeout", "3", "--max-retries", "5",
         "--failed", str(failed), str(events)],
        environment(sandbox, tmp_path), tmp_path, "term",
    )  # fmt: skip
    wait_for(lambda: sandbox.stats()["requests"] >= 1, "the request to reach the server")

    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert finish(process) == 130
    took = time.monotonic() - stopped

    rows = results(tmp_path, "term")
    assert len(rows) == 20 and all(row["status"] == "failed" for row in rows)
    assert "not retried: ctcli was stopped" in rows[0]["error"]
    assert len(failed.read_text().splitlines()) == 20
    print(f"SIGTERM to exit against the dripping server: {took:.2f} s")


# -- one stalled batch: bounded reading, bounded re-sends --------------------------------------


def test_a_stalled_batch_stops_reading_and_a_kill_then_re_sends_about_what_was_in_flight(
    sandbox, tmp_path
):
    count, batch, concurrency = 30_000, 100, 4
    bound = (2 * 2 * concurrency + 2) * batch  # events ctcli holds unreported, at most
    events = write_events(tmp_path / "big.ndjson", count)
    state = tmp_path / "big.state"
    env = environment(sandbox, tmp_path)
    sandbox.set_faults(stall_request=3)
    args = ["upload", "-o", "ndjson", "--batch-size", str(batch), "--concurrency",
            str(concurrency), "--state", str(state), str(events)]  # fmt: skip

    first = start(args, env, tmp_path, "stalled")
    sandbox.wait_held(1, timeout=GUARD)
    accepted = wait_until_steady(lambda: sandbox.stats()["records_processed"])
    first.kill()
    first.wait(timeout=GUARD)

    assert accepted <= bound, f"read and sent {accepted} events behind one stalled batch"
    sandbox.clear_faults()
    before = sandbox.stats()["records_processed"]
    second = start(args, env, tmp_path, "resumed")
    assert finish(second) == 0, stderr_of(tmp_path, "resumed")

    sent_again = sandbox.stats()["records_processed"] - before - (count - accepted)
    assert sandbox.profile_count() == count
    assert 0 <= sent_again <= bound
    print(f"accepted before the kill: {accepted}; re-sent after it: {sent_again}")


# -- exit 130 from the first line to the last ------------------------------------------------


def test_sigterm_once_all_input_is_read_and_requests_are_out_exits_130(sandbox, tmp_path):
    events = write_events(tmp_path / "small.ndjson", 50)
    failed = tmp_path / "failed.ndjson"
    sandbox.set_faults(hold=True)
    process = start(
        ["upload", "-o", "ndjson", "--failed", str(failed), str(events)],
        environment(sandbox, tmp_path), tmp_path, "held",
    )  # fmt: skip
    assert sandbox.wait_held(1, timeout=GUARD)

    process.send_signal(signal.SIGTERM)
    time.sleep(0.2)  # let the signal land while the request is still held
    sandbox.clear_faults()

    assert finish(process) == 130
    rows = results(tmp_path, "held")
    assert len(rows) == 50 and all(row["status"] == "ok" for row in rows)


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03, 0.06])
def test_sigterm_while_ctcli_is_still_starting_exits_130(sandbox, tmp_path, delay):
    events = write_events(tmp_path / "start.ndjson", 5)
    process = start(
        ["upload", "-o", "ndjson", str(events)], environment(sandbox, tmp_path), tmp_path, "early"
    )
    wait_for(lambda: catches_sigterm(process.pid), "ctcli to handle SIGTERM")
    time.sleep(delay)

    process.send_signal(signal.SIGTERM)

    assert finish(process) == 130, stderr_of(tmp_path, "early")


def test_a_killed_run_leaves_no_worker_holding_its_state_lock(sandbox, tmp_path):
    events = write_events(tmp_path / "worked.ndjson", 3000)
    state = tmp_path / "worked.state"
    env = {**environment(sandbox, tmp_path), "CTCLI_WORKERS": "1"}  # parse in a worker process
    args = ["upload", "-o", "ndjson", "--batch-size", "100", "--state", str(state), str(events)]
    sandbox.set_faults(stall_request=1)
    first = start(args, env, tmp_path, "killed")
    assert sandbox.wait_held(1, timeout=GUARD)

    first.kill()
    first.wait(timeout=GUARD)
    sandbox.clear_faults()
    second = start(args, env, tmp_path, "next")

    assert finish(second) == 0, stderr_of(tmp_path, "next")  # not "in use by another run"
    assert sandbox.profile_count() == 3000
