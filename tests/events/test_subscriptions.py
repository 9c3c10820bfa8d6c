"""Behaviour of subscriptions: presets, profile subscriptions, routing and config errors."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import Any

import pytest

from ctcli.errors import ConfigError, TriggerSyntaxError
from ctcli.events.subscriptions import (
    PRESETS,
    Subscription,
    build_subscriptions,
    describe,
    make_subscription,
    route,
)
from ctcli.models import Action, FieldMapping

ACCOUNT_CLOSED = {
    "trigger": 'type = "track" and event = "Account Closed"',
    "action": "delete",
    "identity": "traits.email",
}


def actions_for(event: dict[str, Any], subscriptions: list[Subscription]) -> list[Action]:
    return [subscription.action for subscription in route(event, subscriptions)]


def config_error(custom: Any, **options: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_subscriptions(custom, **options)
    return caught.value


# -- presets ----------------------------------------------------------------------------------


def test_presets_are_user_upload_then_user_delete() -> None:
    assert [(p.name, p.action, p.origin) for p in PRESETS] == [
        ("User Upload", Action.UPLOAD, "preset"),
        ("User Delete", Action.DELETE, "preset"),
    ]


def test_identify_routes_to_upload() -> None:
    assert actions_for({"type": "identify", "userId": "u1"}, build_subscriptions([])) == [
        Action.UPLOAD
    ]


@pytest.mark.parametrize("name", ["Delete User", "delete user", "DELETE USER"])
def test_delete_user_track_routes_to_delete_in_any_letter_case(name: str) -> None:
    event = {"type": "track", "event": name, "userId": "u1"}
    assert actions_for(event, build_subscriptions([])) == [Action.DELETE]


@pytest.mark.parametrize(
    "event",
    [
        {"type": "page", "name": "Home"},
        {"type": "track", "event": "Order Completed"},
        {"type": "track", "event": "Delete Users"},
        {"type": "track"},
        {},
    ],
)
def test_other_events_route_nowhere(event: dict[str, Any]) -> None:
    assert route(event, build_subscriptions([])) == []


def test_presets_take_the_base_mapping() -> None:
    base = FieldMapping(convert_timestamps=False)
    assert all(s.mapping == base for s in build_subscriptions([], base=base))


def test_presets_can_be_left_out() -> None:
    assert build_subscriptions([], include_presets=False) == []


# -- profile subscriptions --------------------------------------------------------------------


def test_profile_subscription_follows_the_presets() -> None:
    subscriptions = build_subscriptions([ACCOUNT_CLOSED])
    assert [s.origin for s in subscriptions] == ["preset", "preset", "profile"]


def test_profile_subscription_routes_with_its_identity_override() -> None:
    subscriptions = build_subscriptions([ACCOUNT_CLOSED])
    event = {"type": "track", "event": "Account Closed", "traits": {"email": "a@b.c"}}
    (matched,) = route(event, subscriptions)
    assert matched.action is Action.DELETE
    assert matched.mapping.identity == "traits.email"


def test_overrides_are_layered_on_the_base_mapping() -> None:
    base = FieldMapping(convert_timestamps=False, created_at="sentAt")
    (custom,) = build_subscriptions([ACCOUNT_CLOSED], base=base, include_presets=False)
    assert custom.mapping == FieldMapping(
        identity="traits.email", created_at="sentAt", convert_timestamps=False
    )


def test_every_mapping_override_is_applied() -> None:
    table = {
        "trigger": 'type = "track"',
        "action": "upload",
        "identity": "properties.id",
        "created_at": "properties.since",
        "attributes": "properties.profile",
        "raw_traits": True,
    }
    (custom,) = build_subscriptions([table], include_presets=False)
    assert custom.mapping == FieldMapping(
        identity="properties.id",
        created_at="properties.since",
        attributes="properties.profile",
        raw_traits=True,
    )


def test_segment_dollar_paths_are_normalised() -> None:
    table = {**ACCOUNT_CLOSED, "identity": "$.traits.email"}
    (custom,) = build_subscriptions([table], include_presets=False)
    assert custom.mapping.identity == "traits.email"


def test_unnamed_subscription_is_named_after_its_position() -> None:
    (custom,) = build_subscriptions([ACCOUNT_CLOSED], include_presets=False)
    assert custom.name == "subscription 1"


def test_named_subscription_keeps_its_name() -> None:
    (custom,) = build_subscriptions([{**ACCOUNT_CLOSED, "name": "Closed"}], include_presets=False)
    assert custom.name == "Closed"


def test_action_is_case_insensitive() -> None:
    (custom,) = build_subscriptions([{**ACCOUNT_CLOSED, "action": "Delete"}], include_presets=False)
    assert custom.action is Action.DELETE


def test_make_subscription_compiles_its_trigger() -> None:
    subscription = make_subscription("Pages", 'type = "page"', Action.UPLOAD)
    assert subscription.matches({"type": "page"})
    assert not subscription.matches({"type": "track"})


def test_subscription_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        PRESETS[0].name = "x"  # type: ignore[misc]


def test_subscription_equality_ignores_the_compiled_predicate() -> None:
    first = make_subscription("A", 'type = "page"', Action.UPLOAD)
    second = make_subscription("A", 'type = "page"', Action.UPLOAD)
    assert first == second
    assert hash(first) == hash(second)


# -- routing ----------------------------------------------------------------------------------


def test_route_keeps_subscription_order() -> None:
    subscriptions = build_subscriptions(
        [{"trigger": 'type = "identify"', "action": "delete"}], include_presets=True
    )
    assert actions_for({"type": "identify"}, subscriptions) == [Action.UPLOAD, Action.DELETE]


def test_route_dedupes_same_action_and_mapping_keeping_the_first() -> None:
    subscriptions = build_subscriptions(
        [{"trigger": 'traits.plan = "pro"', "action": "upload", "name": "Pro"}]
    )
    matched = route({"type": "identify", "traits": {"plan": "pro"}}, subscriptions)
    assert [s.name for s in matched] == ["User Upload"]


def test_route_keeps_same_action_with_different_mappings() -> None:
    subscriptions = build_subscriptions(
        [{"trigger": 'type = "identify"', "action": "upload", "identity": "traits.email"}]
    )
    matched = route({"type": "identify"}, subscriptions)
    assert [s.mapping.identity for s in matched] == ["userId", "traits.email"]


# -- describe ---------------------------------------------------------------------------------


def test_describe_lists_name_origin_trigger_action_and_overrides() -> None:
    described = describe(build_subscriptions([{**ACCOUNT_CLOSED, "name": "Closed"}]))
    assert described == [
        {
            "name": "User Upload",
            "origin": "preset",
            "trigger": 'type = "identify"',
            "action": "upload",
            "mapping": {},
        },
        {
            "name": "User Delete",
            "origin": "preset",
            "trigger": 'lowercase(event) = "delete user"',
            "action": "delete",
            "mapping": {},
        },
        {
            "name": "Closed",
            "origin": "profile",
            "trigger": ACCOUNT_CLOSED["trigger"],
            "action": "delete",
            "mapping": {"identity": "traits.email"},
        },
    ]


# -- config errors ----------------------------------------------------------------------------


def test_unknown_key_is_named_with_a_suggestion() -> None:
    message = str(config_error([{**ACCOUNT_CLOSED, "identiy": "x"}]))
    assert message.startswith("profile 'default', subscription 1: unknown key 'identiy'")
    assert "did you mean 'identity'?" in message


def test_bad_action_lists_the_valid_ones() -> None:
    message = str(config_error([ACCOUNT_CLOSED, {**ACCOUNT_CLOSED, "action": "remove"}]))
    assert "profile 'default', subscription 2: unknown action 'remove'" in message
    assert "'upload', 'delete'" in message


def test_missing_action_is_an_error() -> None:
    assert "'action' is required" in str(config_error([{"trigger": 'type = "track"'}]))


def test_missing_trigger_is_an_error() -> None:
    assert "'trigger' is required" in str(config_error([{"action": "upload"}]))


def test_trigger_syntax_error_names_profile_subscription_and_position() -> None:
    with pytest.raises(TriggerSyntaxError) as caught:
        build_subscriptions([{"trigger": 'type == "x"', "action": "upload"}], profile="work")
    assert caught.value.position == 5
    assert str(caught.value).startswith(
        "profile 'work', subscription 1: '==' is not FQL, use '=' at position 6"
    )


def test_non_table_entry_is_an_error() -> None:
    assert "must be a table" in str(config_error(["type = 'track'"]))


def test_single_table_instead_of_array_is_an_error() -> None:
    assert "array of tables" in str(config_error(ACCOUNT_CLOSED))


@pytest.mark.parametrize("path", ["", "a..b", 5, ".a", "a. b"])
def test_bad_mapping_path_is_an_error(path: Any) -> None:
    message = str(config_error([{**ACCOUNT_CLOSED, "identity": path}]))
    assert "'identity' must be a dotted path" in message


def test_raw_traits_must_be_a_boolean() -> None:
    message = str(config_error([{**ACCOUNT_CLOSED, "raw_traits": "yes"}]))
    assert "'raw_traits' must be true or false" in message


def test_empty_name_is_an_error() -> None:
    assert "'name' must be a non-empty string" in str(
        config_error([{**ACCOUNT_CLOSED, "name": " "}])
    )
