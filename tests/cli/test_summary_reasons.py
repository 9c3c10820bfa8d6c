"""The end of a run says what went wrong, how often, and where first; and which run it was."""

from __future__ import annotations

import json
import re

from ctcli.delivery.pipeline import reason_of
from tests.helpers import invoke, write_ndjson


def test_like_failures_are_one_reason_and_field_names_stay():
    assert reason_of("Phone '555' is not +[country code][number]") == reason_of(
        "Phone '556-0100' is not +[country code][number]"
    )
    assert reason_of("missing identity: 'userId' is empty or absent") == (
        "missing identity: 'userId' is empty or absent"
    )
    assert reason_of("'x' is 600 bytes, over the limit") == "'x' is N bytes, over the limit"
    assert "127.0.0.1:9" in reason_of("cannot reach http://127.0.0.1:9: refused after 3 attempts")


def events_with_problems() -> list[dict]:
    events: list[dict] = []
    for n in range(1, 301):
        if n % 3 == 0:
            events.append({"type": "identify", "userId": f"u{n}", "traits": {"phone": f"55{n}"}})
        elif n % 50 == 1:
            events.append({"type": "identify", "traits": {"plan": "pro"}})  # no identity
        else:
            events.append({"type": "identify", "userId": f"u{n}", "traits": {"plan": "pro"}})
    return events


def test_the_json_summary_counts_by_reason_and_action_and_names_the_run(env, tmp_path):
    source = write_ndjson(tmp_path / "in.ndjson", events_with_problems())
    result = invoke("upload", "--dry-run", "-o", "json", source)
    summary = json.loads(result.stdout)["summary"]
    assert summary["reasons"] == [
        {"status": "invalid", "reason": "Phone ... is not +[country code][number]",
         "count": 100, "first": f"{source}:3"},
        {"status": "invalid", "reason": "missing identity: 'userId' is empty or absent",
         "count": 4, "first": f"{source}:1"},
    ]  # fmt: skip
    assert summary["by_action"] == {"upload": {"invalid": 104, "dry-run": 196}}
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", summary["run_id"])
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(stamp, summary["started_at"])
    assert re.fullmatch(stamp, summary["finished_at"])
    assert summary["started_at"] <= summary["finished_at"]


def test_the_table_ends_with_the_reasons_then_the_summary_line(env, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    source = write_ndjson(tmp_path / "in.ndjson", events_with_problems())
    lines = invoke("upload", "--dry-run", "-o", "table", source).stdout.splitlines()
    phone = "Phone ... is not +[country code][number]"
    assert lines[-3] == f"  100 invalid: {phone}, first at {source}:3"
    assert lines[-2] == (
        f"  4 invalid: missing identity: 'userId' is empty or absent, first at {source}:1"
    )
    assert lines[-1].startswith("300 events: 104 invalid, 196 dry-run")
