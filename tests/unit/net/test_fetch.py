"""fetch_path against real aiohttp servers on 127.0.0.1 and real files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from agent.core.errors import ConfigError, SourceError
from agent.net.fetch import (
    MAX_REDIRECTS,
    FetchResult,
    fetch_path,
    local_path,
    mask_url,
    mask_urls_in_text,
    parse_http_path,
    redact,
    safe_url,
)
from agent.net.tls import TLSOptions, client_context
from agent.net.tlsutil import self_signed, server_ssl_context

TOKEN = "header.payload.signature"
ETAG = '"v1"'
LAST_MODIFIED = "Wed, 21 Oct 2015 07:28:00 GMT"


@dataclass
class Recorder:
    requests: list[dict[str, str]] = field(default_factory=list)


def _token_app(rec: Recorder) -> web.Application:
    async def token(request: web.Request) -> web.StreamResponse:
        rec.requests.append(dict(request.headers))
        if request.headers.get("If-None-Match") == ETAG:
            return web.Response(status=304, headers={"ETag": ETAG})
        return web.Response(text=TOKEN, headers={"ETag": ETAG, "Last-Modified": LAST_MODIFIED})

    async def plain(request: web.Request) -> web.StreamResponse:
        rec.requests.append(dict(request.headers))
        return web.Response(text=TOKEN)

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="nope")

    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(3)
        return web.Response(text=TOKEN)

    async def big(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "2048"))
        if request.query.get("chunked"):
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(size // 256):
                await resp.write(b"x" * 256)
            await resp.write_eof()
            return resp
        return web.Response(body=b"x" * size)

    async def binary(_: web.Request) -> web.StreamResponse:
        return web.Response(body=b"\xff\xfe\x00")

    app = web.Application()
    app.router.add_get("/token.jwt", token)
    app.router.add_get("/plain.jwt", plain)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_get("/binary", binary)
    return app


@asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=ssl_context)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


def run_with_server(
    body: Callable[[aiohttp.ClientSession, str, Recorder], Awaitable[Any]],
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    rec = Recorder()

    async def main() -> Any:
        async with serve(_token_app(rec), ssl_context) as port, aiohttp.ClientSession() as s:
            scheme = "https" if ssl_context else "http"
            return await body(s, f"{scheme}://127.0.0.1:{port}", rec)

    return asyncio.run(main())


# HTTP


def test_http_fetch_returns_body_etag_and_last_modified() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> FetchResult:
        return await fetch_path(f"{base}/token.jwt", session=s)

    assert run_with_server(body) == FetchResult("fetched", TOKEN, ETAG, LAST_MODIFIED)


def test_http_fetch_without_validators_returns_empty_etag() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> FetchResult:
        return await fetch_path(f"{base}/plain.jwt", session=s)

    assert run_with_server(body) == FetchResult("fetched", TOKEN, "", "")


def test_stored_etag_is_sent_and_304_is_not_modified() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> Any:
        first = await fetch_path(f"{base}/token.jwt", session=s)
        second = await fetch_path(
            f"{base}/token.jwt", session=s, etag=first.etag, last_modified=first.last_modified
        )
        return first, second, rec.requests

    _first, second, requests = run_with_server(body)
    assert "If-None-Match" not in requests[0]
    assert "If-Modified-Since" not in requests[0]
    assert requests[1]["If-None-Match"] == ETAG
    assert requests[1]["If-Modified-Since"] == LAST_MODIFIED
    assert second == FetchResult("not_modified", None, ETAG, LAST_MODIFIED)


def test_304_without_validators_keeps_the_stored_ones() -> None:
    async def not_modified(_: web.Request) -> web.StreamResponse:
        return web.Response(status=304)

    async def main() -> FetchResult:
        app = web.Application()
        app.router.add_get("/t", not_modified)
        async with serve(app) as port, aiohttp.ClientSession() as s:
            return await fetch_path(
                f"http://127.0.0.1:{port}/t", session=s, etag='"old"', last_modified="lm"
            )

    assert asyncio.run(main()) == FetchResult("not_modified", None, '"old"', "lm")


def test_headers_after_hash_reach_the_server_and_values_keep_colons() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> list[dict[str, str]]:
        path = (
            f"{base}/plain.jwt#Authorization:Bearer a:b:c\r\nX-Url: http://h:1/p"
            "\r\nclientSkipVerify:true\r\nclientTimeout:5\r\nskipVerify"
        )
        await fetch_path(path, session=s)
        return rec.requests

    (headers,) = run_with_server(body)
    assert headers["Authorization"] == "Bearer a:b:c"
    assert headers["X-Url"] == "http://h:1/p"
    lowered = {k.lower() for k in headers}
    assert not lowered & {"clientskipverify", "clienttimeout", "skipverify"}


def test_non_200_status_is_a_source_error_without_query_or_headers() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/status/500?key=secret#Authorization:Bearer secret", session=s)

    with pytest.raises(SourceError) as info:
        run_with_server(body)
    msg = str(info.value)
    assert msg.startswith("bad response from http://127.0.0.1:")
    assert msg.endswith("/status/500: 500")
    assert "secret" not in msg


def test_404_is_a_bad_response() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/status/404", session=s)

    with pytest.raises(SourceError, match=r"bad response from .*: 404$"):
        run_with_server(body)


def test_timeout_argument_bounds_the_request() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/slow", session=s, timeout=0.3)

    with pytest.raises(SourceError, match=r"expected an answer within 0.3s"):
        run_with_server(body)


def test_client_timeout_pseudo_header_overrides_the_timeout() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/slow#clientTimeout:0.3", session=s, timeout=30)

    with pytest.raises(SourceError, match=r"within 0.3s"):
        run_with_server(body)


@pytest.mark.parametrize("value", ["abc", "0", "-1", "", "nan"])
def test_bad_client_timeout_is_a_source_error(value: str) -> None:
    with pytest.raises(SourceError, match="clientTimeout"):
        parse_http_path(f"https://h/p#clientTimeout:{value}")


@pytest.mark.parametrize("chunked", [False, True])
def test_oversize_body_is_a_source_error(chunked: bool) -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        q = "&chunked=1" if chunked else ""
        await fetch_path(f"{base}/big?size=4096{q}", session=s, max_bytes=1000)

    with pytest.raises(SourceError, match=r"expected at most 1000 bytes"):
        run_with_server(body)


def test_body_at_the_limit_is_accepted() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> FetchResult:
        return await fetch_path(f"{base}/big?size=1024&chunked=1", session=s, max_bytes=1024)

    result = run_with_server(body)
    assert result.body == "x" * 1024


def test_non_utf8_body_is_a_source_error() -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/binary", session=s)

    with pytest.raises(SourceError, match="expected UTF-8"):
        run_with_server(body)


def test_connection_refused_is_a_source_error() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await fetch_path(f"http://127.0.0.1:{port}/x?key=secret", session=s, timeout=5)

    with pytest.raises(SourceError, match="request failed") as info:
        asyncio.run(main())
    assert "secret" not in str(info.value)


# HTTPS


@pytest.fixture(scope="module")
def tls_pair() -> tuple[bytes, bytes]:
    return self_signed(["localhost"])


def _server_ctx(pair: tuple[bytes, bytes], tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    return server_ssl_context(cert_path=str(cert), key_path=str(key))


def test_https_self_signed_fails_verification_by_default(
    tls_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/plain.jwt", session=s)

    with pytest.raises(SourceError, match=r"request failed.*[Cc]ertificate"):
        run_with_server(body, ssl_context=_server_ctx(tls_pair, tmp_path))


@pytest.mark.parametrize(
    ("suffix", "flag"),
    [("", True), ("#skipVerify", False), ("#clientSkipVerify:true", False)],
)
def test_https_skip_verify_fetches(
    tls_pair: tuple[bytes, bytes], tmp_path: Path, suffix: str, flag: bool
) -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> FetchResult:
        return await fetch_path(f"{base}/plain.jwt{suffix}", session=s, tls_skip_verify=flag)

    result = run_with_server(body, ssl_context=_server_ctx(tls_pair, tmp_path))
    assert result.body == TOKEN


def test_skip_verify_false_value_keeps_verification(
    tls_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/plain.jwt#clientSkipVerify:false", session=s)

    with pytest.raises(SourceError, match="request failed"):
        run_with_server(body, ssl_context=_server_ctx(tls_pair, tmp_path))


@pytest.mark.parametrize("no_system_ca", [False, True])
def test_https_with_ca_file_verifies(
    tls_pair: tuple[bytes, bytes], tmp_path: Path, no_system_ca: bool
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tls_pair[0])

    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> FetchResult:
        return await fetch_path(
            f"{base}/token.jwt", session=s, ca_file=str(ca), no_system_ca=no_system_ca
        )

    result = run_with_server(body, ssl_context=_server_ctx(tls_pair, tmp_path))
    assert result == FetchResult("fetched", TOKEN, ETAG, LAST_MODIFIED)


def test_ca_file_that_did_not_sign_the_server_fails(
    tls_pair: tuple[bytes, bytes], tmp_path: Path
) -> None:
    other, _ = self_signed()
    ca = tmp_path / "other.pem"
    ca.write_bytes(other)

    async def body(s: aiohttp.ClientSession, base: str, rec: Recorder) -> None:
        await fetch_path(f"{base}/token.jwt", session=s, ca_file=str(ca), no_system_ca=True)

    with pytest.raises(SourceError, match="request failed"):
        run_with_server(body, ssl_context=_server_ctx(tls_pair, tmp_path))


# make_ssl_context


def test_make_ssl_context_choices(tmp_path: Path) -> None:
    skip = client_context(TLSOptions(skip_verify=True, ca_file="/nonexistent", no_system_ca=True))
    assert skip.verify_mode == ssl.CERT_NONE and not skip.check_hostname
    default = client_context(TLSOptions())
    assert default.verify_mode == ssl.CERT_REQUIRED and default.check_hostname
    ca = tmp_path / "ca.pem"
    ca.write_bytes(self_signed()[0])
    ctx = client_context(TLSOptions(ca_file=str(ca), no_system_ca=True))
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert len(ctx.get_ca_certs()) == 1


def test_make_ssl_context_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"httpClient.caFile: expected a readable PEM"):
        client_context(TLSOptions(ca_file=str(tmp_path / "missing.pem")))
    bad = tmp_path / "bad.pem"
    bad.write_text("not a cert")
    with pytest.raises(ConfigError, match=r"httpClient.caFile"):
        client_context(TLSOptions(ca_file=str(bad)))


def test_no_system_ca_without_ca_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"httpClient\.noSystemCA"):
        client_context(TLSOptions(no_system_ca=True))


# path parsing


def test_parse_http_path_splits_on_first_hash_and_first_colon() -> None:
    parsed = parse_http_path("https://h/p?q=1#A:b:c\r\nB:x#y\r\n\r\nNoValue")
    assert parsed.url == "https://h/p?q=1"
    assert parsed.headers == (("A", "b:c"), ("B", "x#y"), ("NoValue", ""))
    assert parsed.skip_verify is False
    assert parsed.timeout is None
    assert "b:c" not in repr(parsed)


def test_safe_url_drops_user_query_and_headers() -> None:
    assert safe_url("https://u:pw@h:8443/p/x?key=s#A:b") == "https://h:8443/p/x"
    assert safe_url("http://[::1]:80/p") == "http://[::1]:80/p"


def test_local_path_prefixes_and_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/tester")
    assert local_path("file:///etc/x.jwt") == "/etc/x.jwt"
    assert local_path("file:/etc/x.jwt") == "/etc/x.jwt"
    assert local_path("file:rel.jwt") == "rel.jwt"
    assert local_path("~/x.jwt") == "/home/tester/x.jwt"
    assert local_path("/abs/x.jwt") == "/abs/x.jwt"


# local files


def _fetch_local(path: str, **kwargs: Any) -> FetchResult:
    async def main() -> FetchResult:
        async with aiohttp.ClientSession() as s:
            return await fetch_path(path, session=s, **kwargs)

    return asyncio.run(main())


@pytest.mark.parametrize("prefix", ["", "file:", "file://"])
def test_local_file_is_fetched_with_content_hash_etag(tmp_path: Path, prefix: str) -> None:
    f = tmp_path / "p.jwt"
    f.write_text(TOKEN)
    result = _fetch_local(prefix + str(f))
    assert result == FetchResult(
        "fetched", TOKEN, "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest(), ""
    )


def test_local_file_etag_changes_with_content_and_stored_etag_is_ignored(
    tmp_path: Path,
) -> None:
    f = tmp_path / "p.jwt"
    f.write_text("one")
    first = _fetch_local(str(f))
    again = _fetch_local(str(f), etag=first.etag)
    assert again.status == "fetched"
    assert again.etag == first.etag
    f.write_text("two")
    assert _fetch_local(str(f)).etag != first.etag


def test_local_file_under_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "h.jwt").write_text(TOKEN)
    assert _fetch_local("~/h.jwt").body == TOKEN


def test_missing_local_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"pull path .*nope.jwt: expected a readable file"):
        _fetch_local(str(tmp_path / "nope.jwt"))


def test_oversize_local_file_is_a_source_error(tmp_path: Path) -> None:
    f = tmp_path / "big.jwt"
    f.write_bytes(b"x" * 2000)
    with pytest.raises(SourceError, match=r"expected at most 1000 bytes, got 2000"):
        _fetch_local(str(f), max_bytes=1000)


# redirects (issue 12): same origin keeps the custom headers, another origin is refused or
# followed without them


def _redirect_app(rec: Recorder, location: Callable[[web.Request], str]) -> web.Application:
    async def redirect(request: web.Request) -> web.StreamResponse:
        rec.requests.append({"path": request.path_qs, **request.headers})
        raise web.HTTPFound(location(request))

    async def token(request: web.Request) -> web.StreamResponse:
        rec.requests.append({"path": request.path_qs, **request.headers})
        return web.Response(text=TOKEN, headers={"ETag": ETAG})

    app = web.Application()
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop/{n}", redirect)
    app.router.add_get("/token.jwt", token)
    return app


def run_with_two_servers(
    body: Callable[[aiohttp.ClientSession, str, str], Awaitable[Any]],
    first: Callable[[str], Callable[[web.Request], str]],
) -> tuple[Any, Recorder, Recorder]:
    """Two servers on 127.0.0.1 (two ports: two origins); ``first`` builds the first's Location."""
    rec_a, rec_b = Recorder(), Recorder()

    async def main() -> Any:
        other: list[str] = []
        app_a = _redirect_app(rec_a, lambda request: first(other[0])(request))
        app_b = _redirect_app(rec_b, lambda request: "/token.jwt")
        async with serve(app_a) as port_a, serve(app_b) as port_b:
            other.append(f"http://127.0.0.1:{port_b}")
            async with aiohttp.ClientSession() as s:
                return await body(s, f"http://127.0.0.1:{port_a}", other[0])

    result = asyncio.run(main())
    return result, rec_a, rec_b


SECRET_PATH = "#X-Api-Key:key-secret\r\nAuthorization:Bearer bearer-secret"


def test_same_origin_redirect_is_followed_with_custom_headers_and_user_info() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        url = base.replace("://", "://user:pw-secret@") + "/redirect" + SECRET_PATH
        return await fetch_path(
            url.replace("\r\nAuthorization:Bearer bearer-secret", ""), session=s
        )

    result, rec_a, rec_b = run_with_two_servers(body, lambda other: lambda r: "/token.jwt")
    assert result.body == TOKEN and result.etag == ETAG
    assert [r["path"] for r in rec_a.requests] == ["/redirect", "/token.jwt"]
    for request in rec_a.requests:
        assert request["X-Api-Key"] == "key-secret"
        assert request["Authorization"] == "Basic " + base64.b64encode(b"user:pw-secret").decode()
    assert rec_b.requests == []


def test_cross_origin_redirect_is_refused_naming_both_origins_without_secrets() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        url = base.replace("://", "://user:pw-secret@") + "/redirect?sig=q-secret" + SECRET_PATH
        return await fetch_path(url, session=s)

    with pytest.raises(SourceError) as info:
        run_with_two_servers(body, lambda other: lambda r: f"{other}/token.jwt?sig=next-secret")
    msg = str(info.value)
    ports = re.findall(r"http://127\.0\.0\.1:(\d+)", msg)
    assert len(set(ports)) == 2, msg
    assert "refused a redirect from origin http://127.0.0.1:" in msg
    assert "httpClient.followCrossOriginRedirects" in msg
    assert "secret" not in msg and "user" not in msg and "sig" not in msg


def test_cross_origin_redirect_is_not_requested_when_refused() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        with pytest.raises(SourceError, match="refused a redirect"):
            await fetch_path(f"{base}/redirect{SECRET_PATH}", session=s)

    _, rec_a, rec_b = run_with_two_servers(body, lambda other: lambda r: f"{other}/token.jwt")
    assert len(rec_a.requests) == 1 and rec_b.requests == []


def test_cross_origin_redirect_is_followed_without_custom_headers_when_allowed() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        url = base.replace("://", "://user:pw-secret@") + "/redirect" + SECRET_PATH
        return await fetch_path(url, session=s, etag='"old"', follow_cross_origin=True)

    result, rec_a, rec_b = run_with_two_servers(body, lambda other: lambda r: f"{other}/redirect")
    assert result.body == TOKEN
    assert rec_a.requests[0]["X-Api-Key"] == "key-secret"
    assert rec_a.requests[0]["Authorization"] == "Bearer bearer-secret"
    # server b redirected to itself once, then answered; it never saw a custom header
    assert [r["path"] for r in rec_b.requests] == ["/redirect", "/token.jwt"]
    for request in rec_b.requests:
        lowered = {k.lower() for k in request}
        assert not lowered & {"x-api-key", "authorization"}, request
        assert request["If-None-Match"] == '"old"'


def test_redirect_back_to_the_configured_origin_sends_the_headers_again() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        return await fetch_path(
            f"{base}/redirect{SECRET_PATH}", session=s, follow_cross_origin=True
        )

    rec_a, rec_b = Recorder(), Recorder()

    async def main() -> Any:
        ports: list[int] = []
        app_a = _redirect_app(rec_a, lambda r: f"http://127.0.0.1:{ports[1]}/redirect")
        app_b = _redirect_app(rec_b, lambda r: f"http://127.0.0.1:{ports[0]}/token.jwt")
        async with serve(app_a) as port_a, serve(app_b) as port_b:
            ports += [port_a, port_b]
            async with aiohttp.ClientSession() as s:
                return await body(s, f"http://127.0.0.1:{port_a}", "")

    assert asyncio.run(main()).body == TOKEN
    assert [r["path"] for r in rec_a.requests] == ["/redirect", "/token.jwt"]
    assert all(r["X-Api-Key"] == "key-secret" for r in rec_a.requests)
    assert "X-Api-Key" not in rec_b.requests[0]


def test_redirect_loop_stops_after_max_redirects() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        return await fetch_path(f"{base}/loop/0", session=s)

    def next_hop(other: str) -> Callable[[web.Request], str]:
        return lambda r: f"/loop/{int(r.match_info['n']) + 1}"

    with pytest.raises(SourceError, match=f"expected at most {MAX_REDIRECTS} redirects"):
        run_with_two_servers(body, next_hop)


def test_redirect_to_a_non_http_scheme_is_refused() -> None:
    async def body(s: aiohttp.ClientSession, base: str, other: str) -> Any:
        return await fetch_path(f"{base}/redirect", session=s, follow_cross_origin=True)

    with pytest.raises(SourceError, match="expected a redirect to an http"):
        run_with_two_servers(body, lambda other: lambda r: "file:///etc/passwd")


# secrets never reach messages (issue 12)


def test_connection_error_message_carries_no_user_info_query_or_headers() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await fetch_path(
                f"http://user:pw-secret@127.0.0.1:{port}/x?sig=q-secret{SECRET_PATH}",
                session=s,
                timeout=5,
            )

    with pytest.raises(SourceError, match="request failed") as info:
        asyncio.run(main())
    msg = str(info.value)
    assert f"http://127.0.0.1:{port}/x" in msg
    assert "secret" not in msg and "user" not in msg and "sig" not in msg


def test_invalid_url_message_carries_no_user_info_or_query() -> None:
    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            await fetch_path("http://user:pw-secret@127.0.0.1:99999/x?sig=q-secret", session=s)

    with pytest.raises(SourceError) as info:
        asyncio.run(main())
    msg = str(info.value)
    assert "secret" not in msg and "user" not in msg and "sig" not in msg


def test_redact_removes_every_secret_part_of_a_url_from_text() -> None:
    url = "https://alice:pw-secret@h:8443/p?sig=q-secret&x=1" + SECRET_PATH
    text = (
        f"failed {url}; nonnumeric port: 'pw-secret@h'; query sig=q-secret; "
        "header Bearer bearer-secret; key-secret"
    )
    out = redact(text, url)
    assert "secret" not in out and "alice" not in out
    assert "https://h:8443/p" in out


def test_mask_url_keeps_structure_and_hides_user_info_query_and_header_values() -> None:
    url = (
        "https://alice:pw@h:8443/t.jwt?sig=abc&v=1&bare"
        "#Authorization:Bearer xyz\r\nX-Api-Key:k\r\nclientTimeout:5\r\nskipVerify:true"
    )
    assert mask_url(url) == (
        "https://***@h:8443/t.jwt?sig=***&v=***&***"
        "#Authorization:***\r\nX-Api-Key:***\r\nclientTimeout:5\r\nskipVerify:true"
    )
    assert mask_url("https://h/p") == "https://h/p"
    assert mask_url("/var/lib/token.jwt?x=1") == "/var/lib/token.jwt?x=1"  # a local path


def test_mask_urls_in_text_masks_urls_inside_other_strings() -> None:
    text = "curl -fsS https://bot:tok@api.example.com/v1?token=abc -o /tmp/x && echo done"
    assert mask_urls_in_text(text) == (
        "curl -fsS https://***@api.example.com/v1?token=*** -o /tmp/x && echo done"
    )
    assert mask_urls_in_text("no urls here") == "no urls here"


# one size bound (issue 12)


def test_default_body_limit_is_the_token_size_bound(tmp_path: Path) -> None:
    from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES

    at_limit = tmp_path / "at.jwt"
    at_limit.write_bytes(b"x" * DEFAULT_MAX_TOKEN_BYTES)
    over = tmp_path / "over.jwt"
    over.write_bytes(b"x" * (DEFAULT_MAX_TOKEN_BYTES + 1))

    async def main() -> None:
        async with aiohttp.ClientSession() as s:
            result = await fetch_path(str(at_limit), session=s)
            assert result.body is not None and len(result.body) == DEFAULT_MAX_TOKEN_BYTES
            with pytest.raises(SourceError, match=f"at most {DEFAULT_MAX_TOKEN_BYTES} bytes"):
                await fetch_path(str(over), session=s)

    asyncio.run(main())
