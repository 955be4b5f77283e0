"""One remote shell session and the pieces of its wire protocol (see :mod:`agent.daemon.shell`).

:class:`Session` holds a shell's process, the master side of its pty and who opened it;
:func:`parse_claims` reads the ``c``/``r``/``i``/``s`` claims; :class:`TokenBucket` bounds the
output rate; :func:`keepalive_record` is a ``k`` line; :func:`stop_group` ends a session's
process group.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import fcntl
import os
import secrets
import signal
import string
import struct
import termios
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.trust.gate import AdmittedToken

#: Most stdin bytes one request may carry (413 beyond).
MAX_STDIN_BYTES = 64 * 1024
#: Most bytes read from the pty per output record.
READ_CHUNK = 4096
#: Terminal size used when a request gives none (Etcha's fallback).
FALLBACK_SIZE = 70
#: Seconds a follow-up's stdin may take to enter the pty before the rest is dropped.
WRITE_TIMEOUT = 5.0
#: Seconds between SIGHUP and SIGKILL of a closed session's process group.
KILL_GRACE = 0.5
_KEEPALIVE_CHARS = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ShellClaims:
    """The shell claims of a request.

    Attributes:
        cols: terminal columns (``c``), 1..65535.
        rows: terminal rows (``r``), 1..65535.
        session: the session id (``i``; ``""`` at first).
        stdin: the decoded ``s`` bytes.
    """

    cols: int
    rows: int
    session: str
    stdin: bytes


class ClaimsError(ValueError):
    """The shell claims are unusable; ``status`` is the answer (400 or 413)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 65536:
        return FALLBACK_SIZE
    return int(value)


def parse_claims(claims: Mapping[str, Any]) -> ShellClaims:
    """Read ``c``, ``r``, ``i`` and ``s``; a missing or out-of-range size gives 70.

    Raises:
        ClaimsError: ``i`` or ``s`` is not a string, ``s`` is not base64 (400), or it decodes
            to more than :data:`MAX_STDIN_BYTES` (413).
    """
    session = claims.get("i", "")
    text = claims.get("s", "")
    if not isinstance(session, str) or not isinstance(text, str):
        raise ClaimsError("shell claims: expected i and s to be strings", 400)
    if len(text) > (MAX_STDIN_BYTES * 4) // 3 + 4:
        raise ClaimsError(f"shell claims: expected at most {MAX_STDIN_BYTES} bytes of stdin", 413)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ClaimsError(f"shell claims: expected s to be base64, got {exc}", 400) from exc
    if len(data) > MAX_STDIN_BYTES:
        raise ClaimsError(f"shell claims: expected at most {MAX_STDIN_BYTES} bytes of stdin", 413)
    return ShellClaims(_size(claims.get("c")), _size(claims.get("r")), session, data)


def keepalive_record() -> bytes:
    """``k`` and 0-19 random characters, a line."""
    return (
        "k" + "".join(secrets.choice(_KEEPALIVE_CHARS) for _ in range(secrets.randbelow(20))) + "\n"
    ).encode()


def set_size(fd: int, cols: int, rows: int) -> None:
    """Set a pty's window size (the foreground job gets SIGWINCH)."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class TokenBucket:
    """Bounds a byte rate: :meth:`spend` sleeps while the bucket is in debt."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._clock = clock
        self._at = clock()

    def delay_after(self, amount: int) -> float:
        """Take ``amount``; return the seconds to wait before the next take."""
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate) - amount
        self._at = now
        return 0.0 if self._level >= 0 else -self._level / self.rate

    async def spend(self, amount: int) -> None:
        """Take ``amount`` and wait while the bucket is in debt."""
        delay = self.delay_after(amount)
        if delay > 0:
            await asyncio.sleep(delay)


class Session:
    """One open shell: its process, pty and who opened it."""

    def __init__(
        self,
        sid: str,
        token: AdmittedToken,
        remote: str,
        proc: asyncio.subprocess.Process,
        master: int,
        clock: Callable[[], float],
    ) -> None:
        self.sid = sid
        self.source = token.source
        self.key_id = token.key_id
        self.chain = token.chain_key_ids
        self.remote = remote
        self.proc = proc
        self.master = master
        self.clock = clock
        self.started = clock()
        self.last_active = self.started
        self.closing = asyncio.Event()
        self.write_lock = asyncio.Lock()
        self.closed = False

    def touch(self) -> None:
        """Note activity (input or output): the idle timeout starts again."""
        self.last_active = self.clock()

    def same_signer(self, token: AdmittedToken) -> bool:
        """Whether ``token`` was signed by the key (and chain) that opened the session."""
        return (
            token.source == self.source
            and token.key_id == self.key_id
            and token.chain_key_ids == self.chain
        )

    async def wait_readable(self, timeout: float) -> str:
        """Wait for output, the shell's exit, a close, or ``timeout``.

        Returns:
            ``"read"``, ``"exited"``, ``"closing"`` or ``"timeout"``.
        """
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.master, _resolve, ready)
        exited = asyncio.ensure_future(self.proc.wait())
        closing = asyncio.ensure_future(self.closing.wait())
        waiters: set[asyncio.Future[Any]] = {ready, exited, closing}
        try:
            await asyncio.wait(
                waiters,
                timeout=max(timeout, 0.0),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            loop.remove_reader(self.master)
            for fut in (ready, exited, closing):
                fut.cancel()
        if self.closing.is_set():
            return "closing"
        if ready.done() and not ready.cancelled():
            return "read"
        if self.proc.returncode is not None:
            return "exited"
        return "timeout"

    async def resize(self, cols: int, rows: int) -> None:
        """Set the window size (the foreground job gets SIGWINCH); nothing once closed."""
        async with self.write_lock:
            if not self.closed:
                with contextlib.suppress(OSError):
                    set_size(self.master, cols, rows)

    async def close_pty(self) -> None:
        """Close the master side, after any write in progress (its fd number is never reused
        by a write or resize meant for this session)."""
        async with self.write_lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(OSError):
                    os.close(self.master)

    async def write(self, data: bytes) -> int:
        """Write ``data`` to the pty (bounded by :data:`WRITE_TIMEOUT`); return bytes written."""
        loop = asyncio.get_running_loop()
        done = 0
        deadline = loop.time() + WRITE_TIMEOUT
        async with self.write_lock:
            while done < len(data) and not self.closed:
                try:
                    done += os.write(self.master, data[done:])
                    continue
                except BlockingIOError:
                    pass
                except OSError:
                    return done
                writable: asyncio.Future[None] = loop.create_future()
                loop.add_writer(self.master, _resolve, writable)
                try:
                    await asyncio.wait_for(writable, max(deadline - loop.time(), 0.0))
                except TimeoutError:
                    return done
                finally:
                    loop.remove_writer(self.master)
        return done


def keepalive_interval() -> float:
    """A random 1-10 s (Etcha's keepalive period)."""
    return 1.0 + secrets.randbelow(9001) / 1000.0


def read_chunk(fd: int) -> bytes | None:
    """Up to :data:`READ_CHUNK` bytes; ``b""`` at the end (EIO: no process holds the pty);
    ``None`` when nothing is there yet."""
    try:
        return os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return None
    except OSError:
        return b""


async def stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGHUP the session's process group, SIGKILL it after :data:`KILL_GRACE`, reap it."""
    for sig in (signal.SIGHUP, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), KILL_GRACE)
        if proc.returncode is not None and sig == signal.SIGHUP:
            # The leader is gone; still SIGKILL what may be left of its group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


__all__ = [
    "FALLBACK_SIZE",
    "MAX_STDIN_BYTES",
    "ClaimsError",
    "Session",
    "ShellClaims",
    "TokenBucket",
    "keepalive_interval",
    "keepalive_record",
    "parse_claims",
    "read_chunk",
    "set_size",
    "stop_group",
]
