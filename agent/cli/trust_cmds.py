"""Handlers of ``agent delegate`` and ``agent revoke`` (docs/security.md).

``delegate`` signs a delegation (claims: ``sub``, ``etchaDelegation``, ``iat``, ``nbf``, ``exp``,
``jti``, ``iss``; header ``typ`` ``etcha-delegation+jwt``); ``revoke`` signs a revocation list
(claims: ``etchaRevocations``, ``iat``; header ``typ`` ``etcha-revocations+jwt``). Both sign
with ``build.signingKey``/``build.signingKeyPath`` unless a key is given, print the JWT or write
it atomically with ``-o``, and never print key material.
"""

from __future__ import annotations

import argparse
import re
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path

from agent.cli.common import load_config_for
from agent.config.fields import ACTION_NAMES
from agent.core.atomicio import atomic_write
from agent.core.durations import parse_duration
from agent.core.errors import AgentError, ConfigError, UsageError
from agent.jws.keys import SigningKey, parse_signing_key, parse_verify_key
from agent.jws.tokens import TYP_DELEGATION, TYP_REVOCATIONS, decode_token, sign_token
from agent.tools.build import delegation_chain, load_signing_key
from agent.trust.chain import delegation_claims
from agent.trust.revocation import Revoked, parse_entries, revocation_claims

_DAYS = re.compile(r"^([0-9]+)d$")


def _lifetime(text: str) -> float:
    """``90d`` (days) or a Go duration such as ``12h``; must be > 0."""
    match = _DAYS.match(text.strip())
    seconds = int(match.group(1)) * 86400.0 if match else parse_duration(text, name="--expires")
    if seconds <= 0:
        raise UsageError(f"--expires: expected a lifetime > 0 such as 90d or 12h, got {text!r}")
    return seconds


def _names(text: str, what: str, allowed: tuple[str, ...] = ()) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--{what}: expected a comma-separated list, got {text!r}")
    if len(set(names)) != len(names):
        raise UsageError(f"--{what}: expected distinct names, got {text!r}")
    for name in names:
        if allowed and name not in allowed:
            raise UsageError(f"--{what}: expected names among {', '.join(allowed)}, got {name!r}")
    return names


def _signing_key(args_key: str, args: argparse.Namespace) -> SigningKey:
    if not args_key:
        return load_signing_key(load_config_for(args))
    text = args_key
    if ":" not in text or Path(text).is_file():
        try:
            text = Path(args_key).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--key: cannot read {args_key}: {exc.strerror}") from exc
    return parse_signing_key(text)


def _emit(token: str, output: str, what: str) -> None:
    if not output:
        print(token)
        return
    try:
        atomic_write(Path(output), token + "\n", mode=0o644)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write {output}: {exc.strerror}") from exc
    print(f"Wrote {output}")


def cmd_delegate(args: argparse.Namespace) -> int:
    """``agent delegate --subject KEY --sources a,b --actions push,check [--delegate] --expires
    90d [--key K] [-o FILE]``.

    Raises:
        UsageError: a bad flag value.
        KeyFormatError: the subject or signing key does not parse.
        BuildError: no signing key configured.
    """
    subject = parse_verify_key(args.subject)
    sources = _names(args.sources, "sources")
    actions = _names(args.actions, "actions", ACTION_NAMES)
    if args.delegate and "delegate" not in actions:
        actions.append("delegate")
    key = _signing_key(args.key, args)
    now = time.time()
    expires_in = _parent_limit(args, key, sources, actions, now + _lifetime(args.expires)) - now
    claims = delegation_claims(
        subject=str(subject),
        sources=sources,
        actions=actions,
        issuer=key.kid,
        jti=secrets.token_urlsafe(16),
        now=now,
        expires_in=expires_in,
    )
    _emit(sign_token(claims, key, typ=TYP_DELEGATION), args.output, "delegate")
    return 0


def _parent_limit(
    args: argparse.Namespace, key: SigningKey, sources: list[str], actions: list[str], exp: float
) -> float:
    """With ``build.delegationChain`` ending in a link to the signing key, refuse a link that
    would widen it and clamp ``exp`` to its ``exp`` (a later one would be ``chain_widens``)."""
    config = load_config_for(args)
    if not config.build.delegation_chain:
        return exp
    # A configured chain that cannot be read is an error (BuildError), never silently skipped.
    claims = decode_token(delegation_chain(config)[-1]).claims
    own = key.public()
    if claims.get("sub") is None or str(claims.get("sub")).split(":")[1:2] != [own.material]:
        return exp
    scope = claims.get("etchaDelegation") or {}
    granted = set(scope.get("actions") or ()) if isinstance(scope, dict) else set()
    allowed = set(scope.get("sources") or ()) if isinstance(scope, dict) else set()
    if "delegate" not in granted or not set(actions) <= granted:
        raise UsageError(
            f"delegate: the parent link grants actions {sorted(granted)}; "
            f"expected delegate and a subset, got {actions}"
        )
    if "*" not in allowed and not set(sources) <= allowed:
        raise UsageError(
            f"delegate: the parent link grants sources {sorted(allowed)}, got {sources}"
        )
    parent_exp = claims.get("exp")
    if isinstance(parent_exp, int | float) and parent_exp < exp:
        print(
            f"Note: --expires clamped to the parent link's exp ({int(parent_exp)})", file=sys.stderr
        )
        return float(parent_exp)
    return exp


def _before(text: str) -> float:
    if text.strip().lower() == "now":
        return float(int(time.time()) + 1)  # tokens issued this second are revoked too
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise UsageError(f"--before: expected now or an RFC 3339 UTC time, got {text!r}")
    return parsed.timestamp()


def _merged(path: str) -> list[Revoked]:
    if not path:
        return []
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"--merge: cannot read {path}: {exc.strerror}") from exc
    decoded = decode_token(text)
    if decoded.header.get("typ") != TYP_REVOCATIONS:
        raise UsageError(f"--merge: expected a revocation list ({TYP_REVOCATIONS}) in {path}")
    try:
        return list(parse_entries(decoded.claims.get("etchaRevocations")))
    except AgentError as exc:
        raise UsageError(f"--merge: {path}: {exc}") from exc


def cmd_revoke(args: argparse.Namespace) -> int:
    """``agent revoke --key KID --before now|TIME [--merge existing.jwt] [-o FILE]``.

    Raises:
        UsageError: a bad flag value or a --merge file that is not a revocation list.
        BuildError: no signing key configured.
    """
    before = _before(args.before)
    kept = _merged(args.merge)
    before = max([before, *(e.before for e in kept if e.key == args.revoked)])
    entries = [e for e in kept if e.key != args.revoked]
    entries.append(Revoked(args.revoked, before))
    key = _signing_key(args.signing_key, args)
    claims = revocation_claims(entries, now=time.time())
    _emit(sign_token(claims, key, typ=TYP_REVOCATIONS), args.output, "revoke")
    return 0


__all__ = ["cmd_delegate", "cmd_revoke"]
