"""Go-style duration strings (``"30s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``) as seconds.

Etcha's docs use Go ``time.ParseDuration`` syntax for ``expiresIn``, ``runFrequency`` and the
``timeout*`` settings. An empty string means "not set" and parses to ``0``.
"""

from __future__ import annotations

import re

from agent.core.errors import ConfigError

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str, *, name: str = "duration") -> float:
    """Parse a Go duration string into seconds.

    Args:
        text: e.g. ``"1h30m"``; ``""`` or ``"0"`` gives 0.
        name: what is being parsed, for the error message.

    Raises:
        ConfigError: the text is not a duration, or is negative.
    """
    s = text.strip()
    if s in ("", "0"):
        return 0.0
    if s.startswith("-"):
        raise ConfigError(f"{name}: expected a non-negative duration such as 30s, got {text!r}")
    s = s.removeprefix("+")
    pos = 0
    total = 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise ConfigError(f"{name}: expected a duration such as 30s, 5m or 1h30m, got {text!r}")
    return total


def format_duration_short(seconds: float) -> str:
    """Format seconds as a short Go-style duration for people: ``300`` → ``"5m"``, never ``300.0s``.

    Under a second: whole milliseconds (``"250ms"``). Under a minute: seconds with at most one
    decimal (``"1.5s"``, ``"30s"``). Otherwise whole seconds as hours, minutes and seconds with
    the zero parts left out (``"5m"``, ``"2m3s"``, ``"1h30m"``, ``"2h"``). Every result parses
    back with :func:`parse_duration` (to within the rounding).

    Args:
        seconds: a non-negative number of seconds (negative values are shown as ``0s``).
    """
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 59.95:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((hours, "h"), (minutes, "m"), (secs, "s"))
    return "".join(f"{n}{unit}" for n, unit in parts if n)


def format_duration(seconds: float) -> str:
    """Format seconds compactly for log lines: the same as :func:`format_duration_short`."""
    return format_duration_short(seconds)


def format_go_duration(seconds: float) -> str:
    """Format seconds as a Go duration string that parses back exactly (``300`` → ``"5m"``).

    Args:
        seconds: a non-negative number of seconds.

    Returns:
        ``"0s"`` for zero, otherwise e.g. ``"1h30m"``, ``"1.5s"``, ``"250ms"``.
    """
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("us", 10**3)):
            if ns % size == 0:
                return f"{ns // size}{unit}"
        return f"{ns}ns"
    hours, rem = divmod(ns, 3600 * 10**9)
    minutes, rem = divmod(rem, 60 * 10**9)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if rem:
        whole, frac = divmod(rem, 10**9)
        out += f"{whole}.{frac:09d}".rstrip("0").rstrip(".") + "s"
    return out
