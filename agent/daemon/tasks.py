"""In-flight runs of `agent run`: tracked so that shutdown waits for them (bounded)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Inflight:
    """The set of running tasks (runs, pushes, webhooks, reloads) shutdown drains."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def track(self, task: asyncio.Task[Any]) -> None:
        """Register a task; it leaves the set when done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a tracked task; a caller's cancel does not stop it."""
        task: asyncio.Task[T] = asyncio.get_running_loop().create_task(coro)
        self.track(task)
        return await asyncio.shield(task)

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running tasks, then cancel what is left (logged)."""
        pending = {t for t in self._tasks if not t.done()}
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=grace)
        if still:
            logger.error(
                "%d run(s) still going after %ss; cancelling them (their state is not saved)",
                len(still),
                grace,
            )
            for task in still:
                task.cancel()
            await asyncio.wait(still, timeout=5)


__all__ = ["Inflight"]
