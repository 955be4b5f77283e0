"""`agent run` speaks the systemd notify protocol over a real AF_UNIX datagram socket.

The daemon is started with ``NOTIFY_SOCKET`` pointing at a socket this test binds; it must send
``READY=1`` only once its listener accepts connections, and ``STOPPING=1`` after SIGTERM, then
exit 0. Also the abstract-namespace form (``@name``) that systemd uses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.jws.keys import generate_keys

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(tmp: Path, notify: str, port: int) -> subprocess.Popen[bytes]:
    _, public = generate_keys("ed25519", "t")
    cfg = {
        "run": {
            "listenAddress": f"127.0.0.1:{port}",
            "stateDir": str(tmp / "state"),
            "verifyKeys": [public],
            "tlsDisable": True,
        },
        "sources": {
            "web": {"allowPush": True},
            "static": {"commands": [{"id": "slow", "always": True, "change": "sleep 0.3"}]},
        },
    }
    (tmp / "agent.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ETCHA_"))}
    env["NOTIFY_SOCKET"] = notify
    with (tmp / "log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(tmp / "agent.json"), "run"],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def receive(sock: socket.socket, want: str, timeout: float = 20) -> list[str]:
    """Datagrams until one contains the line ``want``; returns all of them."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(data)
        if want in data.splitlines():
            return got
    raise AssertionError(f"no {want} within {timeout}s; got {got}")


def run_cycle(tmp: Path, sock: socket.socket, address: str) -> None:
    port = free_port()
    proc = start(tmp, address, port)
    try:
        got = receive(sock, "READY=1")
        # READY=1 comes after the listener is up (and after the start-up runs)
        assert listening(port), got
        assert not any("STOPPING=1" in d for d in got)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ready_after_listener_and_stopping_after_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        run_cycle(tmp_path, sock, str(path))


def test_abstract_notify_socket(tmp_path: Path) -> None:
    name = f"agent-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        run_cycle(tmp_path, sock, "@" + name)


def test_no_notify_socket_still_runs_and_stops(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, "", port)
    try:
        deadline = time.monotonic() + 20
        while not listening(port):
            assert proc.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
