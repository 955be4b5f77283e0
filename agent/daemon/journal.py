"""Forwarding audit entries to journald over its native protocol (stdlib only).

The protocol (systemd's "Native Journal Protocol", https://systemd.io/JOURNAL_NATIVE_PROTOCOL/):
one datagram per entry to ``/run/systemd/journal/socket``; each field is ``NAME=value\\n``, or,
when the value holds a newline, ``NAME\\n`` + the value's length as a little-endian 64-bit
integer + the value + ``\\n``. A datagram too large for the socket is written to a sealed memfd
whose descriptor is passed instead (``SCM_RIGHTS``).

Why no library: ``systemd-python`` builds against libsystemd-dev and ``cysystemd`` ships a
compiled extension for the same few lines; the protocol is documented and stable, so the agent
writes it with :mod:`socket` and needs no new dependency.

Invariants: field names are ``[A-Z0-9_]``, not starting with ``_`` (journald reserves those);
a send failure never raises into the audit writer (:meth:`JournalSink.send` returns ``False``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import socket
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["JOURNAL_SOCKET", "MESSAGE_ID", "JournalSink", "encode_fields", "journal_fields"]

logger = logging.getLogger(__name__)

#: journald's native socket.
JOURNAL_SOCKET: Final = Path("/run/systemd/journal/socket")
#: The ``MESSAGE_ID`` of every audit entry (``journalctl MESSAGE_ID=...`` finds them all).
MESSAGE_ID: Final = "5b0a4f4d2b6c4a8e9c1e7d3f1a2b3c4d"

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")
_PRIORITY_INFO: Final = "6"
_PRIORITY_WARNING: Final = "4"


def _field_name(key: str) -> str:
    name = "AGENT_" + _CAMEL.sub(r"_\1", key).upper()
    return re.sub(r"[^A-Z0-9_]", "_", name)


def journal_fields(entry: Mapping[str, Any]) -> dict[str, str]:
    """The journald fields of one audit entry: ``MESSAGE``, ``MESSAGE_ID``, ``PRIORITY``,
    ``SYSLOG_IDENTIFIER`` and ``AGENT_<KEY>`` for each key (``AGENT_SEQ``, ``AGENT_HASH``, ...)."""
    event = str(entry.get("event", ""))
    parts = [f"audit {event}", f"seq {entry.get('seq')}"]
    if entry.get("source"):
        parts.append(f"source {entry['source']}")
    if entry.get("reason"):
        parts.append(f"reason {entry['reason']}")
    out = {
        "MESSAGE": ", ".join(parts),
        "MESSAGE_ID": MESSAGE_ID,
        "PRIORITY": _PRIORITY_WARNING if event in ("refuse", "repair") else _PRIORITY_INFO,
        "SYSLOG_IDENTIFIER": "agent",
    }
    for key, value in entry.items():
        out[_field_name(key)] = value if isinstance(value, str) else json.dumps(value)
    return out


def encode_fields(fields: Mapping[str, str]) -> bytes:
    """One native-protocol datagram."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalSink:
    """Sends audit entries to journald (or to any unix datagram socket, for tests).

    Args:
        path: the socket (default :data:`JOURNAL_SOCKET`).
    """

    def __init__(self, path: Path = JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock: socket.socket | None = None
        self._warned = False

    def send(self, entry: Mapping[str, Any]) -> bool:
        """Send one entry; ``False`` (logged once) when journald is not reachable."""
        payload = encode_fields(journal_fields(entry))
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock = self._sock
            try:
                sock.sendto(payload, str(self.path))
            except OSError as exc:
                if exc.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(sock, payload)
        except OSError as exc:
            if not self._warned:
                logger.warning("Audit: journald at %s not reachable: %s", self.path, exc)
                self._warned = True
            return False
        return True

    def _send_memfd(self, sock: socket.socket, payload: bytes) -> None:
        """A datagram too large for the socket: pass a sealed memfd holding it."""
        fd = os.memfd_create("agent-audit", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))
            sock.sendmsg([], [rights], 0, str(self.path))
        finally:
            os.close(fd)

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
