"""Failure-counting rate limiter for the listener (SPEC 15, reference etcha-run.md §6.3).

Etcha (ulule limiter, in-memory store) counts only responses with status >= 300, per client
address and route, in fixed windows: the first counted failure opens a window of ``period``
seconds. Before handling a request the server *peeks*: the key is limited while the failures
in its open window **exceed** ``count``. With ``10-M``, 12 bad requests in a minute give
1-11 served (403 etc.) and the 12th a 429.

Invariants: at most ``max_keys`` keys that are not limited are held (least-recently-failed
evicted first, O(1)). A key that is limited moves to a separate table and stays there until its
window closes, whatever else is evicted, so a flood of fresh addresses cannot make the limiter
forget an attacker. That table has its own cap (``max_limited``, default ``max_keys``); only
beyond it is the limited key whose window closes first dropped. Each key holds one fixed window
(start, failures), so memory per key is constant whatever ``count`` is.

Clients are keyed by :func:`client_key`: an IPv4 address as is, an IPv6 address by its /64
network (one host usually owns a whole /64). The limiter is pure: time comes from the ``clock``
callable (monotonic seconds), nothing is global, and nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from agent.core.errors import ConfigError

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


def client_key(address: str) -> str:
    """The key a client address is counted under (rate limits and connection caps).

    Args:
        address: the socket's peer address (IPv4, IPv6, possibly with a ``%zone``).

    Returns:
        IPv4 addresses unchanged (IPv4-mapped IPv6 as plain IPv4), IPv6 addresses as their
        /64 network (``2001:db8:1:2::/64``), anything unparseable unchanged.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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
        max_keys: the most keys that are not limited; the least recently failed is evicted
            beyond it.
        max_limited: the most limited keys (default ``max_keys``); beyond it the one whose
            window closes first is dropped.
        clock: monotonic seconds; for tests.

    Raises:
        ValueError: a non-positive count, period, max_keys or max_limited.
    """

    def __init__(
        self,
        count: int,
        period: float,
        max_keys: int = 10_000,
        *,
        max_limited: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        limited_cap = max_keys if max_limited is None else max_limited
        if count < 1 or period <= 0 or max_keys < 1 or limited_cap < 1:
            raise ValueError(
                "FailureRateLimiter: expected count >= 1, period > 0, max_keys >= 1 and "
                f"max_limited >= 1, got {count}, {period}, {max_keys}, {limited_cap}"
            )
        self.count = count
        self.period = float(period)
        self.max_keys = max_keys
        self.max_limited = limited_cap
        self._clock = clock
        # key -> [window_start, failures]; order = least recently failed first
        self._windows: OrderedDict[str, list[float]] = OrderedDict()
        # limited keys -> [window_start, failures]; order = window start (closes first first)
        self._limited: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def limited_count(self) -> int:
        """How many keys are held as limited (closed windows may still be counted)."""
        return len(self._limited)

    @classmethod
    def from_rate(cls, text: str, max_keys: int = 10_000) -> FailureRateLimiter:
        """A limiter for an Etcha rate string such as ``"10-M"`` (ConfigError when malformed)."""
        count, period = parse_rate(text)
        return cls(count, period, max_keys)

    def __len__(self) -> int:
        return len(self._windows) + len(self._limited)

    def _open_window(self, key: str, now: float) -> list[float] | None:
        table = self._limited if key in self._limited else self._windows
        window = table.get(key)
        if window is None:
            return None
        if now >= window[0] + self.period:
            del table[key]
            return None
        return window

    def _drop_closed_limited(self, now: float) -> None:
        """Forget limited keys whose window has closed (oldest windows first)."""
        while self._limited:
            key, window = next(iter(self._limited.items()))
            if now < window[0] + self.period:
                return
            del self._limited[key]

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
            window = [now, 1.0]
            self._windows[key] = window
        elif key in self._limited:
            window[1] += 1
            return
        else:
            window[1] += 1
            self._windows.move_to_end(key)
        if window[1] > self.count:
            # Limited: kept until its window closes, whatever else is evicted.
            del self._windows[key]
            self._drop_closed_limited(now)
            self._limited[key] = window
            while len(self._limited) > self.max_limited:
                self._limited.popitem(last=False)
        while len(self._windows) > self.max_keys:
            self._windows.popitem(last=False)
