"""`ctcli upload`, `delete` and `replay`: their options, prompts and output, nothing more.

No `from __future__ import annotations` here: Typer reads these annotations at run time.
"""

import functools
import inspect
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import typer

from ctcli.cli.environment import Environment, environment_of
from ctcli.cli.exits import INTERRUPTED, exit_status_of_run
from ctcli.errors import UsageError
from ctcli.models import Mode

SANDBOX_PROJECT_ID = "sandbox"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"


class InputFormat(StrEnum):
    auto = "auto"
    ndjson = "ndjson"
    json = "json"
    csv = "csv"
    tsv = "tsv"
    parquet = "parquet"


class ShowRows(StrEnum):
    all = "all"
    failed = "failed"


def _exit_now(status: int) -> None:
    """Leave without waiting for threads still blocked on the network or on stdin."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _stdin_reader_alive() -> bool:
    return any(
        thread.name == "ctcli-read" and thread.is_alive() for thread in threading.enumerate()
    )


@dataclass(frozen=True)
class CommonOptions:
    profile: str | None
    output: OutputFormat | None
    dry_run: bool
    sandbox: bool
    failed: str | None
    state: str | None
    batch_size: int
    concurrency: int
    max_retries: int
    timeout: float
    no_convert_timestamps: bool = False
    show: ShowRows | None = None
    limit: int | None = None
    show_records: bool = False
    verbose: int = 0
    quiet: bool = False
    changes: str | None = None
    delete_missing: bool = False
    max_deletes: str | None = None
    environment: Environment = field(default_factory=Environment)


_COMMON = [
    ("profile", str | None, None, typer.Option(
        "--profile", "-p", metavar="NAME",
        help="Credential profile (env CTCLI_PROFILE, default 'default').",
    )),
    ("output", OutputFormat | None, None, typer.Option(
        "--output", "-o", case_sensitive=False,
        help="Result format: table, json or ndjson (default: table on a terminal, else ndjson).",
    )),
    ("dry_run", bool, False, typer.Option(
        "--dry-run", help="Read, route, map and validate; send nothing; no credentials needed."
    )),
    ("sandbox", bool, False, typer.Option(
        "--sandbox",
        help="Send to an in-process CleverTap-compatible API on loopback; no credentials needed.",
    )),
    ("failed", str | None, None, typer.Option(
        "--failed", metavar="FILE",
        help="Append every failed or invalid event to FILE as NDJSON (re-drive with replay).",
    )),
    ("state", str | None, None, typer.Option(
        "--state", metavar="FILE",
        help="Checkpoint file: a later run with the same FILE skips input already settled.",
    )),
    ("batch_size", int, 1000, typer.Option(
        "--batch-size", min=1, max=1000, metavar="N",
        help="Records per upload request, 1-1000 (deletes: up to 100)."
    )),
    ("concurrency", int, 4, typer.Option(
        "--concurrency", min=1, max=15, metavar="N", help="Requests in flight, 1-15."
    )),
    ("max_retries", int, 5, typer.Option(
        "--max-retries", min=0, max=100, metavar="N",
        help="Retries of one request before its events fail, 0-100."
    )),
    ("timeout", float, 10.0, typer.Option(
        "--timeout", min=0.1, max=3600, metavar="SECONDS",
        help="Time limit of each whole request, from connecting to the answer's last byte."
    )),
    ("no_convert_timestamps", bool, False, typer.Option(
        "--no-convert-timestamps", help="Leave ISO-8601 attribute values as strings."
    )),
    ("show", ShowRows | None, None, typer.Option(
        "--show", case_sensitive=False,
        help="Results shown: all or failed (table default: all up to 500 events, else "
        "failed); with -o ndjson, failed keeps only failed and invalid results.",
    )),
    ("show_records", bool, False, typer.Option(
        "--show-records",
        help="With --dry-run: each result carries the CleverTap record it would send.",
    )),
    ("limit", int | None, None, typer.Option(
        "--limit", min=1, metavar="N", help="Read only the first N events (a trial run)."
    )),
    ("changes", str | None, None, typer.Option(
        "--changes", metavar="DB",
        help="Send only what changed since CleverTap last took each profile (a SQLite file of "
        "fingerprints; created if missing). Unchanged rows are reported unchanged.",
    )),
    ("delete_missing", bool, False, typer.Option(
        "--delete-missing",
        help="With --changes: delete the profiles the DB knows that this complete snapshot "
        "lacks (after it was read to the end).",
    )),
    ("max_deletes", str | None, None, typer.Option(
        "--max-deletes", metavar="N|N%",
        help="--delete-missing refuses (exit 2, nothing deleted) past this many (default 1%).",
    )),
    ("verbose", int, 0, typer.Option(
        "--verbose", "-v", count=True, show_default=False,
        help="-v: one line per request on stderr (path, records, answer, ms, retries and "
        "why); -vv: also the answers of refusals.",
    )),
    ("quiet", bool, False, typer.Option(
        "--quiet", "-q", help="Print nothing but errors; the exit code says how it went."
    )),
]  # fmt: skip

# Options that mean nothing for a command, left out of its --help and its signature.
_NOT_FOR = {
    "delete": {"no_convert_timestamps", "show_records", "changes", "delete_missing", "max_deletes"},
}


def with_common_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give a command the options shared by upload, delete and replay, as one CommonOptions."""
    left_out = _NOT_FOR.get(command.__name__, set())
    common_options = [option for option in _COMMON if option[0] not in left_out]
    names = [name for name, *_ in common_options]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        common = CommonOptions(
            **{name: kwargs.pop(name) for name in names},
            environment=environment_of(kwargs.get("ctx")),
        )
        command(common=common, **kwargs)

    own = [p for p in inspect.signature(command).parameters.values() if p.name != "common"]
    extra = [
        inspect.Parameter(
            name,
            inspect.Parameter.KEYWORD_ONLY,
            default=default,
            annotation=Annotated[kind, option],
        )
        for name, kind, default, option in common_options
    ]
    wrapper.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    del wrapper.__wrapped__  # Typer must see the new signature, not the wrapped one
    return wrapper


@contextmanager
def _graceful_stop() -> Iterator[threading.Event]:
    """First SIGINT/SIGTERM: stop reading, finish in-flight work. Second: stop now."""
    stop = threading.Event()

    def handle(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        sys.stderr.write(
            "ctcli: stopping: finishing requests in flight, then flushing "
            "(interrupt again to abort)\n"
        )

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled on the main thread (e.g. in some test runners)
        return
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(
    mode: Mode,
    inputs: list[str],
    arg_items: list[Any],
    common: CommonOptions,
    *,
    input_format: str = "auto",
    identity_column: str | None = None,
) -> None:
    from ctcli.api import FrontEnd, run
    from ctcli.cli.report import escape_controls, make_reporter

    if common.dry_run and common.sandbox:
        raise UsageError("--dry-run and --sandbox cannot be combined: a dry run sends nothing")
    output = common.output.value if common.output else None
    if output is None:
        output = "table" if common.environment.stdout_isatty else "ndjson"
    if common.environment.stdout is None:
        raise UsageError("stdout is closed: ctcli has nowhere to write the results")
    if common.quiet and common.verbose:
        raise UsageError("--quiet and --verbose cannot be combined")
    if common.show_records and not common.dry_run:
        raise UsageError("--show-records shows what a --dry-run would send: add --dry-run")
    reporter = make_reporter(
        "quiet" if common.quiet else output,
        show=common.show.value if common.show else None,
        # On a terminal, whatever the output: results going to a file are no reason for silence.
        progress=common.environment.stderr_isatty and not common.quiet,
        stdout=common.environment.stdout,
        stderr=common.environment.stderr,
        inputs=inputs,
        screen_rows=_screen_rows(common.environment),
    )
    if common.verbose:
        _log_requests(common.verbose, common.environment)
    elif hasattr(reporter, "say"):
        _show_backoffs(reporter.say)

    def say(message: str) -> None:
        if not common.quiet:
            sys.stderr.write(f"ctcli: {escape_controls(message)}\n")

    front_end = FrontEnd(
        results=reporter,
        idle=reporter.idle,
        stdin=getattr(common.environment.stdin, "buffer", None),
        # File names and server words: never raw control characters on a terminal.
        warn=lambda message: say(f"warning: {message}"),
        note=say,
        first=arg_items,
        confirm_deletes=_ask_before_deleting if common.environment.stdin_isatty else None,
    )
    _tune_garbage_collector()
    try:
        with _graceful_stop() as stop, _account(common) as account:
            summary = run(
                mode,
                inputs,
                profile=common.profile,
                project_id=account[0] if account else None,
                passcode=account[1] if account else None,
                endpoint=account[2] if account else None,
                dry_run=common.dry_run,
                failed=common.failed,
                state=common.state,
                batch_size=common.batch_size,
                concurrency=common.concurrency,
                max_retries=common.max_retries,
                timeout=common.timeout,
                convert_timestamps=not common.no_convert_timestamps,
                format=input_format,
                identity_column=identity_column,
                limit=common.limit,
                show_records=common.show_records,
                changes=common.changes,
                delete_missing=common.delete_missing,
                max_deletes=common.max_deletes,
                stop=stop,
                front_end=front_end,
            )
    except KeyboardInterrupt:  # the second signal: stop now, what settled is already saved
        reporter.abort()
        sys.stderr.write("ctcli: aborted\n")
        _exit_now(int(INTERRUPTED))
        raise
    except BaseException:
        reporter.abort()  # what was reported so far reaches stdout; progress is cleared
        raise
    finally:
        _unhook_logs()  # the streams and the progress line they wrote to are done
    reporter.finish(summary)
    if summary.refusal:
        sys.stderr.write(f"ctcli: error: {escape_controls(summary.refusal)}\n")
    if summary.interrupted and _stdin_reader_alive():
        # A thread still blocked reading stdin would abort the interpreter's shutdown.
        _exit_now(int(exit_status_of_run(summary)))
    raise typer.Exit(int(exit_status_of_run(summary)))


def _show_backoffs(say: Callable[[str], None]) -> None:
    """On a terminal: each back-off of the client (429, 5xx, network), why and for how long."""
    import logging

    class _Say(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            say(f"ctcli: {record.getMessage()}")

    log = logging.getLogger("ctcli.backoff")
    log.handlers[:] = [_Say()]
    log.propagate = False


def _ask_before_deleting(count: int) -> bool:
    """On a terminal, --delete-missing asks before it deletes (within --max-deletes)."""
    try:
        return typer.confirm(
            f"Delete {count:,} profiles that this snapshot no longer has?", default=False, err=True
        )
    except typer.Abort:  # Ctrl-D or Ctrl-C at the prompt: the same as no
        sys.stderr.write("\n")
        return False


def _screen_rows(environment: Environment) -> int | None:
    """The terminal's height when stdout is a terminal: a table lists a screenful of failures."""
    if not environment.stdout_isatty:
        return None
    import shutil

    return shutil.get_terminal_size().lines


def _unhook_logs() -> None:
    import logging

    for name in ("ctcli.backoff", "ctcli.http"):
        log = logging.getLogger(name)
        log.handlers[:] = []
        log.setLevel(logging.NOTSET)
        log.propagate = True


def _log_requests(verbosity: int, environment: Environment) -> None:
    """-v: the client's line per request on stderr, with the time; -vv: refusals' answers too."""
    import logging

    from ctcli.cli.report import escape_controls

    class _Escaped(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return escape_controls(super().format(record))  # server words: never raw controls

    handler = logging.StreamHandler(environment.stderr)
    handler.setFormatter(_Escaped("%(asctime)s ctcli: %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log = logging.getLogger("ctcli.http")
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if verbosity > 1 else logging.INFO)
    log.propagate = False


@contextmanager
def _account(common: CommonOptions) -> Iterator[tuple[str, str, str] | None]:
    """(project id, passcode, endpoint) in place of the profile's: with --sandbox, a sandbox
    started for this run; None otherwise."""
    if not common.sandbox:
        yield None
        return
    import secrets

    from ctcli.sandbox import Sandbox

    passcode = secrets.token_hex(16)  # throwaway: the sandbox lives only for this run
    sandbox = Sandbox(project_id=SANDBOX_PROJECT_ID, passcode=passcode).start()
    try:
        yield SANDBOX_PROJECT_ID, passcode, sandbox.url
    finally:
        sandbox.stop()


def _tune_garbage_collector() -> None:
    """Fewer, later collections: a run keeps thousands of small objects alive in its batches,
    and the default thresholds re-scan them hundreds of times (measured: ~20% of an upload)."""
    import gc

    gc.freeze()  # what was imported so far lives for the whole run: never scan it again
    gc.set_threshold(50_000, 20, 100)


def _inputs_or_stdin(
    files: list[str] | None, has_other_input: bool, environment: Environment
) -> list[str]:
    if files:
        return files
    if has_other_input:
        return []
    if environment.stdin_isatty:
        return []
    return ["-"]


def _show_help_and_exit(ctx: typer.Context, why: str) -> None:
    sys.stderr.write(ctx.get_help() + "\n\n")
    raise UsageError(why)


def _parse_set(pairs: list[str]) -> dict[str, Any]:
    import orjson

    traits: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE")
        try:
            value: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw
        traits[key] = value
    return traits


@with_common_options
def upload(
    ctx: typer.Context,
    files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="FILE|-",
            help="Event files (NDJSON, JSON) or profile tables (CSV, TSV, Parquet), plain or"
            " gzip; - is stdin.",
        ),
    ] = None,
    input_format: Annotated[
        InputFormat,
        typer.Option(
            "--format",
            case_sensitive=False,
            help="How FILEs are read. auto: .csv, .tsv/.tab (also .gz) and .parquet are tables,"
            " the rest (and stdin) NDJSON or JSON.",
        ),
    ] = InputFormat.auto,
    identity_column: Annotated[
        str | None,
        typer.Option(
            "--identity-column",
            metavar="NAME",
            help="Tables: the identity's column (default: identity, userId or user_id).",
        ),
    ] = None,
    identity: Annotated[
        str | None,
        typer.Option("--identity", metavar="ID", help="One-off upload: the profile's identity."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="One-off upload: a profile property (a JSON value, else a string). Repeatable.",
        ),
    ] = None,
    *,
    common: CommonOptions,
) -> None:
    """Create or update profiles: every event, or table row, goes through User Upload.

    \b
    Examples:
      ctcli upload events.ndjson --failed failed.ndjson
      warehouse-export | ctcli upload -
      ctcli upload users.csv --identity-column customer_id
      ctcli upload --dry-run --show-records --limit 5 events.ndjson
      ctcli upload --identity alice@example.com --set Name=Alice --set Plan=pro
    """
    if set_ and not identity:
        raise UsageError("--set needs --identity (the profile to update)")
    arg_items = []
    if identity is not None:
        if not identity.strip():
            raise UsageError("--identity is empty")
        event = {"type": "identify", "userId": identity, "traits": _parse_set(set_ or [])}
        from ctcli.models import InputItem

        arg_items.append(InputItem(source="args", line=1, event=event))
    inputs = _inputs_or_stdin(files, bool(arg_items), common.environment)
    if not inputs and not arg_items:
        _show_help_and_exit(ctx, "nothing to upload: give FILEs, '-' for stdin, or --identity")
    _run(
        Mode.UPLOAD,
        inputs,
        arg_items,
        common,
        input_format=input_format.value,
        identity_column=identity_column,
    )


def _confirm_delete(count: int, files: list[str], project: str) -> bool:
    what = f"{count} profile{'s' if count != 1 else ''}" if count else ""
    if files:
        from ctcli.cli.report import escape_controls

        named = escape_controls(", ".join(files))
        what = (
            f"{what} and the profiles of every event in {named}"
            if what
            else (f"the profiles of every event in {named}")
        )
    try:
        return typer.confirm(f"Delete {what} from project {project}?", default=False, err=True)
    except typer.Abort:  # Ctrl-D or Ctrl-C at the prompt: the same as no
        sys.stderr.write("\n")
        return False


@with_common_options
def delete(
    ctx: typer.Context,
    identities: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="IDENTITY", help="Identities of the profiles to delete.", show_default=False
        ),
    ] = None,
    file: Annotated[
        list[str] | None,
        typer.Option(
            "--file", metavar="FILE|-", help="Events whose userId is deleted; - is stdin."
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    *,
    common: CommonOptions,
) -> None:
    """Delete profiles by identity, or every event's profile from --file (Delete User).

    \b
    Examples:
      ctcli delete alice@example.com bob@example.com     # asks first on a terminal
      ctcli delete --yes --file closed-accounts.ndjson
    """
    identities = identities or []
    files = file or []
    from ctcli.models import InputItem

    arg_items = [
        InputItem(source="args", line=position, event={"userId": identity})
        for position, identity in enumerate(identities, start=1)
    ]
    if not arg_items and not files:
        _show_help_and_exit(ctx, "nothing to delete: give IDENTITY arguments or --file")
    if not (yes or common.dry_run or common.sandbox):
        if "-" in files or not common.environment.stdin_isatty:
            raise UsageError(
                "deleting profiles needs confirmation: add --yes "
                "(stdin is not a terminal, so ctcli cannot ask)"
            )
        from ctcli.config import resolve_profile

        project = resolve_profile(common.profile).project_id or "(no project id)"
        if not _confirm_delete(len(arg_items), files, project):
            sys.stderr.write("ctcli: nothing deleted\n")
            raise typer.Exit(0)
    _run(Mode.DELETE, files, arg_items, common)


@with_common_options
def replay(
    ctx: typer.Context,
    files: Annotated[
        list[str] | None,
        typer.Argument(metavar="FILE|-", help="Event files (NDJSON, JSON, gzip); - is stdin."),
    ] = None,
    list_subscriptions: Annotated[
        bool,
        typer.Option(
            "--list-subscriptions", help="Show the subscriptions in effect (presets and profile)."
        ),
    ] = False,
    *,
    common: CommonOptions,
) -> None:
    """Run events through the trigger rules, like Segment does: presets plus your subscriptions.

    identify -> User Upload; "Delete User" track events -> Delete User; unmatched -> skipped.
    Profile tables (CSV, TSV, Parquet) are not event streams: they go to upload.

    \b
    Examples:
      ctcli replay --sandbox sample_events/events.ndjson
      ctcli replay -p prod --state events.state --failed failed.ndjson export.ndjson
      ctcli replay -p prod --failed failed-again.ndjson failed.ndjson   # re-drive failures
      ctcli replay --list-subscriptions -p prod
    """
    if list_subscriptions:
        _print_subscriptions(common)
        return
    inputs = _inputs_or_stdin(files, False, common.environment)
    if not inputs:
        _show_help_and_exit(ctx, "nothing to replay: give FILEs or '-' for stdin")
    _run(Mode.REPLAY, inputs, [], common)


def _print_subscriptions(common: CommonOptions) -> None:
    from ctcli.config import resolve_profile
    from ctcli.events.subscriptions import build_subscriptions, describe
    from ctcli.models import FieldMapping

    profile = resolve_profile(common.profile)
    mapping = FieldMapping(convert_timestamps=not common.no_convert_timestamps)
    subscriptions = build_subscriptions(profile.subscriptions, base=mapping, profile=profile.name)
    for entry in describe(subscriptions):
        overrides = entry.get("mapping") or {}
        extra = "".join(f"  {key}={value}" for key, value in overrides.items())
        sys.stdout.write(
            f"{entry['name']}  [{entry['origin']}]  {entry['trigger']}  ->  {entry['action']}"
            f"{extra}\n"
        )
