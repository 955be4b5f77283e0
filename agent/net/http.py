"""The one HTTP client: synchronous, standard library (``http.client``), own redirect policy.

Used by pull (:mod:`agent.net.fetch`, through :func:`asyncio.to_thread`), push, ``getFile``,
``copy`` and ``jwt <url>``. TLS contexts come from :func:`agent.net.tls.client_context`; a client
builds each context it needs once and reuses it (the system CA store is only read when a
verification needs it, see :mod:`agent.net.tls`). No proxy is used, whatever the environment says.

Behaviour of :meth:`HTTPClient.request`:

- User info in the URL is sent as HTTP Basic auth, and with the custom headers only to the
  URL's origin (scheme, host, port). Repeated header names are joined with ``", "``.
- GET and HEAD follow redirects (301, 302, 303, 307, 308), at most ``max_redirects`` hops. A
  redirect to the same origin keeps the custom headers and the Basic auth. A redirect to another
  origin is refused unless ``follow_cross_origin`` (``httpClient.followCrossOriginRedirects``),
  and is then followed with only the ``base_headers`` (e.g. conditional-request headers). Other
  methods return the redirect response as it is.
- ``timeout`` bounds the whole exchange (every hop, connect and body), not each read.
- Bodies are read up to ``max_bytes``; a larger one (by ``Content-Length`` or as read) is an
  error. Bodies of statuses outside ``body_statuses`` are not read.
- A ``fingerprint`` pin is checked after the handshake and before the request is sent.
- ``on_sent`` (optional) is called once, after the request is sent and before its answer is
  read: work the caller needs only for the answer (e.g. ``agent push`` loading its output code)
  overlaps with the server's processing instead of adding to the round trip.
- An ASCII host name is resolved and sent as SNI without the ``idna`` codec (which loads
  ``unicodedata``): the same bytes the codec gives for it. Any other host name goes through the
  standard library unchanged (same errors).

Errors are :class:`RequestError` (a :class:`~agent.core.errors.SourceError`) whose message is a
detail without the URL (callers prefix it with what they were doing), with every user info,
query value and header value of the request redacted (:mod:`agent.net.urls`, loaded with the first
error: a request that succeeds never needs it). ``http.client`` and ``ssl`` are imported
on the first request, so importing this module stays cheap for commands that make none.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urljoin, urlsplit

from agent.core.errors import SourceError
from agent.core.records import Record
from agent.net.tls import TLSOptions, check_fingerprint, client_context

TYPE_CHECKING = False
if TYPE_CHECKING:
    import http.client
    import socket
    import ssl

#: Most redirects followed for one request.
MAX_REDIRECTS = 10
DEFAULT_TIMEOUT = 10.0
USER_AGENT = "agent"
_CHUNK = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_FOLLOW_METHODS = frozenset({"GET", "HEAD"})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"

Origin = tuple[str, str, int]


class RequestError(SourceError):
    """A request failed; the message is a redacted detail without the URL."""


class RequestTimeout(RequestError):
    """No complete answer within the timeout."""


class TLSVerifyError(RequestError):
    """The server certificate did not verify.

    Attributes:
        reason: what the TLS library said (e.g. ``self-signed certificate``).
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, repr=False, eq=False)
class Response(Record):
    """A final (non-followed) response.

    Attributes:
        status: the HTTP status.
        headers: the response headers, names lower-case (repeated ones joined with ``", "``).
        body: the body (empty when its status is not in ``body_statuses``).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        """A response header by case-insensitive name."""
        return self.headers.get(name.lower(), default)


class _Call:
    """One request's settings (a plain class: a dataclass costs ~0.7 ms of start-up to build)."""

    __slots__ = (
        "body",
        "body_statuses",
        "deadline",
        "fingerprint",
        "max_bytes",
        "method",
        "on_sent",
        "secrets",
        "skip_verify",
        "timeout",
    )

    def __init__(
        self,
        *,
        method: str,
        body: bytes | None,
        deadline: float | None,
        timeout: float | None,
        max_bytes: int,
        body_statuses: Collection[int] | None,
        skip_verify: bool,
        fingerprint: str,
        secrets: str,  # a pseudo request spec holding every secret, for redaction
        on_sent: Callable[[], object] | None = None,
    ) -> None:
        self.method = method
        self.body = body
        self.deadline = deadline
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.body_statuses = body_statuses
        self.skip_verify = skip_verify
        self.fingerprint = fingerprint
        self.secrets = secrets
        self.on_sent = on_sent

    def sent(self) -> None:
        """The request is on the wire: run ``on_sent`` (once per :meth:`HTTPClient.request`)."""
        hook, self.on_sent = self.on_sent, None
        if hook is not None:
            hook()


def origin(url: str) -> Origin:
    """``(scheme, host, port)`` of an http(s) URL, lower-case, default port filled in.

    Raises:
        ValueError: the URL cannot be parsed or is not http(s) with a host.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"expected an http(s) URL with a host, got scheme {scheme!r}")
    return scheme, host, parts.port or (443 if scheme == "https" else 80)


def show_origin(value: Origin) -> str:
    """``scheme://host[:port]`` for messages (IPv6 hosts bracketed)."""
    scheme, host, port = value
    host = f"[{host}]" if ":" in host else host
    default = 443 if scheme == "https" else 80
    return f"{scheme}://{host}" + ("" if port == default else f":{port}")


class HTTPClient:
    """A client with fixed TLS options and redirect policy; contexts are built once each.

    Args:
        tls: how servers are verified (``httpClient.*``).
        follow_cross_origin: follow a redirect to another origin without the custom headers.
        max_redirects: most redirects followed for one request.
        user_agent: the ``User-Agent`` header.
    """

    def __init__(
        self,
        tls: TLSOptions | None = None,
        *,
        follow_cross_origin: bool = False,
        max_redirects: int = MAX_REDIRECTS,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.tls = tls or TLSOptions()
        self.follow_cross_origin = follow_cross_origin
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self._contexts: dict[tuple[bool, bool], ssl.SSLContext] = {}

    def context(self, *, skip_verify: bool = False, pinned: bool = False) -> ssl.SSLContext:
        """The SSL context for a request (built on first use, then reused)."""
        key = (skip_verify or self.tls.skip_verify, pinned)
        ctx = self._contexts.get(key)
        if ctx is None:
            options = TLSOptions(
                skip_verify=key[0],
                ca_file=self.tls.ca_file,
                no_system_ca=self.tls.no_system_ca,
                fingerprint="pinned" if pinned else "",
            )
            ctx = self._contexts[key] = client_context(options)
        return ctx

    def request(  # long: one documented argument per request setting
        self,
        url: str,
        *,
        method: str = "GET",
        headers: Sequence[tuple[str, str]] = (),
        base_headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_bytes: int,
        body_statuses: Collection[int] | None = None,
        skip_verify: bool = False,
        fingerprint: str = "",
        on_sent: Callable[[], object] | None = None,
    ) -> Response:
        """Send one request and follow redirects (see the module docstring).

        Args:
            url: the http(s) URL (user info becomes Basic auth); no ``#`` header block.
            method: the HTTP method.
            headers: custom headers, sent to the URL's origin only.
            base_headers: headers sent to every origin (e.g. ``If-None-Match``).
            body: the request body.
            timeout: seconds for the whole exchange (None = no limit).
            max_bytes: the largest body accepted.
            body_statuses: statuses whose body is read (None = all).
            skip_verify: skip TLS verification for this request (a ``skipVerify`` header).
            fingerprint: ``sha256:<hex>`` pin of the server certificate ("" = none).
            on_sent: called once, after the request is sent and before the answer is read.

        Returns:
            The final response.

        Raises:
            RequestError: connection, TLS, timeout, redirect or size failure (redacted);
                FingerprintMismatch: another certificate than the pin; ConfigError: bad caFile.
        """
        call = _Call(
            method=method,
            body=body,
            deadline=None if timeout is None else time.monotonic() + timeout,
            timeout=timeout,
            max_bytes=max_bytes,
            body_statuses=body_statuses,
            skip_verify=skip_verify,
            fingerprint=fingerprint,
            secrets=url + "#" + "\r\n".join(f"{k}:{v}" for k, v in (*headers, *base_headers)),
            on_sent=on_sent,
        )
        try:
            current, auth = _split_userinfo(url)
            home = origin(current)
        except ValueError as exc:
            raise RequestError("expected a valid http(s) URL, got an unparsable one") from exc
        home_headers = _merge(base_headers, auth, headers)
        plain_headers = _merge(base_headers, "", ())
        for _ in range(self.max_redirects + 1):
            at_home = origin(current) == home
            response = self._once(current, home_headers if at_home else plain_headers, call)
            if response.status not in _REDIRECTS or method.upper() not in _FOLLOW_METHODS:
                return response
            current = self._next_hop(current, response.header("Location"), home)
        raise RequestError(f"expected at most {self.max_redirects} redirects, got more")

    def _next_hop(self, current: str, location: str, home: Origin) -> str:
        if not location:
            raise RequestError("expected a Location on a redirect, got none")
        try:
            target = urljoin(current, location)
            scheme = urlsplit(target).scheme.lower()
            hop = origin(target) if scheme in ("http", "https") else None
        except ValueError as exc:
            raise RequestError("expected a valid redirect Location, got an unparsable one") from exc
        if hop is None:
            shown = f"{scheme}:" if scheme else "a URL without a scheme"
            raise RequestError(f"expected a redirect to an http(s) URL, got one to {shown!r}")
        if hop != home and not self.follow_cross_origin:
            raise RequestError(
                f"refused a redirect from origin {show_origin(home)} to another origin "
                f"{show_origin(hop)}; set httpClient.followCrossOriginRedirects: true to follow "
                "it without the custom headers"
            )
        return _split_userinfo(target)[0]

    def _once(self, url: str, headers: dict[str, str], call: _Call) -> Response:
        import http.client  # stdlib, ~10-20 ms: imported on the first request only
        import ssl

        conn: http.client.HTTPConnection | None = None
        try:
            conn = self._connection(*origin(url), call)
            conn.connect()
            if call.fingerprint and isinstance(conn.sock, ssl.SSLSocket):
                check_fingerprint(conn.sock, call.fingerprint)
            conn.request(
                call.method,
                _target(url),
                body=call.body,
                headers={"User-Agent": self.user_agent, **headers},
            )
            call.sent()
            _set_timeout(conn, call)
            resp = conn.getresponse()
            body = b""
            if call.body_statuses is None or resp.status in call.body_statuses:
                body = _read_body(resp, conn, call)
            return Response(resp.status, _headers(resp), body)
        except TimeoutError as exc:
            raise RequestTimeout(
                f"expected an answer within {call.timeout or 0:g}s, got none"
            ) from exc
        except ssl.SSLCertVerificationError as exc:
            reason = exc.verify_message or str(exc)
            raise TLSVerifyError(
                _failure(exc, call.secrets), _redact(reason, call.secrets)
            ) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # The text can quote the URL or a header value: redact it, and do not chain it.
            raise RequestError(_failure(exc, call.secrets)) from None
        finally:
            if conn is not None:
                conn.close()

    def _connection(
        self, scheme: str, host: str, port: int, call: _Call
    ) -> http.client.HTTPConnection:
        import http.client

        remaining = _remaining(call)
        if scheme == "http":
            conn = http.client.HTTPConnection(host, port, timeout=remaining)
            # The instance attribute connect() calls (``socket.create_connection`` by default).
            conn._create_connection = _create_connection  # type: ignore[attr-defined]
            return conn
        ctx = self.context(skip_verify=call.skip_verify, pinned=bool(call.fingerprint))
        return _https_connection(host, port, remaining, ctx)


def _ascii_host(host: str) -> str | bytes:
    """``host`` as the ``idna`` codec encodes it when that needs no codec: an ASCII name whose
    labels are 1 to 63 characters (a last empty label allowed) gives the same bytes; any other
    name stays text, for the standard library to encode (and refuse) exactly as before."""
    if not host.isascii():
        return host
    labels = host.split(".")
    if all(0 < len(label) < 64 for label in labels[:-1]) and len(labels[-1]) < 64:
        return host.encode("ascii")
    return host


def _create_connection(
    address: tuple[str, int], timeout: float | None, source: tuple[str, int] | None = None
) -> socket.socket:
    """``socket.create_connection`` with an ASCII host resolved as bytes (no ``idna`` codec)."""
    import socket

    host, port = address
    return socket.create_connection((_ascii_host(host), port), timeout, source)  # type: ignore[arg-type]


def _https_connection(
    host: str, port: int, timeout: float | None, ctx: ssl.SSLContext
) -> http.client.HTTPSConnection:
    """An ``HTTPSConnection`` whose connect resolves and sends SNI without the ``idna`` codec
    for an ASCII host (:func:`_ascii_host`); no proxy tunnel is ever set up."""
    import http.client

    class _Connection(http.client.HTTPSConnection):
        def connect(self) -> None:
            http.client.HTTPConnection.connect(self)  # TCP (and TCP_NODELAY), as the stdlib
            self.sock = ctx.wrap_socket(self.sock, server_hostname=_ascii_host(self.host))

    conn = _Connection(host, port, timeout=timeout, context=ctx)
    conn._create_connection = _create_connection  # type: ignore[attr-defined]
    return conn


def _split_userinfo(url: str) -> tuple[str, str]:
    """The URL without user info, and the Basic ``Authorization`` value for it ("" = none)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, ""
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    import base64  # stdlib, only for user info in a URL

    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
    return parts._replace(netloc=hostport).geturl(), f"Basic {token}"


def _merge(
    base: Sequence[tuple[str, str]], auth: str, custom: Sequence[tuple[str, str]]
) -> dict[str, str]:
    """One header dict: ``base``, then Basic auth, then ``custom`` (its repeated names joined)."""
    merged: dict[str, tuple[str, str]] = {}
    for name, value in (*base, *((("Authorization", auth),) if auth else ())):
        merged[name.lower()] = (name, value)
    seen: set[str] = set()
    for name, value in custom:
        key = name.lower()
        if key in seen:
            merged[key] = (merged[key][0], f"{merged[key][1]}, {value}")
        else:
            merged[key] = (name, value)
            seen.add(key)
    return dict(merged.values())


def _target(url: str) -> str:
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    return path + ("?" + quote(parts.query, safe=_QUERY_SAFE) if parts.query else "")


def _remaining(call: _Call) -> float | None:
    if call.deadline is None:
        return None
    left = call.deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _set_timeout(conn: http.client.HTTPConnection, call: _Call) -> None:
    if conn.sock is not None:
        conn.sock.settimeout(_remaining(call))


def _read_body(
    resp: http.client.HTTPResponse, conn: http.client.HTTPConnection, call: _Call
) -> bytes:
    length = resp.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > call.max_bytes:
        raise RequestError(f"expected at most {call.max_bytes} bytes, got {int(length)}")
    chunks: list[bytes] = []
    total = 0
    while True:
        _set_timeout(conn, call)
        chunk = resp.read1(_CHUNK)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > call.max_bytes:
            raise RequestError(f"expected at most {call.max_bytes} bytes, got more")
        chunks.append(chunk)


def _headers(resp: http.client.HTTPResponse) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in resp.getheaders():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _failure(exc: BaseException, secrets: str) -> str:
    """``request failed: <Type>: <text>`` on one line, without the request's secrets."""
    text = _redact(str(exc) or type(exc).__name__, secrets)
    return "request failed: " + " ".join(f"{type(exc).__name__}: {text}".split())


def _redact(text: str, secrets: str) -> str:
    """:func:`agent.net.urls.redact`, loaded on the first error (start-up, issue 14)."""
    from agent.net.urls import redact  # lazy: only a failed request has text to redact

    return redact(text, secrets)
