"""The console script: signals end ctcli with 130 from its first line to its last.

Loading the CLI takes a tenth of a second; a SIGTERM in that time would otherwise kill the
process with the default action (exit 143). After the run, while the interpreter winds down, a
signal would surface as an uncaught KeyboardInterrupt (killed by SIGINT) instead.
"""

import contextlib
import signal
import sys

from ctcli.cli.exits import INTERRUPTED

_INTERRUPTED = int(INTERRUPTED)
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_signals: list[int] = []  # stop signals that arrived while nothing could act on them


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # as Ctrl-C does; a run replaces this with its graceful stop


def _note(signum: int, frame: object) -> None:
    _signals.append(signum)


def _run_cli() -> SystemExit:
    # While modules load, a signal is only noted: an exception raised inside the import
    # machinery can be swallowed, or break a class being built, instead of stopping anything.
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _note)
    from ctcli.cli.app import main as cli_main

    if _signals:
        return SystemExit(_INTERRUPTED)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cli_main()
    except SystemExit as exc:
        return exc
    except KeyboardInterrupt:
        return SystemExit(_INTERRUPTED)
    return SystemExit(0)


def main() -> None:
    try:
        outcome = _run_cli()
    except KeyboardInterrupt:  # a signal while the CLI was handling its own end
        outcome = SystemExit(_INTERRUPTED)
    try:
        # From here on a signal only waits, and one already caught is only counted.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        for signum in _STOP_SIGNALS:
            signal.signal(signum, _note)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                stream.flush()  # now, so that nothing is left to fail or wait at shutdown
    except KeyboardInterrupt:
        outcome = SystemExit(_INTERRUPTED)
    if _signals or signal.sigpending() & _STOP_SIGNALS:
        outcome = SystemExit(_INTERRUPTED)
    raise outcome
