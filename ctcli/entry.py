"""The console script: a stop request is ctcli's from its first line, before the CLI loads.

Loading the CLI takes a tenth of a second; a SIGTERM in that time would otherwise kill the
process with the default action (exit 143) instead of ending it as ctcli ends on signals (130).
"""

import signal
import sys


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # as Ctrl-C does; a run replaces this with its graceful stop


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        from ctcli.cli import main as cli_main
    except KeyboardInterrupt:
        sys.exit(130)
    cli_main()
