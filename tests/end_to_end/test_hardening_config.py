"""The config file ctcli reads and writes must be a regular file that only its owner can change.

A FIFO, a device, a directory or a socket is refused without being opened in a way that could
block, and is never replaced. A file others could have written is refused (it could send the
passcode from the environment anywhere) unless CTCLI_ALLOW_INSECURE_CONFIG=1 says otherwise.
FIFO cases run ctcli as a real process with a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ctcli import config
from ctcli.cli.app import app
from ctcli.sandbox import Sandbox
from tests.helpers import one_error_line

PASSCODE = "HARDENING-PASSCODE-5521"
RUN_TIMEOUT = 20  # seconds: a guard against a hung run, never a timing assertion
OTHER_UID = 54321  # a user id no test process runs as

runner = CliRunner()


def clean_env(config_file: Path, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CLEVERTAP_", "CTCLI_"))
    }
    env.update(CTCLI_CONFIG=str(config_file), **extra)
    return env


def run_ctcli(
    config_file: Path, *args: str, input: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctcli", *args],
        env=clean_env(config_file, **env),
        cwd=config_file.parent,
        input=input,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def invoke(config_file: Path, *args: str, input: str | None = None, **env: str) -> Result:
    variables: dict[str, str | None] = {
        name: None
        for name in os.environ
        if name.startswith(("CLEVERTAP_", "CTCLI_")) and name not in env
    }
    variables.update(CTCLI_CONFIG=str(config_file), **env)
    return runner.invoke(app, list(args), input=input, env=variables)


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def profile_text(endpoint: str | None = None) -> str:
    text = f'[profiles.default]\nproject_id = "FILE-ID"\npasscode = "{PASSCODE}"\n'
    if endpoint:
        text += f'endpoint = "{endpoint}"\n'
    return text


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    os.mkfifo(path)
    return path


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(project_id="SBX-ID", passcode=PASSCODE) as server:
        yield server


# --- not a regular file ----------------------------------------------------------------------


def test_list_refuses_a_fifo_config_at_once(fifo: Path) -> None:
    done = run_ctcli(fifo, "configure", "--list")
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert str(fifo) in line
    assert "FIFO" in line
    assert done.stdout == ""


def test_upload_refuses_a_fifo_config_at_once(fifo: Path, events: Path) -> None:
    done = run_ctcli(fifo, "upload", str(events), "--dry-run", "-o", "ndjson")
    assert done.returncode == 2
    assert str(fifo) in one_error_line(done.stderr)
    assert done.stdout == ""


def test_configure_refuses_to_write_over_a_fifo(fifo: Path) -> None:
    done = run_ctcli(
        fifo, "configure", "--project-id", "ID", "--passcode-stdin", input=PASSCODE + "\n"
    )
    assert done.returncode == 2
    assert str(fifo) in one_error_line(done.stderr)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(p.name for p in fifo.parent.iterdir()) == ["config.toml"]  # no temp file left


def test_list_refuses_a_directory_config(tmp_path: Path) -> None:
    directory = tmp_path / "config.toml"
    directory.mkdir()
    result = invoke(directory, "configure", "--list")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"{directory} is a directory" in line


def test_configure_refuses_to_write_over_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "config.toml"
    directory.mkdir()
    result = invoke(directory, "configure", "--project-id", "ID", "--passcode-stdin", input="pc\n")
    assert result.exit_code == 2
    assert str(directory) in one_error_line(result.stderr)
    assert directory.is_dir()
    assert list(directory.iterdir()) == []


def test_list_refuses_a_socket_config(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        result = invoke(path, "configure", "--list")
    assert result.exit_code == 2
    assert f"{path} is a socket" in one_error_line(result.stderr)


@pytest.fixture
def null_device(tmp_path: Path) -> Path:
    """A character device like /dev/null (1, 3), made for the test: the real one is not touched."""
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    return path


def test_configure_never_replaces_a_device_with_the_passcode(null_device: Path) -> None:
    result = invoke(
        null_device, "configure", "--project-id", "ID", "--passcode-stdin", input=PASSCODE + "\n"
    )
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"{null_device} is a character device" in line
    assert "chmod" not in result.stderr
    assert stat.S_ISCHR(os.lstat(null_device).st_mode)
    assert sorted(p.name for p in null_device.parent.iterdir()) == ["null"]


def test_upload_refuses_a_device_config(null_device: Path, events: Path) -> None:
    result = invoke(null_device, "upload", str(events), "--dry-run", "-o", "ndjson")
    assert result.exit_code == 2
    assert "character device" in one_error_line(result.stderr)


def test_save_profile_refuses_a_fifo(fifo: Path) -> None:
    outcome: list[BaseException | None] = []

    def save() -> None:
        try:
            config.save_profile(
                fifo, "default", project_id="ID", passcode=PASSCODE, region="eu1", endpoint=None
            )
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    # A daemon thread: if opening the FIFO blocks, the test fails instead of hanging.
    worker = threading.Thread(target=save, daemon=True)
    worker.start()
    worker.join(RUN_TIMEOUT)
    assert outcome, "save_profile blocked on the FIFO"
    assert isinstance(outcome[0], config.ConfigError)
    assert "FIFO" in str(outcome[0])
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_symlink_to_a_regular_config_file_is_still_followed(tmp_path: Path) -> None:
    real = write_config(tmp_path / "real.toml", profile_text())
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    assert config.load_config(link)["profiles"]["default"]["project_id"] == "FILE-ID"


# --- a file others could have changed ---------------------------------------------------------


@pytest.mark.parametrize("mode", [0o666, 0o620, 0o602, 0o660])
def test_a_config_writable_by_others_is_refused_and_nothing_is_sent(
    tmp_path: Path, events: Path, sandbox: Sandbox, mode: int
) -> None:
    # Someone else planted an endpoint; the passcode itself comes from the environment.
    path = write_config(tmp_path / "config.toml", profile_text(sandbox.url), mode)
    result = invoke(
        path,
        "upload",
        str(events),
        "-o",
        "ndjson",
        CLEVERTAP_PROJECT_ID="SBX-ID",
        CLEVERTAP_PASSCODE=PASSCODE,
    )
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"writable by group or others (mode {mode:04o})" in line
    assert f"chmod 600 {path}" in line
    assert PASSCODE not in result.stderr + result.stdout
    assert sandbox.stats()["requests"] == 0


def test_list_refuses_a_config_writable_by_others(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.toml", profile_text(), 0o666)
    result = invoke(path, "configure", "--list")
    assert result.exit_code == 2
    assert f"chmod 600 {path}" in one_error_line(result.stderr)
    assert result.stdout == ""


def test_configure_refuses_to_write_into_a_config_writable_by_others(tmp_path: Path) -> None:
    text = profile_text("http://attacker.invalid")
    path = write_config(tmp_path / "config.toml", text, 0o666)
    result = invoke(path, "configure", "--project-id", "ID", "--passcode-stdin", input="new-pc\n")
    assert result.exit_code == 2
    one_error_line(result.stderr)
    assert path.read_text() == text
    assert stat.S_IMODE(path.stat().st_mode) == 0o666


@pytest.fixture
def foreign_config(tmp_path: Path) -> Path:
    """A private (0600) config file owned by another user."""
    path = write_config(tmp_path / "config.toml", profile_text())
    try:
        os.chown(path, OTHER_UID, -1)
    except PermissionError:
        pytest.skip("changing a file's owner needs root")
    return path


def test_a_config_owned_by_another_user_is_refused(foreign_config: Path, events: Path) -> None:
    result = invoke(foreign_config, "upload", str(events), "--dry-run", "-o", "ndjson")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert f"owned by another user (uid {OTHER_UID})" in line
    assert f"chown {os.getuid()} {foreign_config}" in line


def test_list_refuses_a_config_owned_by_another_user(foreign_config: Path) -> None:
    result = invoke(foreign_config, "configure", "--list")
    assert result.exit_code == 2
    assert "owned by another user" in one_error_line(result.stderr)


def test_allowing_an_insecure_config_uses_it_with_a_warning(tmp_path: Path, events: Path) -> None:
    path = write_config(tmp_path / "config.toml", profile_text(), 0o666)
    result = invoke(
        path,
        "upload",
        str(events),
        "--dry-run",
        "-o",
        "ndjson",
        **{config.ENV_ALLOW_INSECURE_CONFIG: "1"},
    )
    assert result.exit_code == 0, result.stderr
    assert f"chmod 600 {path}" in result.stderr
    assert '"status":"dry-run"' in result.stdout.replace(" ", "")


def test_allowing_an_insecure_config_lists_it_with_a_warning(foreign_config: Path) -> None:
    result = invoke(
        foreign_config, "configure", "--list", **{config.ENV_ALLOW_INSECURE_CONFIG: "1"}
    )
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"ctcli: warning: config file {foreign_config} is owned")
    assert "FILE-ID" in result.stdout
    assert PASSCODE not in result.stdout


def test_only_1_allows_an_insecure_config(tmp_path: Path) -> None:
    path = write_config(tmp_path / "config.toml", profile_text(), 0o666)
    with pytest.raises(config.ConfigError, match="writable by group or others"):
        config.load_config(path, {config.ENV_ALLOW_INSECURE_CONFIG: "yes"})


def test_a_config_readable_by_others_is_used_with_a_warning(tmp_path: Path, events: Path) -> None:
    path = write_config(tmp_path / "config.toml", profile_text(), 0o644)
    result = invoke(path, "upload", str(events), "--dry-run", "-o", "ndjson")
    assert result.exit_code == 0, result.stderr
    assert "is accessible by group or others (mode 0644)" in result.stderr
    assert f"chmod 600 {path}" in result.stderr
