"""Subscriptions: which action runs, with which field mapping, on which events.

A subscription pairs a trigger (see `ctcli.events.triggers`) with an action and a field mapping,
as in Segment's "CleverTap (Actions)" destination. The two Quick Setup presets are always there
unless turned off; a profile in the config file may add its own:

    [[profiles.default.subscriptions]]
    trigger = 'type = "track" and event = "Account Closed"'
    action = "delete"
    identity = "traits.email"
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ctcli.errors import ConfigError, TriggerSyntaxError
from ctcli.events.triggers import compile_trigger
from ctcli.models import Action, FieldMapping

__all__ = [
    "PRESETS",
    "Subscription",
    "build_subscriptions",
    "describe",
    "make_subscription",
    "route",
]

ORIGIN_PRESET = "preset"
ORIGIN_PROFILE = "profile"

_PATH_KEYS = ("identity", "created_at", "attributes")
_MAPPING_KEYS = (*_PATH_KEYS, "raw_traits")
_VALID_KEYS = ("trigger", "action", "name", *_MAPPING_KEYS)
_DEFAULT_MAPPING = FieldMapping()


@dataclass(frozen=True, slots=True)
class Subscription:
    """A trigger, the action it runs and where that action finds its fields."""

    name: str
    trigger: str
    action: Action
    mapping: FieldMapping
    matches: Callable[[Mapping[str, Any]], bool] = field(compare=False, repr=False)
    origin: str = ORIGIN_PROFILE  # "preset" | "profile"


def make_subscription(
    name: str,
    trigger: str,
    action: Action,
    mapping: FieldMapping = _DEFAULT_MAPPING,
    *,
    origin: str = ORIGIN_PROFILE,
) -> Subscription:
    """A subscription whose `matches` is compiled from `trigger` (TriggerSyntaxError if bad)."""
    return Subscription(name, trigger, action, mapping, compile_trigger(trigger), origin)


PRESETS: tuple[Subscription, ...] = (
    make_subscription("User Upload", 'type = "identify"', Action.UPLOAD, origin=ORIGIN_PRESET),
    # Segment's code says "Delete User" and its docs "delete user": accept any letter case.
    make_subscription(
        "User Delete", 'lowercase(event) = "delete user"', Action.DELETE, origin=ORIGIN_PRESET
    ),
)


def build_subscriptions(
    custom: Iterable[Mapping[str, Any]],
    *,
    base: FieldMapping = _DEFAULT_MAPPING,
    include_presets: bool = True,
    profile: str = "default",
) -> list[Subscription]:
    """The presets (with the `base` mapping), then the profile's own subscriptions, in order.

    Each entry of `custom` is one `[[profiles.<profile>.subscriptions]]` table. Any problem in it
    raises ConfigError (TriggerSyntaxError for a bad trigger) naming the subscription.
    """
    subscriptions: list[Subscription] = []
    if include_presets:
        subscriptions.extend(replace(preset, mapping=base) for preset in PRESETS)
    if isinstance(custom, Mapping | str | bytes):
        raise ConfigError(
            f"profile {profile!r}: subscriptions must be an array of tables "
            f"([[profiles.{profile}.subscriptions]]), not a single value"
        )
    for number, table in enumerate(custom, start=1):
        where = f"profile {profile!r}, subscription {number}"
        subscriptions.append(_subscription_from_table(table, base, where, number))
    return subscriptions


def _subscription_from_table(
    table: Any, base: FieldMapping, where: str, number: int
) -> Subscription:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table with 'trigger' and 'action' keys")
    unknown = [key for key in table if key not in _VALID_KEYS]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, _VALID_KEYS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"{where}: unknown key {key!r} (valid: {', '.join(sorted(_VALID_KEYS))}){hint}"
        )
    trigger = table.get("trigger")
    if not isinstance(trigger, str) or not trigger.strip():
        raise ConfigError(f"{where}: 'trigger' is required and must be a non-empty string")
    action = _action(table.get("action"), where)
    name = table.get("name", f"subscription {number}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    mapping = replace(base, **_mapping_overrides(table, where))
    try:
        matches = compile_trigger(trigger)
    except TriggerSyntaxError as error:
        reason = getattr(error, "reason", str(error))
        raise TriggerSyntaxError(f"{where}: {reason}", trigger, error.position) from error
    return Subscription(name.strip(), trigger, action, mapping, matches, ORIGIN_PROFILE)


def _action(value: Any, where: str) -> Action:
    valid = ", ".join(repr(str(action)) for action in Action)
    if value is None:
        raise ConfigError(f"{where}: 'action' is required (one of {valid})")
    if isinstance(value, str):
        try:
            return Action(value.strip().lower())
        except ValueError:
            pass
    raise ConfigError(f"{where}: unknown action {value!r} (valid: {valid})")


def _mapping_overrides(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in _PATH_KEYS:
        if key in table:
            overrides[key] = _mapping_path(table[key], key, where)
    if "raw_traits" in table:
        value = table["raw_traits"]
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: 'raw_traits' must be true or false, not {value!r}")
        overrides["raw_traits"] = value
    return overrides


def _mapping_path(value: Any, key: str, where: str) -> str:
    """A dotted event path; Segment's `$.traits.email` spelling is accepted and normalised."""
    problem = f"{where}: {key!r} must be a dotted path into the event such as 'traits.email'"
    if not isinstance(value, str):
        raise ConfigError(f"{problem}, not {value!r}")
    path = value.strip()
    if path.startswith("$."):
        path = path[2:]
    if not path or any(not part or part != part.strip() for part in path.split(".")):
        raise ConfigError(f"{problem}, not {value!r}")
    return path


def route(event: Mapping[str, Any], subscriptions: Sequence[Subscription]) -> list[Subscription]:
    """The subscriptions whose trigger matches `event`, in order; of several with the same action
    and the same mapping only the first is kept, so an event is never sent twice the same way."""
    matched: list[Subscription] = []
    for subscription in subscriptions:
        if subscription.matches(event) and not (matched and _already(subscription, matched)):
            matched.append(subscription)
    return matched


def _already(subscription: Subscription, kept: list[Subscription]) -> bool:
    return any(
        other.action == subscription.action and other.mapping == subscription.mapping
        for other in kept
    )


def describe(subscriptions: Iterable[Subscription]) -> list[dict[str, Any]]:
    """One plain dict per subscription, for `--list-subscriptions` (mapping: non-default fields)."""
    return [
        {
            "name": subscription.name,
            "origin": subscription.origin,
            "trigger": subscription.trigger,
            "action": str(subscription.action),
            "mapping": _overrides_of(subscription.mapping),
        }
        for subscription in subscriptions
    ]


def _overrides_of(mapping: FieldMapping) -> dict[str, Any]:
    return {
        spec.name: getattr(mapping, spec.name)
        for spec in fields(FieldMapping)
        if getattr(mapping, spec.name) != getattr(_DEFAULT_MAPPING, spec.name)
    }
