"""Bounded listener connections: caps per address and in all, the header deadline, TLS admitted
before the handshake, the fd clamp and throttled accept errors. Real servers on 127.0.0.x.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from support import free_port

from agent.daemon.listener import (
    FD_RESERVE,
    ListenerLimits,
    LogThrottle,
    accept_error_handler,
    fd_clamped,
    start_listener,
)
from agent.net.httpserver import App, Request, Response
from agent.net.tlsutil import load_pem_pair, self_signed

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def hello(request: Request) -> Response:
    return Response(text="hello")


@asynccontextmanager
async def serve(
    limits: ListenerLimits, refused: list[str], tls: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    app = App()
    app.router.fallback = hello
    port = free_port()
    runner = await start_listener(
        app, "127.0.0.1", port, limits=limits, ssl_context=tls, on_refused=refused.append
    )
    try:
        yield port
    finally:
        await runner.cleanup()


async def connect(port: int, source: str = "127.0.0.1") -> Conn:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(conn: Conn, timeout: float = 10) -> bool:
    """Whether the server closes the connection (EOF or reset) within ``timeout`` seconds."""
    try:
        data = await asyncio.wait_for(conn[0].read(1), timeout)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return data == b""


async def get(conn: Conn) -> bytes:
    reader, writer = conn
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    body = await asyncio.wait_for(reader.readexactly(5), 10)
    return head.split(b"\r\n", 1)[0] + b" " + body


async def close_all(conns: list[Conn]) -> None:
    for _, writer in conns:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def test_connections_over_the_per_address_cap_are_closed_at_once() -> None:
    limits = ListenerLimits(max_connections=50, max_connections_per_address=3)
    refused: list[str] = []

    async def go() -> tuple[list[bool], bytes, bytes, bool]:
        async with serve(limits, refused) as port:
            held = [await connect(port, "127.0.0.2") for _ in range(3)]
            over = [await connect(port, "127.0.0.2") for _ in range(2)]
            over_closed = [await closed_by_server(c) for c in over]
            third = await connect(port, "127.0.0.3")
            other = await get(third)
            first = await get(held[0])
            held[1][1].close()
            await asyncio.sleep(0.2)
            again = await connect(port, "127.0.0.2")
            again_open = not await closed_by_server(again, timeout=0.5)
            await close_all([*held, *over, again, third])
            return over_closed, other, first, again_open

    over_closed, other, first, again_open = asyncio.run(go())
    assert over_closed == [True, True]
    assert refused == ["address", "address"]
    assert other == b"HTTP/1.1 200 OK hello"
    assert first == b"HTTP/1.1 200 OK hello"
    assert again_open  # a closed connection gives its slot back


def test_connections_over_the_total_cap_are_closed_at_once() -> None:
    limits = ListenerLimits(max_connections=4, max_connections_per_address=10)
    refused: list[str] = []

    async def go() -> tuple[bool, bytes]:
        async with serve(limits, refused) as port:
            held = [await connect(port, f"127.0.0.{2 + i % 2}") for i in range(4)]
            over = await connect(port, "127.0.0.9")
            over_closed = await closed_by_server(over)
            answer = await get(held[3])
            await close_all([*held, over])
            return over_closed, answer

    over_closed, answer = asyncio.run(go())
    assert over_closed
    assert refused == ["total"]
    assert answer == b"HTTP/1.1 200 OK hello"


def test_a_connection_without_complete_headers_is_closed_after_timeout_headers() -> None:
    limits = ListenerLimits(timeout_headers=0.5, keepalive_timeout=60)
    refused: list[str] = []

    async def go() -> tuple[bool, bool, bytes, bool]:
        async with serve(limits, refused) as port:
            idle = await connect(port)
            half = await connect(port)
            half[1].write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            served = await connect(port)
            first = await get(served)
            idle_closed = await closed_by_server(idle)
            half_closed = await closed_by_server(half)
            served[1].write(b"GET / HT")  # the next request starts and stalls
            stalled_closed = await closed_by_server(served)
            await close_all([idle, half, served])
            return idle_closed, half_closed, first, stalled_closed

    idle_closed, half_closed, first, stalled_closed = asyncio.run(go())
    assert (idle_closed, half_closed) == (True, True)
    assert first == b"HTTP/1.1 200 OK hello"
    assert stalled_closed
    assert refused == []


def test_a_served_connection_is_kept_alive_then_closed_after_keepalive_timeout() -> None:
    limits = ListenerLimits(timeout_headers=30, keepalive_timeout=0.5)

    async def go() -> tuple[bytes, bytes, bool]:
        async with serve(limits, []) as port:
            conn = await connect(port)
            one, two = await get(conn), await get(conn)
            closed = await closed_by_server(conn)
            await close_all([conn])
            return one, two, closed

    one, two, closed = asyncio.run(go())
    assert one == two == b"HTTP/1.1 200 OK hello"
    assert closed


def tls_context() -> ssl.SSLContext:
    cert, key = self_signed(["localhost"], ["127.0.0.1"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_pem_pair(ctx, cert, key, what="test")
    return ctx


def test_tls_connections_are_counted_before_the_handshake() -> None:
    limits = ListenerLimits(max_connections_per_address=2, timeout_headers=0.5)
    refused: list[str] = []

    async def go() -> tuple[bool, bool, int, str]:
        async with serve(limits, refused, tls_context()) as port:
            silent = [await connect(port, "127.0.0.2") for _ in range(2)]
            over = await connect(port, "127.0.0.2")
            over_closed = await closed_by_server(over, timeout=0.3)
            silent_closed = all([await closed_by_server(c) for c in silent])
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"https://127.0.0.1:{port}/", ssl=False) as resp,
            ):
                status, text = resp.status, await resp.text()
            await close_all([*silent, over])
            return over_closed, silent_closed, status, text

    over_closed, silent_closed, status, text = asyncio.run(go())
    assert over_closed  # refused before any TLS byte was exchanged
    assert silent_closed  # no handshake within timeoutHeaders
    assert (status, text) == (200, "hello")
    assert refused == ["address"]


def test_max_connections_is_clamped_below_the_fd_limit() -> None:
    assert fd_clamped(256, soft_limit=256) == 256 - FD_RESERVE
    assert fd_clamped(100, soft_limit=1024) == 100
    assert fd_clamped(256, soft_limit=40) == 10
    import resource

    assert fd_clamped(256, soft_limit=resource.RLIM_INFINITY) == 256


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_accept_errors_are_logged_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    other: list[str] = []
    handler = accept_error_handler(
        lambda loop, ctx: other.append(str(ctx["message"])), LogThrottle(clock=clock)
    )
    loop = asyncio.new_event_loop()
    emfile = OSError(errno.EMFILE, "Too many open files")
    context = {"message": "socket.accept() out of system resource", "exception": emfile}
    try:
        with caplog.at_level(logging.ERROR, logger="agent.daemon.listener"):
            for _ in range(1000):
                handler(loop, context)
            clock.now += 1.0
            handler(loop, context)
            handler(loop, {"message": "something else", "exception": ValueError("x")})
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.daemon.listener"]
    assert lines == [
        "Listener: accepting a connection failed: Too many open files "
        "(0 similar errors not logged)",
        "Listener: accepting a connection failed: Too many open files "
        "(999 similar errors not logged)",
    ]
    assert other == ["something else"]
