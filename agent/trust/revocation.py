"""Revocation by key and time (NATS's model): tokens a key signed before a time are refused.

Entries come from ``run.revocations`` and from revocation lists (``run.revocationPaths``): JWTs
with ``typ`` ``etcha-revocations+jwt``, signed by a ``run.trustRoots`` key, with the claims
``iat`` (required) and ``etchaRevocations: [{"key": "<key id or public key>", "before":
"<RFC 3339 UTC>"}]``. ``agent revoke`` writes them (:func:`revocation_claims`).

A key matches an entry when the entry names its key id, or is a public key string with the same
algorithm and material. A token (pattern, chain link or list) signed by a matching key with no
``iat``, or an ``iat`` before ``before``, is refused with reason ``revoked``.

Invariants: no I/O and no mutable state here (the daemon keeps the pulled lists and hands them
to the gate); list parsing is strict and bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from agent.core.errors import AgentError, VerifyError, json_kind
from agent.jws.keys import VerifyKey, parse_verify_key
from agent.jws.tokens import TYP_REVOCATIONS, verify_token_with
from agent.trust.policy import PolicyError, key_window_reason

if TYPE_CHECKING:
    from agent.config.schema import Config, VerifyKeyEntry

__all__ = [
    "MAX_REVOCATIONS",
    "RevocationList",
    "RevocationSet",
    "Revoked",
    "parse_revocation_list",
    "revocation_claims",
    "usable_roots",
]

#: Most entries in one revocation list.
MAX_REVOCATIONS: Final = 10000


@dataclass(frozen=True, slots=True)
class Revoked:
    """One revocation: ``key`` (id or public key string) is revoked for tokens issued before
    ``before`` (Unix seconds)."""

    key: str
    before: float

    def to_claim(self) -> dict[str, str]:
        """The ``etchaRevocations`` item."""
        when = datetime.fromtimestamp(self.before, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"key": self.key, "before": when}


def _material(key: str) -> tuple[str, str] | None:
    if ":" not in key:
        return None
    try:
        parsed = parse_verify_key(key)
    except AgentError:
        return None
    return parsed.algorithm, parsed.material


class RevocationSet:
    """The effective revocations (config and lists), matched by key id or key material."""

    __slots__ = ("_by_id", "_by_material", "entries")

    def __init__(self, entries: Iterable[Revoked] = ()) -> None:
        self.entries: tuple[Revoked, ...] = tuple(entries)
        by_id: dict[str, float] = {}
        by_material: dict[tuple[str, str], float] = {}
        for entry in self.entries:
            material = _material(entry.key)
            if material is None:
                by_id[entry.key] = max(by_id.get(entry.key, 0.0), entry.before)
            else:
                by_material[material] = max(by_material.get(material, 0.0), entry.before)
        self._by_id = by_id
        self._by_material = by_material

    @classmethod
    def from_config(cls, config: Config, pulled: Iterable[Revoked] = ()) -> RevocationSet:
        """``run.revocations`` plus ``pulled``."""
        own = (Revoked(r.key, r.before.timestamp()) for r in config.run.revocations)
        return cls([*own, *pulled])

    def before(self, key: VerifyKey) -> float | None:
        """The latest revocation time of ``key`` (``None``: not revoked)."""
        times = [self._by_material.get((key.algorithm, key.material))]
        if key.kid:
            times.append(self._by_id.get(key.kid))
        found = [t for t in times if t is not None]
        return max(found) if found else None

    def check(
        self, key: VerifyKey, iat: float | None, *, what: str, verb: str = "is signed by"
    ) -> None:
        """Refuse a token ``key`` signed when the key is revoked for its ``iat``.

        Raises:
            PolicyError: ``revoked``.
        """
        before = self.before(key)
        if before is None or (iat is not None and iat >= before):
            return
        label = repr(key.kid) if key.kid else "(no id)"
        got = "no iat" if iat is None else f"iat {_utc(iat)}"
        raise PolicyError(
            f"{what} {verb} key {label}, revoked for tokens issued before {_utc(before)}, "
            f"got {got}",
            "revoked",
            key_id=key.kid,
        )


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"unix time {ts:g}"


def usable_roots(entries: Sequence[VerifyKeyEntry], now: float) -> list[VerifyKey]:
    """The trust roots inside their ``notBefore``/``notAfter`` window at ``now``."""
    return [parse_verify_key(e.key) for e in entries if key_window_reason(e, now) is None]


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A verified revocation list: its ``iat`` and entries."""

    iat: int
    entries: tuple[Revoked, ...]


def _parse_before(value: Any, index: int) -> float:
    if not isinstance(value, str):
        raise _bad(
            f"etchaRevocations[{index}].before: expected an RFC 3339 string, got {json_kind(value)}"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"etchaRevocations[{index}].before: expected an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise _bad(f"etchaRevocations[{index}].before: expected a time with a zone (Z)")
    return parsed.timestamp()


def _bad(message: str) -> VerifyError:
    return VerifyError(f"revocation list: {message}", "malformed")


def parse_entries(value: Any) -> tuple[Revoked, ...]:
    """The ``etchaRevocations`` claim, strictly.

    Raises:
        VerifyError: ``malformed`` naming the item.
    """
    if not isinstance(value, list):
        raise _bad(f"etchaRevocations: expected a list, got {json_kind(value)}")
    if len(value) > MAX_REVOCATIONS:
        raise _bad(f"etchaRevocations: expected at most {MAX_REVOCATIONS}, got {len(value)}")
    out: list[Revoked] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) != {"key", "before"}:
            raise _bad(f"etchaRevocations[{index}]: expected an object {{key, before}}")
        key = item["key"]
        if not isinstance(key, str) or not key or len(key) > 4096:
            raise _bad(f"etchaRevocations[{index}].key: expected a key id or public key string")
        out.append(Revoked(key, _parse_before(item["before"], index)))
    return tuple(out)


def parse_revocation_list(
    raw: str, config: Config, *, revoked: RevocationSet, now: float | None = None
) -> RevocationList:
    """Verify a revocation list with ``run.trustRoots`` and parse it.

    Raises:
        VerifyError: ``wrong_type``, ``no_keys`` (no trust roots), ``no_match``, ``expired``,
            ``malformed``; ``revoked`` (its signer is revoked for its ``iat``).
    """
    current = time.time() if now is None else now
    roots = usable_roots(config.run.trust_roots, current)
    verified, key = verify_token_with(
        raw, roots, now=current, max_bytes=config.run.max_token_bytes, typ=TYP_REVOCATIONS
    )
    if verified.iat is None:
        raise _bad("expected an iat claim, got none")
    revoked.check(key, verified.iat, what="revocation list")
    return RevocationList(verified.iat, parse_entries(verified.claims.get("etchaRevocations")))


def revocation_claims(entries: Sequence[Revoked], *, now: float) -> dict[str, Any]:
    """The claims of a new revocation list (``iat`` ``now``)."""
    return {"etchaRevocations": [e.to_claim() for e in entries], "iat": int(now)}
