"""The in-memory replay cache of push token ids (re-exported by :mod:`agent.daemon.state`).

Invariants: memory is bounded by ``cap`` and by expiry; no I/O here (persistence is
:class:`agent.daemon.replay.ReplayJournal`'s, the files :class:`agent.daemon.state.StateStore`'s).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable

#: Leeway added to ``exp`` before a remembered jti is forgotten (matches ``tokens.LEEWAY_SECONDS``,
#: because a token stays acceptable that long after ``exp``).
DEFAULT_REPLAY_LEEWAY = 30.0


class ReplayCache:
    """Remembers token ids (``jti``) until they expire, to refuse a token seen before.

    Memory is bounded twice: entries are dropped once ``exp + leeway`` has passed, and there are
    never more than ``cap`` entries (when full, expired entries go first, then the oldest
    inserted). Lookups and inserts are O(1) dict work plus one O(log n) heap push; expired
    entries are popped from an expiry heap as time passes, and the heap is rebuilt (O(n), once
    per ``cap`` inserts at most) when cap evictions have left it twice as long as the dict.

    Args:
        cap: the most entries held (at least 1).
        leeway: seconds after ``exp`` a token is still acceptable, so the jti is kept as long.
        clock: returns Unix time; for tests.

    Raises:
        ValueError: ``cap`` is below 1.
    """

    def __init__(
        self,
        cap: int,
        *,
        leeway: float = DEFAULT_REPLAY_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cap < 1:
            raise ValueError(f"ReplayCache cap: expected at least 1, got {cap}")
        self.cap = cap
        self.leeway = leeway
        self._clock = clock
        self._entries: dict[str, float] = {}  # jti -> forget-at; insertion order = age
        self._heap: list[tuple[float, str]] = []  # (forget-at, jti); may hold stale pairs

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, jti: object) -> bool:
        if not isinstance(jti, str):
            return False
        until = self._entries.get(jti)
        return until is not None and until > self._clock()

    def remember(self, jti: str, exp: float | None, *, now: float | None = None) -> bool:
        """Record a jti, unless it is already known and not yet expired.

        Args:
            jti: the token id.
            exp: the token's ``exp`` (Unix seconds); ``None`` for a token that never expires,
                which is then only forgotten by cap eviction.
            now: the current Unix time; defaults to the clock.

        Returns:
            ``True`` when the jti was new (or its earlier entry had expired), ``False`` when it
            is a replay.
        """
        t = self._clock() if now is None else now
        self._expire(t)
        until = self._entries.get(jti)
        if until is not None:
            if until > t:
                return False
            del self._entries[jti]
        forget_at = math.inf if exp is None else float(exp) + self.leeway
        if forget_at <= t:
            # Already past its acceptance window: the verifier rejects it anyway.
            return True
        while len(self._entries) >= self.cap:
            oldest = next(iter(self._entries))
            del self._entries[oldest]
        self._entries[jti] = forget_at
        heapq.heappush(self._heap, (forget_at, jti))
        if len(self._heap) > 2 * self.cap + 16:
            self._heap = [(v, k) for k, v in self._entries.items()]
            heapq.heapify(self._heap)
        return True

    def entry(self, jti: str) -> tuple[str, float | None] | None:
        """The persisted form ``(jti, forget_at)`` of a held entry; ``None`` when not held."""
        until = self._entries.get(jti)
        if until is None:
            return None
        return jti, None if math.isinf(until) else until

    def snapshot(self, *, now: float | None = None) -> list[tuple[str, float | None]]:
        """The live entries, oldest first, for persisting across restarts.

        Args:
            now: the current Unix time; defaults to the clock.

        Returns:
            ``(jti, forget_at)`` pairs; ``forget_at`` is ``None`` for a token without ``exp``.
        """
        t = self._clock() if now is None else now
        self._expire(t)
        return [(k, None if math.isinf(v) else v) for k, v in self._entries.items()]

    def restore(self, entries: list[tuple[str, float | None]], *, now: float | None = None) -> None:
        """Re-load entries from :meth:`snapshot` (expired ones are skipped).

        Args:
            entries: ``(jti, forget_at)`` pairs.
            now: the current Unix time; defaults to the clock.
        """
        for jti, forget_at in entries:
            self.remember(jti, None if forget_at is None else forget_at - self.leeway, now=now)

    def _expire(self, now: float) -> None:
        heap = self._heap
        entries = self._entries
        while heap and heap[0][0] <= now:
            forget_at, jti = heapq.heappop(heap)
            if entries.get(jti) == forget_at:
                del entries[jti]
