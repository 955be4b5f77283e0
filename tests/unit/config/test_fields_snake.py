"""``agent.config.fields.snake`` maps camelCase keys to attribute names as the two ``re.sub``
passes it replaced did (issue 14: no regex compiles or calls on the config-load path)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from agent.config.fields import RAW_SECTIONS, snake


def _by_regex(key: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key)
    return re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s).lower()


def test_snake_of_known_keys() -> None:
    assert snake("noSystemCA") == "no_system_ca"
    assert snake("tlsSkipVerify") == "tls_skip_verify"
    assert snake("httpClient") == "http_client"
    assert snake("JWTRules") == "jwt_rules"
    assert snake("sources") == "sources"
    assert all(snake(name) == _by_regex(name) for name in RAW_SECTIONS)


@given(st.text(alphabet="aBzZ09_-AbCDeéÉ", max_size=12))
def test_snake_is_the_regex_mapping(key: str) -> None:
    assert snake(key) == _by_regex(key)
