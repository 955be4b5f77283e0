"""The listener's rate limiter: failed responses per client and route, 429 + Retry-After, headers,
and verified pushes that are never limited. A real listener on 127.0.0.1 built by app_extras.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from support import RIGHT_PRIV, config_doc, free_port

from agent.config.schema import Config, config_from_dict
from agent.daemon.events import Events
from agent.daemon.httpmw import app_extras, rate_limit_middleware
from agent.daemon.metrics import Metrics
from agent.daemon.ratelimit import FailureRateLimiter
from agent.daemon.server import create_app
from agent.daemon.service import Daemon
from agent.net.httpserver import App, Headers, HTTPError, Request, Response, start_server
from agent.pattern.load import load_from_text
from agent.tools.build import build_token

KEY = "k"
Reply = tuple[int, Mapping[str, str], str]


def make_config(tmp: Path, sources: Mapping[str, Any], **run: Any) -> Config:
    return config_from_dict(config_doc(tmp, sources, run={"systemMetricsKey": KEY, **run}))


@asynccontextmanager
async def serve_app(app: App) -> AsyncIterator[str]:
    port = free_port()
    runner = await start_server(app, "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def listener(cfg: Config) -> AsyncIterator[str]:
    d = Daemon(cfg, events=Events(), metrics=Metrics(process_metrics=False))
    await d.load()
    app = create_app(
        d.ingress, max_body_bytes=int(cfg.run.max_body_bytes), **app_extras(d, d.exposition)
    )
    async with serve_app(app) as base:
        yield base


async def call(method: str, url: str, body: bytes | None = None) -> Reply:
    async with aiohttp.ClientSession() as s, s.request(method, url, data=body) as r:
        return r.status, dict(r.headers), await r.text()


async def good_token(cfg: Config, path: Path) -> str:
    signer = config_from_dict({"build": {"signingKey": RIGHT_PRIV}})
    run = [{"id": "t", "always": True, "change": f"echo x >> {path}"}]
    loaded = load_from_text(json.dumps({"run": run}), config=cfg, source="")
    return await build_token(loaded, config=signer)


def test_the_failure_beyond_the_limit_gets_429_with_retry_after(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {})
    metrics = "/etcha/v1/system/metrics?key=wrong"

    async def go() -> list[Reply]:
        async with listener(cfg) as base:
            return [await call("GET", base + metrics) for _ in range(12)]

    replies = asyncio.run(go())
    assert [r[0] for r in replies] == [401] * 11 + [429]
    _status, headers, body = replies[-1]
    assert body == ""
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert [r[1]["x-rate-limit-remaining"] for r in replies[:3]] == ["9", "8", "7"]
    assert replies[0][1]["x-rate-limit-limit"] == "10"
    reset = int(replies[0][1]["x-rate-limit-reset"])
    assert time.time() < reset <= time.time() + 61


def test_successful_responses_consume_no_quota(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {}, rateLimiterRate="2-M")

    async def go() -> list[int]:
        async with listener(cfg) as base:
            url = base + f"/etcha/v1/system/metrics?key={KEY}"
            return [(await call("GET", url))[0] for _ in range(10)]

    assert asyncio.run(go()) == [200] * 10


def test_limits_are_per_route(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {}, rateLimiterRate="1-M")

    async def go() -> tuple[list[int], int]:
        async with listener(cfg) as base:
            webhook = [(await call("GET", base + "/nope"))[0] for _ in range(3)]
            metrics = (await call("GET", base + "/etcha/v1/system/metrics?key=x"))[0]
            return webhook, metrics

    webhook, metrics = asyncio.run(go())
    assert webhook == [404, 404, 429]
    assert metrics == 401


def test_a_valid_push_from_a_limited_client_still_succeeds(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}}, rateLimiterRate="2-M")

    async def go() -> tuple[list[int], Reply, list[int]]:
        async with listener(cfg) as base:
            url = base + "/etcha/v1/push/core"
            bad = [(await call("POST", url, b"bad"))[0] for _ in range(5)]
            good = await call("POST", url, (await good_token(cfg, ran)).encode())
            after = [(await call("POST", url, b"bad"))[0] for _ in range(2)]
            return bad, good, after

    bad, good, after = asyncio.run(go())
    assert bad == [404, 404, 404, 429, 429]
    assert good[0] == 200
    assert json.loads(good[2])["changedIDs"] == ["t"]
    assert ran.read_text() == "x\n"
    assert after == [429, 429]


def test_a_push_whose_run_failed_is_served_even_when_limited(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"core": {"allowPush": True}}, rateLimiterRate="1-M")

    async def go() -> Reply:
        async with listener(cfg) as base:
            url = base + "/etcha/v1/push/core"
            for _ in range(3):
                await call("POST", url, b"bad")
            signer = config_from_dict({"build": {"signingKey": RIGHT_PRIV}})
            run = [{"id": "f", "always": True, "change": "exit 1"}]
            loaded = load_from_text(json.dumps({"run": run}), config=cfg, source="")
            return await call("POST", url, (await build_token(loaded, config=signer)).encode())

    status, headers, body = asyncio.run(go())
    assert status == 500
    assert headers["Content-Type"].startswith("application/json")
    assert "error changing id" in json.loads(body)["err"]


def test_http_exceptions_are_counted_and_limited() -> None:
    async def raises(request: Request) -> Response:
        raise HTTPError(403)

    app = App([rate_limit_middleware(FailureRateLimiter(1, 60))])
    app.router.add("*", "/x", raises)

    async def go() -> list[Reply]:
        async with serve_app(app) as base:
            return [await call("GET", base + "/x") for _ in range(3)]

    replies = asyncio.run(go())
    assert [r[0] for r in replies] == [403, 403, 429]
    assert replies[0][1]["x-rate-limit-remaining"] == "0"


def test_memory_stays_bounded_under_many_client_keys() -> None:
    limiter = FailureRateLimiter(1, 60, max_keys=50)
    middleware = rate_limit_middleware(limiter)

    async def fail(request: Request) -> Response:
        return Response(404)

    async def go() -> None:
        for i in range(500):
            req = Request("GET", f"/p{i}", Headers())
            await middleware(req, fail)

    asyncio.run(go())
    # keys that are not limited are capped by max_keys, limited ones by max_limited
    assert len(limiter) <= limiter.max_keys + limiter.max_limited == 100
