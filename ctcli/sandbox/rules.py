"""CleverTap's rule book: which records and requests it accepts, and how it refuses the rest.

Pure functions of a request's JSON document, no I/O and no state: its limits of 1000 records per
upload and 100 identities per delete, its per-record error codes with 1-based record numbers, and
the answers it refuses with.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

MAX_UPLOAD_RECORDS = 1000
MAX_DELETE_IDENTITIES = 100

MALFORMED_REQUEST = "Malformed request"
INVALID_CREDENTIALS = "Invalid Credentials"
TOO_MANY_REQUESTS = "Too many concurrent requests"

# (status, body, extra headers)
Answer = tuple[int, bytes, tuple[tuple[str, str], ...]]

# Epoch seconds stay below this until the year 5138; a millisecond timestamp of today is above it.
_MAX_EPOCH_SECONDS = 10**11
_IDENTITY_KEYS = ("identity", "objectId", "FBID", "GPID")
# "Plausible" on purpose: something, one @, a dotted domain not starting with a dot, no spaces.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.][^@\s]*\.[^@\s]+")


def fail_document(code: int, error: str) -> bytes:
    """CleverTap's failure document, encoded."""
    return orjson.dumps({"status": "fail", "error": error, "code": code})


MALFORMED: Answer = (400, fail_document(400, MALFORMED_REQUEST), ())
UNAUTHORIZED: Answer = (401, fail_document(401, INVALID_CREDENTIALS), ())
TOO_MANY: Answer = (429, fail_document(429, TOO_MANY_REQUESTS), ())


class Refused(Exception):
    """CleverTap refuses the request as a whole: 400 with `error`, nothing of it applied."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.answer: Answer = (400, fail_document(400, error), ())


def is_number(value: object) -> bool:
    """An int or a float; `type` rather than isinstance, so True and False are not numbers."""
    return type(value) in (int, float)


# --- one record ------------------------------------------------------------------------------


def _is_email(value: object) -> bool:
    return type(value) is str and len(value) <= 254 and _EMAIL.fullmatch(value) is not None


def _is_phone(value: object) -> bool:
    # ^\+[1-9]\d{6,14}$ with ASCII digits only (str.isdigit would accept other scripts' digits).
    if type(value) is not str or not 8 <= len(value) <= 16 or value[0] != "+":
        return False
    digits = value[1:]
    return digits.isascii() and digits.isdigit() and digits[0] != "0"


def _one_of(*allowed: str) -> Callable[[object], bool]:
    choices = frozenset(allowed)
    return lambda value: type(value) is str and value in choices


# Checked in this order, so a record with several bad fields reports the lowest code, as listed.
_PROFILE_FIELD_RULES: tuple[tuple[str, Callable[[object], bool], int, str], ...] = (
    ("Gender", _one_of("M", "F", "O", "U"), 514, "Gender value invalid"),
    ("Email", _is_email, 515, "Email address invalid"),
    ("Phone", _is_phone, 516, "Phone number invalid"),
    ("Employed", _one_of("Y", "N"), 517, "Employed value invalid"),
    ("Education", _one_of("School", "College", "Graduate"), 518, "Education value invalid"),
    ("Married", _one_of("Y", "N"), 519, "Married value invalid"),
)


def identity_of(record: dict[str, Any]) -> str | None:
    """The identity a record is filed under: its first non-blank identity key, if any."""
    for key in _IDENTITY_KEYS:
        value = record.get(key)
        if type(value) is str and value and not value.isspace():
            return value
    return None


def record_error(record: object) -> tuple[int, str] | None:
    """The first CleverTap per-record error of `record`, or None when it would be accepted."""
    if type(record) is not dict:
        return 512, "Invalid record structure"
    kind = record.get("type")
    if kind == "event":
        name = record.get("evtName")
        if type(name) is not str or not name:
            return 509, "Event name is mandatory"
    elif kind != "profile":
        return 524, "Record type is neither event nor profile"
    if identity_of(record) is None:
        return 523, "Identity is mandatory"
    if "ts" in record:
        ts = record["ts"]
        if type(ts) is not int or ts >= _MAX_EPOCH_SECONDS:
            return 525, "Timestamp is not in epoch seconds"
    if kind == "event":
        data = record.get("evtData")
        if data is not None and type(data) is not dict:
            return 512, "evtData must be an object"
        return None
    data = record.get("profileData")
    if data is None:
        return None
    if type(data) is not dict:
        return 512, "profileData must be an object"
    for key, is_valid, code, error in _PROFILE_FIELD_RULES:
        if key in data:
            value = data[key]
            # An update operator such as {"$delete": 1} is not a value to validate.
            if type(value) is not dict and not is_valid(value):
                return code, error
    return None


# --- an upload -------------------------------------------------------------------------------


class ProfileUpdate(NamedTuple):
    """An accepted profile record: its identity, its profileData and its ts, if it has one."""

    identity: str
    data: dict[str, Any]
    ts: int | None


@dataclass(slots=True)
class UploadVerdict:
    """What CleverTap makes of an upload's records: those it skips and why, and what it applies."""

    records: int
    unprocessed: list[dict[str, Any]]
    updates: list[ProfileUpdate]
    events: int

    @property
    def processed(self) -> int:
        return self.records - len(self.unprocessed)

    def answer(self) -> Answer:
        processed = self.processed
        if not self.unprocessed:
            status = "success"
        elif processed:
            status = "partial"
        else:
            status = "fail"
        answer = {"status": status, "processed": processed, "unprocessed": self.unprocessed}
        return 200, orjson.dumps(answer), ()


def upload_records(document: Any) -> list[Any]:
    """The records of an upload request's document; Refused when there are none or too many."""
    records = document.get("d") if type(document) is dict else None
    if type(records) is not list:
        raise Refused(MALFORMED_REQUEST)
    if len(records) > MAX_UPLOAD_RECORDS:
        raise Refused(
            f"Too many records: at most {MAX_UPLOAD_RECORDS} per request, got {len(records)}"
        )
    return records


def judge_upload(records: list[Any]) -> UploadVerdict:
    """Each record accepted or skipped with its error, as CleverTap answers an upload."""
    unprocessed: list[dict[str, Any]] = []
    updates: list[ProfileUpdate] = []
    events = 0
    for number, record in enumerate(records, start=1):
        problem = record_error(record)
        if problem is not None:
            code, error = problem
            unprocessed.append(
                {
                    "status": "fail",
                    "code": code,
                    "error": f"{error}. Skipped record number : {number}",
                    "record": record,
                }
            )
        elif record["type"] == "profile":
            identity = identity_of(record)
            assert identity is not None  # guaranteed by record_error
            updates.append(
                ProfileUpdate(identity, record.get("profileData") or {}, record.get("ts"))
            )
        else:
            events += 1
    return UploadVerdict(len(records), unprocessed, updates, events)


# --- a delete --------------------------------------------------------------------------------


def delete_names(document: Any) -> list[str]:
    """The identities or guids a delete request's document names; Refused when it is not valid."""
    if type(document) is not dict:
        raise Refused(MALFORMED_REQUEST)
    has_identity, has_guid = "identity" in document, "guid" in document
    if has_identity == has_guid:
        raise Refused("Give exactly one of identity or guid")
    value = document["identity" if has_identity else "guid"]
    names = [value] if type(value) is str else value
    if type(names) is not list or not names:
        raise Refused(MALFORMED_REQUEST)
    if any(type(name) is not str or not name for name in names):
        raise Refused(MALFORMED_REQUEST)
    if len(names) > MAX_DELETE_IDENTITIES:
        raise Refused(
            f"Too many identities: at most {MAX_DELETE_IDENTITIES} per request, got {len(names)}"
        )
    return names
