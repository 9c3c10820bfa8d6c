"""The library API: `ctcli.upload`, `delete` and `replay` against the sandbox over real sockets."""

from __future__ import annotations

import datetime
import decimal
import json
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import pytest

import ctcli
from ctcli.cli.exits import exit_status_of_error, exit_status_of_run
from tests.conftest import SANDBOX_PASSCODE, SANDBOX_PROJECT_ID


def account(sandbox) -> dict[str, str]:
    return {"project_id": SANDBOX_PROJECT_ID, "passcode": SANDBOX_PASSCODE, "endpoint": sandbox.url}


def test_help_documents_the_api_and_importing_it_loads_no_pipeline():
    text = pydoc.render_doc(ctcli, renderer=pydoc.plaintext)
    for name in ("upload", "delete", "replay", "Summary", "Result", "CtcliError", "on_result"):
        assert name in text
    probe = "import sys, ctcli; print('ctcli.delivery.pipeline' in sys.modules, ctcli.__version__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"  # `ctcli --version` does not pay for it


def test_an_upload_of_event_dicts_reaches_the_sandbox_and_every_result_the_callback(env, sandbox):
    events = [
        {"type": "identify", "userId": "u1", "traits": {"name": "Ada", "plan": "pro"}},
        {"type": "identify", "userId": "u2", "traits": {"phone": "555"}},  # invalid phone
        {"type": "identify", "userId": "u3", "traits": {"plan": "free"}},
    ]
    seen: list[ctcli.Result] = []
    summary = ctcli.upload(iter(events), **account(sandbox), on_result=seen.append)
    assert isinstance(summary, ctcli.Summary)
    assert (summary.events, summary.ok, summary.invalid, summary.failed) == (3, 2, 1, 0)
    assert [(r.source, r.line, r.identity, r.status) for r in seen] == [
        ("<events>", 1, "u1", ctcli.Status.OK),
        ("<events>", 2, "u2", ctcli.Status.INVALID),
        ("<events>", 3, "u3", ctcli.Status.OK),
    ]
    assert sandbox.profiles()["u1"]["profileData"]["Name"] == "Ada"
    assert set(sandbox.profiles()) == {"u1", "u3"}
    assert exit_status_of_run(summary) is ctcli.ExitStatus.EVENTS_FAILED


def test_a_replay_of_a_file_routes_by_trigger_and_writes_the_failed_file(env, sandbox, tmp_path):
    path = tmp_path / "events.ndjson"
    lines = [
        {"type": "identify", "userId": "a", "traits": {"plan": "pro"}},
        {"type": "identify", "userId": "b", "traits": {"plan": "pro"}},
        {"type": "track", "event": "Delete User", "userId": "b"},
        {"type": "page", "userId": "c"},
        {"type": "identify", "userId": "d", "traits": {"email": "not an email"}},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    failed = tmp_path / "failed.ndjson"
    seen: list[ctcli.Result] = []
    summary = ctcli.replay(path, **account(sandbox), failed=failed, on_result=seen.append)
    assert [(r.line, r.action, r.status) for r in seen] == [
        (1, "upload", "ok"),
        (2, "upload", "ok"),
        (3, "delete", "ok"),
        (4, None, "skipped"),
        (5, "upload", "invalid"),
    ]
    assert (summary.ok, summary.skipped, summary.invalid) == (3, 1, 1)
    assert set(sandbox.profiles()) == {"a"}
    assert sandbox.deleted() == ["b"]
    failed_lines = [json.loads(line) for line in failed.read_text().splitlines()]
    assert [line["line"] for line in failed_lines] == [5]


def test_rows_from_a_database_are_sent_as_json_would_carry_them(env, sandbox):
    row = {
        "type": "identify",
        "userId": "u1",
        "timestamp": datetime.datetime(2024, 3, 1, 12, 0, tzinfo=datetime.UTC),
        "traits": {"ltv": decimal.Decimal("12.50"), "visits": decimal.Decimal(7)},
    }
    summary = ctcli.upload([row, {"type": "identify", "userId": "u2", "traits": {"x": object()}}],
                           **account(sandbox))  # fmt: skip
    assert (summary.ok, summary.invalid) == (1, 1)
    assert sandbox.profiles()["u1"]["profileData"]["ltv"] == 12.5
    assert sandbox.profiles()["u1"]["profileData"]["visits"] == 7
    assert sandbox.profiles()["u1"]["ts"] == 1709294400  # the datetime, as ISO-8601 would give


def test_a_dry_run_needs_no_account_and_sends_nothing(env, sandbox):
    seen: list[ctcli.Result] = []
    events = [{"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}]
    summary = ctcli.upload(events, dry_run=True, on_result=seen.append)
    assert summary.dry_run == 1 and [r.status for r in seen] == ["dry-run"]
    assert sandbox.profiles() == {}


def test_setup_problems_raise_the_errors_the_cli_maps_to_exit_codes(env, tmp_path):
    with pytest.raises(ctcli.InputError) as missing:
        ctcli.upload(tmp_path / "missing.ndjson", dry_run=True)
    assert exit_status_of_error(missing.value) == ctcli.ExitStatus.USAGE
    with pytest.raises(ctcli.ConfigError):
        ctcli.upload([{"type": "identify", "userId": "u1", "traits": {"a": 1}}])  # no account
    with pytest.raises(ctcli.UsageError):
        ctcli.upload([], project_id="x")  # a project id without its passcode
    with pytest.raises(ctcli.UsageError):
        ctcli.upload({"type": "identify"})  # one event, not an iterable of them


def test_a_profile_from_the_config_file_is_used_by_name(env, sandbox, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'[profiles.test]\nproject_id = "{SANDBOX_PROJECT_ID}"\n'
        f'passcode = "{SANDBOX_PASSCODE}"\nendpoint = "{sandbox.url}"\n'
    )
    config.chmod(0o600)
    summary = ctcli.upload(
        [{"type": "identify", "userId": "p1", "traits": {"plan": "pro"}}], profile="test"
    )
    assert summary.ok == 1 and "p1" in sandbox.profiles()


def test_the_readme_example_runs_against_the_sandbox(live, tmp_path, monkeypatch):
    root = Path(__file__).resolve().parent.parent
    (block,) = re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), re.DOTALL)
    (tmp_path / "sample_events").symlink_to(root / "sample_events")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), scope)
    summary = scope["summary"]
    assert isinstance(summary, ctcli.Summary) and summary.ok == 1 and scope["problems"] == []
    assert live.profiles()["u42"]["profileData"]["Signup"] == 1709294400
    assert len(live.profiles()) > 1  # the sample file's profiles too
