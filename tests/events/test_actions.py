"""Tests for ctcli.events.actions: User Upload and Delete User mapping and profile validation."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctcli.events.actions import (
    InvalidEvent,
    identity_of,
    map_delete,
    map_upload,
    validate_profile_data,
)
from ctcli.models import FieldMapping

SETTINGS = settings(max_examples=200, deadline=None)
DEFAULT = FieldMapping()
NOW = 1_700_000_000


def identify(traits: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "identify", "userId": "user-1"}
    if traits is not None:
        event["traits"] = traits
    event.update(fields)
    return event


def profile_of(traits: dict[str, Any], mapping: FieldMapping = DEFAULT) -> dict[str, Any]:
    return map_upload(identify(traits), mapping, now=NOW)["profileData"]


def reason(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidEvent) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --- identity -----------------------------------------------------------------------------


def test_identity_is_user_id_by_default() -> None:
    assert identity_of({"userId": "u-1"}, DEFAULT) == "u-1"


def test_integer_identity_becomes_a_string() -> None:
    assert identity_of({"userId": 1234}, DEFAULT) == "1234"


def test_whole_float_identity_loses_its_decimal_point() -> None:
    assert identity_of({"userId": 1234.0}, DEFAULT) == "1234"


def test_fractional_float_identity_keeps_its_digits() -> None:
    assert identity_of({"userId": 12.5}, DEFAULT) == "12.5"


@pytest.mark.parametrize("value", [None, "", "   ", True, {"id": 1}, ["u"], float("nan")])
def test_unusable_identity_is_none(value: Any) -> None:
    assert identity_of({"userId": value}, DEFAULT) is None


def test_absent_identity_is_none() -> None:
    assert identity_of({}, DEFAULT) is None


def test_identity_follows_a_dotted_path() -> None:
    event = {"traits": {"email": "a@example.com"}}
    assert identity_of(event, FieldMapping(identity="traits.email")) == "a@example.com"


def test_identity_path_may_use_segment_dollar_prefix() -> None:
    assert identity_of({"userId": "u-1"}, FieldMapping(identity="$.userId")) == "u-1"


def test_identity_path_through_a_non_object_is_none() -> None:
    assert identity_of({"traits": "x"}, FieldMapping(identity="traits.email")) is None


# --- map_upload: record shape, identity, ts -----------------------------------------------


def test_upload_record_has_clevertap_shape() -> None:
    event = identify({"plan": "pro"}, timestamp="2006-01-02T18:04:07Z")
    assert map_upload(event, DEFAULT, now=NOW) == {
        "type": "profile",
        "identity": "user-1",
        "ts": 1136225047,
        "profileData": {"plan": "pro"},
    }


def test_upload_with_number_user_id_sends_a_string_identity() -> None:
    event = identify({"plan": "pro"}, userId=42)
    assert map_upload(event, DEFAULT, now=NOW)["identity"] == "42"


def test_upload_without_identity_is_invalid_and_names_the_path() -> None:
    event = {"type": "identify", "traits": {"plan": "pro"}}
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "missing identity: 'userId' is empty or absent"
    )


def test_upload_with_empty_identity_is_invalid() -> None:
    event = identify({"plan": "pro"}, userId="")
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "missing identity: 'userId' is empty or absent"
    )


def test_upload_with_object_identity_says_what_it_is() -> None:
    event = identify({"plan": "pro"}, userId={"id": 1})
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "missing identity: 'userId' is an object, not a string or number"
    )


def test_upload_without_timestamp_uses_now() -> None:
    assert map_upload(identify({"plan": "pro"}), DEFAULT, now=NOW)["ts"] == NOW


def test_upload_with_epoch_millisecond_timestamp_sends_seconds() -> None:
    event = identify({"plan": "pro"}, timestamp=1136225047123)
    assert map_upload(event, DEFAULT, now=NOW)["ts"] == 1136225047


def test_upload_with_unparseable_timestamp_is_invalid() -> None:
    event = identify({"plan": "pro"}, timestamp="yesterday-ish")
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "'timestamp' is not a date: 'yesterday-ish'"
    )


# --- map_upload: where person attributes come from ----------------------------------------


def test_upload_reads_traits() -> None:
    event = identify({"plan": "pro"}, properties={"plan": "free"})
    assert map_upload(event, DEFAULT, now=NOW)["profileData"] == {"plan": "pro"}


def test_upload_falls_back_to_properties_without_traits() -> None:
    event = identify(properties={"plan": "free"})
    assert map_upload(event, DEFAULT, now=NOW)["profileData"] == {"plan": "free"}


def test_upload_falls_back_to_properties_when_traits_are_empty() -> None:
    event = identify({}, properties={"plan": "free"})
    assert map_upload(event, DEFAULT, now=NOW)["profileData"] == {"plan": "free"}


def test_upload_with_empty_traits_and_no_properties_sends_an_empty_profile() -> None:
    assert map_upload(identify({}), DEFAULT, now=NOW)["profileData"] == {}


def test_upload_without_traits_or_properties_is_invalid() -> None:
    assert reason(map_upload, identify(), DEFAULT, now=NOW) == (
        "no person attributes: 'traits' and 'properties' are both missing"
    )


def test_upload_with_traits_not_an_object_is_invalid() -> None:
    assert reason(map_upload, identify(["a"]), DEFAULT, now=NOW) == (
        "person attributes: 'traits' is an array, not an object"
    )


def test_upload_with_properties_not_an_object_is_invalid() -> None:
    event = identify(properties="plan=pro")
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "person attributes: 'properties' is a string, not an object"
    )


# --- map_upload: mapping overrides --------------------------------------------------------


def test_identity_override_reads_traits_email() -> None:
    event = identify({"email": "a@example.com"}, userId=None)
    record = map_upload(event, FieldMapping(identity="traits.email"), now=NOW)
    assert record["identity"] == "a@example.com"


def test_missing_identity_override_names_its_path() -> None:
    mapping = FieldMapping(identity="traits.email")
    assert reason(map_upload, identify({"plan": "pro"}), mapping, now=NOW) == (
        "missing identity: 'traits.email' is empty or absent"
    )


def test_attributes_override_reads_context_traits() -> None:
    event = {
        "type": "track",
        "userId": "u-1",
        "properties": {"item": "book"},
        "context": {"traits": {"plan": "pro"}},
    }
    record = map_upload(event, FieldMapping(attributes="context.traits"), now=NOW)
    assert record["profileData"] == {"plan": "pro"}


def test_missing_attributes_override_is_invalid() -> None:
    mapping = FieldMapping(attributes="context.traits")
    assert reason(map_upload, identify({"plan": "pro"}), mapping, now=NOW) == (
        "no person attributes: 'context.traits' is missing"
    )


def test_created_at_override_reads_properties_created() -> None:
    event = identify({"plan": "pro"}, properties={"created": "2006-01-02T18:04:07Z"})
    record = map_upload(event, FieldMapping(created_at="properties.created"), now=NOW)
    assert record["ts"] == 1136225047


def test_unparseable_created_at_override_names_its_path() -> None:
    event = identify({"plan": "pro"}, properties={"created": "soon"})
    mapping = FieldMapping(created_at="properties.created")
    assert reason(map_upload, event, mapping, now=NOW) == (
        "'properties.created' is not a date: 'soon'"
    )


# --- map_upload: Segment traits to CleverTap keys -----------------------------------------


def test_segment_spec_traits_become_clevertap_keys() -> None:
    traits = {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "phone": "+14155550100",
        "gender": "female",
        "avatar": "https://example.com/ada.png",
    }
    assert profile_of(traits) == {
        "Name": "Ada Lovelace",
        "Email": "ada@example.com",
        "Phone": "+14155550100",
        "Gender": "F",
        "Photo": "https://example.com/ada.png",
    }


def test_first_and_last_name_form_name_and_are_consumed() -> None:
    assert profile_of({"firstName": "Ada", "lastName": "Lovelace"}) == {"Name": "Ada Lovelace"}


def test_first_name_alone_forms_name() -> None:
    assert profile_of({"firstName": "Ada"}) == {"Name": "Ada"}


def test_last_name_alone_forms_name() -> None:
    assert profile_of({"lastName": "Lovelace"}) == {"Name": "Lovelace"}


def test_name_wins_over_first_and_last_name_which_pass_unchanged() -> None:
    traits = {"name": "Countess", "firstName": "Ada", "lastName": "Lovelace"}
    assert profile_of(traits) == {"Name": "Countess", "firstName": "Ada", "lastName": "Lovelace"}


def test_clevertap_spelling_wins_over_segment_spelling() -> None:
    traits = {"email": "old@example.com", "Email": "new@example.com"}
    assert profile_of(traits) == {"Email": "new@example.com"}


def test_clevertap_spelling_wins_whatever_the_key_order() -> None:
    traits = {"Email": "new@example.com", "email": "old@example.com"}
    assert profile_of(traits) == {"Email": "new@example.com"}


def test_null_clevertap_spelling_does_not_hide_segment_spelling() -> None:
    assert profile_of({"Email": None, "email": "a@example.com"}) == {"Email": "a@example.com"}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("m", "M"),
        ("Male", "M"),
        ("MAN", "M"),
        ("f", "F"),
        ("female", "F"),
        ("Woman", "F"),
        ("o", "O"),
        ("other", "O"),
        ("Non-Binary", "O"),
        ("u", "U"),
        ("unknown", "U"),
    ],
)
def test_common_gender_spellings_become_clevertap_codes(given: str, expected: str) -> None:
    assert profile_of({"gender": given}) == {"Gender": expected}


def test_unrecognised_gender_is_reported_as_given() -> None:
    event = identify({"gender": "robot"})
    assert reason(map_upload, event, DEFAULT, now=NOW) == "Gender 'robot' is not M, F, O or U"


def test_birthday_becomes_a_clevertap_date() -> None:
    assert profile_of({"birthday": "1990-05-17"}) == {"DOB": "$D_642902400"}


def test_birthday_before_1970_becomes_a_negative_date() -> None:
    assert profile_of({"birthday": "1969-12-31"}) == {"DOB": "$D_-86400"}


def test_unparseable_birthday_is_invalid_and_names_the_field() -> None:
    event = identify({"birthday": "someday"})
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "'traits.birthday' is not a date: 'someday'"
    )


def test_clevertap_date_string_is_kept_as_dob() -> None:
    assert profile_of({"DOB": "$D_642902400"}) == {"DOB": "$D_642902400"}


def test_other_keys_pass_unchanged() -> None:
    assert profile_of({"plan": "pro", "seats": 3, "trial": False}) == {
        "plan": "pro",
        "seats": 3,
        "trial": False,
    }


def test_raw_traits_are_sent_without_renaming() -> None:
    traits = {"email": "a@example.com", "firstName": "Ada", "gender": "robot"}
    assert profile_of(traits, FieldMapping(raw_traits=True)) == traits


# --- map_upload: value shapes -------------------------------------------------------------


def test_iso_attribute_values_become_epoch_seconds() -> None:
    assert profile_of({"seen": "2006-01-02T18:04:07Z"}) == {"seen": 1136225047}


def test_timestamp_conversion_can_be_turned_off() -> None:
    mapping = FieldMapping(convert_timestamps=False)
    assert profile_of({"seen": "2006-01-02T18:04:07Z"}, mapping) == {"seen": "2006-01-02T18:04:07Z"}


def test_phone_like_and_id_like_strings_are_not_converted() -> None:
    assert profile_of({"alt": "+14155550100", "code": "12345"}) == {
        "alt": "+14155550100",
        "code": "12345",
    }


def test_null_values_are_not_sent() -> None:
    assert profile_of({"plan": None, "seats": 3}) == {"seats": 3}


def test_nested_objects_become_compact_json_with_timestamps_converted() -> None:
    traits = {"address": {"city": "Paris", "since": "2006-01-02"}}
    assert profile_of(traits) == {"address": '{"city":"Paris","since":1136160000}'}


def test_nested_objects_keep_iso_strings_when_conversion_is_off() -> None:
    mapping = FieldMapping(convert_timestamps=False)
    traits = {"address": {"since": "2006-01-02"}}
    assert profile_of(traits, mapping) == {"address": '{"since":"2006-01-02"}'}


def test_arrays_become_arrays_of_strings_without_nulls() -> None:
    traits = {"tags": ["a", 1, 2.0, 2.5, True, None]}
    assert profile_of(traits) == {"tags": ["a", "1", "2", "2.5", "true"]}


def test_iso_strings_inside_arrays_are_not_converted() -> None:
    assert profile_of({"dates": ["2006-01-02"]}) == {"dates": ["2006-01-02"]}


def test_objects_inside_arrays_become_json_strings() -> None:
    assert profile_of({"items": [{"id": 1}]}) == {"items": ['{"id":1}']}


def test_update_operators_pass_as_objects() -> None:
    traits = {"visits": {"$incr": 1}, "tags": {"$add": ["x", 2]}}
    assert profile_of(traits) == {"visits": {"$incr": 1}, "tags": {"$add": ["x", "2"]}}


# --- validate_profile_data ----------------------------------------------------------------


def test_valid_profile_passes() -> None:
    validate_profile_data(
        {
            "Name": "Ada",
            "Email": "ada@example.com",
            "Phone": "+14155550100",
            "Gender": "F",
            "Employed": "Y",
            "Married": "N",
            "Education": "Graduate",
            "MSG-email": True,
            "MSG-push": False,
            "MSG-sms": True,
            "MSG-whatsapp": False,
        }
    )


def test_phone_without_country_code_is_invalid() -> None:
    assert reason(validate_profile_data, {"Phone": "4155550100"}) == (
        "Phone '4155550100' is not +[country code][number]"
    )


@pytest.mark.parametrize("phone", ["+0155550100", "+12345", "+1234567890123456", "+1 415 555 0100"])
def test_phone_outside_e164_shape_is_invalid(phone: str) -> None:
    assert "is not +[country code][number]" in reason(validate_profile_data, {"Phone": phone})


def test_phone_as_a_number_is_invalid() -> None:
    assert reason(validate_profile_data, {"Phone": 14155550100}) == (
        "Phone 14155550100 is not +[country code][number]"
    )


def test_key_over_120_bytes_is_invalid() -> None:
    key = "é" * 61  # 122 bytes, 61 characters
    message = reason(validate_profile_data, {key: 1})
    assert message.endswith("is 122 bytes, over CleverTap's limit of 120 bytes")


def test_key_of_120_bytes_is_valid() -> None:
    validate_profile_data({"k" * 120: 1})


def test_string_value_over_512_bytes_is_invalid_and_names_key_and_size() -> None:
    assert reason(validate_profile_data, {"bio": "€" * 171}) == (
        "'bio' is 513 bytes, over CleverTap's limit of 512 bytes for a value"
    )


def test_string_value_of_512_bytes_is_valid() -> None:
    validate_profile_data({"bio": "x" * 512})


def test_array_item_over_512_bytes_is_invalid() -> None:
    assert "'tags' is 600 bytes" in reason(validate_profile_data, {"tags": ["x" * 600]})


def test_more_than_256_custom_properties_is_invalid_and_says_how_many() -> None:
    data = {f"p{i}": i for i in range(257)}
    assert reason(validate_profile_data, data) == (
        "257 custom properties, over CleverTap's limit of 256 per profile"
    )


def test_standard_keys_do_not_count_as_custom_properties() -> None:
    data: dict[str, Any] = {f"p{i}": i for i in range(256)}
    data.update({"Name": "Ada", "Email": "ada@example.com", "Gender": "F"})
    validate_profile_data(data)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("Gender", "X", "Gender 'X' is not M, F, O or U"),
        ("Employed", "yes", "Employed 'yes' is not Y or N"),
        ("Married", True, "Married True is not Y or N"),
        ("Education", "PhD", "Education 'PhD' is not School, College or Graduate"),
        ("MSG-email", "true", "MSG-email 'true' is not true or false"),
        ("MSG-push", 1, "MSG-push 1 is not true or false"),
        ("MSG-sms", None, "MSG-sms None is not true or false"),
        ("MSG-whatsapp", "no", "MSG-whatsapp 'no' is not true or false"),
    ],
)
def test_enumerated_standard_keys_reject_other_values(key: str, value: Any, message: str) -> None:
    assert reason(validate_profile_data, {key: value}) == message


@pytest.mark.parametrize("email", ["ada", "ada@", "@example.com", "ada@example", "a b@example.com"])
def test_implausible_email_is_invalid(email: str) -> None:
    assert reason(validate_profile_data, {"Email": email}) == (
        f"Email {email!r} is not a valid address"
    )


def test_map_upload_validates_the_profile() -> None:
    event = identify({"phone": "4155550100"})
    assert reason(map_upload, event, DEFAULT, now=NOW) == (
        "Phone '4155550100' is not +[country code][number]"
    )


# --- map_delete ---------------------------------------------------------------------------


def test_delete_returns_the_identity() -> None:
    assert map_delete({"event": "Delete User", "userId": "u-1"}, DEFAULT) == "u-1"


def test_delete_with_number_identity_returns_a_string() -> None:
    assert map_delete({"event": "Delete User", "userId": 7}, DEFAULT) == "7"


def test_delete_without_identity_is_invalid() -> None:
    assert reason(map_delete, {"event": "Delete User"}, DEFAULT) == (
        "missing identity: 'userId' is empty or absent"
    )


def test_delete_follows_the_identity_override() -> None:
    event = {"event": "Delete User", "traits": {"email": "a@example.com"}}
    assert map_delete(event, FieldMapping(identity="traits.email")) == "a@example.com"


# --- properties of map_upload -------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["2006-01-02T18:04:07Z", "+14155550100", "female", "1990-05-17"])
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=10,
)
trait_keys = st.sampled_from(
    ["name", "firstName", "lastName", "email", "phone", "gender", "birthday", "avatar", "Name"]
) | st.text(max_size=8)
events = st.fixed_dictionaries(
    {
        "type": st.just("identify"),
        "userId": st.one_of(st.text(max_size=8), st.integers(), st.none()),
        "traits": st.dictionaries(trait_keys, values, max_size=8),
    },
    optional={
        "timestamp": st.one_of(st.integers(), st.sampled_from(["2006-01-02T18:04:07Z", "nope"])),
        "properties": st.dictionaries(st.text(max_size=6), values, max_size=4),
    },
)


def outcome(event: dict[str, Any], mapping: FieldMapping) -> Any:
    try:
        return map_upload(event, mapping, now=NOW)
    except InvalidEvent as exc:
        return ("invalid", str(exc))


@SETTINGS
@given(event=events, raw=st.booleans())
def test_upload_is_deterministic_and_never_mutates_its_input(event: dict, raw: bool) -> None:
    mapping = FieldMapping(raw_traits=raw)
    before = copy.deepcopy(event)
    first = outcome(event, mapping)
    assert event == before
    assert outcome(event, mapping) == first


@SETTINGS
@given(event=events)
def test_uploaded_profile_values_are_scalars_string_arrays_or_operators(event: dict) -> None:
    result = outcome(event, DEFAULT)
    if isinstance(result, tuple):
        return
    for value in result["profileData"].values():
        assert value is not None
        if isinstance(value, list):
            assert all(isinstance(item, str) for item in value)
        elif isinstance(value, dict):
            assert len(value) == 1 and next(iter(value)).startswith("$")
        else:
            assert isinstance(value, str | int | float | bool)


def test_an_integer_beyond_64_bits_is_invalid_before_sending():
    with pytest.raises(InvalidEvent, match="'big' is a number beyond 64 bits"):
        map_upload({"userId": "a", "traits": {"big": 2**70}}, FieldMapping(), now=1)


def test_an_integer_at_the_64_bit_edge_is_sent_as_is():
    record = map_upload({"userId": "a", "traits": {"big": 2**63}}, FieldMapping(), now=1)
    assert record["profileData"]["big"] == 2**63
