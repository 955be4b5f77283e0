"""agent.net.wire: the request bytes and the reading of answers are ``http.client``'s.

Each case sends the same request through :class:`agent.net.wire.Connection` and through
``http.client`` to a raw socket server on 127.0.0.1 that records the request and writes a canned
answer; the bytes sent, and the status, headers and body read (or the error class and text),
must be the same.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from agent.net import wire

ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
    "chunked": (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
    ),
    "close-delimited": b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end",
    "continuation": b"HTTP/1.1 200 OK\r\nX-Long:  a\r\n  b\r\nContent-Length: 0\r\n\r\n",
    "continue-first": (
        b"HTTP/1.1 100 Continue\r\nX-Skip: 1\r\n\r\nHTTP/1.1 204 No Content\r\nX-B: 2\r\n\r\n"
    ),
    "not-modified": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    "malformed-line": b"HTTP/1.1 200 OK\r\nX-A: 1\r\nbad line\r\nX-B: 2\r\n\r\nbody",
    "short-body": b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nonly this",
    "bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nto the end",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello",
    "cut-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nhel",
    "no-answer": b"",
    "bad-status": b"HTTX/1.1 200 OK\r\n\r\n",
    "bad-code": b"HTTP/1.1 20 OK\r\n\r\n",
    "unknown-protocol": b"HTTP/2.0 200 OK\r\n\r\n",
    "too-many-headers": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
    "long-line": b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
}


class RawServer:
    """Answers each connection with ``self.answer`` and records what it was sent."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.answer = b""
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.requests.append(_read_request(conn))
                conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            while len(body) < int(line.split(b":")[1]):
                body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture(scope="module")
def server() -> Iterator[RawServer]:
    srv = RawServer()
    yield srv
    srv.close()


def _read_all(resp: Any) -> bytes:
    chunks = []
    while chunk := resp.read1(4):
        chunks.append(chunk)
    return b"".join(chunks)


def _with_wire(port: int, method: str, headers: dict[str, str], body: bytes | None) -> Any:
    conn = wire.Connection("127.0.0.1", port, timeout=5, context=None)
    try:
        conn.connect()
        conn.request(method, "/p?q=1", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.getheader("x-a"), _read_all(resp)
    except Exception as exc:  # compared with http.client's
        return type(exc).__name__, str(exc)
    finally:
        conn.close()


def _with_stdlib(port: int, method: str, headers: dict[str, str], body: bytes | None) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.connect()
        conn.request(method, "/p?q=1", body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.getheader("x-a"), _read_all(resp)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    finally:
        conn.close()


@pytest.mark.parametrize("answer", sorted(ANSWERS))
def test_answers_read_as_http_client_reads_them(server: RawServer, answer: str) -> None:
    server.answer = ANSWERS[answer]
    ours = _with_wire(server.port, "GET", {"User-Agent": "agent"}, None)
    theirs = _with_stdlib(server.port, "GET", {"User-Agent": "agent"}, None)
    assert ours == theirs


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        ("GET", {"User-Agent": "agent", "If-None-Match": '"x"'}, None),
        ("POST", {"Content-Type": "application/jwt"}, b"a.b.c"),
        ("POST", {}, None),
        ("PUT", {"Host": "other", "Accept-Encoding": "gzip", "Content-Length": "3"}, b"abc"),
        ("HEAD", {"X-Folded": "a\r\n b"}, None),
    ],
)
def test_requests_are_the_bytes_http_client_sends(
    server: RawServer, method: str, headers: dict[str, str], body: bytes | None
) -> None:
    server.answer = ANSWERS["length"]
    assert _with_wire(server.port, method, headers, body) == _with_stdlib(
        server.port, method, headers, body
    )
    assert server.requests[-1] == server.requests[-2]


@pytest.mark.parametrize(
    "headers", [{"X-Bad": "a\r\nInjected: 1"}, {"Bad:Name": "x"}, {"X": "caf\u20ac"}]
)
def test_bad_header_names_and_values_are_refused_as_http_client_refuses_them(
    server: RawServer, headers: dict[str, str]
) -> None:
    ours = _with_wire(server.port, "GET", headers, None)
    assert ours == _with_stdlib(server.port, "GET", headers, None)
    assert ours[0] in ("ValueError", "UnicodeEncodeError")


def test_host_header_brackets_ipv6_and_names_a_non_default_port() -> None:
    plain = wire.Connection("::1", 80, timeout=1, context=None)
    other = wire.Connection("::1", 8080, timeout=1, context=None)
    assert plain._host_header() == "[::1]"
    assert other._host_header() == "[::1]:8080"
