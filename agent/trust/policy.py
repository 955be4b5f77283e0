"""Trust policy: rollback, replay and freeze protection, signer allowlists, key validity windows.

Every check here is a pure function (or, for replay, works on a cache passed in) over a
:class:`~agent.jws.tokens.VerifiedToken`, the config, the source's stored high-water mark and
``now``.
A refusal is a :class:`PolicyError`, a :class:`~agent.core.errors.VerifyError` whose ``reason`` is
one
of :data:`POLICY_REASONS` and which also carries the configured id of the key that matched, so
callers log and count it exactly like any other verification failure.

Guarantees (docs/security.md):

- ``rollback``: a token whose ``iat`` is older than the source's high-water mark (the ``iat`` of
  the newest token accepted for it) is refused; an equal ``iat`` is allowed; a token without
  ``iat`` is refused once a mark exists. ``sources.X.allowRollback`` turns this off.
- ``stale``: with ``sources.X.maxTokenAge`` > 0, a token whose ``iat`` is older than
  ``now - maxTokenAge`` (or that has no ``iat``) is refused.
- ``key_not_allowed``: with a non-empty ``sources.X.allowedKeys``, the configured id of the key
  that matched must be listed (a token accepted by verify commands has no key id and is refused).
- ``key_not_yet_valid`` / ``key_retired``: a verify key is used only inside its
  ``notBefore``/``notAfter`` window (absolute UTC, judged at verification time).
- ``replay`` (pushes): a push ``jti`` is accepted once until its ``exp``; ``missing_jti`` /
  ``missing_exp`` when ``run.pushRequireJti`` / ``run.pushRequireExp`` demand them.

Which of these checks applies where is decided by the table of :mod:`agent.trust.gate`, the only
caller (besides unit tests).

Invariants: no I/O, no module-level mutable state; messages never contain the token or key
material, only key ids, times and source names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from agent.core.errors import VerifyError
from agent.jws.keys import parse_verify_key

if TYPE_CHECKING:
    from agent.config.schema import Config, SourceConfig, VerifyKeyEntry
    from agent.jws.tokens import VerifiedToken

__all__ = [
    "KEY_EXPIRY_WARNING_SECONDS",
    "POLICY_REASONS",
    "ExpiringKey",
    "PolicyError",
    "ReplayMemory",
    "check_allowed_key",
    "check_push_claims",
    "check_replay",
    "check_rollback",
    "check_stale",
    "expiring_keys",
    "key_window_reason",
    "next_high_water",
    "warn_expiring_keys",
]

logger = logging.getLogger(__name__)

#: Reasons this module adds to those of :func:`agent.jws.tokens.verify_token`.
POLICY_REASONS = (
    "rollback",
    "replay",
    "stale",
    "key_not_allowed",
    "key_not_yet_valid",
    "key_retired",
    "missing_jti",
    "missing_exp",
)
#: Keys whose ``notAfter`` is closer than this are logged as a warning at start-up (7 days).
KEY_EXPIRY_WARNING_SECONDS = 7 * 86400


class PolicyError(VerifyError):
    """A token refused by the trust policy.

    Args:
        message: one line naming the source and what was expected and got.
        reason: one of :data:`POLICY_REASONS`.
        key_id: the configured id of the verify key that matched (``""`` when unknown).
    """

    def __init__(self, message: str, reason: str, *, key_id: str = "") -> None:
        super().__init__(message, reason)
        self.key_id = key_id


class ReplayMemory(Protocol):
    """What :func:`check_replay` needs: :class:`agent.daemon.state.ReplayCache` satisfies it."""

    def remember(self, jti: str, exp: float | None, *, now: float | None = None) -> bool:
        """Record ``jti``; ``False`` when it is already known and not expired."""
        ...


@dataclass(frozen=True, slots=True)
class ExpiringKey:
    """A configured verify key close to (or past) its ``notAfter``.

    Attributes:
        where: ``run.verifyKeys`` or ``sources.<name>.verifyKeys``.
        key_id: the key's configured id (``""`` when it has none).
        not_after: the end of its window (UTC).
        seconds_left: ``not_after - now`` (negative when already retired).
    """

    where: str
    key_id: str
    not_after: datetime
    seconds_left: float


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"unix time {ts:g}"


def _key_label(key_id: str) -> str:
    return repr(key_id) if key_id else "(no id)"


def key_window_reason(entry: VerifyKeyEntry, now: float) -> str | None:
    """Judge a verify key's validity window at ``now``.

    Args:
        entry: the configured key with its optional ``notBefore``/``notAfter``.
        now: Unix time.

    Returns:
        ``None`` inside the window (bounds inclusive), else ``key_not_yet_valid`` or
        ``key_retired``.
    """
    if entry.not_before is not None and now < entry.not_before.timestamp():
        return "key_not_yet_valid"
    if entry.not_after is not None and now > entry.not_after.timestamp():
        return "key_retired"
    return None


def check_allowed_key(key_id: str, source: SourceConfig | None, *, source_name: str) -> None:
    """Refuse a token whose matching key is not on ``sources.<name>.allowedKeys``.

    Args:
        key_id: the configured id of the key that matched (``""`` for verify commands).
        source: the source's config (``None``: no allowlist).
        source_name: the source name, for the message.

    Raises:
        PolicyError: ``key_not_allowed``.
    """
    if source is None or not source.allowed_keys or key_id in source.allowed_keys:
        return
    raise PolicyError(
        f"source {source_name}: expected a token signed by a key in allowedKeys "
        f"{list(source.allowed_keys)}, got key {_key_label(key_id)}",
        "key_not_allowed",
        key_id=key_id,
    )


def check_stale(
    token: VerifiedToken, source: SourceConfig | None, *, source_name: str, now: float | None = None
) -> None:
    """Refuse a token older than ``sources.<name>.maxTokenAge`` (freeze protection).

    Args:
        token: the verified token.
        source: the source's config (``None`` or ``maxTokenAge`` 0: off).
        source_name: the source name, for the message.
        now: Unix time (default: the clock).

    Raises:
        PolicyError: ``stale`` (also when the token has no ``iat``).
    """
    if source is None or not source.max_token_age:
        return
    current = _now(now)
    oldest = current - source.max_token_age
    if token.iat is None:
        raise PolicyError(
            f"source {source_name}: expected a token with iat (maxTokenAge "
            f"{source.max_token_age:g}s), got none",
            "stale",
            key_id=token.key_id,
        )
    if token.iat < oldest:
        raise PolicyError(
            f"source {source_name}: expected a token issued after {_utc(oldest)} (maxTokenAge "
            f"{source.max_token_age:g}s), got iat {_utc(token.iat)}",
            "stale",
            key_id=token.key_id,
        )


def check_rollback(
    token: VerifiedToken,
    source: SourceConfig | None,
    *,
    source_name: str,
    high_water_iat: int | None,
) -> None:
    """Refuse a token older than the newest one already accepted for the source.

    Args:
        token: the verified token.
        source: the source's config (``allowRollback`` turns the check off).
        source_name: the source name, for the message.
        high_water_iat: the stored mark (``None``: nothing accepted yet).

    Raises:
        PolicyError: ``rollback``; an equal ``iat`` passes, a missing ``iat`` fails once a mark
            exists.
    """
    if high_water_iat is None or (source is not None and source.allow_rollback):
        return
    if token.iat is None or token.iat < high_water_iat:
        got = "no iat" if token.iat is None else f"iat {_utc(token.iat)}"
        raise PolicyError(
            f"source {source_name}: expected a token issued at or after {_utc(high_water_iat)} "
            f"(the newest accepted), got {got}",
            "rollback",
            key_id=token.key_id,
        )


def next_high_water(high_water_iat: int | None, token: VerifiedToken) -> int | None:
    """The mark after accepting ``token``: the larger of the old mark and its ``iat``.

    Args:
        high_water_iat: the current mark.
        token: the accepted token.

    Returns:
        The new mark (never lower than the old one, even with ``allowRollback``).
    """
    if token.iat is None:
        return high_water_iat
    if high_water_iat is None:
        return token.iat
    return max(high_water_iat, token.iat)


def check_push_claims(token: VerifiedToken, config: Config, *, source_name: str) -> None:
    """Enforce ``run.pushRequireJti`` / ``run.pushRequireExp`` on a pushed token.

    Args:
        token: the verified pushed token.
        config: the loaded config.
        source_name: the source name, for the message.

    Raises:
        PolicyError: ``missing_jti`` or ``missing_exp``.
    """
    if config.run.push_require_jti and not token.jti:
        raise PolicyError(
            f"source {source_name}: expected a pushed token with a jti (run.pushRequireJti), "
            "got none",
            "missing_jti",
            key_id=token.key_id,
        )
    if config.run.push_require_exp and not token.exp:
        raise PolicyError(
            f"source {source_name}: expected a pushed token with an exp (run.pushRequireExp), "
            "got none",
            "missing_exp",
            key_id=token.key_id,
        )


def check_replay(
    token: VerifiedToken, memory: ReplayMemory, *, source_name: str, now: float | None = None
) -> None:
    """Remember a pushed token's ``jti``; refuse it when it was accepted before.

    Tokens without a ``jti`` are not tracked (use ``run.pushRequireJti``). Call this last, so that
    only a token every other check accepted consumes its ``jti``.

    Args:
        token: the verified pushed token.
        memory: the daemon's replay cache (entries kept until ``exp`` plus leeway).
        source_name: the source name, for the message.
        now: Unix time (default: the cache's clock).

    Raises:
        PolicyError: ``replay``.
    """
    if not token.jti:
        return
    if not memory.remember(token.jti, token.exp, now=now):
        raise PolicyError(
            f"source {source_name}: expected a push jti not seen before, got one already accepted",
            "replay",
            key_id=token.key_id,
        )


def expiring_keys(
    config: Config, *, now: float | None = None, within: float = KEY_EXPIRY_WARNING_SECONDS
) -> list[ExpiringKey]:
    """Configured verify keys whose ``notAfter`` is within ``within`` seconds (or past).

    Args:
        config: the loaded config.
        now: Unix time (default: the clock).
        within: the warning horizon (default 7 days).

    Returns:
        One entry per such key, global keys first, then sources in name order.
    """
    current = _now(now)
    lists: list[tuple[str, Sequence[VerifyKeyEntry]]] = [("run.verifyKeys", config.run.verify_keys)]
    for name in sorted(config.sources):
        lists.append((f"sources.{name}.verifyKeys", config.sources[name].verify_keys))
    found: list[ExpiringKey] = []
    for where, entries in lists:
        for entry in entries:
            if entry.not_after is None:
                continue
            left = entry.not_after.timestamp() - current
            if left <= within:
                kid = parse_verify_key(entry.key).kid
                found.append(ExpiringKey(where, kid, entry.not_after, left))
    return found


def warn_expiring_keys(config: Config) -> None:
    """Start-up: log a warning for each verify key near (or past) its ``notAfter``."""
    for key in expiring_keys(config):
        label = key.key_id or "(no id)"
        when = key.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")
        if key.seconds_left < 0:
            logger.warning("%s: key %s retired at %s (notAfter)", key.where, label, when)
        else:
            days = key.seconds_left / 86400
            logger.warning(
                "%s: key %s retires at %s (notAfter, in %.1f days)", key.where, label, when, days
            )
