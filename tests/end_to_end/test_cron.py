"""ctcli as a cron job runs it: real processes against a standalone `ctcli sandbox`, with --state.

Every ctcli run here is a subprocess (`python -m ctcli ...`) talking over loopback to one
`ctcli sandbox --port 0` process, which is reset before each test through its admin endpoints.
"""

from __future__ import annotations

import gzip
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import running_sandbox_process

PROJECT_ID = "sandbox"
PASSCODE = f"pc-{secrets.token_hex(12)}"  # distinctive, so a leak into any file is unmistakable
RUN_TIMEOUT = 60  # seconds: a guard against a hung run, never a timing assertion


# --- the sandbox process ---------------------------------------------------------------------


@dataclass
class SandboxAdmin:
    """The admin endpoints of the sandbox process."""

    url: str

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def state(self, *, profiles: bool = False) -> dict[str, Any]:
        return self._call("GET", "/_sandbox/state" + ("" if profiles else "?profiles=0"))

    def stats(self) -> dict[str, Any]:
        return self.state()["stats"]

    def identities(self) -> set[str]:
        return set(self.state(profiles=True)["profiles"])

    def faults(self, **settings: Any) -> None:
        """Replace the faults; without hold=True, requests held so far go on."""
        self._call("POST", "/_sandbox/faults", settings)

    def held(self) -> int:
        return self.stats()["held"]

    def release(self) -> int:
        """Let the requests held right now go on (holding stays on); how many there were."""
        return self._call("POST", "/_sandbox/release", {})["released"]

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset", {})


@pytest.fixture(scope="module")
def sandbox_process() -> Iterator[SandboxAdmin]:
    with running_sandbox_process(passcode=PASSCODE) as running:
        yield SandboxAdmin(running.url)


@pytest.fixture
def sandbox(sandbox_process: SandboxAdmin) -> SandboxAdmin:
    sandbox_process.reset()
    return sandbox_process


# --- running ctcli -----------------------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def results(self) -> list[dict[str, Any]]:
        out = []
        for number, line in enumerate(self.stdout.splitlines(), 1):
            try:
                out.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"stdout line {number} is not JSON: {line!r}") from None
        return out

    @property
    def lines(self) -> list[int]:
        return [result["line"] for result in self.results]

    @property
    def summary(self) -> dict[str, Any]:
        for line in self.stderr.splitlines():
            if line.startswith('{"summary"'):
                return json.loads(line)["summary"]
        raise AssertionError(f"no summary line on stderr:\n{self.stderr}")


@dataclass
class Cli:
    """ctcli in a subprocess, in the test's directory, pointed at the sandbox process."""

    cwd: Path
    env: dict[str, str]
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "ctcli", *args]

    def run(self, *args: str, input: str | None = None) -> Run:
        done = subprocess.run(
            self.argv(args),
            cwd=self.cwd,
            env=self.env,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )
        return Run(done.returncode, done.stdout, done.stderr)

    def start(self, *args: str) -> Started:
        """Start a run in the background; stdout and stderr go to files (never a full pipe)."""
        number = len(list(self.cwd.glob("run-*.out")))
        out, err = self.cwd / f"run-{number}.out", self.cwd / f"run-{number}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(
                self.argv(args),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        self.started.append(process)
        return Started(process, out, err)

    def kill_started(self) -> None:
        """Kill every background run still going (a test that failed may leave one behind)."""
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


@dataclass
class Started:
    process: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self) -> Run:
        returncode = self.process.wait(timeout=RUN_TIMEOUT)
        return Run(returncode, self.out.read_text(), self.err.read_text())

    def stderr_so_far(self) -> str:
        return self.err.read_text(errors="replace")


def write_config(path: Path, text: str = "") -> None:
    path.write_text(text)
    path.chmod(0o600)


@pytest.fixture
def cli(tmp_path: Path, sandbox: SandboxAdmin) -> Iterator[Cli]:
    config = tmp_path / "config.toml"
    write_config(config)
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLEVERTAP_", "CTCLI_"))
    }
    env.update(
        CTCLI_CONFIG=str(config),
        CLEVERTAP_ENDPOINT=sandbox.url,
        CLEVERTAP_PROJECT_ID=PROJECT_ID,
        CLEVERTAP_PASSCODE=PASSCODE,
    )
    running = Cli(tmp_path, env)
    try:
        yield running
    finally:
        running.kill_started()


def identify(user: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": {"name": user.title(), "plan": "pro"}}


def ndjson(events: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def write_events(path: Path, users: Sequence[str]) -> None:
    path.write_text(ndjson([identify(user) for user in users]))


def append_events(path: Path, users: Sequence[str]) -> None:
    with path.open("a") as handle:
        handle.write(ndjson([identify(user) for user in users]))


def users(prefix: str, start: int, stop: int) -> list[str]:
    return [f"{prefix}-{number}" for number in range(start, stop)]


COMMON = ("--state", "state.json", "-o", "ndjson")


# --- (a) appended lines -----------------------------------------------------------------------


def test_second_run_sends_only_the_lines_appended_since(cli, sandbox, tmp_path):
    events = tmp_path / "events.ndjson"
    write_events(events, users("user", 1, 201))

    first = cli.run("upload", "events.ndjson", *COMMON)
    assert first.returncode == 0, first.stderr
    assert first.lines == list(range(1, 201))
    assert sandbox.stats()["records_processed"] == 200

    append_events(events, users("user", 201, 301))
    second = cli.run("upload", "events.ndjson", *COMMON)

    assert second.returncode == 0, second.stderr
    assert second.lines == list(range(201, 301))
    assert {result["status"] for result in second.results} == {"ok"}
    assert [result["identity"] for result in second.results] == users("user", 201, 301)
    assert second.summary["events"] == 100
    assert "resuming after line 200" in second.stderr
    stats = sandbox.stats()
    assert stats["records_processed"] == 300  # 200 + exactly the 100 new ones
    assert sum(stats["batch_sizes"]) == 300
    assert sandbox.state()["profile_count"] == 300


def test_a_run_with_nothing_appended_sends_nothing(cli, sandbox, tmp_path):
    write_events(tmp_path / "events.ndjson", users("user", 1, 11))
    assert cli.run("upload", "events.ndjson", *COMMON).returncode == 0
    requests = sandbox.stats()["requests"]

    again = cli.run("upload", "events.ndjson", *COMMON)

    assert again.returncode == 0, again.stderr
    assert again.results == []
    assert again.summary["events"] == 0
    assert sandbox.stats()["requests"] == requests


# --- (b) SIGTERM mid-run ----------------------------------------------------------------------
#
# The sandbox holds requests (the `hold` fault) instead of answering slowly: a run cannot finish
# before the test signals it, however fast or slow the machine. Held requests are in flight:
# ctcli has sent them and waits for their answers. `--timeout 60` keeps a held request from
# timing out and being sent a second time on a loaded machine.

BIG = 50_000  # the size: a run long enough to be killed in the middle
HOLD = ("--timeout", "60")


def checkpointed_line(state: Path) -> int:
    """The line the single file in `state` is checkpointed at (0 before the first save)."""
    if not state.exists():
        return 0
    (entry,) = json.loads(state.read_text())["files"].values()
    return entry["line"]


def wait_for(condition: Any, run: Started, what: str = "never happened") -> None:
    deadline = time.monotonic() + RUN_TIMEOUT  # a guard against a hang, not an assertion
    while not condition():
        assert run.poll() is None, f"the run ended first:\n{run.stderr_so_far()}"
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def wait_until_held(sandbox: SandboxAdmin, run: Started) -> None:
    """Until the sandbox holds at least one request of `run` (it is under way and waiting)."""
    wait_for(lambda: sandbox.held() > 0, run, "the run never sent a request")


def step(sandbox: SandboxAdmin, run: Started) -> None:
    """Let the held requests go and wait until the run's next requests are held."""
    assert sandbox.release() > 0
    wait_until_held(sandbox, run)


def stop_with_sigterm(sandbox: SandboxAdmin, run: Started) -> Run:
    """SIGTERM a run whose requests are held, then let them go; how it ended."""
    run.send_signal(signal.SIGTERM)
    # The handler writes this line once the stop is set: only then may the run move on.
    wait_for(lambda: "stopping" in run.stderr_so_far(), run, "SIGTERM was never handled")
    sandbox.faults()  # holding off: what is in flight, and what the stop still sends, goes
    return run.finish()


def test_sigterm_mid_run_exits_130_and_the_next_run_sends_the_rest(cli, sandbox, tmp_path):
    expected = users("user", 0, BIG)
    write_events(tmp_path / "big.ndjson", expected)
    sandbox.faults(hold=True)
    args = ("upload", "big.ndjson", "--batch-size", "500", *HOLD, *COMMON)

    process = cli.start(*args)
    wait_until_held(sandbox, process)
    step(sandbox, process)  # some batches are answered: the run is well under way
    interrupted = stop_with_sigterm(sandbox, process)

    assert interrupted.returncode == 130, interrupted.stderr
    assert "stopping" in interrupted.stderr
    assert interrupted.summary["events"] == len(interrupted.results)
    assert interrupted.summary["ok"] == len(interrupted.results)
    assert 0 < len(interrupted.results) < BIG
    assert interrupted.lines == list(range(1, len(interrupted.results) + 1))

    resumed = cli.run(*args)

    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after line {len(interrupted.results)}" in resumed.stderr
    # The first run finished what was in flight and checkpointed it: the second picks up
    # exactly where the first stopped, and together they cover every line once.
    assert resumed.lines == list(range(len(interrupted.results) + 1, BIG + 1))
    assert sorted(interrupted.lines + resumed.lines) == list(range(1, BIG + 1))
    assert sandbox.identities() == set(expected)  # every event arrived, none is missing
    assert sandbox.stats()["records_processed"] == BIG  # and none was sent twice


def test_sigterm_after_the_first_results_interrupts_the_run(cli, sandbox, tmp_path):
    write_events(tmp_path / "events.ndjson", users("user", 0, 10_000))
    sandbox.faults(hold=True)

    process = cli.start("upload", "events.ndjson", "--batch-size", "100", *HOLD, *COMMON)
    wait_until_held(sandbox, process)
    step(sandbox, process)
    # Results of the answered batches reach stdout while the next requests are held.
    wait_for(lambda: process.out.stat().st_size > 0, process, "no result was written")
    written = len(process.out.read_text().splitlines())
    interrupted = stop_with_sigterm(sandbox, process)

    assert interrupted.returncode == 130
    assert 0 < written <= len(interrupted.results) < 10_000
    assert interrupted.lines == list(range(1, len(interrupted.results) + 1))


def test_a_killed_run_keeps_the_checkpoints_it_saved_and_loses_nothing(cli, sandbox, tmp_path):
    total = 2_000
    write_events(tmp_path / "events.ndjson", users("user", 0, total))
    # One record per request, one request at a time: what was in flight when the run was
    # killed is exactly one record (the next test does the same with full batches).
    concurrency, batch_size = 1, 1
    sandbox.faults(hold=True)
    killed_args = ("--batch-size", str(batch_size), "--concurrency", str(concurrency))
    process = cli.start("upload", "events.ndjson", *killed_args, *HOLD, *COMMON)
    state = tmp_path / "state.json"

    # Let requests through one at a time, pausing while one is held, until the run has saved a
    # checkpoint covering every record the sandbox has processed: then only the held request
    # is in flight.
    wait_until_held(sandbox, process)
    deadline = time.monotonic() + RUN_TIMEOUT  # a guard against a hang, not an assertion
    while not 0 < checkpointed_line(state) == sandbox.stats()["records_processed"]:
        assert time.monotonic() < deadline, "the run never saved a checkpoint"
        time.sleep(0.1)  # pacing only: the loop ends on the checkpoint, not on the clock
        step(sandbox, process)
    assert sandbox.held() == concurrency
    process.send_signal(signal.SIGKILL)
    killed = process.finish()
    assert killed.returncode == -signal.SIGKILL
    sent_before = sandbox.stats()["records_processed"]
    assert 0 < sent_before < total  # killed while sending, not after

    sandbox.faults()  # the held request of the dead run goes on, as it would at CleverTap
    resumed = cli.run("upload", "events.ndjson", *COMMON)

    assert resumed.returncode == 0, resumed.stderr
    assert resumed.lines[0] > 1  # picked up at the saved checkpoint
    assert resumed.lines == list(range(resumed.lines[0], total + 1))
    assert sandbox.identities() == set(users("user", 0, total))  # nothing was lost
    # and only what was in flight when the run was killed was sent twice
    resent = sandbox.stats()["records_processed"] - total
    assert 0 <= resent <= concurrency * batch_size


def test_a_killed_run_with_full_batches_resends_at_most_what_was_in_flight(cli, sandbox, tmp_path):
    total, concurrency, batch_size = 2_000, 4, 50
    write_events(tmp_path / "events.ndjson", users("user", 0, total))
    sandbox.faults(hold=True)
    args = ("--batch-size", str(batch_size), "--concurrency", str(concurrency))
    process = cli.start("upload", "events.ndjson", *args, *HOLD, *COMMON)
    state = tmp_path / "state.json"

    # Let the first requests through; the next ones are held, and every answered batch is
    # checkpointed as soon as its results are out (not on a timer).
    wait_for(lambda: sandbox.held() == concurrency, process, "the run never filled its slots")
    sandbox.release()
    wait_for(
        lambda: (
            sandbox.held() == concurrency
            and 0 < checkpointed_line(state) == sandbox.stats()["records_processed"]
        ),
        process,
        "the answered batches were never checkpointed",
    )
    process.send_signal(signal.SIGKILL)
    assert process.finish().returncode == -signal.SIGKILL

    sandbox.faults()  # the held requests of the dead run go on, as they would at CleverTap
    resumed = cli.run("upload", "events.ndjson", *COMMON)

    assert resumed.returncode == 0, resumed.stderr
    assert sandbox.identities() == set(users("user", 0, total))  # nothing was lost
    resent = sandbox.stats()["records_processed"] - total
    assert 0 < resent <= concurrency * batch_size  # just what was in flight


# --- (c) one state file, two runs -------------------------------------------------------------


def test_a_second_run_on_a_state_file_in_use_exits_2_naming_the_first(cli, sandbox, tmp_path):
    write_events(tmp_path / "slow.ndjson", users("slow", 0, 2000))
    write_events(tmp_path / "other.ndjson", users("second", 0, 10))
    sandbox.faults(hold=True)  # the first run stays under way, holding the state file
    first = cli.start("upload", "slow.ndjson", "--batch-size", "50", *HOLD, *COMMON)
    wait_until_held(sandbox, first)

    second = cli.run("upload", "other.ndjson", *COMMON)

    assert second.returncode == 2
    assert second.stdout == ""
    assert f"pid {first.pid}" in second.stderr
    assert "state.json" in second.stderr
    assert stop_with_sigterm(sandbox, first).returncode == 130
    assert not any(identity.startswith("second-") for identity in sandbox.identities())


# --- (d) replaced or truncated input ------------------------------------------------------------


def _replace(path: Path) -> None:
    fresh = path.with_name("fresh.ndjson")
    write_events(fresh, users("new", 1, 6))
    os.replace(fresh, path)  # a new file (new inode) under the old name, like log rotation


def _truncate_shorter(path: Path) -> None:
    write_events(path, users("new", 1, 6))  # same inode, truncated, 5 lines


def _truncate_longer(path: Path) -> None:
    write_events(path, users("new", 1, 16))  # same inode, truncated, then more than before


@pytest.mark.parametrize(
    ("change", "count"),
    [(_replace, 5), (_truncate_shorter, 5), (_truncate_longer, 15)],
    ids=["replaced", "truncated-shorter", "truncated-longer"],
)
def test_a_replaced_or_truncated_file_starts_over_from_line_1(
    cli, sandbox, tmp_path, change, count
):
    events = tmp_path / "events.ndjson"
    write_events(events, users("old", 1, 11))
    assert cli.run("upload", "events.ndjson", *COMMON).returncode == 0

    change(events)
    again = cli.run("upload", "events.ndjson", *COMMON)

    assert again.returncode == 0, again.stderr
    assert again.lines == list(range(1, count + 1))
    assert [result["identity"] for result in again.results] == users("new", 1, count + 1)
    assert "events.ndjson was replaced or truncated" in again.stderr
    assert "starting from the beginning" in again.stderr

    append_events(events, ["new-late"])
    third = cli.run("upload", "events.ndjson", *COMMON)
    assert third.lines == [count + 1]  # the new file's checkpoint holds


# --- (e) profile subscriptions ------------------------------------------------------------------

ACCOUNT_CLOSED_CONFIG = """\
[profiles.default]

[[profiles.default.subscriptions]]
trigger = 'type = "track" and event = "Account Closed"'
action = "delete"
"""


def test_a_profile_subscription_routes_account_closed_to_delete(cli, sandbox, tmp_path):
    write_config(Path(cli.env["CTCLI_CONFIG"]), ACCOUNT_CLOSED_CONFIG)
    events = [
        identify("keep-1"),
        {"type": "track", "event": "Account Closed", "userId": "gone-1"},
        {"type": "track", "event": "Page Viewed", "userId": "keep-2"},
        {"type": "track", "event": "Account Closed", "userId": "gone-2"},
    ]
    (tmp_path / "events.ndjson").write_text(ndjson(events))

    run = cli.run("replay", "events.ndjson", *COMMON)

    assert run.returncode == 0, run.stderr
    assert [(r["line"], r["action"], r["status"]) for r in run.results] == [
        (1, "upload", "ok"),
        (2, "delete", "ok"),
        (3, None, "skipped"),
        (4, "delete", "ok"),
    ]
    state = sandbox.state()
    assert sorted(state["deleted"]) == ["gone-1", "gone-2"]
    assert sandbox.identities() == {"keep-1"}


def test_list_subscriptions_shows_the_profile_subscription(cli, sandbox):
    write_config(Path(cli.env["CTCLI_CONFIG"]), ACCOUNT_CLOSED_CONFIG)

    run = cli.run("replay", "--list-subscriptions")

    assert run.returncode == 0, run.stderr
    ours = [line for line in run.stdout.splitlines() if '"Account Closed"' in line]
    assert len(ours) == 1, run.stdout
    assert 'type = "track" and event = "Account Closed"' in ours[0]
    assert ours[0].rstrip().endswith("delete")
    assert sandbox.stats()["requests"] == 0


# --- (f) the rules of the checkpoint -----------------------------------------------------------


@pytest.mark.parametrize("files", [["-"], []], ids=["dash", "implicit-stdin"])
def test_state_cannot_track_stdin(cli, sandbox, files):
    run = cli.run("upload", *files, *COMMON, input=ndjson([identify("u1")]))

    assert run.returncode == 2
    assert run.stdout == ""
    assert "--state" in run.stderr and "stdin" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1  # one clear line, no traceback
    assert sandbox.stats()["requests"] == 0


def _with_one_bad(path: Path) -> None:
    write_events(path, ["ok-1", "ok-2", "bad-3", "ok-4", "ok-5", "ok-6"])


BATCH_OF_ONE = ("--batch-size", "1", "--max-retries", "0")


def test_a_failed_event_without_failed_file_is_retried_by_the_next_run(cli, sandbox, tmp_path):
    _with_one_bad(tmp_path / "events.ndjson")
    sandbox.faults(bad_batch_marker="bad-")  # its upload is refused with 400

    first = cli.run("upload", "events.ndjson", *BATCH_OF_ONE, *COMMON)
    assert first.returncode == 1
    assert [r["status"] for r in first.results] == ["ok", "ok", "failed", "ok", "ok", "ok"]

    sandbox.faults()
    second = cli.run("upload", "events.ndjson", *BATCH_OF_ONE, *COMMON)

    assert second.returncode == 0, second.stderr
    # The checkpoint stopped before the failed line; what followed it is sent again too.
    assert second.lines == [3, 4, 5, 6]
    assert "bad-3" in sandbox.identities()


def test_a_failed_event_written_to_the_failed_file_is_passed(cli, sandbox, tmp_path):
    _with_one_bad(tmp_path / "events.ndjson")
    sandbox.faults(bad_batch_marker="bad-")
    args = ("upload", "events.ndjson", *BATCH_OF_ONE, "--failed", "failed.ndjson", *COMMON)

    first = cli.run(*args)
    assert first.returncode == 1
    failed = [json.loads(line) for line in (tmp_path / "failed.ndjson").read_text().splitlines()]
    assert [(entry["line"], entry["event"]["userId"]) for entry in failed] == [(3, "bad-3")]

    sandbox.faults()
    requests = sandbox.stats()["requests"]
    second = cli.run(*args)

    assert second.returncode == 0, second.stderr
    assert second.results == []
    assert sandbox.stats()["requests"] == requests


def test_the_state_file_never_holds_the_passcode(cli, sandbox, tmp_path):
    events = tmp_path / "events.ndjson"
    _with_one_bad(events)
    sandbox.faults(bad_batch_marker="bad-")
    args = ("upload", "events.ndjson", *BATCH_OF_ONE, "--failed", "failed.ndjson", *COMMON)
    assert cli.run(*args).returncode == 1
    append_events(events, ["ok-7"])
    assert cli.run(*args).returncode == 0

    for name in ("state.json", "state.json.lock", "failed.ndjson"):
        assert PASSCODE not in (tmp_path / name).read_text(), name
    assert json.loads((tmp_path / "state.json").read_text())["files"]  # it did checkpoint


def test_a_dry_run_does_not_move_the_checkpoint(cli, sandbox, tmp_path):
    events = tmp_path / "events.ndjson"
    write_events(events, users("user", 1, 6))
    assert cli.run("upload", "events.ndjson", *COMMON).returncode == 0
    append_events(events, users("user", 6, 11))
    checkpoint = (tmp_path / "state.json").read_bytes()
    requests = sandbox.stats()["requests"]

    dry = cli.run("upload", "events.ndjson", "--dry-run", *COMMON)

    assert dry.returncode == 0, dry.stderr
    assert dry.lines == [6, 7, 8, 9, 10]  # what the next real run would send
    assert {result["status"] for result in dry.results} == {"dry-run"}
    assert (tmp_path / "state.json").read_bytes() == checkpoint
    assert sandbox.stats()["requests"] == requests

    real = cli.run("upload", "events.ndjson", *COMMON)
    assert real.lines == [6, 7, 8, 9, 10]
    assert {result["status"] for result in real.results} == {"ok"}


def test_a_dry_run_on_a_new_state_file_creates_no_checkpoint(cli, sandbox, tmp_path):
    write_events(tmp_path / "events.ndjson", users("user", 1, 4))

    dry = cli.run("upload", "events.ndjson", "--dry-run", *COMMON)

    assert dry.returncode == 0, dry.stderr
    assert not (tmp_path / "state.json").exists()
    assert cli.run("upload", "events.ndjson", *COMMON).lines == [1, 2, 3]


# --- lines still being written, one-off items ----------------------------------------------------


def test_a_last_line_still_being_written_is_read_again_once_complete(cli, sandbox, tmp_path):
    events = tmp_path / "events.ndjson"
    write_events(events, ["u1", "u2"])
    with events.open("a") as handle:
        handle.write('{"type": "identify", "userId": "late"')  # the writer is mid-line

    first = cli.run("upload", "events.ndjson", *COMMON)
    assert first.returncode == 1
    assert [r["status"] for r in first.results] == ["ok", "ok", "invalid"]
    assert "line 3 has no newline yet" in first.stderr

    with events.open("a") as handle:
        handle.write(', "traits": {"plan": "pro"}}\n')
    second = cli.run("upload", "events.ndjson", *COMMON)

    assert second.returncode == 0, second.stderr
    assert [(r["line"], r["identity"], r["status"]) for r in second.results] == [(3, "late", "ok")]
    assert "late" in sandbox.identities()


def test_a_one_off_identity_never_checkpoints_a_file_named_args(cli, sandbox, tmp_path):
    write_events(tmp_path / "args", ["bad-1", "ok-2"])
    sandbox.faults(bad_batch_marker="bad-")
    args = ("upload", "--identity", "alice", "--set", "Plan=pro", "args", *BATCH_OF_ONE, *COMMON)

    first = cli.run(*args)
    assert first.returncode == 1
    assert [(r["source"], r["line"], r["status"]) for r in first.results] == [
        ("args", 1, "ok"),  # the one-off profile
        ("args", 1, "failed"),  # line 1 of the file named "args"
        ("args", 2, "ok"),
    ]

    sandbox.faults()
    second = cli.run("upload", "args", *BATCH_OF_ONE, *COMMON)

    assert second.returncode == 0, second.stderr
    assert second.lines == [1, 2]  # the failed line 1 is tried again, not skipped
    assert "bad-1" in sandbox.identities()


def test_a_checkpoint_inside_a_batch_envelope_line_loses_nothing(cli, sandbox, tmp_path):
    envelope = {"batch": [identify("ok-1"), identify("ok-2"), identify("ok-3"), identify("bad-4")]}
    (tmp_path / "events.ndjson").write_text(ndjson([envelope, identify("bad-x")]))
    sandbox.faults(bad_batch_marker="bad-")

    first = cli.run("upload", "events.ndjson", *BATCH_OF_ONE, *COMMON)
    assert first.returncode == 1
    assert [r["status"] for r in first.results] == ["ok", "ok", "ok", "failed", "failed"]

    sandbox.faults()
    second = cli.run("upload", "events.ndjson", *BATCH_OF_ONE, *COMMON)

    assert second.returncode == 0, second.stderr
    # Envelope items are numbered by position (1..4), the plain line after it by its line (2):
    # both failed events come back, whatever their numbers.
    assert [r["identity"] for r in second.results] == ["bad-4", "bad-x"]


def test_a_json_array_file_resumes_after_the_items_it_settled(cli, sandbox, tmp_path):
    people = ["ok-1", "ok-2", "bad-3", "ok-4"]
    (tmp_path / "events.json").write_text(json.dumps([identify(p) for p in people], indent=2))
    sandbox.faults(bad_batch_marker="bad-")
    assert cli.run("upload", "events.json", *BATCH_OF_ONE, *COMMON).returncode == 1

    sandbox.faults()
    second = cli.run("upload", "events.json", *BATCH_OF_ONE, *COMMON)

    assert second.returncode == 0, second.stderr
    assert second.lines == [3, 4]
    assert "skipping the 2 items settled by an earlier run" in second.stderr


def test_a_gzip_file_with_a_member_appended_sends_only_the_new_lines(cli, sandbox, tmp_path):
    events = tmp_path / "events.ndjson.gz"
    events.write_bytes(gzip.compress(ndjson([identify(u) for u in users("user", 1, 11)]).encode()))
    assert cli.run("upload", "events.ndjson.gz", *COMMON).lines == list(range(1, 11))

    with events.open("ab") as handle:  # what `gzip >>` does: a second gzip member
        handle.write(gzip.compress(ndjson([identify(u) for u in users("user", 11, 16)]).encode()))
    second = cli.run("upload", "events.ndjson.gz", *COMMON)

    assert second.returncode == 0, second.stderr
    assert second.lines == [11, 12, 13, 14, 15]
    assert sandbox.stats()["records_processed"] == 15


def test_a_checkpoint_with_nonsense_values_starts_the_file_over(cli, sandbox, tmp_path):
    write_events(tmp_path / "events.ndjson", users("user", 1, 4))
    assert cli.run("upload", "events.ndjson", *COMMON).returncode == 0
    state = json.loads((tmp_path / "state.json").read_text())
    (entry,) = state["files"].values()
    entry.update(line="many", offset=-5)
    (tmp_path / "state.json").write_text(json.dumps(state))

    again = cli.run("upload", "events.ndjson", *COMMON)

    assert again.returncode == 0, again.stderr
    assert again.lines == [1, 2, 3]
    assert "starting from the beginning" in again.stderr


def test_an_unreadable_state_file_is_a_clear_error_and_is_left_alone(cli, sandbox, tmp_path):
    write_events(tmp_path / "events.ndjson", users("user", 1, 4))
    (tmp_path / "state.json").write_text("{not json")

    run = cli.run("upload", "events.ndjson", *COMMON)

    assert run.returncode == 2
    assert run.stdout == ""
    assert "state file 'state.json' is unreadable" in run.stderr
    assert (tmp_path / "state.json").read_text() == "{not json"
    assert sandbox.stats()["requests"] == 0


def _blocked_writing_to_a_pipe(pid: int) -> bool:
    try:
        return "pipe" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs Linux /proc wchan")
def test_a_signal_while_stdout_is_full_loses_no_result_line(cli, tmp_path):
    write_events(tmp_path / "events.ndjson", users("user", 0, 20_000))
    env = {**cli.env, "PYTHONUNBUFFERED": "1"}  # as in many container images
    process = subprocess.Popen(
        cli.argv(["upload", "events.ndjson", "--dry-run", "-o", "ndjson"]),
        cwd=cli.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + RUN_TIMEOUT
    while not _blocked_writing_to_a_pipe(process.pid):  # nobody reads stdout yet: it fills up
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    run = Run(process.returncode, stdout, stderr)

    assert run.returncode == 130
    assert run.lines == list(range(1, run.summary["events"] + 1))
