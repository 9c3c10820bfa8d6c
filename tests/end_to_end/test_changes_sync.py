"""Nightly snapshots with --changes: only what changed is sent, what vanished is deleted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ctcli.sandbox import Sandbox
from tests.conftest import SANDBOX_PASSCODE, SANDBOX_PROJECT_ID
from tests.helpers import invoke, rows_of

ROWS = 1000


@pytest.fixture
def recording(env, monkeypatch) -> Iterator[Sandbox]:
    with Sandbox(
        project_id=SANDBOX_PROJECT_ID, passcode=SANDBOX_PASSCODE, keep_records=True
    ) as sandbox:
        monkeypatch.setenv("CLEVERTAP_ENDPOINT", sandbox.url)
        monkeypatch.setenv("CLEVERTAP_PROJECT_ID", SANDBOX_PROJECT_ID)
        monkeypatch.setenv("CLEVERTAP_PASSCODE", SANDBOX_PASSCODE)
        yield sandbox


def snapshot(path: Path, users: dict[str, dict]) -> str:
    lines = [
        json.dumps({"type": "identify", "userId": user, "traits": traits})
        for user, traits in users.items()
    ]
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def night(path: str, db: Path, *extra: str):
    return invoke("upload", "-o", "ndjson", "--changes", str(db), *extra, path)


def users() -> dict[str, dict]:
    return {
        f"u{n:04d}": {"plan": "free", "logins": n, "city": f"c{n % 7}", "email": f"u{n}@x.io"}
        for n in range(ROWS)
    }


def applied(users: dict[str, dict]) -> dict[str, dict]:
    """What CleverTap holds once the snapshot is applied: its traits as profile keys."""
    return {
        user: {"plan": t["plan"], "logins": t["logins"], "city": t["city"], "Email": t["email"]}
        for user, t in users.items()
    }


def held(sandbox: Sandbox) -> dict[str, dict]:
    return {user: profile["profileData"] for user, profile in sandbox.profiles().items()}


@pytest.mark.parametrize("workers", [False, True], ids=["one process", "parse workers"])
def test_the_second_night_sends_exactly_the_changed_attributes_and_deletes_the_vanished(
    recording, tmp_path, monkeypatch, workers
):
    import ctcli.events.workers

    monkeypatch.setattr(ctcli.events.workers, "MIN_FILE_BYTES", 0 if workers else 1 << 60)
    db = tmp_path / "changes.db"
    today = users()
    first = night(snapshot(tmp_path / "day1.ndjson", today), db)
    assert first.exit_code == 0
    assert len(recording.records()) == ROWS  # the first night sends everything
    assert held(recording) == applied(today)

    changed = {f"u{n:04d}" for n in range(0, ROWS, 100)}  # 1%
    for user in changed:
        today[user] = {**today[user], "plan": "pro"}
    del today["u0555"]  # 0.1%
    second = night(
        snapshot(tmp_path / "day2.ndjson", today), db, "--delete-missing", "--max-deletes", "5"
    )
    assert second.exit_code == 0, second.stderr
    sent = recording.records()[ROWS:]
    assert sorted(record["identity"] for record in sent) == sorted(changed)
    assert all(record["profileData"] == {"plan": "pro"} for record in sent)
    assert recording.deleted() == ["u0555"]
    assert held(recording) == applied(today)  # the account is the snapshot, applied
    rows = rows_of(second)
    statuses = [row["status"] for row in rows]
    assert statuses.count("unchanged") == ROWS - 1 - len(changed)
    assert statuses.count("ok") == len(changed) + 1  # the changes and the delete
    summary = json.loads(second.stderr.strip().splitlines()[-1])["summary"]
    assert summary["unchanged"] == ROWS - 1 - len(changed)

    uploads = recording.stats()["upload_requests"]
    third = night(snapshot(tmp_path / "day3.ndjson", today), db)
    assert third.exit_code == 0
    assert recording.stats()["upload_requests"] == uploads  # nothing changed: nothing sent


def test_a_row_clevertap_refused_is_sent_again_the_next_night(recording, tmp_path):
    db = tmp_path / "changes.db"
    today = users()
    path = snapshot(tmp_path / "day.ndjson", today)
    recording.set_faults(fail_every=1, fail_status=503)
    first = night(path, db, "--max-retries", "0", "--batch-size", "100")
    assert first.exit_code == 1
    recording.clear_faults()
    recording.reset()
    second = night(path, db)
    assert second.exit_code == 0
    assert len(recording.records()) == ROWS  # nothing was remembered from the failed night


def test_too_many_missing_identities_delete_nothing(recording, tmp_path):
    db = tmp_path / "changes.db"
    today = users()
    assert night(snapshot(tmp_path / "day1.ndjson", today), db).exit_code == 0
    half = dict(list(today.items())[: ROWS // 2])
    result = night(snapshot(tmp_path / "day2.ndjson", half), db, "--delete-missing")
    assert result.exit_code == 2
    assert "would delete 500 profiles" in result.stderr and "nothing deleted" in result.stderr
    assert recording.deleted() == []


def test_the_changes_command_shows_what_the_database_knows(recording, tmp_path):
    db = tmp_path / "changes.db"
    assert night(snapshot(tmp_path / "day1.ndjson", users()), db).exit_code == 0
    overview = invoke("changes", str(db))
    assert overview.exit_code == 0
    assert f"{db}: 1,000 identities" in overview.stdout
    assert "last run 1: " in overview.stdout and "(complete)" in overview.stdout
    one = invoke("changes", str(db), "--identity", "u0042")
    assert one.exit_code == 0 and one.stdout.startswith("u0042: 4 attributes")
    assert "u42@x.io" not in one.stdout  # fingerprints, never values
    unknown = invoke("changes", str(db), "--identity", "nobody")
    assert unknown.exit_code == 0 and "not known" in unknown.stdout


def test_a_run_killed_mid_way_then_run_again_leaves_the_account_equal_to_the_snapshot(
    recording, tmp_path
):
    import os
    import signal
    import subprocess

    from tests.helpers import CTCLI

    db = tmp_path / "changes.db"
    today = users()
    path = snapshot(tmp_path / "day.ndjson", today)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))},
        "CTCLI_CONFIG": str(tmp_path / "none.toml"),
        "CLEVERTAP_ENDPOINT": recording.url,
        "CLEVERTAP_PROJECT_ID": SANDBOX_PROJECT_ID,
        "CLEVERTAP_PASSCODE": SANDBOX_PASSCODE,
    }
    argv = [*CTCLI, "upload", "-o", "ndjson", "--changes", str(db), "--batch-size", "100",
            "--concurrency", "1", "--timeout", "60", path]  # fmt: skip
    recording.set_faults(stall_request=4)  # the 4th request waits: the run is mid-way
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert recording.wait_held(1, timeout=60), "the run never got to its 4th request"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    recording.clear_faults()
    recording.release()
    assert 0 < len(recording.profiles()) < ROWS  # killed part way
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert held(recording) == applied(today)


def test_a_row_that_turned_invalid_is_not_taken_for_a_missing_one(recording, tmp_path):
    db = tmp_path / "changes.db"
    today = users()
    assert night(snapshot(tmp_path / "day1.ndjson", today), db).exit_code == 0
    today["u0007"] = {**today["u0007"], "phone": "555"}  # refused before sending: invalid
    result = night(snapshot(tmp_path / "day2.ndjson", today), db, "--delete-missing")
    assert result.exit_code == 1  # the invalid row
    assert recording.deleted() == []  # it is in the snapshot: its profile stays


@pytest.mark.parametrize(("answer", "deleted"), [("n\n", []), ("y\n", ["u0555"])])
def test_on_a_terminal_delete_missing_asks_first(recording, tmp_path, answer, deleted):
    from ctcli.cli.environment import Environment

    db = tmp_path / "changes.db"
    today = users()
    assert night(snapshot(tmp_path / "day1.ndjson", today), db).exit_code == 0
    del today["u0555"]
    result = invoke(
        "upload", "-o", "ndjson", "--changes", str(db), "--delete-missing",
        snapshot(tmp_path / "day2.ndjson", today),
        input=answer, environment=Environment(stdin_isatty=True),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "Delete 1 profiles that this snapshot no longer has?" in result.stderr
    assert recording.deleted() == deleted
