"""Pulls (:mod:`agent.daemon.pull`) that give nothing to run, on an in-process daemon: a server
that answers 304 while no token is in hand, and a path that is not a token at all."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from aiohttp import web
from support import RIGHT_PUB, config_doc

from agent.config.schema import config_from_dict
from agent.daemon.service import Daemon


def test_a_304_with_no_token_in_hand_gives_no_token_and_the_source_does_not_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def not_modified(request: web.Request) -> web.StreamResponse:
        return web.Response(status=304, headers={"ETag": '"x"'})

    async def go() -> str:
        app = web.Application()
        app.router.add_get("/pattern.jwt", not_modified)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/pattern.jwt"
        try:
            doc = config_doc(tmp_path, {"p": {"pullPaths": [url]}}, verify_keys=(RIGHT_PUB,))
            daemon = Daemon(config_from_dict(doc))
            await daemon.load()
            return (await daemon.run_source("p", init=True)).err
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.ERROR, logger="agent.daemon.pull"):
        err = asyncio.run(go())
    assert err == "source p: expected a verified token from a pull path or state, got none"
    assert "answered 304 but no token is in hand" in caplog.text
    assert "no valid token from any pull path" in caplog.text


def test_a_pull_path_that_is_not_a_token_is_refused_and_nothing_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    junk = tmp_path / "junk.jwt"
    junk.write_text("not a token\n")
    doc = config_doc(tmp_path, {"p": {"pullPaths": [str(junk)]}}, verify_keys=(RIGHT_PUB,))

    async def go() -> str:
        daemon = Daemon(config_from_dict(doc))
        await daemon.load()
        return (await daemon.run_source("p")).err

    with caplog.at_level(logging.ERROR, logger="agent.daemon.pull"):
        err = asyncio.run(go())
    assert err.startswith("source p: expected a verified token")
    assert "no valid token from any pull path" in caplog.text
