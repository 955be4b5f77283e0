"""Waiting on file descriptors with or without asyncio: one core, two drivers (issue 14).

:mod:`agent.run.persistent` writes the logic of a job once, as a generator (a *step*): it
registers callbacks for readable fds with :meth:`Reactor.watch` and yields the longest time
it may wait (``None``: no limit) each time it needs something to happen; the callbacks update
its state and it checks again when resumed. A :class:`Reactor` drives such a generator:

- :meth:`Reactor.drive` blocks in a :mod:`selectors` selector (no event loop, no asyncio
  import: ``agent local`` runs its bash commands this way, see :mod:`agent.run.lazyloop`);
- :meth:`Reactor.drive_async` awaits in the running asyncio loop (``add_reader``), so the
  daemon keeps serving while commands run.

Either way an exception raised while waiting (``KeyboardInterrupt``, a task's cancellation)
is thrown into the generator, which may still wait (to kill a process group) before it
re-raises; under asyncio that clean-up is shielded from further cancellation. Watched fds move
from one driver to the other when the reactor is next driven the other way.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Generator

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up, issue 14)
    import asyncio
    import selectors
    from typing import TypeVar

    T = TypeVar("T")
    #: A step: yields how long it may wait (``None``: no limit), returns its result. Import it
    #: under ``TYPE_CHECKING``: it exists for the type checker only.
    Step = Generator[float | None, None, T]

__all__ = ["Reactor", "running_loop", "until"]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or ``None`` (asyncio is not imported to find out)."""
    aio = sys.modules.get("asyncio")
    return None if aio is None else aio._get_running_loop()


def until(deadline: float | None) -> Step[bool]:
    """Wait once, at most until ``deadline`` (``time.monotonic()``; ``None``: no limit); False
    when it has passed (nothing waited)."""
    if deadline is None:
        yield None
        return True
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    yield left
    return True


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Reactor:
    """Watched fds (one callback each) and the drivers of steps (see the module doc)."""

    def __init__(self) -> None:
        self._watched: dict[int, Callable[[], bool]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._selector: selectors.BaseSelector | None = None
        self._waiters: list[asyncio.Future[None]] = []

    # -- watching ----------------------------------------------------------------------------

    def watch(self, fd: int, callback: Callable[[], bool]) -> None:
        """Call ``callback`` whenever ``fd`` is readable (until :meth:`unwatch`); it returns
        whether a waiting step may now proceed (under asyncio only then is the step resumed)."""
        self._watched[fd] = callback
        self._add(fd, callback)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (before closing it); unknown fds are ignored."""
        if self._watched.pop(fd, None) is None:
            return
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop
                self._loop.remove_reader(fd)
        elif self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)

    def _add(self, fd: int, callback: Callable[[], bool]) -> None:
        if self._loop is not None:
            self._loop.add_reader(fd, self._fire, callback)
        elif self._selector is not None:
            import selectors  # stdlib, already loaded by subprocess

            self._selector.register(fd, selectors.EVENT_READ, callback)

    def _fire(self, callback: Callable[[], bool]) -> None:
        if not callback():
            return
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            _wake(fut)

    def _bind(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Watch every fd with ``loop`` (``None``: with a selector), moving them if needed."""
        if loop is self._loop and (loop is not None or self._selector is not None):
            return
        watched = dict(self._watched)
        for fd in watched:
            self.unwatch(fd)
        self._loop = loop
        if loop is None and self._selector is None:
            import selectors  # stdlib, already loaded by subprocess

            self._selector = selectors.DefaultSelector()
        for fd, callback in watched.items():
            self.watch(fd, callback)

    def close(self) -> None:
        """Stop watching everything and release the selector."""
        for fd in list(self._watched):
            self.unwatch(fd)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        self._loop = None

    # -- drivers -----------------------------------------------------------------------------

    def drive(self, step: Step[T]) -> T:
        """Run ``step`` to its end, blocking in a selector (no event loop may be running)."""
        self._bind(None)
        try:
            timeout = next(step)
        except StopIteration as stop:
            value: T = stop.value
            return value
        selector = self._selector
        if selector is None:  # pragma: no cover (_bind made one)
            raise RuntimeError("no selector")
        while True:
            pending: BaseException | None = None
            try:
                for key, _ in selector.select(None if timeout is None else max(timeout, 0)):
                    key.data()
            except BaseException as exc:  # KeyboardInterrupt: the step cleans up
                pending = exc
            try:
                timeout = step.send(None) if pending is None else step.throw(pending)
            except StopIteration as stop:
                value = stop.value
                return value

    async def drive_async(self, step: Step[T]) -> T:
        """Run ``step`` to its end in the running asyncio loop."""
        import asyncio  # already loaded: a loop is running

        loop = asyncio.get_running_loop()
        self._bind(loop)
        try:
            timeout = next(step)
        except StopIteration as stop:
            value: T = stop.value
            return value
        while True:
            try:
                await self._wait(loop, timeout)
            except BaseException as exc:  # cancellation: clean up, shielded
                rest = asyncio.ensure_future(self._finish(loop, step, exc))
                return await asyncio.shield(rest)
            try:
                timeout = step.send(None)
            except StopIteration as stop:
                value = stop.value
                return value

    async def _wait(self, loop: asyncio.AbstractEventLoop, timeout: float | None) -> None:
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        timer = None if timeout is None else loop.call_later(max(timeout, 0), _wake, fut)
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)

    async def _finish(
        self, loop: asyncio.AbstractEventLoop, step: Step[T], exc: BaseException
    ) -> T:
        """Throw ``exc`` into ``step`` and drive what it still waits for (it re-raises)."""
        try:
            timeout = step.throw(exc)
        except StopIteration as stop:
            value: T = stop.value
            return value
        while True:
            await self._wait(loop, timeout)
            try:
                timeout = step.send(None)
            except StopIteration as stop:
                value = stop.value
                return value
