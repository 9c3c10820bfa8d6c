"""Help and conventions: `ctcli` alone, -h, examples, completion, version --verbose."""

from __future__ import annotations

from ctcli import __version__
from tests.helpers import invoke


def test_ctcli_alone_prints_the_help_with_examples_and_exits_0(env):
    result = invoke()
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: ctcli")
    assert "Examples:" in result.stdout and "ctcli replay --sandbox" in result.stdout


def test_dash_h_is_help_everywhere(env):
    for args in ([], ["upload"], ["delete"], ["replay"], ["configure"], ["sandbox"]):
        result = invoke(*args, "-h")
        assert result.exit_code == 0 and "Usage: ctcli" in result.stdout, args


def test_version_verbose_says_what_a_bug_report_needs(env, tmp_path):
    plain = invoke("version")
    assert plain.exit_code == 0 and plain.stdout == f"ctcli {__version__}\n"
    verbose = invoke("version", "--verbose").stdout.splitlines()
    assert verbose[0] == f"ctcli {__version__}"
    assert any(line.startswith("python 3.") for line in verbose)
    assert any(line.startswith("httpx ") for line in verbose)
    assert f"config {tmp_path / 'config.toml'}" in verbose


def test_shell_completion_can_be_shown_for_bash(env):
    result = invoke("--show-completion", "bash")
    assert result.exit_code == 0 and "_CTCLI_COMPLETE" in result.stdout
