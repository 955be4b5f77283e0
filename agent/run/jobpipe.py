"""The output pipe of one job of the persistent shell, and its status (issue 14).

The subshell writes its pid as the first line of its output right before it evals the script
(see :mod:`agent.run.persistent`); :class:`JobPipe` splits that line off, so its presence is
the proof that the script started, and keeps the rest in a capped buffer as
:func:`agent.run.shell.run` does for a spawned command.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from agent.run.reactor import Reactor, until
from agent.run.shell import capped_output

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agent.run.reactor import Step

__all__ = ["JobPipe"]


@dataclass(slots=True, eq=False)
class JobPipe:
    """One job in flight: its output pipe, read into a capped buffer after the line with the
    subshell's pid (the proof that the script started), and its status from the runner."""

    fd: int
    cap: int
    reactor: Reactor
    buf: bytearray = field(default_factory=bytearray)
    seen: int = 0
    #: The start of the output until the pid line is complete.
    head: bytes = b""
    #: The job's pid (its process group), from the first line of its output: it started.
    pid: int | None = None
    #: The output began with something else: the set-up failed before the script.
    failed: bool = False
    status: int | None = None
    #: The runner exited before this job's status came.
    died: bool = False
    #: A timeout or an interruption is killing the job (it waits for its pid).
    killing: bool = False
    watching: bool = False

    @property
    def waiting(self) -> bool:
        return self.status is None and not self.died

    def watch(self) -> None:
        """Read the pipe whenever it is readable from now on (until EOF or :meth:`close`)."""
        if not self.watching and self.fd >= 0:
            self.watching = True
            self.reactor.watch(self.fd, self._on_read)

    def _on_read(self) -> bool:
        """Read what the pipe holds (a few chunks at most); True at EOF or when the pid came
        for a job being killed (a waiting step may proceed)."""
        had_pid = self.pid is not None
        for _ in range(4):
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.close()
                return True
            if self.pid is None and not self.failed:
                data = self._take_pid(data)
            room = self.cap - len(self.buf)
            if room > 0:
                self.buf += data[:room]
            self.seen += len(data)
        return self.died or (not had_pid and self.pid is not None and self.killing)

    def _take_pid(self, data: bytes) -> bytes:
        """Split the pid line off the start of the output; return the rest. A first line that
        is not a pid is the error of a set-up that failed (the script never starts)."""
        head = self.head + data
        line, nl, rest = head.partition(b"\n")
        if not nl:
            self.head = head
            return b""
        self.head = b""
        if line.isdigit():
            self.pid = int(line)
        else:
            self.failed = True
        return rest

    def finish(self, grace: float) -> Step[None]:
        """Wait for EOF, at most ``grace`` seconds (a background child may hold the pipe)."""
        if self.fd >= 0:
            self._on_read()  # the job has exited: usually its output and EOF are there
        if self.fd < 0:
            return
        self.watch()  # a background process still holds the pipe
        deadline = time.monotonic() + grace
        while self.fd >= 0 and (yield from until(deadline)):
            pass
        if self.fd >= 0:
            self._on_read()  # whatever is buffered now

    def started(self) -> Step[bool]:
        """Whether the script started, once no new writer can open the pipe: wait for the pid
        line or EOF (a subshell still setting up holds the pipe until then)."""
        self.watch()
        while self.pid is None and not self.failed and self.fd >= 0:
            yield None
        return self.pid is not None

    def close(self) -> None:
        if self.fd >= 0:
            if self.watching:
                self.reactor.unwatch(self.fd)
            os.close(self.fd)
            self.fd = -1

    def text(self) -> tuple[str, bool]:
        return capped_output(self.buf, self.seen, self.cap)
