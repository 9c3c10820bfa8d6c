"""Typer commands: parse options, call the core, hand results to the reporter.

Heavy modules (httpx, rich, the pipeline) are imported inside the commands that need them,
so that `ctcli --version` and `ctcli --help` start fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from ctcli import __version__
from ctcli.cli import send as cli_events
from ctcli.cli.changes import changes
from ctcli.cli.configure import configure
from ctcli.cli.exits import exit_status_of_error, is_full_or_broken_output
from ctcli.cli.sandbox import sandbox
from ctcli.errors import CtcliError


def _drop_unwritten_output() -> None:
    # What is still buffered would fail again at exit and turn the exit status into 120.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class _ErrorMappingGroup(TyperGroup):
    """Turns expected errors into one stderr line and their exit code, for every command.

    Doing it here (not only in `main`) means CliRunner tests see the same behaviour as users.
    """

    def invoke(self, ctx: Any) -> Any:  # a click Context, whose module Typer vendors
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if _is_usage_error(exc):
                raise
            raise typer.Exit(ended_by(exc)) from None


def ended_by(exc: Exception) -> int:
    """Say in one line what ended the command; its exit code. Re-raises a bug under CTCLI_DEBUG."""
    status = exit_status_of_error(exc)
    if isinstance(exc, CtcliError):
        error_line(str(exc))
    elif is_full_or_broken_output(exc):
        _drop_unwritten_output()
        error_line(f"cannot write the output: {getattr(exc, 'strerror', None) or exc}")
    elif os.environ.get("CTCLI_DEBUG") == "1":
        raise exc
    else:
        error_line(
            f"internal error: {type(exc).__name__}: {exc} (set CTCLI_DEBUG=1 to see the traceback)"
        )
    return int(status)


def _is_usage_error(exc: Exception) -> bool:
    # Typer's vendored click raises its own usage/parameter errors through invoke; let them pass.
    return type(exc).__module__.startswith("typer._click") or hasattr(exc, "exit_code")


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="ctcli",
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"ctcli {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Send Segment-style events to CleverTap: upload, delete and replay user profiles.

    \b
    Examples:
      ctcli replay --sandbox sample_events/events.ndjson   # try it: no account, no network
      ctcli configure                                      # save your credentials once
      ctcli upload users.ndjson --failed failed.ndjson     # profiles from a file
      ctcli version --verbose                              # what a bug report needs
    """
    if ctx.invoked_subcommand is None:  # `ctcli` alone: the help, and nothing went wrong
        typer.echo(ctx.get_help())
        raise typer.Exit(0)


def version_command(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also Python, the platform, key libraries, the config file."
        ),
    ] = False,
) -> None:
    """Print the version of ctcli (with --verbose, what a bug report needs)."""
    typer.echo(f"ctcli {__version__}")
    if not verbose:
        return
    import importlib.metadata
    import platform

    from ctcli.config import config_path

    typer.echo(f"python {platform.python_version()} ({sys.executable})")
    typer.echo(f"platform {platform.platform()}")
    for package in ("httpx", "orjson", "typer", "rich", "tomlkit", "pyarrow"):
        try:
            typer.echo(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            typer.echo(f"{package} (not installed)")
    typer.echo(f"config {config_path()}")


class _PlainHelpCommand(TyperCommand):
    """Help without Python's types showing through (`<list[str]>` after a metavar)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.params:
            if param.param_type_name == "argument" and param.metavar:
                param.display_type_rich = _no_type  # type: ignore[attr-defined]
        super().format_help(ctx, formatter)


def _no_type(ctx: Any) -> None:
    return None  # the metavar says it all


for _name, _command in (
    ("configure", configure),
    ("upload", cli_events.upload),
    ("delete", cli_events.delete),
    ("replay", cli_events.replay),
    ("sandbox", sandbox),
    ("changes", changes),
    ("version", version_command),
):
    app.command(_name, cls=_PlainHelpCommand)(_command)


def error_line(message: str) -> None:
    """Print one plain error line on stderr (never parsed as markup, never raw controls)."""
    from ctcli.cli.report import escape_controls

    sys.stderr.write(f"ctcli: error: {escape_controls(message)}\n")
    sys.stderr.flush()


def main() -> None:
    """Console-script entry: map expected errors to exit codes, hide tracebacks of bugs."""
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(int(exit_status_of_error(KeyboardInterrupt())))
    except SystemExit:
        raise
    except Exception as exc:  # raised outside a command (while parsing, say)
        sys.exit(ended_by(exc))
