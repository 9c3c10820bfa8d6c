"""--quiet, --limit and --show-records."""

from __future__ import annotations

from tests.helpers import invoke, rows_of, write_ndjson

EVENTS = [
    {"type": "identify", "userId": f"u{n}", "timestamp": "2024-03-01T12:00:00Z",
     "traits": {"name": f"N{n}", "phone": "555" if n == 2 else "+14155550100"}}
    for n in range(1, 6)
]  # fmt: skip


def test_quiet_prints_nothing_but_the_exit_code_says_how_it_went(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", EVENTS)
    result = invoke("upload", "--dry-run", "-q", source)
    assert result.exit_code == 1  # event 2 is invalid
    assert result.stdout == "" and result.stderr == ""


def test_quiet_still_says_what_stopped_the_run(env, tmp_path):
    result = invoke("upload", "-q", str(tmp_path / "missing.ndjson"))
    assert result.exit_code == 2 and result.stderr.startswith("ctcli: error: ")


def test_limit_reads_only_the_first_events(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", EVENTS)
    rows = rows_of(invoke("upload", "--dry-run", "-o", "ndjson", "--limit", "3", source))
    assert [row["line"] for row in rows] == [1, 2, 3]


def test_show_records_shows_what_a_dry_run_would_send(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", EVENTS[:2])
    args = ("upload", "--dry-run", "--show-records", "-o", "ndjson", source)
    first, second = rows_of(invoke(*args))
    assert first["record"] == {
        "type": "profile",
        "identity": "u1",
        "ts": 1709294400,
        "profileData": {"Name": "N1", "Phone": "+14155550100"},
    }
    assert second["status"] == "invalid" and "record" not in second


def test_show_records_needs_a_dry_run(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", EVENTS[:1])
    result = invoke("upload", "--show-records", source)
    assert result.exit_code == 2 and "--dry-run" in result.stderr


def test_delete_help_lists_only_what_applies_to_deletes(env):
    text = invoke("delete", "--help").stdout
    assert "--no-convert-timestamps" not in text and "--show-records" not in text
    assert "--failed" in text and "--yes" in text
