"""`ctcli changes DB`: what a --changes database knows, for one identity or in all."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from ctcli.errors import ConfigError


def changes(
    database: Annotated[str, typer.Argument(metavar="DB", help="The --changes database.")],
    identity: Annotated[
        str | None,
        typer.Option(
            "--identity", metavar="ID", help="Show the attributes fingerprinted for one identity."
        ),
    ] = None,
) -> None:
    """Show what a --changes database knows: identities, size, the last run; or one identity.

    It holds no attribute values, only their fingerprints: to start over, delete the file.

    \b
    Examples:
      ctcli changes /var/lib/ctcli/users.db
      ctcli changes /var/lib/ctcli/users.db --identity u42
    """
    from ctcli.cli.report import escape_controls
    from ctcli.delivery.changes import Fingerprints

    if not os.path.isfile(database):
        raise ConfigError(f"no --changes database at {database!r}")
    with Fingerprints(database) as store:
        if identity is not None:
            attributes = store.describe(identity)
            if attributes is None:
                typer.echo(f"{escape_controls(identity)}: not known (sent in full next time)")
                return
            typer.echo(f"{escape_controls(identity)}: {len(attributes)} attributes")
            for name, print_ in attributes.items():
                typer.echo(f"  {escape_controls(name):<30} {print_}")
            return
        stats = store.stats()
    count = stats["identities"]
    per = stats["bytes"] / count if count else 0
    typer.echo(f"{escape_controls(database)}: {count:,} identities, {stats['bytes']:,} bytes")
    typer.echo(f"  {per:.0f} bytes per identity; {stats['runs']} runs")
    last = stats["last_run"]
    if last is not None:
        state = {True: "complete", False: "incomplete", None: "did not finish"}[last["complete"]]
        typer.echo(
            f"  last run {last['number']}: {last['started_at']} to "
            f"{last['finished_at'] or '-'} ({state})"
        )
