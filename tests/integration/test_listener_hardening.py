"""Issue 12 regression probes against a real `agent run` on 127.0.0.1 (raw sockets, real limits).

- bodies read whole: a 200 KB token in 1-byte, 1 KiB and 16 KiB pieces, chunked and with
  Content-Length; 413 for oversized chunked bodies;
- bounded connections: 300 idle or half-sent connections under a 256 fd limit;
- limited clients cause no expensive work: verify commands counted under a flood;
- bounded metric cardinality: 3,000 client addresses;
- log lines cannot be forged through the push URL.

Client sockets are bound to other loopback addresses (127.0.0.0/8 is all local on Linux) to act
as many clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support import RIGHT_PRIV, RunningAgent, daemon, free_port, listener_config

from agent.config.schema import config_from_dict
from agent.pattern.load import load_from_text
from agent.tools.build import build_token

pytestmark = pytest.mark.integration
METRICS_KEY = "metrics-key"


@contextlib.contextmanager
def serve(
    tmp: Path,
    port: int,
    sources: Mapping[str, Any],
    *,
    nofile: int | None = None,
    **run: Any,
) -> Iterator[RunningAgent]:
    """:func:`support.daemon` with a metrics key, under ``prlimit --nofile`` when given."""
    config = listener_config(tmp, port, sources, systemMetricsKey=METRICS_KEY, **run)
    prefix = [] if nofile is None else ["prlimit", f"--nofile={nofile}:{nofile}"]
    with daemon(tmp, config, port, prefix=prefix, stop_timeout=30) as running:
        yield running


def sign(text: str) -> bytes:
    signer = config_from_dict({"build": {"signingKey": RIGHT_PRIV}})
    loaded = load_from_text(text, config=signer, source="")
    return asyncio.run(build_token(loaded, config=signer)).encode()


def appending(path: Path, *, filler: int = 0) -> str:
    """A pattern whose one command appends a line to ``path`` (``filler`` pads the token)."""
    big = json.dumps("x" * filler)
    return (
        f"local big = {big}; "
        f"{{run: [{{id: 'a', always: true, change: 'echo ' + std.length(big) + ' >> {path}'}}]}}"
    )


def connect(port: int, source: str = "127.0.0.1", timeout: float = 30) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def read_reply(sock: socket.socket) -> tuple[int, bytes]:
    """Read one HTTP/1.1 reply with a Content-Length body; return (status, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full reply: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, body[:length]


def post(
    port: int,
    path: str,
    body: bytes,
    *,
    piece: int | None = None,
    chunked: bool = False,
    source: str = "127.0.0.1",
) -> tuple[int, bytes]:
    """POST over a raw socket, writing the body in ``piece``-byte sends."""
    with connect(port, source) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{framing}\r\n\r\n".encode()
        )
        step = piece or max(1, len(body))
        for i in range(0, len(body), step):
            part = body[i : i + step]
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
        if chunked:
            sock.sendall(b"0\r\n\r\n")
        return read_reply(sock)


def metrics_text(port: int) -> str:
    url = f"http://127.0.0.1:{port}/etcha/v1/system/metrics?key={METRICS_KEY}"
    with urllib.request.urlopen(url, timeout=30) as resp:
        body: bytes = resp.read()
        return body.decode()


# ---------------------------------------------------------------------------- bodies


def test_a_200_kb_token_in_pieces_is_accepted(tmp_path: Path) -> None:
    port = free_port()
    ran = tmp_path / "ran"
    token = sign(appending(ran, filler=150_000))
    assert len(token) > 200_000
    variants = [(piece, chunked) for piece in (1, 1024, 16 * 1024) for chunked in (False, True)]
    with serve(tmp_path, port, {"core": {"allowPush": True}}) as (_proc, log):
        replies = [
            post(port, "/etcha/v1/push/core", token, piece=piece, chunked=chunked)
            for piece, chunked in variants
        ]
    statuses = [status for status, _ in replies]
    assert statuses == [200] * len(variants), log.read_text()[-3000:]
    assert ran.read_text() == "150000\n" * len(variants)


def test_oversized_chunked_bodies_get_413_with_default_limits(tmp_path: Path) -> None:
    port = free_port()
    hook = [{"id": "h", "always": True, "change": "echo hi", "onChange": ["etcha:webhookBody"]}]
    sources = {"core": {"allowPush": True}, "hook": {"webhookPaths": ["/hook"], "commands": hook}}
    with serve(tmp_path, port, sources) as (_proc, log):
        webhook = post(port, "/hook", b"x" * (5 * 1024 * 1024), piece=64 * 1024, chunked=True)
        push = post(
            port, "/etcha/v1/push/core", b"x" * (9 * 1024 * 1024), piece=64 * 1024, chunked=True
        )
        small = post(port, "/hook", b"x" * 1024, piece=100, chunked=True)
    assert webhook[0] == 413  # run.maxBodyBytes, 4 MiB
    assert push[0] == 413  # run.maxTokenBytes, 8 MiB
    assert small == (200, b"hi\n")
    text = log.read_text()
    assert "body exceeds run.maxBodyBytes 4194304" in text
    assert "body exceeds run.maxTokenBytes 8388608" in text


# ---------------------------------------------------------------------------- logs


def test_a_source_name_with_a_newline_cannot_forge_a_log_line(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, port, {"core": {"allowPush": True}}) as (_proc, log):
        status, body = post(port, "/etcha/v1/push/a%0aFAKE%0d%0aFAKE2", b"token")
        hook = post(port, "/x%0aFAKE3?q=%0aFAKE4", b"")
    assert (status, body) == (404, b"")
    assert hook[0] == 404
    lines = log.read_text().splitlines()
    assert any("a\\nFAKE" in line for line in lines), lines
    assert not [line for line in lines if line.startswith("FAKE")]


# ---------------------------------------------------------------------------- connections


class Attackers:
    """Keeps up to ``total`` idle or half-sent connections open from a few addresses."""

    def __init__(self, port: int, addresses: list[str], total: int) -> None:
        self.port = port
        self.addresses = addresses
        self.total = total
        self.stop = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        socks: list[socket.socket] = []
        i = 0
        while not self.stop.is_set():
            alive = []
            for sock in socks:  # drop the ones the server closed
                try:
                    sock.setblocking(False)
                    gone = sock.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    sock.close()
                else:
                    alive.append(sock)
            socks = alive
            while len(socks) < self.total and not self.stop.is_set():
                try:
                    sock = connect(self.port, self.addresses[i % len(self.addresses)], timeout=2)
                except OSError:
                    break
                if i % 2:
                    with contextlib.suppress(OSError):
                        sock.sendall(b"POST /etcha/v1/push/core HTTP/1.1\r\nHost: x\r\n")
                socks.append(sock)
                i += 1
                self.opened += 1
            time.sleep(0.2)
        for sock in socks:
            sock.close()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_300_idle_connections_under_a_256_fd_limit_leave_push_and_schedule_working(
    tmp_path: Path,
) -> None:
    port = free_port()
    ran, ticks = tmp_path / "ran", tmp_path / "ticks"
    tick = [{"id": "tick", "always": True, "change": f"date +%s.%N >> {ticks}"}]
    sources = {
        "core": {"allowPush": True},
        "clock": {"runFrequency": "1s", "commands": tick},
    }
    with serve(tmp_path, port, sources, nofile=256) as (proc, log):
        attackers = Attackers(port, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], 300)
        attackers.thread.start()
        try:
            time.sleep(3)
            start_ticks = len(ticks.read_text().splitlines()) if ticks.exists() else 0
            statuses = []
            for _ in range(6):  # about 12 s: beyond run.timeoutHeaders (10 s)
                statuses.append(post(port, "/etcha/v1/push/core", sign(appending(ran)))[0])
                time.sleep(2)
            end_ticks = len(ticks.read_text().splitlines())
            refused = metrics_text(port)
        finally:
            attackers.stop.set()
            attackers.thread.join(timeout=30)
        assert proc.poll() is None
    assert attackers.opened >= 300
    assert statuses == [200] * 6, log.read_text()[-3000:]
    assert ran.read_text().count("\n") == 6
    assert end_ticks - start_ticks >= 5  # the 1 s schedule kept running commands
    match = re.search(r'agent_connections_refused_total\{reason="address"\} (\S+)', refused)
    assert match is not None and float(match.group(1)) > 0
    assert log.stat().st_size < 1024 * 1024
    assert "run.maxConnections 256 clamped to 192" in log.read_text()


# ---------------------------------------------------------------------------- rate limiting


def test_a_limited_client_runs_no_verify_commands(tmp_path: Path) -> None:
    port = free_port()
    count = tmp_path / "verify-runs"
    verify = [
        {
            "id": "v",
            "always": True,
            "change": f'echo run >> {count}; echo "$ETCHA_JWT"',
            "onChange": ["etcha:jwt"],
        }
    ]
    sources = {
        "cmd": {"allowPush": True, "verifyCommands": verify},
        "keyed": {"allowPush": True},
    }
    attacker, ran = "127.0.0.5", tmp_path / "ran"
    with serve(tmp_path, port, sources, rateLimiterRate="2-M") as (_proc, log):
        flood = [post(port, "/etcha/v1/push/cmd", b"bad", source=attacker)[0] for _ in range(60)]
        runs_after_flood = count.read_text().count("\n")
        valid_cmd = post(port, "/etcha/v1/push/cmd", sign(appending(ran)), source=attacker)[0]
        other_addr = post(port, "/etcha/v1/push/cmd", sign(appending(ran)))[0]
        keyed = [post(port, "/etcha/v1/push/keyed", b"bad", source=attacker)[0] for _ in range(4)]
        keyed_valid = post(port, "/etcha/v1/push/keyed", sign(appending(ran)), source=attacker)
    assert flood == [404] * 3 + [429] * 57
    assert runs_after_flood == 3  # only the three requests served before the limit
    assert valid_cmd == 429  # verify commands never run for a limited client
    assert other_addr == 200
    assert count.read_text().count("\n") == 4
    assert keyed == [429] * 4  # the limit is per address and route, whatever the source
    assert keyed_valid[0] == 200, log.read_text()[-2000:]  # verifyKeys let a valid push through
    assert ran.read_text().count("\n") == 2


# ---------------------------------------------------------------------------- metrics


async def _many_clients(port: int, addresses: list[str], limit: int) -> list[int]:
    gate = asyncio.Semaphore(limit)

    async def one(address: str, i: int) -> int:
        async with gate:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=(address, 0)
            )
            path = "/hook" if i % 3 else "/etcha/v1/push/nope"
            method = "GET" if i % 3 else "POST"
            writer.write(
                f"{method} {path}?n={i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 60)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return int(line.split()[1])

    return await asyncio.gather(*(one(a, i) for i, a in enumerate(addresses)))


def test_3000_client_addresses_keep_the_metrics_within_twice_their_size(tmp_path: Path) -> None:
    port = free_port()
    hook = [{"id": "h", "always": True, "change": "echo hi", "onChange": ["etcha:webhookBody"]}]
    sources = {"hook": {"webhookPaths": ["/hook"], "commands": hook}, "core": {"allowPush": True}}
    addresses = [f"127.1.{i // 250}.{1 + i % 250}" for i in range(3000)]
    with serve(tmp_path, port, sources, webhookMaxConcurrent=8) as (_proc, log):
        warm = asyncio.run(_many_clients(port, addresses[:3], 3))
        before = len(metrics_text(port))
        statuses = asyncio.run(_many_clients(port, addresses, 8))
        text = metrics_text(port)
    assert warm == [404, 200, 200]
    assert statuses.count(200) == 2000, log.read_text()[-2000:]
    assert statuses.count(404) == 1000
    assert len(text) <= 2 * before, (before, len(text))
    assert "127.1." not in text
