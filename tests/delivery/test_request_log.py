"""`-v` and `-vv` of the client: one line per request, the retries and why, refusals' answers;
never the passcode."""

from __future__ import annotations

import logging

import httpx

from tests.delivery.test_clevertap import SENTINEL, Recorder, make_client, records, success


def test_one_line_per_request_and_one_per_retry_saying_why(caplog):
    recorder = Recorder([httpx.Response(503, text="busy"), success()])
    with caplog.at_level(logging.INFO, logger="ctcli.http"), make_client(recorder) as client:
        assert client.upload(records(3))[0].ok
    lines = [r.getMessage() for r in caplog.records if r.name == "ctcli.http"]
    assert len(lines) == 3
    assert lines[0].startswith("POST /1/upload 3 records: HTTP 503 in ")
    assert lines[0].endswith(" ms")
    assert lines[1].startswith("retry 1/5 in ")
    assert lines[1].endswith(" s: HTTP 503 Service Unavailable")
    assert lines[2].startswith("POST /1/upload 3 records: HTTP 200 in ")


def test_debug_adds_the_answer_of_a_refusal_scrubbed_of_the_passcode(caplog):
    echo = httpx.Response(400, json={"status": "fail", "error": f"bad passcode {SENTINEL}"})
    with caplog.at_level(logging.DEBUG, logger="ctcli.http"), make_client(Recorder([echo])) as c:
        c.upload(records(1))
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "answer to POST /1/upload: " in text and "bad passcode ***" in text
    assert SENTINEL not in text


def test_nothing_is_logged_at_the_default_level(caplog):
    with (
        caplog.at_level(logging.WARNING, logger="ctcli.http"),
        make_client(Recorder([success()])) as client,
    ):
        client.upload(records(1))
    assert caplog.records == []
