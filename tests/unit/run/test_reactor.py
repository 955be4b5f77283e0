"""``agent.run.reactor``: one step (a generator), driven with or without asyncio."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import TYPE_CHECKING

import pytest

from agent.run.reactor import Reactor, until

if TYPE_CHECKING:
    from agent.run.reactor import Step


def read_when_ready(reactor: Reactor, fd: int, seen: list[str]) -> Step[bytes]:
    """Watch ``fd``; wait (no limit) until its callback has read something."""
    got: list[bytes] = []

    def on_read() -> bool:
        got.append(os.read(fd, 100))
        return True

    reactor.watch(fd, on_read)
    try:
        while not got:
            seen.append("wait")
            yield None
    finally:
        reactor.unwatch(fd)
    return got[0]


def test_drive_without_a_loop_resumes_the_step_when_a_watched_fd_is_readable() -> None:
    r, w = os.pipe()
    reactor = Reactor()
    seen: list[str] = []
    timer = threading.Timer(0.05, os.write, (w, b"data"))
    timer.start()
    try:
        assert reactor.drive(read_when_ready(reactor, r, seen)) == b"data"
    finally:
        timer.join()
        reactor.close()
        os.close(r)
        os.close(w)
    assert seen == ["wait"]


def test_drive_async_resumes_the_same_step_under_asyncio() -> None:
    r, w = os.pipe()
    reactor = Reactor()
    seen: list[str] = []

    async def go() -> bytes:
        asyncio.get_running_loop().call_later(0.05, os.write, w, b"data")
        return await reactor.drive_async(read_when_ready(reactor, r, seen))

    try:
        assert asyncio.run(go()) == b"data"
    finally:
        reactor.close()
        os.close(r)
        os.close(w)
    assert seen == ["wait"]


def test_cancellation_is_thrown_into_the_step_which_still_waits_to_clean_up() -> None:
    events: list[str] = []

    def step() -> Step[None]:
        try:
            while True:
                yield None
        except asyncio.CancelledError:
            events.append("cancelled")
            assert (yield from until(time.monotonic() + 0.05))  # clean-up that waits
            events.append("cleaned up")
            raise

    async def go() -> None:
        reactor = Reactor()
        task = asyncio.ensure_future(reactor.drive_async(step()))
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        reactor.close()

    asyncio.run(go())
    assert events == ["cancelled", "cleaned up"]


def test_until_a_past_deadline_does_not_wait() -> None:
    reactor = Reactor()
    try:
        assert reactor.drive(until(time.monotonic() - 1)) is False
        assert reactor.drive(until(time.monotonic() + 0.01)) is True
    finally:
        reactor.close()
