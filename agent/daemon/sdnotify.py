"""systemd ``sd_notify`` without a dependency: one datagram to ``$NOTIFY_SOCKET``.

``NOTIFY_SOCKET`` is a file system path (``/run/systemd/notify``) or an abstract socket name
written with a leading ``@``. When it is unset (not started by systemd with ``Type=notify``),
every call is a no-op that returns ``False``. Sending never raises: a failure is logged and
reported as ``False``, because the daemon must keep running whatever the service manager does.
Other socket forms (``vsock:``) are not supported and return ``False``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def notify(message: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Send one notification datagram to the service manager.

    Args:
        message: newline-separated ``KEY=value`` assignments, e.g. ``"READY=1"``.
        environ: where to read ``NOTIFY_SOCKET``; for tests.

    Returns:
        ``True`` when the datagram was sent, ``False`` when ``NOTIFY_SOCKET`` is unset or
        unsupported, or sending failed.
    """
    value = environ.get("NOTIFY_SOCKET", "")
    if not value:
        return False
    address = _address(value)
    if address is None:
        logger.debug("Ignoring unsupported NOTIFY_SOCKET %r", value)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode("utf-8"))
    except OSError as exc:
        logger.warning("Cannot notify service manager at %s: %s", value, exc.strerror or exc)
        return False
    return True


def ready(*, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell the service manager start-up is complete (``READY=1``)."""
    return notify("READY=1", environ=environ)


def stopping(*, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell the service manager the daemon is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1", environ=environ)


def reloading(*, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell the service manager a reload started (``RELOADING=1`` with ``MONOTONIC_USEC``).

    Send :func:`ready` when the reload is done.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", environ=environ)


def status(text: str, *, environ: Mapping[str, str] = os.environ) -> bool:
    """Set the one-line status shown by ``systemctl status`` (``STATUS=<text>``)."""
    return notify("STATUS=" + " ".join(text.splitlines()), environ=environ)


def watchdog(*, environ: Mapping[str, str] = os.environ) -> bool:
    """Keep-alive ping for ``WatchdogSec=`` (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1", environ=environ)


def watchdog_interval(*, environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between required :func:`watchdog` pings, or ``None`` when no watchdog is set.

    Reads ``WATCHDOG_USEC``; ``WATCHDOG_PID``, when set, must be this process. The result is
    half the timeout, as systemd recommends.
    """
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None
