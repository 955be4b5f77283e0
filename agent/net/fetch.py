"""Pull one source path: a local file or an HTTP(S) URL, with conditional requests.

Path forms (Etcha's ``pullPaths``, reference etcha-run.md §4.5):

- local: anything that is not ``http://``/``https://``. A ``file://`` or ``file:`` prefix is
  stripped and a leading ``~`` is the home directory. The content is read (bounded) and always
  reported as fetched, with ``etag`` = ``sha256:<hex>`` of the content so callers can compare it
  with the stored one cheaply.
- ``http(s)://host/path#Name:value\\r\\nName2:value2``: everything after the first ``#`` is a
  header block, entries separated by CR LF, each split on its **first** ``:`` (Etcha splits on
  every ``:`` and loses values that contain one). Pseudo-headers, never sent: ``skipVerify`` and
  ``clientSkipVerify`` (skip TLS verification; a value of ``false``/``0`` turns it off) and
  ``clientTimeout:<seconds>``.

HTTP pulls send ``If-None-Match`` (the stored ETag) and ``If-Modified-Since`` (the stored
Last-Modified). 200 → fetched, 304 → not_modified, anything else → :class:`SourceError`.

Redirects (301, 302, 303, 307, 308) are followed here, not by aiohttp, at most
:data:`MAX_REDIRECTS` hops. A redirect to the configured URL's origin (scheme, host, port) keeps
the custom headers and the URL's user info. A redirect to another origin is refused unless
``follow_cross_origin`` (``httpClient.followCrossOriginRedirects``) is set; it is then followed
without the custom headers and without the user info, which are only ever sent to the
configured origin.

Invariants: bodies are read at most ``max_bytes`` (+1) bytes, then the request is abandoned;
error messages name the URL without its query, user info or header block (:func:`safe_url`,
:func:`redact`), so secrets in headers or query strings never reach a message or a log line.
:func:`mask_url` is the display form for config output: structure kept, secret values ``***``.

aiohttp is only imported for type checking here; the caller owns the ``ClientSession``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

from agent.core.errors import ConfigError, SourceError
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES

if TYPE_CHECKING:
    import aiohttp
    import yarl

DEFAULT_TIMEOUT = 10.0
#: Most redirects followed for one pull.
MAX_REDIRECTS = 10
#: What a secret part of a URL is replaced with by :func:`mask_url` and :func:`redact`.
MASK = "***"
_CHUNK = 64 * 1024
_SKIP_VERIFY_NAMES = frozenset({"skipverify", "clientskipverify"})
_PSEUDO_HEADERS = _SKIP_VERIFY_NAMES | {"clienttimeout"}
_FALSE_VALUES = frozenset({"false", "0", "no", "off"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_URL_IN_TEXT = re.compile(r"(?i)\bhttps?://[^\s\"'<>`]+")


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


@dataclass(frozen=True, slots=True)
class HTTPPath:
    """An HTTP(S) pull path split into its parts (header values may be secrets)."""

    url: str
    headers: tuple[tuple[str, str], ...]
    skip_verify: bool
    timeout: float | None

    def __repr__(self) -> str:
        return f"HTTPPath(url={safe_url(self.url)!r}, headers=<{len(self.headers)} hidden>)"


def is_http(path: str) -> bool:
    """Whether a pull path is an HTTP(S) URL rather than a local file."""
    lowered = path[:8].lower()
    return lowered.startswith(("http://", "https://"))


def safe_url(url: str) -> str:
    """The URL without user info, query, fragment or header block, for messages and logs."""
    base = url.split("#", 1)[0]
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def mask_url(url: str) -> str:
    """An HTTP(S) URL or pull path with every secret part replaced by ``***``, for display.

    User info becomes ``***@``, each query value ``name=***`` (a bare query item ``***``), and
    each ``#Name:value`` header entry ``Name:***``. The pseudo-headers ``skipVerify``,
    ``clientSkipVerify`` and ``clientTimeout`` are options, not secrets, and stay visible.

    Args:
        url: the URL or pull path; a value that is not ``http(s)://`` is returned unchanged.

    Returns:
        The masked text (``***`` for a URL that cannot be parsed).
    """
    if not is_http(url):
        return url
    base, sep, block = url.partition("#")
    try:
        parts = urlsplit(base)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={MASK}" if eq else (MASK if name else "")
        for name, eq, _ in (item.partition("=") for item in parts.query.split("&"))
    )
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if not sep:
        return shown
    entries = []
    for entry in block.split("\r\n"):
        name, colon, _ = entry.partition(":")
        if colon and name.strip().lower() not in _PSEUDO_HEADERS:
            entries.append(f"{name}:{MASK}")
        else:
            entries.append(entry)
    return shown + "#" + "\r\n".join(entries)


def mask_urls_in_text(text: str) -> str:
    """``text`` with :func:`mask_url` applied to it (when it is a URL) or to each URL inside it.

    Args:
        text: any config string (a pull path, a var, a command line).

    Returns:
        The text with user info, query values and header values of its URLs masked.
    """
    if is_http(text):
        return mask_url(text)
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)


def redact(text: str, url: str) -> str:
    """``text`` (e.g. an exception message) without the secret parts of ``url``.

    The full URL and its base become :func:`safe_url`; any remaining occurrence of its user
    info, password, query or header block becomes ``***``.

    Args:
        text: the text that may quote ``url`` or pieces of it.
        url: the URL (or pull path) whose secrets must not appear.

    Returns:
        The redacted text.
    """
    base, _, block = url.partition("#")
    safe = safe_url(url)
    for whole in (url, base):
        if whole:
            text = text.replace(whole, safe)
    secrets: list[str] = []
    if block:
        secrets.append(block)
        secrets.extend(entry.partition(":")[2].strip() for entry in block.split("\r\n"))
    try:
        parts = urlsplit(base)
    except ValueError:
        parts = None
    if parts is not None:
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        secrets += [userinfo, *userinfo.split(":"), parts.query, parts.fragment]
        secrets.extend(item.partition("=")[2] for item in parts.query.split("&"))
    for secret in sorted({s for s in secrets if len(s) >= 2}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def parse_http_path(path: str) -> HTTPPath:
    """Split an HTTP(S) pull path into URL, headers and pseudo-header options.

    Args:
        path: ``<url>[#Name:value\\r\\nName:value...]``.

    Returns:
        The parsed path.

    Raises:
        SourceError: ``clientTimeout`` is not a positive number of seconds.
    """
    url, sep, block = path.partition("#")
    headers: list[tuple[str, str]] = []
    skip_verify = False
    timeout: float | None = None
    if sep:
        for entry in block.split("\r\n"):
            if not entry.strip():
                continue
            name, _, value = entry.partition(":")
            name = name.strip()
            value = value.strip()
            lowered = name.lower()
            if lowered in _SKIP_VERIFY_NAMES:
                skip_verify = value.lower() not in _FALSE_VALUES
            elif lowered == "clienttimeout":
                try:
                    timeout = float(value)
                except ValueError:
                    timeout = -1.0
                if not timeout > 0 or timeout != timeout or timeout == float("inf"):
                    raise SourceError(
                        f"pull path {safe_url(url)}: expected clientTimeout to be a positive "
                        f"number of seconds, got {value!r}"
                    )
            elif name:
                headers.append((name, value))
    return HTTPPath(url=url, headers=tuple(headers), skip_verify=skip_verify, timeout=timeout)


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


def make_ssl_context(
    skip_verify: bool, ca_file: str = "", no_system_ca: bool = False
) -> ssl.SSLContext | bool:
    """The ``ssl`` argument for an aiohttp request.

    Args:
        skip_verify: do not verify the server certificate at all.
        ca_file: a PEM bundle of extra trusted CAs (``httpClient.caFile``).
        no_system_ca: trust only ``ca_file``, not the system store (``httpClient.noSystemCA``).

    Returns:
        ``False`` to skip verification, ``True`` for aiohttp's default verifying context, or a
        verifying context with ``ca_file`` loaded (minimum TLS 1.2).

    Raises:
        ConfigError: ``ca_file`` cannot be loaded, or ``no_system_ca`` without a ``ca_file``.
    """
    if skip_verify:
        return False
    if not ca_file:
        if no_system_ca:
            raise ConfigError(
                "httpClient.noSystemCA: expected httpClient.caFile to name the CAs to trust "
                "instead, got no caFile"
            )
        return True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not no_system_ca:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    try:
        ctx.load_verify_locations(cafile=os.path.expanduser(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no usable PEM"
        raise ConfigError(
            f"httpClient.caFile: expected a readable PEM CA bundle, got {reason} ({ca_file})"
        ) from exc
    return ctx


async def fetch_path(
    path: str,
    *,
    session: aiohttp.ClientSession,
    etag: str = "",
    last_modified: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    tls_skip_verify: bool = False,
    ca_file: str = "",
    no_system_ca: bool = False,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    follow_cross_origin: bool = False,
) -> FetchResult:
    """Pull one path (see the module docstring for the forms).

    Args:
        path: the pull path.
        session: the aiohttp session to use for HTTP(S).
        etag: the stored ETag, sent as ``If-None-Match``.
        last_modified: the stored Last-Modified, sent as ``If-Modified-Since``.
        timeout: total seconds for the request and body, unless ``clientTimeout`` overrides it.
        tls_skip_verify: skip TLS verification for every path (``httpClient.tlsSkipVerify``).
        ca_file: extra trusted CAs (``httpClient.caFile``).
        no_system_ca: trust only ``ca_file`` (``httpClient.noSystemCA``).
        max_bytes: the largest accepted body (``run.maxTokenBytes``).
        follow_cross_origin: follow a redirect to another origin, without the custom headers
            and user info (``httpClient.followCrossOriginRedirects``).

    Returns:
        The fetch result.

    Raises:
        SourceError: unreadable file, connection/TLS error, timeout, non-200/304 status,
            oversize or non-UTF-8 body, bad ``clientTimeout``, a refused cross-origin redirect,
            more than :data:`MAX_REDIRECTS` redirects.
        ConfigError: ``ca_file`` cannot be loaded.
    """
    if not is_http(path):
        return await asyncio.to_thread(_read_local, path, max_bytes)
    return await _fetch_http(
        parse_http_path(path),
        session=session,
        etag=etag,
        last_modified=last_modified,
        timeout=timeout,
        tls_skip_verify=tls_skip_verify,
        ca_file=ca_file,
        no_system_ca=no_system_ca,
        max_bytes=max_bytes,
        follow_cross_origin=follow_cross_origin,
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


def _origin(url: yarl.URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def _show_origin(origin: tuple[str, str, int | None]) -> str:
    scheme, host, port = origin
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


async def _fetch_http(
    parsed: HTTPPath,
    *,
    session: aiohttp.ClientSession,
    etag: str,
    last_modified: str,
    timeout: float,
    tls_skip_verify: bool,
    ca_file: str,
    no_system_ca: bool,
    max_bytes: int,
    follow_cross_origin: bool,
) -> FetchResult:
    import aiohttp
    import yarl

    shown = safe_url(parsed.url)
    ssl_arg = make_ssl_context(tls_skip_verify or parsed.skip_verify, ca_file, no_system_ca)
    conditional: dict[str, str] = {}
    if etag:
        conditional["If-None-Match"] = etag
    if last_modified:
        conditional["If-Modified-Since"] = last_modified
    custom = dict(parsed.headers)
    seconds = parsed.timeout if parsed.timeout is not None else timeout
    try:
        url = yarl.URL(parsed.url, encoded=False)
        home = _origin(url)
    except (ValueError, TypeError) as exc:
        raise SourceError(
            f"pull path {shown}: expected a valid URL, got an unparsable one"
        ) from exc
    auth = aiohttp.BasicAuth.from_url(url)  # user info goes to the configured origin only
    home_headers = {**conditional, **({"Authorization": auth.encode()} if auth else {}), **custom}
    url = url.with_user(None).with_password(None)
    hops = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                at_home = _origin(url) == home
                async with session.get(
                    url,
                    headers=home_headers if at_home else conditional,
                    ssl=ssl_arg,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=seconds),
                ) as resp:
                    if resp.status in _REDIRECTS:
                        url = _next_hop(
                            url, resp.headers.get("Location"), home, shown, follow_cross_origin
                        )
                        hops += 1
                        if hops > MAX_REDIRECTS:
                            raise SourceError(
                                f"pull path {shown}: expected at most {MAX_REDIRECTS} "
                                "redirects, got more"
                            )
                        continue
                    return await _read_response(resp, etag, last_modified, shown, max_bytes)
    except TimeoutError as exc:
        raise SourceError(
            f"pull path {shown}: expected an answer within {seconds:g}s, got none"
        ) from exc
    except aiohttp.ClientError as exc:
        raise SourceError(
            f"pull path {shown}: request failed: {_client_error(exc, parsed.url)}"
        ) from exc


def _next_hop(
    current: yarl.URL,
    location: str | None,
    home: tuple[str, str, int | None],
    shown: str,
    follow_cross_origin: bool,
) -> yarl.URL:
    """The URL a redirect points to, or a SourceError when it must not be followed."""
    import yarl

    if not location:
        raise SourceError(f"pull path {shown}: expected a Location on a redirect, got none")
    try:
        target = current.join(yarl.URL(location))
        origin = _origin(target)
    except (ValueError, TypeError) as exc:
        raise SourceError(
            f"pull path {shown}: expected a valid redirect Location, got an unparsable one"
        ) from exc
    if origin[0] not in ("http", "https") or not origin[1]:
        raise SourceError(
            f"pull path {shown}: expected a redirect to an http(s) URL, got one to "
            f"{_show_origin(origin) if origin[1] else repr(origin[0] + ':')}"
        )
    if origin != home and not follow_cross_origin:
        raise SourceError(
            f"pull path {shown}: refused a redirect from origin {_show_origin(home)} to another "
            f"origin {_show_origin(origin)}; set httpClient.followCrossOriginRedirects: true to "
            "follow it without the custom headers"
        )
    return target.with_user(None).with_password(None)


async def _read_response(
    resp: aiohttp.ClientResponse, etag: str, last_modified: str, shown: str, max_bytes: int
) -> FetchResult:
    if resp.status == 304:
        return FetchResult(
            status="not_modified",
            body=None,
            etag=resp.headers.get("ETag", etag),
            last_modified=resp.headers.get("Last-Modified", last_modified),
        )
    if resp.status != 200:
        raise SourceError(f"bad response from {shown}: {resp.status}")
    length = resp.content_length
    if length is not None and length > max_bytes:
        raise SourceError(f"pull path {shown}: expected at most {max_bytes} bytes, got {length}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in resp.content.iter_chunked(_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise SourceError(f"pull path {shown}: expected at most {max_bytes} bytes, got more")
        chunks.append(chunk)
    body = _decode(b"".join(chunks), shown)
    return FetchResult(
        status="fetched",
        body=body,
        etag=resp.headers.get("ETag", ""),
        last_modified=resp.headers.get("Last-Modified", ""),
    )


def _client_error(exc: BaseException, url: str) -> str:
    """A one-line description of an aiohttp error that does not echo the URL's secrets."""
    text = redact(str(exc) or type(exc).__name__, url)
    return " ".join(f"{type(exc).__name__}: {text}".split())
