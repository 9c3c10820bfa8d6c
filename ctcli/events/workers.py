"""Reading, parsing and mapping a large file in a second process, so both cores do work.

Parsing JSON and mapping events is most of ctcli's CPU per event. For a large regular NDJSON
file a forked worker process reads the file, routes and maps each item (`events.prepare`) and
hands the main process blocks of ready items: the records to send already JSON-encoded, every
result known in advance (invalid, skipped, dry-run, superseded) already decided. The main process
keeps everything that has to be in one place: HTTP, per-identity order, backpressure, signals,
the failed file and the checkpoint. The pipe between them is bounded, so when the main process
stops taking items (backpressure, a stop), the worker waits.

Pipes, stdin and small files keep the one-process path: a fork costs more than it saves there.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from ctcli.errors import InputError
from ctcli.models import Action, InputItem

# Below this, one process is as fast: the fork and the pipe cost more than parsing saves.
MIN_FILE_BYTES = 8 * 1024 * 1024
_BLOCK = 256  # items per message
_END = "end"
_READ_ERROR = "read-error"
_BUG = "bug"

Router = Callable[[InputItem], Sequence[Any]]


WholeOf = Callable[[Mapping[str, Any]], "bytes | None"]


class Prehashed(NamedTuple):
    """An upload record encoded by a worker, with the whole fingerprint of its profileData
    (None when it holds an update operator): --changes compares that first."""

    record: bytes
    whole: bytes | None


def worth_a_worker(name: str, *, streams: bool) -> bool:
    """Whether `name` is read by a worker: a regular file, large enough, forking allowed."""
    choice = os.environ.get("CTCLI_WORKERS")
    if streams or name == "-" or choice == "0":
        return False
    if "fork" not in multiprocessing.get_all_start_methods():
        return False
    try:
        # CTCLI_WORKERS=1: every regular file, whatever its size (tests of real processes).
        floor = 0 if choice == "1" else MIN_FILE_BYTES
        return os.path.isfile(name) and os.path.getsize(name) >= floor
    except OSError:
        return False


def read_prepared(
    name: str,
    router: Router,
    *,
    send: bool,
    keep_events: bool,
    start_offset: int = 0,
    start_line: int = 0,
    keep_records: bool = False,
    whole_of: WholeOf | None = None,
) -> Iterator[InputItem]:
    """The items of file `name`, read, routed and mapped in a worker process (`prepared` set).

    `keep_events`: the failed file may need each event, so it travels along, JSON-encoded.
    `keep_records`: a dry run shows the record each event would be (see `prepare`).
    `whole_of`: --changes: each upload record comes with the fingerprint this gives of its
    profileData (`Prehashed`), computed here rather than in the main process.
    """
    context = multiprocessing.get_context("fork")
    count = worker_count()
    receivers: list[Any] = []
    workers: list[Any] = []
    try:
        for index in range(count):
            receiver, sender = context.Pipe(duplex=False)
            worker = context.Process(
                target=_work,
                args=(sender, name, router, send, keep_events, start_offset, start_line,
                      index, count, keep_records, whole_of),
                name=f"ctcli-parse-{index}",
                daemon=True,
            )  # fmt: skip
            worker.start()
            sender.close()
            receivers.append(receiver)
            workers.append(worker)
        # Blocks of _BLOCK items are dealt round-robin: block n comes from worker n % count.
        block = 0
        while True:
            try:
                message = receivers[block % count].recv()
            except EOFError:
                raise InputError(f"cannot read {name!r}: the reading process ended early") from None
            kind = message[0]
            if kind == _END:
                return
            if kind == _READ_ERROR:
                raise InputError(message[1])
            if kind == _BUG:
                raise RuntimeError(f"while reading {name!r}: {message[1]}")
            for fields in message[1]:
                yield _item(name, fields)
            block += 1
    finally:
        for receiver in receivers:
            receiver.close()
        for worker in workers:
            if worker.is_alive():
                worker.kill()
            worker.join()


def worker_count() -> int:
    """Parse workers per file: on two cores or more, two; they parse every line, and each maps
    (the costly part) every other block, so the main process never waits on one of them."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def _item(source: str, fields: tuple[Any, ...]) -> InputItem:
    line, end_offset, file_line, error, raw, only, event_json, prepared = fields
    item = InputItem(source, line, None, error, raw, end_offset, only, file_line)
    item.prepared = prepared
    item.event_json = event_json
    return item


def _work(
    sender: Any,
    name: str,
    router: Router,
    send: bool,
    keep_events: bool,
    start_offset: int,
    start_line: int,
    index: int = 0,
    count: int = 1,
    keep_records: bool = False,
    whole_of: WholeOf | None = None,
) -> None:
    # The main process handles Ctrl-C and SIGTERM and ends this one; a traceback from here
    # would only be noise on the terminal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _close_inherited_files(keep=sender.fileno())
    from ctcli.events.prepare import prepare
    from ctcli.events.sources import SKIPPED, read_source

    try:
        block: list[tuple[Any, ...]] = []
        now = int(time.time())
        upcoming = 0  # the position of the item read next, counted over every worker's share

        def theirs() -> bool:
            return (upcoming // _BLOCK) % count != index

        items = read_source(name, start_offset=start_offset, start_line=start_line, skip=theirs)
        for position, item in enumerate(items):
            upcoming = position + 1
            if position % _BLOCK == 0:
                now = int(time.time())
                if block:  # the block before this one was ours (every item of it is here)
                    sender.send(("items", block))
                    block = []
            if item is SKIPPED or (position // _BLOCK) % count != index:
                continue  # another worker's item: counted (mostly unparsed), not mapped
            prepared = prepare(item, router, now=now, send=send, keep_records=keep_records)
            entries = prepared[2]
            if type(entries) is list:
                for at, (action, identity, status, detail) in enumerate(entries):
                    if status is None and action is Action.UPLOAD:
                        encoded = _encode(detail)
                        if whole_of is not None:  # --changes: hashed here, off the main process
                            whole = whole_of(detail["profileData"])
                            entries[at] = (action, identity, None, Prehashed(encoded, whole))
                        else:
                            entries[at] = (action, identity, None, encoded)
            event_json = _encode(item.event) if keep_events and item.event is not None else None
            block.append(
                (item.line, item.end_offset, item.file_line, item.error, item.raw,
                 item.only_action, event_json, prepared)
            )  # fmt: skip
        if block:
            sender.send(("items", block))  # the last block, short, was ours
        sender.send((_END,))
    except InputError as exc:
        if block:
            sender.send(("items", block))  # what came before the error goes first
        sender.send((_READ_ERROR, str(exc)))
    except BrokenPipeError:
        pass  # the main process stopped reading: nothing more to say
    except Exception as exc:  # a bug: the main process reports it
        sender.send((_BUG, f"{type(exc).__name__}: {exc}"))
    finally:
        sender.close()


def _close_inherited_files(keep: int) -> None:
    """Close what the fork copied but only the main process may hold.

    Above all the state file's lock (a flock lives as long as any copy of its descriptor, so a
    worker outliving a killed main process would keep the next run locked out) and the reading
    end of this pipe (without it, a worker whose main process died would wait on a full pipe
    instead of getting EPIPE).
    """
    try:
        descriptors = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        descriptors = list(range(3, 1024))
    for fd in descriptors:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits, which the standard library keeps exact
        return json.dumps(value, ensure_ascii=False).encode()
