"""Go-style duration strings."""

from __future__ import annotations

import pytest

from agent.core.durations import format_duration, format_duration_short, parse_duration
from agent.core.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("", 0),
        ("0", 0),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("+2m", 120),
        ("100us", 1e-4),
        ("10ns", 1e-8),
        (" 2h ", 7200),
    ],
)
def test_parses_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5", "1d", "7 days", "-1s", "1h-5m", "s", "1h30", "abc"])
def test_rejects_what_go_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match=r"runFrequency: expected .*duration"):
        parse_duration(text, name="runFrequency")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.012, "12ms"), (1.0, "1s"), (1.5, "1.5s"), (123, "2m3s")]
)
def test_formats_for_log_lines(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (30.0, "30s"),
        (1.25, "1.2s"),
        (59.99, "1m"),
        (300.0, "5m"),
        (123, "2m3s"),
        (3600, "1h"),
        (5400.0, "1h30m"),
        (3605, "1h5s"),
    ],
)
def test_short_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert format_duration_short(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=0.06)
