"""ctcli: Segment-style events into CleverTap profiles, from a shell or from Python.

    import ctcli

    summary = ctcli.upload("users.ndjson", profile="prod", failed="failed.ndjson")
    print(summary.ok, summary.failed, summary.invalid)

    ctcli.replay(
        rows_as_events(),                      # any iterable of event dicts, read lazily
        project_id="W9R-...", passcode="...",  # or profile="prod", or the CLEVERTAP_* variables
        on_result=lambda result: print(result.status, result.identity),
    )

`upload`, `delete` and `replay` take a path, a list of paths or an iterable of events, and the
options of the CLI's commands (see `ctcli.api.run`); they return a `Summary`. Each event's
`Result`s reach `on_result` in input order. Setup problems raise a `CtcliError` (`ConfigError`,
`UsageError`, `InputError`, `StateLocked`, `CredentialsRejected`); the CLI exits with 2 for
them, 3 for `CredentialsRejected` (see `ctcli.cli.exits`, the one map from outcomes to codes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# A library logs; the program using it decides where that goes (nowhere, until it says).
logging.getLogger("ctcli").addHandler(logging.NullHandler())

# Loaded on first use: `ctcli --version` must not pay for the pipeline and httpx.
_EXPORTS = {
    "upload": "ctcli.api",
    "delete": "ctcli.api",
    "replay": "ctcli.api",
    "run": "ctcli.api",
    "Summary": "ctcli.delivery.pipeline",
    "Result": "ctcli.models",
    "Status": "ctcli.models",
    "Action": "ctcli.models",
    "Mode": "ctcli.models",
    "Credentials": "ctcli.config",
    "ExitStatus": "ctcli.errors",
    "CtcliError": "ctcli.errors",
    "ConfigError": "ctcli.errors",
    "UsageError": "ctcli.errors",
    "InputError": "ctcli.errors",
    "StateLocked": "ctcli.errors",
    "CredentialsRejected": "ctcli.errors",
}

__all__ = [
    "Action",
    "ConfigError",
    "Credentials",
    "CredentialsRejected",
    "CtcliError",
    "ExitStatus",
    "InputError",
    "Mode",
    "Result",
    "StateLocked",
    "Status",
    "Summary",
    "UsageError",
    "__version__",
    "delete",
    "replay",
    "run",
    "upload",
]

if TYPE_CHECKING:
    from ctcli.api import delete, replay, run, upload
    from ctcli.config import Credentials
    from ctcli.delivery.pipeline import Summary
    from ctcli.errors import (
        ConfigError,
        CredentialsRejected,
        CtcliError,
        ExitStatus,
        InputError,
        StateLocked,
        UsageError,
    )
    from ctcli.models import Action, Mode, Result, Status


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ctcli' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
