"""The one HTTP client (:mod:`agent.net.http`): the ``on_sent`` hook and host names without IDNA.

Real servers on 127.0.0.1: a raw socket server that answers only when told to, and a TLS server
that records the SNI name it was sent.
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import run_python

from agent.net.http import HTTPClient, RequestError, _ascii_host
from agent.net.tls import TLSOptions
from agent.net.tlsutil import fingerprint_pem, self_signed


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (
            int(h.split(b":")[1])
            for h in head.split(b"\r\n")
            if h.lower().startswith(b"content-length:")
        ),
        0,
    )
    while len(body) < length:
        body += conn.recv(4096)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def gated_server() -> Iterator[tuple[int, threading.Event, threading.Event, list[bytes]]]:
    """A server that reads one request, signals it, and answers only once ``answer`` is set."""
    listener = socket.create_server(("127.0.0.1", 0))
    got_request, answer = threading.Event(), threading.Event()
    requests: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            requests.append(_read_request(conn))
            got_request.set()
            if answer.wait(10):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], got_request, answer, requests
    finally:
        answer.set()
        thread.join(10)
        listener.close()


def test_on_sent_runs_once_after_the_request_is_sent_and_before_the_answer_is_read(
    gated_server: tuple[int, threading.Event, threading.Event, list[bytes]],
) -> None:
    port, got_request, answer, requests = gated_server
    calls: list[bool] = []

    def on_sent() -> None:
        calls.append(got_request.wait(5))  # the whole request already reached the server
        answer.set()  # the server answers only now: the answer was not read before this call

    resp = HTTPClient().request(
        f"http://127.0.0.1:{port}/etcha/v1/push/core",
        method="POST",
        body=b"a.b.c",
        timeout=5,
        max_bytes=1024,
        on_sent=on_sent,
    )
    assert (resp.status, resp.body, calls) == (200, b"ok", [True])
    assert requests[0].startswith(b"POST /etcha/v1/push/core HTTP/1.1\r\n")
    assert requests[0].endswith(b"\r\n\r\na.b.c")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1", "a.example.", "x" * 63 + ".io"])
def test_an_ascii_host_is_sent_as_the_bytes_the_idna_codec_gives(host: str) -> None:
    assert _ascii_host(host) == host.encode("idna")


@pytest.mark.parametrize("host", ["bücher.example", "x" * 64 + ".io", "a..example", "x" * 64])
def test_a_host_the_idna_codec_must_judge_stays_text(host: str) -> None:
    assert _ascii_host(host) == host


def test_a_host_name_the_idna_codec_refuses_fails_as_before() -> None:
    with pytest.raises(RequestError, match="idna"):
        HTTPClient().request(f"https://{'x' * 64}.invalid/", timeout=5, max_bytes=10)


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


_CLIENT = (
    "import sys\n"
    "from agent.net.http import HTTPClient\n"
    "from agent.net.tls import TLSOptions\n"
    "resp = HTTPClient(TLSOptions()).request(sys.argv[1], timeout=10, max_bytes=10, "
    "fingerprint=sys.argv[2])\n"
    "print(resp.status, resp.body.decode(), 'encodings.idna' in sys.modules, "
    "'unicodedata' in sys.modules)\n"
)


def test_a_tls_request_to_a_host_name_sends_its_sni_without_loading_the_idna_codec(
    tmp_path: Path,
) -> None:
    cert, key = self_signed(hostnames=["localhost"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    names: list[str | None] = []

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    ctx.sni_callback = sni
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"https://localhost:{server.server_address[1]}/"
        pin = fingerprint_pem(cert, what="test")
        res = run_python(_CLIENT, url, pin)
    finally:
        server.shutdown()
        server.server_close()
    assert res.stdout.split() == ["200", "ok", "False", "False"], res.stderr
    assert names == ["localhost"]


def test_the_client_keeps_its_tls_options() -> None:
    options = TLSOptions(skip_verify=True)
    assert HTTPClient(options).tls == options == TLSOptions(skip_verify=True)
    assert repr(options).startswith("TLSOptions(skip_verify=True, ca_file=''")


def test_a_failed_request_shows_none_of_its_secrets(
    gated_server: tuple[int, threading.Event, threading.Event, list[bytes]],
) -> None:
    port = gated_server[0]
    with pytest.raises(RequestError) as caught:
        HTTPClient().request(
            f"http://user:pa55@127.0.0.1:{port}/x?token=t0ken",
            headers=(("X-Api-Key", "s3cr3t\nmore"),),  # http.client refuses it, quoting it
            timeout=5,
            max_bytes=10,
        )
    message = str(caught.value)
    assert "Invalid header value" in message and "***" in message, message
    assert not any(s in message for s in ("s3cr3t", "pa55", "t0ken")), message
