"""Mappings peers perform (RudderStack's and Segment's CleverTap destinations): the exact record
CleverTap receives for each rule, over real sockets to the sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import ctcli
from ctcli.sandbox import Sandbox
from tests.conftest import SANDBOX_PASSCODE, SANDBOX_PROJECT_ID

TS = "2024-03-01T12:00:00Z"
EPOCH = 1709294400


@pytest.fixture
def recording() -> Iterator[Sandbox]:
    with Sandbox(
        project_id=SANDBOX_PROJECT_ID, passcode=SANDBOX_PASSCODE, keep_records=True
    ) as running:
        yield running


def sent(sandbox: Sandbox, *events: dict[str, Any], mode: str = "upload") -> list[dict]:
    """Send `events` and return the records CleverTap received, in order."""
    results: list[ctcli.Result] = []
    ctcli.run(
        mode,
        list(events),
        project_id=SANDBOX_PROJECT_ID,
        passcode=SANDBOX_PASSCODE,
        endpoint=sandbox.url,
        on_result=results.append,
    )
    assert all(result.status == "ok" for result in results), results
    return sandbox.records()


def profile_of(sandbox: Sandbox, traits: dict[str, Any], **event: Any) -> dict[str, Any]:
    base = {"type": "identify", "userId": "u1", "timestamp": TS, "traits": traits}
    (record,) = sent(sandbox, {**base, **event})
    assert record["identity"] == "u1" and record["ts"] == EPOCH
    return record["profileData"]


@pytest.mark.parametrize(
    ("traits", "name"),
    [
        ({"firstName": "Ada", "lastName": "Lovelace"}, "Ada Lovelace"),
        ({"firstname": "Ada", "lastname": "Lovelace"}, "Ada Lovelace"),
        ({"first_name": "Ada", "last_name": "Lovelace"}, "Ada Lovelace"),
        ({"first_name": " Ada "}, "Ada"),
        ({"lastname": "Lovelace"}, "Lovelace"),
    ],
)
def test_name_parts_in_any_spelling_become_name(env, recording, traits, name):
    assert profile_of(recording, {**traits, "plan": "pro"}) == {"Name": name, "plan": "pro"}


def test_a_name_already_given_wins_over_its_parts(env, recording):
    data = profile_of(recording, {"name": "Countess", "first_name": "Ada", "last_name": "L"})
    assert data == {"Name": "Countess", "first_name": "Ada", "last_name": "L"}


@pytest.mark.parametrize("key", ["customerType", "customer_type"])
def test_customer_type(env, recording, key):
    assert profile_of(recording, {key: "Gold"}) == {"Customer Type": "Gold"}


@pytest.mark.parametrize(
    ("value", "word"),
    [(True, "Y"), (False, "N"), ("yes", "Y"), ("NO", "N"), ("True", "Y"), ("false", "N")],
)
def test_employed_and_married_become_y_or_n(env, recording, value, word):
    assert profile_of(recording, {"employed": value, "married": value}) == {
        "Employed": word,
        "Married": word,
    }


def test_other_employed_values_stay_custom_properties_without_an_error(env, recording):
    assert profile_of(recording, {"employed": "sometimes", "married": 1}) == {
        "employed": "sometimes",
        "married": 1,
    }


@pytest.mark.parametrize(("value", "word"), [("school", "School"), ("GRADUATE", "Graduate")])
def test_education_in_any_case(env, recording, value, word):
    assert profile_of(recording, {"education": value}) == {"Education": word}


def test_other_education_stays_a_custom_property(env, recording):
    assert profile_of(recording, {"education": "PhD"}) == {"education": "PhD"}


def test_a_key_spelled_the_clevertap_way_wins_over_its_segment_twin(env, recording):
    data = profile_of(recording, {"Customer Type": "Gold", "customerType": "Silver"})
    assert data == {"Customer Type": "Gold"}


def test_what_already_worked_still_does(env, recording):
    data = profile_of(
        recording,
        {
            "name": "Ada",
            "email": "ada@example.com",
            "phone": "+14155550100",
            "gender": "female",
            "birthday": "1990-12-10",
            "avatar": "https://example.com/a.png",
        },
    )
    assert data == {
        "Name": "Ada",
        "Email": "ada@example.com",
        "Phone": "+14155550100",
        "Gender": "F",
        "DOB": "$D_660787200",
        "Photo": "https://example.com/a.png",
    }


def test_subscription_groups_and_operators_go_as_objects(env, recording):
    data = profile_of(
        recording,
        {
            "category-unsubscribe": {"email": ["Newsletters", "Promotional"]},
            "category-resubscribe": {"sms": ["Alerts"]},
            "visits": {"$incr": 2},
            "tags": {"$add": ["vip"]},
            "address": {"city": "London"},
        },
    )
    assert data == {
        "category-unsubscribe": {"email": ["Newsletters", "Promotional"]},
        "category-resubscribe": {"sms": ["Alerts"]},
        "visits": {"$incr": 2},
        "tags": {"$add": ["vip"]},
        "address": '{"city":"London"}',  # every other object is still JSON text
    }


def test_a_track_event_without_traits_takes_context_traits_then_properties(env, recording):
    records = sent(
        recording,
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "c1",
            "timestamp": TS,
            "context": {"traits": {"plan": "pro"}},
            "properties": {"total": 30},
        },
        {"type": "track", "event": "Viewed", "userId": "p1", "timestamp": TS,
         "properties": {"total": 30}},
        {"type": "identify", "userId": "t1", "timestamp": TS, "traits": {"plan": "free"},
         "context": {"traits": {"plan": "pro"}}},
    )  # fmt: skip
    assert [(r["identity"], r["profileData"]) for r in records] == [
        ("c1", {"plan": "pro"}),
        ("p1", {"total": 30}),
        ("t1", {"plan": "free"}),
    ]
