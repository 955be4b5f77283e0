"""A small asyncio HTTP/1.1 server on h11: the daemon's listener without aiohttp (issue 14.5).

Responsibility: HTTP framing and routing only. :class:`App` routes a :class:`Request` by method
and path to a handler (``async (Request) -> Response``) through middlewares
(``async (Request, handler) -> Response``, outermost first); :class:`HTTPProtocol` is one
connection (h11 parses and frames, this module reads and writes); :func:`start_server` listens.
Connection admission, TLS start and the header deadline are :mod:`agent.daemon.listener`'s: it
wraps :meth:`HTTPServer.protocol`.

- Keep-alive: a kept-alive connection idle for ``keepalive_timeout`` seconds is closed;
  pipelined requests are answered in order, one at a time.
- Bounds: request line and each header line at most :data:`MAX_LINE_BYTES` bytes, the whole head
  at most :data:`MAX_HEAD_BYTES` (beyond: ``400`` and the connection closed). Bodies are read by
  the handler (:meth:`Request.readany`); reading pauses the socket beyond :data:`BODY_BUFFER`
  buffered bytes. A body the handler left unread (a ``413``) is drained for at most
  :data:`LINGER_SECONDS` (and :data:`LINGER_BYTES`) so the client reads the answer, then the
  connection is kept or closed.
- Answers carry ``Content-Length`` (or ``Transfer-Encoding: chunked`` for a
  :class:`StreamResponse`), ``Date`` and, when set, ``Content-Type``; an empty body carries no
  ``Content-Type``. A handler that raises is answered ``500`` (logged).
- Shutdown (:meth:`HTTPServer.shutdown`): idle connections are closed at once, running handlers
  get ``timeout`` seconds, then their connections are aborted.

Invariants: nothing global; every connection is in :attr:`HTTPServer.connections` until lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from http import HTTPStatus

import h11

from agent.net.httptypes import (
    BODY_BUFFER,
    App,
    Handler,
    Headers,
    HTTPError,
    Middleware,
    Query,
    Request,
    Response,
    Router,
    StreamResponse,
    not_found,
)

logger = logging.getLogger(__name__)

#: Longest request line or header line (aiohttp's limit, kept: docs/security.md "Limits").
MAX_LINE_BYTES = 8190
#: Longest request head (request line and all headers).
MAX_HEAD_BYTES = 64 * 1024
#: Seconds and bytes an unread body is drained after the answer before the connection closes.
LINGER_SECONDS = 10.0
LINGER_BYTES = 16 * 1024 * 1024

_BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 11\r\nConnection: close\r\n\r\nBad Request"
)


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """RFC 9110 ``IMF-fixdate``: ``Tue, 01 Dec 2026 02:20:13 GMT`` (no ``email`` import)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


class _DateCache:
    """``Date`` header text, formatted at most once a second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._text = second, http_date(second)
        return self._text


class HTTPServer:
    """Serves an :class:`App`: give :meth:`protocol` to ``loop.create_server``.

    Args:
        app: the application.
        keepalive_timeout: seconds an idle kept-alive connection stays open.
    """

    def __init__(self, app: App, *, keepalive_timeout: float = 15.0) -> None:
        self.app = app
        self.keepalive_timeout = keepalive_timeout
        self.connections: set[HTTPProtocol] = set()
        self.closing = False
        self.dates = _DateCache()

    def protocol(self) -> HTTPProtocol:
        """A new connection's protocol."""
        return HTTPProtocol(self)

    async def shutdown(self, timeout: float) -> None:
        """Run ``on_shutdown``, close idle connections, give handlers ``timeout`` s, abort."""
        for callback in self.app.on_shutdown:
            try:
                await callback()
            except Exception:
                logger.exception("HTTP server: a shutdown callback failed")
        self.closing = True
        for conn in list(self.connections):
            conn.close_if_idle()
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for conn in list(self.connections):
            if conn.task is None:
                conn.close()  # answered meanwhile: what was written is still sent
            else:
                conn.abort()


def _head_too_long(event: h11.Request) -> bool:
    """The request target or a header line over :data:`MAX_LINE_BYTES`, or the whole head over
    :data:`MAX_HEAD_BYTES`. h11's own bound (``max_incomplete_event_size``) holds only while a
    head is incomplete: a head that arrives whole in one read is measured here."""
    if len(event.target) > MAX_LINE_BYTES:
        return True
    head = len(event.method) + len(event.target) + len(b"  HTTP/1.1\r\n\r\n")
    for name, value in event.headers:
        line = len(name) + len(value) + 2  # "name: value"
        if line > MAX_LINE_BYTES:
            return True
        head += line + 2
    return head > MAX_HEAD_BYTES


class HTTPProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection (see the module docstring)."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self._transport: asyncio.Transport | None = None
        self._remote = ""
        self._request: Request | None = None  # the request whose body is being received
        self.task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._drain: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._paused_reading = False
        self._lingering = -1  # bytes drained of a body the handler did not read (-1: not draining)
        self._head_request = False
        self._backlog = 0  # bytes received for later requests while one is answered

    # -- asyncio callbacks -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self._server.connections.add(self)
        self._arm(self._server.keepalive_timeout)

    def data_received(self, data: bytes) -> None:
        if self._lingering < 0:  # idle keep-alive timer (the drain timer keeps running)
            self._cancel_timer()
        if self.task is not None and self._request is None:  # pipelined while answering
            self._backlog += len(data)
            if self._backlog > MAX_HEAD_BYTES:
                self._pause_reading()
        try:
            self._h11.receive_data(data)
        except RuntimeError:  # data after the connection was closed by us
            return
        self._process()

    def eof_received(self) -> bool | None:
        with contextlib.suppress(RuntimeError):
            self._h11.receive_data(b"")
            self._process()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._cancel_timer()
        if self._request is not None:
            self._request._end(ConnectionResetError("the connection was lost"))
            self._request = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the connection was lost"))
        self._transport = None

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- reading ---------------------------------------------------------------------------

    def _process(self) -> None:
        while self._transport is not None:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data):
                self._body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._body_end()
            elif isinstance(event, h11.ConnectionClosed):
                if self.task is None:
                    self.close()
                return

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        logger.debug("HTTP: bad request from %s: %s", self._remote, exc)
        if self._request is not None:  # a broken body: the handler's read fails (400)
            self._request._end(ConnectionError(f"invalid request body: {exc}"))
            self._request = None
        if self.task is not None:  # the handler answers, then the connection closes
            self._pause_reading()
            return
        if self._transport is not None:
            self._transport.write(_BAD_REQUEST)
        self.close()

    def _start(self, event: h11.Request) -> None:
        self._cancel_timer()
        target = event.target.decode("ascii", "replace")
        if _head_too_long(event):
            self._protocol_error(h11.RemoteProtocolError("request line, header or head too long"))
            return
        headers = Headers(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()
        )
        request = Request(
            event.method.decode("ascii", "replace"),
            target,
            headers,
            remote=self._remote,
            transport=self._transport,
            conn=self,
        )
        self._request = request
        self._head_request = request.method == "HEAD"
        self.task = asyncio.get_running_loop().create_task(self._handle(request))

    def _body(self, data: bytes) -> None:
        if self._lingering >= 0:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.close()
            return
        if self._request is not None and self._request._feed(data) > BODY_BUFFER:
            self._pause_reading()

    def _body_end(self) -> None:
        if self._request is not None:
            self._request._end()
            self._request = None
        if self._lingering >= 0 and self.task is None:
            self._lingering = -1
            self._next_cycle()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self._transport is not None:
            self._paused_reading = True
            self._transport.pause_reading()

    def send_continue(self) -> None:
        """Answer ``Expect: 100-continue`` once the handler reads the body (as aiohttp did)."""
        if self._transport is not None and self._h11.they_are_waiting_for_100_continue:
            self._transport.write(
                self._h11.send(
                    h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue")
                )
                or b""
            )

    def resume_body(self) -> None:
        """The handler read the buffered body: read the socket again."""
        if self._paused_reading and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()

    # -- answering -------------------------------------------------------------------------

    async def _handle(self, request: Request) -> None:
        try:
            response = await self._server.app.dispatch(request)
        except HTTPError as exc:
            response = exc.response()
        except Exception:
            logger.exception("HTTP: the handler of %s %s failed", request.method, request.path)
            response = Response(500)
        try:
            if isinstance(response, StreamResponse) and response.prepared:
                response._finish()
            else:
                self._send_whole(response, request)
        except (ConnectionError, h11.LocalProtocolError) as exc:
            logger.debug("HTTP: answering %s failed: %s", self._remote, exc)
            self.close()
        finally:
            self.task = None
        self._answered(response)

    def _headers(self, response: Response, length: int | None) -> list[tuple[str, str]]:
        headers = list(response.headers.items())
        if length is not None:
            headers.append(("Content-Length", str(length)))
        headers.append(("Date", self._server.dates.now()))
        if response.close:
            headers.append(("Connection", "close"))
        return headers

    def _send_whole(self, response: Response, request: Request) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection is gone")
        try:
            head = h11.Response(
                status_code=response.status,
                headers=self._headers(response, len(response.body)),
                reason=_reason(response.status),
            )
        except h11.LocalProtocolError as exc:  # e.g. a newline in a header value
            logger.error("HTTP: invalid answer to %s %s: %s", request.method, request.path, exc)
            response = Response(500)
            head = h11.Response(
                status_code=500, headers=self._headers(response, 0), reason=_reason(500)
            )
        out = [self._h11.send(head)]
        if response.body and not self._head_request:
            out.append(self._h11.send(h11.Data(data=response.body)))
        out.append(self._h11.send(h11.EndOfMessage()))
        transport.write(b"".join(b for b in out if b))

    def send_head(self, response: StreamResponse, request: Request) -> None:
        """Send a streamed answer's head (chunked)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection is gone")
        head = h11.Response(
            status_code=response.status,
            headers=self._headers(response, None),
            reason=_reason(response.status),
        )
        transport.write(self._h11.send(head) or b"")

    async def send_data(self, data: bytes) -> None:
        """Send a piece of a streamed body; waits while the client is slow."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        if data and not self._head_request:
            transport.write(self._h11.send(h11.Data(data=data)) or b"")
        if self._paused_writing:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None

    def send_end(self) -> None:
        """End a streamed body."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        transport.write(self._h11.send(h11.EndOfMessage()) or b"")

    def _answered(self, response: Response) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        if response.close or self._server.closing or self._h11.our_state is not h11.DONE:
            self.close()
        elif self._h11.their_state is h11.DONE:
            self._next_cycle()
        elif self._h11.their_state is h11.SEND_BODY:  # a body the handler did not read: drain it
            self._request = None
            self._lingering = 0
            self.resume_body()
            self._arm(LINGER_SECONDS)
            self._process()
        else:
            self.close()

    def _next_cycle(self) -> None:
        try:
            self._h11.start_next_cycle()
        except h11.LocalProtocolError:
            self.close()
            return
        self._arm(self._server.keepalive_timeout)
        self._backlog = 0
        self.resume_body()
        self._process()

    # -- closing ---------------------------------------------------------------------------

    def _arm(self, seconds: float) -> None:
        self._cancel_timer()
        if seconds > 0:
            self._timer = asyncio.get_running_loop().call_later(seconds, self.close)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close_if_idle(self) -> None:
        """Close the connection unless a handler is running."""
        if self.task is None:
            self.close()

    def close(self) -> None:
        """Close after what was written is sent."""
        self._cancel_timer()
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()

    def abort(self) -> None:
        """Close at once."""
        if self._transport is not None:
            self._transport.abort()
        if self.task is not None:
            self.task.cancel()


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class RunningServer:
    """A started :func:`start_server` (or :func:`agent.daemon.listener.start_listener`).

    Attributes:
        server: the listening ``asyncio.Server``.
        http: the HTTP side (connections, shutdown).
        shutdown_timeout: seconds :meth:`cleanup` lets running handlers finish.
    """

    def __init__(
        self,
        server: asyncio.Server,
        http: HTTPServer,
        *,
        shutdown_timeout: float = 5.0,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.server = server
        self.http = http
        self.shutdown_timeout = shutdown_timeout
        self._on_stop = on_stop
        self._stopped = False

    @property
    def port(self) -> int:
        """The bound port (of the first socket)."""
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def sites(self) -> list[RunningServer]:
        """``[self]``: what stops accepting (:meth:`stop`), as an aiohttp runner's sites did."""
        return [] if self._stopped else [self]

    async def stop(self) -> None:
        """Stop accepting connections (open ones go on)."""
        if self._stopped:
            return
        self._stopped = True
        self.server.close()
        if self._on_stop is not None:
            self._on_stop()

    async def cleanup(self) -> None:
        """Stop accepting, shut the connections down (see :meth:`HTTPServer.shutdown`)."""
        await self.stop()
        await self.http.shutdown(self.shutdown_timeout)


async def start_server(
    app: App,
    host: str | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    keepalive_timeout: float = 15.0,
    shutdown_timeout: float = 5.0,
) -> RunningServer:
    """Serve ``app`` on ``host:port`` (no connection caps: the daemon uses the listener's guard).

    Raises:
        OSError: the address could not be bound.
    """
    http = HTTPServer(app, keepalive_timeout=keepalive_timeout)
    server = await asyncio.get_running_loop().create_server(
        http.protocol, host, port, ssl=ssl_context, reuse_address=True
    )
    return RunningServer(server, http, shutdown_timeout=shutdown_timeout)


__all__ = [
    "MAX_HEAD_BYTES",
    "MAX_LINE_BYTES",
    "App",
    "HTTPError",
    "HTTPProtocol",
    "HTTPServer",
    "Handler",
    "Headers",
    "Middleware",
    "Query",
    "Request",
    "Response",
    "Router",
    "RunningServer",
    "StreamResponse",
    "http_date",
    "not_found",
    "start_server",
]
