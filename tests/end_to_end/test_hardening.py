"""Hostile input and a hostile environment, over the real command line.

Deep nesting, bytes that are not UTF-8, failed files re-driven into themselves, full devices,
malformed endpoints and proxies, answers that say less than they seem to, broken files among
good ones. Each test runs ctcli as a user would (CliRunner, or a real process where a real
file descriptor is needed) and, where anything could be sent, against the loopback sandbox.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from ctcli.delivery.client import CleverTapClient, ClientSettings
from ctcli.events.sources import MAX_DEPTH
from tests.helpers import CTCLI, error_lines, invoke, rows_of

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_events" / "events.ndjson"
RUN_TIMEOUT = 60  # seconds: a guard against a hung process, never a timing assertion
DEEP_ERROR = f"nested more than {MAX_DEPTH} levels deep"
LATIN1_LINE = b'{"type":"identify","userId":"caf\xe9-user","traits":{"a":1}}'
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def identify(user: str) -> str:
    return json.dumps({"type": "identify", "userId": user, "traits": {"name": user}})


def deep_line(user: str = "deep") -> str:
    """An identify event whose traits nest 1,000 levels deep (json.dumps cannot build it)."""
    nested = '{"a":' * 1000 + "1" + "}" * 1000
    return '{"type":"identify","userId":"' + user + '","traits":{"x":' + nested + "}}"


def write_lines(path: Path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def subprocess_env() -> dict[str, str]:
    """This process's environment (as the fixtures set it), for a real ctcli process."""
    return {k: v for k, v in os.environ.items() if k.lower() not in _lower(PROXY_VARIABLES)}


def _lower(names: tuple[str, ...]) -> set[str]:
    return {name.lower() for name in names}


@pytest.fixture(autouse=True)
def no_proxy_from_outside(monkeypatch):
    """Proxy variables of the machine running the tests never reach ctcli here."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# -- 1. deep input -------------------------------------------------------------------------


def test_a_line_nested_too_deep_is_one_invalid_result_naming_the_limit(env, tmp_path):
    source = write_lines(tmp_path / "deep.ndjson", deep_line())
    result = invoke("upload", "--dry-run", "-o", "ndjson", source)
    assert result.exit_code == 1
    assert [(row["line"], row["status"], row["error"]) for row in rows_of(result)] == [
        (1, "invalid", DEEP_ERROR)
    ]


def test_lines_after_a_too_deep_line_are_still_sent(live, tmp_path):
    source = write_lines(
        tmp_path / "deep.ndjson", deep_line(), identify("after-1"), identify("after-2")
    )
    result = invoke("upload", "-o", "ndjson", source)
    rows = rows_of(result)
    assert [(row["line"], row["status"]) for row in rows] == [(1, "invalid"), (2, "ok"), (3, "ok")]
    assert set(live.profiles()) == {"after-1", "after-2"}


def test_a_too_deep_line_goes_to_the_failed_file_as_its_raw_text(live, tmp_path):
    source = write_lines(tmp_path / "deep.ndjson", deep_line(), identify("after"))
    failed = tmp_path / "failed.ndjson"
    result = invoke("upload", "-o", "ndjson", "--failed", str(failed), source)
    assert result.exit_code == 1
    [line] = [json.loads(text) for text in failed.read_text().splitlines()]
    assert line["event"] == deep_line()
    assert (line["line"], line["status"], line["error"]) == (1, "invalid", DEEP_ERROR)


def test_a_second_run_with_state_over_a_too_deep_line_sends_nothing_again(live, tmp_path):
    source = write_lines(tmp_path / "deep.ndjson", deep_line(), identify("after"))
    args = ["upload", "-o", "ndjson", "--state", str(tmp_path / "state.json"), source]
    first = invoke(*args)
    requests = live.stats()["requests"]
    second = invoke(*args)
    assert first.exit_code == 1
    assert second.exit_code in (0, 1) and "internal error" not in second.stderr
    assert second.stdout == ""
    assert live.stats()["requests"] == requests


def test_a_too_deep_item_of_a_json_array_is_invalid_and_the_others_are_sent(live, tmp_path):
    source = tmp_path / "array.json"
    source.write_text("[" + ",".join([identify("first"), deep_line(), identify("last")]) + "]")
    result = invoke("upload", "-o", "ndjson", str(source))
    assert result.exit_code == 1
    assert [(row["line"], row["status"], row["error"]) for row in rows_of(result)] == [
        (1, "ok", None),
        (2, "invalid", DEEP_ERROR),
        (3, "ok", None),
    ]
    assert set(live.profiles()) == {"first", "last"}


# -- 2. a failed file is never its own input ------------------------------------------------


def failed_line(user: str) -> str:
    return json.dumps({
        "ctcli": "failed",
        "event": json.loads(identify(user)),
        "source": "events.ndjson", "line": 1, "action": "upload", "identity": user,
        "status": "failed", "code": 503, "error": "HTTP 503",
    })  # fmt: skip


@pytest.fixture
def failed_file(tmp_path) -> Path:
    path = tmp_path / "failed.ndjson"
    path.write_text(failed_line("again-1") + "\n" + failed_line("again-2") + "\n")
    return path


def same_file(kind: str, failed_file: Path) -> Path:
    if kind == "symlink":
        other = failed_file.with_name("link.ndjson")
        other.symlink_to(failed_file)
        return other
    if kind == "hard link":
        other = failed_file.with_name("hard.ndjson")
        os.link(failed_file, other)
        return other
    return failed_file


@pytest.mark.parametrize("kind", ["same name", "symlink", "hard link"])
def test_replay_refuses_to_write_failures_into_its_own_input(live, failed_file, kind):
    before = failed_file.read_bytes()
    result = invoke("replay", "--failed", str(failed_file), str(same_file(kind, failed_file)))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--failed" in result.stderr
    assert failed_file.read_bytes() == before
    assert live.stats()["requests"] == 0


def test_replay_refuses_a_failed_file_that_is_its_stdin(live, failed_file):
    before = failed_file.read_bytes()
    with failed_file.open("rb") as stdin:
        done = subprocess.run(
            [*CTCLI, "replay", "--failed", str(failed_file), "-"],
            env=subprocess_env(),
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "--failed" in done.stderr
    assert failed_file.read_bytes() == before
    assert live.stats()["requests"] == 0


def test_a_state_file_that_is_one_of_the_inputs_is_refused(live, tmp_path, failed_file):
    other = write_lines(tmp_path / "other.ndjson", identify("o1"))
    before = failed_file.read_bytes()
    result = invoke("replay", "--state", str(failed_file), other, str(failed_file))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "--state" in result.stderr
    assert failed_file.read_bytes() == before
    assert live.stats()["requests"] == 0


# -- 3. bytes that are not UTF-8 -------------------------------------------------------------


@pytest.fixture
def latin1_source(tmp_path) -> Path:
    path = tmp_path / "latin1.ndjson"
    path.write_bytes(LATIN1_LINE + b"\n")
    return path


def test_a_line_that_is_not_utf8_is_invalid_saying_so(env, latin1_source):
    result = invoke("upload", "--dry-run", "-o", "ndjson", str(latin1_source))
    [row] = rows_of(result)
    assert row["status"] == "invalid" and row["error"].startswith("invalid UTF-8")
    assert result.exit_code == 1


def test_a_line_that_is_not_utf8_is_kept_byte_for_byte_in_the_failed_file(
    env, tmp_path, latin1_source
):
    failed = tmp_path / "failed.ndjson"
    invoke("upload", "--dry-run", "-o", "ndjson", "--failed", str(failed), str(latin1_source))
    [line] = [json.loads(text) for text in failed.read_text().splitlines()]
    assert line["event"] is None
    assert base64.b64decode(line["raw_base64"]) == LATIN1_LINE


def test_re_driving_a_kept_non_utf8_line_refuses_it_again_and_sends_nothing(
    live, tmp_path, latin1_source
):
    failed = tmp_path / "failed.ndjson"
    invoke("upload", "-o", "ndjson", "--failed", str(failed), str(latin1_source))
    requests = live.stats()["requests"]
    result = invoke("replay", "-o", "ndjson", str(failed))
    [row] = rows_of(result)
    assert row["status"] == "invalid" and row["error"].startswith("invalid UTF-8")
    assert result.exit_code == 1
    assert live.stats()["requests"] == requests
    assert not any("caf" in name for name in live.profiles())


# -- 4. the environment is exit 2, not a bug ------------------------------------------------


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("output", ["ndjson", "json"])
def test_stdout_on_a_full_device_is_exit_2_with_one_line(env, output):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*CTCLI, "replay", "--dry-run", "-o", output, str(SAMPLE)],
            env=subprocess_env(),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=RUN_TIMEOUT,
        )
    assert done.returncode == 2
    assert done.stderr == "ctcli: error: cannot write the output: No space left on device\n"


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_timeout_that_is_not_a_finite_number_is_a_usage_error(live, value):
    result = invoke("upload", "--timeout", value, str(SAMPLE))
    assert result.exit_code == 2
    # A usage error: click's Usage/Try lines, then one line saying what is wrong.
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "--timeout" in error and "Traceback" not in result.stderr
    assert result.stdout == "" and live.stats()["requests"] == 0


@pytest.mark.parametrize("endpoint", ["http://[::1", "http://[zz]:80"])
def test_an_endpoint_with_a_malformed_ipv6_host_is_a_configuration_error(
    live, monkeypatch, endpoint
):
    monkeypatch.setenv("CLEVERTAP_ENDPOINT", endpoint)
    result = invoke("upload", str(SAMPLE))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "internal error" not in result.stderr
    assert live.stats()["requests"] == 0


def test_a_malformed_endpoint_is_shown_with_its_password_masked(env, monkeypatch):
    monkeypatch.setenv("CLEVERTAP_ENDPOINT", "http://user:s3cretPW@[::1")
    monkeypatch.setenv("CLEVERTAP_PROJECT_ID", "TEST-ACC")
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "test-passcode")
    result = invoke("upload", str(SAMPLE))
    assert result.exit_code == 2
    assert "s3cretPW" not in result.stderr + result.stdout
    assert "user:****@" in result.stderr


def test_a_malformed_http_proxy_is_exit_2_naming_it_and_sends_nothing(live, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://[bad")
    result = invoke("upload", str(SAMPLE))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "HTTP_PROXY" in result.stderr
    assert live.stats()["requests"] == 0


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "ALL_PROXY"])
def test_a_socks_proxy_is_refused_for_an_https_endpoint(env, monkeypatch, variable):
    monkeypatch.setenv("CLEVERTAP_ENDPOINT", "https://127.0.0.1:9")
    monkeypatch.setenv("CLEVERTAP_PROJECT_ID", "TEST-ACC")
    monkeypatch.setenv("CLEVERTAP_PASSCODE", "test-passcode")
    monkeypatch.setenv(variable, "socks5://127.0.0.1:1080")
    result = invoke("upload", str(SAMPLE))
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and variable in result.stderr
    assert "http:// or https:// proxies only" in result.stderr


def test_no_proxy_lets_a_loopback_endpoint_bypass_an_unusable_proxy(live, monkeypatch, tmp_path):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # parseable, nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    source = write_lines(tmp_path / "a.ndjson", identify("bypass"))
    result = invoke("upload", "-o", "ndjson", source)
    assert result.exit_code == 0, result.stderr
    assert [row["status"] for row in rows_of(result)] == ["ok"]
    assert "bypass" in live.profiles()


def test_a_sandbox_port_out_of_range_is_a_usage_error(env):
    result = invoke("sandbox", "--port", "70000")
    assert result.exit_code == 2
    [error] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "--port" in error and "Traceback" not in result.stderr


# -- 5. smaller gaps -------------------------------------------------------------------------


def test_a_success_answer_that_processed_none_of_the_batch_fails_every_record():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "processed": 0})

    settings = ClientSettings(base_url="https://eu1.api.example", project_id="P", passcode="S")
    batch = [{"type": "profile", "identity": f"u{n}", "profileData": {}} for n in range(3)]
    with CleverTapClient(
        settings, transport=httpx.MockTransport(handler), sleep=lambda _: None, env={}
    ) as client:
        outcomes = client.upload(batch)
    assert len(outcomes) == 3
    assert all(not outcome.ok for outcome in outcomes)
    assert all("processed 0 of 3" in (outcome.error or "") for outcome in outcomes)


def test_an_event_with_failed_line_keys_of_its_own_is_routed_as_an_event(env, tmp_path):
    event = {
        "type": "track", "event": "Order Completed", "userId": "shopper",
        "status": "failed", "source": "web", "line": 3, "action": "checkout",
        "properties": {"total": 9},
    }  # fmt: skip
    source = write_lines(tmp_path / "events.ndjson", json.dumps(event))
    [row] = rows_of(invoke("replay", "--dry-run", "-o", "ndjson", source))
    assert (row["type"], row["event"]) == ("track", "Order Completed")
    assert row["status"] == "skipped"  # a plain track event matches no trigger


def test_a_failed_line_written_by_ctcli_is_unwrapped(live, tmp_path):
    source = write_lines(tmp_path / "events.ndjson", identify("refused"))
    failed = tmp_path / "failed.ndjson"
    live.set_faults(fail_every=1, fail_status=400)  # refused, not retried
    invoke("upload", "-o", "ndjson", "--max-retries", "0", "--failed", str(failed), source)
    [line] = [json.loads(text) for text in failed.read_text().splitlines()]
    assert line["ctcli"] == "failed"
    [row] = rows_of(invoke("replay", "--dry-run", "-o", "ndjson", str(failed)))
    assert (row["type"], row["identity"], row["status"]) == ("identify", "refused", "dry-run")


def test_a_legacy_failed_line_is_still_unwrapped(env, tmp_path):
    legacy = {
        "event": json.loads(identify("old")), "source": "events.ndjson", "line": 1,
        "action": "upload", "status": "failed", "code": 503, "error": "HTTP 503",
    }  # fmt: skip
    source = write_lines(tmp_path / "failed.ndjson", json.dumps(legacy))
    [row] = rows_of(invoke("replay", "--dry-run", "-o", "ndjson", source))
    assert (row["type"], row["identity"], row["status"]) == ("identify", "old", "dry-run")


@pytest.fixture
def truncated_then_good(tmp_path) -> tuple[str, str]:
    whole = gzip.compress("".join(identify(f"a{n}") + "\n" for n in range(50)).encode())
    broken = tmp_path / "a.ndjson.gz"
    broken.write_bytes(whole[: len(whole) // 2])
    good = write_lines(tmp_path / "b.ndjson", *(identify(f"b{n}") for n in range(5)))
    return str(broken), good


def test_files_after_a_truncated_gzip_are_still_sent(live, truncated_then_good):
    broken, good = truncated_then_good
    result = invoke("upload", "-o", "ndjson", broken, good)
    assert result.exit_code == 2
    b_rows = [row for row in rows_of(result) if row["source"] == good]
    assert [(row["line"], row["status"]) for row in b_rows] == [(n, "ok") for n in range(1, 6)]
    assert {f"b{n}" for n in range(5)} <= set(live.profiles())
    [error] = error_lines(result.stderr)
    assert "a.ndjson.gz" in error


def test_a_file_after_a_truncated_gzip_is_checkpointed_to_its_end(
    live, tmp_path, truncated_then_good
):
    broken, good = truncated_then_good
    args = ["upload", "-o", "ndjson", "--state", str(tmp_path / "state.json"), broken, good]
    invoke(*args)
    uploads = live.stats()["upload_requests"]
    again = invoke(*args)
    assert [row for row in rows_of(again) if row["source"] == good] == []
    assert live.stats()["upload_requests"] == uploads


def test_a_bom_at_the_start_of_a_later_line_is_read_as_the_event(env, tmp_path):
    source = tmp_path / "joined.ndjson"
    source.write_bytes(
        (identify("first") + "\n").encode() + b"\xef\xbb\xbf" + identify("second").encode() + b"\n"
    )
    result = invoke("upload", "--dry-run", "-o", "ndjson", str(source))
    assert [(row["line"], row["identity"], row["status"]) for row in rows_of(result)] == [
        (1, "first", "dry-run"),
        (2, "second", "dry-run"),
    ]


def test_lines_ended_by_a_lone_cr_are_one_event_each_numbered_from_1(env, tmp_path):
    source = tmp_path / "mac.ndjson"
    source.write_bytes("".join(identify(f"m{n}") + "\r" for n in range(1, 4)).encode())
    result = invoke("upload", "--dry-run", "-o", "ndjson", str(source))
    assert [(row["line"], row["identity"]) for row in rows_of(result)] == [
        (1, "m1"),
        (2, "m2"),
        (3, "m3"),
    ]


def test_a_5000_digit_number_is_invalid_naming_the_digit_limit(env, tmp_path):
    line = '{"type":"identify","userId":"big","traits":{"n":' + "7" * 5000 + "}}"
    source = write_lines(tmp_path / "big.ndjson", line)
    [row] = rows_of(invoke("upload", "--dry-run", "-o", "ndjson", str(source)))
    assert row["status"] == "invalid"
    assert "more than 4300 digits" in row["error"]
    assert "set_int_max_str_digits" not in row["error"]


def test_the_failed_file_is_created_readable_by_its_owner_only(env, tmp_path):
    source = write_lines(tmp_path / "bad.ndjson", "{broken")
    failed = tmp_path / "failed.ndjson"
    invoke("upload", "--dry-run", "--failed", str(failed), source)
    assert os.stat(failed).st_mode & 0o777 == 0o600
