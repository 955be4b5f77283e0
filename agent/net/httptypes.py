"""Request, response and routing types of the agent's HTTP server (:mod:`agent.net.httpserver`).

Responsibility: the values handlers see and return, and routing by method and path. A
:class:`Request`'s body is fed by its connection (:class:`agent.net.httpserver.HTTPProtocol`) and
read on demand (:meth:`Request.readany`); a :class:`StreamResponse` writes through it.

Invariants: no I/O here except through the connection; nothing global.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote

if TYPE_CHECKING:
    from agent.net.httpserver import HTTPProtocol

#: Body bytes buffered before the socket stops being read.
BODY_BUFFER = 256 * 1024
TEXT_TYPE = "text/plain; charset=utf-8"


class Headers:
    """Request headers: case-insensitive names, every value kept in order."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)

    def get(self, name: str, default: str = "") -> str:
        """The first value of ``name`` (any case), or ``default``."""
        lower = name.lower()
        for key, value in self._items:
            if key.lower() == lower:
                return value
        return default

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` (any case), in order."""
        lower = name.lower()
        return [v for k, v in self._items if k.lower() == lower]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._items)

    def items(self) -> list[tuple[str, str]]:
        """``(name, value)`` pairs, one per value, as received."""
        return list(self._items)


class Query:
    """Query parameters: every value kept in request order."""

    __slots__ = ("_items",)

    def __init__(self, text: str) -> None:
        self._items = parse_qsl(text, keep_blank_values=True) if text else []

    def get(self, key: str, default: Any = None) -> Any:
        """The first value of ``key``, or ``default``."""
        for k, v in self._items:
            if k == key:
                return v
        return default

    def items(self) -> list[tuple[str, str]]:
        """``(key, value)`` pairs in request order."""
        return list(self._items)


class Request:
    """One request, its body read on demand (:meth:`readany`).

    Attributes:
        method: e.g. ``POST``.
        path: the decoded path.
        raw_path: the path as sent (percent-encoded), without the query.
        query: the query parameters.
        headers: the request headers.
        remote: the client's address (``""`` when unknown).
        transport: the connection's transport (after TLS).
        match_info: path parameters of the matched route (decoded).
        route: the matched route's pattern (``""``: none matched).
        route_name: the matched route's name.
        state: per-request values for handlers and middlewares (e.g. the body, read once).
    """

    __slots__ = (
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_pending",
        "_waiter",
        "content_length",
        "headers",
        "match_info",
        "method",
        "path",
        "query",
        "raw_path",
        "remote",
        "route",
        "route_name",
        "state",
        "transport",
    )

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers,
        *,
        remote: str = "",
        transport: Any = None,
        conn: HTTPProtocol | None = None,
    ) -> None:
        raw_path, _, query = target.partition("?")
        self.method = method
        self.raw_path = raw_path
        self.path = unquote(raw_path)
        self.query = Query(query)
        self.headers = headers
        self.remote = remote
        self.transport = transport
        self.match_info: dict[str, str] = {}
        self.route = ""
        self.route_name = ""
        self.state: dict[str, object] = {}
        length = headers.get("Content-Length")
        self.content_length = int(length) if length.isdigit() else None
        self._conn = conn
        self._chunks: collections.deque[bytes] = collections.deque()
        self._pending = 0
        self._done = conn is None
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def readany(self) -> bytes:
        """The next piece of the body; ``b""`` at its end.

        Raises:
            ConnectionError: the connection broke or the body's framing was invalid.
        """
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done:
                return b""
            if self._conn is not None:
                self._conn.send_continue()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._pending -= len(chunk)
        if self._conn is not None and self._pending < BODY_BUFFER:
            self._conn.resume_body()
        return chunk

    async def read(self) -> bytes:
        """The whole body (unbounded: handlers bound it themselves, see ``read_body``)."""
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    # -- fed by the connection -------------------------------------------------------------

    def _feed(self, data: bytes) -> int:
        self._chunks.append(data)
        self._pending += len(data)
        self._wake()
        return self._pending

    def _end(self, error: Exception | None = None) -> None:
        if not self._done:
            self._done = True
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Response:
    """A whole answer.

    Args:
        status: the status code.
        body: the body bytes.
        text: the body as text (UTF-8); the content type defaults to ``text/plain``.
        content_type: the ``Content-Type`` (``; charset=utf-8`` is added for ``text``).
        headers: more headers.
        close: close the connection after this answer (``Connection: close``).
    """

    __slots__ = ("body", "close", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        *,
        body: bytes = b"",
        text: str | None = None,
        content_type: str | None = None,
        headers: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        if text is not None:
            body = text.encode("utf-8")
            self.headers["Content-Type"] = (
                f"{content_type}; charset=utf-8" if content_type else TEXT_TYPE
            )
        elif content_type:
            self.headers["Content-Type"] = content_type
        if headers:
            self.headers.update(headers)
        self.body = body
        self.close = close

    @property
    def prepared(self) -> bool:
        """Whether the head was sent already (never, for a whole answer)."""
        return False

    @property
    def content_type(self) -> str:
        """The media type, without parameters (``""`` when none)."""
        value = next((v for k, v in self.headers.items() if k.lower() == "content-type"), "")
        return value.split(";", 1)[0].strip()


class StreamResponse(Response):
    """An answer written piece by piece (chunked): ``prepare``, ``write``, ``write_eof``.

    The body ends when the handler returns (after its clean-up), whether or not it called
    ``write_eof``.
    """

    __slots__ = ("_conn", "_ended")

    def __init__(self, status: int = 200, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, headers=headers)
        self._conn: HTTPProtocol | None = None
        self._ended = False

    @property
    def prepared(self) -> bool:
        return self._conn is not None

    async def prepare(self, request: Request) -> None:
        """Send the head.

        Raises:
            ConnectionError: the connection is gone.
        """
        conn = request._conn
        if conn is None:
            raise ConnectionResetError("the request has no connection")
        conn.send_head(self, request)
        self._conn = conn

    async def write(self, data: bytes) -> None:
        """Send ``data`` (waits while the client is slow to read).

        Raises:
            ConnectionError: the connection is gone.
        """
        if self._conn is None or self._ended:
            raise RuntimeError("write before prepare or after write_eof")
        await self._conn.send_data(data)

    async def write_eof(self) -> None:
        """End the body: no more writes; the end is sent when the handler returns."""
        self._ended = True

    def _finish(self) -> None:
        if self._conn is not None:
            self._conn.send_end()


class HTTPError(Exception):
    """Raised by a handler to answer ``status`` with an empty body (e.g. ``HTTPError(403)``).

    Args:
        status: the status code.
        headers: more headers.
    """

    def __init__(self, status: int, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.headers = dict(headers or {})

    def response(self) -> Response:
        """The answer this error stands for."""
        return Response(self.status, headers=self.headers)


Handler = Callable[[Request], Awaitable[Response]]
Middleware = Callable[[Request, Handler], Awaitable[Response]]


class Router:
    """Routes by method and path pattern (``/a/{name}``: one decoded segment), first match wins."""

    def __init__(self) -> None:
        self._exact: list[tuple[str, str, Handler, str]] = []
        self._params: list[tuple[str, list[str], str, Handler, str]] = []
        self.fallback: Handler | None = None

    def add(self, method: str, pattern: str, handler: Handler, *, name: str = "") -> None:
        """Route ``method`` (``*``: any) on ``pattern`` to ``handler``."""
        if "{" in pattern:
            self._params.append((method, pattern.split("/"), pattern, handler, name))
        else:
            self._exact.append((method, pattern, handler, name))

    def resolve(self, request: Request) -> Handler | None:
        """The handler of ``request`` (sets its route and ``match_info``); else the fallback."""
        method, raw = request.method, request.raw_path
        for want, pattern, handler, name in self._exact:
            if pattern == raw and want in ("*", method):
                request.route, request.route_name = pattern, name
                return handler
        parts = raw.split("/")
        for want, segs, pattern, handler, name in self._params:
            if want not in ("*", method) or len(segs) != len(parts):
                continue
            match = _match(segs, parts)
            if match is not None:
                request.route, request.route_name, request.match_info = pattern, name, match
                return handler
        request.route, request.route_name = "/{tail}", "fallback"
        return self.fallback


def _match(segs: list[str], parts: list[str]) -> dict[str, str] | None:
    found: dict[str, str] = {}
    for seg, part in zip(segs, parts, strict=True):
        if seg.startswith("{") and seg.endswith("}"):
            if not part:
                return None
            found[seg[1:-1]] = unquote(part)
        elif seg != part:
            return None
    return found


async def not_found(request: Request) -> Response:
    """The default answer: 404 ``404 page not found`` (Go's text)."""
    return Response(404, text="404 page not found")


class App:
    """Routes and middlewares; ``on_shutdown`` callbacks run when the server shuts down.

    Args:
        middlewares: outermost first.
    """

    def __init__(self, middlewares: Sequence[Middleware] = ()) -> None:
        self.router = Router()
        self.middlewares: list[Middleware] = list(middlewares)
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []

    async def dispatch(self, request: Request) -> Response:
        """Answer ``request``: resolve its route, then run the middlewares and the handler."""
        handler = self.router.resolve(request) or not_found
        for middleware in reversed(self.middlewares):
            handler = _bind(middleware, handler)
        return await handler(request)


def _bind(middleware: Middleware, inner: Handler) -> Handler:
    async def call(request: Request) -> Response:
        return await middleware(request, inner)

    return call


__all__ = [
    "BODY_BUFFER",
    "App",
    "HTTPError",
    "Handler",
    "Headers",
    "Middleware",
    "Query",
    "Request",
    "Response",
    "Router",
    "StreamResponse",
    "not_found",
]
