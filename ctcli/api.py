"""The library's calls: upload, delete or replay events from Python, as the CLI does.

    import ctcli

    summary = ctcli.upload("users.ndjson", profile="prod", failed="failed.ndjson")
    summary = ctcli.replay(events_from_the_warehouse(), project_id="W9R-...", passcode="...")

Each call reads its events, routes and maps them, sends them in per-identity order and returns
the `Summary`; every event's results go to `on_result` in input order as they settle. Problems
of the setup (a missing file, bad credentials in the config, a locked --state file) raise the
`CtcliError` subclass the CLI turns into its exit code; problems of single events do not raise:
they are results (`invalid`, `failed`) and counts in the summary.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from itertools import chain
from typing import Any, BinaryIO
from uuid import UUID

import orjson

from ctcli.config import Credentials
from ctcli.delivery.pipeline import Summary
from ctcli.errors import UsageError
from ctcli.models import InputItem, Mode, Result

__all__ = ["EVENTS_SOURCE", "FrontEnd", "delete", "replay", "run", "upload"]

# The `source` of results for events handed over as Python objects; their `line` is the
# 1-based position of the event in the iterable.
EVENTS_SOURCE = "<events>"

Source = str | os.PathLike[str] | Iterable[str | os.PathLike[str]] | Iterable[Mapping[str, Any]]

_log = logging.getLogger("ctcli")


@dataclass(frozen=True)
class FrontEnd:
    """What a front end (the CLI, a progress display) plugs into a run, beyond `on_result`.

    `results` gets each event's item with all its results, in input order; `idle` is called
    when the run goes quiet (a moment to flush output); `warn` and `note` get what needs
    attention and what is merely worth knowing; `stdin` is the stream "-" reads; `first` are
    items that go ahead of the source and belong to no file (the CLI's --identity).
    """

    results: Callable[[InputItem, Sequence[Result]], None] | None = None
    idle: Callable[[], None] | None = None
    warn: Callable[[str], object] = _log.warning
    note: Callable[[str], object] = _log.info
    stdin: BinaryIO | None = None
    first: Sequence[InputItem] = ()
    # --delete-missing: asked with how many profiles would go, before any goes (a terminal).
    confirm_deletes: Callable[[int], bool] | None = None


def upload(source: Source, **options: Any) -> Summary:
    """Send every event through User Upload. See `run` for `source` and the options."""
    return run(Mode.UPLOAD, source, **options)


def delete(source: Source, **options: Any) -> Summary:
    """Send every event through Delete User. See `run` for `source` and the options."""
    return run(Mode.DELETE, source, **options)


def replay(source: Source, **options: Any) -> Summary:
    """Send each event to the actions whose triggers match it. See `run`."""
    return run(Mode.REPLAY, source, **options)


def run(
    mode: Mode | str,
    source: Source,
    *,
    profile: str | None = None,
    project_id: str | None = None,
    passcode: str | None = None,
    region: str | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    failed: str | os.PathLike[str] | None = None,
    state: str | os.PathLike[str] | None = None,
    batch_size: int = 1000,
    concurrency: int = 4,
    max_retries: int = 5,
    timeout: float = 10.0,
    convert_timestamps: bool = True,
    format: str = "auto",
    identity_column: str | None = None,
    limit: int | None = None,
    show_records: bool = False,
    changes: str | os.PathLike[str] | None = None,
    delete_missing: bool = False,
    max_deletes: str | int | None = None,
    on_result: Callable[[Result], None] | None = None,
    stop: threading.Event | None = None,
    env: Mapping[str, str] | None = None,
    front_end: FrontEnd | None = None,
) -> Summary:
    """Run `mode` ("upload", "delete" or "replay") over `source` and return its summary.

    `source`: a path (NDJSON, JSON or gzip, "-" for stdin), a list of paths, or an iterable of
    event dicts (read lazily, so a generator streams; results name them `<events>`, numbered
    from 1). Upload also reads profile tables: CSV, TSV (plain or gzip) and Parquet, told by
    their names (`.csv`, `.tsv`, `.parquet`) or by `format` ("csv", "tsv", "parquet"; "ndjson"
    or "json" read every path as events), with the identity in `identity_column` (default: a
    column named identity, userId or user_id). The account is the config file's `profile`
    (else $CTCLI_PROFILE, else "default") with the environment's CLEVERTAP_* variables over
    it, as for the CLI; `project_id` with `passcode` (and optionally `region` or `endpoint`)
    give it directly instead. `failed` and `state` are the CLI's --failed and --state files;
    `env` replaces os.environ for every lookup. Setting `stop` ends the run gracefully: nothing
    new is sent, and what settled is reported and saved. `limit` reads only the first N
    events; `show_records` (with `dry_run`) gives each result the record it would send, in
    `Result.record`. `changes` is the --changes database (send only what changed since
    CleverTap last took it); `delete_missing` deletes what it knows and this snapshot lacks, up
    to `max_deletes` (a count, or a share such as "2%"; default 1%). Warnings go to the "ctcli"
    logger.
    """
    from ctcli.job import DEFAULT_MAX_DELETES, RunSettings, execute

    mode = Mode(mode)
    if (project_id is None) != (passcode is None):
        raise UsageError("give both project_id and passcode, or neither (a profile then)")
    if (region is not None or endpoint is not None) and project_id is None:
        raise UsageError("region and endpoint go with project_id and passcode")
    credentials = None
    if project_id is not None and passcode is not None:
        credentials = Credentials(project_id, passcode, region=region, endpoint=endpoint)
    front = front_end or FrontEnd()
    inputs, events = _split_source(source)
    settings = RunSettings(
        mode=mode,
        inputs=inputs,
        arg_items=chain(front.first, events),
        profile=profile,
        credentials=credentials,
        dry_run=dry_run,
        failed_path=os.fspath(failed) if failed is not None else None,
        state_path=os.fspath(state) if state is not None else None,
        batch_size=batch_size,
        concurrency=concurrency,
        max_retries=max_retries,
        timeout=timeout,
        convert_timestamps=convert_timestamps,
        env=dict(os.environ if env is None else env),
        format=format,
        identity_column=identity_column,
        limit=limit,
        show_records=show_records,
        changes_path=os.fspath(changes) if changes is not None else None,
        delete_missing=delete_missing,
        max_deletes=str(max_deletes) if max_deletes is not None else DEFAULT_MAX_DELETES,
    )

    report = front.results

    def sink(item: InputItem, results: Sequence[Result]) -> None:
        if report is not None:
            report(item, results)
        if on_result is not None:
            for result in results:
                on_result(result)

    if on_result is None and report is not None:
        sink = report  # type: ignore[assignment]  # once per event: no call in between

    return execute(
        settings,
        sink=sink,
        on_idle=front.idle,
        stop=stop,
        stdin=front.stdin,
        warn=front.warn,
        note=front.note,
        confirm_deletes=front.confirm_deletes,
    )


def _split_source(source: Source) -> tuple[list[str], Iterable[InputItem]]:
    """(paths to read, items of events given as objects): one of the two is empty."""
    if isinstance(source, str | os.PathLike):
        return [os.fspath(source)], ()
    if isinstance(source, Mapping):
        raise UsageError("give an iterable of events (a list of dicts), not one dict")
    values = iter(source)
    first = next(values, None)
    if first is None:
        return [], ()
    if isinstance(first, str | os.PathLike):
        paths = [os.fspath(first)]
        for value in values:
            if not isinstance(value, str | os.PathLike):
                raise UsageError("a list of paths holds only paths")
            paths.append(os.fspath(value))
        return paths, ()
    return [], _as_items(chain([first], values))


def _as_items(events: Iterable[Any]) -> Iterator[InputItem]:
    for position, event in enumerate(events, start=1):
        if not isinstance(event, Mapping):
            error = f"not an event: an object was expected, got {type(event).__name__}"
            yield InputItem(EVENTS_SOURCE, position, None, error, repr(event))
            continue
        try:
            yield InputItem(EVENTS_SOURCE, position, _as_json(event))
        except (TypeError, ValueError) as exc:
            yield InputItem(EVENTS_SOURCE, position, None, f"not JSON: {exc}", repr(event))


def _as_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as JSON would carry it: what a file of it would give.

    Rows from a database hold datetimes, dates, decimals and UUIDs: they become the strings
    JSON has for them (ISO-8601 for dates), so that the mapping treats them as it treats a file.
    """
    try:
        return orjson.loads(orjson.dumps(event, default=_as_text, option=orjson.OPT_NON_STR_KEYS))
    except orjson.JSONEncodeError as exc:
        if "Integer exceeds 64-bit range" in str(exc):
            return json.loads(json.dumps(event, default=_as_text))
        raise TypeError(str(exc)) from None


def _as_text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, UUID | os.PathLike):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
