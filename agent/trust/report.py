"""``agent jwt -s SOURCE --action ACTION``: the delegation chain, link by link, for people.

Each link shows its subject key id, sources, actions, ``exp`` and whether it verified (with the
refusal reason of the first link that did not); then the effective scope. The verdict itself is
the trust gate's (the CLI admits the token through it).

Invariants: nothing here raises for a hostile chain (links that do not decode are shown as
such); no key material or token text is printed, only key ids, names and times.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.core.errors import AgentError
from agent.jws.compact import split_token
from agent.jws.keys import parse_verify_key
from agent.jws.tokens import decode_token
from agent.trust.chain import CHAIN_HEADER, DELEGATION_CLAIM, MAX_LINK_BYTES, ChainError, walk_chain
from agent.trust.revocation import RevocationSet, usable_roots
from agent.trust.scope import SCOPE_CLAIM
from agent.trust.verify import trust_roots_for

if TYPE_CHECKING:
    from agent.config.schema import Config

__all__ = ["chain_report"]


def _utc(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "(none)"
    try:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return "(invalid)"


def _names(value: Any, key: str) -> str:
    items = value.get(key) if isinstance(value, dict) else None
    if not isinstance(items, list):
        return "(invalid)"
    return ",".join(str(i)[:40] for i in items[:20]) or "(empty)"


def _describe(raw: Any) -> str:
    """Subject id, sources, actions and exp of a link, decoded without verifying."""
    if not isinstance(raw, str) or len(raw) > MAX_LINK_BYTES:
        return "not a delegation JWT"
    try:
        claims = decode_token(raw, max_bytes=MAX_LINK_BYTES).claims
    except AgentError:
        return "does not decode"
    sub = claims.get("sub")
    try:
        kid = parse_verify_key(sub).kid or "(no id)" if isinstance(sub, str) else "(none)"
    except AgentError:
        kid = "(invalid key)"
    scope = claims.get(DELEGATION_CLAIM)
    return (
        f"subject {kid}, sources {_names(scope, 'sources')}, actions {_names(scope, 'actions')}, "
        f"exp {_utc(claims.get('exp'))}"
    )


def chain_report(
    token: str, config: Config, source: str, *, revoked: RevocationSet, now: float | None = None
) -> list[str]:
    """Lines describing ``token``'s ``etchaChain`` and ``etchaScope`` (empty: it has neither)."""
    current = time.time() if now is None else now
    try:
        parts = split_token(token, config.run.max_token_bytes)
        claims = decode_token(token, max_bytes=config.run.max_token_bytes).claims
    except AgentError:
        return []
    lines: list[str] = []
    value = parts.header.get(CHAIN_HEADER)
    if value is not None:
        lines += _chain_lines(value, config, source, revoked, current)
    if SCOPE_CLAIM in claims:
        lines.append(
            f"Token scope (etchaScope): sources {_names(claims[SCOPE_CLAIM], 'sources')}, "
            f"actions {_names(claims[SCOPE_CLAIM], 'actions')}"
        )
    return lines


def _chain_lines(
    value: Any, config: Config, source: str, revoked: RevocationSet, now: float
) -> list[str]:
    links = value if isinstance(value, list) else []
    lines = [f"Delegation chain ({len(links)} links, root first):"]
    roots = usable_roots(trust_roots_for(config, source), now)
    failed: ChainError | None = None
    try:
        chain = walk_chain(
            value, roots, max_depth=config.run.max_chain_depth, revoked=revoked, now=now
        )
    except ChainError as exc:
        failed, chain = exc, None
    for index, raw in enumerate(links[: max(config.run.max_chain_depth, 1) + 1]):
        if failed is None or index < failed.index:
            verdict = "verified"
        elif index == failed.index:
            verdict = f"REFUSED ({failed.reason}: {failed})"
        else:
            verdict = "not checked"
        lines.append(f"  [{index}] {_describe(raw)}: {verdict}")
    if failed is not None and failed.index >= len(links):
        lines.append(f"  chain refused ({failed.reason}: {failed})")
    if chain is not None:
        lines.append(f"Effective scope (last link): {chain.scope.describe()}")
    return lines
