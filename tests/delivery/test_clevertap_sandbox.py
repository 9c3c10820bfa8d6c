"""The CleverTap client over real sockets, against the project's loopback sandbox."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ctcli.delivery.client import CleverTapClient, ClientSettings, Outcome, check_credentials
from ctcli.errors import CredentialsRejected, Unreachable
from ctcli.sandbox import Sandbox

PROJECT = "SBX-000-TEST"
PASSCODE = "sandbox-passcode-42"
WAIT = 30  # seconds: a guard against a hang, never a timing assertion


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(project_id=PROJECT, passcode=PASSCODE, max_in_flight=15) as running:
        yield running


def make_client(sandbox: Sandbox, **overrides: object) -> CleverTapClient:
    values: dict = {
        "base_url": sandbox.url,
        "project_id": PROJECT,
        "passcode": PASSCODE,
        "backoff_base": 0.001,
        "backoff_cap": 0.01,
        "timeout": 5.0,
    }
    values.update(overrides)
    return CleverTapClient(ClientSettings(**values))


def records(prefix: str, count: int) -> list[dict]:
    return [
        {"type": "profile", "identity": f"{prefix}-{n}", "profileData": {"Name": f"N{n}"}}
        for n in range(count)
    ]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_uploaded_profiles_land(sandbox: Sandbox) -> None:
    with make_client(sandbox) as client:
        outcomes = client.upload(records("u", 250))
    assert outcomes == [Outcome(ok=True)] * 250
    assert len(sandbox.profiles()) == 250
    assert sandbox.profiles()["u-7"]["profileData"] == {"Name": "N7"}


def test_records_the_api_refuses_are_reported_and_the_rest_land(sandbox: Sandbox) -> None:
    batch = records("r", 5)
    batch[1]["profileData"]["Phone"] = "0123"
    batch[3]["profileData"]["Gender"] = "Q"
    with make_client(sandbox) as client:
        outcomes = client.upload(batch)
    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert (outcomes[1].code, outcomes[3].code) == (516, 514)
    assert set(sandbox.profiles()) == {"r-0", "r-2", "r-4"}


def test_deleted_identities_reach_the_api(sandbox: Sandbox) -> None:
    with make_client(sandbox) as client:
        client.upload(records("d", 3))
        outcomes = client.delete(["d-0", "d-2"])
    assert outcomes == [Outcome(ok=True)] * 2
    assert sandbox.deleted() == ["d-0", "d-2"]
    assert set(sandbox.profiles()) == {"d-1"}


def test_503s_are_retried_until_every_record_lands(sandbox: Sandbox) -> None:
    sandbox.set_faults(fail_every=2, fail_status=503)
    with make_client(sandbox) as client:
        outcomes = [o for n in range(6) for o in client.upload(records(f"f{n}", 20))]
        assert client.retries >= 3
    assert all(o.ok for o in outcomes)
    assert len(sandbox.profiles()) == 120


def test_dropped_connections_are_retried_until_every_record_lands(sandbox: Sandbox) -> None:
    sandbox.set_faults(drop_every=3)
    with make_client(sandbox) as client:
        outcomes = [o for n in range(6) for o in client.upload(records(f"k{n}", 20))]
        assert client.retries >= 2
    assert all(o.ok for o in outcomes)
    assert sandbox.stats()["dropped"] >= 2
    assert len(sandbox.profiles()) == 120


def test_persistent_503s_fail_the_batch_with_the_last_status(sandbox: Sandbox) -> None:
    sandbox.set_faults(fail_every=1, fail_status=503)
    with make_client(sandbox, max_retries=2) as client:
        outcomes = client.upload(records("p", 2))
    expected = Outcome(False, 503, "HTTP 503 Service Unavailable after 3 attempts")
    assert outcomes == [expected, expected]
    assert sandbox.profiles() == {}


def test_retry_after_from_the_api_is_waited_for(sandbox: Sandbox) -> None:
    sandbox.set_faults(fail_every=2, fail_status=429, retry_after=2)
    sleeps: list[float] = []
    client = CleverTapClient(
        ClientSettings(base_url=sandbox.url, project_id=PROJECT, passcode=PASSCODE),
        sleep=sleeps.append,
    )
    with client:
        client.upload(records("a", 1))
        client.upload(records("b", 1))
    assert sleeps == [2.0]


def test_a_batch_refused_for_one_record_is_split_until_it_stands_alone(sandbox: Sandbox) -> None:
    sandbox.set_faults(bad_batch_marker="BAD")
    batch = records("s", 100)
    batch[42]["identity"] = "BAD-42"
    with make_client(sandbox) as client:
        outcomes = client.upload(batch)
    assert outcomes[42] == Outcome(False, 400, "Malformed request")
    assert sum(o.ok for o in outcomes) == 99
    assert len(sandbox.profiles()) == 99
    assert sum(sandbox.stats()["batch_sizes"]) == 99  # no landed record was sent twice


def test_fifteen_threads_keep_within_the_concurrency_limit(sandbox: Sandbox) -> None:
    sandbox.set_faults(latency=0.005)
    results: list[Outcome] = []
    lock = threading.Lock()
    with make_client(sandbox, concurrency=4) as client:

        def work(worker: int) -> None:
            for n in range(4):
                outcomes = client.upload(records(f"t{worker}-{n}", 10))
                with lock:
                    results.extend(outcomes)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(15)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.peak_in_flight <= 4
    assert len(results) == 600 and all(o.ok for o in results)
    assert sandbox.stats()["max_in_flight_seen"] <= 4
    assert len(sandbox.profiles()) == 600


def test_429s_from_a_busy_account_lower_the_limit_and_records_still_land() -> None:
    with Sandbox(project_id=PROJECT, passcode=PASSCODE, max_in_flight=2) as busy:
        busy.set_faults(hold=True)  # the account's 2 slots stay taken until released
        results: list[Outcome] = []
        lock = threading.Lock()
        # A long timeout: a held request must never time out and be sent again.
        with make_client(busy, concurrency=8, max_retries=20, timeout=60) as client:

            def work(worker: int) -> None:
                outcomes = client.upload(records(f"b{worker}", 5))
                with lock:
                    results.extend(outcomes)

            threads = [threading.Thread(target=work, args=(w,), daemon=True) for w in range(15)]
            for thread in threads:
                thread.start()
            try:
                assert busy.wait_held(2, timeout=WAIT)
                deadline = time.monotonic() + WAIT  # a guard against a hang, not an assertion
                while client.limit == 8:
                    assert time.monotonic() < deadline, "the client never lowered its limit"
                    time.sleep(0.005)
                # Lowered by 429s that came back while both slots were still taken.
                assert busy.stats()["held"] == 2
                assert busy.stats()["status_counts"].get(429, 0) >= 1
                assert results == []
            finally:
                busy.clear_faults()
            for thread in threads:
                thread.join(timeout=WAIT)
            assert client.limit < 8
        assert len(results) == 75 and all(o.ok for o in results)
        assert busy.profile_count() == 75


def test_wrong_passcode_raises_and_the_client_sends_nothing_more(sandbox: Sandbox) -> None:
    with make_client(sandbox, passcode="not-the-passcode") as client:
        with pytest.raises(CredentialsRejected, match=f"project {PROJECT} \\(HTTP 401"):
            client.upload(records("w", 1))
        with pytest.raises(CredentialsRejected):
            client.upload(records("w", 1))
    assert sandbox.stats()["requests"] == 1


def test_check_credentials_accepts_the_right_credentials(sandbox: Sandbox) -> None:
    check_credentials(sandbox.url, PROJECT, PASSCODE)


def test_check_credentials_reports_refused_credentials(sandbox: Sandbox) -> None:
    with pytest.raises(CredentialsRejected) as raised:
        check_credentials(sandbox.url, PROJECT, "wrong-passcode")
    assert str(raised.value) == (
        f"CleverTap refused the credentials for project {PROJECT} (HTTP 401: Invalid Credentials)"
    )
    assert "wrong-passcode" not in str(raised.value)


def test_check_credentials_reports_a_closed_port_unreachable() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(Unreachable) as raised:
        check_credentials(url, PROJECT, PASSCODE, timeout=2)
    assert str(raised.value) == f"cannot reach {url}: connection refused"
