"""sd_notify datagrams to real AF_UNIX sockets (path and abstract namespace)."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.daemon import sdnotify


@pytest.fixture
def sock_path() -> Iterator[Path]:
    # AF_UNIX paths are limited to ~107 bytes, so use a short private dir rather than tmp_path.
    with tempfile.TemporaryDirectory(prefix="sdn-", dir="/tmp") as d:
        yield Path(d) / "notify.sock"


@pytest.fixture
def receiver(sock_path: Path) -> Iterator[socket.socket]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock_path))
    s.settimeout(5)
    yield s
    s.close()


def test_ready_sends_ready_1_to_a_path_socket(sock_path: Path, receiver: socket.socket) -> None:
    assert sdnotify.ready(environ={"NOTIFY_SOCKET": str(sock_path)}) is True
    assert receiver.recv(4096) == b"READY=1"


def test_helpers_send_their_messages(sock_path: Path, receiver: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": str(sock_path)}
    assert sdnotify.stopping(environ=env)
    assert receiver.recv(4096) == b"STOPPING=1"
    assert sdnotify.status("running 3 sources\nsecond line", environ=env)
    assert receiver.recv(4096) == b"STATUS=running 3 sources second line"
    assert sdnotify.watchdog(environ=env)
    assert receiver.recv(4096) == b"WATCHDOG=1"
    assert sdnotify.reloading(environ=env)
    lines = receiver.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=", 1)[1]) > 0


def test_abstract_namespace_socket_receives_ready() -> None:
    name = f"agent-test-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        s.settimeout(5)
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name}) is True
        assert s.recv(4096) == b"READY=1"


def test_unset_notify_socket_is_a_no_op() -> None:
    assert sdnotify.ready(environ={}) is False
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": ""}) is False


def test_unsupported_socket_form_returns_false() -> None:
    assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_missing_socket_returns_false_and_logs(
    sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert sdnotify.ready(environ={"NOTIFY_SOCKET": str(sock_path)}) is False
    assert "Cannot notify service manager" in caplog.text


def test_watchdog_interval_is_half_the_timeout_for_this_process() -> None:
    env = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval(environ=env) == 5.0
    assert sdnotify.watchdog_interval(environ={"WATCHDOG_USEC": "2000000"}) == 1.0
    assert sdnotify.watchdog_interval(environ={**env, "WATCHDOG_PID": "1"}) is None
    assert sdnotify.watchdog_interval(environ={}) is None
    assert sdnotify.watchdog_interval(environ={"WATCHDOG_USEC": "x"}) is None
