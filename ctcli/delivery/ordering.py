"""Per-identity order on the wire: lanes, exact merges and the batches that may be sent next.

CleverTap documents no order between concurrent requests, nor among the records of one request.
So the only order a client controls is the order of its requests per identity, and this module
keeps it: every identity has a lane, and at most one record of an identity is out at a time (in
an open batch, waiting to be sent, or in flight). Later records of a busy identity wait in its
lane, in input order, and go out when the one before them is answered. Identities are partitions,
as in a keyed stream: requests for different identities still go side by side, so concurrency
stays useful however often identities repeat.

Two updates of one identity that would wait for each other are merged when merging is exact
(plain values: later keys win, the later `ts`); a merged record that CleverTap refuses is taken
apart again and its events sent one by one, so each event still gets its own answer.

Pure bookkeeping, no threads or I/O: the pipeline owns the one thread that calls it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ctcli.events.actions import InvalidEvent, validate_profile_data
from ctcli.models import Action

Target = tuple[Any, int]  # (the event's result slot, the index of this action's result in it)


@dataclass(slots=True, eq=False)
class Work:
    """One record on the wire (a profile record or an identity to delete) and its events."""

    action: Action
    identity: str
    payload: Any  # upload: the profile record; delete: the identity
    targets: list[Target]
    parts: list[Work] | None = None  # merged: the works it was made of, in input order
    alone: bool = False  # taken apart after a refusal: never merged again
    batch: Batch | None = None  # the batch that holds it while it is out
    whole: bytes | None = None  # --changes: the fingerprint of the full record, as read
    hashed: bool = False  # `whole` is computed (None then means: it holds an operator)

    @property
    def events(self) -> int:
        return len(self.targets)


@dataclass(slots=True, eq=False)
class Batch:
    """Records of one action bound for one request; no two share an identity."""

    action: Action
    opened: float
    works: list[Work] = field(default_factory=list)
    events: int = 0
    closed: bool = False  # no more records may join: waiting to be sent, or in flight

    @property
    def payloads(self) -> list[Any]:
        return [work.payload for work in self.works]


@dataclass(slots=True)
class _Lane:
    out: Work  # in an open batch, waiting to be sent, or in flight
    waiting: deque[Work] = field(default_factory=deque)


def decoded(payload: Any) -> Any:
    """A record that may have come JSON-encoded (bytes, from a worker process), as a dict."""
    return orjson.loads(payload) if type(payload) is bytes else payload


def _plain(profile: dict[str, Any]) -> bool:
    """True when every value is set as it is (no $add, $incr... operator, no object)."""
    return all(type(value) is not dict for value in profile.values())


def merged_upload(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any] | None:
    """One record that does exactly what `earlier` then `later` do, or None when none can.

    Only plain values merge: applying {a: 1} then {a: 2, b: 3} is {a: 2, b: 3}; an operator such
    as $incr or $add depends on what it is applied to, so records holding one stay apart.
    """
    first, second = earlier["profileData"], later["profileData"]
    if not (_plain(first) and _plain(second)):
        return None
    profile = {**first, **second}
    if len(profile) > len(first) and len(profile) > len(second):
        try:  # the union may pass a limit that neither record passed alone (custom keys)
            validate_profile_data(profile)
        except InvalidEvent:
            return None
    merged = dict(later)
    if later.get("ts") is None and earlier.get("ts") is not None:
        merged["ts"] = earlier["ts"]
    merged["profileData"] = profile
    return merged


class Scheduler:
    """Lanes per identity and open batches per action; hands out batches ready to send."""

    def __init__(self, *, upload_limit: int, delete_limit: int) -> None:
        self._limits = {Action.UPLOAD: upload_limit, Action.DELETE: delete_limit}
        self._lanes: dict[str, _Lane] = {}
        self._open: dict[Action, Batch] = {}
        self._ready: deque[Batch] = deque()
        self._waiting = 0  # records waiting in lanes behind a record of their identity
        self.merged = 0  # events that travelled inside another event's record

    @property
    def idle(self) -> bool:
        """Nothing is out or waiting: every record handed in has been answered."""
        return not self._lanes

    def has_ready(self) -> bool:
        return bool(self._ready)

    @property
    def waiting(self) -> int:
        """Records held back behind an earlier record of their identity."""
        return self._waiting

    def next_ready(self) -> Batch | None:
        return self._ready.popleft() if self._ready else None

    def add(self, work: Work, now: float) -> None:
        """Take a new record, in input order."""
        lane = self._lanes.get(work.identity)
        if lane is None:
            self._lanes[work.identity] = _Lane(work)
            self._place(work, now)
            return
        if lane.waiting:
            if not self._merge(lane.waiting[-1], work):
                lane.waiting.append(work)
                self._waiting += 1
            return
        out = lane.out
        batch = out.batch
        if batch is not None and not batch.closed and self._merge(out, work):
            batch.events += work.events
            if batch.events >= self._limits[batch.action]:
                self._close(batch)
            return
        lane.waiting.append(work)
        self._waiting += 1

    def close_open(self, now: float, *, older_than: float | None = None) -> None:
        """Close the open batches (all, or those opened more than `older_than` seconds ago)."""
        for batch in list(self._open.values()):
            if older_than is None or now - batch.opened >= older_than:
                self._close(batch)

    def answered(self, work: Work, now: float) -> None:
        """`work` has its final answer: the next record of its identity may go."""
        lane = self._lanes[work.identity]
        work.batch = None
        if lane.waiting:
            lane.out = lane.waiting.popleft()
            self._waiting -= 1
            self._place(lane.out, now)
        else:
            del self._lanes[work.identity]

    def take_apart(self, work: Work, now: float) -> None:
        """A merged record was refused: send its events one by one, in order, in its place."""
        assert work.parts is not None
        lane = self._lanes[work.identity]
        work.batch = None
        for part in work.parts:
            part.alone = True
        lane.waiting.extendleft(reversed(work.parts))
        self._waiting += len(work.parts) - 1
        lane.out = lane.waiting.popleft()
        self._place(lane.out, now)

    def works(self) -> Iterator[Work]:
        """Every record not yet answered (for failing them all at once)."""
        for lane in self._lanes.values():
            yield lane.out
            yield from lane.waiting

    # -- inside ----------------------------------------------------------------------------

    def _place(self, work: Work, now: float) -> None:
        batch = self._open.get(work.action)
        if batch is None:
            batch = self._open[work.action] = Batch(work.action, opened=now)
        batch.works.append(work)
        batch.events += work.events
        work.batch = batch
        limit = self._limits[work.action]
        if len(batch.works) >= limit or batch.events >= limit:
            self._close(batch)

    def _close(self, batch: Batch) -> None:
        if batch.closed:
            return
        batch.closed = True
        del self._open[batch.action]
        self._ready.append(batch)

    def _merge(self, into: Work, work: Work) -> bool:
        if into.action is not work.action or into.alone:
            return False
        if work.action is Action.UPLOAD:
            payload = merged_upload(decoded(into.payload), decoded(work.payload))
            if payload is None:
                return False
        else:
            payload = into.payload  # deleting twice is deleting once
        if into.parts is None:
            into.parts = [Work(into.action, into.identity, into.payload, list(into.targets))]
        into.parts.append(work)
        into.payload = payload
        into.targets.extend(work.targets)
        self.merged += work.events
        return True
