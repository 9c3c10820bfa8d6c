"""ctcli.events.timestamps: the strict ISO-8601 rule, conversion and Created At parsing."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctcli.events.timestamps import convert_timestamps, iso8601_to_epoch, parse_created_at

SETTINGS = settings(max_examples=200, deadline=None)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- iso8601_to_epoch ---------------------------------------------------------------------


def test_reference_example_is_1136225047() -> None:
    assert iso8601_to_epoch("2006-01-02T18:04:07Z") == 1136225047


def test_date_alone_is_midnight_utc() -> None:
    assert iso8601_to_epoch("2006-01-02") == 1136160000


def test_hours_and_minutes_without_seconds_are_accepted() -> None:
    assert iso8601_to_epoch("2006-01-02T18:04") == 1136225040


def test_time_without_offset_is_utc() -> None:
    assert iso8601_to_epoch("2006-01-02T18:04:07") == 1136225047


def test_fraction_is_truncated() -> None:
    assert iso8601_to_epoch("2006-01-02T18:04:07.999999999Z") == 1136225047


def test_fraction_before_epoch_is_floored_not_rounded_toward_zero() -> None:
    assert iso8601_to_epoch("1969-12-31T23:59:59.5Z") == -1


def test_fraction_of_one_digit_is_accepted() -> None:
    assert iso8601_to_epoch("2006-01-02T18:04:07.1Z") == 1136225047


def test_fraction_of_ten_digits_is_rejected() -> None:
    assert iso8601_to_epoch("2006-01-02T18:04:07.1234567890Z") is None


def test_positive_offset_with_colon_is_subtracted() -> None:
    assert iso8601_to_epoch("2006-01-02T23:34:07+05:30") == 1136225047


def test_negative_offset_without_colon_is_added() -> None:
    assert iso8601_to_epoch("2006-01-02T10:04:07-0800") == 1136225047


def test_offset_after_minutes_only_time_is_accepted() -> None:
    assert iso8601_to_epoch("2006-01-02T23:34+05:30") == 1136225040


def test_leap_day_of_a_leap_year_is_a_date() -> None:
    assert iso8601_to_epoch("2024-02-29") == 1709164800


def test_leap_day_of_year_2000_is_a_date() -> None:
    assert iso8601_to_epoch("2000-02-29T00:00:00Z") == 951782400


def test_leap_day_of_a_common_year_is_not_a_date() -> None:
    assert iso8601_to_epoch("2023-02-29") is None


def test_leap_day_of_year_1900_is_not_a_date() -> None:
    assert iso8601_to_epoch("1900-02-29") is None


@pytest.mark.parametrize(
    "text",
    [
        "2023-02-30",
        "2023-04-31",
        "2023-00-10",
        "2023-13-01",
        "2023-01-00",
        "0000-01-01",
        "2023-12-25T24:00:00Z",
        "2023-12-25T25:30:45",
        "2023-12-25T10:60:00Z",
        "2023-12-25T10:00:60Z",
        "2023-12-25T10:00:00+24:00",
        "2023-12-25T10:00:00+05:60",
    ],
)
def test_impossible_dates_and_times_are_rejected(text: str) -> None:
    assert iso8601_to_epoch(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "+14155550100",
        "12345",
        "",
        "hello",
        "2023-1-01",
        "23-01-01",
        "20230101",
        "2023/01/01",
        "2023-01-01t10:00:00Z",
        "2023-01-01 10:00:00",
        "2023-01-01Z",
        "2023-01-01T10",
        "2023-01-01T10:00.5",
        "2023-01-01T10:00:00.Z",
        "2023-01-01T10:00:00+05",
        "2023-01-01T10:00:00+5:30",
        "2023-01-01T10:00:00z",
        "2023-01-01\n",
        " 2023-01-01",
        "٢٠٢٣-01-01",
    ],
)
def test_strings_outside_the_strict_rule_are_not_timestamps(text: str) -> None:
    assert iso8601_to_epoch(text) is None


@SETTINGS
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    fraction=st.text(alphabet="0123456789", min_size=1, max_size=9),
    colon=st.booleans(),
)
def test_epoch_equals_datetimes_own_computation(
    moment: datetime, offset_minutes: int, fraction: str, colon: bool
) -> None:
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    zone = f"{sign}{hours:02d}{':' if colon else ''}{minutes:02d}"
    text = moment.isoformat(timespec="seconds") + f".{fraction}{zone}"
    aware = moment.replace(microsecond=0, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert iso8601_to_epoch(text) == (aware - EPOCH) // timedelta(seconds=1)


# An independent reading of the rule, used as the oracle for the properties below.
_ORACLE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?"
    r"(?:Z|([+-])(\d{2}):?(\d{2}))?)?",
    re.ASCII,
)


def oracle_epoch(text: str) -> int | None:
    m = _ORACLE.fullmatch(text)
    if m is None:
        return None
    y, mo, d, h, mi, s, sign, oh, om = m.groups()
    if oh is not None and (int(oh) > 23 or int(om) > 59):
        return None
    try:
        moment = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError:
        return None
    offset = 0 if sign is None else (int(oh) * 60 + int(om)) * (1 if sign == "+" else -1)
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    return (aware - EPOCH) // timedelta(seconds=1)


near_iso = st.text(alphabet="0123456789-:T.Z+ ", max_size=36) | st.from_regex(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,10})?)?"
    r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?",
    fullmatch=True,
)


@SETTINGS
@given(text=near_iso)
def test_detection_agrees_with_an_independent_reading_of_the_rule(text: str) -> None:
    assert iso8601_to_epoch(text) == oracle_epoch(text)


# --- convert_timestamps -------------------------------------------------------------------


def test_iso_string_values_become_epoch_seconds() -> None:
    assert convert_timestamps({"seen": "2006-01-02T18:04:07Z"}) == {"seen": 1136225047}


@pytest.mark.parametrize("text", ["+14155550100", "12345", "2023-13-01", "2023-12-25T25:30:45"])
def test_non_iso_strings_are_untouched(text: str) -> None:
    assert convert_timestamps({"value": text}) == {"value": text}


def test_nested_objects_are_walked() -> None:
    data = {"a": {"b": {"when": "2006-01-02T18:04:07Z", "n": 1}}}
    assert convert_timestamps(data) == {"a": {"b": {"when": 1136225047, "n": 1}}}


def test_arrays_are_not_walked() -> None:
    dates = ["2006-01-02T18:04:07Z", {"when": "2006-01-02"}]
    assert convert_timestamps({"dates": dates})["dates"] == [
        "2006-01-02T18:04:07Z",
        {"when": "2006-01-02"},
    ]


def test_non_string_values_are_kept() -> None:
    data = {"n": 20060102, "f": 1.5, "b": True, "none": None}
    assert convert_timestamps(data) == data


def test_conversion_returns_a_new_dict() -> None:
    data = {"when": "2006-01-02"}
    assert convert_timestamps(data) is not data


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | near_iso
json_objects = st.recursive(
    st.dictionaries(st.text(max_size=5), json_scalars, max_size=5),
    lambda children: st.dictionaries(
        st.text(max_size=5),
        json_scalars | children | st.lists(json_scalars, max_size=3),
        max_size=5,
    ),
    max_leaves=20,
)


@SETTINGS
@given(text=near_iso | st.text(max_size=40))
def test_conversion_never_changes_a_string_the_rule_rejects(text: str) -> None:
    converted = convert_timestamps({"value": text})["value"]
    if oracle_epoch(text) is None:
        assert converted is text
    else:
        assert converted == oracle_epoch(text)


@SETTINGS
@given(data=json_objects)
def test_conversion_is_idempotent(data: dict) -> None:
    once = convert_timestamps(data)
    assert convert_timestamps(once) == once


@SETTINGS
@given(data=json_objects)
def test_conversion_never_mutates_its_input(data: dict) -> None:
    before = copy.deepcopy(data)
    convert_timestamps(data)
    assert data == before


# --- parse_created_at ---------------------------------------------------------------------


def test_created_at_reads_strict_iso() -> None:
    assert parse_created_at("2006-01-02T18:04:07Z") == 1136225047


def test_created_at_ignores_surrounding_whitespace() -> None:
    assert parse_created_at(" 2006-01-02T18:04:07Z\n") == 1136225047


def test_created_at_reads_rfc_2822_with_numeric_offset() -> None:
    assert parse_created_at("Mon, 02 Jan 2006 10:04:07 -0800") == 1136225047


def test_created_at_reads_rfc_2822_with_named_zone() -> None:
    assert parse_created_at("Mon, 02 Jan 2006 10:04:07 PST") == 1136225047


def test_created_at_reads_rfc_2822_in_gmt() -> None:
    assert parse_created_at("Mon, 02 Jan 2006 18:04:07 GMT") == 1136225047


def test_created_at_reads_naive_dateutil_dates_as_utc() -> None:
    assert parse_created_at("2006-01-02 18:04:07") == 1136225047


def test_created_at_rejects_unknown_zone_names() -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_created_at("Mon, 02 Jan 2006 18:04:07 XYZ")


def test_created_at_rejects_dates_missing_a_year_or_day() -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_created_at("March 5")


def test_created_at_reads_integer_epoch_seconds() -> None:
    assert parse_created_at(1136225047) == 1136225047


def test_created_at_floors_float_epoch_seconds() -> None:
    assert parse_created_at(1136225047.9) == 1136225047


def test_created_at_reads_numeric_strings() -> None:
    assert parse_created_at("1136225047") == 1136225047


def test_created_at_detects_integer_milliseconds() -> None:
    assert parse_created_at(1136225047123) == 1136225047


def test_created_at_detects_millisecond_strings() -> None:
    assert parse_created_at("1136225047123") == 1136225047


def test_created_at_detects_negative_milliseconds() -> None:
    assert parse_created_at(-1136225047000) == -1136225047


def test_created_at_below_the_millisecond_threshold_is_seconds() -> None:
    assert parse_created_at(99_999_999_999) == 99_999_999_999


@pytest.mark.parametrize("flag", [True, False])
def test_created_at_rejects_booleans(flag: bool) -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_created_at(flag)


@pytest.mark.parametrize("value", [None, [], {}, float("nan"), float("inf"), ""])
def test_created_at_rejects_non_dates(value: object) -> None:
    with pytest.raises(ValueError, match="is not a date"):
        parse_created_at(value)


def test_created_at_error_names_the_field_and_value() -> None:
    with pytest.raises(ValueError) as caught:
        parse_created_at("yesterday-ish")
    assert str(caught.value) == "'timestamp' is not a date: 'yesterday-ish'"


def test_created_at_error_uses_the_given_field_name() -> None:
    with pytest.raises(ValueError) as caught:
        parse_created_at("soon", field="properties.created")
    assert str(caught.value) == "'properties.created' is not a date: 'soon'"


def test_created_at_rejects_values_beyond_year_9999() -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_created_at("1e30")
