"""Nothing is lost: faults injected into the sandbox, real sockets, every event accounted for.

Each test drives the real command line (Typer's CliRunner, or a `python -m ctcli` process where a
real SIGTERM is needed) or `ctcli.job.execute` against a `Sandbox` on loopback, switches faults on
with `Sandbox.set_faults`, and then checks the three ledgers against each other: the results (one
per event, by source and line), the sandbox's profiles and counters, and the --failed file (every
event that is not `ok`, exactly once). Re-driving the failed file after the faults are cleared must
leave behind only the records that are refused on their own merits.

Retry backoff is shortened (the CLI does not expose it) so retry storms take milliseconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import ctcli.delivery.client
import ctcli.delivery.pipeline
import ctcli.job
from ctcli.cli.exits import exit_status_of_run
from ctcli.errors import ExitStatus
from ctcli.job import RunSettings, execute
from ctcli.models import InputItem, Result
from ctcli.sandbox import Sandbox
from tests.helpers import invoke, rows_of

PROJECT_ID, PASSCODE = "TEST-ACC", "test-passcode"  # what the conftest sandbox accepts

EVENTS = 20_000
# ctcli's Email check has no overall length limit (only the 512-byte value limit), the sandbox
# refuses addresses over 254 characters (RFC 5321) with per-record code 515.
LONG_EMAIL = "x" * 250 + "@example.com"
BROKEN_LINE = '{"type": "identify", "userId": "half-a-line"'


@dataclass(frozen=True)
class _QuickBackoff(ctcli.delivery.client.ClientSettings):
    backoff_base: float = 0.005
    backoff_cap: float = 0.2


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    """Every client built by a run backs off for milliseconds, not half-seconds."""
    monkeypatch.setattr(ctcli.delivery.client, "ClientSettings", _QuickBackoff)


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Input:
    """An input file and what should become of each of its lines."""

    path: str
    events: dict[int, Any]  # line -> original event (dict) or raw text (str)
    good: dict[int, str]  # line -> identity CleverTap accepts
    refused: dict[int, str]  # line -> identity the sandbox refuses per record (code 515)
    invalid: set[int]  # lines ctcli refuses before sending

    @property
    def lines(self) -> set[int]:
        return set(self.events)


def identify(user_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id, "traits": {"name": user_id, **traits}}


def write_input(
    path: Path, count: int, *, refused_every: int = 0, invalid_every: int = 0, broken: bool = False
) -> Input:
    """`count` identify events, user-1..user-N, with a share the sandbox or ctcli refuses."""
    spec = Input(str(path), {}, {}, {}, set())
    texts: list[str] = []
    for number in range(1, count + 1):
        user_id = f"user-{number}"
        line = len(texts) + 1
        if refused_every and number % refused_every == 0:
            event = identify(user_id, email=LONG_EMAIL)
            spec.refused[line] = user_id
        elif invalid_every and number % invalid_every == 1:
            event = identify(user_id, phone="12345")  # not +[country code][number]
            spec.invalid.add(line)
        else:
            event = identify(user_id, plan="pro", number=number)
            spec.good[line] = user_id
        spec.events[line] = event
        texts.append(json.dumps(event))
        if broken and number == count // 2:
            texts.append(BROKEN_LINE)
            spec.events[len(texts)] = BROKEN_LINE
            spec.invalid.add(len(texts))
    path.write_text("".join(text + "\n" for text in texts))
    return spec


def summary_of(result) -> dict[str, Any]:
    for line in reversed(result.stderr.splitlines()):
        if line.startswith('{"summary"'):
            return json.loads(line)["summary"]
    raise AssertionError(f"no summary on stderr: {result.stderr!r}")


def read_failed(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_line(rows: list[dict[str, Any]], source: str) -> dict[int, dict[str, Any]]:
    """The one row of each line; fails on a second row for any (source, line)."""
    counts = Counter((row["source"], row["line"]) for row in rows)
    repeated = {key: n for key, n in counts.items() if n != 1}
    assert not repeated, f"events with more than one result: {sorted(repeated)[:5]}"
    assert {row["source"] for row in rows} <= {source}
    return {row["line"]: row for row in rows}


def assert_failed_file_holds_every_non_ok_once(
    failed: list[dict[str, Any]], rows: dict[int, dict[str, Any]], spec: Input
) -> None:
    counts = Counter((entry["source"], entry["line"]) for entry in failed)
    assert all(n == 1 for n in counts.values()), "an event is in the failed file twice"
    not_ok = {line for line, row in rows.items() if row["status"] != "ok"}
    assert {entry["line"] for entry in failed} == not_ok
    for entry in failed:
        row = rows[entry["line"]]
        assert (entry["status"], entry["code"], entry["error"]) == (
            row["status"],
            row["code"],
            row["error"],
        )
        assert entry["source"] == spec.path
        assert entry["event"] == spec.events[entry["line"]]  # the original, to re-drive


def assert_redrive_leaves_only_genuine_refusals(
    sandbox: Sandbox, failed_path: Path, tmp_path: Path, spec: Input
) -> None:
    """replay the failed file with faults off: what remains is refused again, and only that."""
    sandbox.clear_faults()
    again = tmp_path / "failed-again.ndjson"
    result = invoke("replay", "-o", "ndjson", "--failed", str(again), str(failed_path))
    expected_exit = ExitStatus.EVENTS_FAILED if spec.refused or spec.invalid else ExitStatus.OK
    assert result.exit_code == expected_exit, result.stderr
    rows = by_line(rows_of(result), str(failed_path))
    first = read_failed(failed_path)
    assert len(rows) == len(first)

    assert set(sandbox.profiles()) == set(spec.good.values())
    left = read_failed(again)
    refused_events = [spec.events[line] for line in sorted(spec.refused)]
    invalid_events = [spec.events[line] for line in sorted(spec.invalid)]
    assert [e["event"] for e in left if e["status"] == "failed"] == refused_events
    assert [e["event"] for e in left if e["status"] == "invalid"] == invalid_events
    assert len(left) == len(spec.refused) + len(spec.invalid)
    for entry in left:
        if entry["status"] == "failed":
            assert entry["code"] == 515 and entry["error"].startswith("Email address invalid")
        elif entry["event"] == BROKEN_LINE:
            assert entry["code"] is None and "JSON" in entry["error"]
        else:
            assert entry["code"] is None and "Phone" in entry["error"]


# -- 1. retries and re-driving: nothing is lost ----------------------------------------------

TRANSIENT_FAULTS = {
    "every 3rd request 500": {"fail_every": 3, "fail_status": 500},
    "every 5th request 503": {"fail_every": 5, "fail_status": 503},
    "every 3rd request 429 with Retry-After": {
        "fail_every": 3,
        "fail_status": 429,
        "retry_after": 0.01,
    },
    "every 5th connection dropped": {"drop_every": 5},
    "503s, drops and latency together": {
        "fail_every": 5,
        "fail_status": 503,
        "drop_every": 7,
        "latency": 0.002,
    },
}


@pytest.mark.parametrize("faults", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
def test_transient_faults_are_retried_until_every_event_has_exactly_one_result(
    live, tmp_path, faults
):
    spec = write_input(
        tmp_path / "events.ndjson", EVENTS, refused_every=100, invalid_every=1000, broken=True
    )
    assert (len(spec.good), len(spec.refused), len(spec.invalid)) == (19_780, 200, 21)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(**faults)

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "200", "--concurrency", "4",
        "--max-retries", "10", "--timeout", "5", "--failed", str(failed_path), spec.path,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.EVENTS_FAILED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    assert set(rows) == spec.lines
    statuses = {line: row["status"] for line, row in rows.items()}
    assert statuses == {
        **{line: "ok" for line in spec.good},
        **{line: "failed" for line in spec.refused},
        **{line: "invalid" for line in spec.invalid},
    }
    assert {rows[line]["code"] for line in spec.refused} == {515}

    stats = live.stats()
    assert set(live.profiles()) == set(spec.good.values())
    # Every record sent was read by the sandbox exactly once: no loss, no double delivery.
    assert sum(stats["batch_sizes"]) == len(spec.good) + len(spec.refused)
    assert stats["records_unprocessed"] == len(spec.refused)

    summary = summary_of(result)
    assert summary["events"] == len(spec.lines)
    assert (summary["ok"], summary["failed"], summary["invalid"]) == (
        len(spec.good),
        len(spec.refused),
        len(spec.invalid),
    )
    assert stats["faults_injected"] > 0
    assert summary["retries"] == stats["faults_injected"]  # one retry per injected fault
    assert summary["requests"] == stats["requests"]

    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)
    assert_redrive_leaves_only_genuine_refusals(live, failed_path, tmp_path, spec)


def test_without_retries_faulted_batches_fail_into_the_failed_file_and_replay_lands_them(
    live, tmp_path
):
    spec = write_input(
        tmp_path / "events.ndjson", EVENTS, refused_every=100, invalid_every=1000, broken=True
    )
    assert (len(spec.good), len(spec.refused), len(spec.invalid)) == (19_780, 200, 21)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=3, fail_status=503, drop_every=7)

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "200", "--max-retries", "0",
        "--failed", str(failed_path), spec.path,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.EVENTS_FAILED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    assert set(rows) == spec.lines
    gave_up = {line: rows[line] for line in spec.good if rows[line]["status"] != "ok"}
    assert gave_up, "no batch was hit by a fault"
    assert {row["status"] for row in gave_up.values()} == {"failed"}
    assert {row["code"] for row in gave_up.values()} == {503, None}  # None: dropped
    assert all(row["error"].endswith("after 1 attempt") for row in gave_up.values())

    landed = {spec.good[line] for line in spec.good if line not in gave_up}
    assert set(live.profiles()) == landed
    summary = summary_of(result)
    assert summary["retries"] == 0
    assert summary["failed"] == len(gave_up) + sum(
        rows[line]["status"] == "failed" for line in spec.refused
    )

    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)
    assert_redrive_leaves_only_genuine_refusals(live, failed_path, tmp_path, spec)


# -- 2. concurrency and batch sizes ----------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3, 15])
def test_requests_in_flight_never_exceed_concurrency(live, tmp_path, concurrency):
    spec = write_input(tmp_path / "events.ndjson", 1500)
    live.set_faults(latency=0.01)

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "25", "--concurrency", str(concurrency),
        spec.path,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.OK, result.stderr
    stats = live.stats()
    assert 1 <= stats["max_in_flight_seen"] <= concurrency
    assert 429 not in stats["status_counts"]  # never over the sandbox's own ceiling of 15
    assert live.profile_count() == 1500


@dataclass(frozen=True)
class _NoLinger(ctcli.delivery.pipeline.PipelineOptions):
    linger_seconds: float = 3600.0


@pytest.mark.parametrize("batch_size", [None, 7, 1000])
def test_upload_requests_are_full_batches_but_the_last(live, tmp_path, monkeypatch, batch_size):
    # An open batch is sent after 0.5 s even if not full: a loaded machine may read that slowly.
    monkeypatch.setattr(ctcli.job, "PipelineOptions", _NoLinger)
    spec = write_input(tmp_path / "events.ndjson", 2500)
    option = ["--batch-size", str(batch_size)] if batch_size else []
    size = batch_size or 1000

    result = invoke("upload", "-o", "ndjson", *option, spec.path)

    assert result.exit_code == ExitStatus.OK, result.stderr
    sizes = live.stats()["batch_sizes"]  # in the order they arrived, not the order sent
    full, rest = divmod(2500, size)
    assert sorted(sizes, reverse=True) == [size] * full + ([rest] if rest else [])


def test_delete_requests_carry_at_most_100_identities(live, tmp_path):
    spec = write_input(tmp_path / "events.ndjson", 1050)

    result = invoke("delete", "--yes", "-o", "ndjson", "--batch-size", "1000", "--file", spec.path)

    assert result.exit_code == ExitStatus.OK, result.stderr
    stats = live.stats()
    assert max(stats["delete_sizes"]) <= 100
    assert sum(stats["delete_sizes"]) == 1050
    assert Counter(live.deleted()) == Counter(spec.good.values())


# -- 3. a whole-batch 400 is split until the bad record stands alone --------------------------


def write_marked_input(
    path: Path, count: int, marked: set[int], refused: frozenset[int] = frozenset()
) -> Input:
    """Identify events whose lines in `marked` have identities starting with BAD-.

    Lines in `refused` carry an Email the sandbox refuses per record (515).
    """
    spec = Input(str(path), {}, {}, {}, set())
    for line in range(1, count + 1):
        user_id = f"BAD-{line}" if line in marked else f"user-{line}"
        if line in refused:
            spec.events[line] = identify(user_id, email=LONG_EMAIL)
            spec.refused[line] = user_id
        else:
            spec.events[line] = identify(user_id)
            spec.good[line] = user_id
    path.write_text("".join(json.dumps(spec.events[n]) + "\n" for n in range(1, count + 1)))
    return spec


MARKED = {17, 600, 601, 1000}  # two of them side by side in one batch


def test_a_bad_record_in_a_refused_batch_fails_alone(live, tmp_path):
    spec = write_marked_input(tmp_path / "events.ndjson", 1000, MARKED)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(bad_batch_marker="BAD-")

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "250", "--failed", str(failed_path), spec.path
    )

    assert result.exit_code == ExitStatus.EVENTS_FAILED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    failed = {line: row for line, row in rows.items() if row["status"] != "ok"}
    assert set(failed) == MARKED
    assert {(row["status"], row["code"]) for row in failed.values()} == {("failed", 400)}
    assert set(live.profiles()) == {f"user-{n}" for n in range(1, 1001) if n not in MARKED}
    assert sorted(entry["line"] for entry in read_failed(failed_path)) == sorted(MARKED)


def test_per_record_refusals_inside_split_halves_are_pinned_to_their_own_records(live, tmp_path):
    # Record numbers in a 200 answer count from 1 in each half that was re-sent, not in the batch.
    refused = frozenset({3, 130, 201, 250})
    spec = write_marked_input(tmp_path / "events.ndjson", 250, {77}, refused)
    live.set_faults(bad_batch_marker="BAD-")

    result = invoke("upload", "-o", "ndjson", "--batch-size", "250", spec.path)

    assert result.exit_code == ExitStatus.EVENTS_FAILED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    not_ok = {
        line: (row["status"], row["code"]) for line, row in rows.items() if row["status"] != "ok"
    }
    assert not_ok == {77: ("failed", 400), **{line: ("failed", 515) for line in refused}}
    assert set(live.profiles()) == set(spec.good.values()) - {"BAD-77"}


def test_records_isolated_by_a_400_land_when_the_failed_file_is_replayed(live, tmp_path):
    spec = write_marked_input(tmp_path / "events.ndjson", 1000, MARKED)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(bad_batch_marker="BAD-")
    invoke("upload", "-o", "ndjson", "--batch-size", "250", "--failed", str(failed_path), spec.path)
    live.clear_faults()

    again = tmp_path / "failed-again.ndjson"
    result = invoke("replay", "-o", "ndjson", "--failed", str(again), str(failed_path))

    assert result.exit_code == ExitStatus.OK, result.stderr
    assert [row["status"] for row in rows_of(result)] == ["ok"] * len(MARKED)
    assert set(live.profiles()) == set(spec.good.values())
    assert read_failed(again) == []


# -- 4. refused credentials: exit 3, everything in the failed file ---------------------------


def test_wrong_passcode_exits_3_with_every_event_failed_into_the_failed_file(
    live, tmp_path, monkeypatch
):
    spec = write_input(tmp_path / "events.ndjson", 2000)
    failed_path = tmp_path / "failed.ndjson"
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "not-the-passcode")

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "100", "--concurrency", "4",
        "--failed", str(failed_path), spec.path,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.CREDENTIALS_REFUSED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    assert set(rows) == spec.lines
    assert {(row["status"], row["error"]) for row in rows.values()} == {
        ("failed", "credentials refused")
    }
    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)
    assert live.profile_count() == 0
    # Nothing more is sent once refused: at most the requests already on their way.
    assert live.stats()["status_counts"] == {401: live.stats()["requests"]}
    assert live.stats()["requests"] <= 4
    assert "not-the-passcode" not in result.stderr + result.stdout + failed_path.read_text()


def test_after_a_refused_passcode_replaying_the_failed_file_lands_every_event(
    live, tmp_path, monkeypatch
):
    spec = write_input(tmp_path / "events.ndjson", 2000)
    failed_path = tmp_path / "failed.ndjson"
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "not-the-passcode")
    invoke("upload", "-o", "ndjson", "--batch-size", "100", "--failed", str(failed_path), spec.path)
    monkeypatch.setenv("CLEVERTAP_PASSCODE", PASSCODE)

    again = tmp_path / "failed-again.ndjson"
    result = invoke("replay", "-o", "ndjson", "--failed", str(again), str(failed_path))

    assert result.exit_code == ExitStatus.OK, result.stderr
    assert len(rows_of(result)) == 2000
    assert set(live.profiles()) == set(spec.good.values())
    assert read_failed(again) == []


def test_credentials_refused_mid_run_fail_every_event_not_yet_accepted(live, tmp_path):
    spec = write_input(tmp_path / "events.ndjson", 2000)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=6, fail_status=401)  # the passcode is revoked at request 6

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "100", "--concurrency", "4",
        "--failed", str(failed_path), spec.path,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.CREDENTIALS_REFUSED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    assert set(rows) == spec.lines
    ok = {row["identity"] for row in rows.values() if row["status"] == "ok"}
    assert len(ok) >= 500  # the five batches before the refusal
    assert set(live.profiles()) == ok
    assert {(row["status"], row["error"]) for row in rows.values() if row["status"] != "ok"} == {
        ("failed", "credentials refused")
    }
    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)

    live.clear_faults()
    result = invoke("replay", "-o", "ndjson", str(failed_path))
    assert result.exit_code == ExitStatus.OK, result.stderr
    assert set(live.profiles()) == set(spec.good.values())


def test_records_accepted_before_a_401_during_a_batch_split_are_reported_ok(live, tmp_path):
    spec = write_marked_input(tmp_path / "events.ndjson", 4, {4})
    # Request 1: the whole batch, 400 for BAD-4; request 2: lines 1-2, accepted;
    # request 3: lines 3-4, 401.
    live.set_faults(bad_batch_marker="BAD-", fail_every=3, fail_status=401)

    result = invoke("upload", "-o", "ndjson", "--batch-size", "4", spec.path)

    assert result.exit_code == ExitStatus.CREDENTIALS_REFUSED, result.stderr
    assert set(live.profiles()) == {"user-1", "user-2"}
    statuses = {row["identity"]: row["status"] for row in rows_of(result)}
    assert statuses == {"user-1": "ok", "user-2": "ok", "user-3": "failed", "BAD-4": "failed"}


# -- retries that run out: by count, by total time, by timeouts ------------------------------


def test_retries_stop_at_the_total_time_budget_and_the_events_fail_into_the_failed_file(
    live, tmp_path, monkeypatch
):
    @dataclass(frozen=True)
    class ShortBudget(_QuickBackoff):
        max_total_seconds: float = 0.05

    monkeypatch.setattr(ctcli.delivery.client, "ClientSettings", ShortBudget)
    spec = write_input(tmp_path / "events.ndjson", 300)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=1, fail_status=503)

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "100", "--max-retries", "100",
        "--failed", str(failed_path), spec.path,
    )  # fmt: skip

    assert result.exit_code == ExitStatus.EVENTS_FAILED, result.stderr
    rows = by_line(rows_of(result), spec.path)
    assert {(row["status"], row["code"]) for row in rows.values()} == {("failed", 503)}
    assert all("HTTP 503 Service Unavailable after" in row["error"] for row in rows.values())
    assert summary_of(result)["requests"] < 3 * 101  # gave up long before 100 retries
    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)
    assert_redrive_leaves_only_genuine_refusals(live, failed_path, tmp_path, spec)


def test_requests_that_time_out_end_failed_and_replay_lands_them(live, tmp_path):
    spec = write_input(tmp_path / "events.ndjson", 200)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(latency=0.4)

    result = invoke(
        "upload", "-o", "ndjson", "--batch-size", "100", "--max-retries", "1",
        "--timeout", "0.1", "--failed", str(failed_path), spec.path,
    )  # fmt: skip

    # Not one answer in the whole run: CleverTap counts as unreachable (exit 5).
    assert result.exit_code == ExitStatus.UNREACHABLE, result.stderr
    rows = by_line(rows_of(result), spec.path)
    assert {(row["status"], row["code"]) for row in rows.values()} == {("failed", None)}
    assert all(
        row["error"].endswith("no answer within 0.1 s after 2 attempts") for row in rows.values()
    )
    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)
    assert_redrive_leaves_only_genuine_refusals(live, failed_path, tmp_path, spec)


def test_deletes_under_faults_reach_every_identity_exactly_once(live, tmp_path):
    spec = write_input(tmp_path / "events.ndjson", 1050)
    live.set_faults(fail_every=3, fail_status=500, drop_every=7)

    result = invoke("delete", "--yes", "-o", "ndjson", "--max-retries", "10", "--file", spec.path)

    assert result.exit_code == ExitStatus.OK, result.stderr
    assert len(by_line(rows_of(result), spec.path)) == 1050
    stats = live.stats()
    assert Counter(live.deleted()) == Counter(spec.good.values())
    assert max(stats["delete_sizes"]) <= 100
    assert summary_of(result)["retries"] == stats["faults_injected"] > 0


# -- 5. an interrupted run reports what it read, once ----------------------------------------
#
# The sandbox holds requests (the `hold` fault) until the run has been told to stop, so it is
# stopped mid-run however fast or slow the machine is. A held request must not time out and be
# sent again meanwhile: these runs wait up to 60 s for an answer.

WAIT = 60  # seconds: a guard against a hang, never a timing assertion


def test_interrupted_run_reports_every_event_it_read_exactly_once(live, tmp_path):
    spec = write_input(tmp_path / "events.ndjson", EVENTS)
    failed_path = tmp_path / "failed.ndjson"
    live.set_faults(hold=True)
    results: list[Result] = []
    stop = threading.Event()
    held: list[bool] = []

    def interrupt_while_requests_are_held() -> None:
        held.append(live.wait_held(2, timeout=WAIT))  # both workers wait for an answer
        stop.set()
        live.clear_faults()  # only now may the answers come

    def sink(item: InputItem, item_results) -> None:
        results.extend(item_results)

    interrupter = threading.Thread(target=interrupt_while_requests_are_held, daemon=True)
    interrupter.start()
    settings = RunSettings(
        mode="upload",
        inputs=[spec.path],
        failed_path=str(failed_path),
        batch_size=50,
        concurrency=2,
        timeout=WAIT,
        env={
            "CTCLI_CONFIG": str(tmp_path / "config.toml"),
            "CLEVERTAP_ENDPOINT": live.url,
            "CLEVERTAP_PROJECT_ID": PROJECT_ID,
            "CLEVERTAP_PASSCODE": PASSCODE,
        },
    )
    summary = execute(settings, sink=sink, stop=stop, warn=lambda message: None)
    interrupter.join(timeout=WAIT)

    assert held == [True]
    assert summary.interrupted
    assert exit_status_of_run(summary) == ExitStatus.INTERRUPTED == 130
    assert 0 < summary.events < EVENTS
    counts = Counter((result.source, result.line) for result in results)
    assert set(counts.values()) == {1}
    assert sorted(line for _, line in counts) == list(range(1, summary.events + 1))
    # Requests in flight were finished, not abandoned: everything read landed.
    assert summary.ok == summary.events
    assert set(live.profiles()) == {result.identity for result in results}
    assert read_failed(failed_path) == []


def test_sigterm_flushes_every_refused_event_to_the_failed_file_and_checkpoints_them(
    live, tmp_path
):
    total = 3000
    marked = set(range(50, total + 1, 100))  # one refused record in every batch of 100
    spec = write_marked_input(tmp_path / "events.ndjson", total, marked)
    failed_path, state_path = tmp_path / "failed.ndjson", tmp_path / "state.json"
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    common = ("-o", "ndjson", "--failed", str(failed_path), "--state", str(state_path))
    live.set_faults(bad_batch_marker="BAD-", hold=True)

    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "ctcli", "upload", spec.path, *common,
             "--batch-size", "100", "--concurrency", "2", "--timeout", str(WAIT)],
            cwd=tmp_path, env=dict(os.environ), stdin=subprocess.DEVNULL,
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        for _ in range(3):  # some batches, and the halves they are split into, are answered
            assert live.wait_held(1, timeout=WAIT), err.read_text()
            live.release()
        assert live.wait_held(1, timeout=WAIT), err.read_text()
        process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WAIT  # a guard against a hang, not an assertion
        while "stopping" not in err.read_text():  # the stop is set: now let the answers come
            assert process.poll() is None and time.monotonic() < deadline, err.read_text()
            time.sleep(0.01)
        live.set_faults(bad_batch_marker="BAD-")  # holding off, refusals on
        returncode = process.wait(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr_text = err.read_text()

    assert returncode == ExitStatus.INTERRUPTED == 130, stderr_text
    rows = by_line([json.loads(line) for line in out.read_text().splitlines()], spec.path)
    read = summary_of(SimpleNamespace(stderr=stderr_text))["events"]
    assert 0 < read < total
    assert set(rows) == set(range(1, read + 1))
    refused = {line for line in marked if line <= read}
    assert refused, "no refused record was read"
    assert {
        line: (row["status"], row["code"]) for line, row in rows.items() if row["status"] != "ok"
    } == {line: ("failed", 400) for line in refused}
    # Every failed event is in the failed file, those answered after the SIGTERM too.
    assert_failed_file_holds_every_non_ok_once(read_failed(failed_path), rows, spec)

    # The checkpoint passed every event the run read, as each is settled (ok, or failed and
    # written to the failed file), and nothing more: the next run sends exactly the rest.
    live.clear_faults()
    resumed = invoke("upload", spec.path, *common)
    assert resumed.exit_code == ExitStatus.OK, resumed.stderr
    assert f"resuming after line {read}" in resumed.stderr
    assert sorted(by_line(rows_of(resumed), spec.path)) == list(range(read + 1, total + 1))
    failed_identities = {entry["event"]["userId"] for entry in read_failed(failed_path)}
    assert failed_identities == {f"BAD-{line}" for line in refused}
    assert set(live.profiles()) == set(spec.good.values()) - failed_identities
