"""Logging setup for the CLI. Library modules only call ``logging.getLogger(__name__)``."""

from __future__ import annotations

import json
import logging
import sys
import time

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "error": logging.ERROR,
    "none": logging.CRITICAL + 10,
}
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: Longest escaped field written to a log line; the rest is cut and marked with "...".
MAX_FIELD_CHARS = 512
_COLORS = {logging.DEBUG: "\033[2m", logging.WARNING: "\033[33m", logging.ERROR: "\033[31m"}


def escape(value: object, *, limit: int = MAX_FIELD_CHARS) -> str:
    """Make a request-derived value safe to put into a log line.

    Control characters (C0, DEL, C1, and the Unicode line and paragraph separators) are shown as
    escapes (``\\n``, ``\\r``, ``\\t``, ``\\x1b``, ``\\u2028``) and a backslash as ``\\\\``, so a
    value can never end a line or start a forged one. Values longer than ``limit`` characters
    are cut.

    Args:
        value: a source name, path, address, query value... (``str()`` is applied).
        limit: the most characters kept before escaping.

    Returns:
        The escaped text.
    """
    text = str(value)
    cut = len(text) > limit
    if cut:
        text = text[:limit]
    out: list[str] = []
    for ch in text:
        named = _NAMED_ESCAPES.get(ch)
        if named is not None:
            out.append(named)
            continue
        code = ord(ch)
        if code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    if cut:
        out.append("...")
    return "".join(out)


class _HumanFormatter(logging.Formatter):
    def __init__(self, color: bool) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.ljust(5)
        text = f"{level} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        color = _COLORS.get(record.levelno) if self.color else None
        return f"{color}{text}\033[0m" if color else text


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=True)


def setup(level: str, fmt: str, no_color: bool) -> None:
    """Send ``agent.*`` logs to stderr at ``level`` in ``fmt`` (human or json)."""
    root = logging.getLogger("agent")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter())
    else:
        color = not no_color and sys.stderr.isatty()
        handler.setFormatter(_HumanFormatter(color))
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    root.propagate = False
