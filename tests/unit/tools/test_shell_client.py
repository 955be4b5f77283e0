"""Unit tests of the `agent shell` client: target resolution, claims and the stream reader."""

from __future__ import annotations

import base64
import http.client
import io
import os
import time
from typing import Any

import pytest

from agent.config.schema import config_from_dict
from agent.core.errors import UsageError
from agent.tools.shell import FALLBACK_SIZE, ShellClient, pump, shell_target


def _config() -> Any:
    return config_from_dict(
        {
            "targets": {
                "web": {"hostname": "10.0.0.7", "port": 4100, "pathShell": "/custom/shell"},
                "plain": {"insecure": True},
            }
        }
    )


def test_config_target_gives_its_host_port_and_path_shell() -> None:
    where = shell_target(_config(), "web")
    assert (where.target.scheme, where.target.hostname, where.target.port) == (
        "https",
        "10.0.0.7",
        "4100",
    )
    assert where.url_path("my src") == "/custom/shell/my%20src"


def test_host_flag_overrides_the_target_and_defaults_the_path() -> None:
    where = shell_target(_config(), "", host="http://127.0.0.1", port="4555")
    assert (where.target.scheme, where.target.port) == ("http", "4555")
    assert where.url_path("s") == "/etcha/v1/shell/s"


def test_unknown_target_without_host_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected TARGET"):
        shell_target(_config(), "nope")


def test_claims_carry_the_session_stdin_and_a_5_second_exp() -> None:
    client = ShellClient(_config(), "s", shell_target(_config(), "web"), stdin_fd=-1)
    first = client.claims(b"")
    assert first["c"] == first["r"] == FALLBACK_SIZE  # not a terminal
    assert "i" not in first and "s" not in first
    client.session = "abc"
    later = client.claims(b"ls\n")
    assert (later["i"], base64.b64decode(later["s"])) == ("abc", b"ls\n")
    assert 4 <= later["exp"] - int(time.time()) <= 5


class _Lines:
    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def readline(self) -> bytes:
        return self.buf.readline()


def test_pump_writes_output_records_and_ignores_keepalives() -> None:
    read, write = os.pipe()
    stream = (
        b"o" + base64.b64encode(b"hello ") + b"\nkabc\nk\no" + base64.b64encode(b"world") + b"\n"
    )
    pump(_Lines(stream), write)  # type: ignore[arg-type]
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        assert fh.read() == b"hello world"


def test_pump_raises_on_a_cut_record() -> None:
    read, write = os.pipe()
    try:
        with pytest.raises(http.client.IncompleteRead):
            pump(_Lines(b"o" + base64.b64encode(b"x")), write)  # type: ignore[arg-type]
    finally:
        os.close(read)
        os.close(write)
