"""Results for people and programs: rich tables, JSON, NDJSON, the summary and progress.

This module only reads results; it never decides them. User data is never parsed as rich
markup (every Console here has markup and highlighting off, and cells are Text objects), and
never reaches a terminal raw: every cell goes through `escape_controls` first. JSON and NDJSON
are left exactly as they are (JSON already escapes control characters).
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from typing import IO, Any, TextIO

import orjson

from ctcli.delivery.pipeline import Summary
from ctcli.models import InputItem, Result, Status

TABLE_ROW_LIMIT = 500  # --show all lists every event up to this many, then only failures

STATUS_STYLES = {
    Status.OK: "green",
    Status.FAILED: "bold red",
    Status.INVALID: "yellow",
    Status.SKIPPED: "dim",
    Status.DRY_RUN: "cyan",
    Status.SUPERSEDED: "magenta",
    Status.UNCHANGED: "dim",
}


# What must never reach a terminal raw: C0 controls (newline and tab too, so that one row stays
# one row), DEL, C1 controls (U+0080..U+009F; U+009B is CSI to some terminals) and lone
# surrogates (a file name's undecodable bytes: written raw, or a crash under a strict encoding).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def escape_controls(text: str) -> str:
    """`text` made safe to print to a terminal, with anything odd still visible.

    Each control character becomes its Python escape (ESC -> \\x1b, newline -> \\n,
    U+009B -> \\x9b), so an escape sequence from an event or an answer is shown, never obeyed.
    Text without control characters comes back unchanged, after one cheap check.
    """
    if text.isprintable():
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits
        import json

        return json.dumps(value, ensure_ascii=False).encode()


def silence_stdout() -> None:
    """After a broken pipe (`| head`): the rest of stdout, and the final flush, go nowhere."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (tests): nothing to redirect


def _write_all(out: IO[bytes], data: bytes) -> None:
    """Write every byte: an unbuffered stdout (PYTHONUNBUFFERED) is a raw file whose write()
    may return short, e.g. when a signal arrives while a full pipe blocks it."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written if written is not None else 0 :]


class NdjsonReporter:
    """One result per line on stdout as events settle; the summary is one line on stderr.

    Lines are gathered and written in chunks (stdout may be unbuffered, e.g. PYTHONUNBUFFERED),
    and flushed whenever the run goes quiet, so `| head` and slow inputs still see them early.
    """

    CHUNK = 256  # results per write

    def __init__(self, out: IO[bytes], err: IO[str], *, only_failures: bool = False) -> None:
        self._out = out
        self._err = err
        self._pending: list[bytes] = []
        self._only_failures = only_failures  # --show failed: a cron log of what went wrong
        self.closed = False

    def __call__(self, item: InputItem, results: Sequence[Result]) -> None:
        pending = self._pending
        for result in results:
            if self._only_failures and not _is_failure(result):
                continue
            pending.append(orjson.dumps(result.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
        if len(pending) >= self.CHUNK:
            self._write()

    def _write(self) -> None:
        if self.closed:
            self._pending.clear()
            return
        try:
            _write_all(self._out, b"".join(self._pending))
            self._out.flush()
        except BrokenPipeError:
            self.closed = True  # `| head` has seen enough; the run itself goes on
            silence_stdout()
        self._pending.clear()

    def idle(self) -> None:
        if self._pending:
            self._write()

    def abort(self) -> None:
        self.idle()

    def finish(self, summary: Summary) -> None:
        self.idle()
        self._err.write(_dumps({"summary": summary.to_dict()}).decode() + "\n")
        self._err.flush()


class QuietReporter:
    """--quiet: nothing but errors (printed by the CLI) and the exit code."""

    def __call__(self, item: InputItem, results: Sequence[Result]) -> None:
        pass

    def idle(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def finish(self, summary: Summary) -> None:
        pass


class JsonReporter:
    """One document at the end: {"results": [...], "summary": {...}}."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._results: list[dict[str, Any]] = []

    def __call__(self, item: InputItem, results: Sequence[Result]) -> None:
        self._results.extend(result.to_dict() for result in results)

    def idle(self) -> None:
        pass

    def abort(self) -> None:
        pass  # half a document is no document: nothing is printed

    def finish(self, summary: Summary) -> None:
        document = {"results": self._results, "summary": summary.to_dict()}
        try:
            _write_all(
                self._out,
                orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE),
            )
            self._out.flush()
        except BrokenPipeError:
            silence_stdout()  # the reader left; the exit status still tells how the run went


class ProgressDisplay:
    """A live line on stderr: events so far with their failures, bytes read of how many, ETA.

    Bytes and the ETA exist only when every input is a plain regular file (gzip offsets count
    decompressed bytes, pipes have no size); otherwise the line pulses with the counts. Counts
    have fixed widths and thousands separators, so the line does not jump as they grow.
    """

    def __init__(self, console: Any, inputs: Sequence[str]) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._sizes = _plain_file_sizes(inputs)
        total = sum(self._sizes.values()) if len(self._sizes) == len(inputs) and inputs else None
        self._done_bytes = 0  # sizes of the files finished so far
        self._source: str | None = None
        self._started = time.monotonic()
        columns: list[Any] = [TextColumn("{task.description}")]
        if total:
            columns += [
                BarColumn(bar_width=12),
                DownloadColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
            ]
        else:
            columns += [TimeElapsedColumn()]
        self._progress = Progress(
            *columns,
            console=console,
            transient=True,  # the table and summary follow; the line has done its job
        )
        self._task = self._progress.add_task("starting", total=total)
        self._progress.start()

    def advance(self, item: InputItem, events: int, counts: dict[str, int]) -> None:
        if item.source != self._source:
            if self._source in self._sizes:
                self._done_bytes += self._sizes[self._source]
            self._source = item.source
        if events % 97 == 0:
            completed = self._done_bytes + (item.end_offset or 0)
            self._progress.update(self._task, completed=completed)
            self.refresh(events, counts)

    def refresh(self, events: int, counts: dict[str, int]) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        failed = counts.get("failed", 0)
        invalid = counts.get("invalid", 0)
        text = f"{events:>11,} events {failed:>7,} failed {invalid:>7,} invalid"
        self._progress.update(self._task, description=f"{text} {events / elapsed:>7,.0f}/s")

    def stop(self) -> None:
        self._progress.stop()


class WithProgress:
    """A reporter with the progress line on stderr beside it, whatever the output format."""

    def __init__(self, inner: Any, err: IO[str], inputs: Sequence[str]) -> None:
        from rich.console import Console

        self._inner = inner
        # Asked for only when stderr is a terminal: trust that, whatever rich guesses.
        console = Console(file=err, markup=False, highlight=False, emoji=False, force_terminal=True)
        self._progress: ProgressDisplay | None = ProgressDisplay(console, inputs)
        self._console = console
        self._events = 0
        self._counts: dict[str, int] = {}

    def __call__(self, item: InputItem, results: Sequence[Result]) -> None:
        self._inner(item, results)
        self._events += 1
        for result in results:
            status = str(result.status)
            self._counts[status] = self._counts.get(status, 0) + 1
        if self._progress is not None:
            self._progress.advance(item, self._events, self._counts)

    def idle(self) -> None:
        self._inner.idle()
        if self._progress is not None:
            self._progress.refresh(self._events, self._counts)

    def say(self, message: str) -> None:
        """A line above the progress line (a back-off, say), which stays put below it."""
        from rich.text import Text

        self._console.print(Text(escape_controls(message), style="yellow"))

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def abort(self) -> None:
        self._stop()
        self._inner.abort()

    def finish(self, summary: Summary) -> None:
        self._stop()  # the line goes before the table and the summary are printed
        self._inner.finish(summary)


def _plain_file_sizes(inputs: Sequence[str]) -> dict[str, int]:
    sizes = {}
    for name in inputs:
        if not os.path.isfile(name):  # never open a pipe just to look at it
            continue
        try:
            with open(name, "rb") as handle:
                if handle.read(2) != b"\x1f\x8b":
                    sizes[name] = os.path.getsize(name)
        except OSError:
            pass
    return sizes


class TableReporter:
    """A rich table of results and a summary, printed at the end."""

    def __init__(
        self, out: IO[str], err: IO[str], *, show: str | None, screen_rows: int | None = None
    ) -> None:
        from rich.console import Console

        # markup and highlighting off: event names and identities are user data, not markup.
        self._console = Console(file=out, markup=False, highlight=False, emoji=False)
        # rich exits 1 on a broken pipe, and 1 means "events failed": keep our exit status.
        self._console.on_broken_pipe = self._stdout_gone  # type: ignore[method-assign]
        self._show = show  # "all", "failed" or None (all up to TABLE_ROW_LIMIT, then failed)
        self._rows: list[Result] = []
        self._events = 0
        self._dropped_ok = False
        # On a terminal, by default, the failures listed are at most a screenful: ten thousand
        # rows of one reason tell less than the reasons below the table.
        self._most_failures = (
            max(10, screen_rows - 12) if screen_rows is not None and show is None else None
        )
        self._hidden = 0

    def __call__(self, item: InputItem, results: Sequence[Result]) -> None:
        self._events += 1
        for result in results:
            if self._keeps(result):
                if (
                    self._most_failures is not None
                    and self._dropped_ok
                    and len(self._rows) >= self._most_failures
                ):
                    self._hidden += 1
                    continue
                self._rows.append(result)
        if self._show is None and not self._dropped_ok and self._events > TABLE_ROW_LIMIT:
            self._dropped_ok = True
            self._rows = [row for row in self._rows if _is_failure(row)]
            if self._most_failures is not None and len(self._rows) > self._most_failures:
                self._hidden += len(self._rows) - self._most_failures
                del self._rows[self._most_failures :]

    def _keeps(self, result: Result) -> bool:
        if self._show == "all":
            return True
        if self._show == "failed" or self._dropped_ok:
            return _is_failure(result)
        return True

    def idle(self) -> None:
        pass  # the table is printed at the end

    def _stdout_gone(self) -> None:
        self._console.quiet = True
        silence_stdout()

    def abort(self) -> None:
        pass  # nothing is printed before the end

    def _print_table(self, table_class: Any, text_class: Any) -> None:
        heading, table = _results_table(self._rows, table_class, text_class)
        if heading is not None:
            self._console.print(heading)
        self._console.print(table)

    def finish(self, summary: Summary) -> None:
        from rich.table import Table
        from rich.text import Text

        if self._rows:
            self._print_table(Table, Text)
        if self._hidden:
            self._console.print(
                Text(
                    f"({self._hidden:,} more failed and invalid events not listed: "
                    "--show failed lists them all, -o ndjson gives every result)",
                    style="dim",
                )
            )
        elif self._dropped_ok:
            self._console.print(
                Text(
                    f"(more than {TABLE_ROW_LIMIT} events: only failed and invalid ones are "
                    "listed; use --show all or -o ndjson for every result)",
                    style="dim",
                )
            )
        for line in reason_lines(summary):
            self._console.print(line)
        self._console.print(summary_text(summary))  # last: the line a log's tail shows


REASONS_SHOWN = 10  # the commonest reasons of a table run; the JSON summary has up to 100


def _results_table(rows: Sequence[Result], table_class: Any, text_class: Any) -> tuple[Any, Any]:
    """(a line naming the one file every row comes from, or None; the table).

    Fits 80 columns: the file is named once when all rows share it, a column empty in every row
    is left out, names are cut with an ellipsis rather than broken, and the error text (the
    useful part) gets the width that is left.
    """
    Text = text_class
    sources = {row.source for row in rows}
    one_source = next(iter(sources)) if len(sources) == 1 else None
    with_codes = any(row.code is not None for row in rows)
    with_errors = any(row.error for row in rows)
    table = table_class(show_lines=False, header_style="bold")
    table.add_column("line" if one_source is not None else "where", no_wrap=True)
    table.add_column("type / event", no_wrap=True, overflow="ellipsis", max_width=22)
    table.add_column("action", no_wrap=True)
    table.add_column("identity", no_wrap=True, overflow="ellipsis", max_width=24)
    table.add_column("status", no_wrap=True)
    if with_codes:
        table.add_column("code", no_wrap=True)
    if with_errors:
        table.add_column("error", overflow="fold", min_width=20, ratio=1)
    for row in rows:
        kind = row.type or ""
        if row.event:
            kind = f"{kind} {row.event}".strip()
        where = str(row.line) if one_source is not None else f"{row.source}:{row.line}"
        # Every cell that can hold input or server text is escaped: see escape_controls.
        cells = [
            Text(escape_controls(where)),
            Text(escape_controls(kind)),
            Text(escape_controls(row.action or "-")),
            Text(escape_controls(row.identity or "-")),
            Text(str(row.status), style=STATUS_STYLES.get(Status(row.status), "")),
        ]
        if with_codes:
            cells.append(Text("" if row.code is None else str(row.code)))
        if with_errors:
            cells.append(Text(escape_controls(row.error or "")))
        table.add_row(*cells)
    heading = None
    if one_source is not None:
        heading = Text(escape_controls(f"{'stdin' if one_source == '-' else one_source}:"))
    return heading, table


def reason_lines(summary: Summary, limit: int = REASONS_SHOWN) -> list[Any]:
    """`10,000 invalid: Phone ... is not +[country code][number], first at big.ndjson:80`."""
    from rich.text import Text

    lines = []
    for reason in summary.reasons[:limit]:
        line = Text("  ")
        line.append(f"{reason.count:,} {reason.status}", style=STATUS_STYLES[reason.status])
        where = f"{reason.first_source}:{reason.first_line}"
        line.append(escape_controls(f": {reason.text}, first at {where}"))
        lines.append(line)
    hidden = len(summary.reasons) - limit
    if hidden > 0:
        lines.append(Text(f"  ... and {hidden} more reasons (-o json lists them)", style="dim"))
    return lines


def _is_failure(result: Result) -> bool:
    return result.status in (Status.FAILED, Status.INVALID)


def summary_text(summary: Summary) -> Any:
    """The summary line of a table run: counts per status, requests, retries, time, speed.

    Only numbers and fixed words: no input or server text, so nothing here needs escaping.
    """
    from rich.text import Text

    text = Text()
    text.append(f"{summary.events:,} events: ")
    counts = summary.counts().items()
    shown = [(status, count) for status, count in counts if count] or [(Status.OK, 0)]
    for position, (status, count) in enumerate(shown):
        if position:
            text.append(", ")
        text.append(f"{count:,} {status}", style=STATUS_STYLES[status])
    rate = summary.events / summary.seconds if summary.seconds > 0 else 0.0
    text.append(
        f"; {summary.requests} requests, {summary.retries} retries, "
        f"{summary.seconds:.2f}s, {rate:.0f} events/s"
    )
    if summary.credentials_refused:
        text.append("; CleverTap refused the credentials", style="bold red")
    if summary.unreachable:
        text.append("; CleverTap could not be reached", style="bold red")
    if summary.interrupted:
        text.append("; interrupted", style="bold yellow")
    return text


def make_reporter(
    output: str,
    *,
    show: str | None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    progress: bool = False,
    inputs: Sequence[str] = (),
    screen_rows: int | None = None,
) -> NdjsonReporter | JsonReporter | TableReporter | QuietReporter | WithProgress:
    # Looked up per call, not at import: tests (and embedders) swap sys.stdout.
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    reporter: NdjsonReporter | JsonReporter | TableReporter | QuietReporter
    if output == "quiet":
        reporter = QuietReporter()
    elif output == "ndjson":
        reporter = NdjsonReporter(stdout.buffer, stderr, only_failures=show == "failed")
    elif output == "json":
        reporter = JsonReporter(stdout.buffer)
    else:
        reporter = TableReporter(stdout, stderr, show=show, screen_rows=screen_rows)
    return WithProgress(reporter, stderr, inputs) if progress else reporter
