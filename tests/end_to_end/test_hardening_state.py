"""--state and its lock file: never through a final symlink, one lock per file however it is
named, and every reason the checkpoint could not be saved found before anything is sent.

Runs that could hang (a FIFO) or that must overlap (a lock held by another run) are real
processes (`python -m ctcli`); the rest go through CliRunner against the loopback sandbox.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ctcli.delivery.checkpoints import StateFile
from ctcli.errors import ConfigError
from ctcli.sandbox import Sandbox
from tests.helpers import one_error_line

RUN_TIMEOUT = 20  # seconds: a guard against a hung run, never a timing assertion
STATE_TEXT = '{"version": 1, "files": {}}'
PRECIOUS = "precious bytes that no ctcli run may cut\n"

runner = CliRunner()


def upload(events: Path, state: Path | str, *more: str) -> Result:
    from ctcli.cli.app import app

    return runner.invoke(app, ["upload", str(events), "--state", str(state), "-o", "ndjson", *more])


def assert_refused_before_sending(result: Result, sandbox: Sandbox) -> str:
    assert result.exit_code == 2, result.stderr
    assert result.stdout == ""
    assert sandbox.stats()["requests"] == 0
    return one_error_line(result.stderr)


def process_env() -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLEVERTAP_", "CTCLI_"))
    }
    env["CTCLI_CONFIG"] = os.environ["CTCLI_CONFIG"]  # the test's own (from the `env` fixture)
    return env


def run_ctcli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctcli", *args],
        cwd=cwd,
        env=process_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


@pytest.fixture
def precious(tmp_path: Path) -> Path:
    path = tmp_path / "precious.txt"
    path.write_text(PRECIOUS)
    return path


# --- symlinks and hard links at STATE and STATE.lock -----------------------------------------


def test_a_symlink_at_the_lock_file_is_refused_and_its_target_kept(
    live: Sandbox, events: Path, precious: Path, tmp_path: Path
) -> None:
    lock = tmp_path / "s.json.lock"
    lock.symlink_to(precious)
    line = assert_refused_before_sending(upload(events, tmp_path / "s.json"), live)
    assert "lock file" in line and "symlink" in line
    assert precious.read_text() == PRECIOUS
    assert lock.is_symlink()


def test_a_hard_link_at_the_lock_file_is_refused_and_its_other_name_kept(
    live: Sandbox, events: Path, precious: Path, tmp_path: Path
) -> None:
    os.link(precious, tmp_path / "s.json.lock")
    line = assert_refused_before_sending(upload(events, tmp_path / "s.json"), live)
    assert "hard links" in line
    assert precious.read_text() == PRECIOUS


def test_a_symlink_at_the_state_file_is_refused_and_kept(
    live: Sandbox, events: Path, tmp_path: Path
) -> None:
    real = tmp_path / "real.json"
    real.write_text(STATE_TEXT)
    link = tmp_path / "s.json"
    link.symlink_to(real)
    line = assert_refused_before_sending(upload(events, link), live)
    assert f"state file '{link}' is a symlink" in line
    assert link.is_symlink()
    assert real.read_text() == STATE_TEXT


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of real/s.json, as a run in progress does."""
    (tmp_path / "real").mkdir()
    code = (
        "import sys\n"
        "from ctcli.delivery.checkpoints import StateFile\n"
        "StateFile(sys.argv[1]).lock()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "real" / "s.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == "locked\n"
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()  # lets it end, which releases the lock
        process.wait(timeout=RUN_TIMEOUT)


def test_a_state_file_named_through_a_symlink_cannot_bypass_the_lock(
    env: dict[str, str], events: Path, tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    (tmp_path / "link.json").symlink_to(tmp_path / "real" / "s.json")
    done = run_ctcli(tmp_path, "upload", str(events), "--sandbox", "--state", "link.json")
    assert done.returncode == 2, done.stderr
    assert "is a symlink" in one_error_line(done.stderr)
    assert done.stdout == ""
    assert (tmp_path / "link.json").is_symlink()


@pytest.mark.parametrize(
    "spelling",
    ["alias/s.json", "./real/s.json", "real/../real/s.json", "real//s.json", "{tmp}/real/s.json"],
)
def test_every_spelling_of_one_state_file_shares_its_lock(
    env: dict[str, str],
    events: Path,
    tmp_path: Path,
    holder: subprocess.Popen[str],
    spelling: str,
) -> None:
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    state = spelling.format(tmp=tmp_path)
    done = run_ctcli(tmp_path, "upload", str(events), "--sandbox", "--state", state)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"in use by another ctcli run (pid {holder.pid})" in line
    assert done.stdout == ""


def test_a_state_file_through_a_directory_symlink_is_saved_in_the_real_directory(
    env: dict[str, str], events: Path, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    done = run_ctcli(tmp_path, "upload", str(events), "--sandbox", "--state", "alias/s.json")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "real").iterdir()) == ["s.json", "s.json.lock"]


def test_a_fifo_as_the_state_file_is_refused_at_once(
    env: dict[str, str], events: Path, tmp_path: Path
) -> None:
    os.mkfifo(tmp_path / "s.json")
    done = run_ctcli(tmp_path, "upload", str(events), "--sandbox", "--state", "s.json")
    assert done.returncode == 2, done.stderr
    assert "state file 's.json' is not a regular file" in one_error_line(done.stderr)
    assert done.stdout == ""


# --- everything the checkpoint needs, checked before anything is sent ---------------------------


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("missing/s.json", "does not exist"),
        ("a-file/s.json", "is not a directory"),
        ("a-directory", "is not a regular file"),
    ],
)
def test_a_state_file_that_cannot_be_kept_is_refused_before_sending(
    live: Sandbox, events: Path, tmp_path: Path, state: str, says: str
) -> None:
    (tmp_path / "a-file").write_text("")
    (tmp_path / "a-directory").mkdir()
    line = assert_refused_before_sending(upload(events, tmp_path / state), live)
    assert says in line
    assert str(tmp_path / state) in line


@pytest.fixture
def unwritable_directory(tmp_path: Path) -> Iterator[Path]:
    """A directory where no file can be created, holding the lock file of an earlier run.

    Root ignores permission bits, so as root the directory is made immutable instead.
    """
    directory = tmp_path / "frozen"
    directory.mkdir()
    (directory / "s.json.lock").write_text("1\n")
    if os.geteuid() != 0:
        directory.chmod(0o555)
        yield directory
        directory.chmod(0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(directory)]).returncode != 0:
        pytest.skip("cannot make a directory immutable here")
    try:
        yield directory
    finally:
        subprocess.run([chattr, "-i", str(directory)], check=True)


def test_an_unwritable_state_directory_is_refused_before_sending(
    live: Sandbox, events: Path, unwritable_directory: Path
) -> None:
    line = assert_refused_before_sending(upload(events, unwritable_directory / "s.json"), live)
    assert f"cannot write in directory '{unwritable_directory}'" in line


def test_check_leaves_nothing_behind_in_a_writable_directory(tmp_path: Path) -> None:
    StateFile(tmp_path / "s.json").check()
    assert list(tmp_path.iterdir()) == []


def test_check_refuses_a_state_file_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        StateFile(tmp_path / "missing" / "s.json").check()
