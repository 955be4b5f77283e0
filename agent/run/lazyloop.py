"""Drive a coroutine without an event loop until it needs one (issue 14, start-up of ``local``).

``agent local`` runs the engine, a coroutine. Commands that run in-process (the file helpers,
:mod:`agent.run.inprocess`) or in the persistent shell (:mod:`agent.run.persistent`, which
then blocks in a selector: :mod:`agent.run.reactor`) never need an event loop, and importing
asyncio (with ssl and socket) would be a large part of the cost. :func:`drive` runs the
coroutine with ``coroutine.send`` and no loop; the engine awaits :data:`NEED_LOOP` right before
it first spawns a process, and from there :func:`drive` continues the same coroutine under
``asyncio.run`` (asyncio is imported then). Inside a running loop (the daemon, ``agent test``,
the build steps) awaiting :data:`NEED_LOOP` does nothing. One engine, two ways to drive it.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator

from agent.core.errors import AgentError
from agent.run.reactor import running_loop

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time (start-up, issue 14)
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["NEED_LOOP", "drive", "loop_running"]


def loop_running() -> bool:
    """Whether an asyncio loop runs in this thread (asyncio is not imported to find out)."""
    return running_loop() is not None


class _NeedLoop:
    """Awaitable marking where asyncio is first needed (see the module doc)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        if not loop_running():
            yield self  # to drive(): start a loop, then resume here


#: ``await NEED_LOOP`` before the first use of asyncio in code that :func:`drive` may run.
NEED_LOOP = _NeedLoop()


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, T]) -> Generator[Any, Any, T]:
    """Continue a started coroutine under the running loop (``yield from`` hands its awaits,
    results, exceptions and cancellation through unchanged)."""
    result: T = yield from coro.__await__()
    return result


async def _resume(coro: Coroutine[Any, Any, T]) -> T:
    return await _resumed(coro)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end and return its value (its exception propagates): without an event
    loop until it awaits :data:`NEED_LOOP`, then under ``asyncio.run``.

    Raises:
        AgentError: ``coro`` waited on something else before :data:`NEED_LOOP` (a caller's
            mistake; the coroutine is closed).
    """
    try:
        first = coro.send(None)
    except StopIteration as stop:
        value: T = stop.value
        return value
    if first is not NEED_LOOP:
        coro.close()
        raise AgentError(
            "internal error: a coroutine waited on an event loop before asking for one"
        )
    import asyncio  # stdlib: only once a process must start

    return asyncio.run(_resume(coro))
