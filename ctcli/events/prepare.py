"""What becomes of one item: routed to its subscriptions and mapped, without any bookkeeping.

Pure, so that it can run anywhere: in the main process or in a parse worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ctcli.events.actions import InvalidEvent, identity_of, map_delete, map_upload
from ctcli.events.subscriptions import Subscription
from ctcli.models import Action, InputItem, Status

Router = Callable[[InputItem], Sequence[Subscription]]

# What becomes of one item, decided without any bookkeeping, so it can be done anywhere (in a
# worker process too): (type, event name, entries), where entries is one
# (action, identity, status, payload-or-error) per subscription (status None: send the payload),
# or, for an item that settles alone, its status (INVALID, SKIPPED).
Entry = tuple[Action, str | None, Status | None, Any]
Prepared = tuple[str | None, str | None, list[Entry] | Status]


def prepare(
    item: InputItem, router: Router, *, now: int, send: bool, keep_records: bool = False
) -> Prepared:
    """Route and map one item; the records to send, or each result known already.

    With `send` false (a dry run) what would be sent is `dry-run`; with `keep_records` too, its
    entry keeps the record it would be (to show, never to send).
    """
    event = item.event
    if event is None:
        return None, None, Status.INVALID
    kind = event.get("type")
    name = event.get("event")
    kind = kind if type(kind) is str else None
    name = name if type(name) is str else None
    subscriptions = router(item)
    if not subscriptions:
        return kind, name, Status.SKIPPED
    entries: list[Entry] = []
    for subscription in subscriptions:
        action = subscription.action
        try:
            if action is Action.UPLOAD:
                payload: Any = map_upload(event, subscription.mapping, now=now)
                identity = payload["identity"]
            else:
                payload = identity = map_delete(event, subscription.mapping)
        except (InvalidEvent, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, InvalidEvent) else "nested too deeply"
            entries.append(
                (action, identity_of(event, subscription.mapping), Status.INVALID, reason)
            )
            continue
        superseded = item.superseded
        if superseded is not None:
            payload, gone = superseded.trim(action, payload)
            if gone:
                entries.append((action, identity, Status.SUPERSEDED, gone))
                continue
        if send:
            entries.append((action, identity, None, payload))
        else:
            entries.append((action, identity, Status.DRY_RUN, payload if keep_records else None))
    return kind, name, entries
