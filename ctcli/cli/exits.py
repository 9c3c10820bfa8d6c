"""The one place exit codes are chosen: for a run's outcome and for every error that ends one.

    0    every event ok, skipped, dry-run or superseded
    1    some events failed or were invalid (the rest went on)
    2    usage, configuration, input or environment (a path, a port, a full disk): found up front
    3    CleverTap refused the credentials
    4    a bug in ctcli (the traceback with CTCLI_DEBUG=1)
    5    CleverTap could not be reached at all: nothing was delivered, every event is failed
    130  interrupted (Ctrl-C, SIGTERM)

Light on purpose: the console entry imports it before anything else is loaded.
"""

from __future__ import annotations

import errno
from typing import Protocol

from ctcli.errors import CredentialsRejected, CtcliError, ExitStatus

INTERRUPTED = ExitStatus.INTERRUPTED

_FULL_OR_BROKEN_DEVICE = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.ENXIO}
)


class Outcome(Protocol):
    """What a run's summary says about how it ended."""

    interrupted: bool
    credentials_refused: bool
    unreachable: bool
    failed: int
    invalid: int


def exit_status_of_run(summary: Outcome) -> ExitStatus:
    if summary.interrupted:
        return ExitStatus.INTERRUPTED
    if summary.credentials_refused:
        return ExitStatus.CREDENTIALS_REFUSED
    if summary.unreachable:
        return ExitStatus.UNREACHABLE
    if summary.failed or summary.invalid:
        return ExitStatus.EVENTS_FAILED
    return ExitStatus.OK


def is_full_or_broken_output(exc: BaseException) -> bool:
    """Output on a full disk or a dead device: the environment, not a bug."""
    return isinstance(exc, OSError) and exc.errno in _FULL_OR_BROKEN_DEVICE


def exit_status_of_error(exc: BaseException) -> ExitStatus:
    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(exc, CredentialsRejected):
        return ExitStatus.CREDENTIALS_REFUSED
    if isinstance(exc, CtcliError) or is_full_or_broken_output(exc):
        return ExitStatus.USAGE
    return ExitStatus.INTERNAL
