"""The daemon's shell endpoint (:class:`agent.daemon.shell.ShellSessions`) served in-process by
the agent's HTTP server on 127.0.0.1, with the real trust gate and real ptys: a shell that cannot
start is a 500 that frees its slot, a failing audit log never ends a session, and closing all
sessions ends their streams."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from support import RIGHT_PRIV, RIGHT_PUB

from agent.config.schema import config_from_dict
from agent.daemon.shell import ShellSessions
from agent.jws.keys import parse_signing_key
from agent.jws.tokens import sign_token
from agent.net.httpserver import App, start_server
from agent.trust.gate import TrustGate


class _Metrics:
    def __init__(self) -> None:
        self.shells_seen: list[int] = []

    def shells(self, source: str, delta: int, **labels: str) -> None:
        self.shells_seen.append(delta)


def _token() -> str:
    claims = {"c": 80, "r": 24, "exp": int(time.time()) + 60}
    return sign_token(claims, parse_signing_key(RIGHT_PRIV))


@asynccontextmanager
async def serve(
    shell: Any, audit: Any = None
) -> AsyncIterator[tuple[ShellSessions, str, _Metrics]]:
    config = config_from_dict(
        {"run": {"verifyKeys": [RIGHT_PUB]}, "sources": {"web": {"shell": shell}}}
    )
    metrics = _Metrics()
    sessions = ShellSessions(
        config=lambda: config,
        gate=TrustGate(config),
        view=None,  # type: ignore[arg-type]  # read only for events, and there are none
        events=None,
        metrics=metrics,  # type: ignore[arg-type]
        audit=audit,
    )
    app = App()
    for method, path, handler in sessions.routes():
        app.router.add(method, path, handler)
    runner = await start_server(app, "127.0.0.1", 0)
    port = runner.port
    try:
        yield sessions, f"http://127.0.0.1:{port}/etcha/v1/shell/web", metrics
    finally:
        await sessions.close_all()
        await runner.cleanup()


def output(lines: list[bytes]) -> bytes:
    return b"".join(base64.b64decode(line[1:]) for line in lines if line.startswith(b"o"))


def test_a_shell_that_cannot_start_answers_500_and_frees_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> tuple[int, int]:
        async with (
            serve({"command": "sh", "user": "no-such-user-xyz"}) as (sessions, url, _),
            aiohttp.ClientSession() as client,
            client.post(url, data=_token()) as resp,
        ):
            return resp.status, sessions.open_count("web")

    with caplog.at_level(logging.ERROR, logger="agent.daemon.shell"):
        assert asyncio.run(go()) == (500, 0)
    assert "the shell did not start" in caplog.text


def test_a_failing_audit_log_does_not_end_a_session(caplog: pytest.LogCaptureFixture) -> None:
    def audit(event: str, **fields: Any) -> None:
        raise OSError("disk full")

    async def go() -> tuple[int, list[bytes], list[int]]:
        async with (
            serve("sh -c 'echo hello-from-shell'", audit) as (_, url, metrics),
            aiohttp.ClientSession() as client,
            client.post(url, data=_token()) as resp,
        ):
            body = (await resp.read()).splitlines()
            return resp.status, body, metrics.shells_seen

    with caplog.at_level(logging.ERROR, logger="agent.daemon.shell"):
        status, body, shells = asyncio.run(go())
    assert status == 200
    assert len(body[0]) == 36  # the session id line
    assert b"hello-from-shell" in output(body[1:])
    assert shells == [1, -1]
    assert "Audit record shell_start failed" in caplog.text
    assert "Audit record shell_end failed" in caplog.text


def test_closing_all_sessions_ends_their_streams(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> tuple[list[bytes], list[int], int]:
        async with (
            serve("sleep 30") as (sessions, url, metrics),
            aiohttp.ClientSession() as client,
            client.post(url, data=_token()) as resp,
        ):
            first = await resp.content.readline()
            await sessions.close_all()
            rest = await asyncio.wait_for(resp.read(), timeout=10)
            return [first, *rest.splitlines()], metrics.shells_seen, sessions.open_count("web")

    with caplog.at_level(logging.INFO, logger="agent.daemon.shell"):
        lines, shells, still_open = asyncio.run(go())
    assert len(lines[0].strip()) == 36
    assert all(line.startswith((b"o", b"k")) for line in lines[1:])
    assert shells == [1, -1] and still_open == 0
    assert "(closed)" in caplog.text
