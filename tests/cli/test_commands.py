"""upload, delete and replay through Typer's CliRunner, against the sandbox over real sockets."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import orjson
import pytest

from ctcli.cli.environment import Environment
from tests.helpers import invoke, rows_of, write_ndjson

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "sample_events"


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # tables as wide as they need: no cell wraps


def table_rows(text: str) -> list[dict]:
    """The body rows of a results table (run with a wide COLUMNS so that no cell wraps).

    Keys: where (or line, when the file is named above the table), kind, action, identity,
    status, code and error ("" for a column the table leaves out because it is empty).
    """
    names: list[str] = []
    rows = []
    renamed = {"type / event": "kind"}
    for line in text.splitlines():
        if line.startswith("┃"):
            names = [renamed.get(cell.strip(), cell.strip()) for cell in line.strip("┃").split("┃")]
        elif line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            row = {"code": "", "error": "", **dict(zip(names, cells, strict=True))}
            rows.append(row)
    return rows


def summary_line(text: str) -> str:
    return text.strip().splitlines()[-1]


IDENTIFY = {"type": "identify", "userId": "u1", "traits": {"name": "One", "plan": "pro"}}
PAGE = {"type": "page", "userId": "u1"}
BAD_PHONE = {"type": "identify", "userId": "u2", "traits": {"phone": "12345"}}


# -- each status in each format --------------------------------------------------------------


def test_replay_sandbox_sample_events_exits_0_with_ok_and_skipped(env):
    result = invoke("replay", "--sandbox", "-o", "ndjson", str(SAMPLES / "events.ndjson"))
    assert result.exit_code == 0, result.stderr
    statuses = {row["status"] for row in rows_of(result)}
    assert statuses == {"ok", "skipped"}
    summary = json.loads(result.stderr.strip().splitlines()[-1])["summary"]
    assert summary["events"] == 8 and summary["failed"] == 0


@pytest.mark.parametrize("output", ["ndjson", "json", "table"])
def test_ok_skipped_invalid_statuses_in_every_format(env, tmp_path, output, monkeypatch):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY, PAGE, BAD_PHONE])
    result = invoke("replay", "--sandbox", "-o", output, source)
    assert result.exit_code == 1, result.stderr
    if output == "ndjson":
        rows = rows_of(result)
    elif output == "json":
        document = json.loads(result.stdout)
        rows = document["results"]
        assert document["summary"]["invalid"] == 1 and document["summary"]["ok"] == 1
    else:
        rows = table_rows(result.stdout)
        assert summary_line(result.stdout).startswith("3 events: 1 ok, 1 invalid, 1 skipped")
        rows = [{**row, "line": int(row["line"])} for row in rows]  # the file named above
    assert [row["status"] for row in rows] == ["ok", "skipped", "invalid"]
    assert rows[2]["line"] == 3 and "Phone" in rows[2]["error"]


@pytest.mark.parametrize("output", ["ndjson", "json", "table"])
def test_dry_run_status_in_every_format(env, tmp_path, output, monkeypatch):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY])
    result = invoke("upload", "--dry-run", "-o", output, source)
    assert result.exit_code == 0
    if output == "table":
        (row,) = table_rows(result.stdout)
        assert (row["identity"], row["status"]) == ("u1", "dry-run")
    elif output == "json":
        (row,) = json.loads(result.stdout)["results"]
        assert (row["identity"], row["status"]) == ("u1", "dry-run")
    else:
        assert [(r["identity"], r["status"]) for r in rows_of(result)] == [("u1", "dry-run")]


@pytest.mark.parametrize("output", ["ndjson", "json", "table"])
def test_failed_status_in_every_format(live, tmp_path, output, monkeypatch):
    live.set_faults(fail_every=1, fail_status=400)
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY])
    result = invoke("upload", "-o", output, source)
    assert result.exit_code == 1
    if output == "table":
        rows = table_rows(result.stdout)
    elif output == "json":
        rows = json.loads(result.stdout)["results"]
    else:
        rows = rows_of(result)
    assert [(row["identity"], row["status"], str(row["code"])) for row in rows] == [
        ("u1", "failed", "400")
    ]


# -- exit codes ------------------------------------------------------------------------------


def test_missing_file_is_one_line_and_exit_2(env):
    result = invoke("replay", "--dry-run", "no-such-file.ndjson")
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no-such-file.ndjson" in result.stderr and "Traceback" not in result.stderr


def test_missing_credentials_name_the_value_and_exit_2(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY])
    result = invoke("upload", source)
    assert result.exit_code == 2
    assert "CLEVERTAP_PROJECT_ID" in result.stderr or "project id" in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--batch-size", "0"), ("--batch-size", "1001"), ("--concurrency", "0"),
     ("--concurrency", "16"), ("--output", "xml"), ("--show", "some")],
)  # fmt: skip
def test_bad_option_value_is_exit_2_naming_the_option(env, tmp_path, option, value):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY])
    result = invoke("upload", "--dry-run", option, value, source)
    assert result.exit_code == 2
    assert option in result.stderr and result.stdout == ""


def test_refused_credentials_exit_3_and_every_event_failed(live, tmp_path, monkeypatch):
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "wrong")
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY, {**IDENTIFY, "userId": "u9"}])
    failed = tmp_path / "failed.ndjson"
    result = invoke("upload", "-o", "ndjson", "--failed", str(failed), source)
    assert result.exit_code == 3
    rows = rows_of(result)
    assert [row["error"] for row in rows] == ["credentials refused"] * 2
    assert len(failed.read_text().splitlines()) == 2
    assert live.profiles() == {}


# -- upload ----------------------------------------------------------------------------------


def test_one_off_upload_lands_with_the_right_types(live):
    result = invoke(
        "upload", "-o", "json", "--identity", "alice@example.com",
        "--set", "Name=Alice", "--set", "Phone=+14155550100",
        "--set", "Plan=pro", "--set", "Logins=3", "--set", "VIP=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["results"][0]["source"] == "args"
    profile = live.profiles()["alice@example.com"]["profileData"]
    assert profile == {
        "Name": "Alice", "Phone": "+14155550100", "Plan": "pro", "Logins": 3, "VIP": True
    }  # fmt: skip


def test_upload_sends_every_event_whatever_its_type(live, tmp_path):
    track = {"type": "track", "userId": "t1", "event": "X", "properties": {"plan": "gold"}}
    source = write_ndjson(tmp_path / "in.ndjson", [track])
    result = invoke("upload", "-o", "ndjson", source)
    assert result.exit_code == 0
    assert live.profiles()["t1"]["profileData"] == {"plan": "gold"}


def test_upload_reads_gzip_and_batch_envelope(live):
    result = invoke(
        "upload", "-o", "ndjson",
        str(SAMPLES / "identifies.ndjson.gz"), str(SAMPLES / "batch.json"),
    )  # fmt: skip
    rows = rows_of(result)
    assert len(rows) == 103
    assert len(live.profiles()) == 102  # the batch's Delete User track is uploaded too: no traits


def test_upload_with_nothing_on_a_terminal_shows_usage(env):
    result = invoke("upload", environment=Environment(stdin_isatty=True))
    assert result.exit_code == 2
    assert "Usage" in result.stderr


def test_upload_reads_piped_stdin_without_dash(live):
    result = invoke("upload", "-o", "ndjson", input=json.dumps(IDENTIFY) + "\n")
    assert result.exit_code == 0
    assert rows_of(result)[0]["source"] == "-"
    assert "u1" in live.profiles()


def test_one_off_set_without_identity_is_a_usage_error(env):
    result = invoke("upload", "--set", "Name=x", "--dry-run")
    assert result.exit_code == 2 and "--identity" in result.stderr


# -- delete ----------------------------------------------------------------------------------


def test_delete_refuses_without_yes_when_not_interactive(live):
    result = invoke("delete", "u1", "u2")
    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert live.stats()["delete_requests"] == 0


def test_delete_with_yes_deletes_each_identity(live):
    invoke("upload", "--identity", "u1", "--set", "a=1")
    result = invoke("delete", "--yes", "-o", "ndjson", "u1", "u2")
    assert result.exit_code == 0
    assert [row["identity"] for row in rows_of(result)] == ["u1", "u2"]
    assert sorted(live.deleted()) == ["u1", "u2"] and "u1" not in live.profiles()


def test_delete_asks_on_a_terminal_and_no_means_nothing(live):
    terminal = Environment(stdin_isatty=True)
    result = invoke("delete", "u1", "u2", "u3", input="n\n", environment=terminal)
    assert "Delete 3 profiles from project TEST-ACC?" in result.stderr
    assert result.exit_code == 0 and live.stats()["delete_requests"] == 0


def test_delete_dry_run_never_asks(env):
    result = invoke("delete", "--dry-run", "-o", "ndjson", "u1")
    assert result.exit_code == 0
    assert rows_of(result)[0]["status"] == "dry-run"


def test_delete_from_file_of_events(live, tmp_path):
    events = [{"type": "track", "userId": f"d{n}", "event": "whatever"} for n in range(150)]
    result = invoke("delete", "--yes", "--file", write_ndjson(tmp_path / "d.ndjson", events))
    assert result.exit_code == 0
    assert len(live.deleted()) == 150 and max(live.stats()["delete_sizes"]) <= 100


# -- replay, failed file, output details -----------------------------------------------------


def test_replay_of_the_failed_file_redrives_failures(live, tmp_path):
    events = [{**IDENTIFY, "userId": f"u{n}"} for n in range(10)]
    failed = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=1, fail_status=503)
    first = invoke(
        "replay", "-o", "ndjson", "--max-retries", "0", "--failed", str(failed),
        write_ndjson(tmp_path / "in.ndjson", events),
    )  # fmt: skip
    assert first.exit_code == 1 and len(failed.read_text().splitlines()) == 10
    live.clear_faults()
    again = invoke("replay", "-o", "ndjson", str(failed))
    assert again.exit_code == 0
    assert len(live.profiles()) == 10


def test_failed_file_keeps_the_raw_text_of_a_bad_line(env, tmp_path):
    source = tmp_path / "in.ndjson"
    source.write_text('{"type": "identify", "userId": \n')
    failed = tmp_path / "failed.ndjson"
    invoke("replay", "--dry-run", "--failed", str(failed), str(source))
    line = orjson.loads(failed.read_text())
    assert line["event"].startswith('{"type": "identify"') and line["status"] == "invalid"
    assert line["line"] == 1 and line["source"] == str(source)


def test_user_data_is_never_rich_markup(env, tmp_path):
    event = {"type": "track", "event": "[bold]x[/]", "userId": "[red]u[/red]"}
    result = invoke(
        "replay", "--dry-run", "-o", "table", write_ndjson(tmp_path / "m.ndjson", [event])
    )
    assert "[bold]x[/]" in result.stdout


def test_gzip_input_without_gz_name(env, tmp_path):
    path = tmp_path / "events.data"
    path.write_bytes(gzip.compress((json.dumps(IDENTIFY) + "\n").encode()))
    result = invoke("replay", "--dry-run", "-o", "ndjson", str(path))
    assert rows_of(result)[0]["status"] == "dry-run"


def test_list_subscriptions_shows_presets_and_profile_ones(env, tmp_path):
    Path(tmp_path / "config.toml").write_text(
        "[profiles.default]\nproject_id='x'\npasscode='y'\n"
        "[[profiles.default.subscriptions]]\n"
        "trigger = 'type = \"track\" and event = \"Account Closed\"'\naction = 'delete'\n"
    )
    result = invoke("replay", "--list-subscriptions")
    assert result.exit_code == 0
    assert "User Upload" in result.stdout and "Account Closed" in result.stdout


def test_bad_trigger_in_profile_is_exit_2_with_position(env, tmp_path):
    Path(tmp_path / "config.toml").write_text(
        "[profiles.default]\n[[profiles.default.subscriptions]]\n"
        "trigger = 'type == \"track\"'\naction = 'delete'\n"
    )
    result = invoke("replay", "--dry-run", str(SAMPLES / "events.ndjson"))
    assert result.exit_code == 2
    assert "position" in result.stderr


def test_unparseable_config_file_is_one_line_and_exit_2(env, tmp_path):
    Path(tmp_path / "config.toml").write_text("[profiles.default\nproject_id = 1\n")
    result = invoke("replay", "--dry-run", str(SAMPLES / "events.ndjson"))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "not valid TOML" in result.stderr


def test_table_has_no_colour_codes_with_no_color(env, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("FORCE_COLOR", "1")  # even where colour would otherwise be forced
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY, BAD_PHONE])
    result = invoke("replay", "--dry-run", "-o", "table", source)
    assert "invalid" in result.stdout
    assert "\x1b[1m" in result.stdout  # styles (bold) stay: NO_COLOR is about colour only
    assert not re.search(r"\x1b\[(?:\d+;)*(?:3\d|9\d)", result.stdout)  # no colour codes


def test_progress_goes_to_stderr_only_when_it_is_a_terminal(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY] * 300)
    args = ("upload", "--dry-run", "-o", "table", "--show", "failed", source)
    shown = invoke(*args, environment=Environment(stderr_isatty=True))
    assert shown.exit_code == 0
    # the progress line: events and failures, bytes of the file, ETA
    assert " events " in shown.stderr and " failed " in shown.stderr and " eta " in shown.stderr
    assert " eta " not in shown.stdout and "\r" not in shown.stdout
    assert "300 events: 300 dry-run" in shown.stdout
    quiet = invoke(*args, environment=Environment(stderr_isatty=False))
    assert " eta " not in quiet.stderr


# -- the rest of the contract ----------------------------------------------------------------


def test_version_prints_the_version(env):
    from ctcli import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout == f"ctcli {__version__}\n"


def test_table_is_the_default_on_a_terminal(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY])
    result = invoke("upload", "--dry-run", source, environment=Environment(stdout_isatty=True))
    assert table_rows(result.stdout)[0]["status"] == "dry-run"


def test_show_all_lists_every_event_beyond_the_default_limit(env, tmp_path):
    events = [{**IDENTIFY, "userId": f"u{n}"} for n in range(600)] + [BAD_PHONE]
    source = write_ndjson(tmp_path / "in.ndjson", events)
    default = table_rows(invoke("upload", "--dry-run", "-o", "table", source).stdout)
    every = table_rows(invoke("upload", "--dry-run", "-o", "table", "--show", "all", source).stdout)
    failed = table_rows(
        invoke("upload", "--dry-run", "-o", "table", "--show", "failed", source).stdout
    )
    assert [row["status"] for row in default] == ["invalid"]  # over 500 events: failures only
    assert len(every) == 601
    assert [row["status"] for row in failed] == ["invalid"]


def test_show_defaults_to_every_row_up_to_500_events(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY, BAD_PHONE])
    rows = table_rows(invoke("upload", "--dry-run", "-o", "table", source).stdout)
    assert [row["status"] for row in rows] == ["dry-run", "invalid"]


def test_failed_file_is_appended_to_not_replaced(env, tmp_path):
    failed = tmp_path / "failed.ndjson"
    failed.write_text('{"earlier": "line"}\n')
    invoke(
        "upload",
        "--dry-run",
        "--failed",
        str(failed),
        write_ndjson(tmp_path / "in.ndjson", [BAD_PHONE]),
    )
    lines = failed.read_text().splitlines()
    assert lines[0] == '{"earlier": "line"}' and json.loads(lines[1])["status"] == "invalid"


def test_no_convert_timestamps_sends_iso_strings_as_they_are(live):
    args = ["upload", "--identity", "ts1", "--set", "signup=2006-01-02T18:04:07Z"]
    invoke(*args)
    assert live.profiles()["ts1"]["profileData"]["signup"] == 1136225047
    invoke(*args, "--no-convert-timestamps")
    assert live.profiles()["ts1"]["profileData"]["signup"] == "2006-01-02T18:04:07Z"


def test_profile_option_and_variable_choose_the_credentials(env, sandbox, tmp_path, monkeypatch):
    Path(tmp_path / "config.toml").write_text(
        f"[profiles.default]\nproject_id = 'nope'\npasscode = 'nope'\nendpoint = '{sandbox.url}'\n"
        f"[profiles.staging]\nproject_id = 'TEST-ACC'\npasscode = 'test-passcode'\n"
        f"endpoint = '{sandbox.url}'\n"
    )
    source = write_ndjson(tmp_path / "in.ndjson", [IDENTIFY])
    assert invoke("upload", source).exit_code == 3  # the default profile's are wrong
    assert invoke("upload", "-p", "staging", source).exit_code == 0
    monkeypatch.setenv("CTCLI_PROFILE", "staging")
    assert invoke("upload", source).exit_code == 0


def test_delete_results_of_arguments_come_from_args(env):
    rows = rows_of(invoke("delete", "--dry-run", "-o", "ndjson", "a1", "a2"))
    assert [(row["source"], row["line"], row["identity"]) for row in rows] == [
        ("args", 1, "a1"),
        ("args", 2, "a2"),
    ]


def test_summary_has_every_count_the_contract_names(env, tmp_path):
    result = invoke(
        "replay", "--dry-run", "-o", "json", write_ndjson(tmp_path / "in.ndjson", [PAGE])
    )
    summary = json.loads(result.stdout)["summary"]
    assert set(summary) == {
        "events", "ok", "failed", "invalid", "skipped", "dry-run", "superseded", "unchanged",
        "requests", "retries", "seconds",
        # what a person acts on: which run, when, and what went wrong by action and reason
        "run_id", "started_at", "finished_at", "by_action", "reasons",
    }  # fmt: skip
    assert summary["skipped"] == 1 and summary["seconds"] >= 0
