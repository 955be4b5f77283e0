"""The push replay cache of `agent run`, persisted in ``<stateDir>`` (journal + compacted file).

The trust gate remembers push ``jti``s in a :class:`ReplayJournal` (it is the gate's
:class:`~agent.trust.policy.ReplayMemory`) and awaits :meth:`ReplayJournal.persist` after each
new one, before the push runs. Persisting appends the jtis not yet on disk to
``agent-replay.journal`` with one ``fdatasync`` (:meth:`StateStore.append_replay`) instead of
rewriting the whole cache; every :data:`COMPACT_LINES` journal lines, and at start-up when the
journal holds anything (a torn line a crash left is dropped that way), and at a clean stop
(:meth:`ReplayJournal.close`, so an older agent that reads only ``agent-replay.json`` still has
every jti), the whole cache is written atomically to ``agent-replay.json`` and the journal
emptied (:meth:`StateStore.compact_replay`).
A jti the gate accepted is on disk before its push runs, so a restart still refuses it.

Writes are serialised on one lock and the batch is taken under it, after the wait: a caller whose
generation an earlier write already covered returns without writing (one write serves a burst of
pushes). A failed write is logged and the cache stays in memory; the next write is a compaction
(the whole cache, so nothing the failed append missed is lost, and no torn line stays behind).
"""

from __future__ import annotations

import asyncio
import logging

from agent.core.errors import AgentError
from agent.daemon.state import ReplayCache, StateStore

logger = logging.getLogger(__name__)

#: Most push jtis remembered for replay protection (entries also expire with their token).
REPLAY_CACHE_CAP = 10_000
#: Journal lines after which the next write compacts (bounds the journal to ~100 KiB).
COMPACT_LINES = 1000


class ReplayJournal:
    """A :class:`~agent.daemon.state.ReplayCache` plus its serialised persistence.

    Args:
        state: the state store that holds the replay file and journal.
        cap: the most entries held.
        compact_lines: journal lines after which the next write compacts.
    """

    def __init__(
        self, state: StateStore, cap: int = REPLAY_CACHE_CAP, *, compact_lines: int = COMPACT_LINES
    ) -> None:
        self.state = state
        self.cache = ReplayCache(cap)
        self.compact_lines = max(1, compact_lines)
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped for every jti remembered
        self._saved = 0  # the generation the files on disk hold
        self._pending: list[tuple[str, float | None]] = []  # remembered, not yet written
        self._journal_lines: int | None = None  # None: unknown or unclean, compact next
        self._restored = False  # the files were read: a compaction keeps what they held

    def remember(self, jti: str, exp: float | None, *, now: float | None = None) -> bool:
        """Record ``jti``; ``False`` when it is already known and not expired."""
        fresh = self.cache.remember(jti, exp, now=now)
        if fresh:
            self._generation += 1
            entry = self.cache.entry(jti)
            if entry is not None:  # not held: already past its acceptance window
                self._pending.append(entry)
        return fresh

    async def restore(self) -> None:
        """Load the entries saved by an earlier run, and compact a non-empty journal (start-up)."""
        try:
            entries = await asyncio.to_thread(self.state.load_replay)
            dirty = await asyncio.to_thread(self.state.has_replay_journal)
        except AgentError as exc:
            logger.error("Replay cache not restored: %s", exc)
            return
        self.cache.restore(entries)
        self._restored = True
        if not dirty:
            self._journal_lines = 0
            return
        try:
            await asyncio.to_thread(self.state.compact_replay, self.cache.snapshot())
        except AgentError as exc:
            logger.error("Replay journal not compacted (retried at the next push): %s", exc)
            return
        self._journal_lines = 0

    async def persist(self) -> None:
        """Write the ``jti``s remembered so far that the files on disk do not hold yet."""
        generation = self._generation
        async with self._lock:
            if self._saved >= generation:
                return
            current = self._generation
            batch, self._pending = self._pending, []
            lines = self._journal_lines
            try:
                if lines is None or lines + len(batch) > self.compact_lines:
                    await asyncio.to_thread(self.state.compact_replay, self.cache.snapshot())
                    self._journal_lines = 0
                elif batch:
                    await asyncio.to_thread(self.state.append_replay, batch)
                    self._journal_lines = lines + len(batch)
            except AgentError as exc:
                logger.error("Replay cache not saved (kept in memory): %s", exc)
                self._journal_lines = None
                return
            self._saved = current

    async def close(self) -> None:
        """A clean stop: compact a non-empty journal, so ``agent-replay.json`` alone holds every
        jti (what an older agent reads after a downgrade). Nothing when never restored."""
        async with self._lock:
            if not self._restored or self._journal_lines == 0:
                return
            try:
                await asyncio.to_thread(self.state.compact_replay, self.cache.snapshot())
            except AgentError as exc:
                logger.error("Replay journal not compacted at stop: %s", exc)
                return
            self._journal_lines = 0


__all__ = ["COMPACT_LINES", "REPLAY_CACHE_CAP", "ReplayJournal"]
