"""`agent run` speaks the systemd notify protocol over a real AF_UNIX datagram socket.

The daemon is started with ``NOTIFY_SOCKET`` pointing at a socket this test binds; it must send
``READY=1`` only once its listener accepts connections, and ``STOPPING=1`` after SIGTERM, then
exit 0. Also the abstract-namespace form (``@name``) that systemd uses.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from support import daemon, free_port, listener_config

from agent.jws.keys import generate_keys

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def write_config(tmp: Path, port: int) -> Path:
    _, public = generate_keys("ed25519", "t")
    sources = {
        "web": {"allowPush": True},
        "static": {"commands": [{"id": "slow", "always": True, "change": "sleep 0.3"}]},
    }
    return listener_config(tmp, port, sources, verifyKeys=[public], name="agent.json")


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
    notify = {"NOTIFY_SOCKET": address}
    with daemon(tmp, write_config(tmp, port), None, env=notify) as (proc, _log):
        got = receive(sock, "READY=1")
        # READY=1 comes after the listener is up (and after the start-up runs)
        assert listening(port), got
        assert not any("STOPPING=1" in d for d in got)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1")
        assert proc.wait(timeout=20) == 0


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
    config = write_config(tmp_path, port)
    with daemon(tmp_path, config, port, env={"NOTIFY_SOCKET": ""}) as (proc, _log):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
