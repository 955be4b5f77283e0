"""The agent's HTTP/1.1 server (agent.net.httpserver on h11): framing, bounds, keep-alive, streams
and shutdown, spoken to over raw sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agent.net.httpserver import (
    MAX_HEAD_BYTES,
    MAX_LINE_BYTES,
    App,
    Request,
    Response,
    RunningServer,
    StreamResponse,
    http_date,
    start_server,
)

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def echo(request: Request) -> Response:
    body = await request.read()
    query = ",".join(f"{k}={v}" for k, v in request.query.items())
    hdrs = ",".join(request.headers.getall("X-Multi"))
    return Response(text=f"{request.method} {request.path} q={query} h={hdrs} b={body.decode()}")


async def refuse_body(request: Request) -> Response:
    return Response(413)  # never reads the body


async def boom(request: Request) -> Response:
    raise RuntimeError("handler bug")


async def bad_header(request: Request) -> Response:
    return Response(text="x", headers={"Content-Type": "text/plain\nX-Injected: 1"})


def make_app(state: dict[str, object]) -> App:
    app = App()

    async def stream(request: Request) -> Response:
        response = StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"one\n")
        await response.write(b"two\n")
        await response.write_eof()
        await asyncio.sleep(0.05)
        state["cleaned"] = True  # clean-up after write_eof, before the body ends
        return response

    async def slow(request: Request) -> Response:
        await asyncio.sleep(0.3)
        state["slow_done"] = True
        return Response(text="slow")

    app.router.add("*", "/big", refuse_body)
    app.router.add("GET", "/boom", boom)
    app.router.add("GET", "/bad-header", bad_header)
    app.router.add("GET", "/stream", stream)
    app.router.add("GET", "/slow", slow)
    app.router.add("POST", "/items/{name}", echo, name="items")
    app.router.fallback = echo
    return app


@asynccontextmanager
async def serve(state: dict[str, object] | None = None) -> AsyncIterator[RunningServer]:
    server = await start_server(make_app(state if state is not None else {}), "127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.cleanup()


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return lines[0].encode(), headers, body
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0].encode(), headers, body


async def eof(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(1), 10) == b""
    except ConnectionResetError:
        return True


def test_pipelined_requests_are_answered_in_order_on_one_connection() -> None:
    async def go() -> list[tuple[bytes, bytes]]:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /items/a%20b?x=1&x=2 HTTP/1.1\r\nHost: h\r\nX-Multi: 1\r\nx-multi: 2\r\n"
                b"Content-Length: 3\r\n\r\nabc"
                b"GET /other HTTP/1.1\r\nHost: h\r\n\r\n"
            )
            answers = [await read_response(reader) for _ in range(2)]
            writer.close()
            return [(status, body) for status, _, body in answers]

    assert asyncio.run(go()) == [
        (b"HTTP/1.1 200 OK", b"POST /items/a b q=x=1,x=2 h=1,2 b=abc"),
        (b"HTTP/1.1 200 OK", b"GET /other q= h= b="),
    ]


def test_expect_100_continue_is_answered_when_the_handler_reads_the_body() -> None:
    async def go() -> tuple[bytes, bytes]:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /items/x HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                b"Content-Length: 2\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(b"hi")
            _, _, body = await read_response(reader)
            writer.close()
            return interim.split(b"\r\n", 1)[0], body

    assert asyncio.run(go()) == (b"HTTP/1.1 100 Continue", b"POST /items/x q= h= b=hi")


def status_and_closed(request: bytes) -> tuple[bytes, bool]:
    """Send raw ``request`` bytes to a fresh server: its status line, and whether it then closed."""

    async def go() -> tuple[bytes, bool]:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(request)
            status, _, _ = await read_response(reader)
            closed = await eof(reader)
            writer.close()
            return status, closed

    return asyncio.run(go())


def test_a_header_line_over_the_limit_is_400_and_closes() -> None:
    big = b"a" * MAX_LINE_BYTES
    request = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + big + b"\r\n\r\n"
    assert status_and_closed(request) == (b"HTTP/1.1 400 Bad Request", True)


def test_a_head_over_the_limit_in_short_lines_is_400_and_closes() -> None:
    """Every line is under the per-line bound, the head as a whole is over MAX_HEAD_BYTES."""
    line = b"X-Many: " + b"a" * 1000 + b"\r\n"
    lines = line * (MAX_HEAD_BYTES // len(line) + 2)
    request = b"GET / HTTP/1.1\r\nHost: h\r\n" + lines + b"\r\n"
    assert status_and_closed(request) == (b"HTTP/1.1 400 Bad Request", True)


def test_an_unread_body_is_drained_and_the_connection_kept() -> None:
    async def go() -> tuple[bytes, bytes]:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 200000\r\n\r\n")
            writer.write(b"x" * 1000)
            first, _, _ = await read_response(reader)
            writer.write(b"x" * 199_000 + b"GET /after HTTP/1.1\r\nHost: h\r\n\r\n")
            _, _, second = await read_response(reader)
            writer.close()
            return first, second

    assert asyncio.run(go()) == (b"HTTP/1.1 413 Request Entity Too Large", b"GET /after q= h= b=")


def test_a_stream_is_chunked_and_ends_when_the_handler_returns() -> None:
    state: dict[str, object] = {}

    async def go() -> tuple[dict[str, str], bytes, object]:
        async with serve(state) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /stream HTTP/1.1\r\nHost: h\r\n\r\n")
            _, headers, body = await read_response(reader)
            cleaned = state.get("cleaned")
            writer.close()
            return headers, body, cleaned

    headers, body, cleaned = asyncio.run(go())
    assert headers["transfer-encoding"] == "chunked"
    assert headers["content-type"] == "text/event-stream"
    assert body == b"one\ntwo\n"
    assert cleaned is True


def test_a_failing_handler_is_500_and_head_has_no_body() -> None:
    async def go() -> list[tuple[bytes, dict[str, str], bytes]]:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n")
            failed = await read_response(reader)
            writer.write(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(b"GET /y HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
            last = await read_response(reader)
            closed = await eof(reader)
            writer.close()
            assert closed
            return [failed, (head.split(b"\r\n", 1)[0], {}, b""), last]

    failed, head, last = asyncio.run(go())
    assert (failed[0], failed[1]["content-length"], failed[2]) == (
        b"HTTP/1.1 500 Internal Server Error",
        "0",
        b"",
    )
    assert "content-type" not in failed[1]  # an empty body has no content type
    assert head[0] == b"HTTP/1.1 200 OK"
    assert last[1]["connection"] == "close"
    assert last[1]["content-type"] == "text/plain; charset=utf-8"


def test_an_answer_with_a_newline_in_a_header_is_500_not_injected() -> None:
    async def go() -> tuple[bytes, dict[str, str], bytes]:
        async with serve() as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /bad-header HTTP/1.1\r\nHost: h\r\n\r\n")
            answer = await read_response(reader)
            writer.close()
            return answer

    status, headers, body = asyncio.run(go())
    assert status == b"HTTP/1.1 500 Internal Server Error"
    assert "x-injected" not in headers
    assert body == b""


def test_shutdown_closes_idle_connections_and_lets_running_handlers_finish() -> None:
    state: dict[str, object] = {}

    async def go() -> tuple[bool, bytes]:
        server = await start_server(make_app(state), "127.0.0.1", 0)
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", server.port)
        idle_w.write(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
        await read_response(idle_r)
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", server.port)
        busy_w.write(b"GET /slow HTTP/1.1\r\nHost: h\r\n\r\n")
        await asyncio.sleep(0.1)
        await server.cleanup()
        idle_closed = await eof(idle_r)
        status, _, body = await read_response(busy_r)
        idle_w.close()
        busy_w.close()
        return idle_closed, status + b" " + body

    idle_closed, answer = asyncio.run(go())
    assert idle_closed
    assert answer == b"HTTP/1.1 200 OK slow"
    assert state["slow_done"] is True


def test_http_date_matches_the_email_formatter() -> None:
    for ts in (0, 1_700_000_000, 1_780_000_000.5):
        assert http_date(ts) == email.utils.formatdate(ts, usegmt=True)
