"""agent.core.gojson reproduces Go encoding/json (Go 1.22) bytes for map[string]any values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.gojson import GoJSONError, dumps_compact, dumps_indent


def test_keys_sorted_at_every_level_and_compact() -> None:
    value = {"b": {"z": 1, "a": [{"y": 2, "x": 3}]}, "a": "v"}
    assert dumps_compact(value) == b'{"a":"v","b":{"a":[{"x":3,"y":2}],"z":1}}'


def test_keys_sorted_by_utf8_bytes_not_python_default() -> None:
    # "Z" (0x5a) < "a" (0x61) < "é" (0xc3 0xa9) < "€" (0xe2 ...) < "😀" (0xf0 ...)
    value = {"😀": 1, "€": 2, "é": 3, "a": 4, "Z": 5}
    assert dumps_compact(value) == '{"Z":5,"a":4,"é":3,"€":2,"😀":1}'.encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"', '"\\""'),
        ("\\", '"\\\\"'),
        ("\n\r\t", '"\\n\\r\\t"'),
        ("\b\f", '"\\b\\f"'),
        ("\x00\x01\x1f", '"\\u0000\\u0001\\u001f"'),
        ("\x0b", '"\\u000b"'),
        ("<a href='x'>&</a>", "\"\\u003ca href='x'\\u003e\\u0026\\u003c/a\\u003e\""),
        ("\u2028\u2029", '"\\u2028\\u2029"'),
        ("/\x7f", '"/\x7f"'),
        ("é€😀\ufffd", '"é€😀\ufffd"'),
        ("\ud800", '"\\ufffd"'),
        ("a\udcffb", '"a\\ufffdb"'),
    ],
)
def test_string_escaping_matches_go(text: str, expected: str) -> None:
    assert dumps_compact(text) == expected.encode("utf-8")


def test_surrogate_escaped_bytes_each_become_replacement_escapes() -> None:
    text = b"ok\xff\xfe".decode("utf-8", "surrogateescape")
    assert dumps_compact({"k": text}) == b'{"k":"ok\\ufffd\\ufffd"}'


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (100, "100"),
        (-7, "-7"),
        (1.0, "1"),
        (100.0, "100"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (-0.0, "-0"),
        (123456789.123, "123456789.123"),
        (1e20, "100000000000000000000"),
        (1.5e17, "150000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (1e-5, "0.00001"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (2**53 + 1, "9007199254740992"),
        (10**21, "1e+21"),
    ],
)
def test_numbers_pass_through_float64_with_go_formatting(number: float, expected: str) -> None:
    assert dumps_compact(number) == expected.encode()


def test_bools_null_and_lists() -> None:
    assert dumps_compact([True, False, None, [], {}, (1, 2)]) == b"[true,false,null,[],{},[1,2]]"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    with pytest.raises(GoJSONError, match="finite"):
        dumps_compact({"n": bad})


def test_integer_beyond_float64_is_refused() -> None:
    with pytest.raises(GoJSONError, match="float64"):
        dumps_compact(10**400)


def test_non_string_keys_and_unknown_types_are_refused() -> None:
    with pytest.raises(GoJSONError, match="map key"):
        dumps_compact({1: "a"})
    with pytest.raises(GoJSONError, match="unsupported type"):
        dumps_compact({"a": b"bytes"})
    with pytest.raises(GoJSONError, match="unsupported type"):
        dumps_indent({"a": {1, 2}})


def test_indent_matches_marshal_indent() -> None:
    value = {"b": [1, {"d": None, "c": True}], "a": {}, "e": [], "f": "<x>"}
    assert dumps_indent(value) == (
        "{\n"
        '  "a": {},\n'
        '  "b": [\n'
        "    1,\n"
        "    {\n"
        '      "c": true,\n'
        '      "d": null\n'
        "    }\n"
        "  ],\n"
        '  "e": [],\n'
        '  "f": "\\u003cx\\u003e"\n'
        "}"
    )


def test_indent_of_scalars_and_empty_containers() -> None:
    assert dumps_indent(None) == "null"
    assert dumps_indent("a&b") == '"a\\u0026b"'
    assert dumps_indent({}) == "{}"
    assert dumps_indent([]) == "[]"
    assert dumps_indent(2.0) == "2"


def test_deep_nesting_is_an_agent_error_not_recursion_error() -> None:
    value: Any = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(GoJSONError, match="nesting"):
        dumps_compact(value)
    with pytest.raises(GoJSONError, match="nesting"):
        dumps_indent(value)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_compact_output_is_valid_json_that_round_trips(value: Any) -> None:
    data = dumps_compact(value)
    text = data.decode("utf-8")  # always valid UTF-8
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    decoded = json.loads(text)
    assert _roundtrip_equal(decoded, value)
    assert json.loads(dumps_indent(value)) == decoded


def _roundtrip_equal(decoded: Any, original: Any) -> bool:
    if isinstance(original, bool) or original is None:
        return bool(decoded is original)
    if isinstance(original, int | float):
        return isinstance(decoded, int | float) and float(decoded) == float(original)
    if isinstance(original, str):
        expected = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in original)
        return bool(decoded == expected)
    if isinstance(original, list):
        return len(decoded) == len(original) and all(
            _roundtrip_equal(d, o) for d, o in zip(decoded, original, strict=True)
        )
    return set(decoded) == set(original) and all(
        _roundtrip_equal(decoded[k], original[k]) for k in original
    )


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_formatting_is_shortest_round_trip_and_go_shaped(number: float) -> None:
    text = dumps_compact(number).decode()
    assert float(text) == number
    assert not text.endswith(".0")
    magnitude = abs(number)
    if number != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        assert "e" in text
        exponent = text.split("e")[1]
        assert exponent[0] in "+-"
        assert not (exponent[0] == "-" and exponent[1] == "0")  # Go trims e-07 to e-7
    else:
        assert "e" not in text


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.text(alphabet=st.characters(blacklist_categories=["Cs"])), st.integers(), max_size=8
    )
)
def test_keys_come_out_in_utf8_byte_order(value: dict[str, int]) -> None:
    decoded = json.loads(dumps_compact(value))
    keys = list(decoded)
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))


_any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(_any_text, max_size=8))
def test_code_point_order_is_utf8_byte_order_surrogates_included(keys: list[str]) -> None:
    """Why keys are sorted as str: UTF-8 (surrogatepass) keeps code point order."""
    assert sorted(keys) == sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))


_floatless = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**53), max_value=2**53) | _any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(_any_text, children, max_size=4)
    ),
    max_leaves=25,
)


def _stdlib_indent_with_go_escapes(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(raw, escaped)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return "".join("\\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


@settings(max_examples=300, deadline=None)
@given(_floatless)
def test_indent_equals_stdlib_json_plus_go_escapes_without_floats(value: Any) -> None:
    """Without floats (Go's float64 formatting), MarshalIndent output is the stdlib's indent=2
    output with ``< > &``, U+2028/U+2029 and lone surrogates escaped."""
    assert dumps_indent(value) == _stdlib_indent_with_go_escapes(value)
