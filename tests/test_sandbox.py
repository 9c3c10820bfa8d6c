"""The loopback CleverTap sandbox, over real sockets: the API rules, faults, admin and serve()."""

from __future__ import annotations

import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

import ctcli.sandbox.server
from ctcli.errors import ConfigError
from ctcli.sandbox import Sandbox, serve

PROJECT_ID = "TEST-ACC"
PASSCODE = "test-passcode"
HEADERS = {"X-CleverTap-Account-Id": PROJECT_ID, "X-CleverTap-Passcode": PASSCODE}
UPLOAD = "/1/upload"
DELETE = "/1/delete/profiles.json"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.url, headers=HEADERS, timeout=10) as running:
        yield running


def profile(identity: str, **data: Any) -> dict[str, Any]:
    return {"type": "profile", "identity": identity, "profileData": data}


def upload(client: httpx.Client, *records: dict[str, Any]) -> httpx.Response:
    return client.post(UPLOAD, json={"d": list(records)})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- credentials -----------------------------------------------------------------------------


def test_upload_without_credentials_is_401_invalid_credentials(sandbox: Sandbox) -> None:
    response = httpx.post(sandbox.url + UPLOAD, json={"d": []})
    assert response.status_code == 401
    assert response.json() == {"status": "fail", "error": "Invalid Credentials", "code": 401}


@pytest.mark.parametrize(
    "headers",
    [
        {"X-CleverTap-Account-Id": PROJECT_ID, "X-CleverTap-Passcode": "wrong"},
        {"X-CleverTap-Account-Id": "OTHER-ACC", "X-CleverTap-Passcode": PASSCODE},
        {"X-CleverTap-Account-Id": PROJECT_ID},
    ],
    ids=["wrong-passcode", "wrong-account", "no-passcode"],
)
def test_wrong_credentials_are_401(sandbox: Sandbox, headers: dict[str, str]) -> None:
    response = httpx.post(sandbox.url + UPLOAD, json={"d": []}, headers=headers)
    assert response.status_code == 401


def test_delete_needs_credentials_too(sandbox: Sandbox) -> None:
    sandbox_url = sandbox.url + DELETE
    assert httpx.post(sandbox_url, json={"identity": "u"}).status_code == 401
    assert sandbox.deleted() == []


def test_refused_credentials_store_nothing(sandbox: Sandbox) -> None:
    httpx.post(sandbox.url + UPLOAD, json={"d": [profile("u1", Name="A")]})
    assert sandbox.profiles() == {}


# --- upload: the request as a whole ---------------------------------------------------------


def test_empty_upload_succeeds_with_nothing_processed(client: httpx.Client) -> None:
    response = upload(client)
    assert response.status_code == 200
    assert response.json() == {"status": "success", "processed": 0, "unprocessed": []}


def test_body_that_is_not_json_is_malformed(client: httpx.Client) -> None:
    response = client.post(UPLOAD, content=b"{not json")
    assert response.status_code == 400
    assert response.json() == {"status": "fail", "error": "Malformed request", "code": 400}


@pytest.mark.parametrize("body", [{}, {"d": {}}, {"d": "x"}, [], "d"], ids=repr)
def test_body_without_a_d_list_is_malformed(client: httpx.Client, body: object) -> None:
    response = client.post(UPLOAD, json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "Malformed request"


def test_1000_records_are_accepted(sandbox: Sandbox, client: httpx.Client) -> None:
    response = upload(client, *(profile(f"u{n}", Name="N") for n in range(1000)))
    assert response.json() == {"status": "success", "processed": 1000, "unprocessed": []}
    assert len(sandbox.profiles()) == 1000


def test_1001_records_are_refused_naming_the_limit(sandbox: Sandbox, client: httpx.Client) -> None:
    response = upload(client, *(profile(f"u{n}", Name="N") for n in range(1001)))
    assert response.status_code == 400
    assert "1000" in response.json()["error"]
    assert sandbox.profiles() == {}


# --- upload: per-record rules ----------------------------------------------------------------

BAD_RECORDS = [
    ({"type": "user", "identity": "x", "profileData": {}}, 524),
    ({"identity": "x", "profileData": {}}, 524),
    ({"type": "event", "identity": "x", "evtData": {}}, 509),
    ({"type": "event", "identity": "x", "evtName": ""}, 509),
    ({"type": "profile", "profileData": {"Name": "A"}}, 523),
    ({"type": "profile", "identity": "", "profileData": {}}, 523),
    ({"type": "profile", "identity": 42, "profileData": {}}, 523),
    ({"type": "profile", "identity": "x", "ts": "1700000000", "profileData": {}}, 525),
    ({"type": "profile", "identity": "x", "ts": 1700000000.5, "profileData": {}}, 525),
    ({"type": "profile", "identity": "x", "ts": 1700000000000, "profileData": {}}, 525),
    ({"type": "profile", "identity": "x", "profileData": "Name=A"}, 512),
    (profile("x", Gender="Male"), 514),
    (profile("x", Email="not-an-email"), 515),
    (profile("x", Email="a@localhost"), 515),
    (profile("x", Phone="4155551234"), 516),
    (profile("x", Phone="+0155551234"), 516),
    (profile("x", Phone="+1415"), 516),
    (profile("x", Phone=14155551234), 516),
    (profile("x", Employed="yes"), 517),
    (profile("x", Education="PhD"), 518),
    (profile("x", Married=True), 519),
]


@pytest.mark.parametrize(("record", "code"), BAD_RECORDS, ids=[str(c) for _, c in BAD_RECORDS])
def test_bad_record_is_unprocessed_with_its_code_and_number(
    client: httpx.Client, record: dict[str, Any], code: int
) -> None:
    answer = upload(client, profile("ok-1", Name="A"), record, profile("ok-3", Name="C")).json()
    assert answer["status"] == "partial"
    assert answer["processed"] == 2
    [entry] = answer["unprocessed"]
    assert entry["status"] == "fail"
    assert entry["code"] == code
    assert entry["error"].endswith("Skipped record number : 2")
    assert entry["record"] == record


def test_record_number_is_the_1_based_position_in_d(client: httpx.Client) -> None:
    answer = upload(
        client, profile("a", Name="A"), profile("b", Name="B"), profile("c", Phone="555")
    ).json()
    assert answer["unprocessed"][0]["error"] == "Phone number invalid. Skipped record number : 3"


def test_upload_where_every_record_fails_is_status_fail(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    answer = upload(client, profile("a", Gender="X"), profile("b", Married="maybe")).json()
    assert answer["status"] == "fail"
    assert answer["processed"] == 0
    assert [entry["code"] for entry in answer["unprocessed"]] == [514, 519]
    assert sandbox.profiles() == {}


def test_bad_records_are_not_stored_and_good_ones_are(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    upload(client, profile("good", Name="A"), profile("bad", Email="nope"))
    assert set(sandbox.profiles()) == {"good"}


@pytest.mark.parametrize(
    "data",
    [
        {"Gender": "O"},
        {"Gender": "U"},
        {"Email": "jane.doe+tag@example.co.uk"},
        {"Phone": "+919876543210"},
        {"Employed": "N"},
        {"Education": "Graduate"},
        {"Married": "Y"},
        {"Phone": {"$delete": 1}},
    ],
    ids=repr,
)
def test_valid_standard_field_values_are_accepted(
    client: httpx.Client, data: dict[str, Any]
) -> None:
    answer = upload(client, {"type": "profile", "identity": "u", "profileData": data}).json()
    assert answer == {"status": "success", "processed": 1, "unprocessed": []}


@pytest.mark.parametrize("key", ["objectId", "FBID", "GPID"])
def test_other_identity_keys_are_accepted(sandbox: Sandbox, client: httpx.Client, key: str) -> None:
    record = {"type": "profile", key: "alt-1", "profileData": {"Name": "A"}}
    assert upload(client, record).json()["status"] == "success"
    assert "alt-1" in sandbox.profiles()


def test_event_record_is_processed_but_not_stored_as_profile(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    event = {"type": "event", "identity": "u", "evtName": "Charged", "evtData": {"Amount": 3}}
    assert upload(client, event).json() == {"status": "success", "processed": 1, "unprocessed": []}
    assert sandbox.profiles() == {}


# --- upload: storage ---------------------------------------------------------------------------


def test_uploaded_profile_is_stored_with_its_ts(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, {**profile("u1", Name="Jane", Phone="+14155551234"), "ts": 1136225047})
    assert sandbox.profiles() == {
        "u1": {"profileData": {"Name": "Jane", "Phone": "+14155551234"}, "ts": 1136225047}
    }


def test_profile_without_ts_is_stamped_with_the_upload_time(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    before = int(time.time())
    upload(client, profile("u1", Name="Jane"))
    after = int(time.time())
    assert before <= sandbox.profiles()["u1"]["ts"] <= after


def test_second_upload_merges_into_the_profile(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, {**profile("u1", Name="Jane", Plan="free"), "ts": 100})
    upload(client, profile("u1", Plan="pro", Seats=3))
    stored = sandbox.profiles()["u1"]
    assert stored["profileData"] == {"Name": "Jane", "Plan": "pro", "Seats": 3}
    assert stored["ts"] == 100


def test_add_and_remove_operators_edit_multi_value_properties(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    upload(client, profile("u1", Tags=["a", "b"]))
    upload(client, profile("u1", Tags={"$add": ["b", "c"]}))
    upload(client, profile("u1", Tags={"$remove": ["a"]}))
    assert sandbox.profiles()["u1"]["profileData"]["Tags"] == ["b", "c"]


def test_incr_and_decr_operators_change_numbers(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("u1", Score=10, Fresh={"$incr": 2}))
    upload(client, profile("u1", Score={"$incr": 5}))
    upload(client, profile("u1", Score={"$decr": 3}))
    assert sandbox.profiles()["u1"]["profileData"] == {"Score": 12, "Fresh": 2}


def test_delete_operator_removes_a_property(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("u1", Name="Jane", Phone="+14155551234"))
    upload(client, profile("u1", Phone={"$delete": 1}))
    assert sandbox.profiles()["u1"]["profileData"] == {"Name": "Jane"}


def test_profiles_returns_a_copy(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("u1", Name="Jane"))
    sandbox.profiles()["u1"]["profileData"]["Name"] = "changed"
    assert sandbox.profiles()["u1"]["profileData"]["Name"] == "Jane"


# --- delete -------------------------------------------------------------------------------------


def test_delete_by_identity_list_removes_profiles_and_records_them(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    upload(client, profile("a", Name="A"), profile("b", Name="B"), profile("c", Name="C"))
    response = client.post(DELETE, json={"identity": ["a", "c", "never-uploaded"]})
    assert response.status_code == 200
    assert response.json() == {"status": "success"}
    assert set(sandbox.profiles()) == {"b"}
    assert sandbox.deleted() == ["a", "c", "never-uploaded"]


def test_delete_by_a_single_identity_string(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("a", Name="A"))
    assert client.post(DELETE, json={"identity": "a"}).json() == {"status": "success"}
    assert sandbox.profiles() == {}
    assert sandbox.deleted() == ["a"]


def test_delete_by_guid(sandbox: Sandbox, client: httpx.Client) -> None:
    response = client.post(DELETE, json={"guid": ["__g1", "__g2"]})
    assert response.json() == {"status": "success"}
    assert sandbox.deleted() == ["__g1", "__g2"]


@pytest.mark.parametrize("body", [{"identity": "a", "guid": "g"}, {}], ids=["both", "neither"])
def test_delete_needs_exactly_one_of_identity_or_guid(
    sandbox: Sandbox, client: httpx.Client, body: dict[str, str]
) -> None:
    response = client.post(DELETE, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert sandbox.deleted() == []


def test_delete_of_100_identities_is_accepted(sandbox: Sandbox, client: httpx.Client) -> None:
    response = client.post(DELETE, json={"identity": [f"u{n}" for n in range(100)]})
    assert response.status_code == 200
    assert len(sandbox.deleted()) == 100


def test_delete_of_101_identities_is_refused_naming_the_limit(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    response = client.post(DELETE, json={"identity": [f"u{n}" for n in range(101)]})
    assert response.status_code == 400
    assert "100" in response.json()["error"]
    assert sandbox.deleted() == []


# --- routing and HTTP -----------------------------------------------------------------------


def test_unknown_path_is_404_json(client: httpx.Client) -> None:
    response = client.post("/1/nothing-here", json={})
    assert response.status_code == 404
    assert response.json()["code"] == 404


def test_every_answer_carries_content_length(client: httpx.Client) -> None:
    for response in (upload(client), client.get("/nope"), client.post(UPLOAD, content=b"x")):
        assert response.headers["Content-Length"] == str(len(response.content))


def test_one_keep_alive_connection_serves_many_requests(sandbox: Sandbox) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=10)
    try:
        headers = {**HEADERS, "Content-Type": "application/json"}
        sockets = []
        for _ in range(3):
            connection.request("POST", UPLOAD, body=b'{"d": []}', headers=headers)
            assert connection.getresponse().read() != b""
            sockets.append(connection.sock)
        assert sockets[0] is not None
        assert sockets[0] is sockets[1] is sockets[2]
    finally:
        connection.close()


def test_chunked_upload_body_is_read(sandbox: Sandbox, client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"d": [{"type": "profile", '
        yield b'"identity": "u1", "profileData": {"Name": "A"}}]}'

    response = client.post(UPLOAD, content=chunks())
    assert response.json()["processed"] == 1
    assert "u1" in sandbox.profiles()


# --- concurrency ----------------------------------------------------------------------------

WAIT = 30  # seconds: a guard against a hang, never a timing assertion


@dataclass
class Posted:
    """Uploads posted from their own threads, each on its own connection."""

    threads: list[threading.Thread]
    statuses: list[int | str]
    lock: threading.Lock

    def count(self, status: int | str) -> int:
        with self.lock:
            return self.statuses.count(status)

    def join(self) -> list[int | str]:
        for thread in self.threads:
            thread.join(timeout=WAIT)
            assert not thread.is_alive(), "a request never came back"
        return list(self.statuses)


def post_in_threads(sandbox: Sandbox, count: int, body: dict[str, Any] | None = None) -> Posted:
    """Start `count` uploads, each from its own thread and connection; they answer when they may."""
    posted = Posted([], [], threading.Lock())

    def one() -> None:
        status: int | str
        try:
            with httpx.Client(base_url=sandbox.url, headers=HEADERS, timeout=WAIT * 2) as own:
                status = own.post(UPLOAD, json=body or {"d": []}).status_code
        except httpx.TransportError as exc:
            status = type(exc).__name__
        with posted.lock:
            posted.statuses.append(status)

    posted.threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in posted.threads:
        thread.start()
    return posted


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT  # a guard against a hang, not an assertion
    while not condition():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.005)


def test_requests_beyond_15_in_flight_get_429(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)  # the first 15 stay in flight until released
    posted = post_in_threads(sandbox, 18)
    assert sandbox.wait_held(15, timeout=WAIT)
    wait_until(lambda: posted.count(429) == 3)
    assert sandbox.stats()["held"] == 15  # the 429s came back while all 15 were still in flight
    assert posted.count(200) == 0

    assert sandbox.release() == 15
    assert Counter(posted.join()) == {200: 15, 429: 3}
    assert sandbox.stats()["max_in_flight_seen"] == 15


def test_429_body_says_too_many_concurrent_requests() -> None:
    # max_in_flight=1 and a held request make a second request certain to exceed the limit.
    with Sandbox(project_id=PROJECT_ID, passcode=PASSCODE, max_in_flight=1) as narrow:
        narrow.set_faults(hold=True)
        slow = post_in_threads(narrow, 1)
        assert narrow.wait_held(1, timeout=WAIT)
        response = httpx.post(narrow.url + UPLOAD, json={"d": []}, headers=HEADERS)
        assert narrow.stats()["held"] == 1  # the slow one was still in flight
        narrow.release()
        assert slow.join() == [200]
    assert response.status_code == 429
    assert response.json() == {
        "status": "fail",
        "error": "Too many concurrent requests",
        "code": 429,
    }


def test_held_requests_count_as_in_flight(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    posted = post_in_threads(sandbox, 3)
    assert sandbox.wait_held(3, timeout=WAIT)
    assert sandbox.stats()["max_in_flight_seen"] == 3
    sandbox.release()
    assert posted.join() == [200, 200, 200]


def test_latency_is_waited_out_in_flight_before_the_request_is_processed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[tuple[float, dict[str, Any]]] = []
    with Sandbox(project_id=PROJECT_ID, passcode=PASSCODE, latency=0.25) as slow:

        def sleep(seconds: float) -> None:  # what the sandbox would wait, and its state then
            waits.append((seconds, slow.stats()))

        monkeypatch.setattr(
            ctcli.sandbox.server, "time", SimpleNamespace(sleep=sleep, time=time.time)
        )
        slow.set_faults(latency=0.5)  # added to the sandbox's own latency
        with httpx.Client(base_url=slow.url, headers=HEADERS, timeout=WAIT) as own:
            assert upload(own, profile("u1", Name="A")).status_code == 200
    [(seconds, stats)] = waits
    assert seconds == 0.75
    assert stats["max_in_flight_seen"] == 1  # in flight while it waited
    assert stats["upload_requests"] == 0  # and not yet processed


# --- the hold gate ------------------------------------------------------------------------------


def test_a_held_upload_is_not_processed_until_released(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    posted = post_in_threads(sandbox, 1, {"d": [profile("u1", Name="A")]})
    assert sandbox.wait_held(1, timeout=WAIT)
    assert sandbox.profiles() == {}
    assert sandbox.stats()["upload_requests"] == 0
    assert posted.statuses == []

    assert sandbox.release() == 1
    assert posted.join() == [200]
    assert set(sandbox.profiles()) == {"u1"}
    assert sandbox.stats()["held"] == 0


def test_holding_stays_on_after_a_release(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    first = post_in_threads(sandbox, 1)
    assert sandbox.wait_held(1, timeout=WAIT)
    sandbox.release()
    assert first.join() == [200]

    second = post_in_threads(sandbox, 1)
    assert sandbox.wait_held(1, timeout=WAIT)  # held again: the release did not switch it off
    assert second.statuses == []
    sandbox.release()
    assert second.join() == [200]


def test_wait_held_counts_only_requests_held_since_the_last_release(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    first = post_in_threads(sandbox, 2)
    assert sandbox.wait_held(2, timeout=WAIT)
    assert sandbox.release() == 2
    assert sandbox.stats()["held"] == 0
    assert not sandbox.wait_held(1, timeout=0.05)  # nothing is held until another request comes
    assert first.join() == [200, 200]


@pytest.mark.parametrize(
    "let_go",
    [Sandbox.clear_faults, Sandbox.reset, lambda s: s.set_faults(latency=0)],
    ids=["clear_faults", "reset", "set_faults-without-hold"],
)
def test_switching_hold_off_lets_held_requests_go(sandbox: Sandbox, let_go: Any) -> None:
    sandbox.set_faults(hold=True)
    posted = post_in_threads(sandbox, 2)
    assert sandbox.wait_held(2, timeout=WAIT)
    let_go(sandbox)
    assert posted.join() == [200, 200]
    assert sandbox.stats()["held"] == 0
    assert upload_status(sandbox) == 200  # and later requests are not held


def test_setting_hold_again_keeps_held_requests_held(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    posted = post_in_threads(sandbox, 1)
    assert sandbox.wait_held(1, timeout=WAIT)
    sandbox.set_faults(hold=True, fail_every=5)
    assert sandbox.stats()["held"] == 1
    assert posted.statuses == []
    sandbox.release()
    assert posted.join() == [200]


def test_a_released_request_goes_on_under_the_faults_it_was_admitted_with(
    sandbox: Sandbox,
) -> None:
    sandbox.set_faults(hold=True, fail_every=1, fail_status=503)
    posted = post_in_threads(sandbox, 1)
    assert sandbox.wait_held(1, timeout=WAIT)
    sandbox.clear_faults()
    assert posted.join() == [503]


def test_refused_credentials_and_429s_are_never_held(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    assert httpx.post(sandbox.url + UPLOAD, json={"d": []}, timeout=WAIT).status_code == 401
    with Sandbox(project_id=PROJECT_ID, passcode=PASSCODE, max_in_flight=1) as narrow:
        narrow.set_faults(hold=True)
        held = post_in_threads(narrow, 1)
        assert narrow.wait_held(1, timeout=WAIT)
        assert upload_status(narrow) == 429
        assert narrow.stats()["held"] == 1
        narrow.release()
        assert held.join() == [200]
    assert sandbox.stats()["held"] == 0


def test_admin_endpoints_hold_and_release(sandbox: Sandbox) -> None:
    answer = httpx.post(sandbox.url + "/_sandbox/faults", json={"hold": True}, timeout=WAIT)
    assert answer.json()["faults"]["hold"] is True
    posted = post_in_threads(sandbox, 2)
    wait_until(lambda: admin_state(sandbox)["stats"]["held"] == 2)

    released = httpx.post(sandbox.url + "/_sandbox/release", timeout=WAIT)

    assert released.json() == {"status": "success", "released": 2}
    assert posted.join() == [200, 200]
    assert admin_state(sandbox)["stats"]["held"] == 0


def test_stop_lets_held_requests_go(sandbox: Sandbox) -> None:
    sandbox.set_faults(hold=True)
    posted = post_in_threads(sandbox, 1)
    assert sandbox.wait_held(1, timeout=WAIT)
    sandbox.stop()
    posted.join()  # it came back, answered or cut off: no thread is left waiting forever
    assert sandbox.stats()["held"] == 0


def upload_status(sandbox: Sandbox) -> int:
    return httpx.post(
        sandbox.url + UPLOAD, json={"d": []}, headers=HEADERS, timeout=WAIT
    ).status_code


def admin_state(sandbox: Sandbox) -> dict[str, Any]:
    return httpx.get(sandbox.url + "/_sandbox/state?profiles=0", timeout=WAIT).json()


# --- faults -----------------------------------------------------------------------------------


def test_fail_every_answers_every_nth_request_without_processing_it(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.set_faults(fail_every=3)
    statuses = [upload(client, profile(f"u{n}", Name="N")).status_code for n in range(1, 7)]
    assert statuses == [200, 200, 500, 200, 200, 500]
    assert set(sandbox.profiles()) == {"u1", "u2", "u4", "u5"}


def test_failure_carries_a_json_body_and_retry_after(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.set_faults(fail_every=1, fail_status=503, retry_after=2)
    response = upload(client)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert response.json()["code"] == 503


def test_failure_has_no_retry_after_unless_set(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_faults(fail_every=1, fail_status=429)
    response = upload(client)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_fail_body_replaces_the_default_body(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_faults(fail_every=1, fail_status=502, fail_body={"oops": True})
    assert upload(client).json() == {"oops": True}


def test_drop_every_closes_the_connection_without_an_answer(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.set_faults(drop_every=2)
    assert upload(client, profile("u1", Name="A")).status_code == 200
    with pytest.raises(httpx.TransportError):
        upload(client, profile("u2", Name="B"))
    assert upload(client, profile("u3", Name="C")).status_code == 200
    assert set(sandbox.profiles()) == {"u1", "u3"}
    assert sandbox.stats()["dropped"] == 1


def outcomes(client: httpx.Client, count: int) -> list[int | str]:
    results: list[int | str] = []
    for _ in range(count):
        try:
            results.append(upload(client).status_code)
        except httpx.TransportError:
            results.append("dropped")
    return results


def test_drop_and_fail_share_one_counter_and_drop_wins(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.set_faults(fail_every=2, drop_every=3)
    assert outcomes(client, 6) == [200, 500, "dropped", 500, 200, "dropped"]


def test_set_faults_restarts_the_request_counter(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_faults(fail_every=2)
    upload(client)
    sandbox.set_faults(fail_every=2)
    assert outcomes(client, 2) == [200, 500]


def test_refused_credentials_do_not_advance_the_fault_counter(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.set_faults(fail_every=2)
    httpx.post(sandbox.url + UPLOAD, json={"d": []})
    assert outcomes(client, 2) == [200, 500]


def test_clear_faults_switches_faults_off(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_faults(fail_every=1)
    sandbox.clear_faults()
    assert outcomes(client, 3) == [200, 200, 200]


def test_faults_apply_to_deletes_too(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_faults(fail_every=1, fail_status=504)
    assert client.post(DELETE, json={"identity": "a"}).status_code == 504
    assert sandbox.deleted() == []


def test_bad_batch_marker_refuses_the_whole_upload(sandbox: Sandbox, client: httpx.Client) -> None:
    sandbox.set_faults(bad_batch_marker="BAD")
    response = upload(client, profile("good-1", Name="A"), profile("BAD-2", Name="B"))
    assert response.status_code == 400
    assert response.json() == {"status": "fail", "error": "Malformed request", "code": 400}
    assert sandbox.profiles() == {}
    assert upload(client, profile("good-1", Name="A")).status_code == 200


@pytest.mark.parametrize(
    "settings",
    [
        {"fail_every": -1},
        {"fail_status": 42},
        {"latency": -1.0},
        {"bad_batch_marker": ""},
        {"hold": "yes"},
    ],
    ids=repr,
)
def test_set_faults_rejects_nonsense(sandbox: Sandbox, settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        sandbox.set_faults(**settings)


# --- introspection and admin -------------------------------------------------------------------


def test_stats_count_requests_batches_and_statuses(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("a", Name="A"), profile("b", Name="B"))
    upload(client, profile("c", Name="C"))
    client.post(DELETE, json={"identity": ["a", "b", "c"]})
    httpx.post(sandbox.url + UPLOAD, json={"d": []})
    stats = sandbox.stats()
    assert stats["requests"] == 4
    assert stats["upload_requests"] == 2
    assert stats["delete_requests"] == 1
    assert stats["batch_sizes"] == [2, 1]
    assert stats["delete_sizes"] == [3]
    assert stats["status_counts"] == {200: 3, 401: 1}
    assert stats["max_in_flight_seen"] == 1


def test_admin_state_shows_profiles_deleted_and_stats(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    upload(client, {**profile("a", Name="A"), "ts": 5}, profile("b", Name="B"))
    client.post(DELETE, json={"identity": "b"})
    state = httpx.get(sandbox.url + "/_sandbox/state").json()
    assert state["profiles"] == {"a": {"profileData": {"Name": "A"}, "ts": 5}}
    assert state["deleted"] == ["b"]
    assert state["stats"]["batch_sizes"] == [2]
    assert state["stats"]["status_counts"] == {"200": 2}


def test_admin_state_without_profiles_gives_their_count(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    upload(client, profile("a", Name="A"), profile("b", Name="B"))
    state = httpx.get(sandbox.url + "/_sandbox/state?profiles=0").json()
    assert "profiles" not in state
    assert state["profile_count"] == 2


def test_admin_faults_endpoint_sets_faults(sandbox: Sandbox, client: httpx.Client) -> None:
    response = httpx.post(
        sandbox.url + "/_sandbox/faults", json={"fail_every": 1, "fail_status": 503}
    )
    assert response.status_code == 200
    assert upload(client).status_code == 503


def test_admin_faults_endpoint_refuses_unknown_settings(sandbox: Sandbox) -> None:
    response = httpx.post(sandbox.url + "/_sandbox/faults", json={"explode": True})
    assert response.status_code == 400
    assert sandbox.faults()["fail_every"] == 0


def test_admin_requests_count_toward_neither_faults_nor_stats(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.set_faults(fail_every=2)
    upload(client)
    httpx.get(sandbox.url + "/_sandbox/state")
    httpx.get(sandbox.url + "/_sandbox/state")
    assert upload(client).status_code == 500
    assert sandbox.stats()["requests"] == 2


def test_admin_reset_clears_data_stats_and_faults(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("a", Name="A"))
    client.post(DELETE, json={"identity": "z"})
    sandbox.set_faults(fail_every=1)
    assert httpx.post(sandbox.url + "/_sandbox/reset").status_code == 200
    assert sandbox.profiles() == {}
    assert sandbox.deleted() == []
    assert sandbox.stats()["requests"] == 0
    assert upload(client).status_code == 200


def test_reset_clears_data_stats_and_faults(sandbox: Sandbox, client: httpx.Client) -> None:
    upload(client, profile("a", Name="A"))
    sandbox.set_faults(drop_every=1)
    sandbox.reset()
    assert (sandbox.profiles(), sandbox.deleted(), sandbox.stats()["batch_sizes"]) == ({}, [], [])
    assert upload(client).status_code == 200


# --- lifecycle and serve() ----------------------------------------------------------------------


def test_url_names_the_real_port(sandbox: Sandbox) -> None:
    assert sandbox.port != 0
    assert sandbox.url == f"http://127.0.0.1:{sandbox.port}"


def test_taken_port_is_a_config_error(sandbox: Sandbox) -> None:
    with pytest.raises(ConfigError, match="in use"):
        Sandbox(port=sandbox.port).start()


def test_stop_closes_idle_keep_alive_connections(client: httpx.Client, sandbox: Sandbox) -> None:
    upload(client)
    sandbox.stop()
    with pytest.raises(httpx.TransportError):
        upload(client)


def run_serve(passcode: str = "sandbox") -> tuple[str, threading.Event, threading.Thread]:
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(
        target=serve, kwargs={"port": 0, "passcode": passcode, "out": out, "stop": stop}
    )
    thread.start()
    deadline = time.monotonic() + 10
    while "Ctrl-C" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(timeout=10)
    return out.getvalue(), stop, thread


def test_serve_prints_the_url_and_how_to_point_ctcli_at_it() -> None:
    output, _, thread = run_serve()
    lines = output.splitlines()
    assert not thread.is_alive()
    url = lines[0].removeprefix("CleverTap sandbox listening on ")
    assert url.startswith("http://127.0.0.1:")
    assert lines[1] == (
        f"CLEVERTAP_ENDPOINT={url} CLEVERTAP_PROJECT_ID=sandbox CLEVERTAP_PASSCODE=sandbox"
    )
    assert lines[-1] == "sandbox stopped"


def test_serve_never_echoes_a_chosen_passcode() -> None:
    output, _, _ = run_serve(passcode="s3cret-value")
    assert "s3cret-value" not in output
    assert "CTCLI_SANDBOX_PASSCODE" in output


def test_serve_on_a_taken_port_is_a_config_error(sandbox: Sandbox) -> None:
    with pytest.raises(ConfigError):
        serve(port=sandbox.port, out=io.StringIO())


def start_ctcli_sandbox() -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k != "CTCLI_SANDBOX_PASSCODE"}
    process = subprocess.Popen(
        [sys.executable, "-m", "ctcli", "sandbox", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, process.kill)
    watchdog.daemon = True
    watchdog.start()
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("CleverTap sandbox listening on http://127.0.0.1:"), first
    return process, first.split(" on ", 1)[1].strip()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctcli_sandbox_command_serves_until_signalled_and_exits_0(signum: int) -> None:
    process, url = start_ctcli_sandbox()
    try:
        headers = {"X-CleverTap-Account-Id": "sandbox", "X-CleverTap-Passcode": "sandbox"}
        response = httpx.post(url + UPLOAD, json={"d": [profile("u1", Name="A")]}, headers=headers)
        assert response.json()["processed"] == 1
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert stdout.rstrip().endswith("sandbox stopped")
