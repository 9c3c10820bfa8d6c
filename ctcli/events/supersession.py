"""Failures that later deliveries replaced, so that re-driving them never rolls a profile back.

When an event of an identity fails and a later event of that identity is then delivered, the
--failed file gets a marker line after the failure:

    {"ctcli": "superseded", "status": "superseded", "identity": "user-7",
     "superseded_by": {"source": "events.ndjson", "line": 9, "action": "upload", "keys": ["Name"]}}

Every failed line of that identity written before the marker is superseded by it. Re-driving
the file then sends only what no later delivered event replaced:
- a failed upload after which a delete of its identity was delivered is not sent (it would
  re-create the deleted profile);
- a failed upload after which uploads were delivered is sent without the keys they set, and
  without its `ts`; when no key is left it is not sent;
- a failed delete after which anything of its identity was delivered is not sent (deleting now
  would erase what came later).
What is not sent is reported `superseded`, with the line that superseded it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ctcli.models import Action, InputItem

MARKER_STATUS = "superseded"


def marker_line(
    identity: str, source: str, line: int, action: str, keys: Iterable[str] | None
) -> dict[str, Any]:
    """The marker for a delivered record (`keys` None for a delete) superseding earlier failures."""
    return {
        "ctcli": MARKER_STATUS,
        "status": MARKER_STATUS,
        "identity": identity,
        "superseded_by": {
            "source": source,
            "line": line,
            "action": action,
            "keys": None if keys is None else list(keys),
        },
    }


def is_marker(value: Mapping[str, Any]) -> bool:
    return (
        value.get("status") == MARKER_STATUS
        and isinstance(value.get("identity"), str)
        and isinstance(value.get("superseded_by"), dict)
    )


@dataclass(frozen=True, slots=True)
class Supersession:
    """What later delivered events of an identity did after one of its failures."""

    by: str  # where the first of them came from: "events.ndjson line 9"
    deleted: bool  # a later delete was delivered (or a later upload whose keys are unknown)
    keys: frozenset[str]  # keys later uploads set

    def trim(self, action: Action, payload: Any) -> tuple[Any, str | None]:
        """The part of a re-driven record still to send, or why nothing is: (payload, reason)."""
        if action is Action.DELETE:
            return payload, f"superseded by {self.by}: deleting now would undo later events"
        if self.deleted:
            return payload, f"superseded by {self.by}: deleted since, not re-created"
        profile = payload["profileData"]
        kept = {key: value for key, value in profile.items() if key not in self.keys}
        if not kept:
            return payload, f"superseded by {self.by}: every attribute was set since"
        if len(kept) == len(profile):
            return payload, None
        trimmed = {key: value for key, value in payload.items() if key != "ts"}
        trimmed["profileData"] = kept
        return trimmed, None


def _combine(markers: Iterable[Mapping[str, Any]]) -> Supersession | None:
    by = None
    deleted = False
    keys: set[str] = set()
    for marker in markers:
        if by is None:
            by = f"{marker.get('source')} line {marker.get('line')}"
        given = marker.get("keys")
        if marker.get("action") != str(Action.UPLOAD) or not isinstance(given, list):
            deleted = True
        else:
            keys.update(key for key in given if isinstance(key, str))
    if by is None:
        return None
    return Supersession(by=by, deleted=deleted, keys=frozenset(keys))


class Markers:
    """The markers of one failed file, by identity, with the line each stands on."""

    def __init__(self) -> None:
        self._by_identity: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}

    def add(self, line: int, marker: Mapping[str, Any]) -> None:
        identity = marker["identity"]
        self._by_identity.setdefault(identity, []).append((line, marker["superseded_by"]))

    def after(self, identity: str, line: int) -> Supersession | None:
        """What the markers of `identity` below `line` say about a failure on `line`."""
        found = self._by_identity.get(identity)
        if not found:
            return None
        return _combine(marker for at, marker in found if at > line)


def settle(items: Iterable[InputItem], markers: Markers) -> Iterator[InputItem]:
    """Attach to each failed line what the markers say of it; drop the markers themselves."""
    for item in items:
        if item.marker:
            continue
        if item.redrive_identity is not None:
            item.superseded = markers.after(item.redrive_identity, item.line)
        yield item
