"""Delegation chains: ``etchaChain`` in a pattern token's protected header.

A delegation is a JWT with ``typ`` ``etcha-delegation+jwt`` and the claims ``sub`` (the
subject's public key string), ``etchaDelegation: {sources: [...], actions: [...]}``, ``iat``,
``nbf`` and ``exp`` (all required), ``jti`` and ``iss`` (the signer's key id). ``etchaChain`` is a
list of delegations, root first:

- link 0 verifies with a trust root (``run.trustRoots`` + ``sources.X.trustRoots``, inside their
  windows), otherwise ``chain_untrusted_root``;
- link *i* > 0 verifies with link *i-1*'s subject key (``chain_bad_signature``), and link *i-1*
  must grant ``delegate`` (``chain_widens``);
- every link must be inside its ``nbf``/``exp`` (``chain_expired``), narrow its parent: sources
  and actions subsets, ``exp`` not later (``chain_widens``), and have a signer and a subject not
  revoked for its ``iat`` (``revoked``);
- at most ``run.maxChainDepth`` links (``chain_depth``); each link at most
  :data:`MAX_LINK_BYTES`, checked before any parsing.

The pattern token then verifies with the last subject key (:func:`agent.trust.verify`), and
the last link's scope applies to it.

Invariants: any hostile input (wrong types, huge, nested, cyclic) is a
:class:`~agent.core.errors.VerifyError`, never another exception. No I/O, no mutable state.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from agent.core.errors import AgentError, VerifyError, json_kind
from agent.jws.keys import VerifyKey, parse_verify_key
from agent.jws.tokens import LEEWAY_SECONDS, TYP_DELEGATION, VerifiedToken, verify_token_with
from agent.trust.policy import PolicyError
from agent.trust.revocation import RevocationSet
from agent.trust.scope import Scope, parse_scope_claim

__all__ = [
    "CHAIN_HEADER",
    "DELEGATION_CLAIM",
    "MAX_LINK_BYTES",
    "Chain",
    "ChainError",
    "Link",
    "delegation_claims",
    "walk_chain",
]

CHAIN_HEADER: Final = "etchaChain"
DELEGATION_CLAIM: Final = "etchaDelegation"
#: Longest accepted delegation link.
MAX_LINK_BYTES: Final = 8192
_TIME_CLAIMS: Final = ("iat", "nbf", "exp")


@dataclass(frozen=True, slots=True)
class Link:
    """One verified delegation.

    Attributes:
        index: its position (0: signed by a root).
        signer: the key that signed it (a root for link 0).
        subject: the delegated key.
        scope: what it grants.
        iat, nbf, exp: its times (Unix seconds).
    """

    index: int
    signer: VerifyKey
    subject: VerifyKey
    scope: Scope
    iat: float
    nbf: float
    exp: float


@dataclass(frozen=True, slots=True)
class Chain:
    """A verified chain: its links root first."""

    links: tuple[Link, ...]

    @property
    def key(self) -> VerifyKey:
        """The last subject key: the one that must sign the pattern token."""
        return self.links[-1].subject

    @property
    def scope(self) -> Scope:
        """The last link's scope (each link narrows its parent)."""
        return self.links[-1].scope

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The root's key id, then each subject's."""
        return (self.links[0].signer.kid, *(link.subject.kid for link in self.links))


class ChainError(PolicyError):
    """A chain refusal; ``links`` holds the links verified before it, ``index`` the failing one."""

    def __init__(
        self, message: str, reason: str, *, index: int, links: Sequence[Link], key_id: str = ""
    ) -> None:
        super().__init__(f"etchaChain[{index}]: {message}", reason, key_id=key_id)
        self.index = index
        self.links = tuple(links)


@dataclass(slots=True)
class _Walk:
    roots: Sequence[VerifyKey]
    revoked: RevocationSet
    now: float
    links: list[Link] = field(default_factory=list)

    def fail(self, index: int, message: str, reason: str, key_id: str = "") -> ChainError:
        # The key id logged with a chain refusal: the key named, else the last verified subject.
        if not key_id and self.links:
            key_id = self.links[-1].subject.kid
        return ChainError(message, reason, index=index, links=self.links, key_id=key_id)


def delegation_claims(
    *,
    subject: str,
    sources: Sequence[str],
    actions: Sequence[str],
    issuer: str,
    jti: str,
    now: float,
    expires_in: float,
) -> dict[str, Any]:
    """The claims of a new delegation (what ``agent delegate`` signs)."""
    return {
        DELEGATION_CLAIM: {"actions": list(actions), "sources": list(sources)},
        "exp": int(now + expires_in),
        "iat": int(now),
        "iss": issuer,
        "jti": jti,
        "nbf": int(now),
        "sub": subject,
    }


def _time(claims: Any, name: str, index: int, walk: _Walk) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise walk.fail(
            index, f"claim {name}: expected a number, got {json_kind(value)}", "scope_invalid"
        )
    return float(value)


def _subject(claims: Any, index: int, walk: _Walk) -> VerifyKey:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 2048:
        raise walk.fail(
            index, f"claim sub: expected a public key string, got {json_kind(sub)}", "scope_invalid"
        )
    try:
        return parse_verify_key(sub)
    except AgentError as exc:
        raise walk.fail(
            index, f"claim sub: expected a public key string ({exc})", "scope_invalid"
        ) from None


def _verify_link(
    raw: Any, index: int, keys: Sequence[VerifyKey], walk: _Walk
) -> tuple[VerifiedToken, VerifyKey]:
    if not isinstance(raw, str):
        raise walk.fail(
            index, f"expected a delegation JWT string, got {json_kind(raw)}", "malformed"
        )
    if len(raw) > MAX_LINK_BYTES:
        raise walk.fail(
            index, f"expected at most {MAX_LINK_BYTES} bytes, got {len(raw)}", "malformed"
        )
    try:
        return verify_token_with(
            raw, keys, max_bytes=MAX_LINK_BYTES, check_times=False, typ=TYP_DELEGATION
        )
    except VerifyError as exc:
        if exc.reason in ("no_match", "no_keys"):
            if index == 0:
                raise walk.fail(
                    index,
                    "expected a delegation signed by a trust root, got one signed by another key",
                    "chain_untrusted_root",
                ) from None
            raise walk.fail(
                index,
                "expected a delegation signed by the previous link's "
                "subject key, got another signature",
                "chain_bad_signature",
            ) from None
        raise walk.fail(index, str(exc), exc.reason) from None


def _check_link(index: int, token: VerifiedToken, signer: VerifyKey, walk: _Walk) -> Link:
    claims = token.claims
    iat, nbf, exp = (_time(claims, name, index, walk) for name in _TIME_CLAIMS)
    if exp + LEEWAY_SECONDS < walk.now:
        raise walk.fail(
            index, f"delegation expired (exp {int(exp)}, now {int(walk.now)})", "chain_expired"
        )
    if nbf > walk.now + LEEWAY_SECONDS:
        raise walk.fail(
            index,
            f"delegation not valid yet (nbf {int(nbf)}, now {int(walk.now)})",
            "chain_expired",
        )
    subject = _subject(claims, index, walk)
    try:
        scope = parse_scope_claim(claims.get(DELEGATION_CLAIM), DELEGATION_CLAIM)
    except PolicyError as exc:
        raise walk.fail(index, str(exc), exc.reason) from None
    try:
        walk.revoked.check(signer, iat, what="the delegation")
        # A delegation TO a revoked key, issued before the revocation, is void as well: the
        # key cannot sign a new pattern under it (NATS: the user JWT is revoked, not the key).
        walk.revoked.check(subject, iat, what="the delegation", verb="delegates to")
    except PolicyError as exc:
        raise walk.fail(index, str(exc), exc.reason, key_id=exc.key_id) from None
    if walk.links:
        _check_narrows(index, walk.links[-1], scope, exp, walk)
    return Link(index, signer, subject, scope, iat, nbf, exp)


def _check_narrows(index: int, parent: Link, scope: Scope, exp: float, walk: _Walk) -> None:
    if parent.scope.actions is not None and "delegate" not in parent.scope.actions:
        raise walk.fail(
            index,
            f"expected the parent link to grant delegate, got {parent.scope.describe()}",
            "chain_widens",
        )
    wider = scope.widens(parent.scope)
    if wider:
        raise walk.fail(index, f"expected a narrower delegation, got {wider}", "chain_widens")
    if exp > parent.exp:
        raise walk.fail(
            index,
            f"expected exp at or before the parent's {int(parent.exp)}, got {int(exp)}",
            "chain_widens",
        )


def walk_chain(
    value: Any,
    roots: Sequence[VerifyKey],
    *,
    max_depth: int,
    revoked: RevocationSet | None = None,
    now: float | None = None,
) -> Chain:
    """Verify ``etchaChain`` (the header value as decoded) link by link.

    Args:
        value: the header's ``etchaChain``.
        roots: the usable trust roots.
        max_depth: ``run.maxChainDepth``.
        revoked: the effective revocations.
        now: Unix time (default: the clock).

    Returns:
        The verified chain.

    Raises:
        ChainError: with the reasons of the module docstring (``malformed`` for a header value
            that is not a non-empty list of strings).
    """
    walk = _Walk(roots, revoked or RevocationSet(), time.time() if now is None else now)
    if not isinstance(value, list) or not value:
        raise walk.fail(
            0, f"expected a non-empty list of delegation JWTs, got {json_kind(value)}", "malformed"
        )
    if len(value) > max_depth:
        raise walk.fail(
            max_depth,
            f"expected at most {max_depth} links (run.maxChainDepth), got {len(value)}",
            "chain_depth",
        )
    if not roots:
        raise walk.fail(
            0,
            "expected trust roots (run.trustRoots or sources.X.trustRoots) to "
            "verify the chain, got none usable",
            "chain_untrusted_root",
        )
    keys: Sequence[VerifyKey] = roots
    for index, raw in enumerate(value):
        token, signer = _verify_link(raw, index, keys, walk)
        walk.links.append(_check_link(index, token, signer, walk))
        keys = [walk.links[-1].subject]
    return Chain(tuple(walk.links))
