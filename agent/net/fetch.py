"""Pull one source path: a local file or an HTTP(S) URL, with conditional requests.

Path forms (Etcha's ``pullPaths``, reference etcha-run.md §4.5):

- local: anything that is not ``http://``/``https://``. A ``file://`` or ``file:`` prefix is
  stripped and a leading ``~`` is the home directory. The content is read (bounded) and always
  reported as fetched, with ``etag`` = ``sha256:<hex>`` of the content so callers can compare it
  with the stored one cheaply.
- ``http(s)://host/path#Name:value\\r\\nName2:value2``: the header block is parsed by
  :func:`agent.net.urls.parse_http_path` (the one parser; pseudo-headers ``skipVerify``,
  ``clientSkipVerify`` and ``clientTimeout``).

HTTP pulls go through the one client (:class:`agent.net.http.HTTPClient`, standard library, in a
worker thread) and send ``If-None-Match`` (the stored ETag) and ``If-Modified-Since`` (the stored
Last-Modified). 200 → fetched, 304 → not_modified, anything else → :class:`SourceError`.

Redirects (301, 302, 303, 307, 308): at most :data:`MAX_REDIRECTS` hops. A redirect to the
configured URL's origin (scheme, host, port) keeps the custom headers and the URL's user info. A
redirect to another origin is refused unless ``follow_cross_origin``
(``httpClient.followCrossOriginRedirects``) is set; it is then followed without the custom
headers and without the user info, which are only ever sent to the configured origin.

Invariants: bodies are read at most ``max_bytes`` (+1) bytes, then the request is abandoned;
error messages name the URL without its query, user info or header block (:func:`safe_url`,
:func:`redact`), so secrets in headers or query strings never reach a message or a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import dataclass
from typing import Literal

from agent.core.errors import SourceError
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.net.http import MAX_REDIRECTS, HTTPClient, RequestError
from agent.net.tls import TLSOptions
from agent.net.urls import (
    MASK,
    HTTPPath,
    is_http,
    mask_url,
    mask_urls_in_text,
    parse_http_path,
    redact,
    safe_url,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "MASK",
    "MAX_REDIRECTS",
    "FetchResult",
    "HTTPPath",
    "fetch",
    "fetch_path",
    "is_http",
    "local_path",
    "mask_url",
    "mask_urls_in_text",
    "parse_http_path",
    "redact",
    "safe_url",
]

DEFAULT_TIMEOUT = 10.0
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of a pull.

    Attributes:
        status: ``"fetched"`` (body present) or ``"not_modified"`` (304; body is ``None``).
        body: the content, decoded as UTF-8; ``None`` when not modified.
        etag: the ETag to store (the response's, or the stored one on a 304 without one).
        last_modified: the Last-Modified to store, same rule.
    """

    status: Literal["fetched", "not_modified"]
    body: str | None
    etag: str
    last_modified: str


def local_path(path: str) -> str:
    """The file system path of a local pull path (``file:``/``file://`` stripped, ``~`` expanded).

    Args:
        path: the pull path.

    Returns:
        The path to open.
    """
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    return os.path.expanduser(path)


async def fetch_path(
    path: str,
    *,
    session: object = None,
    etag: str = "",
    last_modified: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    tls_skip_verify: bool = False,
    ca_file: str = "",
    no_system_ca: bool = False,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    follow_cross_origin: bool = False,
    client: HTTPClient | None = None,
) -> FetchResult:
    """Pull one path (see the module docstring) in a worker thread: :func:`fetch`, async.

    Args:
        path: the pull path.
        session: ignored (kept for callers that still pass an aiohttp session).
        etag: the stored ETag, sent as ``If-None-Match``.
        last_modified: the stored Last-Modified, sent as ``If-Modified-Since``.
        timeout: total seconds for the request and body, unless ``clientTimeout`` overrides it.
        tls_skip_verify: skip TLS verification for every path (``httpClient.tlsSkipVerify``).
        ca_file: extra trusted CAs (``httpClient.caFile``).
        no_system_ca: trust only ``ca_file`` (``httpClient.noSystemCA``).
        max_bytes: the largest accepted body (``run.maxTokenBytes``).
        follow_cross_origin: follow a redirect to another origin, without the custom headers
            and user info (``httpClient.followCrossOriginRedirects``).
        client: a client to reuse (its TLS contexts are built once); when given, it replaces
            ``tls_skip_verify``, ``ca_file``, ``no_system_ca`` and ``follow_cross_origin``.

    Returns:
        The fetch result.

    Raises:
        SourceError: unreadable file, connection/TLS error, timeout, non-200/304 status,
            oversize or non-UTF-8 body, bad ``clientTimeout``, a refused cross-origin redirect,
            more than :data:`MAX_REDIRECTS` redirects.
        ConfigError: ``ca_file`` cannot be loaded.
    """
    del session
    if client is None:
        client = HTTPClient(
            TLSOptions(skip_verify=tls_skip_verify, ca_file=ca_file, no_system_ca=no_system_ca),
            follow_cross_origin=follow_cross_origin,
        )
    return await asyncio.to_thread(
        fetch,
        path,
        client=client,
        etag=etag,
        last_modified=last_modified,
        timeout=timeout,
        max_bytes=max_bytes,
    )


def fetch(
    path: str,
    *,
    client: HTTPClient,
    etag: str = "",
    last_modified: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
) -> FetchResult:
    """Pull one path, synchronously (arguments and errors as :func:`fetch_path`)."""
    if not is_http(path):
        return _read_local(path, max_bytes)
    parsed = parse_http_path(path)
    shown = safe_url(parsed.url)
    conditional: list[tuple[str, str]] = []
    if etag:
        conditional.append(("If-None-Match", etag))
    if last_modified:
        conditional.append(("If-Modified-Since", last_modified))
    try:
        resp = client.request(
            parsed.url,
            headers=parsed.headers,
            base_headers=conditional,
            timeout=parsed.timeout if parsed.timeout is not None else timeout,
            max_bytes=max_bytes,
            body_statuses=(200,),
            skip_verify=parsed.skip_verify,
        )
    except RequestError as exc:
        raise SourceError(f"pull path {shown}: {exc}") from exc
    if resp.status == 304:
        return FetchResult(
            status="not_modified",
            body=None,
            etag=resp.header("ETag", etag),
            last_modified=resp.header("Last-Modified", last_modified),
        )
    if resp.status != 200:
        raise SourceError(f"bad response from {shown}: {resp.status}")
    return FetchResult(
        status="fetched",
        body=_decode(resp.body, shown),
        etag=resp.header("ETag"),
        last_modified=resp.header("Last-Modified"),
    )


def _read_local(path: str, max_bytes: int) -> FetchResult:
    target = local_path(path)
    try:
        with open(target, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise SourceError(
                    f"pull path {target}: expected at most {max_bytes} bytes, got {size}"
                )
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise SourceError(
            f"pull path {target}: expected a readable file, got {exc.strerror or exc}"
        ) from exc
    if len(data) > max_bytes:
        raise SourceError(f"pull path {target}: expected at most {max_bytes} bytes, got more")
    body = _decode(data, target)
    return FetchResult(
        status="fetched",
        body=body,
        etag="sha256:" + hashlib.sha256(data).hexdigest(),
        last_modified="",
    )


def _decode(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"pull path {where}: expected UTF-8 text, got undecodable bytes") from exc
