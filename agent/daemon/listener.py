"""Bounded connections for the daemon's listener: caps, header deadline, keep-alive, accept errors.

Responsibility: everything below HTTP that protects the daemon from idle, half-sent or too many
connections (issue 12.2). :func:`start_listener` is what :meth:`agent.daemon.service.Daemon.
_start_listener` calls; it returns the :class:`agent.net.httpserver.RunningServer` the daemon
stops at shutdown.

How it works:

- The listening socket is served by :class:`ConnectionGuard` protocols that wrap the HTTP
  server's connections (:class:`agent.net.httpserver.HTTPProtocol`, h11). A connection is
  counted per client (:func:`agent.daemon.ratelimit.client_key`: an IPv4 address, or the /64 of
  an IPv6 address) and in all. Over ``run.maxConnectionsPerAddress`` or ``run.maxConnections``
  it is closed at once (before TLS, before HTTP parsing) and counted in
  ``agent_connections_refused_total{reason="address"|"total"}``.
- ``run.maxConnections`` is clamped below the process's file-descriptor limit (``RLIMIT_NOFILE``
  soft limit minus :data:`FD_RESERVE`, kept for commands, pipes and state files); the clamp is
  logged.
- TLS is started by the guard (``loop.start_tls``) after the connection was admitted, so a
  client that never completes a handshake holds a counted slot and is bound by the header
  deadline too.
- ``run.timeoutHeaders`` starts when the connection opens (and again at the first byte after a
  finished request) and ends when a complete request reaches the application (the guard's
  middleware); a connection still without a complete request line and headers by then
  is closed. ``run.timeoutBody`` is applied by the handlers that read bodies
  (:func:`agent.daemon.server.read_body`); ``run.keepaliveTimeout`` is the HTTP server's idle
  timeout.
- Accept errors (``EMFILE`` ...) and refusals are logged at most once a second, with a count of
  what was not logged.

Invariants: every admitted connection is released exactly once; nothing here is global (the
loop's exception handler is wrapped while the listener runs and restored when it stops).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.core.logs import escape
from agent.daemon.ratelimit import client_key
from agent.net.httpserver import App, Handler, HTTPServer, Request, Response, RunningServer

if TYPE_CHECKING:
    from agent.config.schema import RunConfig

logger = logging.getLogger(__name__)

#: File descriptors kept free below RLIMIT_NOFILE for commands, pipes, logs and state files.
FD_RESERVE = 64
#: Errors of accept() that mean "out of resources" (logged at most once a second).
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Most bytes held between a finished TLS handshake and the HTTP server taking the connection.
EARLY_DATA_LIMIT = 1024 * 1024

#: Where :func:`agent.daemon.server.read_body` caches a request's body (an
#: ``agent.daemon.server.Body``) in ``Request.state``.
BODY_KEY = "agent.body"


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The connection limits of the listener (``run.*``; docs/security.md "Limits").

    Attributes:
        max_connections: open connections in all (before the fd clamp).
        max_connections_per_address: open connections per client key.
        timeout_headers: seconds for the request line and headers (and the TLS handshake).
        timeout_body: seconds to read a body.
        keepalive_timeout: seconds an idle kept-alive connection stays open.
    """

    max_connections: int = 256
    max_connections_per_address: int = 32
    timeout_headers: float = 10.0
    timeout_body: float = 30.0
    keepalive_timeout: float = 15.0

    @classmethod
    def from_run(cls, run: RunConfig) -> ListenerLimits:
        """The limits configured in ``run``."""
        return cls(
            max_connections=int(run.max_connections),
            max_connections_per_address=int(run.max_connections_per_address),
            timeout_headers=float(run.timeout_headers),
            timeout_body=float(run.timeout_body),
            keepalive_timeout=float(run.keepalive_timeout),
        )


def fd_clamped(max_connections: int, *, soft_limit: int | None = None) -> int:
    """``max_connections`` clamped below the file-descriptor limit.

    Args:
        max_connections: the configured cap.
        soft_limit: ``RLIMIT_NOFILE``'s soft limit (read from the process when ``None``).

    Returns:
        ``min(max_connections, soft_limit - FD_RESERVE)``, at least 1 (a quarter of the limit
        when the reserve does not fit); unchanged when the limit is infinite.
    """
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY or soft_limit < 0:
        return max_connections
    room = soft_limit - FD_RESERVE
    if room < 1:
        room = max(1, soft_limit // 4)
    return min(max_connections, room)


class LogThrottle:
    """Lets one log line through per ``interval`` seconds and counts the ones held back.

    Args:
        interval: seconds between two log lines.
        clock: monotonic seconds; for tests.
    """

    def __init__(self, interval: float = 1.0, *, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def allow(self) -> int | None:
        """Whether to log now.

        Returns:
            ``None`` when the line must be dropped; else how many lines were dropped since the
            last one that was logged.
        """
        now = self._clock()
        if self._last is not None and now - self._last < self.interval:
            self._held += 1
            return None
        self._last = now
        held, self._held = self._held, 0
        return held


def accept_error_handler(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
    throttle: LogThrottle,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that logs accept() resource errors at most once a second.

    Args:
        previous: the loop's handler before (``None``: the default handler).
        throttle: decides when to log.

    Returns:
        The handler; every other context goes to ``previous``.
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS and "accept" in message:
            held = throttle.allow()
            if held is not None:
                logger.error(
                    "Listener: accepting a connection failed: %s (%d similar errors not logged)",
                    exc.strerror or exc,
                    held,
                )
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


class ConnectionGuard:
    """Counts and bounds the listener's connections (see the module docstring).

    Args:
        limits: the limits; ``max_connections`` should already be fd-clamped.
        on_refused: called with ``"total"`` or ``"address"`` for each refused connection.
        clock: monotonic seconds for the log throttles; for tests.
    """

    def __init__(
        self,
        limits: ListenerLimits,
        *,
        on_refused: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.total = 0
        self.per_address: dict[str, int] = {}
        self._on_refused = on_refused
        self._by_transport: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self._refused_log = LogThrottle(clock=clock)
        self._timeout_log = LogThrottle(clock=clock)
        self.accept_log = LogThrottle(clock=clock)

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address`` unless a cap is reached.

        Args:
            address: the client key.

        Returns:
            ``None`` when admitted (call :meth:`release` later), else the refusal reason.
        """
        if self.per_address.get(address, 0) >= self.limits.max_connections_per_address:
            return "address"
        if self.total >= self.limits.max_connections:
            return "total"
        self.total += 1
        self.per_address[address] = self.per_address.get(address, 0) + 1
        return None

    def release(self, address: str) -> None:
        """Forget one admitted connection of ``address``."""
        self.total -= 1
        left = self.per_address.get(address, 0) - 1
        if left > 0:
            self.per_address[address] = left
        else:
            self.per_address.pop(address, None)

    def refused(self, reason: str, address: str) -> None:
        """Count (and, at most once a second, log) a refused connection."""
        if self._on_refused is not None:
            self._on_refused(reason)
        held = self._refused_log.allow()
        if held is not None:
            setting = (
                f"run.maxConnectionsPerAddress {self.limits.max_connections_per_address}"
                if reason == "address"
                else f"run.maxConnections {self.limits.max_connections}"
            )
            logger.warning(
                "Listener: closed a connection from %s: %s reached (%d more not logged)",
                escape(address),
                setting,
                held,
            )

    def timed_out(self, address: str) -> None:
        """Log (at most once a second) a connection closed by the header deadline."""
        held = self._timeout_log.allow()
        if held is not None:
            logger.warning(
                "Listener: closed a connection from %s: no complete request headers within "
                "run.timeoutHeaders %ss (%d more not logged)",
                escape(address),
                self.limits.timeout_headers,
                held,
            )

    def protocol_factory(
        self, inner: Callable[[], asyncio.Protocol], ssl_context: ssl.SSLContext | None
    ) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to give ``loop.create_server`` (with ``ssl=None``).

        Args:
            inner: the HTTP server's factory (:meth:`HTTPServer.protocol`).
            ssl_context: the listener's TLS context; the guard starts TLS itself.

        Returns:
            A factory of guarded protocols.
        """

        def make() -> asyncio.Protocol:
            return _GuardedProtocol(self, inner, ssl_context)

        return make

    def _register(self, transport: asyncio.BaseTransport, proto: _GuardedProtocol) -> None:
        self._by_transport[transport] = proto

    def _unregister(self, transport: asyncio.BaseTransport | None) -> None:
        if transport is not None:
            self._by_transport.pop(transport, None)

    def middleware(self) -> Callable[[Request, Handler], Awaitable[Response]]:
        """The middleware that ends the header deadline when a request starts.

        Returns:
            A middleware; put it first (outermost).
        """

        async def guard(request: Request, handler: Handler) -> Response:
            transport = request.transport
            conn = self._by_transport.get(transport) if transport is not None else None
            if conn is not None:
                conn.request_started()
            try:
                return await handler(request)
            finally:
                if conn is not None:
                    conn.request_done()

        return guard


class _GuardedProtocol(asyncio.Protocol):
    """One connection: admission, TLS, header deadline; delegates everything to the HTTP one."""

    def __init__(
        self,
        guard: ConnectionGuard,
        make_inner: Callable[[], asyncio.Protocol],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self._guard = guard
        self._make_inner = make_inner
        self._ssl = ssl_context
        self._inner: asyncio.Protocol | None = None
        self._raw: asyncio.Transport | None = None
        self._app_transport: asyncio.BaseTransport | None = None
        self._address: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._lost = False
        self._tls_task: asyncio.Task[None] | None = None
        # Application data that arrives between the TLS handshake and _start_inner.
        self._early: list[bytes] = []
        self._early_eof = False

    # -- admission ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw: asyncio.Transport = transport  # type: ignore[assignment]
        self._raw = raw
        peer = raw.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        address = client_key(host)
        reason = self._guard.admit(address)
        if reason is not None:
            raw.abort()
            self._guard.refused(reason, address)
            return
        self._address = address
        self._arm()
        if self._ssl is None:
            self._start_inner(raw)
            return
        raw.pause_reading()
        loop = asyncio.get_running_loop()
        self._tls_task = loop.create_task(self._start_tls(loop, raw, self._ssl))

    async def _start_tls(
        self, loop: asyncio.AbstractEventLoop, raw: asyncio.Transport, context: ssl.SSLContext
    ) -> None:
        try:
            tls = await loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=max(self._guard.limits.timeout_headers, 0.001),
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError) as exc:
            logger.debug("Listener: TLS handshake failed: %s", escape(exc))
            raw.abort()
            self._release()
            return
        if tls is None or self._lost:
            raw.abort()
            self._release()
            return
        self._start_inner(tls)

    def _start_inner(self, transport: asyncio.BaseTransport) -> None:
        inner = self._make_inner()
        self._inner = inner
        self._app_transport = transport
        self._guard._register(transport, self)
        inner.connection_made(transport)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)
        if self._early_eof:
            inner.eof_received()

    def _release(self) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        self._guard._unregister(self._app_transport)
        self._disarm()

    # -- header deadline ---------------------------------------------------------------------

    def _arm(self) -> None:
        timeout = self._guard.limits.timeout_headers
        if timeout > 0 and self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(timeout, self._deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deadline(self) -> None:
        self._timer = None
        if self._in_request or self._lost or self._raw is None:
            return
        self._guard.timed_out(self._address or "")
        self._raw.abort()

    def request_started(self) -> None:
        """A complete request reached the application: the header deadline is met."""
        self._in_request = True
        self._disarm()

    def request_done(self) -> None:
        """The application answered: the next request's deadline starts at its first byte."""
        self._in_request = False

    # -- delegation --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            if self._address is not None:  # admitted, TLS just finished: keep for HTTP
                self._early.append(data)
                if sum(map(len, self._early)) > EARLY_DATA_LIMIT and self._raw is not None:
                    self._raw.abort()
            return
        if not self._in_request and self._timer is None:
            self._arm()
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            self._early_eof = True
            return None
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._release()
        if self._inner is not None:
            self._inner.connection_lost(exc)


def _clamped_limits(limits: ListenerLimits) -> ListenerLimits:
    """``limits`` with ``max_connections`` clamped to the file-descriptor limit (logged)."""
    clamped = fd_clamped(limits.max_connections)
    if clamped >= limits.max_connections:
        return limits
    logger.warning(
        "run.maxConnections %d clamped to %d: the file-descriptor limit (RLIMIT_NOFILE) "
        "is %d and %d are kept for commands and state files",
        limits.max_connections,
        clamped,
        resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        FD_RESERVE,
    )
    return dataclasses.replace(limits, max_connections=clamped)


async def start_listener(
    app: App,
    host: str | None,
    port: int,
    *,
    limits: ListenerLimits,
    ssl_context: ssl.SSLContext | None = None,
    on_refused: Callable[[str], None] | None = None,
    shutdown_timeout: float = 5.0,
) -> RunningServer:
    """Serve ``app`` on ``host:port`` with bounded connections.

    Args:
        app: the application (the guard's middleware is put first).
        host: the bind address (``None``: all).
        port: the port.
        limits: the configured limits (``max_connections`` is fd-clamped here).
        ssl_context: the TLS context, or ``None`` for plain HTTP.
        on_refused: counts refused connections (``Metrics.connection_refused``).
        shutdown_timeout: seconds to let open requests finish at shutdown.

    Returns:
        The started server (``stop()`` stops accepting, ``cleanup()`` shuts it down).

    Raises:
        OSError: the address could not be bound.
    """
    limits = _clamped_limits(limits)
    guard = ConnectionGuard(limits, on_refused=on_refused)
    app.middlewares.insert(0, guard.middleware())
    http = HTTPServer(app, keepalive_timeout=limits.keepalive_timeout)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        guard.protocol_factory(http.protocol, ssl_context),
        host,
        port,
        backlog=128,
        reuse_address=True,
    )
    previous = loop.get_exception_handler()
    loop.set_exception_handler(accept_error_handler(previous, guard.accept_log))

    def restore() -> None:
        loop.set_exception_handler(previous)

    return RunningServer(server, http, shutdown_timeout=shutdown_timeout, on_stop=restore)


__all__ = [
    "FD_RESERVE",
    "ConnectionGuard",
    "ListenerLimits",
    "LogThrottle",
    "accept_error_handler",
    "fd_clamped",
    "start_listener",
]
