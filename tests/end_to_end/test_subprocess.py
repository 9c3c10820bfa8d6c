"""Real ctcli processes against a real `ctcli sandbox` process: exit codes, pipes, streaming."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CTCLI, running_sandbox_process

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox_process():
    """The URL of a sandbox process with the default credentials; it must stop cleanly after."""
    with running_sandbox_process() as running:
        yield running.url
    assert running.process.returncode == 0


@pytest.fixture
def env(sandbox_process, tmp_path):
    values = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CLEVERTAP_", "CTCLI_"))
    }
    values.update(
        CTCLI_CONFIG=str(tmp_path / "config.toml"),
        CLEVERTAP_ENDPOINT=sandbox_process,
        CLEVERTAP_PROJECT_ID="sandbox",
        CLEVERTAP_PASSCODE="sandbox",
    )
    return values


def ctcli(env, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CTCLI, *args], env=env, input=input, capture_output=True, text=True, timeout=60
    )


def identify(user: str) -> str:
    return json.dumps({"type": "identify", "userId": user, "traits": {"name": user}})


def test_exit_0_when_everything_lands(env):
    done = ctcli(env, "replay", str(ROOT / "sample_events" / "events.ndjson"))
    assert done.returncode == 0, done.stderr
    assert {json.loads(line)["status"] for line in done.stdout.splitlines()} == {"ok", "skipped"}


def test_exit_1_with_invalid_events_and_the_rest_processed(env):
    done = ctcli(env, "replay", str(ROOT / "sample_events" / "malformed.ndjson"))
    assert done.returncode == 1
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["status"] for row in rows] == [
        "ok",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
    ]
    assert "Traceback" not in done.stderr


def test_exit_2_for_an_unreadable_file_with_one_line(env):
    done = ctcli(env, "upload", "missing.ndjson")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "missing.ndjson" in done.stderr


def test_exit_3_when_the_passcode_is_wrong(env):
    done = ctcli({**env, "CLEVERTAP_PASSCODE": "wrong"}, "upload", input=identify("x1") + "\n")
    assert done.returncode == 3
    assert json.loads(done.stdout)["error"] == "credentials refused"


def test_ndjson_is_the_default_when_stdout_is_a_pipe(env):
    done = ctcli(env, "upload", "--dry-run", input=identify("p1") + "\n")
    assert json.loads(done.stdout)["status"] == "dry-run"
    assert json.loads(done.stderr.splitlines()[-1])["summary"]["dry-run"] == 1


def test_results_stream_before_a_slow_producer_ends_its_input(env):
    """A result must come out while ctcli is still waiting for the next line of stdin."""
    process = subprocess.Popen(
        [*CTCLI, "replay", "-"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.stdin.write(identify("slow-1") + "\n")
        process.stdin.flush()
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout=20)
        assert ready, "no result while the producer was still running"
        first = json.loads(process.stdout.readline())
        assert first["identity"] == "slow-1" and first["status"] == "ok"
        assert process.poll() is None  # still running: the input has not ended
        rest, _ = process.communicate(input=identify("slow-2") + "\n", timeout=20)
        assert json.loads(rest)["identity"] == "slow-2"
        assert process.returncode == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_head_closing_the_pipe_early_is_not_an_error(env, tmp_path):
    source = tmp_path / "many.ndjson"
    source.write_text("".join(identify(f"h{n}") + "\n" for n in range(5000)))
    done = subprocess.run(
        f"{sys.executable} -m ctcli upload --dry-run {source} | head -n 3; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert len(done.stdout.splitlines()) == 3
    assert done.returncode == 0, done.stderr  # every event was still processed: dry-run
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
