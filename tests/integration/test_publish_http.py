"""HTTP destinations of `agent publish`: a real nginx with WebDAV PUT, and the 412 path.

Debian's nginx (ngx_http_dav_module) ignores ``If-Match`` and ``If-None-Match`` on ``PUT`` (it
answers 201/204 whatever the precondition), so the conflict path is tested against a small
aiohttp server on 127.0.0.1 that implements them as RFC 9110 says.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RIGHT_PRIV, RIGHT_PUB, free_port, require_tool

from agent.config.schema import config_from_dict
from agent.jws.keys import parse_verify_key
from agent.jws.tokens import verify_token
from agent.net.http import HTTPClient
from agent.tools.publish import DestReport, Publisher

pytestmark = pytest.mark.integration

NGINX = "/usr/sbin/nginx"
PATTERN = "{run: [{id: 'r', always: true, change: 'true'}], runVars: {v: '1'}}"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _config(tmp: Path, url: str) -> Any:
    (tmp / "web.jsonnet").write_text(PATTERN)
    web = {"pattern": str(tmp / "web.jsonnet"), "dest": [url], "expiresIn": "1h"}
    web["resignBefore"] = "10m"
    return config_from_dict(
        {"build": {"signingKey": RIGHT_PRIV}, "publish": {"artifacts": {"web": web}}}
    )


def _jti(raw: str) -> str:
    return verify_token(raw, [parse_verify_key(RIGHT_PUB)], check_times=False).jti


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx with ``dav_methods PUT`` on a free port, not daemonised, all files in tmp_path."""
    require_tool(NGINX, "nginx")
    prefix = tmp_path / "nginx"
    www = prefix / "www"
    for sub in ("logs", "tmp", "www"):
        (prefix / sub).mkdir(parents=True)
    port = free_port()
    user = "user root root;\n" if os.geteuid() == 0 else ""  # the worker must reach tmp_path
    temps = " ".join(
        f"{name}_temp_path {prefix / 'tmp'};" for name in ("proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"daemon off;\n{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'logs' / 'error.log'} info;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log {prefix / 'logs' / 'access.log'};\n"
        f"client_body_temp_path {prefix / 'tmp'}; {temps}\n"
        f"server {{ listen 127.0.0.1:{port}; root {www};\n"
        "location / { dav_methods PUT; create_full_put_path on;"
        " dav_access user:rw group:r all:r; } } }\n"
    )
    with (prefix / "logs" / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                HTTPClient().request(f"http://127.0.0.1:{port}/", max_bytes=1 << 16)
                break
            except Exception:
                if proc.poll() is not None:
                    pytest.fail((prefix / "logs" / "stderr").read_text())
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mirror/web.jwt", www / "mirror" / "web.jwt"
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _check(config: Any, clock: Clock) -> DestReport:
    [report] = asyncio.run(Publisher(config, client=HTTPClient(), clock=clock).check_all())
    return report


def test_nginx_destination_is_published_kept_resigned_and_recreated(
    tmp_path: Path, nginx: tuple[str, Path]
) -> None:
    url, served = nginx
    config = _config(tmp_path, url)
    first = _check(config, Clock(1_000_000))
    assert (first.action, first.reason, first.result) == (
        "rebuild",
        "nothing published",
        "published",
    )
    old = served.read_text()
    kept = _check(config, Clock(1_000_000 + 60))
    assert (kept.action, kept.result) == ("keep", "fresh")
    resigned = _check(config, Clock(1_000_000 + 3001))
    assert (resigned.action, resigned.result) == ("resign", "published")
    assert _jti(served.read_text()) != _jti(old)
    served.unlink()
    again = _check(config, Clock(1_000_000 + 3002))
    assert (again.action, again.reason, again.result) == (
        "rebuild",
        "nothing published",
        "published",
    )
    assert served.exists()


class ConditionalStore:
    """A WebDAV-like store honouring If-Match / If-None-Match; ``interfere`` PUTs lose a race."""

    def __init__(self, interfere: int, rival: str = "") -> None:
        self.body: bytes | None = None
        self.version = 0
        self.interfere = interfere
        self.rival = rival.encode()
        self.log: list[str] = []

    def etag(self) -> str:
        return f'"v{self.version}"'

    async def get(self, request: Any) -> Any:
        from aiohttp import web

        self.log.append("GET")
        if self.body is None:
            return web.Response(status=404)
        return web.Response(body=self.body, headers={"ETag": self.etag()})

    async def put(self, request: Any) -> Any:
        from aiohttp import web

        data = await request.read()
        if self.interfere > 0:  # another writer got there first
            self.interfere -= 1
            self.body = self.rival or (self.body or b"") + b"\n"
            self.version += 1
        match, none_match = request.headers.get("If-Match"), request.headers.get("If-None-Match")
        stale = (match is not None and match != self.etag()) or (
            none_match == "*" and self.body is not None
        )
        self.log.append("PUT 412" if stale else "PUT")
        if stale:
            return web.Response(status=412)
        self.body = data
        self.version += 1
        return web.Response(status=204)


async def _with_store(store: ConditionalStore, config_for: Any, clock: Clock) -> DestReport:
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/web.jwt", store.get)
    app.router.add_put("/web.jwt", store.put)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        publisher = Publisher(
            config_for(f"http://127.0.0.1:{port}/web.jwt"), client=HTTPClient(), clock=clock
        )
        [report] = await publisher.check_all()
        return report
    finally:
        await runner.cleanup()


def test_put_412_reads_and_decides_again_once(tmp_path: Path) -> None:
    store = ConditionalStore(interfere=1, rival="not a token")
    report = asyncio.run(_with_store(store, lambda url: _config(tmp_path, url), Clock(1_000_000)))
    assert report.result == "published", report
    assert store.log == ["GET", "PUT 412", "GET", "PUT"]
    assert store.body is not None
    token = verify_token(store.body.decode(), [parse_verify_key(RIGHT_PUB)], check_times=False)
    assert token.exp == 1_000_000 + 3600


def test_second_412_fails_the_destination(tmp_path: Path) -> None:
    store = ConditionalStore(interfere=2)
    report = asyncio.run(_with_store(store, lambda url: _config(tmp_path, url), Clock(1_000_000)))
    assert report.result == "failed"
    assert "412 Precondition Failed" in report.error
    assert store.log == ["GET", "PUT 412", "GET", "PUT 412"]
