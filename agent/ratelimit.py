"""Failure-counting rate limiter for the listener (SPEC 15, reference etcha-run.md §6.3).

Etcha (ulule limiter, in-memory store) counts only responses with status >= 300, per client
address and route, in fixed windows: the first counted failure opens a window of ``period``
seconds. Before handling a request the server *peeks*: the key is limited while the failures
in its open window **exceed** ``count``. With ``10-M``, 12 bad requests in a minute give
1-11 served (403 etc.) and the 12th a 429.

Invariants: at most ``max_keys`` keys are held (least-recently-failed evicted first, O(1));
each key holds one fixed window (start, failures), so memory per key is constant whatever
``count`` is. The limiter is pure: time comes from the ``clock`` callable (monotonic seconds),
nothing is global, and nothing here does I/O.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import ConfigError

DEFAULT_RATE = "10-M"
_PERIODS = {"S": 1, "M": 60, "H": 3600, "D": 86400}
_RATE = re.compile(r"([0-9]+)-([SMHD])", re.IGNORECASE)


def parse_rate(text: str, *, name: str = "run.rateLimiterRate") -> tuple[int, int]:
    """Parse Etcha's ``<count>-<S|M|H|D>`` rate format.

    Args:
        text: e.g. ``"10-M"`` (10 per minute).
        name: the setting, for the error message.

    Returns:
        ``(count, period_seconds)``.

    Raises:
        ConfigError: the text does not match the format, or the count is 0.
    """
    m = _RATE.fullmatch(text.strip())
    if m is None:
        raise ConfigError(f"{name}: expected <count>-<S|M|H|D> such as 10-M, got {text!r}")
    count = int(m.group(1))
    if count < 1:
        raise ConfigError(f"{name}: expected a count of at least 1, got {text!r}")
    return count, _PERIODS[m.group(2).upper()]


@dataclass(frozen=True, slots=True)
class RateStatus:
    """What the limiter knows about a key, for the ``x-rate-limit-*`` response headers.

    Attributes:
        limited: the request must be answered with 429.
        limit: the configured count.
        remaining: failures left before the key is limited (``count - failures``, at least 0).
        reset_after: seconds until the current window closes (a full period when none is open).
    """

    limited: bool
    limit: int
    remaining: int
    reset_after: float


class FailureRateLimiter:
    """Counts failed responses per key in fixed windows.

    Args:
        count: failures allowed per window; the key is limited once it exceeds this.
        period: window length in seconds.
        max_keys: the most keys held; the least recently failed is evicted beyond it.
        clock: monotonic seconds; for tests.

    Raises:
        ValueError: a non-positive count, period or max_keys.
    """

    def __init__(
        self,
        count: int,
        period: float,
        max_keys: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1 or period <= 0 or max_keys < 1:
            raise ValueError(
                "FailureRateLimiter: expected count >= 1, period > 0 and max_keys >= 1, got "
                f"{count}, {period}, {max_keys}"
            )
        self.count = count
        self.period = float(period)
        self.max_keys = max_keys
        self._clock = clock
        # key -> [window_start, failures]; order = least recently failed first
        self._windows: OrderedDict[str, list[float]] = OrderedDict()

    @classmethod
    def from_rate(cls, text: str, max_keys: int = 10_000) -> FailureRateLimiter:
        """A limiter for an Etcha rate string such as ``"10-M"`` (ConfigError when malformed)."""
        count, period = parse_rate(text)
        return cls(count, period, max_keys)

    def __len__(self) -> int:
        return len(self._windows)

    def _open_window(self, key: str, now: float) -> list[float] | None:
        window = self._windows.get(key)
        if window is None:
            return None
        if now >= window[0] + self.period:
            del self._windows[key]
            return None
        return window

    def is_limited(self, key: str) -> tuple[bool, float]:
        """Peek whether a key is limited, without counting anything.

        Args:
            key: client address and route.

        Returns:
            ``(limited, retry_after_seconds)``; retry_after is 0 when not limited.
        """
        status = self.status(key)
        return status.limited, (status.reset_after if status.limited else 0.0)

    def status(self, key: str) -> RateStatus:
        """Peek the full status of a key (for the ``x-rate-limit-*`` headers).

        Args:
            key: client address and route.

        Returns:
            The key's status; a key with no open window has its full allowance.
        """
        now = self._clock()
        window = self._open_window(key, now)
        if window is None:
            return RateStatus(False, self.count, self.count, self.period)
        failures = int(window[1])
        return RateStatus(
            limited=failures > self.count,
            limit=self.count,
            remaining=max(0, self.count - failures),
            reset_after=window[0] + self.period - now,
        )

    def record_failure(self, key: str) -> None:
        """Count one response with status >= 300 for a key.

        Args:
            key: client address and route.
        """
        now = self._clock()
        window = self._open_window(key, now)
        if window is None:
            self._windows[key] = [now, 1.0]
            while len(self._windows) > self.max_keys:
                self._windows.popitem(last=False)
        else:
            window[1] += 1
            self._windows.move_to_end(key)
