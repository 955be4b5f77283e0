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
_COLORS = {logging.DEBUG: "\033[2m", logging.WARNING: "\033[33m", logging.ERROR: "\033[31m"}


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
