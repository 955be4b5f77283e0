"""A shell :class:`~agent.daemon.shell_session.Session` on a real pty and a real process: what
``wait_readable`` reports, a write the shell does not read giving up after the write timeout,
reads at the end of the pty, and the output rate bound."""

from __future__ import annotations

import asyncio
import os
import pty
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest

from agent.daemon import shell_session
from agent.daemon.shell_session import Session, TokenBucket, read_chunk


@dataclass(frozen=True)
class _Token:
    source: str = "web"
    key_id: str = "ci"
    chain_key_ids: tuple[str, ...] = ()


@asynccontextmanager
async def session(*argv: str) -> AsyncIterator[tuple[Session, int]]:
    """A session whose process is ``argv`` (not attached to the pty) and the pty's slave fd."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    proc = await asyncio.create_subprocess_exec(*argv)
    s = Session("sid", _Token(), "127.0.0.1", proc, master, asyncio.get_running_loop().time)  # type: ignore[arg-type]
    try:
        yield s, slave
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await s.close_pty()
        os.close(slave)


def test_wait_readable_reports_timeout_read_closing_and_exited() -> None:
    async def go() -> list[str]:
        seen = []
        async with session("sleep", "30") as (s, slave):
            seen.append(await s.wait_readable(0.05))
            os.write(slave, b"hello\n")
            seen.append(await s.wait_readable(5))
            assert read_chunk(s.master) == b"hello\r\n"
            s.closing.set()
            seen.append(await s.wait_readable(5))
        async with session("true") as (s, _):
            seen.append(await s.wait_readable(5))
        return seen

    assert asyncio.run(go()) == ["timeout", "read", "closing", "exited"]


def test_a_write_the_shell_does_not_read_gives_up_after_the_write_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shell_session, "WRITE_TIMEOUT", 0.2)

    async def go() -> tuple[int, int]:
        async with session("sleep", "30") as (s, slave):
            tty.setraw(slave)  # raw: a full input buffer blocks the writer (no line discarding)
            data = b"x" * (1 << 20)  # far more than a pty buffers
            return await s.write(data), len(data)

    written, given = asyncio.run(go())
    assert 0 < written < given


def test_nothing_is_written_or_resized_once_the_pty_is_closed() -> None:
    async def go() -> int:
        async with session("sleep", "30") as (s, _):
            await s.close_pty()
            await s.resize(100, 40)  # no error on the closed pty
            return await s.write(b"ls\n")

    assert asyncio.run(go()) == 0


def test_read_chunk_is_none_when_empty_and_empty_bytes_once_no_process_holds_the_pty() -> None:
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    try:
        assert read_chunk(master) is None
        os.close(slave)
        assert read_chunk(master) == b""
    finally:
        os.close(master)


def test_the_output_bucket_waits_only_while_in_debt() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=1000.0, burst=100.0, clock=lambda: now[0])
    assert bucket.delay_after(100) == 0.0
    assert bucket.delay_after(50) == pytest.approx(0.05)
    now[0] = 0.05  # 50 bytes refilled: even again
    assert bucket.delay_after(0) == 0.0

    async def spend() -> float:
        loop = asyncio.get_running_loop()
        real = TokenBucket(rate=1000.0, burst=10.0, clock=loop.time)
        start = loop.time()
        await real.spend(30)  # 20 bytes of debt: about 20 ms
        return loop.time() - start

    assert asyncio.run(spend()) >= 0.015
