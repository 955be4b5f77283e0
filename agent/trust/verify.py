"""The verify step of the trust gate (:mod:`agent.trust.gate`): keys or verify commands.

Only :class:`agent.trust.gate.TrustGate` calls :func:`verify_for_source` for a source; the CLI and
the daemon go through the gate.

A token for a source is verified either by verify commands or by verify keys (SPEC 6):

- ``sources.<name>.verifyCommands`` (or, when the source has none, ``run.verifyCommands``) run with
  ``ETCHA_JWT`` set to the token; the trimmed output of the first command that fires the ``jwt``
  event is the accepted token. With verify commands configured, verify keys are not used.
- Otherwise the keys are ``run.verifyKeys`` followed by ``sources.<name>.verifyKeys``.

Either way the result is a :class:`~agent.jws.tokens.VerifiedToken`, the only type the renderer
takes.

Trust policy applied here (see :mod:`agent.trust.policy` and docs/security.md):

- A verify key is used only inside its ``notBefore``/``notAfter`` window, judged at ``now``.
- With a non-empty ``sources.<name>.allowedKeys``, only listed keys (by configured id) are used.
- When no usable key verified the token but a held-back key would have, the refusal names why:
  ``key_not_allowed``, ``key_not_yet_valid`` or ``key_retired`` (a :class:`~agent.trust.policy.
  PolicyError` carrying the key id); otherwise the usual ``no_match``/``no_keys``.
- A token accepted by verify commands has no key id, so a non-empty allowlist refuses it.
- Delegation (:mod:`agent.trust.chain`): when no verify key matched and the header has
  ``etchaChain``, the chain is walked from the trust roots and the token must verify with the
  last subject key. Revocations (:mod:`agent.trust.revocation`) apply to every signer.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.errors import AgentError, ConfigError, VerifyError
from agent.jws.compact import split_token
from agent.jws.keys import VerifyKey, parse_verify_key
from agent.jws.tokens import VerifiedToken, accept_command_token, verify_token, verify_token_with
from agent.trust.chain import CHAIN_HEADER, Chain, walk_chain
from agent.trust.policy import PolicyError, check_allowed_key, key_window_reason
from agent.trust.revocation import RevocationSet, usable_roots
from agent.trust.scope import Scope, scope_of_entry

if TYPE_CHECKING:
    from agent.config.schema import Config, VerifyKeyEntry

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Verification:
    """What the verify step found.

    Attributes:
        token: the verified token.
        signer: the key that verified it (``None``: verify commands).
        key_scope: the matching verify key's own scope (``None``: unlimited or no key).
        chain: the delegation chain it verified through (``None``: a verify key matched).
    """

    token: VerifiedToken
    signer: VerifyKey | None = None
    key_scope: Scope | None = None
    chain: Chain | None = None


def trust_roots_for(config: Config, source: str) -> list[VerifyKeyEntry]:
    """``run.trustRoots`` then ``sources.<source>.trustRoots``."""
    entries = list(config.run.trust_roots)
    src = config.sources.get(source)
    if src is not None:
        entries.extend(src.trust_roots)
    return entries


def verify_keys_for(config: Config, source: str) -> list[VerifyKey]:
    """``run.verifyKeys`` then ``sources.<source>.verifyKeys``, parsed."""
    entries = list(config.run.verify_keys)
    src = config.sources.get(source)
    if src is not None:
        entries.extend(src.verify_keys)
    return [parse_verify_key(entry.key) for entry in entries]


def has_verifier(config: Config, source: str) -> bool:
    """Whether a token for ``source`` could ever verify (keys or commands configured)."""
    src = config.sources.get(source)
    if config.run.verify_commands or (src is not None and src.verify_commands):
        return True
    if config.run.trust_roots or (src is not None and src.trust_roots):
        return True
    return bool(config.run.verify_keys) or bool(src is not None and src.verify_keys)


def check_verifiers(config: Config) -> None:
    """Refuse a config where a source accepts tokens but nothing could verify them.

    Raises:
        ConfigError: naming the first such source.
    """
    for name in sorted(config.sources):
        src = config.sources[name]
        if not (src.allow_push or src.pull_paths):
            continue
        if not has_verifier(config, name):
            how = "allowPush" if src.allow_push else "pullPaths"
            raise ConfigError(
                f"sources.{name}: accepts tokens ({how}) so it needs run.verifyKeys, "
                f"sources.{name}.verifyKeys or verifyCommands, got none"
            )


async def verify_for_source(
    token: str,
    *,
    config: Config,
    source: str,
    now: float | None = None,
    check_times: bool = True,
    max_bytes: int | None = None,
) -> VerifiedToken:
    """:func:`verify_for_admission`, returning only the verified token."""
    found = await verify_for_admission(
        token, config=config, source=source, now=now, check_times=check_times, max_bytes=max_bytes
    )
    return found.token


def runs_verify_commands(config: Config, source: str) -> bool:
    """Whether ``source`` is verified by ``verifyCommands`` (which spawn processes): only then
    does an admission wait on anything, so the CLI admits without an event loop otherwise."""
    src = config.sources.get(source)
    return bool((src.verify_commands if src is not None else ()) or config.run.verify_commands)


async def verify_for_admission(
    token: str,
    *,
    config: Config,
    source: str,
    now: float | None = None,
    check_times: bool = True,
    max_bytes: int | None = None,
    revoked: RevocationSet | None = None,
) -> Verification:
    """Verify ``token`` for ``source`` with its verify commands, verify keys or a chain.

    Args:
        token: the raw JWT.
        config: the loaded config.
        source: the source name (``""`` for CLI commands).
        now: the current time (for tests); key windows are always judged at it.
        check_times: check the token's ``exp``/``nbf`` (off only to re-admit a stored token:
            they guard delivery, not storage, SPEC 31; everything else is checked either way).
        max_bytes: longest accepted token (default ``run.maxTokenBytes``), checked first.
        revoked: the effective revocations (default: ``run.revocations``).

    Raises:
        VerifyError: with ``reason`` no_keys, no_match, expired, not_yet_valid, malformed or
            wrong_type; or a :class:`~agent.trust.policy.PolicyError` with key_not_allowed,
            key_not_yet_valid, key_retired, revoked or a chain reason.
    """
    if max_bytes is None:
        max_bytes = config.run.max_token_bytes
    if len(token) > max_bytes:
        raise VerifyError(
            f"token is {len(token)} bytes, more than the {max_bytes} allowed", "malformed"
        )
    src = config.sources.get(source)
    if runs_verify_commands(config, source):
        verified = await _verify_with_commands(
            token,
            config=config,
            source=source,
            now=now,
            max_bytes=max_bytes,
            check_times=check_times,
        )
        check_allowed_key(verified.key_id, src, source_name=source)
        return Verification(verified)
    rev = revoked if revoked is not None else RevocationSet.from_config(config)
    found = _verify_with_keys(
        token,
        config=config,
        source=source,
        now=now,
        max_bytes=max_bytes,
        check_times=check_times,
        revoked=rev,
    )
    if found.signer is not None:
        what = "the pattern token" if found.chain is None else "the pattern token (delegated)"
        rev.check(found.signer, found.token.iat, what=what)
    return found


def _verify_with_keys(
    token: str,
    *,
    config: Config,
    source: str,
    now: float | None,
    max_bytes: int,
    check_times: bool = True,
    revoked: RevocationSet,
) -> Verification:
    """Verify with the usable keys; explain a miss by a held-back key (window, allowlist)."""
    current = time.time() if now is None else now
    src = config.sources.get(source)
    allowed = src.allowed_keys if src is not None else ()
    usable, scopes, held = _partition_keys(config, source, allowed, current)
    try:
        verified, signer = verify_token_with(
            token, usable, now=current, max_bytes=max_bytes, check_times=check_times
        )
        return Verification(verified, signer, scopes.get(id(signer)))
    except VerifyError as exc:
        if exc.reason not in ("no_match", "no_keys"):
            raise
        miss = exc
    header = split_token(token, max_bytes).header
    if CHAIN_HEADER in header:
        return _verify_chained(
            token,
            header[CHAIN_HEADER],
            config=config,
            source=source,
            now=current,
            max_bytes=max_bytes,
            check_times=check_times,
            revoked=revoked,
        )
    if not held:
        raise miss
    _explain_held_back(
        token, held, source=source, allowed=allowed, now=current, max_bytes=max_bytes, miss=miss
    )
    if miss.reason == "no_keys":
        raise VerifyError(
            f"no verify key matched the token: all {len(held)} configured keys are held back "
            "(window or allowedKeys) and none of them signed it",
            "no_match",
        ) from miss
    raise miss


def _partition_keys(
    config: Config, source: str, allowed: tuple[str, ...], now: float
) -> tuple[list[VerifyKey], dict[int, Scope | None], list[tuple[VerifyKey, str]]]:
    """The usable verify keys (with their scopes, by ``id``) and the held-back ones."""
    src = config.sources.get(source)
    entries = list(config.run.verify_keys) + list(src.verify_keys if src is not None else ())
    usable: list[VerifyKey] = []
    scopes: dict[int, Scope | None] = {}
    held: list[tuple[VerifyKey, str]] = []
    for entry in entries:
        key = parse_verify_key(entry.key)
        if allowed and key.kid not in allowed:
            held.append((key, "key_not_allowed"))
            continue
        reason = key_window_reason(entry, now)
        if reason is not None:
            held.append((key, reason))
        else:
            usable.append(key)
            scopes[id(key)] = scope_of_entry(entry)
    return usable, scopes, held


def _verify_chained(
    token: str,
    value: object,
    *,
    config: Config,
    source: str,
    now: float,
    max_bytes: int,
    check_times: bool,
    revoked: RevocationSet,
) -> Verification:
    """Walk ``etchaChain``, then verify the token with the last subject key."""
    roots = usable_roots(trust_roots_for(config, source), now)
    chain = walk_chain(value, roots, max_depth=config.run.max_chain_depth, revoked=revoked, now=now)
    try:
        verified, signer = verify_token_with(
            token, [chain.key], now=now, max_bytes=max_bytes, check_times=check_times
        )
    except VerifyError as exc:
        if exc.reason != "no_match":
            raise
        label = repr(chain.key.kid) if chain.key.kid else "(no id)"
        raise PolicyError(
            f"source {source or '(none)'}: expected the pattern token signed by the chain's "
            f"last subject key {label}, got another signature",
            "chain_bad_signature",
            key_id=chain.key.kid,
        ) from None
    check_allowed_key(verified.key_id, config.sources.get(source), source_name=source)
    return Verification(verified, signer, None, chain)


def _explain_held_back(
    token: str,
    held: list[tuple[VerifyKey, str]],
    *,
    source: str,
    allowed: tuple[str, ...],
    now: float,
    max_bytes: int,
    miss: VerifyError,
) -> None:
    """Raise the PolicyError of the first held-back key that signed ``token`` (if any)."""
    for key, reason in held:
        try:
            verify_token(token, [key], now=now, max_bytes=max_bytes)
        except VerifyError as exc:
            if exc.reason == "malformed":
                raise
            if exc.reason not in ("expired", "not_yet_valid"):
                continue  # this key did not sign it either
        what = {
            "key_not_allowed": f"not in sources.{source}.allowedKeys {list(allowed)}",
            "key_not_yet_valid": "not valid yet (notBefore)",
            "key_retired": "retired (notAfter)",
        }[reason]
        label = repr(key.kid) if key.kid else "(no id)"
        raise PolicyError(
            f"source {source or '(none)'}: expected a token signed by a usable verify key, "
            f"got one signed by key {label}, which is {what}",
            reason,
            key_id=key.kid,
        ) from miss


async def _verify_with_commands(
    token: str,
    *,
    config: Config,
    source: str,
    now: float | None,
    max_bytes: int,
    check_times: bool = True,
) -> VerifiedToken:
    src = config.sources.get(source)
    # Commands and execs were parsed and validated when the config loaded.
    cmds = (src.verify_commands if src is not None else ()) or config.run.verify_commands
    exec_ = config.exec.override(
        config.run.verify_exec, src.verify_exec if src is not None else None
    )
    parent = f"{source} > verifyCommands" if source else "verifyCommands"
    from agent.run.engine import Mode, run_commands  # lazy: asyncio, only for verifyCommands

    try:
        outcome = await run_commands(
            cmds, exec=exec_, mode=Mode.CHANGE, env={"ETCHA_JWT": token}, parent_id=parent
        )
    except AgentError as exc:
        raise VerifyError(f"verifyCommands failed: {exc}", "no_match") from exc
    if outcome.error is not None:
        raise VerifyError(f"verifyCommands failed: {outcome.error}", "no_match")
    for name, output in outcome.events():
        if name == "jwt" and output.change_out.strip():
            return accept_command_token(
                output.change_out.strip(), now=now, max_bytes=max_bytes, check_times=check_times
            )
    raise VerifyError(
        "verifyCommands did not accept the token: no command fired etcha:jwt with output",
        "no_match",
    )


def signature_precheck(config: Config, source: str, raw: str) -> bool:
    """A cheap signature check that admits nothing (the rate limiter's exception for pushes).

    Only a source that accepts pushes and is verified by keys qualifies: the signature must
    verify with ``run.verifyKeys`` + ``sources.<source>.verifyKeys``, or through its
    ``etchaChain`` from the trust roots (and ``exp``/``nbf`` hold).
    A source verified by ``verifyCommands`` never qualifies, so no process is spawned. The token
    still goes through :meth:`TrustGate.admit` afterwards.

    Returns:
        Whether the push may be handled.
    """
    src = config.sources.get(source)
    if src is None or not src.allow_push:
        return False
    if src.verify_commands or config.run.verify_commands:
        return False
    try:
        keys = verify_keys_for(config, source)
        if keys:
            try:
                verify_token(raw, keys)
                return True
            except VerifyError:
                pass
        header = split_token(raw, config.run.max_token_bytes).header
        if CHAIN_HEADER not in header:
            return False
        now = time.time()
        _verify_chained(
            raw,
            header[CHAIN_HEADER],
            config=config,
            source=source,
            now=now,
            max_bytes=config.run.max_token_bytes,
            check_times=True,
            revoked=RevocationSet.from_config(config),
        )
    except AgentError:
        return False
    return True
