"""The README tells the truth: every command and option is documented, every example runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ctcli.cli.app import app
from ctcli.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
COMMANDS = ["configure", "upload", "delete", "replay", "sandbox", "changes", "version"]


def help_of(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    return result.stdout


def long_options(help_text: str) -> set[str]:
    shells = {"--install-completion", "--show-completion"}  # Typer's own, in "Shell completion"
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", help_text)) - {"--help"} - shells


def test_every_command_in_help_is_in_the_readme():
    commands_part = help_of().split("Commands:", 1)[1]
    listed = re.findall(r"^  (\w+) ", commands_part, flags=re.MULTILINE)
    assert set(listed) == set(COMMANDS)
    for command in listed:
        assert f"ctcli {command}" in README, command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_every_command_is_in_the_readme(command):
    missing = sorted(option for option in long_options(help_of(command)) if option not in README)
    assert not missing, f"ctcli {command}: {missing} not in README.md"


def test_version_option_is_in_the_readme():
    assert "ctcli --version" in README and "--version" in help_of()


def fenced_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_ci_runs_exactly_the_readme_test_command():
    test_command = next(
        line for block in fenced_blocks("sh") for line in block.splitlines() if "pytest" in line
    )
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_setup_command_replays_a_sample_file():
    setup = fenced_blocks("sh")[0].strip()
    assert "ctcli replay --sandbox sample_events/" in setup


def example_lines() -> list[str]:
    lines = []
    for block in fenced_blocks("sh"):
        for line in block.splitlines():
            command = line.split("  #")[0].strip()
            if "ctcli " not in command or "pip install" in command:
                continue
            if command == "ctcli configure":  # interactive: asks on a terminal
                continue
            if command.startswith("mkdir "):  # the cron set-up: run by test_readme_cron
                continue
            lines.append(command)
    return lines


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch directory that has the samples and a file like the README's export."""
    path = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "sample_events", path / "sample_events")
    return path


@pytest.mark.parametrize("command", example_lines())
def test_readme_example_runs_as_written(command, workdir, tmp_path):
    if command.startswith("jq ") and shutil.which("jq") is None:
        pytest.skip("jq is not installed here")
    bin_dir = str(Path(sys.executable).parent)
    with Sandbox(project_id="README-ACC", passcode="readme-pass") as sandbox:
        env = {
            **os.environ,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "CTCLI_CONFIG": str(tmp_path / "config.toml"),
            "CLEVERTAP_ENDPOINT": sandbox.url,
            "CLEVERTAP_PROJECT_ID": "README-ACC",
            "CLEVERTAP_PASSCODE": "readme-pass",
            "PASSCODE": "readme-pass",
        }
        env.pop("CTCLI_PROFILE", None)
        command = command.replace("cd /var/lib/ctcli && ", "")  # the re-drive recipe, here
        if "failed-again" in command or "redrive" in command:
            (workdir / "failed.ndjson").write_text(
                '{"event": {"type": "identify", "userId": "r1", "traits": {"a": 1}}, '
                '"source": "x", "line": 1, "action": "upload", "status": "failed", '
                '"code": 503, "error": "HTTP 503"}\n'
            )
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert "Traceback" not in done.stderr
    expected = 1 if "malformed" in command else 0
    assert done.returncode == expected, done.stderr


def variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "ctcli").rglob("*.py"):
        source = path.read_text()
        names.update(re.findall(r'"((?:CTCLI|CLEVERTAP)_[A-Z0-9_]+)"', source))
        names.update(re.findall(r'(?:environ|env)\.get\(\s*"([A-Z][A-Z0-9_]+)"', source))
    return names


def test_the_environment_table_lists_every_variable_the_code_reads():
    table = README.split("### Environment variables", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    found = variables_read_by_the_code()
    assert {"CLEVERTAP_PASSCODE", "CTCLI_WORKERS", "XDG_CONFIG_HOME"} <= found  # the scan works
    assert found - listed == set()
