"""The account ends as the input says: per-identity order on the wire, at full concurrency.

Every test here drives the real command line against the loopback sandbox over real sockets,
with a random delay per request (`jitter`) so that requests overtake each other, and checks the
profiles the sandbox holds against the input applied in order. The model applies, in input
order, exactly the events ctcli reported `ok`: events reported `failed` are in the failed file,
and an event that was reported `ok` but applied out of order would leave a different profile.
The sandbox also counts requests that named an identity another request in flight named, or
one identity twice: both must stay at zero.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ctcli.delivery.client
from ctcli.cli.app import app
from ctcli.sandbox import Sandbox
from tests.helpers import invoke, rows_of, write_ndjson

SAMPLE = Path(__file__).resolve().parents[2] / "sample_events" / "events.ndjson"
LONG_EMAIL = "x" * 250 + "@example.com"  # ctcli sends it, the sandbox refuses it (515)
BASE_TS = 1_700_000_000


@dataclass(frozen=True)
class _QuickBackoff(ctcli.delivery.client.ClientSettings):
    backoff_base: float = 0.002
    backoff_cap: float = 0.05


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch):
    monkeypatch.setattr(ctcli.delivery.client, "ClientSettings", _QuickBackoff)


def identify(user: str, n: int, **traits: Any) -> dict[str, Any]:
    stamp = BASE_TS + n
    return {"type": "identify", "userId": user, "timestamp": stamp, "traits": traits}


def delete(user: str, n: int) -> dict[str, Any]:
    return {"type": "track", "event": "Delete User", "userId": user, "timestamp": BASE_TS + n}


def churn(count: int, users: int, *, seed: int, bad: int = 0) -> list[dict[str, Any]]:
    """Many updates per identity: plain values, $incr, deletes, re-identifies after deletes."""
    rng = random.Random(seed)
    names = [f"u{n}" for n in range(users)] + [f"bad-{n}" for n in range(bad)]
    events = []
    for n in range(count):
        user = rng.choice(names)
        roll = rng.random()
        if roll < 0.08:
            events.append(delete(user, n))
        elif roll < 0.25:
            events.append(identify(user, n, visits={"$incr": rng.randint(1, 3)}))
        else:
            traits = {"plan": f"p{n}"}
            if rng.random() < 0.5:
                traits[f"k{rng.randint(0, 4)}"] = n
            events.append(identify(user, n, **traits))
    return events


def apply_in_order(events: list[dict[str, Any]], ok_lines: set[int]) -> dict[str, Any]:
    """What CleverTap holds after the `ok` events, applied one by one in input order."""
    profiles: dict[str, dict[str, Any]] = {}
    for line, event in enumerate(events, start=1):
        if line not in ok_lines:
            continue
        user = str(event["userId"])
        if event["type"] == "track":
            profiles.pop(user, None)
            continue
        profile = profiles.setdefault(user, {"profileData": {}, "ts": event["timestamp"]})
        profile["ts"] = event["timestamp"]
        data = profile["profileData"]
        for key, value in event["traits"].items():
            if isinstance(value, dict):
                data[key] = data.get(key, 0) + value["$incr"]
            else:
                data[key] = value
    return profiles


def replay(path: str, *options: str):
    result = invoke("replay", "-o", "ndjson", *options, path)
    assert result.exit_code in (0, 1), result.stderr
    return result


def assert_account_is_input_in_order(
    live: Sandbox, events: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> None:
    assert sorted(row["line"] for row in rows) == list(range(1, len(events) + 1))
    ok = {row["line"] for row in rows if row["status"] == "ok"}
    assert live.profiles() == apply_in_order(events, ok)
    stats = live.stats()
    assert stats["identity_overlaps"] == 0, "two requests in flight named one identity"
    assert stats["repeated_identities"] == 0, "one request named an identity twice"


@pytest.mark.parametrize("concurrency", [1, 4, 15])
def test_the_account_holds_the_input_applied_in_order_despite_delays_retries_and_splits(
    live, tmp_path, concurrency
):
    events = churn(3000, 60, seed=concurrency, bad=2)
    path = write_ndjson(tmp_path / "churn.ndjson", events)
    live.set_faults(jitter=0.01, fail_every=7, fail_status=503, bad_batch_marker="bad-")

    result = replay(
        path, "--concurrency", str(concurrency), "--batch-size", "40", "--max-retries", "8"
    )

    rows = rows_of(result)
    assert_account_is_input_in_order(live, events, rows)
    stats = live.stats()
    assert stats["status_counts"].get(503, 0) > 0 and stats["status_counts"].get(400, 0) > 0
    by_line = {row["line"]: row for row in rows}
    for line, event in enumerate(events, start=1):
        row = by_line[line]
        if event["type"] == "identify" and event["userId"].startswith("bad-"):
            assert row["status"] == "failed" and row["code"] in (400, 503)
        elif row["status"] != "ok":
            # A 503 to a body holding $incr is not retried (it may have been applied);
            # everything else is retried until it lands.
            assert row["action"] == "upload" and "$incr" in row["error"], row


def test_deletes_then_re_identifies_and_the_reverse_end_as_the_input_says(live, tmp_path):
    events = [
        identify("a", 1, plan="old"),
        delete("a", 2),
        identify("a", 3, plan="new"),  # re-created after its delete, with only this
        delete("b", 4),
        identify("b", 5, plan="kept"),
        identify("c", 6, plan="gone"),
        delete("c", 7),
        identify("d", 8, plan="one"),
        identify("d", 9, seats=3),
        delete("d", 10),
        delete("d", 11),
    ] * 1  # one of each
    path = write_ndjson(tmp_path / "flip.ndjson", events)
    live.set_faults(jitter=0.03)

    rows = rows_of(replay(path, "--concurrency", "15"))

    assert all(row["status"] == "ok" for row in rows)
    assert_account_is_input_in_order(live, events, rows)
    assert live.profiles()["a"]["profileData"] == {"plan": "new"}
    assert set(live.profiles()) == {"a", "b"}


@pytest.mark.parametrize("concurrency", [4, 15])
def test_concurrency_stays_in_use_when_identities_repeat(live, tmp_path, concurrency):
    events = churn(30_000, 400, seed=99)
    path = write_ndjson(tmp_path / "repeats.ndjson", events)
    live.set_faults(latency=0.02, jitter=0.02)

    result = replay(path, "--concurrency", str(concurrency))

    rows = rows_of(result)
    assert all(row["status"] == "ok" for row in rows)
    assert_account_is_input_in_order(live, events, rows)
    assert live.stats()["max_in_flight_seen"] == concurrency


def test_the_sample_files_deleted_user_stays_deleted_in_every_one_of_50_replays(live):
    for _ in range(50):
        live.reset()
        live.set_faults(jitter=0.02)
        result = invoke("replay", "-o", "ndjson", "--concurrency", "15", str(SAMPLE))
        assert result.exit_code == 0, result.stderr
        assert "user-1002" not in live.profiles()
        assert "user-1001" in live.profiles()


def test_updates_of_one_identity_in_one_batch_are_merged_into_one_exact_record(live, tmp_path):
    events = [
        identify("m", 1, plan="a", seats=1),
        identify("m", 2, plan="b"),
        identify("m", 3, region="eu"),
    ]
    path = write_ndjson(tmp_path / "merge.ndjson", events)

    rows = rows_of(replay(path))

    assert [row["status"] for row in rows] == ["ok"] * 3
    assert live.stats()["batch_sizes"] == [1]
    assert live.profiles()["m"] == {
        "profileData": {"plan": "b", "seats": 1, "region": "eu"},
        "ts": BASE_TS + 3,
    }


def test_a_refused_merged_record_is_taken_apart_so_each_event_gets_its_own_answer(live, tmp_path):
    events = [
        identify("m", 1, plan="a"),
        identify("m", 2, email=LONG_EMAIL),
        identify("m", 3, seats=2),
    ]
    path = write_ndjson(tmp_path / "apart.ndjson", events)

    rows = rows_of(replay(path))

    assert [(row["status"], row["code"]) for row in rows] == [
        ("ok", None),
        ("failed", 515),
        ("ok", None),
    ]
    assert_account_is_input_in_order(live, events, rows)


def test_operators_are_never_merged_and_keep_their_order(live, tmp_path):
    events = [identify("n", i, visits={"$incr": 1}) for i in range(1, 6)]
    events.insert(2, identify("n", 50, visits=100))  # a plain value between increments
    path = write_ndjson(tmp_path / "ops.ndjson", events)
    live.set_faults(jitter=0.01)

    rows = rows_of(replay(path, "--concurrency", "15"))

    assert all(row["status"] == "ok" for row in rows)
    assert live.profiles()["n"]["profileData"] == {"visits": 103}
    assert live.stats()["upload_requests"] == 6


# -- failures that later deliveries supersede ---------------------------------------------


def fail_an_upload_then_delete_it(live: Sandbox, tmp_path: Path) -> tuple[str, Path]:
    """A run where x's upload is refused (503, no retries) and x's later delete delivered."""
    events = [
        identify("z", 1, plan="z"),
        identify("x", 2, plan="old"),  # the 2nd request: refused with 503
        delete("x", 3),
    ]
    path = write_ndjson(tmp_path / "in.ndjson", events)
    failed = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=2, fail_status=503)
    replay(path, "--concurrency", "1", "--batch-size", "1", "--max-retries", "0",
           "--failed", str(failed))  # fmt: skip
    live.clear_faults()
    return path, failed


def failed_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_superseded_failure_says_so_and_its_re_drive_does_not_roll_the_profile_back(
    live, tmp_path
):
    events = [
        identify("z", 1, plan="z"),
        identify("x", 2, plan="old", seats=1),  # the 2nd request: refused with 503
        identify("x", 3, plan="new"),
    ]
    path = write_ndjson(tmp_path / "in.ndjson", events)
    failed = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=2, fail_status=503)

    result = replay(
        path, "--concurrency", "1", "--batch-size", "1", "--max-retries", "0",
        "--failed", str(failed),
    )  # fmt: skip

    assert [row["status"] for row in rows_of(result)] == ["ok", "failed", "ok"]
    failure, marker = failed_lines(failed)
    assert failure["line"] == 2 and failure["identity"] == "x"
    assert marker["status"] == "superseded" and marker["identity"] == "x"
    assert marker["superseded_by"] == {
        "source": path,
        "line": 3,
        "action": "upload",
        "keys": ["plan"],
    }

    live.clear_faults()
    again = replay(str(failed), "--failed", str(tmp_path / "failed-again.ndjson"))

    assert again.exit_code == 0, again.stderr
    (redriven,) = rows_of(again)
    assert redriven["status"] == "ok"  # seats was never set later: it is sent, plan is not
    assert live.profiles()["x"]["profileData"] == {"plan": "new", "seats": 1}
    assert live.profiles()["x"]["ts"] == BASE_TS + 3  # the re-drive sends no older ts


def test_a_failure_superseded_by_a_later_delete_is_not_re_created(live, tmp_path):
    path, failed = fail_an_upload_then_delete_it(live, tmp_path)
    sent_before = live.stats()["upload_requests"]

    again = replay(str(failed), "-o", "json")

    document = json.loads(again.stdout)
    (row,) = document["results"]
    assert row["status"] == "superseded"
    assert f"{path} line 3" in row["error"]
    assert document["summary"]["superseded"] == 1 and again.exit_code == 0
    assert "x" not in live.profiles()
    assert live.stats()["upload_requests"] == sent_before


def test_a_later_run_that_delivers_the_identity_supersedes_an_older_failure(live, tmp_path):
    failed = tmp_path / "failed.ndjson"
    first = write_ndjson(tmp_path / "night-1.ndjson", [identify("x", 1, plan="old")])
    live.set_faults(fail_every=1, fail_status=503)
    replay(first, "--max-retries", "0", "--failed", str(failed))
    live.clear_faults()
    second = write_ndjson(tmp_path / "night-2.ndjson", [identify("x", 2, plan="new")])
    replay(second, "--failed", str(failed))

    failure, marker = failed_lines(failed)
    assert failure["source"] == first and marker["superseded_by"]["source"] == second

    again = replay(str(failed))
    (row,) = rows_of(again)
    assert row["status"] == "superseded"
    assert live.profiles()["x"]["profileData"] == {"plan": "new"}


def test_a_failed_line_with_no_later_delivery_is_re_driven_whole(live, tmp_path):
    path = write_ndjson(tmp_path / "in.ndjson", [identify("y", 1, plan="only")])
    failed = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=1, fail_status=503)
    replay(path, "--max-retries", "0", "--failed", str(failed))
    live.clear_faults()

    (row,) = rows_of(replay(str(failed)))

    assert row["status"] == "ok"
    assert live.profiles()["y"] == {"profileData": {"plan": "only"}, "ts": BASE_TS + 1}


def test_a_failed_file_piped_to_stdin_is_read_to_its_end_before_anything_is_re_sent(live, tmp_path):
    _path, failed = fail_an_upload_then_delete_it(live, tmp_path)

    again = CliRunner().invoke(app, ["replay", "-o", "ndjson", "-"], input=failed.read_bytes())

    (row,) = rows_of(again)
    assert row["status"] == "superseded" and row["source"] == "-"
    assert "x" not in live.profiles()
