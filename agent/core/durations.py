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


def format_duration(seconds: float) -> str:
    """Format seconds compactly for log lines (``"12ms"``, ``"1.5s"``, ``"2m3s"``)."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs}s"
