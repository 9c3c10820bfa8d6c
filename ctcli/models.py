"""The data that travels between stages: input items, actions, statuses and results."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class Status(StrEnum):
    OK = "ok"
    FAILED = "failed"
    INVALID = "invalid"
    SKIPPED = "skipped"
    DRY_RUN = "dry-run"
    SUPERSEDED = "superseded"  # a re-driven failure whose effect later delivered events replaced
    UNCHANGED = "unchanged"  # --changes: CleverTap holds this record already; nothing was sent


class Action(StrEnum):
    UPLOAD = "upload"
    DELETE = "delete"


class Mode(StrEnum):
    """What a run does: every event to User Upload, every event to Delete User, or by triggers."""

    UPLOAD = "upload"
    DELETE = "delete"
    REPLAY = "replay"


@dataclass(slots=True)
class InputItem:
    """One item read from a source: an event, or the reason it could not be one."""

    source: str  # the file as given, "-" for stdin, "args" for the command line
    line: int  # 1-based line (NDJSON) or 1-based item position (JSON array / batch envelope)
    event: dict[str, Any] | None  # the parsed event; None when `error` is set
    error: str | None = None  # why this item is not an event (bad JSON, not an object, ...)
    raw: str | None = None  # the raw text of a bad item, kept for the --failed file
    end_offset: int | None = None  # NDJSON only: byte offset just past this line
    only_action: str | None = None  # set when unwrapped from a --failed line: redo just this
    file_line: int | None = None  # NDJSON batch-envelope items: the line they stand on
    redrive_identity: str | None = None  # a --failed line: the identity it failed for
    # A --failed line: what later delivered events of its identity did (a Supersession), or,
    # on a line that only says so (a marker), what it says.
    superseded: Any = None
    marker: bool = False  # a --failed file's line that says a later event superseded failures
    prepared: Any = None  # routed and mapped already (events.prepare), e.g. by a worker
    event_json: bytes | None = None  # the event, JSON-encoded, when `event` was not kept


class Result(NamedTuple):
    """The outcome of one event for one action: what every output format prints.

    Immutable, and a tuple: one is built for every event, and a tuple builds in a third of the
    time a frozen dataclass takes.
    """

    source: str
    line: int
    type: str | None
    event: str | None
    action: str | None
    identity: str | None
    status: Status
    code: int | None = None
    error: str | None = None
    # Delivered records only, and only when an earlier failure of this identity may be re-driven:
    # the profile keys it set (empty for a delete), so that re-drive does not undo them.
    supersedes: tuple[str, ...] | None = None
    # A dry run with --show-records: what would be sent (the CleverTap record, or the identity
    # of a delete).
    record: Any = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "source": self.source,
            "line": self.line,
            "type": self.type,
            "event": self.event,
            "action": self.action,
            "identity": self.identity,
            "status": str(self.status),
            "code": self.code,
            "error": self.error,
        }
        if self.record is not None:
            data["record"] = self.record
        return data


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one record (or identity) sent to CleverTap: the client's answer."""

    ok: bool
    code: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """Where an action finds its fields in an event (Segment's "mappings")."""

    identity: str = "userId"  # dotted path of the CleverTap identity
    created_at: str = "timestamp"  # dotted path of the profile's Created At
    attributes: str | None = None  # dotted path of Person Attributes; None: traits, else properties
    raw_traits: bool = False  # True: send traits as they are, without Segment-to-CleverTap keys
    convert_timestamps: bool = True  # ISO-8601 attribute values become epoch seconds
