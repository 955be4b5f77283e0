"""Unit tests of the shell session pieces: claims, keepalives, the output bound, the exec."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from agent.config.schema import config_from_dict
from agent.core.errors import ConfigError
from agent.daemon.shell import shell_exec
from agent.daemon.shell_session import (
    FALLBACK_SIZE,
    MAX_STDIN_BYTES,
    ClaimsError,
    TokenBucket,
    keepalive_interval,
    keepalive_record,
    parse_claims,
)


def test_claims_give_size_session_and_decoded_stdin() -> None:
    claims = parse_claims({"c": 101, "r": 33, "i": "abc", "s": base64.b64encode(b"ls\n").decode()})
    assert (claims.cols, claims.rows, claims.session, claims.stdin) == (101, 33, "abc", b"ls\n")


@pytest.mark.parametrize("value", [None, 0, -1, 70000, True, "80"])
def test_missing_or_unusable_size_falls_back_to_70(value: Any) -> None:
    claims = parse_claims({} if value is None else {"c": value, "r": value})
    assert (claims.cols, claims.rows, claims.session, claims.stdin) == (
        FALLBACK_SIZE,
        FALLBACK_SIZE,
        "",
        b"",
    )


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"s": "not base64!"}, 400),
        ({"s": 5}, 400),
        ({"i": ["x"]}, 400),
        ({"s": base64.b64encode(b"x" * (MAX_STDIN_BYTES + 1)).decode()}, 413),
        ({"s": "A" * (MAX_STDIN_BYTES * 2)}, 413),
    ],
)
def test_bad_or_oversized_stdin_is_refused_with_its_status(
    claims: dict[str, Any], status: int
) -> None:
    with pytest.raises(ClaimsError) as info:
        parse_claims(claims)
    assert info.value.status == status


def test_stdin_of_exactly_64_kib_is_accepted() -> None:
    data = b"y" * MAX_STDIN_BYTES
    assert parse_claims({"s": base64.b64encode(data).decode()}).stdin == data


def test_keepalive_records_are_k_and_up_to_19_random_characters() -> None:
    records = {keepalive_record() for _ in range(200)}
    assert all(re.fullmatch(rb"k[A-Za-z0-9]{0,19}\n", r) for r in records)
    assert len(records) > 1
    assert all(1.0 <= keepalive_interval() <= 10.0 for _ in range(200))


def test_output_bound_allows_a_burst_then_delays_by_the_debt() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=100.0, burst=50.0, clock=lambda: now[0])
    assert bucket.delay_after(50) == 0.0
    assert bucket.delay_after(20) == pytest.approx(0.2)
    now[0] = 0.2  # the debt is paid back
    assert bucket.delay_after(0) == 0.0
    now[0] = 100.0  # a long pause refills only up to the burst
    assert bucket.delay_after(60) == pytest.approx(0.1)


def _config(shell: Any) -> Any:
    return config_from_dict(
        {
            "exec": {"env": {"TOP": "1"}},
            "sources": {"s": {"shell": shell, "exec": {"user": "nobody", "env": {"SRC": "2"}}}},
        }
    )


def test_shell_command_runs_under_the_source_exec() -> None:
    ex, command = shell_exec(_config("/bin/sh -i"), "s")
    assert command == "/bin/sh -i"
    assert ex.user == "nobody"
    assert dict(ex.env or {}) == {"TOP": "1", "SRC": "2"}


def test_shell_exec_object_is_laid_over_the_source_exec() -> None:
    ex, command = shell_exec(_config({"command": "/bin/bash -l", "workDir": "/tmp"}), "s")
    assert command == "/bin/bash -l"
    assert (ex.user, ex.work_dir) == ("nobody", "/tmp")


@pytest.mark.parametrize("shell", ["", {"user": "root"}])
def test_no_shell_or_an_exec_without_command_is_a_config_error(shell: Any) -> None:
    with pytest.raises(ConfigError):
        shell_exec(_config(shell), "s")
