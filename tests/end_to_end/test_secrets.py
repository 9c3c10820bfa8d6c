"""A planted passcode never reaches stdout, stderr, tracebacks, logs, the failed or state file."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctcli.cli.app import app
from ctcli.delivery import pipeline
from ctcli.sandbox import Sandbox

SENTINEL = "SENTINEL-PASSCODE-93f1c7"
ACCOUNT = "SECRET-TEST-ACC"


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """Environment carrying the sentinel passcode; collects every text ctcli produced."""
    monkeypatch.setenv("CTCLI_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("CLEVERTAP_PROJECT_ID", ACCOUNT)
    monkeypatch.setenv("CLEVERTAP_PASSCODE", SENTINEL)
    for name in ("CLEVERTAP_REGION", "CLEVERTAP_ENDPOINT", "CTCLI_PROFILE", "CTCLI_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    seen: list[str] = []
    yield seen
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "config.toml":  # where the passcode belongs
            seen.append(path.read_text(errors="replace"))
    leaks = [text for text in seen if SENTINEL in text]
    assert not leaks, f"the passcode leaked into: {leaks[0][:300]!r}"
    assert seen, "nothing was checked"


def run(seen: list[str], *args: str, input: str | None = None):
    result = CliRunner().invoke(app, list(args), input=input)
    seen.extend([result.stdout, result.stderr])
    if result.exc_info and not isinstance(result.exc_info[1], SystemExit):
        seen.append("".join(traceback.format_exception(*result.exc_info)))
    return result


def events_file(tmp_path: Path, count: int = 30) -> str:
    path = tmp_path / "events.ndjson"
    lines = [
        json.dumps({"type": "identify", "userId": f"u{n}", "traits": {"name": f"N{n}"}})
        for n in range(count)
    ]
    path.write_text("\n".join([*lines, "{broken"]) + "\n")
    return str(path)


def test_passcode_absent_from_a_run_with_failures_state_and_failed_file(
    outputs, tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    source = events_file(tmp_path)
    with Sandbox(project_id=ACCOUNT, passcode=SENTINEL) as sandbox:
        monkeypatch.setenv("CLEVERTAP_ENDPOINT", sandbox.url)
        sandbox.set_faults(fail_every=2, fail_status=500)
        for output in ("ndjson", "json", "table"):
            result = run(
                outputs, "upload", "-o", output, "--batch-size", "5", "--max-retries", "0",
                "--failed", str(tmp_path / "failed.ndjson"),
                "--state", str(tmp_path / f"state-{output}.json"), source,
            )  # fmt: skip
            assert result.exit_code == 1
    assert (tmp_path / "failed.ndjson").read_text()
    outputs.append(caplog.text)


def test_passcode_absent_when_credentials_are_refused(outputs, tmp_path, monkeypatch):
    with Sandbox(project_id=ACCOUNT, passcode="another-passcode") as sandbox:
        monkeypatch.setenv("CLEVERTAP_ENDPOINT", sandbox.url)
        result = run(
            outputs, "upload", "-o", "ndjson", "--failed", str(tmp_path / "f.ndjson"),
            events_file(tmp_path),
        )  # fmt: skip
        assert result.exit_code == 3
        result = run(outputs, "configure", "--check")
        assert result.exit_code == 3


def test_passcode_absent_when_clevertap_is_unreachable(outputs, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEVERTAP_ENDPOINT", "http://127.0.0.1:9")
    result = run(
        outputs, "upload", "-o", "ndjson", "--max-retries", "0", "--timeout", "1",
        events_file(tmp_path, 3),
    )  # fmt: skip
    assert result.exit_code == 5
    assert run(outputs, "configure", "--check").exit_code == 2


def test_passcode_absent_from_configure_list_of_a_saved_profile(outputs, monkeypatch):
    monkeypatch.delenv("CLEVERTAP_PASSCODE")
    result = run(
        outputs, "configure", "--project-id", ACCOUNT, "--region", "us", "--passcode-stdin",
        input=SENTINEL + "\n",
    )  # fmt: skip
    assert result.exit_code == 0
    listing = run(outputs, "configure", "--list")
    assert listing.exit_code == 0 and SENTINEL[-4:] in listing.stdout


def test_passcode_absent_from_an_internal_error_and_its_debug_traceback(
    outputs, tmp_path, monkeypatch
):
    def explode(self, items):
        raise RuntimeError("planted bug")

    monkeypatch.setattr(pipeline.Pipeline, "run", explode)
    with Sandbox(project_id=ACCOUNT, passcode=SENTINEL) as sandbox:
        monkeypatch.setenv("CLEVERTAP_ENDPOINT", sandbox.url)
        result = run(outputs, "upload", "-o", "ndjson", events_file(tmp_path, 2))
        assert result.exit_code == 4
        assert "CTCLI_DEBUG=1" in result.stderr and "planted bug" in result.stderr
        assert result.stderr.count("\n") == 1  # one line, whatever the bug
        monkeypatch.setenv("CTCLI_DEBUG", "1")
        result = run(outputs, "upload", "-o", "ndjson", events_file(tmp_path, 2))
        assert isinstance(result.exception, RuntimeError)


def test_passcode_absent_from_a_real_process_traceback(outputs, tmp_path):
    """A bug planted in a real process, traceback shown with CTCLI_DEBUG=1."""
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(
        "import ctcli.delivery.pipeline as p\n"
        "def boom(self, items):\n"
        "    raise RuntimeError('planted bug in a real process')\n"
        "p.Pipeline.run = boom\n"
    )
    with Sandbox(project_id=ACCOUNT, passcode=SENTINEL) as sandbox:
        env = {
            **os.environ,
            "PYTHONPATH": str(plant),
            "CLEVERTAP_ENDPOINT": sandbox.url,
            "CTCLI_DEBUG": "1",
        }
        done = subprocess.run(
            [sys.executable, "-m", "ctcli", "upload", "-o", "ndjson", events_file(tmp_path, 2)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    outputs.extend([done.stdout, done.stderr])
    assert "Traceback" in done.stderr and "planted bug in a real process" in done.stderr


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_passcode_absent_from_verbose_request_lines(outputs, tmp_path, monkeypatch, verbosity):
    source = events_file(tmp_path)
    with Sandbox(project_id=ACCOUNT, passcode=SENTINEL) as sandbox:
        monkeypatch.setenv("CLEVERTAP_ENDPOINT", sandbox.url)
        # Refusals whose answer echoes the passcode: -vv prints answers, scrubbed.
        sandbox.set_faults(fail_every=2, fail_status=400, fail_body={"error": f"bad {SENTINEL}"})
        result = run(
            outputs, "upload", verbosity, "-o", "ndjson", "--batch-size", "5",
            "--max-retries", "1", source,
        )  # fmt: skip
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if " ctcli: POST /1/upload " in line]
    assert lines and all(
        re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ctcli: ", line) for line in lines
    )
    if verbosity == "-vv":
        assert "answer to POST /1/upload: " in result.stderr and "bad ***" in result.stderr
    else:
        assert "answer to POST" not in result.stderr
