"""The push replay cache of `agent run`, persisted to ``<stateDir>/replay.json``.

The trust gate remembers push ``jti``s in a :class:`ReplayJournal` (it is the gate's
:class:`~agent.trust.policy.ReplayMemory`) and awaits :meth:`ReplayJournal.persist` after each
new one. Writes are serialised on one lock and the snapshot is taken under it, after the wait:
each write holds every ``jti`` remembered before it, so a stale snapshot never replaces a newer
one, and a caller whose generation an earlier write already covered returns without writing (one
write serves a burst of pushes). A failed write is logged; the cache stays in memory.
"""

from __future__ import annotations

import asyncio
import logging

from agent.core.errors import AgentError
from agent.daemon.state import ReplayCache, StateStore

logger = logging.getLogger(__name__)

#: Most push jtis remembered for replay protection (entries also expire with their token).
REPLAY_CACHE_CAP = 10_000


class ReplayJournal:
    """A :class:`~agent.daemon.state.ReplayCache` plus its serialised persistence.

    Args:
        state: the state store that holds ``replay.json``.
        cap: the most entries held.
    """

    def __init__(self, state: StateStore, cap: int = REPLAY_CACHE_CAP) -> None:
        self.state = state
        self.cache = ReplayCache(cap)
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped for every jti remembered
        self._saved = 0  # the generation the file on disk holds

    def remember(self, jti: str, exp: float | None, *, now: float | None = None) -> bool:
        """Record ``jti``; ``False`` when it is already known and not expired."""
        fresh = self.cache.remember(jti, exp, now=now)
        if fresh:
            self._generation += 1
        return fresh

    async def restore(self) -> None:
        """Load the entries saved by an earlier run (start-up)."""
        try:
            entries = await asyncio.to_thread(self.state.load_replay)
        except AgentError as exc:
            logger.error("Replay cache not restored: %s", exc)
            return
        self.cache.restore(entries)

    async def persist(self) -> None:
        """Write the cache when the file does not yet hold every ``jti`` remembered so far."""
        generation = self._generation
        async with self._lock:
            if self._saved >= generation:
                return
            current = self._generation
            snapshot = self.cache.snapshot()
            try:
                await asyncio.to_thread(self.state.save_replay, snapshot)
            except AgentError as exc:
                logger.error("Replay cache not saved (kept in memory): %s", exc)
                return
            self._saved = current


__all__ = ["REPLAY_CACHE_CAP", "ReplayJournal"]
