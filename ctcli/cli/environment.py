"""The streams, terminal flags and variables a command runs with, in one injectable object.

Commands never ask `sys` directly: they ask the Environment their context holds, so that tests
(and programs embedding the CLI) can say "stdin is a terminal" without touching the process.
As in httpie, the default reads the real process, looked up when asked: test runners swap
sys.stdout for each invocation.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import IO, Any, TextIO

import typer


class Environment:
    """Give any of these to override what the process has; leave them out to use the process's.

    The TTY flags default to asking the stream; a stream that is None (a process started with
    it closed) is no terminal.
    """

    def __init__(
        self,
        *,
        stdin: IO[Any] | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        stdin_isatty: bool | None = None,
        stdout_isatty: bool | None = None,
        stderr_isatty: bool | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        self._ttys = {"stdin": stdin_isatty, "stdout": stdout_isatty, "stderr": stderr_isatty}
        self._variables = variables

    @property
    def stdin(self) -> IO[Any] | None:
        return self._stdin if self._stdin is not None else sys.stdin

    @property
    def stdout(self) -> TextIO | None:
        return self._stdout if self._stdout is not None else sys.stdout

    @property
    def stderr(self) -> TextIO | None:
        return self._stderr if self._stderr is not None else sys.stderr

    @property
    def variables(self) -> Mapping[str, str]:
        return self._variables if self._variables is not None else os.environ

    def _isatty(self, name: str, stream: IO[Any] | None) -> bool:
        told = self._ttys[name]
        if told is not None:
            return told
        try:
            return stream is not None and stream.isatty()
        except (ValueError, OSError):  # closed, or not a real stream
            return False

    @property
    def stdin_isatty(self) -> bool:
        return self._isatty("stdin", self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return self._isatty("stdout", self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return self._isatty("stderr", self.stderr)


def environment_of(ctx: typer.Context | None) -> Environment:
    """The Environment a command was given (`app(obj=Environment(...))`), else the process's."""
    found = ctx.find_object(Environment) if ctx is not None else None
    return found if found is not None else Environment()
