"""Behaviour of the FQL subset: what triggers match, and how bad triggers are reported."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctcli.errors import ConfigError, TriggerSyntaxError
from ctcli.events.triggers import compile_path, compile_trigger, get_path

EVENT: dict[str, Any] = {
    "type": "track",
    "event": "Order Completed",
    "userId": "user-1",
    "properties": {
        "plan": "Pro",
        "total": 42,
        "ratio": 0.5,
        "vip": True,
        "trial": False,
        "coupon": None,
        "tags": ["a", "b"],
        "address": {"city": "Pune"},
        "count-ish": 3,
    },
    "context": {"app": {"name": "shop"}},
}


def matches(trigger: str, event: dict[str, Any] | None = None) -> bool:
    return compile_trigger(trigger)(EVENT if event is None else event)


def syntax_error(trigger: str) -> TriggerSyntaxError:
    with pytest.raises(TriggerSyntaxError) as caught:
        compile_trigger(trigger)
    return caught.value


# -- get_path ---------------------------------------------------------------------------------


def test_get_path_reads_a_top_level_field() -> None:
    assert get_path(EVENT, "userId") == "user-1"


def test_get_path_reads_a_nested_field() -> None:
    assert get_path(EVENT, "context.app.name") == "shop"


def test_get_path_of_a_missing_field_is_none() -> None:
    assert get_path(EVENT, "context.device.id") is None


def test_get_path_through_a_non_object_is_none() -> None:
    assert get_path(EVENT, "properties.plan.length") is None
    assert get_path(EVENT, "properties.tags.0") is None


def test_get_path_accepts_segment_mapping_prefix() -> None:
    assert get_path(EVENT, "$.properties.plan") == "Pro"


def test_compile_path_is_reused_for_the_same_path() -> None:
    assert compile_path("properties.total") is compile_path("properties.total")


# -- comparisons ------------------------------------------------------------------------------


def test_equal_string() -> None:
    assert matches('type = "track"')
    assert not matches('type = "identify"')


def test_single_quoted_string() -> None:
    assert matches("type = 'track'")


def test_not_equal() -> None:
    assert matches('type != "identify"')
    assert not matches('type != "track"')


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ("properties.total < 43", True),
        ("properties.total < 42", False),
        ("properties.total <= 42", True),
        ("properties.total > 41", True),
        ("properties.total > 42", False),
        ("properties.total >= 42", True),
        ("properties.ratio < 1", True),
        ("properties.ratio > -1.5", True),
        ("properties.total > 1e1", True),
    ],
)
def test_number_ordering(trigger: str, expected: bool) -> None:
    assert matches(trigger) is expected


def test_integer_equals_float_of_same_value() -> None:
    assert matches("properties.total = 42.0")


def test_string_ordering_is_by_code_point() -> None:
    assert matches('properties.plan < "Q"')
    assert not matches('properties.plan < "Pa"')


def test_constant_on_the_left_is_mirrored() -> None:
    assert matches("41 < properties.total")
    assert not matches("43 <= properties.total")


def test_field_compared_with_field() -> None:
    event = {"a": {"x": [1, {"y": 2}]}, "b": {"x": [1, {"y": 2}]}, "c": 1, "d": 2}
    assert matches("a = b", event)
    assert matches("c < d", event)
    assert not matches("a != b", event)


def test_boolean_literals() -> None:
    assert matches("properties.vip = true")
    assert matches("properties.trial = false")
    assert not matches("properties.vip = false")


def test_null_literal_matches_explicit_null() -> None:
    assert matches("properties.coupon = null")


def test_negative_number_literal() -> None:
    assert matches("properties.x = -3", {"properties": {"x": -3}})


def test_string_escapes() -> None:
    assert matches(r'e = "a\"b\\c\n\u00e9"', {"e": 'a"b\\c\né'})


# -- missing fields and type mismatches -------------------------------------------------------


def test_missing_field_is_null() -> None:
    assert matches("properties.nothing = null")


def test_not_equal_null_tests_presence() -> None:
    assert matches("properties.plan != null")
    assert not matches("properties.nothing != null")


def test_explicit_null_is_not_present() -> None:
    assert not matches("properties.coupon != null")


def test_step_through_non_object_is_null() -> None:
    assert matches("properties.plan.name = null")


def test_different_types_are_not_equal() -> None:
    assert not matches('properties.total = "42"')
    assert matches('properties.total != "42"')


def test_booleans_are_not_numbers() -> None:
    assert not matches("properties.vip = 1")
    assert matches("properties.vip != 1")
    assert not matches("properties.trial = 0")
    assert not matches("properties.vip > 0")


def test_ordering_across_types_is_false() -> None:
    assert not matches('properties.total < "z"')
    assert not matches("properties.plan > 1")
    assert not matches("properties.nothing < 1")
    assert not matches("properties.nothing >= 1")


def test_null_and_booleans_have_no_order() -> None:
    assert not matches("properties.coupon <= null")
    assert not matches("properties.vip >= true")


def test_equal_containers_compare_strictly() -> None:
    event = {"a": [1, True], "b": [True, 1], "c": [1, True]}
    assert matches("a = c", event)
    assert not matches("a = b", event)


# -- boolean logic ----------------------------------------------------------------------------


def test_and() -> None:
    assert matches('type = "track" and properties.total = 42')
    assert not matches('type = "track" and properties.total = 1')


def test_or() -> None:
    assert matches('type = "identify" or properties.total = 42')
    assert not matches('type = "identify" or properties.total = 1')


def test_not() -> None:
    assert matches('!type = "identify"')
    assert not matches('!(type = "track")')


def test_double_not_cancels() -> None:
    assert matches('!!type = "track"')


def test_and_binds_tighter_than_or() -> None:
    # Read as: identify or (track and total = 1), which is false.
    assert not matches('type = "identify" or type = "track" and properties.total = 1')
    # Read as: (track) or (identify and ...), which is true.
    assert matches('type = "track" or type = "identify" and properties.total = 1')


def test_parentheses_override_precedence() -> None:
    assert not matches('(type = "track" or type = "identify") and properties.total = 1')


def test_long_chains_of_and_and_or() -> None:
    assert matches(" and ".join(['type = "track"'] * 5))
    assert matches(" or ".join(['type = "page"'] * 4 + ['type = "track"']))
    assert not matches(" and ".join(['type = "track"'] * 4 + ['type = "page"']))


# -- functions --------------------------------------------------------------------------------


def test_contains_finds_a_substring() -> None:
    assert matches('contains(event, "Completed")')
    assert not matches('contains(event, "completed")')


def test_contains_is_false_for_non_strings() -> None:
    assert not matches('contains(properties.tags, "a")')
    assert not matches('contains(properties.total, "4")')
    assert not matches('contains(properties.nothing, "")')


def test_match_is_a_whole_string_glob() -> None:
    assert matches('match(event, "Order*")')
    assert matches('match(event, "*Completed")')
    assert not matches('match(event, "Order")')


def test_match_question_mark_is_one_character() -> None:
    assert matches('match(userId, "user-?")')
    assert not matches('match(userId, "user?")')


def test_match_is_case_sensitive() -> None:
    assert not matches('match(event, "order*")')


def test_match_treats_regex_characters_literally() -> None:
    assert matches('match(e, "a.b+(c)*")', {"e": "a.b+(c)xyz"})
    assert not matches('match(e, "a.b")', {"e": "aXb"})


def test_match_escaped_wildcard_is_literal() -> None:
    assert matches(r'match(e, "5\*")', {"e": "5*"})
    assert not matches(r'match(e, "5\*")', {"e": "55"})


def test_match_is_false_for_non_strings() -> None:
    assert not matches('match(properties.total, "*")')


def test_lowercase_compares_case_insensitively() -> None:
    assert matches('lowercase(event) = "order completed"')


def test_lowercase_leaves_non_strings_unchanged() -> None:
    assert matches("lowercase(properties.total) = 42")


def test_lowercase_inside_contains() -> None:
    assert matches('contains(lowercase(event), "completed")')


@pytest.mark.parametrize(
    ("field", "kind"),
    [
        ("properties.plan", "string"),
        ("properties.total", "number"),
        ("properties.ratio", "number"),
        ("properties.vip", "boolean"),
        ("properties.coupon", "null"),
        ("properties.nothing", "null"),
        ("properties.address", "object"),
        ("properties.tags", "array"),
    ],
)
def test_typeof_names_the_json_type(field: str, kind: str) -> None:
    assert matches(f'typeof({field}) = "{kind}"')


def test_field_names_may_hold_hyphens_and_dollars() -> None:
    assert matches("properties.count-ish = 3")
    assert matches("$x = 1", {"$x": 1})


def test_constant_comparison_is_folded() -> None:
    assert matches("1 = 1")
    assert not matches('"a" = 1')


# -- syntax errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "position", "message"),
    [
        ("type =", 6, "expected a value after '='"),
        ("type = ", 7, "expected a value after '='"),
        (
            'foo(event) = "x"',
            0,
            "unknown function 'foo' (known: contains, match, lowercase, typeof)",
        ),
        ('type == "track"', 5, "'==' is not FQL, use '='"),
        ('type = "track', 7, "unterminated string"),
        ('(type = "track"', 0, "unbalanced parenthesis"),
        ('type = "track")', 14, "unbalanced parenthesis"),
        ('type = "track" event = "x"', 15, "join conditions with 'and' or 'or'"),
        ("", 0, "empty trigger"),
        ("   ", 3, "empty trigger"),
        ("properties.vip", 14, "expected a comparison"),
        ('type = "track" and', 18, "expected a condition after 'and'"),
        ('type = "a" && event = "b"', 11, "'&&' is not FQL, use 'and'"),
        ('type = "a" || event = "b"', 11, "'||' is not FQL, use 'or'"),
        ('type = "a" AND event = "b"', 11, "'AND' is not FQL, use 'and'"),
        ('not type = "a"', 0, "'not' is not FQL, use '!'"),
        ("type <> 1", 5, "'<>' is not FQL, use '!='"),
        ("x = True", 4, "'True' is not FQL, use 'true'"),
        ("x = 1.2.3", 4, "invalid number"),
        ("x = #", 4, "unexpected character '#'"),
        ("properties. = 1", 11, "expected a field name after '.'"),
        ("a = 1 = 2", 6, "comparisons cannot be chained"),
        ("contains(event, 5)", 16, 'second argument of contains() must be a "string"'),
        ("contains(event)", 14, "contains() takes two arguments"),
        ("lowercase() = 1", 10, "lowercase() takes one argument"),
        ("lowercase(event)", 16, "expected a comparison"),
        ('contains(event, "a") = true', 21, "already true or false"),
        ('x = match(event, "a")', 4, "is a condition, not a value"),
        ("()", 1, "empty parentheses"),
        (r'x = "a\q"', 6, "unknown escape"),
        (r'x = "\u12"', 5, "4 hexadecimal digits"),
        ("= 1", 0, "expected a field or value before '='"),
        ("!", 1, "expected a condition after '!'"),
        ("x = (1)", 4, "expected a value after '='"),
    ],
)
def test_syntax_error_position_and_message(trigger: str, position: int, message: str) -> None:
    error = syntax_error(trigger)
    assert error.position == position
    assert message in str(error)
    assert error.text == trigger


def test_syntax_error_is_a_config_error() -> None:
    assert isinstance(syntax_error("type ="), ConfigError)


def test_syntax_error_keeps_the_bare_reason() -> None:
    assert syntax_error("type =").reason == "expected a value after '='"  # type: ignore[attr-defined]


def test_unclosed_paren_points_at_the_outermost_unclosed_one() -> None:
    assert syntax_error("x = 1 and ((x = 1)").position == 10


def test_deep_nesting_is_a_syntax_error_not_a_crash() -> None:
    error = syntax_error("(" * 500 + "x = 1" + ")" * 500)
    assert "nested" in str(error)


def test_huge_integer_literal_is_a_syntax_error() -> None:
    assert "too long" in str(syntax_error("x = " + "9" * 5000))


def test_many_nots_do_not_recurse() -> None:
    assert matches("!" * 2000 + 'type = "track"')


# -- properties -------------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "type", "event", "x"]), inner, max_size=3)
    ),
    max_leaves=12,
)
EVENTS = st.dictionaries(
    st.sampled_from(["type", "event", "userId", "properties", "traits", "a", "b"]),
    JSON_VALUES,
    max_size=6,
)

VALID_TRIGGERS = [
    'type = "identify"',
    'lowercase(event) = "delete user"',
    'type = "track" and event = "Account Closed"',
    "properties.a > 1 or properties.a <= -2.5",
    'properties.a < "m"',
    "!(traits.x != null) or a = b",
    'contains(event, "x") and match(userId, "u*?")',
    'typeof(properties) = "object" and typeof(a.b) != "array"',
    "a = b and a != b or a < b or a >= b",
    'contains(lowercase(properties.a), "x")',
    "traits.x = true or traits.x = null or traits.x = 0",
]


@settings(max_examples=200, deadline=None)
@given(event=EVENTS)
def test_valid_triggers_never_raise_and_return_bools(event: dict[str, Any]) -> None:
    for trigger in VALID_TRIGGERS:
        assert type(compile_trigger(trigger)(event)) is bool


@settings(max_examples=200, deadline=None)
@given(event=EVENTS)
def test_not_equal_is_the_negation_of_equal(event: dict[str, Any]) -> None:
    for left, right in [("a", "b"), ("a", "1"), ("a", '"x"'), ("a", "null"), ("a", "true")]:
        equal = compile_trigger(f"{left} = {right}")(event)
        assert compile_trigger(f"{left} != {right}")(event) is (not equal)


FQL_PIECES = st.sampled_from(
    [
        "type",
        "event",
        "properties.a",
        "a.b.c",
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        "==",
        "!",
        "and",
        "or",
        "(",
        ")",
        ",",
        '"x"',
        "'y'",
        '"',
        "\\",
        "1",
        "-2.5",
        "true",
        "null",
        "contains",
        "match",
        "lowercase",
        "typeof",
        "foo",
        " ",
        ".",
        "$",
        "*",
        "AND",
    ]
)


@settings(max_examples=200, deadline=None)
@given(text=st.lists(FQL_PIECES, max_size=12).map("".join) | st.text(max_size=30))
def test_compile_trigger_either_compiles_or_raises_a_syntax_error(text: str) -> None:
    try:
        test = compile_trigger(text)
    except TriggerSyntaxError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert type(test(EVENT)) is bool
