"""The daemon's render child (:mod:`agent.daemon.render_child`): results, errors and bounds.

The functions run here in the forked child are plain Python (no Jsonnet): the test process may
have loaded the Go engine already, which a fork does not survive. The real renders in a child are
covered on a real daemon (tests/integration/test_daemon_render_child.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import AgentError, PatternError, RenderError, VerifyError
from agent.daemon.render_child import RenderLimits, call_in_child, engine_loaded
from agent.net.http import RequestTimeout


def in_child(fn: Any, *, timeout: float = 30.0, max_bytes: int = 1 << 20) -> Any:
    limits = RenderLimits(timeout=timeout, max_bytes=max_bytes)
    return asyncio.run(call_in_child(fn, limits=limits, what="source web"))


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def test_the_childs_value_reaches_the_parent_unchanged() -> None:
    value = {
        "run": [{"id": "é ✓", "n": 2**70, "f": 0.1, "ok": True, "none": None}],
        "surrogate": "\ud800",
        "order": {"b": 1, "a": 2},
    }
    got = in_child(lambda: value)
    assert got == value
    assert list(got["order"]) == ["b", "a"]


def test_the_child_runs_in_another_process_and_is_reaped(tmp_path: Path) -> None:
    pid = in_child(os.getpid)
    assert pid != os.getpid()
    assert not alive(pid)


@pytest.mark.parametrize(
    "error",
    [
        RenderError("error rendering pattern: /main.jsonnet:3:1 boom", hint="fix line 3"),
        PatternError("token /main.jsonnet: run: expected a list, got an object"),
        VerifyError("token refused", "not_allowed", hint="add the key"),
        RequestTimeout("getFile https://x/y: expected an answer within 10s, got none"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_in_the_child_comes_back_with_its_class_message_and_attributes(
    error: AgentError,
) -> None:
    def fail() -> None:
        raise error

    with pytest.raises(AgentError) as info:
        in_child(fail)
    got = info.value
    assert type(got) is type(error)
    assert str(got) == str(error) and got.args == error.args
    assert vars(got) == vars(error)


def test_a_bug_in_the_child_is_one_clear_render_error() -> None:
    def bug() -> None:
        raise KeyError("vars")

    with pytest.raises(RenderError, match=r"the render process failed: KeyError: 'vars'"):
        in_child(bug)


def test_a_render_past_its_timeout_kills_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"

    def hang() -> None:
        pid_file.write_text(str(os.getpid()))
        time.sleep(600)

    with pytest.raises(RenderError) as info:
        in_child(hang, timeout=0.5)
    assert str(info.value) == (
        "error rendering pattern for source web: expected the render to finish within 0.5s, "
        "got no result (the render process was killed)"
    )
    assert not alive(int(pid_file.read_text()))


def test_a_result_over_the_size_limit_kills_the_child_and_fails() -> None:
    with pytest.raises(RenderError, match=r"expected a result of at most 4096 bytes, got more"):
        in_child(lambda: "x" * 100_000, max_bytes=4096)


def test_a_child_that_dies_without_a_result_is_a_clear_error() -> None:
    def die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(RenderError) as info:
        in_child(die)
    assert str(info.value) == (
        "error rendering pattern for source web: expected a result from the render process, "
        "got none (it was killed by signal 9)"
    )


def test_the_child_ignores_the_daemons_signal_handlers(tmp_path: Path) -> None:
    """SIGTERM to the child ends the child only: the daemon's loop never sees it."""
    seen: list[int] = []

    def term_self() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, seen.append, 15)
        try:
            with pytest.raises(RenderError, match=r"killed by signal 15"):
                await call_in_child(term_self, limits=RenderLimits(timeout=30), what="x")
            await asyncio.sleep(0.05)
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(go())
    assert seen == []


def test_the_engine_counts_as_loaded_only_once_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.delitem(sys.modules, "_gojsonnet", raising=False)
    assert not engine_loaded()
    monkeypatch.setitem(sys.modules, "_gojsonnet", sys)
    assert engine_loaded()
