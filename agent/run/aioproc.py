"""The asyncio half of :mod:`agent.run.shell`: starting a process and waiting for it.

:func:`agent.run.shell.run` and :func:`~agent.run.shell.spawn_pty` build the argv and the
environment and import this module only when a process really starts, so a run whose commands
all execute in-process (the file helpers) never imports asyncio (issue 14). The invariants are
:mod:`agent.run.shell`'s: a new session per child, output capped, the whole process group
killed on timeout or cancellation (SIGTERM, SIGKILL after :data:`~agent.run.shell.KILL_GRACE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from agent.core.errors import CommandError
from agent.run.model import Exec
from agent.run.shell import KILL_GRACE, PIPE_GRACE, ShellResult, capped_output, signal_group

__all__ = ["run_process", "start_pty"]


async def _kill_group(pid: int, exited: asyncio.Future[None]) -> None:
    signal_group(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(exited), KILL_GRACE)
    # Grandchildren may outlive the leader: kill what is left of the group regardless.
    signal_group(pid, signal.SIGKILL)
    await exited


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that also reports the moment the child exits.

    ``Process.wait()`` only returns once every pipe is closed, which a background grandchild
    can delay forever; ``exited`` resolves when the child itself exits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


async def _read(stream: asyncio.StreamReader, buf: bytearray, cap: int, seen: list[int]) -> None:
    while True:
        data = await stream.read(65536)
        if not data:
            return
        room = cap - len(buf)
        if room > 0:
            buf += data[:room]
        seen[0] += len(data)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    stdin = proc.stdin
    if stdin is None:
        return
    try:
        stdin.write(data)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()


async def run_process(
    argv: list[str],
    ex: Exec,
    child_env: dict[str, str],
    stdin: str,
    kwargs: dict[str, Any],
    max_output: int,
    timeout: float,
) -> ShellResult:
    """Start ``argv`` (built by :func:`agent.run.shell.run`) and wait for it: the asyncio half
    of :func:`~agent.run.shell.run`, with its timeout, process-group kill and output cap."""
    start = time.monotonic()
    proc, transport, protocol = await _spawn(argv, ex, child_env, bool(stdin), kwargs)
    buf = bytearray()
    seen = [0]
    tasks: list[asyncio.Future[None]] = []
    if proc.stdout is not None:
        tasks.append(asyncio.ensure_future(_read(proc.stdout, buf, max_output, seen)))
    if stdin:
        tasks.append(asyncio.ensure_future(_feed(proc, stdin.encode())))
    timed_out, ended = await _wait(proc, transport, protocol, tasks, timeout)
    duration = ended - start
    output, truncated = capped_output(buf, seen[0], max_output)
    rc = transport.get_returncode()
    code = rc if rc is not None else -1
    return ShellResult(code, output, duration, timed_out, truncated)


async def _spawn(
    argv: list[str], ex: Exec, child_env: dict[str, str], feed: bool, kwargs: dict[str, Any]
) -> tuple[asyncio.subprocess.Process, asyncio.SubprocessTransport, _Protocol]:
    """Start ``argv`` in a new session, stdout and stderr on one pipe."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _Protocol(loop),
            *argv,
            stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=ex.work_dir or None,
            start_new_session=True,
            **kwargs,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if ex.work_dir and not os.path.isdir(ex.work_dir):
            # The child failed to change directory: name the directory, not the program.
            raise CommandError(
                f"error running commands: workDir {ex.work_dir}: expected a directory, got "
                f"{reason if os.path.lexists(ex.work_dir) else 'nothing there'}"
            ) from exc
        raise CommandError(f"error running commands: {argv[0]}: {reason}") from exc
    return asyncio.subprocess.Process(transport, protocol, loop), transport, protocol


async def _wait(
    proc: asyncio.subprocess.Process,
    transport: asyncio.SubprocessTransport,
    protocol: _Protocol,
    tasks: list[asyncio.Future[None]],
    timeout: float,
) -> tuple[bool, float]:
    """Wait for the process (killing its group on timeout), then its output.

    Returns ``(timed out, time.monotonic() when the process ended)``.

    The process group is killed when the wait is interrupted; the pipe tasks are always
    finished and the transport closed.
    """
    timed_out = False
    try:
        try:
            await asyncio.wait_for(asyncio.shield(protocol.exited), timeout or None)
        except TimeoutError:
            timed_out = True
            await _kill_group(proc.pid, protocol.exited)
        ended = time.monotonic()
        # Normally EOF is immediate; a background child may hold the pipe open, so bound it.
        if tasks:
            await asyncio.wait(tasks[:1], timeout=PIPE_GRACE)
    except BaseException:
        if transport.get_returncode() is None:
            await asyncio.shield(_kill_group(proc.pid, protocol.exited))
        raise
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        transport.close()
    return timed_out, ended


async def start_pty(
    argv: list[str],
    identity: list[str],
    work_dir: str,
    slave_fd: int,
    child_env: dict[str, str],
    ctty: str,
) -> asyncio.subprocess.Process:
    """Start the :func:`agent.run.shell.spawn_pty` child (the asyncio half)."""
    try:
        return await asyncio.create_subprocess_exec(
            os.path.realpath(sys.executable),
            "-I",
            "-S",
            "-c",
            ctty,
            *identity,
            work_dir,
            *argv,
            stdin=slave_fd,
            stdout=slave_fd,
            stderr=slave_fd,
            env=child_env,
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CommandError(f"error starting shell: {argv[0]}: {reason}") from exc
