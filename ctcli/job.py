"""One run of upload, delete or replay: profile, routing, sender, failed file, pipeline.

The CLI turns options into a `RunSettings` and a result sink; everything between the two
(what to read, where to send, what to record) is decided here, without any terminal code.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ctcli.config import Credentials, Profile, permission_warning, resolve_profile
from ctcli.delivery.checkpoints import StateFile
from ctcli.delivery.failed_file import FailedFile
from ctcli.delivery.ledger import Ledger
from ctcli.delivery.pipeline import Pipeline, PipelineOptions, Sender, Summary, with_ticks
from ctcli.errors import InputError, UsageError
from ctcli.events.subscriptions import Subscription, build_subscriptions, route
from ctcli.events.workers import read_prepared, worth_a_worker
from ctcli.models import Action, FieldMapping, InputItem, Mode, Result

DEFAULT_MAX_DELETES = "1%"  # --delete-missing deletes at most this many unless told otherwise


def deletes_allowed(max_deletes: str, known: int) -> int:
    """How many deletes `max_deletes` ("500" or "2%" of the `known` identities) allows."""
    text = max_deletes.strip()
    try:
        if text.endswith("%"):
            share = float(text[:-1])
            if not 0 <= share <= 100:
                raise ValueError
            return int(known * share / 100)
        count = int(text)
        if count < 0:
            raise ValueError
        return count
    except ValueError:
        raise UsageError(
            f"--max-deletes {max_deletes!r}: give a number of profiles (500) or a share (2%)"
        ) from None


@dataclass(frozen=True)
class RunSettings:
    mode: Mode
    inputs: Sequence[str] = ()
    # Items that come before the inputs and belong to no file (the command line, a library
    # caller's events): reported like the rest, never counted by a checkpoint.
    arg_items: Iterable[InputItem] = ()
    profile: str | None = None
    credentials: Credentials | None = None  # in place of the profile's account
    dry_run: bool = False
    failed_path: str | None = None
    state_path: str | None = None
    batch_size: int = 1000
    concurrency: int = 4
    max_retries: int = 5
    timeout: float = 10.0
    convert_timestamps: bool = True
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    # How inputs are read: "auto" (tables by file name, the rest by content), or one of
    # ctcli.events.tables.FORMATS for all of them; and the identity column of tables.
    format: str = "auto"
    identity_column: str | None = None
    limit: int | None = None  # read only the first N events of the input (a trial run)
    show_records: bool = False  # a dry run's results carry the record each event would be
    # --changes DB: send only what changed since CleverTap last accepted each identity;
    # --delete-missing: delete the identities the DB knows that this snapshot lacks, unless
    # more than `max_deletes` ("N" or "N%") would go.
    changes_path: str | None = None
    delete_missing: bool = False
    max_deletes: str = DEFAULT_MAX_DELETES

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", Mode(self.mode))  # "upload" as well as Mode.UPLOAD
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"the limit must be 1 or more events, not {self.limit}")
        if self.show_records and not self.dry_run:
            raise UsageError("--show-records shows what a --dry-run would send: add --dry-run")
        if self.changes_path and self.dry_run:
            raise UsageError(
                "--changes compares what is sent with what CleverTap took: not a dry run"
            )
        if self.changes_path and self.mode is Mode.DELETE:
            raise UsageError("--changes is for upload and replay")
        if self.delete_missing and not self.changes_path:
            raise UsageError("--delete-missing needs --changes DB (what the last snapshots held)")
        if self.delete_missing and self.limit is not None:
            raise UsageError("--delete-missing needs the whole snapshot: no --limit")
        deletes_allowed(self.max_deletes, 0)  # a malformed value is an error up front
        from ctcli.events.tables import FORMATS

        if self.format not in FORMATS:
            raise UsageError(f"format {self.format!r}: expected one of {', '.join(FORMATS)}")


def _every_event(_event: object) -> bool:
    return True


def command_subscription(action: Action, mapping: FieldMapping) -> Subscription:
    """upload and delete send every event to their one action, whatever its type."""
    name = "User Upload" if action is Action.UPLOAD else "Delete User"
    return Subscription(
        name=name,
        trigger="(every event)",
        action=action,
        mapping=mapping,
        matches=_every_event,
        origin="command",
    )


def load_profile(settings: RunSettings, warn: Callable[[str], object]) -> Profile:
    profile = resolve_profile(settings.profile, env=settings.env)
    from ctcli.config import config_path

    warning = permission_warning(config_path(settings.env))
    if warning:
        warn(warning)
    if settings.credentials is not None:
        profile = settings.credentials.apply_to(profile)
    return profile


def make_router(
    settings: RunSettings, profile: Profile
) -> Callable[[InputItem], Sequence[Subscription]]:
    mapping = FieldMapping(convert_timestamps=settings.convert_timestamps)
    if settings.mode is Mode.UPLOAD:
        fixed = [command_subscription(Action.UPLOAD, mapping)]
        return lambda item: fixed
    if settings.mode is Mode.DELETE:
        fixed = [command_subscription(Action.DELETE, mapping)]
        return lambda item: fixed
    subscriptions = build_subscriptions(profile.subscriptions, base=mapping, profile=profile.name)

    redo = {action: [command_subscription(action, mapping)] for action in Action}

    def replay_route(item: InputItem) -> Sequence[Subscription]:
        matched = route(item.event or {}, subscriptions)
        if item.only_action in redo:  # re-driving a failed line: redo just what failed
            matched = [s for s in matched if s.action == item.only_action]
            # It failed under that action, perhaps sent there by `upload` or `delete` whatever
            # its type: re-drive it there even when no trigger matches.
            return matched or redo[Action(item.only_action)]
        return matched

    return replay_route


def check_inputs(
    inputs: Sequence[str],
    *,
    tracked: bool,
    mode: Mode = Mode.UPLOAD,
    format: str = "auto",
    identity_column: str | None = None,
) -> None:
    """Fail before sending anything when a named file cannot be read (exit 2).

    Tables are looked into as well: a header without the identity column, or a Parquet file
    without pyarrow installed, fails here, not after the files before it were sent.
    """
    from ctcli.events.sources import check_readable
    from ctcli.events.tables import check_table, kind_name, table_kind

    for name in inputs:
        if name == "-":
            continue
        check_readable(name)
        if tracked and not os.path.isfile(name):
            raise UsageError(f"--state needs regular files: '{name}' is a pipe or a device")
    if list(inputs).count("-") > 1:
        raise UsageError("stdin ('-') can be given only once")
    if tracked and "-" in inputs:
        raise UsageError("--state cannot track stdin: give the input as a file")
    tables = [(name, kind) for name in inputs if (kind := table_kind(name, format)) is not None]
    if mode is not Mode.UPLOAD and tables:
        name, kind = tables[0]
        shown = "stdin" if name == "-" else repr(name)
        raise UsageError(
            f"{shown} is a {kind_name(kind)} table: {mode} reads event streams (NDJSON, JSON);"
            " use upload for profile tables"
        )
    if identity_column is not None and not tables:
        raise UsageError("--identity-column is for CSV, TSV and Parquet inputs: none is given")
    for name, kind in tables:
        check_table(name, kind, identity_column)


def check_outputs_are_not_inputs(settings: RunSettings, stdin: BinaryIO | None) -> None:
    """Fail (exit 2) when the failed or state file is one of the inputs, under any name.

    Re-driving a failed file into itself would read its own new lines forever.
    """
    inputs: list[tuple[str, os.stat_result]] = []
    for name in settings.inputs:
        try:
            if name == "-":
                if stdin is None:
                    continue
                inputs.append(("stdin", os.fstat(stdin.fileno())))
            else:
                inputs.append((repr(name), os.stat(name)))
        except (OSError, ValueError, AttributeError):
            continue  # not a real file (tests) or unreadable: check_inputs says so
    for option, path in (("--failed", settings.failed_path), ("--state", settings.state_path)):
        if not path:
            continue
        try:
            output = os.stat(path)
        except OSError:
            continue  # does not exist yet: it cannot be an input
        for shown, found in inputs:
            if (found.st_dev, found.st_ino) == (output.st_dev, output.st_ino):
                hint = " (re-drive into another file: --failed failed-again.ndjson)"
                raise UsageError(
                    f"{option} {path!r} is also the input {shown}"
                    + (hint if option == "--failed" else "")
                )


def is_stream(name: str) -> bool:
    """stdin, a pipe or a device: input that may arrive slowly, so batches must not wait on it."""
    return name == "-" or not os.path.isfile(name)


# Reads one large file in a worker process: (name, start_offset, start_line) -> items.
WorkerReader = Callable[[str, int, int], Iterator[InputItem]]


def read_inputs(
    inputs: Sequence[str],
    stdin: BinaryIO | None,
    state: StateFile | None = None,
    note: Callable[[str], object] = lambda message: None,
    worker: WorkerReader | None = None,
    *,
    format: str = "auto",
    identity_column: str | None = None,
) -> Iterator[InputItem]:
    """Every item of every input, picking each file up where its checkpoint left it.

    A file that breaks off (a truncated gzip, a read error) does not stop the files after it:
    they are read, and the error is raised at the end.
    """
    from ctcli.events.tables import table_kind

    errors: list[InputError] = []
    for name in inputs:
        try:
            kind = table_kind(name, format)
            if kind is not None:
                yield from _read_table(name, kind, identity_column, stdin, state, note)
            else:
                yield from _read_input(name, stdin, state, note, worker)
        except InputError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise InputError(f"{len(errors)} inputs broke off: " + "; ".join(map(str, errors)))


def _read_input(
    name: str,
    stdin: BinaryIO | None,
    state: StateFile | None,
    note: Callable[[str], object],
    worker: WorkerReader | None = None,
) -> Iterator[InputItem]:
    from ctcli.events.sources import read_source

    if state is None or name == "-":
        if worker is not None and name != "-" and worth_a_worker(name, streams=False):
            yield from worker(name, 0, 0)
        else:
            yield from read_source(name, stdin=stdin)
        return
    resume, discarded = state.resume_point(name)
    if discarded:
        note(discarded)
    state.begin_file(name)
    use_worker = worker is not None and worth_a_worker(name, streams=False)
    if resume is None:
        yield from worker(name, 0, 0) if use_worker else read_source(name)  # type: ignore[misc]
    elif resume.offset is not None:
        note(f"{name}: resuming after line {resume.line} (checkpoint in {state.path})")
        if use_worker:
            yield from worker(name, resume.offset, resume.line)  # type: ignore[misc]
        else:
            yield from read_source(name, start_offset=resume.offset, start_line=resume.line)
    else:
        note(f"{name}: skipping the {resume.line} items settled by an earlier run")
        # By count, not by number: in NDJSON, envelope items are numbered by position and
        # plain lines by line, so numbers alone do not tell what came first.
        yield from itertools.islice(read_source(name), resume.line, None)


def _read_table(
    name: str,
    kind: str,
    identity_column: str | None,
    stdin: BinaryIO | None,
    state: StateFile | None,
    note: Callable[[str], object],
) -> Iterator[InputItem]:
    """The rows of a table, read in this process: parse workers share a file out by lines, and
    a table's rows cannot be found without reading it from its header (a quoted cell may hold
    line ends), nor a Parquet file's at all."""
    from ctcli.events.tables import read_table

    after = 0
    if state is not None and name != "-":
        resume, discarded = state.resume_point(name)
        if discarded:
            note(discarded)
        state.begin_file(name)
        if resume is not None:
            # A table's checkpoint is the line (Parquet: row) of its last settled row; rows are
            # numbered in file order, so everything up to it is passed over.
            after = resume.line
            what = "row" if kind == "parquet" else "line"
            note(f"{name}: resuming after {what} {after} (checkpoint in {state.path})")
    yield from read_table(
        name, kind, identity_column=identity_column, stdin=stdin, after_line=after
    )


def execute(
    settings: RunSettings,
    *,
    sink: Callable[[InputItem, Sequence[Result]], None],
    on_idle: Callable[[], None] | None = None,
    stop: threading.Event | None = None,
    stdin: BinaryIO | None = None,
    warn: Callable[[str], object] = lambda message: print(message, file=sys.stderr),
    note: Callable[[str], object] | None = None,
    confirm_deletes: Callable[[int], bool] | None = None,
) -> Summary:
    """Run one command end to end and return its summary; results go to `sink` in order.

    `warn` gets what may need attention, `note` what is merely worth knowing (resuming).
    """
    note = note or warn
    profile = load_profile(settings, warn)
    router = make_router(settings, profile)
    check_inputs(
        settings.inputs,
        tracked=settings.state_path is not None,
        mode=settings.mode,
        format=settings.format,
        identity_column=settings.identity_column,
    )
    check_outputs_are_not_inputs(settings, stdin)

    with ExitStack() as stack:
        stop = stop or threading.Event()
        sender = None
        if not settings.dry_run:
            sender = open_sender(settings, profile, stack, stop)
        failed = None
        if settings.failed_path:
            failed = FailedFile(settings.failed_path)
            stack.callback(failed.close)
        state = None
        if settings.state_path:
            state = StateFile(settings.state_path)
            state.lock()
            stack.callback(state.unlock)
            state.load()
        changes = None
        changes_run = 0
        from ctcli.delivery.changes import whole_fingerprint

        if settings.changes_path:
            from ctcli.delivery.changes import Fingerprints

            changes = Fingerprints(settings.changes_path).open()
            stack.callback(changes.close)
            changes_run = changes.begin_run()
        ledger = Ledger(
            sink,
            failed=failed,
            state=state,
            flush_report=on_idle,
            warn=warn,
            save=not settings.dry_run,
        )
        # However the run ends: the failed file is flushed, then the checkpoint that counts on
        # it is saved; one callback, so a flush that fails leaves the old checkpoint in place.
        stack.callback(ledger.checkpoint)

        streams = any(is_stream(name) for name in settings.inputs)
        keep_events = failed is not None
        worker: WorkerReader | None = None
        if not streams:

            def worker(name: str, offset: int, line: int) -> Iterator[InputItem]:
                return read_prepared(
                    name, router, send=not settings.dry_run, keep_events=keep_events,
                    start_offset=offset, start_line=line, keep_records=settings.show_records,
                    whole_of=whole_fingerprint if settings.changes_path else None,
                )  # fmt: skip

        items: Iterable[InputItem | None] = itertools.chain(
            ledger.unfiled(settings.arg_items),
            read_inputs(
                settings.inputs,
                stdin,
                state,
                note,
                worker,
                format=settings.format,
                identity_column=settings.identity_column,
            ),
        )
        if settings.limit is not None:
            # Only the first N: reading stops there, and a checkpoint counts only what was read.
            items = itertools.islice(items, settings.limit)
        if streams:
            items = with_ticks(items)  # type: ignore[arg-type]
        default_action = None if settings.mode is Mode.REPLAY else str(settings.mode)
        pipeline = Pipeline(
            router=router,
            sender=sender,
            sink=ledger.record,
            options=PipelineOptions(
                batch_size=settings.batch_size,
                concurrency=settings.concurrency,
                dry_run=settings.dry_run,
                default_action=default_action,
                single_action=default_action,
                keep_events=keep_events,  # only the failed file needs them once mapped
                # A copy: the pipeline adds failures when known, the failed file when written.
                watched=set(failed.failed_identities) if failed is not None else None,
                show_records=settings.show_records,
                changes=changes,
                changes_run=changes_run if settings.delete_missing else 0,
            ),
            stop=stop,
            on_idle=ledger.flush,
            # A checkpoint after every answered batch: a killed run re-sends at most what was
            # in flight, not a second's worth of settled work.
            on_delivered=(lambda: ledger.checkpoint(durable=False)) if state is not None else None,
        )
        summary = pipeline.run(items)  # a read error raises: the snapshot was not complete
        if changes is None:
            return summary
        complete = not (summary.interrupted or summary.refusal) and settings.limit is None
        if settings.delete_missing and complete:
            missing = changes.missing(changes_run)
            allowed = deletes_allowed(settings.max_deletes, changes.stats()["identities"])
            if len(missing) > allowed:
                changes.end_run(changes_run, complete=True)
                raise UsageError(
                    f"--delete-missing would delete {len(missing):,} profiles absent from this "
                    f"snapshot, more than --max-deletes {settings.max_deletes} allows "
                    f"({allowed:,}): nothing deleted"
                )
            if missing and confirm_deletes is not None and not confirm_deletes(len(missing)):
                note(f"--delete-missing: {len(missing):,} profiles not deleted (not confirmed)")
            elif missing:
                _delete_missing(missing, settings, sender, ledger, stop, changes, summary)
        changes.end_run(changes_run, complete=complete)
        return summary


MISSING_SOURCE = "<missing>"  # results of --delete-missing: numbered from 1, in identity order


def _delete_missing(
    missing: Sequence[str],
    settings: RunSettings,
    sender: Sender | None,
    ledger: Ledger,
    stop: threading.Event,
    changes: Any,
    summary: Summary,
) -> None:
    """Delete User for each identity the snapshot lacks; results and counts join `summary`."""
    mapping = FieldMapping(convert_timestamps=settings.convert_timestamps)
    fixed = [command_subscription(Action.DELETE, mapping)]
    items = [
        InputItem(MISSING_SOURCE, position, {"userId": identity})
        for position, identity in enumerate(missing, start=1)
    ]
    deletes = Pipeline(
        router=lambda item: fixed,
        sender=sender,
        sink=ledger.record,
        options=PipelineOptions(
            batch_size=settings.batch_size,
            concurrency=settings.concurrency,
            default_action="delete",
            changes=changes,
        ),
        stop=stop,
        on_idle=ledger.flush,
    )
    more = deletes.run(ledger.unfiled(items))
    summary.events += more.events
    summary.add_counts(more.counts())
    summary.requests = more.requests  # the client's counts: this pipeline read them last
    summary.retries = more.retries
    summary.seconds += more.seconds
    summary.interrupted = summary.interrupted or more.interrupted
    summary.refusal = summary.refusal or more.refusal
    summary.credentials_refused = summary.credentials_refused or more.credentials_refused
    summary.unreachable = summary.unreachable or more.unreachable
    for action, counts in more.by_action.items():
        merged = summary.by_action.setdefault(action, {})
        for status, count in counts.items():
            merged[status] = merged.get(status, 0) + count
    summary.reasons += more.reasons


def open_sender(
    settings: RunSettings, profile: Profile, stack: ExitStack, stop: threading.Event
) -> Sender:
    """The CleverTap client for this run.

    Once `stop` is set the client retries nothing more, and its backoff waits end at once.
    """
    from ctcli.delivery.client import CleverTapClient, ClientSettings

    profile.require_credentials()
    client = CleverTapClient(
        ClientSettings(
            base_url=profile.base_url,
            project_id=profile.project_id or "",
            passcode=profile.passcode or "",
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            concurrency=settings.concurrency,
        ),
        sleep=stop.wait,
        stopping=stop.is_set,
        env=settings.env,
    )
    stack.callback(client.close)
    return client
