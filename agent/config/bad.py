"""The error a config value parser raises, and the small checks every parser shares.

Kept apart from :mod:`agent.config.values` so section parsers (:mod:`agent.config.publishing`)
can use them without importing the whole value table.
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.core.durations import parse_duration
from agent.core.errors import ConfigError, json_kind

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Bad(Exception):
    """A value that does not fit its field; the caller turns it into a ConfigError.

    Args:
        message: what was expected and what was got.
        sub: the path below the field (``[0].check``, ``.nope``), ``""`` for the field itself.
        choices: for an unknown key, the keys allowed there (for a "did you mean" hint).
    """

    def __init__(self, message: str, *, sub: str = "", choices: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.sub = sub
        self.choices = tuple(choices)

    @property
    def unknown(self) -> bool:
        """Whether this is an unknown key (``choices`` lists the known ones)."""
        return bool(self.choices)


def expect(value: Any, ok: bool, expected: str) -> None:
    """Raise :class:`Bad` (``expected <expected>, got <kind>``) unless ``ok``."""
    if not ok:
        raise Bad(f"expected {expected}, got {json_kind(value)}")


def duration_value(value: Any) -> float:
    """A duration: a non-negative number of seconds, or a Go duration string (``1h30m``)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise Bad(f"expected a non-negative duration, got {value}")
        return float(value)
    expect(value, isinstance(value, str), "a duration string such as 30s, 5m or 1h30m")
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise Bad(f"expected a duration such as 30s, 5m or 1h30m, got {value!r}") from exc


__all__ = ["Bad", "duration_value", "expect"]
