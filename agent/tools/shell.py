"""``agent shell SOURCE TARGET``: an interactive terminal on a host (Etcha's shell client).

Protocol (reference etcha-run.md §7, server side in :mod:`agent.daemon.shell`): every request is
``POST <scheme>://<host>:<port><pathShell>/<source>`` whose body is a JWT signed like a push
(``build.signingKey``, ``signingKeyPath`` or ``signingCommands``) with the claims ``c``/``r``
(the terminal size, 70x70 when stdin is not a terminal), ``i`` (the session id, absent at
first), ``s`` (base64 stdin, absent when empty) and ``exp`` = now + 5 s. The first request's
answer is a stream: the session id line, then ``o<base64>`` output lines (written to stdout) and
``k...`` keepalives (ignored). Each stdin chunk (at most 4096 bytes; one line at a time when stdin
is not a terminal) and each window resize is a follow-up request with ``i``.

Terminal: with stdin on a terminal it is set to raw mode (keys, Ctrl-C included, go to the
remote shell) and restored on every exit path: the end of the session, a broken connection, an
error, SIGINT, SIGTERM and SIGHUP. When piped stdin ends, Ctrl-D is sent (again every second
until the session ends) so the remote shell sees the end of its input too.

Exit codes: 0 when the session ended (the remote shell exited or the daemon closed it); 1 when it
could not start or the connection broke; 130 when interrupted (SIGINT, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import os
import queue
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, BinaryIO

from agent.config.schema import Config
from agent.core.errors import AgentError, SourceError, UsageError
from agent.net.tls import TLSOptions, check_fingerprint, client_context
from agent.tools.build import sign_claims
from agent.tools.push import client_options
from agent.tools.push_targets import PushTarget, ad_hoc_target, config_target, parse_pin

DEFAULT_SHELL_PATH = "/etcha/v1/shell"
#: Most stdin bytes per follow-up request.
CHUNK = 4096
#: Terminal size sent when stdin is not a terminal (Etcha's fallback).
FALLBACK_SIZE = 70
#: Seconds a signed request stays valid (Etcha: 5).
EXPIRES_IN = 5
#: Seconds without a byte from the stream before the connection counts as broken (the daemon
#: sends a keepalive at least every 10 s).
STREAM_TIMEOUT = 60.0
#: Seconds for connecting and for each follow-up request.
REQUEST_TIMEOUT = 30.0
#: Ctrl-D: sent when piped stdin ends (every :data:`EOT_PERIOD` seconds until the session ends).
EOT = b"\x04"
EOT_PERIOD = 1.0


@dataclass(frozen=True, slots=True)
class ShellTarget:
    """Where a shell request goes.

    Attributes:
        target: the push target (scheme, host, port, fingerprint).
        path: the shell path prefix (``pathShell``).
        tls: the client TLS options.
    """

    target: PushTarget
    path: str
    tls: TLSOptions

    def url_path(self, source: str) -> str:
        """``<pathShell>/<source>``."""
        from urllib.parse import quote

        prefix = "/" + self.path.strip("/") if self.path.strip("/") else ""
        return f"{prefix}/{quote(source, safe='')}"


def shell_target(
    config: Config,
    target: str,
    *,
    host: str | None = None,
    port: str | None = None,
    path: str | None = None,
    fingerprint: str | None = None,
) -> ShellTarget:
    """Resolve ``TARGET`` (a ``targets`` name) or ``-h HOST``.

    Raises:
        UsageError: neither names a host, or a malformed fingerprint.
        ConfigError: a bad target hostname.
    """
    pinned = parse_pin(fingerprint)
    tls = client_options(config)
    if host:
        t = ad_hoc_target(host, port=port, path=path, fingerprint=pinned)
        return ShellTarget(t, path or DEFAULT_SHELL_PATH, _pin(tls, t.fingerprint))
    if not target or target not in config.targets:
        raise UsageError(
            f"shell: expected TARGET to name one of targets ({', '.join(sorted(config.targets))})"
            f" or -h HOST, got {target!r}"
        )
    t = config_target(config, target, port=port or "", pinned=pinned)
    shell_path = path or config.targets[target].path_shell or DEFAULT_SHELL_PATH
    return ShellTarget(t, shell_path, _pin(tls, t.fingerprint))


def _pin(tls: TLSOptions, fingerprint: str) -> TLSOptions:
    return TLSOptions(tls.skip_verify, tls.ca_file, tls.no_system_ca, fingerprint)


def terminal_size(fd: int) -> tuple[int, int]:
    """``(cols, rows)`` of the terminal on ``fd``; 70x70 when it is not one."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return FALLBACK_SIZE, FALLBACK_SIZE
    return size.columns or FALLBACK_SIZE, size.lines or FALLBACK_SIZE


class ShellClient:
    """One session: the stream, the sender thread and the signed requests."""

    def __init__(self, config: Config, source: str, where: ShellTarget, stdin_fd: int) -> None:
        self.config = config
        self.source = source
        self.where = where
        self.stdin_fd = stdin_fd
        self.session = ""
        self.outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=64)
        self.failure = ""
        self.ended = threading.Event()

    def claims(self, data: bytes) -> dict[str, Any]:
        """The claims of a request carrying ``data``."""
        cols, rows = terminal_size(self.stdin_fd)
        out: dict[str, Any] = {"c": cols, "r": rows, "exp": int(time.time()) + EXPIRES_IN}
        if self.session:
            out["i"] = self.session
        if data:
            out["s"] = base64.b64encode(data).decode("ascii")
        return out

    def sign(self, data: bytes) -> bytes:
        """A signed request body."""
        return asyncio.run(sign_claims(self.claims(data), config=self.config)).encode()

    def connect(self) -> http.client.HTTPConnection:
        """A connection to the target (the certificate pin checked before any byte is sent)."""
        t = self.where.target
        if t.scheme == "http":
            return http.client.HTTPConnection(t.hostname, int(t.port), timeout=REQUEST_TIMEOUT)
        ctx = client_context(self.where.tls)
        conn = http.client.HTTPSConnection(
            t.hostname, int(t.port), timeout=REQUEST_TIMEOUT, context=ctx
        )
        conn.connect()
        if self.where.tls.fingerprint and isinstance(conn.sock, ssl.SSLSocket):
            check_fingerprint(conn.sock, self.where.tls.fingerprint)
        return conn

    def open(self) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the first request; return the stream once its session id line arrived.

        Raises:
            SourceError: no session id came (a refusal is an empty 404).
        """
        body = self.sign(b"")
        conn = self.connect()
        conn.request(
            "POST",
            self.where.url_path(self.source),
            body=body,
            headers={
                "Accept": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
                "Content-Type": "application/jwt",
            },
        )
        resp = conn.getresponse()
        line = resp.readline() if resp.status == 200 else b""
        if not line.endswith(b"\n") or not line.strip():
            conn.close()
            raise SourceError(f"error starting shell: received status {resp.status} {resp.reason}")
        self.session = line.strip().decode("ascii", errors="replace")
        if conn.sock is not None:
            conn.sock.settimeout(STREAM_TIMEOUT)
        return conn, resp

    def send_loop(self) -> None:
        """The sender thread: one follow-up request per queued chunk (``None`` stops it)."""
        conn: http.client.HTTPConnection | None = None
        while True:
            data = self.outbox.get()
            if data is None:
                break
            # A kept-alive connection the daemon closed while idle fails once: retry on a new one.
            for attempt in (1, 2):
                fresh = conn is None
                try:
                    if conn is None:
                        conn = self.connect()
                    conn.request("POST", self.where.url_path(self.source), body=self.sign(data))
                    conn.getresponse().read()
                    break
                except (OSError, http.client.HTTPException, AgentError) as exc:
                    self.failure = f"sending input failed: {exc}"
                    if conn is not None:
                        conn.close()
                    conn = None
                    if fresh or attempt == 2:
                        break
        if conn is not None:
            conn.close()

    def read_loop(self, tty: bool) -> None:
        """The stdin thread: raw chunks from a terminal, else one line at a time; Ctrl-D at the
        end of piped input."""
        if tty:
            while True:
                try:
                    data = os.read(self.stdin_fd, CHUNK)
                except OSError:
                    return
                if not data:
                    return
                self.outbox.put(data)
        with os.fdopen(os.dup(self.stdin_fd), "rb") as stream:
            for line in _lines(stream):
                self.outbox.put(line)
        # A Ctrl-D that arrives while a command runs can be lost when the remote shell's line
        # editor switches the pty mode, so repeat it until the session ends.
        while not self.ended.is_set():
            _offer(self.outbox, EOT)
            self.ended.wait(EOT_PERIOD)


def _lines(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        line = stream.readline(CHUNK)
        if not line:
            return
        yield line


def pump(resp: http.client.HTTPResponse, out_fd: int) -> None:
    """Write the stream's ``o`` records to ``out_fd`` until it ends (other lines are ignored).

    Raises:
        OSError, http.client.HTTPException: the connection broke.
    """
    while True:
        line = resp.readline()
        if not line:
            return
        if not line.endswith(b"\n"):
            raise http.client.IncompleteRead(line)
        if line.startswith(b"o"):
            with contextlib.suppress(ValueError):
                _write_all(out_fd, base64.b64decode(line[1:].strip()))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Raw mode on ``fd`` when it is a terminal (yields whether it is); always restored.

    SIGTERM and SIGHUP end the session like SIGINT does (the ``finally`` restores the terminal).
    """
    import termios
    import tty

    def leave(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    saved_handlers = {
        sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    }
    saved = None
    if os.isatty(fd):
        saved = termios.tcgetattr(fd)
    try:
        if saved is not None:
            tty.setraw(fd, termios.TCSANOW)
        yield saved is not None
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        for sig, handler in saved_handlers.items():
            signal.signal(sig, handler)


def run_shell(
    config: Config,
    source: str,
    where: ShellTarget,
    *,
    stdin_fd: int = 0,
    stdout_fd: int = 1,
    report: Callable[[str], None] | None = None,
) -> int:
    """Open a session, stream it until it ends; return the exit code (see the module docstring).

    Raises:
        AgentError: signing failed or the session could not start (no session id).
    """
    client = ShellClient(config, source, where, stdin_fd)
    try:
        conn, resp = client.open()
    except (OSError, http.client.HTTPException) as exc:
        raise SourceError(f"error starting shell: {exc}") from exc
    sender = threading.Thread(target=client.send_loop, name="shell-send", daemon=True)
    sender.start()
    code = 0
    with raw_terminal(stdin_fd) as tty:
        reader = threading.Thread(target=client.read_loop, args=(tty,), daemon=True)
        reader.start()
        old_winch = signal.signal(signal.SIGWINCH, lambda s, f: _offer(client.outbox, b""))
        try:
            pump(resp, stdout_fd)
        except (OSError, http.client.HTTPException) as exc:
            code = 1
            client.failure = f"connection lost: {exc}"
        except KeyboardInterrupt:
            code = 130
            client.failure = "interrupted"
        finally:
            signal.signal(signal.SIGWINCH, old_winch)
            client.ended.set()
            conn.close()
            _offer(client.outbox, None)
    sender.join(timeout=1.0)
    if code and report is not None:
        report(client.failure)
    return code


def _offer(box: queue.Queue[bytes | None], item: bytes | None) -> None:
    with contextlib.suppress(queue.Full):
        box.put_nowait(item)


__all__ = [
    "DEFAULT_SHELL_PATH",
    "ShellClient",
    "ShellTarget",
    "pump",
    "raw_terminal",
    "run_shell",
    "shell_target",
    "terminal_size",
]
