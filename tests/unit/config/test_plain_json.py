"""Issue 14: a plain-JSON config file is read without the Jsonnet engine, with Jsonnet's result."""

from __future__ import annotations

import pytest

from agent.config.load import evaluate_jsonnet, plain_json

SAME = [
    '{"run": {"stateDir": "/x", "maxTokenBytes": 1.0, "big": 1e20, "f": 0.25, "neg": -3}}',
    '{"sources": {"a": {"commands": [{"id": "\\u00e9", "check": "true"}]}, "b": {}}}',
    '[1, 2.5, null, true, "s"]',
    '{"n": 12345678901234567890}',
]


@pytest.mark.parametrize("text", SAME)
def test_plain_json_gives_what_jsonnet_gives(text: str) -> None:
    expected = evaluate_jsonnet(text, "c.json")
    got = plain_json(text)
    assert got == expected
    assert repr(got) == repr(expected)  # ints stay ints, floats floats


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',  # Jsonnet refuses duplicate fields: it must say so
        '{"a": 1, // a comment\n}',  # Jsonnet syntax
        "{a: 1 + 1}",
        '{"a": Infinity}',
    ],
)
def test_anything_but_strict_json_goes_to_jsonnet(text: str) -> None:
    assert plain_json(text) is None
