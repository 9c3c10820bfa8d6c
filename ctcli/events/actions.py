"""User Upload and Delete User: a Segment event becomes a CleverTap record, or a reason why not.

Everything here is a pure function of the event and its FieldMapping, so the pipeline can call
it once per event and report `str(InvalidEvent)` to the user exactly as raised.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import orjson

from ctcli.events.timestamps import convert_timestamps, iso8601_to_epoch, parse_created_at
from ctcli.models import FieldMapping

__all__ = [
    "STANDARD_KEYS",
    "InvalidEvent",
    "identity_of",
    "map_delete",
    "map_upload",
    "validate_profile_data",
]


class InvalidEvent(ValueError):
    """An event that cannot become a CleverTap record; str(exc) is the reason users see."""


# CleverTap's own profile keys: they do not count against the custom-property limit.
STANDARD_KEYS: frozenset[str] = frozenset(
    {
        "Name",
        "Email",
        "Phone",
        "Gender",
        "DOB",
        "Photo",
        "Age",
        "Employed",
        "Married",
        "Education",
        "Customer Type",
        "MSG-email",
        "MSG-push",
        "MSG-sms",
        "MSG-whatsapp",
    }
)

# Segment spec traits (and the spellings peers map) with a CleverTap standard key; name parts,
# birthday and the enumerated keys get special handling below.
_SEGMENT_TO_CLEVERTAP: dict[str, str] = {
    "name": "Name",
    "email": "Email",
    "phone": "Phone",
    "gender": "Gender",
    "birthday": "DOB",
    "avatar": "Photo",
    "customerType": "Customer Type",
    "customer_type": "Customer Type",
    "employed": "Employed",
    "married": "Married",
    "education": "Education",
}
# The spellings of a first and of a last name, in the order they are looked for.
_FIRST_NAMES = ("firstName", "firstname", "first_name")
_LAST_NAMES = ("lastName", "lastname", "last_name")
_NAME_PARTS = frozenset(_FIRST_NAMES + _LAST_NAMES)
_YES_NO: dict[str, str] = {"yes": "Y", "true": "Y", "y": "Y", "no": "N", "false": "N", "n": "N"}
_EDUCATION: dict[str, str] = {"school": "School", "college": "College", "graduate": "Graduate"}
# CleverTap's subscription-group keys: their value is an object it reads, e.g.
# {"email": ["Newsletters"]}, not a custom property to be stored as JSON text.
_SUBSCRIPTION_KEYS = frozenset({"category-unsubscribe", "category-resubscribe"})

_GENDERS: dict[str, str] = {
    "m": "M",
    "male": "M",
    "man": "M",
    "f": "F",
    "female": "F",
    "woman": "F",
    "o": "O",
    "other": "O",
    "non-binary": "O",
    "nonbinary": "O",
    "non binary": "O",
    "u": "U",
    "unknown": "U",
}

# Values CleverTap accepts for its enumerated standard keys, with the wording of our message.
_ENUMS: dict[str, tuple[frozenset[str], str]] = {
    "Gender": (frozenset({"M", "F", "O", "U"}), "M, F, O or U"),
    "Employed": (frozenset({"Y", "N"}), "Y or N"),
    "Married": (frozenset({"Y", "N"}), "Y or N"),
    "Education": (frozenset({"School", "College", "Graduate"}), "School, College or Graduate"),
}
_BOOLEAN_KEYS = frozenset({"MSG-email", "MSG-push", "MSG-sms", "MSG-whatsapp"})
# Update operators CleverTap applies to a property instead of storing the object.
_OPERATORS = frozenset({"$add", "$remove", "$incr", "$decr", "$delete"})

_PHONE = re.compile(r"\+[1-9][0-9]{6,14}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")

_MAX_KEY_BYTES = 120
_MAX_VALUE_BYTES = 512
_MAX_CUSTOM = 256
# A str of n characters is at most 4n bytes in UTF-8, so shorter ones cannot be over a limit
# and need no encoding to find out.
_KEY_SAFE_CHARS = _MAX_KEY_BYTES // 4
_VALUE_SAFE_CHARS = _MAX_VALUE_BYTES // 4


@lru_cache(maxsize=256)
def _path_parts(path: str) -> tuple[str, ...]:
    """The keys of a dotted path; a leading `$.` (Segment's JSONPath spelling) is allowed."""
    if path.startswith("$."):
        path = path[2:]
    return tuple(path.split("."))


def _lookup(event: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, or None when any step is missing."""
    current: Any = event
    for part in _path_parts(path):
        # Events are parsed JSON, so the exact-type test settles nearly every step.
        if type(current) is dict or isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.isascii() and part.isdigit():
            index = int(part)
            current = current[index] if index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def _number_text(value: int | float) -> str | None:
    """A number as CleverTap text: whole floats without `.0`; NaN and infinities have none."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def _identity_from(raw: Any) -> str | None:
    if isinstance(raw, str):
        return raw if raw and not raw.isspace() else None
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return _number_text(raw)
    return None


def identity_of(event: Mapping[str, Any], mapping: FieldMapping) -> str | None:
    """The CleverTap identity at `mapping.identity`, as text; None when missing or unusable."""
    return _identity_from(_lookup(event, mapping.identity))


def _require_identity(event: Mapping[str, Any], mapping: FieldMapping) -> str:
    raw = _lookup(event, mapping.identity)
    identity = _identity_from(raw)
    if identity is not None:
        return identity
    if raw is None or isinstance(raw, str):
        raise InvalidEvent(f"missing identity: {mapping.identity!r} is empty or absent")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise InvalidEvent(
            f"missing identity: {mapping.identity!r} is {raw!r}, not a usable number"
        )
    raise InvalidEvent(
        f"missing identity: {mapping.identity!r} is {_describe(raw)}, not a string or number"
    )


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def map_delete(event: Mapping[str, Any], mapping: FieldMapping) -> str:
    """The identity to delete; InvalidEvent when the event has none."""
    return _require_identity(event, mapping)


def _person_attributes(
    event: Mapping[str, Any], mapping: FieldMapping
) -> tuple[Mapping[str, Any], str]:
    """The attributes object and the path it came from, for messages."""
    if mapping.attributes:
        found = _lookup(event, mapping.attributes)
        if found is None:
            raise InvalidEvent(f"no person attributes: {mapping.attributes!r} is missing")
        if not isinstance(found, Mapping):
            raise InvalidEvent(
                f"person attributes: {mapping.attributes!r} is {_describe(found)}, not an object"
            )
        return found, mapping.attributes
    traits = event.get("traits")
    properties = event.get("properties")
    if traits is not None and not isinstance(traits, Mapping):
        raise InvalidEvent(f"person attributes: 'traits' is {_describe(traits)}, not an object")
    if properties is not None and not isinstance(properties, Mapping):
        raise InvalidEvent(
            f"person attributes: 'properties' is {_describe(properties)}, not an object"
        )
    if traits:
        return traits, "traits"
    # Segment puts the user's traits in context.traits on track and page calls; failing those,
    # its own default reads properties.
    context = event.get("context")
    context_traits = context.get("traits") if isinstance(context, Mapping) else None
    if isinstance(context_traits, Mapping) and context_traits:
        return context_traits, "context.traits"
    if traits is None and properties is None:
        raise InvalidEvent("no person attributes: 'traits' and 'properties' are both missing")
    if properties or traits is None:
        return properties or {}, "properties"
    return traits, "traits"


def _as_date(value: Any, field: str) -> Any:
    """A CleverTap date value `$D_<epoch seconds>`; one already in that form is kept."""
    if isinstance(value, str) and value.startswith("$D_"):
        return value
    try:
        return f"$D_{parse_created_at(value, field=field)}"
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None


def _gender(value: Any) -> Any:
    if isinstance(value, str):
        return _GENDERS.get(value.strip().lower(), value)
    return value


def _first_text(attributes: Mapping[str, Any], spellings: tuple[str, ...]) -> str | None:
    for key in spellings:
        value = attributes.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _full_name(attributes: Mapping[str, Any]) -> str | None:
    parts = [_first_text(attributes, _FIRST_NAMES), _first_text(attributes, _LAST_NAMES)]
    joined = " ".join(part for part in parts if part)
    return joined or None


def _yes_no(value: Any) -> str | None:
    """Employed and Married as CleverTap keeps them: Y or N; None when `value` says neither."""
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, str):
        return _YES_NO.get(value.strip().lower())
    return None


def _education(value: Any) -> str | None:
    return _EDUCATION.get(value.strip().lower()) if isinstance(value, str) else None


# Standard keys whose Segment-side value must be one of CleverTap's words; when it is not, the
# trait stays a custom property under its own name rather than making the event invalid.
_ENUM_READERS = {"Employed": _yes_no, "Married": _yes_no, "Education": _education}


def _to_clevertap_keys(attributes: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Segment spec traits renamed to CleverTap standard keys; null values dropped.

    A key already in CleverTap spelling wins over its Segment twin, which is then dropped.
    """
    full_name = None
    if attributes.get("Name") is None and attributes.get("name") is None:
        full_name = _full_name(attributes)
    out: dict[str, Any] = {}
    for given, value in attributes.items():
        if value is None:
            continue
        key = _SEGMENT_TO_CLEVERTAP.get(given, given)
        if key != given and attributes.get(key) is not None:
            continue
        if full_name is not None and given in _NAME_PARTS:
            out["Name"] = full_name
            continue
        if key == "Gender":
            value = _gender(value)
        elif key == "DOB":
            value = _as_date(value, f"{source}.{given}")
        elif key != given and key in _ENUM_READERS:
            word = _ENUM_READERS[key](value)
            if word is None:
                key = given  # not one of CleverTap's words: kept as it is, a custom property
            else:
                value = word
        out[key] = value
    return out


# One encoder for the run: json.dumps with options builds a new one on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str)


def _compact_json(value: Any) -> str:
    return _COMPACT.encode(value)


def _item_text(item: Any) -> str | None:
    """One array element as CleverTap multi-value text (None: leave it out)."""
    if isinstance(item, str):
        return item
    if item is None:
        return None
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return _number_text(item)
    return _compact_json(item)


def _strings(items: list[Any]) -> list[str]:
    return [text for text in map(_item_text, items) if text is not None]


def _is_operator(value: Mapping[str, Any]) -> bool:
    return len(value) == 1 and next(iter(value)) in _OPERATORS


def is_operator(value: Any) -> bool:
    """Whether an attribute value is an update operator ({"$incr": 1}, ...), applied, not set."""
    return type(value) is dict and _is_operator(value)


def _profile_value(value: Any, convert: bool) -> Any:
    """An attribute value in the shapes CleverTap stores: scalars, string arrays, operators."""
    if isinstance(value, str):
        if convert:
            epoch = iso8601_to_epoch(value)
            if epoch is not None:
                return epoch
        return value
    if isinstance(value, list):
        return _strings(value)
    if isinstance(value, Mapping):
        if _is_operator(value):
            ((operator, operand),) = value.items()
            if isinstance(operand, list):
                return {operator: _strings(operand)}
            return {operator: operand}
        return _compact_json(convert_timestamps(value) if convert else value)
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN or Infinity; CleverTap would refuse the whole request.
        return None
    return value


def _subscription_groups(value: Mapping[str, Any]) -> dict[str, Any]:
    """category-unsubscribe / -resubscribe: {channel: [group, ...]}, groups as text."""
    return {
        str(channel): _strings(groups) if isinstance(groups, list) else groups
        for channel, groups in value.items()
    }


def _profile_data(attributes: Mapping[str, Any], convert: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in _SUBSCRIPTION_KEYS and isinstance(value, Mapping):
            out[key] = _subscription_groups(value)
            continue
        # Strings and plain numbers are most values: settle them without a call.
        kind = type(value)
        if kind is str:
            if convert:
                epoch = iso8601_to_epoch(value)
                if epoch is not None:
                    value = epoch
            out[key] = value
        elif kind is int or kind is bool:
            out[key] = value
        elif value is not None:
            shaped = _profile_value(value, convert)
            if shaped is not None:
                out[key] = shaped
    return out


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def _check_length(key: str, value: Any) -> None:
    if isinstance(value, str):
        size = len(value) if len(value) <= _VALUE_SAFE_CHARS else len(value.encode("utf-8"))
        if size > _MAX_VALUE_BYTES:
            raise InvalidEvent(
                f"{key!r} is {size} bytes, over CleverTap's limit of {_MAX_VALUE_BYTES} bytes"
                " for a value"
            )
    elif isinstance(value, list):
        for item in value:
            _check_length(key, item)
    elif isinstance(value, Mapping):
        for item in value.values():
            _check_length(key, item)


def _check_standard(key: str, value: Any) -> None:
    if isinstance(value, Mapping) and _is_operator(value):
        return
    if key == "Phone":
        if not (isinstance(value, str) and _PHONE.fullmatch(value)):
            raise InvalidEvent(f"Phone {value!r} is not +[country code][number]")
    elif key == "Email":
        if not (isinstance(value, str) and _EMAIL.fullmatch(value)):
            raise InvalidEvent(f"Email {value!r} is not a valid address")
    elif key in _BOOLEAN_KEYS:
        if not isinstance(value, bool):
            raise InvalidEvent(f"{key} {value!r} is not true or false")
    else:
        allowed = _ENUMS.get(key)
        if allowed is not None and not (isinstance(value, str) and value in allowed[0]):
            raise InvalidEvent(f"{key} {value!r} is not {allowed[1]}")


_MIN_INT64, _MAX_INT64 = -(2**63), 2**64 - 1  # what a JSON encoder can carry exactly


def validate_profile_data(data: Mapping[str, Any]) -> None:
    """Raise InvalidEvent with the exact reason when CleverTap would refuse this profileData."""
    custom = 0
    for key, value in data.items():
        if len(key) > _KEY_SAFE_CHARS:
            size = len(key.encode("utf-8"))
            if size > _MAX_KEY_BYTES:
                raise InvalidEvent(
                    f"key {_short(key)!r} is {size} bytes, over CleverTap's limit of"
                    f" {_MAX_KEY_BYTES} bytes"
                )
        kind = type(value)
        if kind is str:
            if len(value) > _VALUE_SAFE_CHARS:
                _check_length(key, value)
        elif kind is int:
            if not _MIN_INT64 <= value <= _MAX_INT64:
                raise InvalidEvent(f"{key!r} is a number beyond 64 bits: send it as a string")
        elif kind is not bool and kind is not float:
            _check_length(key, value)
        if key in STANDARD_KEYS:
            _check_standard(key, value)
        elif key not in _SUBSCRIPTION_KEYS:
            custom += 1
    if custom > _MAX_CUSTOM:
        raise InvalidEvent(
            f"{custom} custom properties, over CleverTap's limit of {_MAX_CUSTOM} per profile"
        )


def _created_at(event: Mapping[str, Any], mapping: FieldMapping, now: int) -> int:
    raw = _lookup(event, mapping.created_at)
    if raw is None or raw == "":
        return now
    try:
        return parse_created_at(raw, field=mapping.created_at)
    except ValueError as exc:
        raise InvalidEvent(str(exc)) from None


# Keys the common pass leaves to the general one: spellings that change or combine other keys,
# and every CleverTap standard key but the few the common pass checks itself.
_GENERAL_KEYS = frozenset(
    {"DOB"}
    | _NAME_PARTS
    | _SUBSCRIPTION_KEYS
    | {given for given, key in _SEGMENT_TO_CLEVERTAP.items() if key in _ENUM_READERS}
    | {given for given, key in _SEGMENT_TO_CLEVERTAP.items() if key == "Customer Type"}
    | (STANDARD_KEYS - {"Photo"})
)


_GENERAL = "general"  # a key the common pass leaves to the general one
_CUSTOM = "custom"  # a custom property, kept under its own name
# Trait names repeat from event to event: what each is to the common pass, once worked out.
_KEY_ROLES: dict[str, str] = {}
_MAX_KEY_ROLES = 4096  # keys seen beyond this are worked out each time


def _key_role(key: str) -> str:
    if key in _GENERAL_KEYS or len(key) > _KEY_SAFE_CHARS:
        role = _GENERAL
    else:
        role = _SEGMENT_TO_CLEVERTAP.get(key, _CUSTOM)
    if len(_KEY_ROLES) < _MAX_KEY_ROLES:
        _KEY_ROLES[key] = role
    return role


def _shaped_fast(value: Any, kind: type, convert: bool) -> Any:
    """_profile_value's answer for an array or object, by shorter ways where they are exact."""
    if kind is list:
        if all(type(item) is str for item in value):
            return list(value)  # what _strings keeps of an all-text array: all of it
        return _strings(value)
    if _is_operator(value):
        return _profile_value(value, convert)
    converted = convert_timestamps(value) if convert else value
    if not _holds_float(converted):
        # orjson writes what the compact encoder writes, but for floats (1e+16 vs 1e16) and
        # integers beyond 64 bits, which it refuses.
        try:
            return orjson.dumps(converted).decode()
        except orjson.JSONEncodeError:
            pass
    return _compact_json(converted)


def _holds_float(value: Any) -> bool:
    stack = [value]
    while stack:
        current = stack.pop()
        for child in current.values() if type(current) is dict else current:
            kind = type(child)
            if kind is float:
                return True
            if kind is dict or kind is list:
                stack.append(child)
    return False


def _map_common(event: dict[str, Any], convert: bool, now: int) -> dict[str, Any] | None:
    """map_upload's result for the common shape in one pass, or None when unsure.

    The common shape: a string userId, a non-empty traits object, an ISO-8601 or absent
    timestamp, and trait values that are strings, whole numbers, booleans or finite floats,
    under custom keys or name/email/phone/gender/avatar. Anything else (or anything CleverTap
    would refuse, so that the reason is the general pass's) goes to the general pass, which
    gives the same answer for everything this one answers.
    """
    identity = event.get("userId")
    if type(identity) is not str or not identity or identity.isspace():
        return None
    traits = event.get("traits")
    if type(traits) is not dict or not traits:
        return None
    properties = event.get("properties")
    if properties is not None and type(properties) is not dict:
        return None  # refused even beside traits: the general pass says why
    stamp = event.get("timestamp")
    ts: int | None
    if stamp is None or stamp == "":
        ts = now
    elif type(stamp) is str:
        ts = iso8601_to_epoch(stamp.strip())
        if ts is None:
            return None
    else:
        return None
    to_epoch = iso8601_to_epoch
    roles = _KEY_ROLES
    profile: dict[str, Any] = {}
    custom = 0
    for key, value in traits.items():
        if value is None:
            continue
        target = roles.get(key)
        if target is None:
            target = _key_role(key)
        if target is _GENERAL:
            return None
        kind = type(value)
        if kind is str:
            if convert and len(value) >= 10 and value[4] == "-":
                epoch = to_epoch(value)
                if epoch is not None:
                    value = epoch
                    kind = int
            if kind is str and len(value) > _VALUE_SAFE_CHARS:
                return None
        elif kind is int:
            if not _MIN_INT64 <= value <= _MAX_INT64:
                return None
        elif kind is float:
            if not math.isfinite(value):
                return None
        elif kind is list or kind is dict:
            # Arrays and objects are shaped as the general pass shapes them (string arrays,
            # JSON text, operators); only their sizes are checked here.
            value = _shaped_fast(value, kind, convert)
            try:
                _check_length(key, value)
            except InvalidEvent:
                return None
            kind = type(value)
        elif kind is not bool:
            return None
        if target is _CUSTOM:
            custom += 1
            profile[key] = value
            continue
        if target in traits:
            return None  # both spellings: the general pass decides which wins
        if target == "Email":
            if kind is not str or _EMAIL.fullmatch(value) is None:
                return None
        elif target == "Phone":
            if kind is not str or _PHONE.fullmatch(value) is None:
                return None
        elif target == "Gender":
            value = _GENDERS.get(value.strip().lower()) if kind is str else None
            if value is None:
                return None
        elif target == "DOB":
            if kind is not str and kind is not int:
                return None
            try:
                value = _as_date(traits[key], f"traits.{key}")  # the value as given
            except InvalidEvent:
                return None
        profile[target] = value
    if custom > _MAX_CUSTOM:
        return None
    return {"type": "profile", "identity": identity, "ts": ts, "profileData": profile}


def map_upload(event: Mapping[str, Any], mapping: FieldMapping, *, now: int) -> dict[str, Any]:
    """The CleverTap profile record for a User Upload; InvalidEvent with the reason otherwise.

    `now` (epoch seconds) is the Created At of events that carry none.
    """
    if (
        type(event) is dict
        and mapping.identity == "userId"
        and mapping.created_at == "timestamp"
        and mapping.attributes is None
        and not mapping.raw_traits
    ):
        record = _map_common(event, mapping.convert_timestamps, now)
        if record is not None:
            return record
    return _map_general(event, mapping, now)


def _map_general(event: Mapping[str, Any], mapping: FieldMapping, now: int) -> dict[str, Any]:
    identity = _require_identity(event, mapping)
    ts = _created_at(event, mapping, now)
    attributes, source = _person_attributes(event, mapping)
    if not mapping.raw_traits:
        attributes = _to_clevertap_keys(attributes, source)
    profile = _profile_data(attributes, mapping.convert_timestamps)
    validate_profile_data(profile)
    return {"type": "profile", "identity": identity, "ts": ts, "profileData": profile}
