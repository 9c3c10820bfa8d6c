"""ISO-8601 detection and conversion to Unix epoch seconds, and lenient Created At parsing.

The strict rule (CleverTap (Actions)' "Convert Timestamps"): `YYYY-MM-DD`, optionally
`THH:MM`, `:SS`, a fraction of 1 to 9 digits, and `Z` or `±HH:MM` / `±HHMM`; the date must be
a real one. Anything else is not a timestamp and is left alone, so phone numbers and ids survive.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

__all__ = ["convert_timestamps", "iso8601_to_epoch", "parse_created_at"]

# ASCII digits only: `\d` would also accept Arabic-Indic and other Unicode digits.
_ISO_SHAPE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?"
).fullmatch
_from_iso = datetime.fromisoformat
# "YYYY-MM-DD" is 10 characters; the longest form, "YYYY-MM-DDTHH:MM:SS.fffffffff+HH:MM", is 35.
_MIN_LEN = 10
_MAX_LEN = 35

# date(1970, 1, 1).toordinal(): proleptic Gregorian day number of the Unix epoch.
_EPOCH_ORDINAL = 719163

# The range datetime can represent (years 1 to 9999); outside it a value is no date at all.
_MIN_EPOCH = -62135596800
_MAX_EPOCH = 253402300799
# Epoch values this large are milliseconds: 1e11 seconds is the year 5138.
_MILLIS_THRESHOLD = 100_000_000_000

_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)

# RFC 2822 names its North American zones; dateutil alone would drop them with a warning or
# read them as the machine's local zone, which would make results depend on where we run.
_NAMED_ZONES: dict[str, int] = {
    "UT": 0,
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "EST": -5,
    "EDT": -4,
    "CST": -6,
    "CDT": -5,
    "MST": -7,
    "MDT": -6,
    "PST": -8,
    "PDT": -7,
}


def iso8601_to_epoch(value: str) -> int | None:
    """Epoch seconds of a strict ISO-8601 string (fraction floored), or None when it is not one."""
    n = len(value)
    # Cheap rejections first: almost every attribute string fails one of these.
    if n < _MIN_LEN or n > _MAX_LEN or value[4] != "-" or value[7] != "-":
        return None
    if _ISO_SHAPE(value) is None:
        return None
    # The shape is ours (ASCII digits, the forms above); the calendar is datetime's: a day
    # that does not exist, hour 24 or second 60 raise here.
    try:
        moment = _from_iso(value)
    except ValueError:
        return None
    seconds = (
        (moment.toordinal() - _EPOCH_ORDINAL) * 86400
        + moment.hour * 3600
        + moment.minute * 60
        + moment.second
    )  # microseconds are left out: the fraction is non-negative, so this is the floor
    offset = moment.utcoffset()
    if offset is not None:
        if value[-1] != "Z" and value[-2:] > "59":
            return None  # datetime takes +05:60 as 06:00; it is no offset
        seconds -= offset.days * 86400 + offset.seconds  # local = UTC + offset
    return seconds


def convert_timestamps(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `data` where every strict ISO-8601 string is epoch seconds.

    Nested objects (dicts) are walked; arrays and every other value are kept as they are.
    The input is never modified.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if type(value) is str:
            epoch = iso8601_to_epoch(value)
            out[key] = value if epoch is None else epoch
        elif isinstance(value, dict):
            out[key] = convert_timestamps(value)
        else:
            out[key] = value
    return out


def _zone(name: str | None, offset: int | None) -> tzinfo | None:
    """dateutil's `tzinfos` hook: known offsets and RFC 2822 zone names, nothing local."""
    if offset is not None:
        return timezone(timedelta(seconds=offset))
    if name is None:
        return None
    hours = _NAMED_ZONES.get(name.upper())
    if hours is None:
        raise ValueError(f"unknown time zone {name!r}")
    return timezone(timedelta(hours=hours))


# Two defaults that differ in every date field: a string that leaves any of them out
# (dateutil would fill it in from today's date) parses differently under each.
_DEFAULT_A = datetime(2000, 1, 1)
_DEFAULT_B = datetime(2001, 2, 2)


def _parse_text_date(text: str) -> int | None:
    """Epoch seconds of a complete date dateutil understands (naive means UTC), else None."""
    from dateutil import parser  # imported lazily: only odd date formats ever need it

    try:
        first = parser.parse(text, default=_DEFAULT_A, tzinfos=_zone)
        second = parser.parse(text, default=_DEFAULT_B, tzinfos=_zone)
    except (ValueError, OverflowError, TypeError):
        return None
    if first.date() != second.date():
        return None
    if first.tzinfo is None:
        first = first.replace(tzinfo=UTC)
    return (first - _EPOCH) // _ONE_SECOND


def _epoch_from_number(number: float, field: str, shown: Any) -> int:
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"{field!r} is not a date: {shown!r}")
        if abs(number) >= _MILLIS_THRESHOLD:
            number = number / 1000
        seconds = math.floor(number)
    else:
        seconds = number // 1000 if abs(number) >= _MILLIS_THRESHOLD else number
    if seconds < _MIN_EPOCH or seconds > _MAX_EPOCH:
        raise ValueError(f"{field!r} is out of range: {shown!r}")
    return seconds


def parse_created_at(value: Any, *, field: str = "timestamp") -> int:
    """Epoch seconds from a date-like value; ValueError naming `field` when it is not one.

    Accepts strict ISO-8601 first, then RFC 2822 and other complete dates dateutil reads
    (naive means UTC), epoch seconds as int, float or numeric string, and epoch
    milliseconds (absolute value of 1e11 or more). Booleans are not dates.
    """
    if isinstance(value, bool):
        raise ValueError(f"{field!r} is not a date: {value!r}")
    if isinstance(value, int | float):
        return _epoch_from_number(value, field, value)
    if not isinstance(value, str):
        raise ValueError(f"{field!r} is not a date: {value!r}")
    text = value.strip()
    epoch = iso8601_to_epoch(text)
    if epoch is not None:
        return epoch
    if _NUMBER.fullmatch(text):
        number: float = int(text) if text.lstrip("+-").isdigit() else float(text)
        return _epoch_from_number(number, field, value)
    if text:
        epoch = _parse_text_date(text)
        if epoch is not None:
            if epoch < _MIN_EPOCH or epoch > _MAX_EPOCH:
                raise ValueError(f"{field!r} is out of range: {value!r}")
            return epoch
    raise ValueError(f"{field!r} is not a date: {value!r}")
