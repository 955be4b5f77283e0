"""The HTTP app of `agent run` (agent.net.httpserver): push route, statuses, bodies, limits and
extension points.

A real server on 127.0.0.1 (free port) with a recording PushHandler stands in for the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from support import free_port

from agent.daemon.ingress import PushOutcome, Ran, Refused
from agent.daemon.server import create_app, query_flag
from agent.net.httpserver import App, Request, Response, start_server
from agent.run.engine import Result


@dataclass
class Recorder:
    """A PushHandler that records calls and answers a fixed reply."""

    reply: PushOutcome
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
    ) -> PushOutcome:
        self.calls.append(
            {
                "source": source,
                "token": token,
                "check": check,
                "filter": parent_id_filter.pattern if parent_id_filter else None,
                "remote": remote,
            }
        )
        return self.reply


RESULT: Mapping[str, Any] = {
    "changedIDs": ["a", "b"],
    "changedOutputs": ["x", "y"],
    "err": "",
    "exit": False,
    "failedIDs": None,
    "failedOutputs": None,
    "removedIDs": None,
    "removedOutputs": None,
}


@asynccontextmanager
async def serve(app: App) -> AsyncIterator[str]:
    port = free_port()
    runner = await start_server(app, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def request(
    method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def test_push_success_answers_200_with_indented_result_json() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def go() -> tuple[int, str, str]:
        async with serve(create_app(rec)) as base:
            return await request("POST", f"{base}/etcha/v1/push/web", b"a.b.c\n")

    status, ctype, body = asyncio.run(go())
    assert status == 200
    assert ctype.startswith("application/json")
    assert json.loads(body) == RESULT
    assert body.startswith('{\n  "changedIDs": [\n    "a",')
    assert rec.calls[0]["source"] == "web"
    assert rec.calls[0]["token"] == "a.b.c"
    assert rec.calls[0]["check"] is False
    assert rec.calls[0]["filter"] is None


def test_push_failure_answers_500_with_result_json() -> None:
    failed = dict(RESULT, err="command failed")
    rec = Recorder(Ran(Result.from_json(failed)))

    async def go() -> tuple[int, str, str]:
        async with serve(create_app(rec)) as base:
            return await request("POST", f"{base}/etcha/v1/push/web", b"tok")

    status, ctype, body = asyncio.run(go())
    assert status == 500
    assert ctype.startswith("application/json")
    assert json.loads(body)["err"] == "command failed"


def test_push_refusal_is_404_with_empty_body() -> None:
    rec = Recorder(Refused("not_allowed"))

    async def go() -> tuple[int, str, str]:
        async with serve(create_app(rec)) as base:
            return await request("POST", f"{base}/etcha/v1/push/nope", b"tok")

    status, _, body = asyncio.run(go())
    assert status == 404
    assert body == ""


def test_check_and_filter_query_reach_the_handler() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def go() -> None:
        async with serve(create_app(rec)) as base:
            await request("POST", f"{base}/etcha/v1/push/web?check=true&filter=%5Eweb", b"t")
            await request("POST", f"{base}/etcha/v1/push/web?check=false", b"t")

    asyncio.run(go())
    assert rec.calls[0]["check"] is True
    assert rec.calls[0]["filter"] == "^web"
    assert rec.calls[1]["check"] is False


def test_bad_filter_regex_is_400_and_nothing_runs() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def go() -> tuple[int, str, str]:
        async with serve(create_app(rec)) as base:
            return await request("POST", f"{base}/etcha/v1/push/web?filter=%28", b"t")

    status, _, body = asyncio.run(go())
    assert status == 400
    assert "filter" in body
    assert rec.calls == []


def test_other_methods_on_the_push_path_are_405() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def go() -> list[int]:
        async with serve(create_app(rec)) as base:
            return [
                (await request(m, f"{base}/etcha/v1/push/web"))[0] for m in ("GET", "PUT", "DELETE")
            ]

    assert asyncio.run(go()) == [405, 405, 405]
    assert rec.calls == []


def test_body_over_the_limit_is_413_by_content_length_and_by_stream() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 40

    async def go() -> tuple[int, int, int]:
        async with serve(create_app(rec, max_token_bytes=100)) as base:
            url = f"{base}/etcha/v1/push/web"
            by_length = (await request("POST", url, b"x" * 101))[0]
            at_limit = (await request("POST", url, b"x" * 100))[0]
            async with aiohttp.ClientSession() as session, session.post(url, data=chunks()) as r:
                by_stream = r.status
            return by_length, at_limit, by_stream

    by_length, at_limit, by_stream = asyncio.run(go())
    assert by_length == 413
    assert at_limit == 200
    assert by_stream == 413
    assert len(rec.calls) == 1


def test_unknown_paths_fall_through_to_404_or_the_fallback() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def hook(request: Request) -> Response:
        return Response(text=f"hook {request.method} {request.path}")

    async def metrics(request: Request) -> Response:
        return Response(text="metrics")

    async def go() -> tuple[tuple[int, str, str], ...]:
        async with serve(create_app(rec)) as base:
            plain = await request("GET", f"{base}/anything")
        app = create_app(
            rec, fallback=hook, extra_routes=[("*", "/etcha/v1/system/metrics", metrics)]
        )
        async with serve(app) as base:
            hooked = await request("PUT", f"{base}/deploy/x")
            met = await request("GET", f"{base}/etcha/v1/system/metrics")
            still_405 = await request("GET", f"{base}/etcha/v1/push/web")
        return plain, hooked, met, still_405

    plain, hooked, met, still_405 = asyncio.run(go())
    assert plain[0] == 404
    assert plain[2] == "404 page not found"
    assert hooked[:1] == (200,)
    assert hooked[2] == "hook PUT /deploy/x"
    assert met[2] == "metrics"
    assert still_405[0] == 405


def test_query_flag_accepts_presence_and_rejects_false() -> None:
    assert query_flag(None) is False
    assert query_flag("") is True
    assert query_flag("true") is True
    assert query_flag("1") is True
    assert query_flag("false") is False
    assert query_flag("0") is False


async def send_in_pieces(port: int, body: bytes, piece: int, *, chunked: bool) -> bytes:
    """POST ``body`` to the push path in ``piece``-byte writes; return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    writer.write(f"POST /etcha/v1/push/web HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode())
    for i in range(0, len(body), piece):
        part = body[i : i + piece]
        writer.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        await writer.drain()
        await asyncio.sleep(0.001)
    if chunked:
        writer.write(b"0\r\n\r\n")
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    await writer.wait_closed()
    return status.strip()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("piece", [1024, 16 * 1024])
def test_push_body_sent_in_pieces_is_read_whole(piece: int, chunked: bool) -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))
    body = bytes(ord("a") + i % 26 for i in range(100_000))

    async def go() -> bytes:
        port = free_port()
        runner = await start_server(create_app(rec), "127.0.0.1", port)
        try:
            return await send_in_pieces(port, body, piece, chunked=chunked)
        finally:
            await runner.cleanup()

    assert asyncio.run(go()) == b"HTTP/1.1 200 OK"
    assert [c["token"] for c in rec.calls] == [body.decode()]


def test_a_refused_reply_is_the_empty_404_whatever_its_status() -> None:
    rec = Recorder(Refused("rollback"))

    async def go() -> tuple[int, str, str]:
        async with serve(create_app(rec)) as base:
            return await request("POST", f"{base}/etcha/v1/push/web", b"token")

    assert asyncio.run(go()) == (404, "", "")


def test_push_log_lines_escape_the_source_name(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(Refused("not_allowed"))

    async def go() -> int:
        async with serve(create_app(rec)) as base:
            return (await request("POST", f"{base}/etcha/v1/push/a%0aFAKE%0d", b"x"))[0]

    with caplog.at_level(logging.INFO, logger="agent.daemon.server"):
        assert asyncio.run(go()) == 404
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.daemon.server"]
    assert messages == ["Received push request for a\\nFAKE\\r from 127.0.0.1"]
    assert rec.calls[0]["source"] == "a\nFAKE\r"


def test_a_body_not_complete_within_timeout_body_is_408_and_closes() -> None:
    rec = Recorder(Ran(Result.from_json(RESULT)))

    async def go() -> tuple[bytes, bytes]:
        port = free_port()
        runner = await start_server(create_app(rec, timeout_body=0.5), "127.0.0.1", port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /etcha/v1/push/web HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")
            writer.write(b"\r\n" + b"x" * 10)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return status.strip(), rest
        finally:
            await runner.cleanup()

    status, rest = asyncio.run(go())
    assert status == b"HTTP/1.1 408 Request Timeout"
    assert b"Connection: close" in rest
    assert rec.calls == []
