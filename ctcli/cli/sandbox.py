"""`ctcli sandbox`: the local CleverTap-compatible API, as a process of its own."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer


def sandbox(
    port: Annotated[
        int,
        typer.Option("--port", min=0, max=65535, help="TCP port on 127.0.0.1 (0: any free one)."),
    ] = 8080,
    project_id: Annotated[
        str, typer.Option("--project-id", help="Account id the sandbox accepts.")
    ] = "sandbox",
    latency: Annotated[
        float,
        typer.Option("--latency", min=0, help="Seconds added to every answer (testing)."),
    ] = 0.0,
) -> None:
    """Run the local CleverTap-compatible API until Ctrl-C.

    It accepts the passcode in CTCLI_SANDBOX_PASSCODE (default "sandbox").
    """
    from ctcli.sandbox import serve

    passcode = os.environ.get("CTCLI_SANDBOX_PASSCODE", "sandbox")
    serve(port=port, project_id=project_id, passcode=passcode, latency=latency, out=sys.stdout)
