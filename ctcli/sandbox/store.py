"""The sandbox's memory: stored profiles, deletions, request statistics and the order checks.

Profiles are keyed by identity and merged as CleverTap merges them, update operators included.
The order checks count the requests that arrived while another request naming one of their
identities was still in flight (which of the two CleverTap applies last is then left to chance)
and the requests that named one identity twice.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ctcli.sandbox.rules import UploadVerdict, identity_of, is_number


def _as_list(value: object) -> list[Any]:
    if value is None:
        return []
    return list(value) if type(value) is list else [value]


def merge_profile_data(stored: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply one upload's profileData to a stored profile, honouring CleverTap's operators.

    Lists are always replaced, never changed in place, so shallow copies handed out by
    `Sandbox.profiles()` never change under their reader.
    """
    for key, value in update.items():
        if type(value) is not dict or len(value) != 1:
            stored[key] = value
            continue
        ((op, arg),) = value.items()
        current = stored.get(key)
        if op == "$add":
            merged = _as_list(current)
            merged.extend(item for item in _as_list(arg) if item not in merged)
            stored[key] = merged
        elif op == "$remove":
            gone = _as_list(arg)
            if type(current) is list:
                stored[key] = [item for item in current if item not in gone]
            elif current in gone:
                del stored[key]
        elif (
            op in ("$incr", "$decr") and is_number(arg) and (is_number(current) or current is None)
        ):
            sign = 1 if op == "$incr" else -1
            stored[key] = (current or 0) + sign * arg
        elif op == "$delete":
            stored.pop(key, None)
        else:
            stored[key] = value


def named_identities(document: Any, *, upload: bool) -> list[str]:
    """Every identity an upload (or delete) request names, once per record, for the order checks."""
    if type(document) is not dict:
        return []
    if upload:
        records = document.get("d")
        if type(records) is not list:
            return []
        names = (identity_of(record) for record in records if type(record) is dict)
        return [name for name in names if name is not None]
    value = document.get("identity", document.get("guid"))
    names_given = [value] if type(value) is str else value
    if type(names_given) is not list:
        return []
    return [name for name in names_given if type(name) is str]


@dataclass(slots=True)
class Stats:
    """Counters since start or reset, as `Sandbox.stats()` describes them."""

    requests: int = 0
    upload_requests: int = 0
    delete_requests: int = 0
    max_in_flight_seen: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    delete_sizes: list[int] = field(default_factory=list)
    status_counts: Counter[int] = field(default_factory=Counter)
    records_processed: int = 0
    records_unprocessed: int = 0
    events_processed: int = 0
    dropped: int = 0
    faults_injected: int = 0
    # Order checks: requests that arrived while another request naming one of their identities
    # was still in flight, and requests that named one identity twice.
    identity_overlaps: int = 0
    repeated_identities: int = 0

    def snapshot(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["batch_sizes"] = list(self.batch_sizes)
        data["delete_sizes"] = list(self.delete_sizes)
        data["status_counts"] = dict(self.status_counts)
        return data


class Store:
    """Profiles, deletions and statistics, and the requests in flight with the identities they name.

    Not locked itself: the Sandbox calls it under its one lock.
    """

    def __init__(self, *, keep_records: bool = False) -> None:
        self.profiles: dict[str, list[Any]] = {}  # identity -> [profileData, ts]
        # Every accepted upload record as it came, when asked for (tests of what was sent).
        self.records: list[dict[str, Any]] | None = [] if keep_records else None
        self.deleted: list[str] = []
        self.stats = Stats()
        self.in_flight = 0
        self._busy: Counter[str] = Counter()  # identities named by requests in flight

    def clear(self) -> None:
        """Forget profiles, deletions and statistics; requests in flight stay counted."""
        self.profiles.clear()
        self.deleted.clear()
        if self.records is not None:
            self.records.clear()
        self.stats = Stats()

    def profile_copies(self) -> dict[str, dict[str, Any]]:
        """identity -> {"profileData": {...}, "ts": int}, each profileData a shallow copy."""
        return {
            identity: {"profileData": dict(data), "ts": ts}
            for identity, (data, ts) in self.profiles.items()
        }

    def admit(self, max_in_flight: int) -> bool:
        """Count a request in flight, unless `max_in_flight` already are."""
        if self.in_flight >= max_in_flight:
            return False
        self.in_flight += 1
        if self.in_flight > self.stats.max_in_flight_seen:
            self.stats.max_in_flight_seen = self.in_flight
        return True

    def mark_busy(self, names: list[str]) -> None:
        """Run the order checks on an admitted request's identities, then mark them in flight."""
        busy = self._busy
        if any(name in busy for name in names):
            self.stats.identity_overlaps += 1
        if len(set(names)) < len(names):
            self.stats.repeated_identities += 1
        busy.update(names)

    def leave(self, names: list[str]) -> None:
        """An admitted request is done: it and its identities are no longer in flight."""
        self.in_flight -= 1
        busy = self._busy
        busy.subtract(names)
        for name in names:
            if busy[name] <= 0:
                del busy[name]

    def apply_upload(self, verdict: UploadVerdict, now: int) -> None:
        """Merge an upload's accepted profiles (new ones stamped `now` without a ts); count it."""
        profiles = self.profiles
        if self.records is not None:
            self.records.extend(
                {"identity": identity, "ts": ts, "profileData": copy.deepcopy(data)}
                for identity, data, ts in verdict.updates
            )
        for identity, data, ts in verdict.updates:
            stored = profiles.get(identity)
            if stored is None:
                stored = profiles[identity] = [{}, now if ts is None else ts]
            elif ts is not None:
                stored[1] = ts
            merge_profile_data(stored[0], data)
        stats = self.stats
        stats.batch_sizes.append(verdict.records)
        stats.records_processed += verdict.processed
        stats.records_unprocessed += len(verdict.unprocessed)
        stats.events_processed += verdict.events

    def apply_delete(self, names: list[str]) -> None:
        """Delete the profiles `names` name; count the request."""
        # The sandbox keys profiles by identity only, so a guid deletes the profile of that
        # identity, if any.
        for name in names:
            self.profiles.pop(name, None)
        self.deleted.extend(names)
        self.stats.delete_sizes.append(len(names))
