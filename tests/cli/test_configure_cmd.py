"""`ctcli configure`: writing profiles, prompting only on a terminal, --list, --check."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from ctcli.cli.app import app
from ctcli.cli.environment import Environment
from ctcli.sandbox import Sandbox

SENTINEL = "SENTINEL-PASSCODE-7731"
SANDBOX_ID = "SBX-123-TEST"
SANDBOX_PASSCODE = "sandbox-passcode-0042"

runner = CliRunner()


def clean_env(config: Path, **extra: str) -> dict[str, str | None]:
    """An environment with only this test's config file and settings (None unsets a variable)."""
    env: dict[str, str | None] = {
        "CTCLI_CONFIG": str(config),
        "CTCLI_PROFILE": None,
        "CTCLI_DEBUG": None,
        "CLEVERTAP_PROJECT_ID": None,
        "CLEVERTAP_PASSCODE": None,
        "CLEVERTAP_REGION": None,
        "CLEVERTAP_ENDPOINT": None,
    }
    env.update(extra)
    return env


# Whether stdin is a terminal, as the `terminal` and `not_terminal` fixtures say (None: ask it).
_STDIN_IS_TERMINAL: dict[str, bool | None] = {"now": None}


def invoke(config: Path, args: list[str], input: str | None = None, **env: str) -> Result:
    environment = Environment(stdin_isatty=_STDIN_IS_TERMINAL["now"])
    return runner.invoke(
        app, ["configure", *args], input=input, env=clean_env(config, **env), obj=environment
    )


def profiles(config: Path) -> dict[str, Any]:
    return tomllib.loads(config.read_text())["profiles"]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return tmp_path / "c.toml"


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_STDIN_IS_TERMINAL, "now", True)


@pytest.fixture
def not_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(_STDIN_IS_TERMINAL, "now", False)


def write_profile(config: Path, name: str = "p", **extra: str) -> None:
    args = ["--profile", name, "--project-id", "ID", "--region", "IN", "--passcode-stdin"]
    for key, value in extra.items():
        args += [f"--{key.replace('_', '-')}", value]
    result = invoke(config, args, input="old-passcode-9876\n")
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(project_id=SANDBOX_ID, passcode=SANDBOX_PASSCODE) as server:
        yield server


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- writing ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("not_terminal")
def test_write_with_flags_and_passcode_stdin_saves_a_0600_file_with_region_in1(
    config: Path,
) -> None:
    result = invoke(
        config,
        ["--profile", "p", "--project-id", "ID", "--region", "IN", "--passcode-stdin"],
        input="s3cret-passcode\n",
    )
    assert result.exit_code == 0
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert profiles(config)["p"] == {
        "project_id": "ID",
        "passcode": "s3cret-passcode",
        "region": "in1",
    }
    assert result.stderr == f"Saved profile 'p' to {config}\n"
    assert result.stdout == ""


@pytest.mark.usefixtures("not_terminal")
def test_write_uses_ctcli_profile_when_no_profile_is_given(config: Path) -> None:
    result = invoke(
        config, ["--project-id", "ID", "--passcode-stdin"], input="pc\n", CTCLI_PROFILE="ci"
    )
    assert result.exit_code == 0
    assert set(profiles(config)) == {"ci"}


@pytest.mark.usefixtures("not_terminal")
def test_new_profile_gets_region_eu1_by_default(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--passcode-stdin"], input="pc\n")
    assert result.exit_code == 0
    assert profiles(config)["default"]["region"] == "eu1"


@pytest.mark.usefixtures("not_terminal")
def test_bad_region_is_a_one_line_error_with_exit_2(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--region", "mars", "--passcode-stdin"], "pc\n")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("ctcli: error: unknown region 'mars'")
    assert not config.exists()


@pytest.mark.usefixtures("not_terminal")
def test_missing_project_id_without_a_terminal_names_the_flag(config: Path) -> None:
    result = invoke(config, ["--passcode-stdin"], input="pc\n")
    assert result.exit_code == 2
    assert result.stderr == (
        "ctcli: error: no project id given: use --project-id "
        "(stdin is not a terminal, so ctcli cannot ask)\n"
    )
    assert not config.exists()


@pytest.mark.usefixtures("not_terminal")
def test_missing_passcode_without_a_terminal_names_passcode_stdin(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID"])
    assert result.exit_code == 2
    assert "use --passcode-stdin" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.usefixtures("not_terminal")
def test_empty_passcode_on_stdin_is_an_error(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--passcode-stdin"], input="\n")
    assert result.exit_code == 2
    assert "no passcode on stdin" in result.stderr


@pytest.mark.usefixtures("not_terminal")
def test_passcode_stdin_reads_only_the_first_line_stripped(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--passcode-stdin"], input="  pc1  \nrest\n")
    assert result.exit_code == 0
    assert profiles(config)["default"]["passcode"] == "pc1"


def test_passcode_is_not_accepted_as_a_flag(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--passcode", "pc"])
    assert result.exit_code == 2
    assert not config.exists()


@pytest.mark.usefixtures("not_terminal")
def test_updating_without_a_terminal_keeps_the_current_passcode(config: Path) -> None:
    write_profile(config)
    result = invoke(config, ["--profile", "p", "--region", "us"])
    assert result.exit_code == 0, result.stderr
    assert profiles(config)["p"] == {
        "project_id": "ID",
        "passcode": "old-passcode-9876",
        "region": "us1",
    }


@pytest.mark.usefixtures("not_terminal")
def test_updating_keeps_other_profiles_and_subscriptions(config: Path) -> None:
    config.write_text(
        '[profiles.other]\nproject_id = "O"\npasscode = "op"\n\n'
        '[profiles.p]\nproject_id = "ID"\npasscode = "pp"\n\n'
        '[[profiles.p.subscriptions]]\ntrigger = \'event = "Gone"\'\naction = "delete"\n'
    )
    config.chmod(0o600)
    result = invoke(config, ["-p", "p", "--project-id", "NEW"])
    assert result.exit_code == 0, result.stderr
    data = profiles(config)
    assert data["other"] == {"project_id": "O", "passcode": "op"}
    assert data["p"]["project_id"] == "NEW"
    assert data["p"]["subscriptions"] == [{"trigger": 'event = "Gone"', "action": "delete"}]


@pytest.mark.usefixtures("not_terminal")
def test_endpoint_is_saved_and_an_empty_endpoint_removes_it(config: Path) -> None:
    write_profile(config, endpoint="http://127.0.0.1:8080/")
    assert profiles(config)["p"]["endpoint"] == "http://127.0.0.1:8080"
    result = invoke(config, ["-p", "p", "--endpoint", ""])
    assert result.exit_code == 0, result.stderr
    assert "endpoint" not in profiles(config)["p"]


@pytest.mark.usefixtures("not_terminal")
def test_endpoint_that_is_not_a_url_is_refused(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--endpoint", "localhost:8080"], "pc\n")
    assert result.exit_code == 2
    assert "invalid endpoint" in result.stderr


@pytest.mark.usefixtures("not_terminal")
def test_writing_over_a_world_readable_file_warns_and_makes_it_private(config: Path) -> None:
    write_profile(config)
    config.chmod(0o644)
    result = invoke(config, ["-p", "p", "--region", "sg"])
    assert result.exit_code == 0
    assert "now mode 0600" in result.stderr
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


# --- prompting -------------------------------------------------------------------------------


@pytest.mark.usefixtures("terminal")
def test_on_a_terminal_missing_values_are_prompted(config: Path) -> None:
    result = invoke(config, ["--profile", "p"], input="ID-42\nIN\nprompted-pass\n")
    assert result.exit_code == 0, result.stderr
    assert profiles(config)["p"] == {
        "project_id": "ID-42",
        "passcode": "prompted-pass",
        "region": "in1",
    }
    assert "Project ID" in result.stderr
    assert "Passcode" in result.stderr
    assert "prompted-pass" not in result.stdout + result.stderr


@pytest.mark.usefixtures("terminal")
def test_on_a_terminal_enter_keeps_the_current_values(config: Path) -> None:
    write_profile(config)
    result = invoke(config, ["--profile", "p"], input="\n\n\n")
    assert result.exit_code == 0, result.stderr
    assert profiles(config)["p"] == {
        "project_id": "ID",
        "passcode": "old-passcode-9876",
        "region": "in1",
    }
    assert "[****************9876, Enter keeps it]" in result.stderr


@pytest.mark.usefixtures("terminal")
def test_on_a_terminal_flags_are_not_asked_again(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID", "--region", "us"], input="pc\n")
    assert result.exit_code == 0, result.stderr
    assert "Project ID" not in result.stderr
    assert "Region" not in result.stderr
    assert profiles(config)["default"]["region"] == "us1"


@pytest.mark.usefixtures("terminal")
def test_on_a_terminal_a_bad_region_is_asked_again(config: Path) -> None:
    result = invoke(config, ["--project-id", "ID"], input="mars\nsg\npc\n")
    assert result.exit_code == 0, result.stderr
    assert "unknown region 'mars'" in result.stderr
    assert profiles(config)["default"]["region"] == "sg1"


@pytest.mark.usefixtures("terminal")
def test_on_a_terminal_end_of_input_at_a_prompt_saves_nothing_and_exits_130(
    config: Path,
) -> None:
    result = invoke(config, ["--profile", "p"], input="ID\n")
    assert result.exit_code == 130
    assert "nothing saved" in result.stderr
    assert not config.exists()


# --- listing ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("not_terminal")
def test_list_shows_the_profile_with_the_passcode_masked(config: Path) -> None:
    write_profile(config)
    result = invoke(config, ["--list"])
    assert result.exit_code == 0
    assert "profile 'p'" in result.stdout
    assert "ID" in result.stdout
    assert "in1" in result.stdout
    assert "****************9876" in result.stdout
    assert "old-passcode" not in result.stdout + result.stderr


@pytest.mark.usefixtures("not_terminal")
def test_list_says_each_value_comes_from_the_file(config: Path) -> None:
    write_profile(config)
    result = invoke(config, ["--list"])
    passcode_line = next(line for line in result.stdout.splitlines() if "passcode" in line)
    assert passcode_line.split()[-1] == "file"


@pytest.mark.usefixtures("not_terminal")
def test_list_shows_environment_values_masked_with_their_variable(config: Path) -> None:
    write_profile(config)
    result = invoke(
        config, ["--list"], CLEVERTAP_PASSCODE="env-passcode-5555", CLEVERTAP_REGION="us"
    )
    assert result.exit_code == 0
    assert "environment" in result.stdout
    assert "****************5555  env CLEVERTAP_PASSCODE" in result.stdout
    assert "env CLEVERTAP_REGION" in result.stdout
    assert "env-passcode" not in result.stdout


def test_list_with_no_profiles_says_how_to_create_one(config: Path) -> None:
    result = invoke(config, ["--list"])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "ctcli configure --profile default" in result.stderr


@pytest.mark.usefixtures("not_terminal")
def test_list_warns_when_the_file_is_readable_by_others(config: Path) -> None:
    write_profile(config)
    config.chmod(0o644)
    result = invoke(config, ["--list"])
    assert result.exit_code == 0
    assert result.stderr.startswith(f"ctcli: warning: config file {config} is accessible")
    assert f"chmod 600 {config}" in result.stderr
    assert "chmod" not in result.stdout


def test_list_cannot_be_combined_with_values_to_write(config: Path) -> None:
    result = invoke(config, ["--list", "--project-id", "ID"])
    assert result.exit_code == 2
    assert "--list cannot be combined" in result.stderr


# --- checking --------------------------------------------------------------------------------


def test_check_without_credentials_says_what_is_missing(config: Path) -> None:
    result = invoke(config, ["--check"])
    assert result.exit_code == 2
    assert "no project id and passcode for profile 'default'" in result.stderr


def test_check_accepted_credentials_exit_0(config: Path, sandbox: Any) -> None:
    result = invoke(
        config,
        ["--check"],
        CLEVERTAP_PROJECT_ID=SANDBOX_ID,
        CLEVERTAP_PASSCODE=SANDBOX_PASSCODE,
        CLEVERTAP_ENDPOINT=sandbox.url,
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Credentials accepted by {sandbox.url.rstrip('/')} ({SANDBOX_ID})\n"


def test_check_refused_credentials_exit_3(config: Path, sandbox: Any) -> None:
    result = invoke(
        config,
        ["--check"],
        CLEVERTAP_PROJECT_ID=SANDBOX_ID,
        CLEVERTAP_PASSCODE="wrong-passcode",
        CLEVERTAP_ENDPOINT=sandbox.url,
    )
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "refused" in result.stderr


def test_check_refused_environment_credentials_points_at_the_variables(
    config: Path, sandbox: Any
) -> None:
    result = invoke(
        config,
        ["--check"],
        CLEVERTAP_PROJECT_ID=SANDBOX_ID,
        CLEVERTAP_PASSCODE="wrong-passcode",
        CLEVERTAP_ENDPOINT=sandbox.url,
    )
    assert "check CLEVERTAP_PROJECT_ID and CLEVERTAP_PASSCODE" in result.stderr


@pytest.mark.usefixtures("not_terminal")
def test_check_refused_file_credentials_points_at_configure(config: Path, sandbox: Any) -> None:
    args = ["-p", "sbx", "--project-id", SANDBOX_ID, "--endpoint", sandbox.url]
    assert invoke(config, [*args, "--passcode-stdin"], input="wrong\n").exit_code == 0
    result = invoke(config, ["--check", "-p", "sbx"])
    assert result.exit_code == 3
    assert "ctcli configure --profile sbx" in result.stderr


def test_check_unreachable_api_exit_2_with_the_reason(config: Path, closed_port_url: str) -> None:
    result = invoke(
        config,
        ["--check"],
        CLEVERTAP_PROJECT_ID="ID",
        CLEVERTAP_PASSCODE="pc",
        CLEVERTAP_ENDPOINT=closed_port_url,
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("ctcli: error: could not check the credentials: ")
    assert closed_port_url in result.stderr


@pytest.mark.usefixtures("not_terminal")
def test_check_after_writing_checks_the_saved_profile(config: Path, sandbox: Any) -> None:
    args = ["-p", "sbx", "--project-id", SANDBOX_ID, "--endpoint", sandbox.url, "--check"]
    result = invoke(config, [*args, "--passcode-stdin"], input=f"{SANDBOX_PASSCODE}\n")
    assert result.exit_code == 0, result.stderr
    assert "Saved profile 'sbx'" in result.stderr
    assert result.stdout.startswith("Credentials accepted by ")
    assert profiles(config)["sbx"]["passcode"] == SANDBOX_PASSCODE


@pytest.mark.usefixtures("not_terminal")
def test_check_uses_the_named_profile_from_the_file(config: Path, sandbox: Any) -> None:
    result = invoke(
        config,
        ["-p", "sbx", "--project-id", SANDBOX_ID, "--endpoint", sandbox.url, "--passcode-stdin"],
        input=f"{SANDBOX_PASSCODE}\n",
    )
    assert result.exit_code == 0, result.stderr
    result = invoke(config, ["--check", "--profile", "sbx"])
    assert result.exit_code == 0, result.stderr
    assert SANDBOX_ID in result.stdout


# --- the passcode never shows ----------------------------------------------------------------


@pytest.mark.usefixtures("not_terminal")
def test_sentinel_passcode_appears_in_no_output(
    config: Path, sandbox: Any, closed_port_url: str
) -> None:
    outputs: list[str] = []

    def run(args: list[str], input: str | None = None, **env: str) -> Result:
        result = invoke(config, args, input=input, **env)
        outputs.extend([result.stdout, result.stderr])
        return result

    endpoint = ["--endpoint", sandbox.url]
    # Saved from stdin, then listed, then checked (accepted) against a sandbox that knows it.
    saved = run(["--project-id", SANDBOX_ID, *endpoint, "--passcode-stdin"], SENTINEL + "\n")
    assert saved.exit_code == 0
    assert run(["--list"]).exit_code == 0
    assert run(["--check"]).exit_code == 3  # the sandbox expects another passcode: refused
    # From the environment: listed, checked (refused), unreachable.
    env = {"CLEVERTAP_PASSCODE": SENTINEL, "CLEVERTAP_PROJECT_ID": SANDBOX_ID}
    assert run(["--list"], **env).exit_code == 0
    assert run(["--check"], **env, CLEVERTAP_ENDPOINT=sandbox.url).exit_code == 3
    assert run(["--check"], **env, CLEVERTAP_ENDPOINT=closed_port_url).exit_code == 2

    assert outputs
    for text in outputs:
        assert SENTINEL not in text


def test_sentinel_passcode_accepted_by_check_appears_in_no_output(config: Path) -> None:
    with Sandbox(project_id=SANDBOX_ID, passcode=SENTINEL) as server:
        result = invoke(
            config,
            ["--check"],
            CLEVERTAP_PROJECT_ID=SANDBOX_ID,
            CLEVERTAP_PASSCODE=SENTINEL,
            CLEVERTAP_ENDPOINT=server.url,
        )
    assert result.exit_code == 0, result.stderr
    assert SENTINEL not in result.stdout + result.stderr


def test_sentinel_passcode_is_not_in_a_debug_traceback(config: Path) -> None:
    # A real process with CTCLI_DEBUG=1 and a bug planted after the passcode was read, so the
    # traceback Python prints is the one a user would see and paste into an issue.
    script = (
        "import ctcli.config\n"
        "def broken(*args, **kwargs):\n"
        "    raise RuntimeError('disk on fire')\n"
        "ctcli.config.save_profile = broken\n"
        "from ctcli.cli.app import main\n"
        "main()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEVERTAP_", "CTCLI_"))}
    env.update(CTCLI_CONFIG=str(config), CTCLI_DEBUG="1", CLEVERTAP_PASSCODE=SENTINEL)
    proc = subprocess.run(
        [sys.executable, "-c", script, "configure", "--project-id", "ID", "--passcode-stdin"],
        input=SENTINEL + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "disk on fire" in proc.stderr
    assert SENTINEL not in proc.stdout + proc.stderr


# --- a hand-edited file survives -------------------------------------------------------------

HAND_WRITTEN = """\
# My CleverTap accounts. Edited by hand; keep this comment.

[profiles.prod]
project_id = "OLD-ID"   # the EU account
passcode = "old-pass"
region = "eu1"

# Deletes go through the closed-account trigger.
[[profiles.prod.subscriptions]]
trigger = 'type = "track" and event = "Account Closed"'
action = "delete"

[[profiles.prod.subscriptions]]
trigger = 'type = "identify"'
action = "upload"

[profiles.staging]
project_id = "STG"
passcode = "stg-pass"
"""


def test_a_write_keeps_comments_order_and_subscription_tables(config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    config.chmod(0o600)
    args = ["-p", "prod", "--project-id", "NEW-ID", "--passcode-stdin"]
    result = invoke(config, args, input="old-pass\n")
    assert result.exit_code == 0, result.stderr
    assert config.read_text() == HAND_WRITTEN.replace('"OLD-ID"', '"NEW-ID"')


def test_a_profile_added_to_a_hand_written_file_leaves_the_rest_as_it_was(config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    config.chmod(0o600)
    result = invoke(config, ["-p", "new", "--project-id", "N1", "--passcode-stdin"], input="p\n")
    assert result.exit_code == 0, result.stderr
    text = config.read_text()
    assert text.startswith(HAND_WRITTEN)
    assert profiles(config)["new"] == {"project_id": "N1", "passcode": "p", "region": "eu1"}


def test_check_while_writing_saves_nothing_that_was_refused(config: Path, sandbox: Any) -> None:
    config.write_text(HAND_WRITTEN)
    config.chmod(0o600)
    args = ["-p", "prod", "--project-id", SANDBOX_ID, "--endpoint", sandbox.url, "--check"]
    result = invoke(config, [*args, "--passcode-stdin"], input="wrong-passcode\n")
    assert result.exit_code == 3
    assert "nothing saved" in result.stderr and "Saved profile" not in result.stderr
    assert config.read_text() == HAND_WRITTEN


def test_remove_takes_one_profile_out_and_keeps_the_rest(config: Path) -> None:
    config.write_text(HAND_WRITTEN)
    config.chmod(0o600)
    result = invoke(config, ["-p", "staging", "--remove"])
    assert result.exit_code == 0 and "Removed profile 'staging'" in result.stderr
    assert config.read_text().rstrip() == HAND_WRITTEN.split("[profiles.staging]")[0].rstrip()
    missing = invoke(config, ["-p", "staging", "--remove"])
    assert missing.exit_code == 2 and "nothing removed" in missing.stderr


def test_list_shows_the_effective_values_and_when_the_endpoint_overrides_the_region(
    config: Path,
) -> None:
    config.write_text(
        '[profiles.prod]\nproject_id = "P1"\npasscode = "pw-123456"\nregion = "in1"\n'
        'endpoint = "http://127.0.0.1:9"\n'
    )
    config.chmod(0o600)
    result = invoke(config, ["-p", "prod", "--list"], CLEVERTAP_REGION="us1")
    assert result.exit_code == 0
    effective = result.stdout.split("effective for profile 'prod'", 1)[1].splitlines()
    assert any(line.split()[:3] == ["region", "us1", "env"] for line in effective)
    assert any(
        line.startswith("  sends to") and "the endpoint overrides region us1" in line
        for line in effective
    )
    assert "pw-123456" not in result.stdout
