"""source -> route -> batch -> send -> results: every event ends in exactly one result per action.

The main thread reads, routes and maps events and owns all bookkeeping; worker threads only
send batches and hand back outcomes through a queue. Results leave in input order, so the
failed file and the checkpoint only ever move past events that are settled.
"""

from __future__ import annotations

import gc
import queue
import re
import secrets
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ctcli.delivery.ordering import Batch, Scheduler, Work, decoded
from ctcli.errors import CredentialsRejected, Unreachable
from ctcli.events.actions import is_operator as _is_operator
from ctcli.events.prepare import Entry, Router, prepare
from ctcli.events.workers import Prehashed
from ctcli.models import Action, InputItem, Outcome, Result, Status

CREDENTIALS_REFUSED = "credentials refused"
_COLLECT_EVERY = 8  # answered batches between full garbage collections


class Sender(Protocol):
    """What the pipeline needs from a CleverTap client."""

    @property
    def requests(self) -> int: ...

    @property
    def retries(self) -> int: ...

    def upload(self, records: list[dict[str, Any] | bytes]) -> list[Outcome]: ...

    def delete(self, identities: list[str]) -> list[Outcome]: ...


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = 1000
    delete_batch_size: int = 100
    concurrency: int = 4
    dry_run: bool = False
    default_action: str | None = None  # reported for items that are not events at all
    keep_events: bool = True  # False: drop each event once mapped (nobody needs it after)
    linger_seconds: float = 0.5  # an open batch waits at most this long for more events
    # Events read but not yet reported before reading waits; None: a few batches per worker.
    max_waiting_events: int | None = None
    # Identities with a failure in the failed file: a later delivery of one says what it
    # supersedes. None: nobody is keeping failures (no failed file).
    watched: set[str] | None = None
    show_records: bool = False  # a dry run's results carry the record each event would be
    single_action: str | None = None  # every result has this action (upload, delete)
    # --changes: what CleverTap accepted before, per identity and attribute; records are cut to
    # what changed when they are sent, and unchanged ones are not sent at all.
    changes: ChangeMemory | None = None
    # --delete-missing: the run number the identities read are marked seen in (0: not marked).
    changes_run: int = 0
    now: Callable[[], float] = time.time


@dataclass
class Reason:
    """One kind of failure: how many results it ended and where it was first seen."""

    status: Status
    text: str  # the error with its values taken out, so that like failures count together
    count: int
    first_source: str
    first_line: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": str(self.status),
            "reason": self.text,
            "count": self.count,
            "first": f"{self.first_source}:{self.first_line}",
        }


# Quoted values and numbers in error texts: "Phone '555' is not ..." and "Phone '556' is not ..."
# are one reason. Quoted names of fields ('userId', 'traits.email') are kept: they say where.
_QUOTED = re.compile(
    r"""(?P<before>\w+ )?(?P<quote>['"])(?P<text>(?:(?!(?P=quote))[^\\]|\\.)*)(?P=quote)"""
)
_NUMBER = re.compile(r"(?<![\w.:/])\d+(?![\w.:/])")  # a count, not part of an address
_A_FIELD = re.compile(r"[A-Za-z_$][\w$.-]*")


def _without_value(match: re.Match[str]) -> str:
    before = match.group("before") or ""
    text = match.group("text")
    if _A_FIELD.fullmatch(text) and not before[:1].isupper():
        return match.group()  # a field's name, not a value of it (values follow a key: Phone)
    return before + "..."


def reason_of(error: str | None) -> str:
    """An error text as a reason: quoted values as "...", numbers as N."""
    if not error:
        return "(no reason given)"
    return _NUMBER.sub("N", _QUOTED.sub(_without_value, error))


def _utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Summary:
    run_id: str = ""
    started_at: float = 0.0  # epoch seconds
    finished_at: float = 0.0
    events: int = 0
    ok: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0
    dry_run: int = 0
    superseded: int = 0
    unchanged: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    credentials_refused: bool = False
    unreachable: bool = False  # no request got any answer: the run stopped sending
    refusal: str | None = None  # why the run stopped sending: CleverTap's words, or the network's
    interrupted: bool = False
    by_action: dict[str, dict[str, int]] = field(default_factory=dict)  # action -> status -> n
    reasons: list[Reason] = field(default_factory=list)  # failed and invalid, most first

    def count(self, status: Status) -> int:
        """How many results had `status` (its field: the status with "-" as "_")."""
        return int(getattr(self, _count_field(status)))

    def counts(self) -> dict[Status, int]:
        """Results per status, every status in Status's order."""
        return {status: self.count(status) for status in Status}

    def add_counts(self, counts: dict[Status, int]) -> None:
        for status in Status:
            field = _count_field(status)
            setattr(self, field, getattr(self, field) + counts[status])

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            **{str(status): count for status, count in self.counts().items()},
            "requests": self.requests,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "run_id": self.run_id,
            "started_at": _utc_iso(self.started_at) if self.started_at else None,
            "finished_at": _utc_iso(self.finished_at) if self.finished_at else None,
            "by_action": self.by_action,
            "reasons": [reason.to_dict() for reason in self.reasons],
        }


_SEEN_BATCH = 1000  # identities marked seen per statement
_MAX_REASONS = 100  # kinds of failure kept apart; the rest are counted as "(other reasons)"


def new_run_id(started_at: float) -> str:
    """A run's id: when it started (sortable) and a random part (unique)."""
    stamp = datetime.fromtimestamp(started_at, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def _count_field(status: Status) -> str:
    return status.value.replace("-", "_")


class ChangeMemory(Protocol):
    """What the pipeline needs of a fingerprint store (ctcli.delivery.changes.Fingerprints)."""

    def known_packed(self, identities: Sequence[str]) -> dict[str, bytes]: ...

    def accepted(
        self,
        records: Sequence[tuple[str, Mapping[str, Any]]],
        wholes: Mapping[str, bytes | None] | None = None,
    ) -> None: ...

    def forget(self, identities: Sequence[str]) -> None: ...

    def seen(self, identities: Sequence[str], run: int) -> None: ...


class ResultSink(Protocol):
    """Receives each event's results, in input order, once all of them are known."""

    def __call__(self, item: InputItem, results: Sequence[Result]) -> None: ...


@dataclass(slots=True)
class _Slot:
    item: InputItem
    results: list[Result | None]
    pending: int
    kind: str | None = None  # the event's type, for its results
    name: str | None = None  # the event's name (track events), for its results


# HTTP answers that mean "this request, now" rather than "this record": a merged record that got
# one is not taken apart, since its events would only meet the same fate one by one.
_NOT_ABOUT_THE_RECORD = frozenset({401, 403, 408, 429, 500, 502, 503, 504})


def _about_the_record(outcome: Outcome) -> bool:
    code = outcome.code
    return code is not None and code not in _NOT_ABOUT_THE_RECORD


class Pipeline:
    """One run: feed it items, it reports every result to `sink` in input order."""

    def __init__(
        self,
        *,
        router: Router,
        sender: Sender | None,
        sink: ResultSink,
        options: PipelineOptions,
        stop: threading.Event | None = None,
        on_idle: Callable[[], None] | None = None,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        if sender is None and not options.dry_run:
            raise ValueError("a sender is needed unless this is a dry run")
        self._router = router
        self._sender = sender
        self._sink = sink
        self._options = options
        self._stop = stop or threading.Event()
        self._on_idle = on_idle
        self._on_delivered = on_delivered  # after the results of answered batches went out
        self._slots: deque[_Slot] = deque()
        self._scheduler = Scheduler(
            upload_limit=options.batch_size,
            # --batch-size lowers deletes too; CleverTap takes at most 100 identities a request.
            delete_limit=min(options.batch_size, options.delete_batch_size, 100),
        )
        self._done: queue.SimpleQueue[tuple[Batch, list[Outcome] | None, BaseException | None]] = (
            queue.SimpleQueue()
        )
        self._in_flight = 0
        self._answered = 0  # batches answered so far
        # Two batches per worker: one being sent, one ready behind it, so no worker waits on
        # the main thread. Batches never share an identity, so this keeps the order.
        self._max_out = 2 * options.concurrency
        # Events read but not yet reported. Past this, reading waits for answers: memory stays
        # flat however slow one request is, and a killed run re-sends little.
        self._max_unsettled = options.max_waiting_events or (self._max_out + 2) * options.batch_size
        self._watched = options.watched  # identities whose failures a later delivery supersedes
        self._changes = options.changes
        self._changes_run = options.changes_run
        self._seen: list[str] = []  # identities read, not yet marked seen (--delete-missing)
        self._dry_run = options.dry_run
        # Why nothing more is sent: the credentials were refused, or CleverTap is out of reach.
        self._refused: CredentialsRejected | Unreachable | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.summary = Summary()
        self._counts = dict.fromkeys(Status, 0)  # per result status, copied into the summary
        self._action_counts: Counter[tuple[str | None, Status]] = Counter()
        # upload and delete: every result has the one action, so its counts are the statuses'
        self._single_action = options.single_action
        self._reasons: dict[tuple[Status, str], Reason] = {}

    # -- the run ----------------------------------------------------------------------------

    def run(self, items: Iterable[InputItem | None]) -> Summary:
        """Process every item (None means "nothing new yet": a chance to send what is open).

        If reading breaks off (a corrupt file), what was read is still delivered and reported,
        then the error is raised. On an abort (KeyboardInterrupt) nobody waits for the network.
        """
        started = time.monotonic()
        self.summary.started_at = time.time()
        self.summary.run_id = new_run_id(self.summary.started_at)
        if self._sender is not None and not self._options.dry_run:
            self._executor = ThreadPoolExecutor(
                max_workers=self._options.concurrency, thread_name_prefix="ctcli-send"
            )
        read_error: Exception | None = None
        aborted = True
        try:
            try:
                self._consume(items)
            except Exception as exc:
                read_error = exc
            if self._stop.is_set():
                self.summary.interrupted = True
            self._drain()
            self._emit_ready()
            self._flush_seen()
            aborted = False
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=not aborted, cancel_futures=True)
            if self._sender is not None:
                self.summary.requests = self._sender.requests
                self.summary.retries = self._sender.retries
            if self._stop.is_set():
                self.summary.interrupted = True  # however late: the user asked to stop
            self.summary.seconds = time.monotonic() - started
            self.summary.finished_at = time.time()
            self.summary.add_counts(self._counts)
            self._summarise_by_action_and_reason()
            if self._refused is not None:
                if isinstance(self._refused, CredentialsRejected):
                    self.summary.credentials_refused = True
                else:
                    self.summary.unreachable = True
                self.summary.refusal = str(self._refused)
                if self.summary.unreachable:
                    self.summary.refusal += (
                        ": CleverTap never answered, so nothing more was sent;"
                        " every event is failed"
                    )
        if read_error is not None:
            raise read_error
        return self.summary

    def _summarise_by_action_and_reason(self) -> None:
        if self._single_action is not None:
            counted = {str(status): n for status, n in self._counts.items() if n}
            self.summary.by_action = {self._single_action: counted} if counted else {}
            self.summary.reasons = sorted(
                self._reasons.values(), key=lambda reason: (-reason.count, reason.text)
            )
            return
        by_action: dict[str, dict[str, int]] = {}
        order = {status: position for position, status in enumerate(Status)}
        pairs = sorted(self._action_counts.items(), key=lambda p: (str(p[0][0]), order[p[0][1]]))
        for (action, status), count in pairs:
            by_action.setdefault(action or "none", {})[str(status)] = count
        self.summary.by_action = by_action
        self.summary.reasons = sorted(
            self._reasons.values(), key=lambda reason: (-reason.count, reason.text)
        )

    def _consume(self, items: Iterable[InputItem | None]) -> None:
        since_check = 0
        for item in items:
            if self._stop.is_set():
                return
            if item is None:
                self._send_if_idle()
                self._pump()
                self._collect(block=False)
                if self._on_idle is not None:
                    self._on_idle()
                continue
            self._admit(item)
            since_check += 1
            if since_check >= 64:
                since_check = 0
                self._collect(block=False)
                self._scheduler.close_open(
                    time.monotonic(), older_than=self._options.linger_seconds
                )
                self._pump()
                self._wait_while_full()

    def _wait_while_full(self) -> None:
        """Backpressure: past the bound of unreported events, wait for answers before reading."""
        scheduler = self._scheduler
        while len(self._slots) > self._max_unsettled and not scheduler.idle:
            if self._in_flight:
                self._collect(block=True)
                if len(self._slots) <= self._max_unsettled:
                    return  # reading may go on, and fill the open batches
            if scheduler.waiting or not self._in_flight:
                # Reading waits while records queue behind answers: the open batches would
                # fill only from those answers, so an idle worker takes them now.
                self._send_if_idle()
            self._pump()

    def _drain(self) -> None:
        """Send everything read, each identity's records one after the other."""
        scheduler = self._scheduler
        while not scheduler.idle or self._in_flight:
            self._send_if_idle()
            self._pump()
            if self._in_flight:
                self._collect(block=True)

    def _send_if_idle(self) -> None:
        """Close the open batches now if a worker would otherwise wait for them.

        Used when reading cannot fill them (input quiet or ended, or waiting for answers). While
        every worker is busy they keep filling, with the next records of identities as their
        answers come in: fewer, fuller requests, and no worker ever idle while records wait.
        """
        scheduler = self._scheduler
        now = time.monotonic()
        if self._in_flight < self._options.concurrency and not scheduler.has_ready():
            scheduler.close_open(now)
        else:
            scheduler.close_open(now, older_than=self._options.linger_seconds)

    # -- reading side -----------------------------------------------------------------------

    def _admit(self, item: InputItem) -> None:
        self.summary.events += 1
        prepared = item.prepared
        if prepared is None:
            prepared = prepare(
                item, self._router, now=int(self._now()), send=not self._dry_run,
                keep_records=self._options.show_records,
            )  # fmt: skip
        kind, name, entries = prepared
        if type(entries) is not list:
            action = self._options.default_action if entries is Status.INVALID else None
            self._settle_now(item, action, entries, item.error, kind, name)
            return
        slot = _Slot(item, [None] * len(entries), len(entries), kind, name)
        self._slots.append(slot)
        if self._changes_run:
            self._mark_seen(entries)
        for index, (action, identity, status, detail) in enumerate(entries):
            if status is Status.DRY_RUN and detail is not None:  # --show-records
                result = self._result(slot, str(action), identity, status, None, None)
                result = result._replace(record=detail)
            elif status is not None:
                result = self._result(slot, str(action), identity, status, None, detail)
            elif self._refused is not None:
                result = self._result(
                    slot, str(action), identity, Status.FAILED, self._refused_code(),
                    self._refused_reason(),
                )  # fmt: skip
            else:
                if type(detail) is Prehashed:  # a worker's record, with its fingerprint
                    work = Work(action, identity, detail.record, [(slot, index)])
                    work.whole = detail.whole
                    work.hashed = True
                else:
                    work = Work(action, identity, detail, [(slot, index)])
                self._scheduler.add(work, time.monotonic())
                continue
            self._fill(slot, index, result)
        if not self._options.keep_events:
            item.event = None  # fewer live objects while batches are in flight
        if slot is self._slots[0]:
            self._emit_ready()

    def _now(self) -> float:
        return self._options.now()

    def _settle_now(
        self,
        item: InputItem,
        action: str | None,
        status: Status,
        error: str | None,
        kind: str | None,
        name: str | None,
    ) -> None:
        result = Result(item.source, item.line, kind, name, action, None, status, None, error)
        slot = _Slot(item, [result], 0)
        self._slots.append(slot)
        if slot is self._slots[0]:
            self._emit_ready()

    def _fill(self, slot: _Slot, index: int, result: Result) -> None:
        slot.results[index] = result
        slot.pending -= 1

    # -- sending ----------------------------------------------------------------------------

    def _pump(self) -> None:
        """Hand ready batches to the workers, as many as may be out at once."""
        scheduler = self._scheduler
        while self._in_flight < self._max_out:
            batch = scheduler.next_ready()
            if batch is None:
                return
            if self._refused is not None:
                self._fail_batch(batch, self._refused_code(), self._refused_reason())
                continue
            if (
                self._changes is not None
                and batch.action is Action.UPLOAD
                and not self._only_what_changed(batch)
            ):
                continue  # everything in it was unchanged: nothing to send
            assert self._executor is not None and self._sender is not None
            self._in_flight += 1
            self._executor.submit(self._send, batch)

    def _mark_seen(self, entries: list[Entry]) -> None:
        """--delete-missing: every identity the snapshot names is present, whatever becomes of
        its row (an invalid row does not make a profile vanish)."""
        seen = self._seen
        seen.extend(identity for _action, identity, _status, _detail in entries if identity)
        if len(seen) >= _SEEN_BATCH:
            self._flush_seen()

    def _flush_seen(self) -> None:
        if self._seen and self._changes is not None:
            self._changes.seen(self._seen, self._changes_run)
            self._seen.clear()

    def _only_what_changed(self, batch: Batch) -> bool:
        """Cut each record to the attributes CleverTap does not hold yet; settle unchanged ones.

        Done when the batch goes, not when events are read: by then every earlier record of
        each identity has its answer, so the memory is what CleverTap holds. False when
        nothing is left to send.
        """
        from ctcli.delivery.changes import fingerprint, holds_whole, unpack, whole_fingerprint

        memory = self._changes
        assert memory is not None
        known = memory.known_packed([work.identity for work in batch.works])
        now = time.monotonic()
        left: list[Work] = []
        for work in batch.works:
            stored = known.get(work.identity)
            if work.hashed and stored is not None and holds_whole(stored, work.whole):
                self._settle_unchanged(work, now)  # not even decoded: most rows, most nights
                continue
            record = decoded(work.payload)
            profile = record["profileData"]
            if not work.hashed or work.parts is not None:  # merged here: hashed anew
                work.whole = whole_fingerprint(profile)
                work.hashed = True
            if stored is None:
                changed = profile
            elif holds_whole(stored, work.whole):
                changed = {}  # the very record CleverTap took last time
            else:
                prints = unpack(stored)
                changed = {
                    key: value
                    for key, value in profile.items()
                    if prints.get(key) != fingerprint(value) or _is_operator(value)
                }
            if not changed:
                self._settle_unchanged(work, now)
                continue
            if len(changed) < len(profile):
                work.payload = {**record, "profileData": changed}
            left.append(work)
        batch.works = left
        batch.events = sum(work.events for work in left)
        if not left:
            self._emit_ready()
        return bool(left)

    def _settle_unchanged(self, work: Work, now: float) -> None:
        for slot, index in work.targets:
            self._fill(
                slot,
                index,
                self._result(slot, "upload", work.identity, Status.UNCHANGED, None, None),
            )
        self._scheduler.answered(work, now)

    def _remember(self, batch: Batch, outcomes: list[Outcome]) -> None:
        """CleverTap took these records: what it now holds is what they said (or deleted)."""
        memory = self._changes
        assert memory is not None
        taken = [work for work, outcome in zip(batch.works, outcomes, strict=False) if outcome.ok]
        if not taken:
            return
        if batch.action is Action.UPLOAD:
            memory.accepted(
                [(work.identity, decoded(work.payload)["profileData"]) for work in taken],
                {work.identity: work.whole for work in taken},
            )
        else:
            memory.forget([work.identity for work in taken])

    def _send(self, batch: Batch) -> None:
        """Runs on a worker thread: only talks to the sender, never touches bookkeeping."""
        assert self._sender is not None
        try:
            if batch.action is Action.UPLOAD:
                outcomes = self._sender.upload(batch.payloads)
            else:
                outcomes = self._sender.delete(batch.payloads)
        except BaseException as exc:  # handed to the main thread, which decides
            self._done.put((batch, None, exc))
        else:
            self._done.put((batch, outcomes, None))

    def _collect(self, *, block: bool) -> None:
        delivered = False
        while self._in_flight:
            try:
                batch, outcomes, error = self._done.get(block=block, timeout=0.2 if block else None)
            except queue.Empty:
                if not block:
                    break
                if self._on_idle is not None:
                    self._on_idle()  # waiting on the network: let what is ready be seen
                continue
            self._in_flight -= 1
            self._complete(batch, outcomes, error)
            self._answered += 1
            if self._answered % _COLLECT_EVERY == 0:
                # httpx leaves each exchange in a reference cycle that holds its request body;
                # with the run's raised GC thresholds those would pile up until a rare full
                # collection, so memory would grow with the number of requests.
                gc.collect()
            block = False
            delivered = True
        self._pump()  # answered identities may have let later records go
        self._emit_ready()
        if delivered and self._on_delivered is not None:
            self._on_delivered()

    def _complete(
        self, batch: Batch, outcomes: list[Outcome] | None, error: BaseException | None
    ) -> None:
        if isinstance(error, CredentialsRejected | Unreachable):
            self._refused = self._refused or error
        elif error is not None:
            # A bug while sending must not lose events: they become failed and the run goes on.
            reason = f"internal error while sending: {type(error).__name__}: {error}"
            self._fail_batch(batch, None, reason)
            return
        if outcomes is None:
            # Answers that came before the refusal stand; everything after it is refused.
            known: list[Outcome] = []
            if isinstance(error, CredentialsRejected):
                known = error.settled[: len(batch.works)]
            reason = str(error) if isinstance(error, Unreachable) else self._refused_reason()
            refused = Outcome(ok=False, code=self._refused_code(), error=reason)
            outcomes = known + [refused] * (len(batch.works) - len(known))
        action = str(batch.action)
        scheduler = self._scheduler
        now = time.monotonic()
        if self._changes is not None:
            self._remember(batch, outcomes)  # before the next records of these identities go
        for work, outcome in zip(batch.works, outcomes, strict=True):
            if outcome.ok:
                keys = self._superseding_keys(work)
                for slot, index in work.targets:
                    self._fill(
                        slot,
                        index,
                        self._result(
                            slot, action, work.identity, Status.OK, None, None, supersedes=keys
                        ),
                    )
            elif work.parts is not None and self._refused is None and _about_the_record(outcome):
                scheduler.take_apart(work, now)  # each event gets its own answer
                continue
            else:
                for slot, index in work.targets:
                    self._fill(
                        slot,
                        index,
                        self._result(
                            slot, action, work.identity, Status.FAILED, outcome.code,
                            outcome.error,
                        ),
                    )  # fmt: skip
            scheduler.answered(work, now)

    def _fail_batch(self, batch: Batch, code: int | None, reason: str) -> None:
        action = str(batch.action)
        now = time.monotonic()
        for work in batch.works:
            for slot, index in work.targets:
                self._fill(
                    slot,
                    index,
                    self._result(slot, action, work.identity, Status.FAILED, code, reason),
                )
            self._scheduler.answered(work, now)

    def _superseding_keys(self, work: Work) -> tuple[str, ...] | None:
        """What a delivered record settles for earlier failures of its identity, if any."""
        watched = self._watched
        if watched is None or work.identity not in watched:
            return None
        if work.action is Action.DELETE:
            return ()
        return tuple(decoded(work.payload)["profileData"])

    def _refused_code(self) -> int | None:
        refused = self._refused
        return refused.status_code if isinstance(refused, CredentialsRejected) else None

    def _refused_reason(self) -> str:
        """What the events never sent once the run stopped sending are told."""
        if isinstance(self._refused, Unreachable):
            return f"not sent: {self._refused}"
        return CREDENTIALS_REFUSED

    def _result(
        self,
        slot: _Slot,
        action: str,
        identity: str | None,
        status: Status,
        code: int | None,
        error: str | None,
        supersedes: tuple[str, ...] | None = None,
    ) -> Result:
        item = slot.item
        if (
            identity is not None
            and self._watched is not None
            and (status is Status.FAILED or status is Status.INVALID)
        ):
            self._watched.add(identity)  # a later delivery of it will say it supersedes this
        return Result(
            item.source,
            item.line,
            slot.kind,
            slot.name,
            action,
            identity,
            status,
            code,
            error,
            supersedes,
        )

    # -- results, in order ------------------------------------------------------------------

    def _emit_ready(self) -> None:
        slots = self._slots
        sink = self._sink
        counts = self._counts
        pairs = self._action_counts
        single = self._single_action
        while slots and slots[0].pending == 0:
            slot = slots.popleft()
            results = slot.results
            for result in results:
                status = result.status  # type: ignore[union-attr]
                counts[status] += 1
                if single is None:  # several actions: counted apart (else: from `counts`)
                    pairs[(result.action, status)] += 1  # type: ignore[union-attr]
                if status is Status.FAILED or status is Status.INVALID:
                    self._note_reason(result)  # type: ignore[arg-type]
            sink(slot.item, results)  # type: ignore[arg-type]

    def _note_reason(self, result: Result) -> None:
        key = (result.status, reason_of(result.error))
        seen = self._reasons.get(key)
        if seen is None:
            if len(self._reasons) >= _MAX_REASONS:
                key = (result.status, "(other reasons)")
                seen = self._reasons.get(key)
            if seen is None:
                seen = self._reasons[key] = Reason(key[0], key[1], 0, result.source, result.line)
        seen.count += 1


def with_ticks(
    items: Iterable[InputItem], tick_seconds: float = 0.25
) -> Iterator[InputItem | None]:
    """Read `items` on a thread; yield None whenever nothing arrived for `tick_seconds`.

    For pipes and terminals: a slow producer must not hold a half-full batch (and every result
    behind it) hostage until more input arrives.
    """
    handoff: queue.Queue[Any] = queue.Queue(maxsize=10_000)
    finished = object()

    def pump() -> None:
        try:
            for item in items:
                handoff.put(item)
        except BaseException as exc:
            handoff.put(exc)
        handoff.put(finished)

    threading.Thread(target=pump, name="ctcli-read", daemon=True).start()
    while True:
        try:
            got = handoff.get(timeout=tick_seconds)
        except queue.Empty:
            yield None
            continue
        if got is finished:
            return
        if isinstance(got, BaseException):
            raise got
        yield got
