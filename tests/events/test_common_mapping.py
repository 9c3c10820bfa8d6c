"""The one-pass mapping of the common event shape answers exactly as the general mapping does.

`map_upload` tries a fused pass first and falls back to the general, multi-step one whenever
the fused pass is unsure. The property: whatever the event, when the fused pass answers, its
record is the general pass's record, and it never answers for an event the general pass refuses.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctcli.events.actions import InvalidEvent, _map_common, _map_general, map_upload
from ctcli.models import FieldMapping

NOW = 1_700_000_000

keys = st.one_of(
    st.sampled_from(
        ["name", "email", "phone", "gender", "avatar", "plan", "city", "Name", "Email",
         "Phone", "Photo", "firstName", "lastName", "birthday", "MSG-email", "logins",
         "signup", "x" * 40, "Gender", "DOB"]
    ),
    st.text(min_size=1, max_size=8),
)  # fmt: skip
iso_texts = st.sampled_from(
    ["2024-03-01T09:15:00Z", "2023-11-05T14:30:00.123+01:00", "2021-06-01", "2023-02-30",
     "2024-13-01", "2023-12-25T10:00:00+05:60", " 2024-03-01", "2024-03-01T24:00:00Z",
     "1999-12-31T23:59:59-0800", "2024-03-01 09:15:00"]
)  # fmt: skip
texts = st.one_of(
    st.text(max_size=20),
    iso_texts,
    st.sampled_from(["ada@example.com", "not-an-email", "+14155550100", "4155550100",
                     "female", "M", "Unknown", "x@y", "é" * 200, "a" * 600]),
)  # fmt: skip
values = st.one_of(
    texts,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.lists(st.one_of(st.text(max_size=5), st.integers()), max_size=3),
    st.dictionaries(st.sampled_from(["$incr", "a", "$add"]), st.integers(), max_size=2),
)
traits = st.dictionaries(keys, values, max_size=8)
identities = st.one_of(
    st.text(max_size=6), st.integers(), st.none(), st.just(" "), st.sampled_from(["u1", "u-2"])
)
stamps = st.one_of(st.none(), st.just(""), iso_texts, st.integers(0, 2**40), st.text(max_size=6),
                   st.just("Fri, 01 Mar 2024 12:00:00 +0000"))  # fmt: skip


@st.composite
def events(draw: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "identify"}
    if draw(st.booleans()):
        event["userId"] = draw(identities)
    if draw(st.integers(0, 9)):
        event["traits"] = draw(traits)
    if draw(st.integers(0, 4)) == 0:
        event["properties"] = draw(st.one_of(traits, st.text(max_size=3)))
    if draw(st.booleans()):
        event["timestamp"] = draw(stamps)
    return event


common_values = {
    "name": st.sampled_from(["Ada", "2024-03-01", "", " "]),
    "email": st.sampled_from(["ada@example.com", "bad@", "2024-03-01", "a" * 130 + "@x.io"]),
    "phone": st.sampled_from(["+14155550100", "+0123", "555-0100", "+1" + "9" * 14]),
    "gender": st.sampled_from(["female", "M", " Male ", "x", "u"]),
    "avatar": st.sampled_from(["https://x/y.png", "2021-06-01"]),
    "plan": st.one_of(texts, st.integers(), st.booleans()),
    "signup": iso_texts,
    "logins": st.integers(min_value=-(2**65), max_value=2**65),
    "ltv": st.floats(allow_nan=True, allow_infinity=True),
    "tags": st.lists(st.text(max_size=3), max_size=2),
    "Name": st.sampled_from(["Ada"]),
    "birthday": st.one_of(iso_texts, st.integers(0, 2**40), st.sampled_from(["$D_1", "x", True])),
    "address": st.dictionaries(
        st.sampled_from(["city", "since", "zip"]),
        st.one_of(iso_texts, st.text(max_size=4), st.integers(), st.floats()),
        max_size=3,
    ),
    "ops": st.dictionaries(st.sampled_from(["$incr", "$add", "$x"]), st.integers(), max_size=1),
    "long": st.sampled_from(["é" * 200, ["é" * 200], {"a": "é" * 300}]),
    "k" * 31: st.just("v"),
}


@st.composite
def common_events(draw: Any) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(sorted(common_values)), min_size=1, max_size=6))
    event: dict[str, Any] = {
        "type": "identify",
        "userId": draw(st.sampled_from(["u1", "user-2", "", " "])),
        "traits": {key: draw(common_values[key]) for key in chosen},
    }
    if draw(st.booleans()):
        event["timestamp"] = draw(st.one_of(iso_texts, st.none(), st.integers(0, 2**35)))
    return event


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event=common_events(), convert=st.booleans())
def test_the_one_pass_mapping_of_common_events_is_the_general_one(event, convert):
    mapping = FieldMapping(convert_timestamps=convert)
    fused = _map_common(event, convert, NOW)
    if fused is not None:
        assert fused == general(event, mapping)


def general(event: dict[str, Any], mapping: FieldMapping) -> dict[str, Any] | str:
    try:
        return _map_general(event, mapping, NOW)
    except InvalidEvent as exc:
        return f"invalid: {exc}"


@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(event=events(), convert=st.booleans())
def test_the_one_pass_mapping_answers_only_as_the_general_one_does(event, convert):
    mapping = FieldMapping(convert_timestamps=convert)
    fused = _map_common(event, convert, NOW)
    if fused is not None:
        assert fused == general(event, mapping)


@settings(max_examples=500, deadline=None)
@given(event=events())
def test_map_upload_is_the_general_mapping_whatever_the_event(event):
    mapping = FieldMapping()
    try:
        record: dict[str, Any] | str = map_upload(event, mapping, now=NOW)
    except InvalidEvent as exc:
        record = f"invalid: {exc}"
    assert record == general(event, mapping)


def test_the_one_pass_mapping_takes_the_common_identify_event():
    event = {
        "type": "identify",
        "userId": "u1",
        "timestamp": "2024-03-01T09:15:00Z",
        "traits": {
            "name": "Ada", "email": "ada@example.com", "phone": "+447700900123",
            "gender": "female", "plan": "pro", "signup": "2023-11-05T14:30:00+01:00",
            "logins": 3, "ltv": 1.5, "verified": True, "avatar": "https://x/y.png",
        },
    }  # fmt: skip
    fused = _map_common(event, True, NOW)
    assert fused is not None
    assert fused == _map_general(event, FieldMapping(), NOW)
    assert fused["profileData"]["Gender"] == "F" and fused["ts"] == 1709284500
    assert not math.isnan(fused["profileData"]["ltv"])
