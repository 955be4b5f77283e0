"""Logging setup for the CLI. Library modules only call ``logging.getLogger(__name__)``, or,
on the CLI's start-up paths, :func:`get_logger` (the same logger, without loading ``logging``
before a record at the configured level is emitted: issue 14).

Formats (issue 15, point 4):

- ``human``: ``<RFC 3339 time> <LEVEL> <message>``, coloured by level on a terminal. Colours are
  off with ``-n``, ``cli.noColor`` or a non-empty ``NO_COLOR`` environment variable.
- ``json``: one object per line with ``time`` (RFC 3339, UTC), ``level``, ``msg``, ``logger``
  and, when the call site passed them through :func:`fields`, ``source``, ``id``, ``trigger``,
  ``duration_ms`` and ``error``; ``traceback`` with an exception.
- Under systemd, when ``JOURNAL_STREAM`` names the device and inode of stderr, every line starts
  with its sd-daemon priority (``<7>`` debug, ``<6>`` info, ``<4>`` warning, ``<3>`` error,
  ``<2>`` critical), so ``journalctl -p err`` finds errors. Human lines then carry no time (the
  journal stamps them) and no colours; JSON lines keep their fields.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from agent.core.deferred import Deferred, when_loaded

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

#: logging's levels, as numbers: this module does not load logging (see :func:`setup`).
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVELS = {
    "debug": DEBUG,
    "info": INFO,
    "error": ERROR,
    "none": CRITICAL + 10,
}
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}
#: Longest escaped field written to a log line; the rest is cut and marked with "...".
MAX_FIELD_CHARS = 512
_COLORS = {DEBUG: "\033[2m", WARNING: "\033[33m", ERROR: "\033[31m"}


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


#: sd-daemon priorities (``sd-daemon.h``) by logging level, for stderr under journald.
_PRIORITIES = ((ERROR + 1, 2), (ERROR, 3), (WARNING, 4), (INFO, 6))
#: The structured fields :func:`fields` sets on a record, in the order JSON lines show them.
FIELD_NAMES = ("source", "id", "trigger", "duration_ms", "error")


def fields(
    *,
    source: str | None = None,
    id: str | None = None,  # the JSON field is named id
    trigger: str | None = None,
    duration: float | None = None,
    error: object = None,
) -> dict[str, Any]:
    """Structured fields for one log call, as the ``extra`` argument of a logger method.

    ``logger.info("Changed %s", cid, extra=fields(source=name, id=cid, duration=0.2))``. The
    JSON format writes them as keys (``duration`` in seconds becomes ``duration_ms``); the human
    format ignores them, so the message must still say what matters. Fields left ``None`` are
    not set.

    Args:
        source: the source name.
        id: the command id.
        trigger: what started the run (``"schedule"``, ``"webhook"``, ``"push"``...).
        duration: seconds the action took.
        error: the error (``str()`` is applied).
    """
    out: dict[str, Any] = {}
    if source is not None:
        out["source"] = source
    if id is not None:
        out["id"] = id
    if trigger is not None:
        out["trigger"] = trigger
    if duration is not None:
        out["duration_ms"] = round(duration * 1000)
    if error is not None:
        out["error"] = str(error)
    return out


def priority(levelno: int) -> int:
    """The sd-daemon priority (2 crit ... 7 debug) for a logging level."""
    for floor, prio in _PRIORITIES:
        if levelno >= floor:
            return prio
    return 7


def under_journald(stream: IO[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` (default stderr) is the journal stream systemd named.

    systemd sets ``JOURNAL_STREAM=<dev>:<inode>`` for a service whose stdout or stderr goes to
    the journal; the variable is inherited by children whose stderr may go elsewhere, so the
    stream's own device and inode are compared with it.
    """
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep or not dev.isdigit() or not ino.isdigit():
        return False
    try:
        st = os.fstat((stream or sys.stderr).fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


def colors_allowed(no_color: bool, stream: IO[str] | None = None) -> bool:
    """Colours only on a terminal, and never with ``-n``/``cli.noColor`` or ``NO_COLOR`` set."""
    if no_color or os.environ.get("NO_COLOR", ""):
        return False
    target = stream or sys.stderr
    try:
        return target.isatty()
    except (OSError, ValueError):
        return False


def rfc3339(created: float, *, utc: bool = False) -> str:
    """``created`` (epoch seconds) as RFC 3339 with milliseconds, local time unless ``utc``."""
    from datetime import UTC, datetime  # only when a line is written (start-up stays light)

    when = datetime.fromtimestamp(created, UTC)
    if utc:
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return when.astimezone().isoformat(timespec="milliseconds")


def _with_priority(text: str, levelno: int) -> str:
    prefix = f"<{priority(levelno)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


def json_record(levelno: int, msg: str, created: float, logger: str = "agent") -> dict[str, Any]:
    """The common keys of a JSON log line."""
    import logging  # (a JSON line is being written: logging is in use, or an error ends the run)

    return {
        "time": rfc3339(created, utc=True),
        "level": logging.getLevelName(levelno).lower(),
        "logger": logger,
        "msg": msg,
    }


def error_line(message: str, fmt: str) -> str:
    """The CLI's one failure line in ``fmt`` (``ERROR: ...``, or a JSON object).

    Under journald it carries the ``<3>`` priority; a human line has no time, as it ends a
    command rather than reporting an event.
    """
    if fmt == "json":
        import time

        text = json.dumps(json_record(ERROR, message, time.time()), sort_keys=True)
    else:
        text = f"ERROR: {message}"
    return _with_priority(text, ERROR) if under_journald() else text


def setup(level: str, fmt: str, no_color: bool) -> None:
    """Send ``agent.*`` logs to stderr at ``level`` in ``fmt`` (human or json).

    While ``logging`` is deferred (:mod:`agent.core.deferred`), the handler is installed right
    after it loads, at its first use, and until then :class:`Logger` drops records below
    ``level`` without loading it (a CLI run at ``-l error`` that logs nothing never does).
    """
    levelno = _LEVELS.get(level, INFO)
    journal = under_journald()
    color = colors_allowed(no_color)

    def install() -> None:
        from agent.core.logformat import install_handler  # lazy: it needs logging

        install_handler(levelno, fmt, color=color, journal=journal)

    if when_loaded("logging", install):
        sys.modules["logging"].__dict__[PENDING_LEVEL] = levelno
        return
    install()


#: Where :func:`setup` notes its level on the deferred ``logging`` stand-in.
PENDING_LEVEL = "_agent_pending_level"


class Logger:
    """``logging.getLogger(name)`` for module-level loggers, without loading ``logging``.

    Each call loads ``logging`` (if deferred) and goes to the named logger, with the caller's
    line (``stacklevel``). A record of an ``agent.*`` logger below the level :func:`setup` set
    while ``logging`` is still deferred is dropped without loading it: nothing else could have
    set a level or a handler yet, so logging would drop it too.
    """

    __slots__ = ("_module", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._module = sys.modules.get("logging")  # the stand-in, while logging is deferred

    def _log(self, level: int, msg: object, args: tuple[object, ...], kwargs: Any) -> None:
        if level < _pending_level(self.name):
            return
        if isinstance(self._module, Deferred):
            self._module.load()  # (returns once setup's handler is installed, in any thread)
        import logging

        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 2
        logging.getLogger(self.name).log(level, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        """``logging.Logger.isEnabledFor``; ``False`` without loading ``logging`` when a record
        of ``level`` would be dropped while it is deferred."""
        if level < _pending_level(self.name):
            return False
        if isinstance(self._module, Deferred):
            self._module.load()
        import logging

        return logging.getLogger(self.name).isEnabledFor(level)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(DEBUG, msg, args, kwargs)

    def info(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(INFO, msg, args, kwargs)

    def warning(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(WARNING, msg, args, kwargs)

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._log(ERROR, msg, args, kwargs)

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self._log(ERROR, msg, args, kwargs)


def _pending_level(name: str) -> int:
    """The level :func:`setup` set while ``logging`` is deferred, for ``agent.*``; else 0."""
    if name != "agent" and not name.startswith("agent."):
        return 0
    level: int = getattr(sys.modules.get("logging"), "__dict__", {}).get(PENDING_LEVEL, 0)
    return level


def get_logger(name: str) -> Logger:
    """A module's logger: ``logger = get_logger(__name__)`` (see :class:`Logger`)."""
    return Logger(name)
