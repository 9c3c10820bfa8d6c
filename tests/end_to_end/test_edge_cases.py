"""Hostile inputs and environments: closed streams, pipes, FIFOs, signals, broken files."""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from ctcli.cli.app import app
from tests.helpers import CTCLI


def identify(user: str) -> str:
    return json.dumps({"type": "identify", "userId": user, "traits": {"name": user}})


@pytest.fixture
def clean_env(tmp_path) -> dict[str, str]:
    values = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))}
    values["CTCLI_CONFIG"] = str(tmp_path / "config.toml")
    return values


def run(env, args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CTCLI, *args], env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


def test_a_corrupt_gzip_still_reports_what_came_before_it_and_exits_2(clean_env, tmp_path):
    (tmp_path / "good.ndjson").write_text(identify("g1") + "\n" + identify("g2") + "\n")
    (tmp_path / "corrupt.gz").write_bytes(b"\x1f\x8bgarbage")
    state = tmp_path / "state.json"
    done = run(
        clean_env,
        ["upload", "--sandbox", "good.ndjson", "corrupt.gz", "--state", str(state)],
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert [json.loads(line)["identity"] for line in done.stdout.splitlines()] == ["g1", "g2"]
    assert "corrupt.gz" in done.stderr.splitlines()[-1]
    assert '"line": 2' in state.read_text()  # exactly what was reported, no more


def test_a_valid_last_line_without_newline_is_sent_once(env, tmp_path):
    source = tmp_path / "tail.ndjson"
    source.write_text(identify("a") + "\n" + identify("b"))  # no final newline
    args = ["upload", "--sandbox", "-o", "ndjson", "--state", str(tmp_path / "s.json")]
    first = CliRunner().invoke(app, [*args, str(source)])
    second = CliRunner().invoke(app, [*args, str(source)])
    assert [json.loads(line)["identity"] for line in first.stdout.splitlines()] == ["a", "b"]
    assert second.stdout == "" and second.exit_code == 0


def test_a_fifo_is_read_without_losing_its_writer(clean_env, tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [*CTCLI, "upload", "--sandbox", str(fifo)],
        env=clean_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writer = open_fifo_writer(fifo, process)
        os.write(writer, (identify("fifo-1") + "\n").encode())
        os.close(writer)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert json.loads(out)["identity"] == "fifo-1"


def open_fifo_writer(fifo, process, seconds: float = 30) -> int:
    """Open the FIFO for writing once ctcli has opened it for reading, never blocking forever."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert process.poll() is None, "ctcli ended without opening the FIFO"
        assert time.monotonic() < deadline, "ctcli never opened the FIFO"
        time.sleep(0.02)


def readline_within(stream, seconds: float = 30) -> str:
    """One line from a child's pipe, or a test failure instead of a hang."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    assert selector.select(timeout=seconds), f"no line within {seconds} s"
    return stream.readline()


def test_state_refuses_a_fifo_with_a_clear_error(clean_env, tmp_path):
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    done = run(clean_env, ["upload", "--dry-run", "--state", "s.json", str(fifo)], cwd=tmp_path)
    assert done.returncode == 2 and "regular files" in done.stderr


def test_closed_stdin_with_a_file_argument_still_works(clean_env, tmp_path):
    (tmp_path / "a.ndjson").write_text(identify("c1") + "\n")
    done = run(clean_env, ["upload", "--sandbox", "a.ndjson"], cwd=tmp_path, stdin=None,
               preexec_fn=lambda: os.close(0))  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout)["identity"] == "c1"


def test_closed_stdin_with_nothing_to_read_is_a_one_line_error(clean_env):
    done = run(clean_env, ["upload", "--sandbox"], preexec_fn=lambda: os.close(0))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "stdin" in done.stderr


def test_closed_stdout_is_a_one_line_error(clean_env, tmp_path):
    (tmp_path / "a.ndjson").write_text(identify("c1") + "\n")
    process = subprocess.run(
        [*CTCLI, "upload", "--sandbox", "a.ndjson"],
        env=clean_env,
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.close(1),
    )
    assert process.returncode == 2 and "stdout is closed" in process.stderr
    assert process.stderr.strip().count("\n") == 0


@pytest.mark.parametrize("output", ["json", "table", "ndjson"])
def test_a_reader_that_leaves_early_does_not_change_the_exit_status(clean_env, tmp_path, output):
    (tmp_path / "many.ndjson").write_text("".join(identify(f"m{n}") + "\n" for n in range(3000)))
    done = subprocess.run(
        f"{sys.executable} -m ctcli upload --sandbox -o {output} --show all many.ndjson "
        "| head -n 2; "
        "exit ${PIPESTATUS[0]}",
        shell=True,
        executable="/bin/bash",
        env=clean_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


def test_an_unwritable_failed_file_is_exit_2_naming_it(env, tmp_path):
    source = tmp_path / "bad.ndjson"
    source.write_text("{broken\n")
    result = CliRunner().invoke(app, ["upload", "--dry-run", "--failed", "/dev/full", str(source)])
    assert result.exit_code == 2
    assert "cannot write failed file '/dev/full'" in result.stderr


def test_a_device_as_failed_file_is_fine_when_it_cannot_sync(env, tmp_path):
    source = tmp_path / "ok.ndjson"
    source.write_text(identify("d1") + "\n")
    result = CliRunner().invoke(app, ["upload", "--dry-run", "--failed", "/dev/null", str(source)])
    assert result.exit_code == 0


def test_a_second_interrupt_stops_at_once_with_130(clean_env, tmp_path):
    """First SIGINT: finish what is in flight; second: leave now, not after the network."""
    from ctcli.sandbox import Sandbox

    (tmp_path / "many.ndjson").write_text("".join(identify(f"i{n}") + "\n" for n in range(2000)))
    with Sandbox(project_id="INT-ACC", passcode="int-pass") as sandbox:
        sandbox.set_faults(latency=30)  # every request hangs far longer than the test waits
        env = {
            **clean_env,
            "CLEVERTAP_ENDPOINT": sandbox.url,
            "CLEVERTAP_PROJECT_ID": "INT-ACC",
            "CLEVERTAP_PASSCODE": "int-pass",
        }
        process = subprocess.Popen(
            [*CTCLI, "upload", "many.ndjson", "--batch-size", "100", "--timeout", "60"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while sandbox.stats()["requests"] == 0:
            assert time.monotonic() < deadline, "the run never started sending"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        # The second signal only once the first was handled: two that arrive together are one.
        assert "ctcli: stopping" in readline_within(process.stderr)
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=15)
        finally:
            process.kill()
        sandbox.clear_faults()
    assert process.returncode == 130
    assert "aborted" in err and "Traceback" not in err


def test_sigterm_on_a_stdin_pipeline_exits_130_cleanly(clean_env):
    process = subprocess.Popen(
        [*CTCLI, "upload", "--sandbox", "-"],
        env=clean_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        process.stdin.write(identify("t1") + "\n")
        process.stdin.flush()
        assert json.loads(readline_within(process.stdout))["identity"] == "t1"
        process.send_signal(signal.SIGTERM)  # stdin stays open: the reader is still blocked on it
        assert process.wait(timeout=15) == 130
        err = process.stderr.read()
    finally:
        process.kill()
        process.stdin.close()
    assert "Fatal Python error" not in err and "Traceback" not in err


def test_replay_of_a_failed_upload_of_a_track_event_uploads_it(env, tmp_path):
    failed_line = {
        "event": {"type": "track", "event": "Signed Up", "userId": "t1", "properties": {"p": 1}},
        "source": "x.ndjson", "line": 1, "action": "upload", "status": "failed",
        "code": 503, "error": "HTTP 503",
    }  # fmt: skip
    path = tmp_path / "failed.ndjson"
    path.write_text(json.dumps(failed_line) + "\n")
    result = CliRunner().invoke(app, ["replay", "--sandbox", "-o", "ndjson", str(path)])
    row = json.loads(result.stdout)
    assert (row["action"], row["status"]) == ("upload", "ok")


def test_batch_size_also_caps_delete_requests(env):
    identities = [f"id{n}" for n in range(30)]
    result = CliRunner().invoke(
        app, ["delete", "--sandbox", "-o", "json", "--batch-size", "10", *identities]
    )
    assert json.loads(result.stdout)["summary"]["requests"] == 3


def test_refused_credentials_are_explained_once_on_stderr(live, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "wrong")
    source = tmp_path / "a.ndjson"
    source.write_text(identify("r1") + "\n")
    result = CliRunner().invoke(app, ["upload", "-o", "ndjson", str(source)])
    assert result.exit_code == 3
    assert result.stderr.count("refused the credentials for project TEST-ACC") == 1


def test_delete_prompt_at_end_of_input_deletes_nothing(live):
    from ctcli.cli.environment import Environment

    terminal = Environment(stdin_isatty=True)
    result = CliRunner().invoke(app, ["delete", "u1"], input="", obj=terminal)
    assert result.exit_code == 0 and live.stats()["delete_requests"] == 0


def test_line_numbers_after_resuming_past_a_batch_envelope_line_are_the_files(env, tmp_path):
    source = tmp_path / "mixed.ndjson"
    envelope = {"batch": [json.loads(identify(user)) for user in ("a", "b", "c")]}
    source.write_text(json.dumps(envelope) + "\n")
    args = ["upload", "--sandbox", "-o", "ndjson", "--state", str(tmp_path / "s.json")]
    CliRunner().invoke(app, [*args, str(source)])
    with source.open("a") as handle:
        handle.write(identify("d") + "\n")
    again = CliRunner().invoke(app, [*args, str(source)])
    assert [
        (row["identity"], row["line"]) for row in map(json.loads, again.stdout.splitlines())
    ] == [("d", 2)]
