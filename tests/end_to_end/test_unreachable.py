"""When nothing can be delivered: one message, an early stop, exit 5, every event kept."""

from __future__ import annotations

import json
import socket
import subprocess

from tests.helpers import CTCLI

RUN_TIMEOUT = 120  # a guard against a hang, never a timing assertion


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def test_a_refused_endpoint_stops_the_run_and_keeps_every_event(tmp_path):
    source = tmp_path / "in.ndjson"
    events = [{"type": "identify", "userId": f"u{n}", "traits": {"n": n}} for n in range(5000)]
    source.write_text("".join(json.dumps(event) + "\n" for event in events))
    failed = tmp_path / "failed.ndjson"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CTCLI_CONFIG": str(tmp_path / "none.toml"),
        "CLEVERTAP_PROJECT_ID": "ACC",
        "CLEVERTAP_PASSCODE": "sentinel-passcode-unreachable",
        "CLEVERTAP_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
    }
    argv = [*CTCLI, "upload", str(source), "-o", "ndjson", "--failed", str(failed)]
    argv += ["--batch-size", "100", "--max-retries", "1"]
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert run.returncode == 5, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    errors = [line for line in run.stderr.splitlines() if line.startswith("ctcli: error:")]
    assert (
        len(errors) == 1 and "cannot reach" in errors[0] and "CleverTap never answered" in errors[0]
    )
    assert {row["error"].removeprefix("not sent: ") for row in rows} == {
        errors[0].removeprefix("ctcli: error: ").split(": CleverTap never answered")[0]
    }
    assert "Traceback" not in run.stderr and "sentinel-passcode" not in run.stderr + run.stdout
    summary = json.loads(run.stderr.strip().splitlines()[-2])["summary"]
    assert summary["failed"] == 5000 and summary["ok"] == 0
    # It stopped early: a few requests (those in flight when it knew), not one per batch.
    assert summary["requests"] < 50 * 2
    assert len(rows) == 5000 and {row["status"] for row in rows} == {"failed"}
    kept = [json.loads(line) for line in failed.read_text().splitlines()]
    assert sorted(line["line"] for line in kept) == list(range(1, 5001))
    assert "sentinel-passcode" not in failed.read_text()


def test_once_the_endpoint_has_answered_a_lost_request_fails_only_its_batch(live, tmp_path):
    from tests.helpers import invoke, rows_of

    live.set_faults(drop_every=2)  # the 2nd, 4th, ... requests get no answer at all
    source = tmp_path / "in.ndjson"
    events = [{"type": "identify", "userId": f"u{n}", "traits": {"n": n}} for n in range(40)]
    source.write_text("".join(json.dumps(event) + "\n" for event in events))
    args = ["--batch-size", "10", "--concurrency", "1", "--max-retries", "0"]
    result = invoke("upload", str(source), "-o", "ndjson", *args)
    assert result.exit_code == 1  # some records failed: not "unreachable" (5)
    statuses = [row["status"] for row in rows_of(result)]
    assert statuses.count("ok") == 20 and statuses.count("failed") == 20
    assert "never answered" not in result.stderr
