"""Error types, and the exit codes the CLI speaks (chosen in one place: ctcli.cli.exits)."""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctcli.models import Outcome


class ExitStatus(IntEnum):
    OK = 0
    EVENTS_FAILED = 1
    USAGE = 2
    CREDENTIALS_REFUSED = 3
    INTERNAL = 4
    UNREACHABLE = 5
    INTERRUPTED = 130


class CtcliError(Exception):
    """An expected failure: printed as one line (ctcli.cli.exits says which exit code)."""


class ConfigError(CtcliError):
    """Missing or bad configuration: profile, credentials, region, config file."""


class UsageError(CtcliError):
    """A bad combination of options or arguments."""


class InputError(CtcliError):
    """An input file that cannot be opened or read at all."""


class TriggerSyntaxError(ConfigError):
    """A trigger expression that does not parse; `position` is 0-based in `text`."""

    def __init__(self, message: str, text: str, position: int) -> None:
        super().__init__(f"{message} at position {position + 1} of trigger {text!r}")
        self.text = text
        self.position = position


class StateLocked(CtcliError):
    """Another run holds the --state file."""


class CredentialsRejected(CtcliError):
    """CleverTap answered 401/403: the project id or passcode is wrong.

    `settled` holds the outcomes already known for the first items of the batch being sent
    (a batch split after a 400 may have had a half accepted before the refusal came).
    """

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.settled: list[Outcome] = []


class Unreachable(CtcliError):
    """CleverTap could not be asked: network error, timeout or 5xx after retries.

    Raised by a run's client when a request got no answer at all, every retry included, and
    no request of the run ever did: nothing can be delivered, so the run stops sending.
    """
