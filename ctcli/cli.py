"""Typer commands: parse options, call the core, hand results to the reporter.

Heavy modules (httpx, rich, the pipeline) are imported inside the commands that need them,
so that `ctcli --version` and `ctcli --help` start fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ctcli import __version__
from ctcli.cli_configure import configure
from ctcli.errors import CtcliError, ExitStatus

app = typer.Typer(
    name="ctcli",
    help="Send Segment-style events to CleverTap: upload, delete and replay user profiles.",
    no_args_is_help=True,
    add_completion=False,
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
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Send Segment-style events to CleverTap: upload, delete and replay user profiles."""


app.command("configure")(configure)


@app.command("sandbox")
def sandbox_command(
    port: Annotated[int, typer.Option("--port", help="TCP port on 127.0.0.1 (0: any free one).")] = 8080,
) -> None:
    """Run the local CleverTap-compatible API until Ctrl-C."""
    from ctcli.sandbox import serve

    serve(port=port, out=sys.stderr)


def error_line(message: str) -> None:
    """Print one plain error line on stderr (never parsed as markup)."""
    sys.stderr.write(f"ctcli: error: {message}\n")
    sys.stderr.flush()


def main() -> None:
    """Console-script entry: map expected errors to exit codes, hide tracebacks of bugs."""
    try:
        app(standalone_mode=True)
    except CtcliError as exc:
        error_line(str(exc))
        sys.exit(int(exc.exit_status))
    except KeyboardInterrupt:
        sys.exit(int(ExitStatus.INTERRUPTED))
    except SystemExit:
        raise
    except Exception as exc:  # a bug: one line, the traceback only on request
        if os.environ.get("CTCLI_DEBUG") == "1":
            raise
        error_line(
            f"internal error: {type(exc).__name__}: {exc} (set CTCLI_DEBUG=1 to see the traceback)"
        )
        sys.exit(int(ExitStatus.INTERNAL))
