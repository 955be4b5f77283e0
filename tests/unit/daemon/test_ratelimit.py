"""Rate string parsing and the failure-counting limiter."""

from __future__ import annotations

import pytest

from agent.core.errors import ConfigError
from agent.daemon.ratelimit import FailureRateLimiter, RateStatus, client_key, parse_rate


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10-M", (10, 60)),
        ("1-S", (1, 1)),
        ("5-H", (5, 3600)),
        ("100-D", (100, 86400)),
        ("3-m", (3, 60)),
        (" 10-M ", (10, 60)),
    ],
)
def test_parse_rate_accepts_etcha_formats(text: str, expected: tuple[int, int]) -> None:
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "10", "10-", "-M", "10-W", "ten-M", "10-MM", "1.5-M", "0-M"])
def test_parse_rate_rejects_bad_formats(text: str) -> None:
    with pytest.raises(ConfigError, match=r"run.rateLimiterRate: expected"):
        parse_rate(text)


def test_parse_rate_error_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^httpServer.rateLimiterRate: expected .* got 'x'$"):
        parse_rate("x", name="httpServer.rateLimiterRate")


def _serve(limiter: FailureRateLimiter, key: str, status: int) -> int:
    """What the server does per request: peek, answer, count failures."""
    if limiter.is_limited(key)[0]:
        return 429
    if status >= 300:
        limiter.record_failure(key)
    return status


def test_twelve_failures_with_10_per_minute_limit_the_twelfth() -> None:
    limiter = FailureRateLimiter(*parse_rate("10-M"), clock=Clock())
    answers = [_serve(limiter, "1.2.3.4 /etcha/v1/system/metrics", 403) for _ in range(12)]
    assert answers == [403] * 11 + [429]


def test_successful_responses_do_not_consume_quota() -> None:
    limiter = FailureRateLimiter(2, 60, clock=Clock())
    assert [_serve(limiter, "k", 200) for _ in range(50)] == [200] * 50
    assert limiter.status("k") == RateStatus(False, 2, 2, 60.0)


def test_limit_lifts_when_the_window_closes_and_retry_after_counts_down() -> None:
    clock = Clock()
    limiter = FailureRateLimiter(2, 60, clock=clock)
    for _ in range(3):
        limiter.record_failure("k")
    clock.now += 20
    assert limiter.is_limited("k") == (True, 40.0)
    clock.now += 39.5
    assert limiter.is_limited("k") == (True, 0.5)
    clock.now += 0.5
    assert limiter.is_limited("k") == (False, 0.0)
    assert len(limiter) == 0  # the closed window was dropped
    limiter.record_failure("k")
    assert limiter.status("k") == RateStatus(False, 2, 1, 60.0)


def test_status_reports_remaining_quota() -> None:
    clock = Clock()
    limiter = FailureRateLimiter(3, 10, clock=clock)
    limiter.record_failure("k")
    clock.now += 4
    limiter.record_failure("k")
    assert limiter.status("k") == RateStatus(False, 3, 1, 6.0)
    limiter.record_failure("k")
    limiter.record_failure("k")
    assert limiter.status("k") == RateStatus(True, 3, 0, 6.0)


def test_keys_are_independent() -> None:
    limiter = FailureRateLimiter(1, 60, clock=Clock())
    limiter.record_failure("a")
    limiter.record_failure("a")
    assert limiter.is_limited("a")[0] is True
    assert limiter.is_limited("b")[0] is False


def test_peek_does_not_count() -> None:
    limiter = FailureRateLimiter(1, 60, clock=Clock())
    for _ in range(100):
        limiter.is_limited("k")
    limiter.record_failure("k")
    assert limiter.is_limited("k")[0] is False


def test_memory_bounded_with_100000_distinct_addresses() -> None:
    limiter = FailureRateLimiter(10, 60, max_keys=1000, clock=Clock())
    for i in range(100_000):
        limiter.record_failure(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
        assert len(limiter) <= 1000
    assert len(limiter) == 1000
    # the most recent address is still counted, the first one is forgotten
    assert limiter.status("10.1.134.159").remaining == 9
    assert limiter.status("10.0.0.0").remaining == 10


def test_least_recently_failed_key_is_evicted_first() -> None:
    limiter = FailureRateLimiter(5, 60, max_keys=2, clock=Clock())
    limiter.record_failure("old")
    limiter.record_failure("old")
    limiter.record_failure("other")
    limiter.record_failure("old")  # "old" is now the most recently used
    limiter.record_failure("new")  # evicts "other"
    assert limiter.status("old").remaining == 2
    assert limiter.status("other").remaining == 5
    assert len(limiter) == 2


def test_limited_key_survives_a_flood_of_other_addresses_while_its_window_lasts() -> None:
    clock = Clock()
    limiter = FailureRateLimiter(10, 60, max_keys=10_000, clock=clock)
    for _ in range(11):
        limiter.record_failure("203.0.113.9")
    assert limiter.is_limited("203.0.113.9")[0] is True
    for i in range(20_000):  # twice max_keys fresh addresses, one failure each
        limiter.record_failure(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert limiter.is_limited("203.0.113.9")[0] is True
    assert len(limiter) <= 10_001
    clock.now += 60
    assert limiter.is_limited("203.0.113.9")[0] is False


def test_limited_keys_have_their_own_cap_dropping_the_oldest_window() -> None:
    clock = Clock()
    limiter = FailureRateLimiter(1, 60, max_keys=10, max_limited=3, clock=clock)
    for name in ("a", "b", "c", "d"):
        limiter.record_failure(name)
        limiter.record_failure(name)
        clock.now += 1
    assert [limiter.is_limited(n)[0] for n in ("a", "b", "c", "d")] == [False, True, True, True]
    assert limiter.limited_count == 3


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_key_groups_ipv6_by_64(address: str, key: str) -> None:
    assert client_key(address) == key


def test_ipv6_clients_in_one_64_share_a_limit() -> None:
    limiter = FailureRateLimiter(2, 60, clock=Clock())
    for host in ("::1", "::2", "::3"):
        limiter.record_failure(client_key(f"2001:db8:0:1{host}"))
    assert limiter.is_limited(client_key("2001:db8:0:1::99"))[0] is True
    assert limiter.is_limited(client_key("2001:db8:0:2::1"))[0] is False


def test_from_rate_and_bad_arguments() -> None:
    limiter = FailureRateLimiter.from_rate("5-S")
    assert (limiter.count, limiter.period) == (5, 1.0)
    with pytest.raises(ValueError, match="count >= 1"):
        FailureRateLimiter(0, 60)
    with pytest.raises(ValueError, match="period > 0"):
        FailureRateLimiter(1, 0)
