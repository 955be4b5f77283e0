"""One HTTP/1.1 exchange on one connection: the wire half of :mod:`agent.net.http`.

``http.client`` imports the ``email`` package to parse response headers, ~9 ms on every
``agent push``, ``getFile`` or pull. This module does what :class:`agent.net.http.HTTPClient`
used of it, byte for byte and error for error:

- the request: ``METHOD target HTTP/1.1``, ``Host`` (``[v6]`` bracketed, ``:port`` unless the
  scheme's default) and ``Accept-Encoding: identity`` unless given, ``Content-Length`` (of the
  body; ``0`` for a POST, PUT or PATCH without one) unless a ``Content-Length`` or
  ``Transfer-Encoding`` is given, then the headers in order; names and values are checked as
  ``http.client`` checks them (``ValueError: Invalid header name/value``); head and body go in
  one ``send``;
- the response: status line (``RemoteDisconnected``, ``BadStatusLine``, ``UnknownProtocol``),
  ``100 Continue`` skipped, at most 100 header lines of at most 65536 bytes (``LineTooLong``,
  ``HTTPException``), parsed as ``email``'s compat32 policy does (continuation lines kept, a
  line that is not a header ends the block); the body by ``Transfer-Encoding: chunked``
  (``IncompleteRead``), ``Content-Length`` (a short body ends early, without an error, as
  ``HTTPResponse.read1`` does) or the end of the connection; no body for HEAD, 1xx, 204, 304.

The exceptions carry ``http.client``'s class names and texts, so the redacted errors of
:mod:`agent.net.http` read the same. One connection carries one request (no keep-alive).
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl
    from io import BufferedReader

__all__ = [
    "BadStatusLine",
    "Connection",
    "HTTPException",
    "IncompleteRead",
    "LineTooLong",
    "RemoteDisconnected",
    "Response",
    "UnknownProtocol",
]

_MAXLINE = 65536
_MAXHEADERS = 100
_BODY_METHODS = frozenset({"PATCH", "POST", "PUT"})
_END_OF_HEADERS = (b"\r\n", b"\n", b"")
_legal_header_name = re.compile(rb"[^:\s][^:\r\n]*").fullmatch
_illegal_header_value = re.compile(rb"\n(?![ \t])|\r(?![ \t\n])").search
_header_line = re.compile(r"^(From |[\041-\071\073-\176]*:|[\t ])").match
_bad_method = re.compile("[\x00-\x1f]").search
_bad_url = re.compile("[\x00-\x20\x7f]").search
_lines = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$").findall


# The names are http.client's (not ...Error), so the errors read the same.
class HTTPException(Exception):
    """A protocol error (the base of the others, as in ``http.client``)."""


class LineTooLong(HTTPException):
    def __init__(self, line_type: str) -> None:
        super().__init__(f"got more than {_MAXLINE} bytes when reading {line_type}")


class BadStatusLine(HTTPException):
    def __init__(self, line: str) -> None:
        super().__init__(line or repr(line))


class RemoteDisconnected(ConnectionResetError, BadStatusLine):
    """The server closed the connection without an answer."""


class UnknownProtocol(HTTPException):
    pass


class IncompleteRead(HTTPException):
    def __init__(self, partial: bytes, expected: int | None = None) -> None:
        super().__init__(partial)
        self.partial = partial
        self.expected = expected

    def __str__(self) -> str:
        more = "" if self.expected is None else f", {self.expected} more expected"
        return f"IncompleteRead({len(self.partial)} bytes read{more})"


class InvalidURL(ValueError):
    """A control character in the host or the request target."""


def _check_url_chars(text: str) -> None:
    found = _bad_url(text)
    if found:
        raise InvalidURL(
            f"URL can't contain control characters. {text!r} (found at least {found.group()!r})"
        )


class Connection:
    """One connection to ``host:port`` (TLS with ``context``), for one request.

    Args:
        host: the host name or address (IPv6 without brackets).
        port: the TCP port.
        timeout: seconds for the connect (None = no limit).
        context: the TLS context (None = plain HTTP).
    """

    def __init__(
        self, host: str, port: int, *, timeout: float | None, context: ssl.SSLContext | None
    ) -> None:
        _check_url_chars(host)
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.sock: socket.socket | None = None
        self._method = ""
        self._file: BufferedReader | None = None

    def connect(self) -> None:
        """Open the TCP connection and, with a context, do the TLS handshake."""
        address = (_host_for_lookup(self.host), self.port)
        sock = socket.create_connection(address, self.timeout)  # type: ignore[arg-type]
        self.sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # pragma: no cover - a system without TCP_NODELAY
            if exc.errno != errno.ENOPROTOOPT:
                raise
        if self.context is not None:
            name = self.host if self.context.check_hostname else _name_only(self.host)
            self.sock = self.context.wrap_socket(sock, server_hostname=name)

    def request(
        self, method: str, target: str, *, body: bytes | None, headers: Mapping[str, str]
    ) -> None:
        """Send the request head and body (see the module docstring).

        Raises:
            ValueError: a bad method, header name or header value.
            OSError: the connection failed.
        """
        found = _bad_method(method)
        if found:
            raise ValueError(
                f"method can't contain control characters. {method!r} "
                f"(found at least {found.group()!r})"
            )
        _check_url_chars(target or "/")
        self._method = method
        names = {name.lower() for name in headers}
        lines = [f"{method} {target or '/'} HTTP/1.1".encode("ascii")]
        if "host" not in names:
            lines.append(_header("Host", self._host_header()))
        if "accept-encoding" not in names:
            lines.append(_header("Accept-Encoding", "identity"))
        if "content-length" not in names and "transfer-encoding" not in names:
            if body is not None:
                lines.append(_header("Content-Length", str(len(body))))
            elif method.upper() in _BODY_METHODS:
                lines.append(_header("Content-Length", "0"))
        lines.extend(_header(name, value) for name, value in headers.items())
        if self.sock is None:
            raise ConnectionError("not connected")
        self.sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""))

    def _host_header(self) -> str:
        try:
            host = self.host.encode("ascii").decode("ascii")
        except UnicodeEncodeError:
            host = self.host.encode("idna").decode("ascii")
        if ":" in self.host:
            host = f"[{host}]"
        default = 80 if self.context is None else 443
        return host if self.port == default else f"{host}:{self.port}"

    def getresponse(self) -> Response:
        """Read the status line and the headers of the answer.

        Raises:
            HTTPException: a malformed answer; OSError: the connection failed.
        """
        if self.sock is None:
            raise ConnectionError("not connected")
        self._file = self.sock.makefile("rb")
        return Response(self._file, self._method)

    def close(self) -> None:
        """Close the response's reader and the socket."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class Response:
    """A response whose head has been read; the body is read with :meth:`read1`."""

    def __init__(self, fp: BufferedReader, method: str) -> None:
        self._fp: BufferedReader | None = fp  # None once the body is read
        while True:
            version, status = _read_status(fp)
            if status != 100:
                break
            _read_header_lines(fp)
        if version not in ("HTTP/1.0", "HTTP/0.9") and not version.startswith("HTTP/1."):
            raise UnknownProtocol(version)
        self.status = status
        self._headers = _parse_headers(_read_header_lines(fp))
        encoding = self._first("transfer-encoding")
        self._chunked = bool(encoding) and encoding.lower() == "chunked"
        self._chunk_left: int | None = None
        self.length: int | None = None
        length = self._first("content-length")
        if length and not self._chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            self.length = 0
        if method == "HEAD":
            self._fp = None

    def _first(self, name: str) -> str:
        return next((v for k, v in self._headers if k.lower() == name), "")

    def getheaders(self) -> list[tuple[str, str]]:
        """Every header as (name, value), in order."""
        return list(self._headers)

    def getheader(self, name: str) -> str | None:
        """The values of a header joined with ``", "`` (None when absent)."""
        values = [v for k, v in self._headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def read1(self, n: int) -> bytes:
        """At most ``n`` bytes of the body (``b""`` at its end)."""
        if self._fp is None:
            return b""
        if self._chunked:
            return self._read1_chunked(self._fp, n)
        if self.length is not None and (n < 0 or n > self.length):
            n = self.length
        data = self._fp.read1(n)
        if not data and n:
            self._fp = None
        elif self.length is not None:
            self.length -= len(data)
        return data

    def _read1_chunked(self, fp: BufferedReader, n: int) -> bytes:
        left = self._chunk_left
        if left == 0:  # the CRLF after a chunk
            _safe_read(fp, 2)
            left = None
        if left is None:
            try:
                left = _chunk_size(fp)
            except ValueError:
                raise IncompleteRead(b"") from None
            if left == 0:
                _discard_trailer(fp)
                self._fp = None
                return b""
        n = left if not 0 <= n <= left else n
        data = fp.read1(n)
        self._chunk_left = left - len(data)
        if not data:
            raise IncompleteRead(b"")
        return data


def _host_for_lookup(host: str) -> str | bytes:
    """An ASCII host as bytes, else as is: ``getaddrinfo`` encodes a ``str`` with the ``idna``
    codec (an import), which gives an ASCII name's bytes unchanged once its labels are checked.

    Raises:
        UnicodeError: an empty or too long label, as the codec says.
    """
    try:
        raw = host.encode("ascii")
    except UnicodeEncodeError:
        return host
    labels = raw.split(b".")
    if any(not 0 < len(label) < 64 for label in labels[:-1]) or len(labels[-1]) >= 64:
        raise UnicodeError(
            "encoding with 'idna' codec failed (UnicodeError: label empty or too long)"
        )
    return raw


def _name_only(host: str) -> str | None:
    """``host``, or None for an IP address: without a host name check, ``ssl`` does nothing with
    an address (it sends no SNI for one), and ``None`` spares it the ``idna`` codec."""
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return host
    return None


def _header(name: str, value: str) -> bytes:
    raw_name = name.encode("ascii")
    if not _legal_header_name(raw_name):
        raise ValueError(f"Invalid header name {raw_name!r}")
    raw_value = value.encode("latin-1")
    if _illegal_header_value(raw_value):
        raise ValueError(f"Invalid header value {raw_value!r}")
    return raw_name + b": " + raw_value


def _read_status(fp: BufferedReader) -> tuple[str, int]:
    line = str(fp.readline(_MAXLINE + 1), "iso-8859-1")
    if len(line) > _MAXLINE:
        raise LineTooLong("status line")
    if not line:
        raise RemoteDisconnected("Remote end closed connection without response")
    parts = line.split(None, 2)
    version = parts[0] if len(parts) >= 2 else ""
    if not version.startswith("HTTP/"):
        raise BadStatusLine(line)
    try:
        status = int(parts[1])
    except ValueError:
        raise BadStatusLine(line) from None
    if status < 100 or status > 999:
        raise BadStatusLine(line)
    return version, status


def _read_header_lines(fp: BufferedReader) -> list[bytes]:
    lines: list[bytes] = []
    while True:
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise LineTooLong("header line")
        lines.append(line)
        if len(lines) > _MAXHEADERS:
            raise HTTPException(f"got more than {_MAXHEADERS} headers")
        if line in _END_OF_HEADERS:
            return lines


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    """The header block as ``email``'s compat32 parser reads it (``http.client.parse_headers``)."""
    headers: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in _lines(b"".join(lines).decode("iso-8859-1")):
        if line[0] in " \t":
            if current is not None:  # a continuation line; email drops one without a header
                current.append(line)
            continue
        if not _header_line(line):
            break  # not a header (the blank line, or a malformed one): the block ends
        name, _, value = line.partition(":")
        current = None
        if name and not line.startswith("From "):  # email skips "From " (mbox) lines
            current = [value.lstrip(" \t")]
            headers.append((name, current))
    return [(name, "".join(parts).rstrip("\r\n")) for name, parts in headers]


def _chunk_size(fp: BufferedReader) -> int:
    line = fp.readline(_MAXLINE + 1)
    if len(line) > _MAXLINE:
        raise LineTooLong("chunk size")
    return int(line.partition(b";")[0], 16)


def _discard_trailer(fp: BufferedReader) -> None:
    while True:
        line = fp.readline(_MAXLINE + 1)
        if len(line) > _MAXLINE:
            raise LineTooLong("trailer line")
        if line in _END_OF_HEADERS:
            return


def _safe_read(fp: BufferedReader, amount: int) -> bytes:
    data = fp.read(amount)
    if len(data) < amount:
        raise IncompleteRead(data, amount - len(data))
    return data
