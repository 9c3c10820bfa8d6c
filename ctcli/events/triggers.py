"""Segment's trigger language (an FQL subset): parse a trigger once into a fast per-event test.

A trigger is compiled once, by a hand-written tokenizer and recursive-descent parser, into nested
closures; evaluating it on an event re-parses nothing and walks no tree of strings.

Grammar, lowest precedence first::

    trigger    := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "!"* primary
    primary    := "(" or_expr ")" | test_call | operand compare operand
    compare    := "=" | "!=" | "<" | "<=" | ">" | ">="
    test_call  := ("contains" | "match") "(" operand "," string ")"
    operand    := field | string | number | "true" | "false" | "null" | value_call
    value_call := ("lowercase" | "typeof") "(" operand ")"

Decisions where Segment's FQL documentation is silent:

- A field is a dotted path (`context.app.name`). A segment holds letters, digits, `_`, `$` and
  `-`; the first segment starts with a letter, `_` or `$`. A leading `$` segment (`$.userId`, as
  in Segment's mappings) stands for the event itself.
- A bare field (`properties.vip`) is a syntax error, not a truthiness test: write
  `properties.vip = true` or, for presence, `properties.vip != null`.
- Keywords (`and`, `or`, `true`, `false`, `null`) are lowercase; `AND`, `True`, `not`, `==`,
  `&&`, `||` and `<>` are rejected with a hint instead of being read as field names.
- Strings take double or single quotes and JSON's backslash escapes, plus `\\*` and `\\?`
  for a literal `*` or `?` in a `match` pattern.
- A missing field, or a path that steps through a non-object, is `null`.
- `=` is true only for values of the same type (booleans are not numbers, `1 = 1.0` is true);
  `!=` is its negation, so values of different types are `!=`. Ordering compares two numbers or
  two strings (by code point); anything else is false.
- `contains` and `match` are false for non-strings; `match` is a whole-string, case-sensitive glob
  where `*` is any run of characters and `?` one character.
- `lowercase` of a non-string is the value unchanged; `typeof` gives "string", "number",
  "boolean", "null", "object" or "array" (and "unknown" for anything JSON cannot hold).
- Evaluating a compiled trigger never raises, whatever the event holds.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, NamedTuple

from ctcli.errors import TriggerSyntaxError

__all__ = ["KNOWN_FUNCTIONS", "Predicate", "compile_path", "compile_trigger", "get_path"]

Predicate = Callable[[Mapping[str, Any]], bool]
Getter = Callable[[Any], Any]

KNOWN_FUNCTIONS = ("contains", "match", "lowercase", "typeof")
_TEST_FUNCTIONS = frozenset({"contains", "match"})
_VALUE_FUNCTIONS = frozenset({"lowercase", "typeof"})
_KEYWORDS = frozenset({"and", "or"})
_LITERALS = {"true": True, "false": False, "null": None}
# Bounds recursion so that absurd input is a syntax error rather than a RecursionError.
_MAX_NESTING = 64

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "b": "\b",
    "f": "\f",
    # A literal '*' or '?' in a match() pattern.
    "*": "*",
    "?": "?",
}
_HEX = frozenset("0123456789abcdefABCDEF")
_NUMBER_TYPES = frozenset({int, float})
_ORDERINGS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
# `5 < x` is compiled as `x > 5` so that only one side ever holds the constant.
_MIRRORED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}


# ---------------------------------------------------------------------------------------------
# Paths


def _step(value: Any, key: str) -> Any:
    if type(value) is dict:
        return value.get(key)
    if isinstance(value, Mapping):
        return value.get(key)
    return None


def _getter_for(parts: tuple[str, ...]) -> Getter:
    # One- and two-step paths are nearly all real triggers (`type`, `properties.plan`), so they get
    # loop-free closures; the per-event cost is what the million-event benchmark measures.
    if not parts:
        return lambda event: event
    if len(parts) == 1:
        (key,) = parts

        def get_one(event: Any) -> Any:
            if type(event) is dict:
                return event.get(key)
            return _step(event, key)

        return get_one
    if len(parts) == 2:
        first, second = parts

        def get_two(event: Any) -> Any:
            value = event.get(first) if type(event) is dict else _step(event, first)
            if type(value) is dict:
                return value.get(second)
            return _step(value, second)

        return get_two

    def get_many(event: Any) -> Any:
        value = event
        for key in parts:
            if type(value) is dict or isinstance(value, Mapping):
                value = value.get(key)
            else:
                return None
        return value

    return get_many


def _split_path(path: str) -> tuple[str, ...]:
    parts = tuple(path.split("."))
    if parts and parts[0] == "$":
        parts = parts[1:]
    return parts


@lru_cache(maxsize=1024)
def compile_path(path: str) -> Getter:
    """A function that reads dotted `path` from an event (missing or unreachable: None)."""
    return _getter_for(_split_path(path))


def get_path(event: Mapping[str, Any], path: str) -> Any:
    """The value at dotted `path` in `event`; None when missing or when a step is not an object."""
    return compile_path(path)(event)


# ---------------------------------------------------------------------------------------------
# Values


_KINDS: dict[type, str] = {
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
    dict: "object",
    list: "array",
    tuple: "array",
}


def _kind(value: Any) -> str:
    kind = _KINDS.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return "unknown"


def _same(a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "object":
        return len(a) == len(b) and all(k in b and _same(v, b[k]) for k, v in a.items())
    if kind == "array":
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _equal(a: Any, b: Any) -> bool:
    try:
        return _same(a, b)
    except Exception:  # a pathological value (cycles, hostile __eq__) must not stop a run
        return False


def _ordered(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    kind = _kind(a)
    if kind not in ("number", "string") or kind != _kind(b):
        return False
    return bool(op(a, b))


def _lowercase(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


# ---------------------------------------------------------------------------------------------
# Tokens


class _Token(NamedTuple):
    kind: str  # field, const, op, not, and, or, "(", ")", ",", end
    value: Any  # field: tuple of path parts; const: the literal; op: the operator
    pos: int
    end: int


def _fail(message: str, text: str, position: int) -> TriggerSyntaxError:
    error = TriggerSyntaxError(message, text, position)
    # The bare reason lets callers re-word the error (e.g. prefix the subscription it came from).
    error.reason = message  # type: ignore[attr-defined]
    return error


def _is_name_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$-"


_WRONG_OPERATORS = {
    "==": "'==' is not FQL, use '='",
    "===": "'===' is not FQL, use '='",
    "!==": "'!==' is not FQL, use '!='",
    "<>": "'<>' is not FQL, use '!='",
    "=<": "'=<' is not FQL, use '<='",
    "=>": "'=>' is not FQL, use '>='",
    "&&": "'&&' is not FQL, use 'and'",
    "&": "'&' is not FQL, use 'and'",
    "||": "'||' is not FQL, use 'or'",
    "|": "'|' is not FQL, use 'or'",
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "\"'":
            i = _read_string(text, i, tokens)
        elif ch.isalpha() or ch in "_$":
            i = _read_field(text, i, tokens)
        elif "0" <= ch <= "9" or (ch == "-" and i + 1 < n and "0" <= text[i + 1] <= "9"):
            i = _read_number(text, i, tokens)
        elif ch in "(),":
            tokens.append(_Token(ch, ch, i, i + 1))
            i += 1
        elif ch in "=!<>&|":
            i = _read_operator(text, i, tokens)
        else:
            raise _fail(f"unexpected character {ch!r}", text, i)
    tokens.append(_Token("end", None, n, n))
    return tokens


def _read_operator(text: str, i: int, tokens: list[_Token]) -> int:
    for wrong in sorted(_WRONG_OPERATORS, key=len, reverse=True):
        if text.startswith(wrong, i):
            raise _fail(_WRONG_OPERATORS[wrong], text, i)
    two = text[i : i + 2]
    if two in ("!=", "<=", ">="):
        tokens.append(_Token("op", two, i, i + 2))
        return i + 2
    ch = text[i]
    if ch == "!":
        tokens.append(_Token("not", ch, i, i + 1))
    else:
        tokens.append(_Token("op", ch, i, i + 1))
    return i + 1


def _read_string(text: str, start: int, tokens: list[_Token]) -> int:
    value, end, _ = _decode_string(text, start)
    tokens.append(_Token("const", value, start, end))
    return end


def _decode_string(text: str, start: int) -> tuple[str, int, frozenset[int]]:
    """The string literal opening at `start`: its value, where it ends, and where in the value
    an unescaped `*` or `?` sits (match() treats only those as wildcards)."""
    quote = text[start]
    n = len(text)
    chars: list[str] = []
    wildcards: set[int] = set()
    i = start + 1
    while True:
        if i >= n:
            raise _fail(f"unterminated string (no closing {quote})", text, start)
        ch = text[i]
        if ch == quote:
            return "".join(chars), i + 1, frozenset(wildcards)
        if ch != "\\":
            if ch in "*?":
                wildcards.add(len(chars))
            chars.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            raise _fail(f"unterminated string (no closing {quote})", text, start)
        escape = text[i + 1]
        if escape in _ESCAPES:
            chars.append(_ESCAPES[escape])
            i += 2
        elif escape == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) != 4 or not _HEX.issuperset(digits):
                raise _fail("'\\u' must be followed by 4 hexadecimal digits", text, i)
            chars.append(chr(int(digits, 16)))
            i += 6
        else:
            raise _fail(f"unknown escape '\\{escape}' in string", text, i)


def _read_field(text: str, start: int, tokens: list[_Token]) -> int:
    n = len(text)
    i = start + 1
    while i < n and _is_name_char(text[i]):
        i += 1
    parts = [text[start:i]]
    while i < n and text[i] == ".":
        segment_start = i + 1
        i = segment_start
        while i < n and _is_name_char(text[i]):
            i += 1
        if i == segment_start:
            raise _fail("expected a field name after '.'", text, segment_start)
        parts.append(text[segment_start:i])
    if len(parts) == 1:
        word = parts[0]
        if word in _KEYWORDS:
            tokens.append(_Token(word, word, start, i))
            return i
        if word in _LITERALS:
            tokens.append(_Token("const", _LITERALS[word], start, i))
            return i
        lower = word.lower()
        if lower in _KEYWORDS or lower in _LITERALS:
            raise _fail(f"{word!r} is not FQL, use {lower!r}", text, start)
        if lower == "not":
            raise _fail(f"{word!r} is not FQL, use '!'", text, start)
    tokens.append(_Token("field", tuple(parts), start, i))
    return i


def _read_number(text: str, start: int, tokens: list[_Token]) -> int:
    found = _NUMBER.match(text, start)
    assert found is not None  # the caller saw a digit, or '-' and a digit
    end = found.end()
    if end < len(text) and (_is_name_char(text[end]) or text[end] == "."):
        stop = end
        while stop < len(text) and (_is_name_char(text[stop]) or text[stop] == "."):
            stop += 1
        raise _fail(f"invalid number {text[start:stop]!r}", text, start)
    literal = found.group()
    try:
        value: int | float = float(literal) if any(c in literal for c in ".eE") else int(literal)
    except ValueError:  # Python refuses int() of more than 4300 digits
        raise _fail("number too long", text, start) from None
    tokens.append(_Token("const", value, start, end))
    return end


# ---------------------------------------------------------------------------------------------
# Compiled pieces


class _Operand(NamedTuple):
    constant: bool
    value: Any  # the literal when constant, else a Getter
    source: str  # its text, for messages


def _always(result: bool) -> Predicate:
    return lambda event: result


def _compare_constant(op: str, get: Getter, constant: Any) -> Predicate:
    if constant is None or isinstance(constant, bool):
        if op == "=":
            return lambda event: get(event) is constant
        if op == "!=":
            return lambda event: get(event) is not constant
        return _always(False)  # null and booleans have no order
    if isinstance(constant, str):
        if op == "=":
            return lambda event: get(event) == constant
        if op == "!=":
            return lambda event: get(event) != constant
        order = _ORDERINGS[op]

        def string_order(event: Mapping[str, Any]) -> bool:
            value = get(event)
            return type(value) is str and order(value, constant)

        return string_order
    numbers = _NUMBER_TYPES
    if op == "=":

        def number_equal(event: Mapping[str, Any]) -> bool:
            value = get(event)
            return type(value) in numbers and value == constant

        return number_equal
    if op == "!=":

        def number_unequal(event: Mapping[str, Any]) -> bool:
            value = get(event)
            return not (type(value) in numbers and value == constant)

        return number_unequal
    order = _ORDERINGS[op]

    def number_order(event: Mapping[str, Any]) -> bool:
        value = get(event)
        return type(value) in numbers and order(value, constant)

    return number_order


def _compare(op: str, left: _Operand, right: _Operand) -> Predicate:
    if left.constant and right.constant:
        if op == "=":
            return _always(_equal(left.value, right.value))
        if op == "!=":
            return _always(not _equal(left.value, right.value))
        return _always(_ordered(_ORDERINGS[op], left.value, right.value))
    if left.constant:
        left, right, op = right, left, _MIRRORED[op]
    if right.constant:
        return _compare_constant(op, left.value, right.value)
    get_left, get_right = left.value, right.value
    if op == "=":
        return lambda event: _equal(get_left(event), get_right(event))
    if op == "!=":
        return lambda event: not _equal(get_left(event), get_right(event))
    order = _ORDERINGS[op]
    return lambda event: _ordered(order, get_left(event), get_right(event))


def _glob(pattern: str, wildcards: frozenset[int]) -> re.Pattern[str]:
    pieces: list[str] = []
    for i, ch in enumerate(pattern):
        if i not in wildcards:
            pieces.append(re.escape(ch))
        elif ch == "?":
            pieces.append(".")
        elif not pieces or pieces[-1] != ".*":
            # Runs of '*' collapse to one so that the regex does not backtrack once per star.
            pieces.append(".*")
    return re.compile("".join(pieces), re.DOTALL)


def _all_of(tests: list[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda event: first(event) and second(event)

    def all_of(event: Mapping[str, Any]) -> bool:
        # A plain loop: all() would build a generator for every event.
        for test in tests:  # noqa: SIM110
            if not test(event):
                return False
        return True

    return all_of


def _any_of(tests: list[Predicate]) -> Predicate:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda event: first(event) or second(event)

    def any_of(event: Mapping[str, Any]) -> bool:
        for test in tests:  # noqa: SIM110
            if test(event):
                return True
        return False

    return any_of


# ---------------------------------------------------------------------------------------------
# Parser


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0

    # -- helpers -------------------------------------------------------------------------------

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def source(self, token: _Token) -> str:
        return self.text[token.pos : token.end]

    def shown(self, token: _Token) -> str:
        return "the end of the trigger" if token.kind == "end" else repr(self.source(token))

    def error(self, message: str, token: _Token) -> TriggerSyntaxError:
        return _fail(message, self.text, token.pos)

    def after(self) -> str:
        """How to say where we are: after the previous token, or at the start."""
        if self.index == 0:
            return "at the start of the trigger"
        return f"after {self.source(self.tokens[self.index - 1])!r}"

    # -- grammar -------------------------------------------------------------------------------

    def parse(self) -> Predicate:
        if self.peek().kind == "end":
            raise self.error("empty trigger", self.peek())
        test = self.or_expr(0)
        token = self.peek()
        if token.kind != "end":
            raise self.unexpected(token)
        return test

    def unexpected(self, token: _Token) -> TriggerSyntaxError:
        if token.kind == ")":
            return self.error("unbalanced parenthesis: ')' has no matching '('", token)
        if token.kind == "op":
            return self.error(
                f"comparisons cannot be chained: join them with 'and' before {self.shown(token)}",
                token,
            )
        return self.error(
            f"unexpected {self.shown(token)} after a complete condition "
            "(join conditions with 'and' or 'or')",
            token,
        )

    def or_expr(self, depth: int) -> Predicate:
        tests = [self.and_expr(depth)]
        while self.peek().kind == "or":
            self.advance()
            tests.append(self.and_expr(depth))
        return _any_of(tests)

    def and_expr(self, depth: int) -> Predicate:
        tests = [self.unary(depth)]
        while self.peek().kind == "and":
            self.advance()
            tests.append(self.unary(depth))
        return _all_of(tests)

    def unary(self, depth: int) -> Predicate:
        negations = 0
        while self.peek().kind == "not":
            self.advance()
            negations += 1
        test = self.primary(depth)
        if negations % 2:
            inner = test
            return lambda event: not inner(event)
        return test

    def primary(self, depth: int) -> Predicate:
        token = self.peek()
        if token.kind == "(":
            return self.group(depth)
        if token.kind == "field" and self.peek(1).kind == "(" and self.function_name(token):
            name = self.function_name(token)
            if name in _TEST_FUNCTIONS:
                test = self.test_call(depth)
                if self.peek().kind == "op":
                    raise self.error(
                        f"{name}() is already true or false and cannot be compared "
                        "(use it alone, or negate it with '!')",
                        self.peek(),
                    )
                return test
        if token.kind not in ("field", "const"):
            raise self.missing_condition(token)
        bare_field = token.kind == "field" and self.peek(1).kind != "("
        left = self.operand(depth)
        op = self.peek()
        if op.kind != "op":
            hint = ""
            if bare_field:
                hint = f" (a bare field is not a condition; {left.source} != null tests presence)"
            raise self.error(
                f"expected a comparison (=, !=, <, <=, >, >=) after {left.source!r}{hint}", op
            )
        self.advance()
        right = self.operand(depth)
        if self.peek().kind == "op":
            raise self.unexpected(self.peek())
        return _compare(op.value, left, right)

    def missing_condition(self, token: _Token) -> TriggerSyntaxError:
        if token.kind == ")":
            if self.index > 0 and self.tokens[self.index - 1].kind == "(":
                return self.error("empty parentheses: expected a condition inside", token)
            return self.error(f"expected a condition {self.after()}", token)
        if token.kind == "op":
            return self.error(f"expected a field or value before {self.shown(token)}", token)
        if token.kind == "end":
            return self.error(f"expected a condition {self.after()}", token)
        return self.error(f"expected a condition {self.after()}, found {self.shown(token)}", token)

    def group(self, depth: int) -> Predicate:
        opening = self.advance()
        if depth >= _MAX_NESTING:
            raise self.error(f"trigger nested more than {_MAX_NESTING} levels deep", opening)
        test = self.or_expr(depth + 1)
        closing = self.peek()
        if closing.kind == "end":
            raise self.error("unbalanced parenthesis: this '(' is never closed", opening)
        if closing.kind != ")":
            raise self.unexpected(closing)
        self.advance()
        return test

    def function_name(self, token: _Token) -> str:
        name = self.source(token)
        if name not in KNOWN_FUNCTIONS:
            raise self.error(
                f"unknown function {name!r} (known: {', '.join(KNOWN_FUNCTIONS)})", token
            )
        return name

    def open_call(self, depth: int) -> tuple[str, _Token]:
        name_token = self.advance()
        opening = self.advance()
        if depth >= _MAX_NESTING:
            raise self.error(f"trigger nested more than {_MAX_NESTING} levels deep", opening)
        return self.source(name_token), opening

    def close_call(self, name: str, opening: _Token, arguments: str) -> None:
        token = self.peek()
        if token.kind == ")":
            self.advance()
            return
        if token.kind == "end":
            raise self.error("unbalanced parenthesis: this '(' is never closed", opening)
        raise self.error(f"{name}() takes {arguments}; expected ')'", token)

    def test_call(self, depth: int) -> Predicate:
        name, opening = self.open_call(depth)
        arguments = "two arguments: a field and a string"
        if self.peek().kind in (")", ",", "end"):
            raise self.error(f"{name}() takes {arguments}", self.peek())
        subject = self.operand(depth + 1)
        if self.peek().kind != ",":
            raise self.error(f"{name}() takes {arguments}; expected ','", self.peek())
        self.advance()
        pattern_token = self.peek()
        if pattern_token.kind != "const" or not isinstance(pattern_token.value, str):
            raise self.error(
                f'the second argument of {name}() must be a "string", '
                f"found {self.shown(pattern_token)}",
                pattern_token,
            )
        self.advance()
        self.close_call(name, opening, arguments)
        pattern: str = pattern_token.value
        if name == "contains":

            def contains(value: Any) -> bool:
                return isinstance(value, str) and pattern in value

            test = contains
        else:
            wildcards = _decode_string(self.text, pattern_token.pos)[2]
            full_match = _glob(pattern, wildcards).fullmatch

            def match(value: Any) -> bool:
                return isinstance(value, str) and full_match(value) is not None

            test = match
        if subject.constant:
            return _always(test(subject.value))
        get = subject.value
        return lambda event: test(get(event))

    def value_call(self, depth: int) -> _Operand:
        start = self.peek().pos
        name, opening = self.open_call(depth)
        arguments = "one argument"
        if self.peek().kind in (")", ",", "end"):
            raise self.error(f"{name}() takes {arguments}: a field", self.peek())
        argument = self.operand(depth + 1)
        self.close_call(name, opening, arguments)
        source = self.text[start : self.tokens[self.index - 1].end]
        transform = _lowercase if name == "lowercase" else _kind
        if argument.constant:
            return _Operand(True, transform(argument.value), source)
        get = argument.value
        if name == "lowercase":

            def lowercase(event: Any) -> Any:
                value = get(event)
                return value.lower() if isinstance(value, str) else value

            return _Operand(False, lowercase, source)
        return _Operand(False, lambda event: _kind(get(event)), source)

    def operand(self, depth: int) -> _Operand:
        token = self.peek()
        if token.kind == "const":
            self.advance()
            return _Operand(True, token.value, self.source(token))
        if token.kind == "field":
            if self.peek(1).kind == "(":
                name = self.function_name(token)
                if name in _TEST_FUNCTIONS:
                    raise self.error(
                        f"{name}() is a condition, not a value: it cannot be compared "
                        "or passed to a function",
                        token,
                    )
                return self.value_call(depth)
            self.advance()
            return _Operand(False, _getter_for(_path_parts(token.value)), self.source(token))
        if self.index > 0 and self.tokens[self.index - 1].kind in ("op", "("):
            raise self.error(f"expected a value {self.after()}", token)
        raise self.error(f"expected a field or value, found {self.shown(token)}", token)


def _path_parts(parts: tuple[str, ...]) -> tuple[str, ...]:
    return parts[1:] if parts and parts[0] == "$" else parts


def compile_trigger(text: str) -> Predicate:
    """Compile trigger `text` into a predicate over events; TriggerSyntaxError when it is not FQL.

    The predicate returns a bool for any mapping and never raises.
    """
    return _Parser(text).parse()
