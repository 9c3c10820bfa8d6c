"""Behaviour of the CleverTap HTTP client against scripted answers (httpx.MockTransport)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import httpx
import orjson
import pytest

from ctcli import __version__
from ctcli.delivery.client import (
    UNREADABLE_ANSWER,
    CleverTapClient,
    ClientSettings,
    Outcome,
    _AdaptiveLimiter,
    _Signal,
    check_credentials,
)
from ctcli.errors import ConfigError, CredentialsRejected, Unreachable

BASE = "https://eu1.api.clevertap.example"
PROJECT = "W9R-486-4W5Z"
SENTINEL = "PASSCODE-SENTINEL-7f3a"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeTime:
    """A clock that only moves when the client sleeps, and a log of every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder:
    """A MockTransport handler that plays scripted answers and keeps every request."""

    def __init__(self, answers: Iterable[httpx.Response | Exception | Handler]) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def bodies(self) -> list[dict]:
        return [orjson.loads(request.content) for request in self.requests]


def settings(**overrides: object) -> ClientSettings:
    values: dict = {"base_url": BASE, "project_id": PROJECT, "passcode": SENTINEL}
    values.update(overrides)
    return ClientSettings(**values)


def make_client(
    handler: Handler, fake: FakeTime | None = None, rand: float = 0.5, **overrides: object
) -> CleverTapClient:
    fake = fake or FakeTime()
    return CleverTapClient(
        settings(**overrides),
        transport=httpx.MockTransport(handler),
        sleep=fake.sleep,
        clock=fake.clock,
        random=lambda: rand,
    )


def success(request: httpx.Request | None = None) -> httpx.Response:
    """A success answer; it counts the records it was sent when it sees the request."""
    answer: dict = {"status": "success", "unprocessed": []}
    if request is not None:
        answer["processed"] = len(orjson.loads(request.content or b"{}").get("d") or [])
    return httpx.Response(200, json=answer)


def records(count: int) -> list[dict]:
    return [{"type": "profile", "identity": f"user-{n}", "profileData": {}} for n in range(count)]


OK = Outcome(ok=True)


# --- requests -----------------------------------------------------------------------------


def test_upload_posts_records_as_d_list_to_upload_path() -> None:
    recorder = Recorder([success()])
    with make_client(recorder) as client:
        outcomes = client.upload(records(3))
    assert outcomes == [OK, OK, OK]
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == BASE + "/1/upload"
    assert recorder.bodies() == [{"d": records(3)}]


def test_requests_carry_account_id_passcode_content_type_and_user_agent() -> None:
    recorder = Recorder([success()])
    with make_client(recorder) as client:
        client.upload(records(1))
    headers = recorder.requests[0].headers
    assert headers["X-CleverTap-Account-Id"] == PROJECT
    assert headers["X-CleverTap-Passcode"] == SENTINEL
    assert headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == f"ctcli/{__version__}"


def test_trailing_slash_in_base_url_is_ignored() -> None:
    recorder = Recorder([success()])
    with make_client(recorder, base_url=BASE + "/") as client:
        client.upload(records(1))
    assert str(recorder.requests[0].url) == BASE + "/1/upload"


def test_delete_posts_identities_to_delete_path() -> None:
    recorder = Recorder([httpx.Response(200, json={"status": "success"})])
    with make_client(recorder) as client:
        outcomes = client.delete(["a", "b"])
    assert outcomes == [OK, OK]
    assert str(recorder.requests[0].url) == BASE + "/1/delete/profiles.json"
    assert recorder.bodies() == [{"identity": ["a", "b"]}]


def test_delete_refuses_more_than_100_identities_without_sending() -> None:
    recorder = Recorder([success()])
    with make_client(recorder) as client, pytest.raises(ValueError, match="100"):
        client.delete([f"id-{n}" for n in range(101)])
    assert recorder.requests == []


def test_upload_refuses_more_than_1000_records_without_sending() -> None:
    recorder = Recorder([success()])
    with make_client(recorder) as client, pytest.raises(ValueError, match="1000"):
        client.upload(records(1001))
    assert recorder.requests == []


def test_empty_upload_sends_nothing() -> None:
    recorder = Recorder([success()])
    with make_client(recorder) as client:
        assert client.upload([]) == []
    assert recorder.requests == []


def test_record_json_cannot_carry_fails_alone_and_the_rest_are_sent() -> None:
    recorder = Recorder([success()])
    batch = records(3)
    batch[1]["profileData"] = {"when": object()}
    with make_client(recorder) as client:
        outcomes = client.upload(batch)
    assert outcomes[0] == OK and outcomes[2] == OK
    assert not outcomes[1].ok and "JSON" in (outcomes[1].error or "")
    assert recorder.bodies() == [{"d": [batch[0], batch[2]]}]


# --- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_retryable_status_is_retried_then_succeeds(status: int) -> None:
    recorder = Recorder([httpx.Response(status), success()])
    with make_client(recorder) as client:
        assert client.upload(records(2)) == [OK, OK]
        assert (client.requests, client.retries) == (2, 1)


@pytest.mark.parametrize("status", [404, 405, 422, 501, 505])
def test_non_retryable_status_fails_records_without_retry(status: int) -> None:
    recorder = Recorder([httpx.Response(status)])
    with make_client(recorder) as client:
        outcomes = client.upload(records(2))
        assert client.requests == 1
    assert all(not o.ok and o.code == status for o in outcomes)
    assert outcomes[0].error is not None and str(status) in outcomes[0].error


def test_non_retryable_4xx_error_text_comes_from_the_answer_body() -> None:
    answer = httpx.Response(413, json={"status": "fail", "error": "Payload too large", "code": 413})
    with make_client(Recorder([answer])) as client:
        assert client.upload(records(1)) == [Outcome(False, 413, "Payload too large")]


def test_redirect_is_not_followed_and_fails_the_records() -> None:
    answer = httpx.Response(301, headers={"Location": "https://elsewhere.example/1/upload"})
    recorder = Recorder([answer])
    with make_client(recorder) as client:
        outcomes = client.upload(records(1))
    assert len(recorder.requests) == 1
    assert outcomes[0].code == 301 and not outcomes[0].ok


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
    ],
    ids=["connect-error", "connect-timeout", "read-timeout", "dropped", "reset"],
)
def test_network_failure_is_retried_then_succeeds(error: Exception) -> None:
    recorder = Recorder([error, success()])
    with make_client(recorder) as client:
        assert client.upload(records(1)) == [OK]
        assert (client.requests, client.retries) == (2, 1)


def test_dropped_keep_alive_connection_resends_the_same_body() -> None:
    dropped = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    recorder = Recorder([dropped, success()])
    with make_client(recorder) as client:
        client.upload(records(5))
    assert recorder.requests[0].content == recorder.requests[1].content


def test_retry_after_seconds_is_honoured_over_a_shorter_backoff() -> None:
    fake = FakeTime()
    recorder = Recorder([httpx.Response(503, headers={"Retry-After": "7"}), success()])
    with make_client(recorder, fake, rand=0.0) as client:
        client.upload(records(1))
    assert fake.sleeps == [7.0]


def test_retry_after_is_capped() -> None:
    fake = FakeTime()
    recorder = Recorder([httpx.Response(429, headers={"Retry-After": "3600"}), success()])
    with make_client(recorder, fake, rand=0.0, retry_after_cap=60.0) as client:
        client.upload(records(1))
    assert fake.sleeps == [60.0]


def test_retry_after_http_date_is_measured_against_the_server_date() -> None:
    fake = FakeTime()
    answer = httpx.Response(
        503,
        headers={
            "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
            "Retry-After": "Wed, 21 Oct 2015 07:28:12 GMT",
        },
    )
    with make_client(Recorder([answer, success()]), fake, rand=0.0) as client:
        client.upload(records(1))
    assert fake.sleeps == [12.0]


def test_longer_backoff_wins_over_a_shorter_retry_after() -> None:
    fake = FakeTime()
    answer = httpx.Response(503, headers={"Retry-After": "1"})
    with make_client(Recorder([answer, success()]), fake, rand=1.0, backoff_base=4.0) as client:
        client.upload(records(1))
    assert fake.sleeps == [4.0]


def test_unreadable_retry_after_falls_back_to_backoff() -> None:
    fake = FakeTime()
    answer = httpx.Response(503, headers={"Retry-After": "soon"})
    with make_client(Recorder([answer, success()]), fake, rand=1.0, backoff_base=0.5) as client:
        client.upload(records(1))
    assert fake.sleeps == [0.5]


def test_backoff_doubles_each_attempt_up_to_the_cap() -> None:
    fake = FakeTime()
    recorder = Recorder([httpx.Response(503)] * 7 + [success()])
    with make_client(
        recorder, fake, rand=1.0, backoff_base=0.5, backoff_cap=10.0, max_retries=7
    ) as client:
        assert client.upload(records(1)) == [OK]
    assert fake.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_is_full_jitter_scaled_by_random() -> None:
    fake = FakeTime()
    recorder = Recorder([httpx.Response(503)] * 3 + [success()])
    with make_client(recorder, fake, rand=0.25, backoff_base=2.0) as client:
        client.upload(records(1))
    assert fake.sleeps == [0.5, 1.0, 2.0]


def test_gives_up_after_max_retries_with_the_last_error() -> None:
    recorder = Recorder([httpx.Response(503)])
    with make_client(recorder, max_retries=5) as client:
        outcomes = client.upload(records(2))
        assert (client.requests, client.retries) == (6, 5)
    expected = Outcome(False, 503, "HTTP 503 Service Unavailable after 6 attempts")
    assert outcomes == [expected, expected]


def test_last_error_is_reported_when_failures_differ() -> None:
    recorder = Recorder([httpx.Response(503), httpx.Response(429), httpx.Response(502)])
    with make_client(recorder, max_retries=2) as client:
        outcomes = client.upload(records(1))
    assert outcomes == [Outcome(False, 502, "HTTP 502 Bad Gateway after 3 attempts")]


def test_zero_max_retries_sends_once() -> None:
    recorder = Recorder([httpx.Response(500)])
    with make_client(recorder, max_retries=0) as client:
        outcomes = client.upload(records(1))
    assert outcomes == [Outcome(False, 500, "HTTP 500 Internal Server Error after 1 attempt")]
    assert len(recorder.requests) == 1


def test_gives_up_when_the_next_wait_would_pass_max_total_seconds() -> None:
    fake = FakeTime()
    recorder = Recorder([httpx.Response(503)])
    with make_client(
        recorder, fake, rand=1.0, backoff_base=1.0, max_retries=100, max_total_seconds=10.0
    ) as client:
        outcomes = client.upload(records(1))
    # waits 1 + 2 + 4 = 7 s; the next 8 s would end past 10 s
    assert fake.sleeps == [1.0, 2.0, 4.0]
    assert outcomes == [Outcome(False, 503, "HTTP 503 Service Unavailable after 4 attempts")]


def test_gives_up_on_network_errors_with_no_status_code() -> None:
    recorder = Recorder([httpx.ConnectError("[Errno 111] Connection refused")])
    with make_client(recorder, max_retries=2) as client, pytest.raises(Unreachable) as raised:
        client.upload(records(1))  # never an answer in this client's life: out of reach
    assert str(raised.value) == f"cannot reach {BASE}: connection refused after 3 attempts"


def test_a_network_error_after_an_answer_fails_only_its_records() -> None:
    recorder = Recorder([success(), httpx.ConnectError("[Errno 111] Connection refused")])
    with make_client(recorder, max_retries=0) as client:
        assert client.upload(records(1))[0].ok
        (outcome,) = client.upload(records(1))
    assert outcome.code is None and not outcome.ok
    assert outcome.error == f"cannot reach {BASE}: connection refused after 1 attempt"


# --- answers -------------------------------------------------------------------------------


def unprocessed(*entries: dict) -> httpx.Response:
    return httpx.Response(
        200, json={"status": "partial", "processed": 0, "unprocessed": list(entries)}
    )


def test_partial_answer_fails_exactly_the_numbered_records() -> None:
    answer = unprocessed(
        {"status": "fail", "code": 516, "error": "Phone invalid. Skipped record number : 2"},
        {"status": "fail", "code": 515, "error": "Email invalid. Skipped record number : 4"},
    )
    with make_client(Recorder([answer])) as client:
        outcomes = client.upload(records(4))
    assert outcomes == [
        OK,
        Outcome(False, 516, "Phone invalid. Skipped record number : 2"),
        OK,
        Outcome(False, 515, "Email invalid. Skipped record number : 4"),
    ]


def test_partial_answer_without_number_is_mapped_by_echoed_identity() -> None:
    echoed = {"type": "profile", "identity": "user-1", "profileData": {"Gender": "X"}}
    answer = unprocessed(
        {"status": "fail", "code": 514, "error": "Gender invalid", "record": echoed}
    )
    with make_client(Recorder([answer])) as client:
        outcomes = client.upload(records(3))
    assert outcomes == [OK, Outcome(False, 514, "Gender invalid"), OK]


def test_out_of_range_record_number_falls_back_to_the_echoed_record() -> None:
    batch = records(3)
    answer = unprocessed(
        {"code": 523, "error": "Skipped record number : 99", "record": batch[2]},
    )
    with make_client(Recorder([answer])) as client:
        outcomes = client.upload(batch)
    assert [o.ok for o in outcomes] == [True, True, False]


def test_refusal_naming_no_record_fails_every_record_it_might_be() -> None:
    answer = unprocessed(
        {"code": 516, "error": "Phone invalid. Skipped record number : 1"},
        {"code": 555, "error": "something broke"},
    )
    with make_client(Recorder([answer])) as client:
        outcomes = client.upload(records(3))
    assert outcomes[0] == Outcome(False, 516, "Phone invalid. Skipped record number : 1")
    assert all(not o.ok and o.code == 555 for o in outcomes[1:])
    assert "something broke" in (outcomes[1].error or "")


def test_fail_answer_without_unprocessed_fails_all_with_the_body_code() -> None:
    answer = httpx.Response(200, json={"status": "fail", "code": 512, "error": "Bad structure"})
    with make_client(Recorder([answer])) as client:
        outcomes = client.upload(records(2))
    assert outcomes == [Outcome(False, 512, "Bad structure")] * 2


def test_unreadable_200_answer_fails_every_record() -> None:
    with make_client(Recorder([httpx.Response(200, text="<html>oops</html>")])) as client:
        outcomes = client.upload(records(2))
    assert outcomes == [Outcome(False, None, UNREADABLE_ANSWER)] * 2


def test_200_answer_without_a_status_fails_every_record() -> None:
    with make_client(Recorder([httpx.Response(200, json={"hello": 1})])) as client:
        assert client.upload(records(1)) == [Outcome(False, None, UNREADABLE_ANSWER)]


def test_delete_partial_answer_is_mapped_by_echoed_identity() -> None:
    answer = unprocessed({"code": 404, "error": "No such profile", "record": "b"})
    with make_client(Recorder([answer])) as client:
        outcomes = client.delete(["a", "b", "c"])
    assert outcomes == [OK, Outcome(False, 404, "No such profile"), OK]


def test_delete_fail_answer_fails_every_identity() -> None:
    answer = httpx.Response(200, json={"status": "fail", "error": "Nope", "code": 400})
    with make_client(Recorder([answer])) as client:
        assert client.delete(["a", "b"]) == [Outcome(False, 400, "Nope")] * 2


# --- splitting on 400 ----------------------------------------------------------------------


def refuse_batches_with(bad_identity: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        batch = orjson.loads(request.content)["d"]
        if any(record["identity"] == bad_identity for record in batch):
            return httpx.Response(400, json={"status": "fail", "error": "Malformed request"})
        return success()

    return handler


def test_400_split_isolates_one_bad_record_among_1000() -> None:
    recorder = Recorder([refuse_batches_with("user-637")])
    with make_client(recorder) as client:
        outcomes = client.upload(records(1000))
    assert outcomes[637] == Outcome(False, 400, "Malformed request")
    assert sum(o.ok for o in outcomes) == 999
    # one request, then two per halving step down to the single record (ceil(log2 1000) = 10)
    assert len(recorder.requests) <= 1 + 2 * 10
    landed = [r["identity"] for body in recorder.bodies() for r in body["d"]]
    assert sorted(set(landed)) == sorted(f"user-{n}" for n in range(1000))


def test_400_on_a_single_record_fails_it_with_the_body_error() -> None:
    recorder = Recorder([refuse_batches_with("user-0")])
    with make_client(recorder) as client:
        assert client.upload(records(1)) == [Outcome(False, 400, "Malformed request")]
    assert len(recorder.requests) == 1


def test_400_on_delete_batch_isolates_the_bad_identity() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "bad" in orjson.loads(request.content)["identity"]:
            return httpx.Response(400, json={"status": "fail", "error": "Invalid identity"})
        return httpx.Response(200, json={"status": "success"})

    with make_client(Recorder([handler])) as client:
        outcomes = client.delete(["a", "b", "bad", "c"])
    assert outcomes == [OK, OK, Outcome(False, 400, "Invalid identity"), OK]


# --- credentials ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_raise_naming_project_and_status(status: int) -> None:
    answer = httpx.Response(status, json={"status": "fail", "error": "Invalid Credentials"})
    with make_client(Recorder([answer])) as client, pytest.raises(CredentialsRejected) as raised:
        client.upload(records(1))
    assert str(raised.value) == (
        f"CleverTap refused the credentials for project {PROJECT} "
        f"(HTTP {status}: Invalid Credentials)"
    )


def test_after_refusal_the_client_refuses_without_sending() -> None:
    recorder = Recorder([httpx.Response(401), success()])
    with make_client(recorder) as client:
        with pytest.raises(CredentialsRejected):
            client.upload(records(1))
        assert client.rejected
        with pytest.raises(CredentialsRejected):
            client.upload(records(1))
        with pytest.raises(CredentialsRejected):
            client.delete(["a"])
    assert len(recorder.requests) == 1


def test_refusal_during_retries_stops_the_batch() -> None:
    recorder = Recorder([httpx.Response(503), httpx.Response(401)])
    with make_client(recorder) as client, pytest.raises(CredentialsRejected):
        client.upload(records(1))
    assert len(recorder.requests) == 2


def test_client_is_not_rejected_before_any_refusal() -> None:
    with make_client(Recorder([success()])) as client:
        client.upload(records(1))
        assert not client.rejected


# --- concurrency ---------------------------------------------------------------------------


def test_429_halves_the_limit() -> None:
    recorder = Recorder([httpx.Response(429), success()])
    with make_client(recorder, concurrency=8) as client:
        client.upload(records(1))
        assert client.limit == 4


def test_twenty_successes_in_a_row_raise_the_limit_by_one_up_to_the_setting() -> None:
    recorder = Recorder([httpx.Response(429), success()])
    with make_client(recorder, concurrency=6) as client:
        client.upload(records(1))  # 429 then success: limit 3, one success counted
        for _ in range(19):
            client.upload(records(1))
        assert client.limit == 4
        for _ in range(200):
            client.upload(records(1))
        assert client.limit == 6


def test_limit_never_drops_below_one() -> None:
    recorder = Recorder([httpx.Response(429)] * 5 + [success()])
    with make_client(recorder, concurrency=2) as client:
        client.upload(records(1))
        assert client.limit == 1


def test_a_wave_of_429s_sent_under_one_limit_halves_it_once() -> None:
    limiter = _AdaptiveLimiter(8)
    tickets = [limiter.acquire() for _ in range(8)]
    for ticket in tickets:
        limiter.release(ticket, _Signal.THROTTLED)
    assert limiter.limit == 4


def test_requests_in_flight_never_exceed_the_concurrency_setting() -> None:
    lock = threading.Lock()
    seen = {"now": 0, "max": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            seen["now"] += 1
            seen["max"] = max(seen["max"], seen["now"])
        time.sleep(0.002)  # hold the slot so the threads overlap
        with lock:
            seen["now"] -= 1
        return success()

    with make_client(Recorder([handler]), concurrency=3) as client:
        threads = [
            threading.Thread(target=lambda: [client.upload(records(1)) for _ in range(5)])
            for _ in range(15)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.requests == 75
        assert seen["max"] <= 3
        assert 1 <= client.peak_in_flight <= 3


# --- settings and secrets ------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [0, 16])
def test_settings_refuse_concurrency_outside_1_to_15(concurrency: int) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        settings(concurrency=concurrency)


def test_passcode_never_shows_in_settings_or_client_repr() -> None:
    with make_client(Recorder([success()])) as client:
        shown = [repr(settings()), str(settings()), repr(client), str(client)]
    assert all(SENTINEL not in text for text in shown)


def test_passcode_never_shows_in_a_refusal() -> None:
    answer = httpx.Response(401, json={"error": f"Passcode {SENTINEL} is wrong"})
    with make_client(Recorder([answer])) as client:
        with pytest.raises(CredentialsRejected) as raised:
            client.upload(records(1))
        assert SENTINEL not in str(raised.value)
        with pytest.raises(CredentialsRejected) as again:
            client.upload(records(1))
        assert SENTINEL not in str(again.value)


def test_passcode_never_shows_in_failed_outcomes() -> None:
    refused = httpx.Response(422, json={"error": f"echo {SENTINEL}"})
    partial = unprocessed({"code": 555, "error": f"echo {SENTINEL}. Skipped record number : 1"})
    for answer in (refused, partial):
        with make_client(Recorder([answer])) as client:
            outcomes = client.upload(records(1))
        assert not outcomes[0].ok and SENTINEL not in (outcomes[0].error or "")


def test_passcode_never_shows_in_connection_failures() -> None:
    # a real closed port: the error comes from the OS through httpx, not from a script
    client = CleverTapClient(
        settings(base_url="http://127.0.0.1:9", max_retries=1),
        sleep=lambda seconds: None,
    )
    with client, pytest.raises(Unreachable) as unreachable:
        client.upload(records(1))
    assert "connection refused" in str(unreachable.value)
    assert SENTINEL not in str(unreachable.value) and SENTINEL not in repr(unreachable.value)
    with pytest.raises(Unreachable) as raised:
        check_credentials("http://127.0.0.1:9", PROJECT, SENTINEL, timeout=2)
    assert SENTINEL not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_passcode_with_characters_a_header_cannot_carry_is_refused_without_quoting_it() -> None:
    with pytest.raises(ConfigError) as raised:
        CleverTapClient(settings(passcode="pass\ncode-é"))
    assert "code-é" not in str(raised.value)


# --- check_credentials ---------------------------------------------------------------------


def check(answer: httpx.Response | Exception) -> None:
    check_credentials(BASE, PROJECT, SENTINEL, transport=httpx.MockTransport(Recorder([answer])))


@pytest.mark.parametrize("status", [200, 202, 400, 413, 422])
def test_check_credentials_accepts_2xx_and_refusals_of_the_body(status: int) -> None:
    check(httpx.Response(status, json={"status": "fail"}))


@pytest.mark.parametrize("status", [404, 405, 408, 429])
def test_check_credentials_cannot_tell_from_a_wrong_path_or_a_busy_server(status: int) -> None:
    with pytest.raises(Unreachable, match=str(status)):
        check(httpx.Response(status, json={"status": "fail"}))


def test_check_credentials_sends_one_empty_upload_with_the_credentials() -> None:
    recorder = Recorder([success()])
    check_credentials(BASE, PROJECT, SENTINEL, transport=httpx.MockTransport(recorder))
    (request,) = recorder.requests
    assert str(request.url) == BASE + "/1/upload"
    assert orjson.loads(request.content) == {"d": []}
    assert request.headers["X-CleverTap-Account-Id"] == PROJECT
    assert request.headers["X-CleverTap-Passcode"] == SENTINEL


@pytest.mark.parametrize("status", [401, 403])
def test_check_credentials_raises_on_refusal(status: int) -> None:
    answer = httpx.Response(status, json={"status": "fail", "error": "Invalid Credentials"})
    with pytest.raises(CredentialsRejected) as raised:
        check(answer)
    assert str(raised.value) == (
        f"CleverTap refused the credentials for project {PROJECT} "
        f"(HTTP {status}: Invalid Credentials)"
    )


def test_check_credentials_refusal_without_body_names_the_status() -> None:
    with pytest.raises(CredentialsRejected, match=r"\(HTTP 401: Unauthorized\)"):
        check(httpx.Response(401))


def test_check_credentials_calls_a_5xx_unreachable() -> None:
    with pytest.raises(Unreachable, match="HTTP 503 Service Unavailable"):
        check(httpx.Response(503))


def test_check_credentials_calls_a_timeout_unreachable() -> None:
    with pytest.raises(Unreachable, match="no answer within 10 s"):
        check(httpx.ReadTimeout("timed out"))


def test_check_credentials_calls_a_closed_port_unreachable() -> None:
    with pytest.raises(Unreachable) as raised:
        check_credentials("http://127.0.0.1:9", PROJECT, SENTINEL, timeout=2)
    assert str(raised.value) == "cannot reach http://127.0.0.1:9: connection refused"


@pytest.mark.parametrize("url", ["eu1.api.clevertap.com", "ftp://example.com", "http://", ""])
def test_endpoint_that_is_not_an_http_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        CleverTapClient(settings(base_url=url))


def test_record_too_deep_for_json_inside_the_envelope_fails_alone() -> None:
    # deep enough to fail only once wrapped in {"d": [...]}
    deep: dict = {}
    inner = deep
    for _ in range(251):
        inner["x"] = {}
        inner = inner["x"]
    batch = records(2)
    batch[0]["profileData"] = deep
    recorder = Recorder([success()])
    with make_client(recorder) as client:
        outcomes = client.upload(batch)
    assert not outcomes[0].ok and outcomes[1] == OK
    assert recorder.bodies() == [{"d": [batch[1]]}]


def test_payload_too_large_splits_the_batch_like_a_400() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        size = len(orjson.loads(request.content)["d"])
        return httpx.Response(413) if size > 2 else success()

    with make_client(answer) as client:
        outcomes = client.upload(records(8))
    assert all(o.ok for o in outcomes) and client.requests == 7  # 8 -> 4+4 -> 2+2+2+2


def test_a_body_refused_whatever_it_holds_costs_a_bounded_number_of_requests() -> None:
    with make_client(lambda request: httpx.Response(400)) as client:
        outcomes = client.upload(records(1000))
    assert all(not o.ok and o.code == 400 for o in outcomes)
    # The budget (24 * log2 + 1), plus one request per level of the halving under way: not 1999.
    assert client.requests <= 24 * 10 + 1 + 10
    assert any("too many refusals to isolate" in (o.error or "") for o in outcomes)


def test_a_lost_answer_is_not_retried_for_incr_but_is_for_plain_updates() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("no answer", request=request)

    incr = [{"type": "profile", "identity": "u1", "profileData": {"visits": {"$incr": 1}}}]
    with make_client(timeout, max_retries=3) as client, pytest.raises(Unreachable) as raised:
        client.upload(incr)
    assert client.requests == 1 and "may have been applied" in str(raised.value)
    with make_client(timeout, max_retries=3) as client, pytest.raises(Unreachable):
        client.upload(records(1))  # retried, then out of reach: it never answered at all
    assert client.requests == 4


def test_a_connection_never_made_is_retried_even_for_incr() -> None:
    calls = []

    def refuse_then_answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return success()

    incr = [{"type": "profile", "identity": "u1", "profileData": {"visits": {"$incr": 1}}}]
    with make_client(refuse_then_answer, max_retries=3) as client:
        assert client.upload(incr) == [Outcome(True)]
        assert client.requests == 2


def test_requests_waiting_for_a_slot_are_not_sent_after_a_refusal() -> None:
    def slow_refusal(request: httpx.Request) -> httpx.Response:
        time.sleep(0.05)  # the others queue up behind the one slot meanwhile
        return httpx.Response(401, json={"status": "fail", "error": "Invalid Credentials"})

    client = CleverTapClient(settings(concurrency=1), transport=httpx.MockTransport(slow_refusal))
    refused = []

    def send() -> None:
        try:
            client.upload(records(1))
        except CredentialsRejected:
            refused.append(True)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.requests == 1 and len(refused) == 8


def test_an_endpoint_password_never_reaches_a_message() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    endpoint = "http://me:proxy-s3cret@127.0.0.1:9"
    client = CleverTapClient(
        settings(base_url=endpoint, max_retries=0), transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(Unreachable) as unreachable:  # no answer ever: nothing can be delivered
        client.upload(records(1))
    assert "proxy-s3cret" not in str(unreachable.value) and "me:****@" in str(unreachable.value)
    assert "proxy-s3cret" not in repr(client)
    with pytest.raises(Unreachable) as raised:
        check_credentials(endpoint, PROJECT, SENTINEL, transport=httpx.MockTransport(refuse))
    assert "proxy-s3cret" not in str(raised.value)
