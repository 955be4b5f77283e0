"""The ``agent`` logger's stderr handler and its two formats (see :mod:`agent.core.logs`).

Imported by :func:`agent.core.logs.setup` only once ``logging`` is in use: the formatters
subclass ``logging.Formatter``, and a CLI run that logs nothing never loads ``logging``.
"""

from __future__ import annotations

import json
import logging
import sys

from agent.core.logs import _COLORS, FIELD_NAMES, _with_priority, json_record, rfc3339


class _HumanFormatter(logging.Formatter):
    def __init__(self, color: bool, journal: bool) -> None:
        super().__init__()
        self.color = color and not journal
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        level = record.levelname.ljust(5)
        text = f"{level} {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        if self.journal:
            return _with_priority(text, record.levelno)
        text = f"{rfc3339(record.created)} {text}"
        color = _COLORS.get(record.levelno) if self.color else None
        return f"{color}{text}\033[0m" if color else text


class _JSONFormatter(logging.Formatter):
    def __init__(self, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        doc = json_record(record.levelno, record.getMessage(), record.created, record.name)
        for name in FIELD_NAMES:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        text = json.dumps(doc, sort_keys=True, default=str)
        return _with_priority(text, record.levelno) if self.journal else text


def install_handler(levelno: int, fmt: str, *, color: bool, journal: bool) -> None:
    """Send ``agent.*`` logs to stderr at ``levelno`` in ``fmt`` (human or json)."""
    root = logging.getLogger("agent")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JSONFormatter(journal))
    else:
        handler.setFormatter(_HumanFormatter(color, journal))
    root.addHandler(handler)
    root.setLevel(levelno)
    root.propagate = False
