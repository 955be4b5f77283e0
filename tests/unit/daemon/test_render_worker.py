"""The daemon's render worker (:mod:`agent.daemon.render_worker`): reuse, idle exit, bounds.

The handlers here are plain Python (the test process may have loaded the Go engine, which a fork
does not survive); real renders by the worker run on a real daemon
(tests/integration/test_daemon_render_child.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from agent.core.errors import RenderError
from agent.daemon.render_child import RenderLimits
from agent.daemon.render_worker import Renderer

CONFIG: Any = object()  # the worker passes it to the handler as it is
OTHER: Any = object()


def handler(config: Any, request: Any) -> Any:
    """``pid``: the worker's pid; ``hang``: never answers; ``fail``: a RenderError; ``die``."""
    assert config is CONFIG
    if request == "hang":
        time.sleep(600)
    if request == "fail":
        raise RenderError("error rendering pattern: /main.jsonnet:1:1 boom", hint="line 1")
    if request == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if isinstance(request, tuple) and request[0] == "slow":
        time.sleep(request[1])
    return os.getpid()


def renderer(*, idle: float = 30.0, timeout: float = 30.0) -> Renderer:
    return Renderer(RenderLimits(timeout=timeout, max_bytes=1 << 20), idle=idle, handler=handler)


async def gone(pid: int) -> bool:
    """Whether ``pid`` exited and was reaped (polled while the loop runs)."""
    for _ in range(200):
        if not Path(f"/proc/{pid}").exists():
            return True
        await asyncio.sleep(0.025)
    return False


def test_a_burst_of_renders_shares_one_worker_that_ends_when_idle() -> None:
    async def go() -> None:
        r = renderer(idle=0.3)
        pids = [await r.call(CONFIG, "pid", what="x") for _ in range(3)]
        assert len(set(pids)) == 1 and pids[0] != os.getpid()
        assert r.worker_pid == pids[0]
        assert await gone(pids[0])  # idle: it ended on its own and the daemon reaped it
        assert r.worker_pid is None
        again = await r.call(CONFIG, "pid", what="x")  # a new worker, transparently
        assert again not in (pids[0], os.getpid())
        r.close()
        assert await gone(again)

    asyncio.run(go())


def test_a_render_error_comes_back_and_leaves_the_worker_in_service() -> None:
    async def go() -> None:
        r = renderer()
        first = await r.call(CONFIG, "pid", what="x")
        with pytest.raises(RenderError) as info:
            await r.call(CONFIG, "fail", what="x")
        assert str(info.value) == "error rendering pattern: /main.jsonnet:1:1 boom"
        assert info.value.hint == "line 1"
        assert await r.call(CONFIG, "pid", what="x") == first
        r.close()

    asyncio.run(go())


def test_a_render_past_its_timeout_kills_the_worker_and_the_next_render_works() -> None:
    async def go() -> None:
        r = renderer(timeout=0.5)
        first = await r.call(CONFIG, "pid", what="x")
        with pytest.raises(RenderError) as info:
            await r.call(CONFIG, "hang", what="source web")
        assert str(info.value) == (
            "error rendering pattern for source web: expected the render to finish within 0.5s, "
            "got no result (the render process was killed)"
        )
        assert await gone(first)
        second = await r.call(CONFIG, "pid", what="x")
        assert second != first
        r.close()

    asyncio.run(go())


def test_a_worker_that_dies_under_a_render_fails_it_clearly_and_is_replaced() -> None:
    async def go() -> None:
        r = renderer()
        first = await r.call(CONFIG, "pid", what="x")
        with pytest.raises(RenderError) as info:
            await r.call(CONFIG, "die", what="source web")
        assert str(info.value) == (
            "error rendering pattern for source web: expected a result from the render process, "
            "got none (it was killed by signal 9)"
        )
        assert await r.call(CONFIG, "pid", what="x") != first
        r.close()

    asyncio.run(go())


def test_a_render_while_the_worker_is_busy_runs_in_its_own_child() -> None:
    async def go() -> None:
        r = renderer()
        slow = asyncio.ensure_future(r.call(CONFIG, ("slow", 1.0), what="x"))
        await asyncio.sleep(0.2)
        other = await r.call(CONFIG, "pid", what="x")
        worker = await slow
        assert other != worker and os.getpid() not in (other, worker)
        assert r.worker_pid == worker  # the one-shot child is gone, the worker stays
        r.close()

    asyncio.run(go())


def test_a_new_config_gets_a_new_worker() -> None:
    async def go() -> None:
        r = renderer()
        first = await r.call(CONFIG, "pid", what="x")
        with pytest.raises(RenderError):  # the handler checks it got CONFIG
            await r.call(OTHER, "pid", what="x")
        assert await gone(first)
        r.close()

    asyncio.run(go())
