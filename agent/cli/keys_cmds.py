"""Handlers for ``generate-keys``, ``jwt`` and ``compare``.

Invariants:

- These handlers never import aiohttp or apscheduler: tokens are read with
  :func:`agent.cli.common.read_token_arg` (urllib) and verified through
  :func:`agent.trust.verify.verify_for_source` with source ``""`` (run.verifyKeys, or verifyCommands
  when configured), like Etcha's CLI.
- ``jwt`` prints what it could decode to stdout even when verification fails, then fails with one
  error line (the CLI edge prints ``ERROR: <message>``) and exit code 1.
- ``compare`` compares only verified tokens (reference §4.5).
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.jws.tokens import DecodedToken, VerifiedToken


def cmd_generate_keys(args: argparse.Namespace) -> int:
    """``agent generate-keys [name] [-a algorithm]``: print a new key pair as JSON.

    Args:
        args: ``name`` (key id, optional) and ``algorithm``.

    Returns:
        0.

    Raises:
        KeyFormatError: unknown algorithm or an unusable id.
    """
    from agent.jws.keys import generate_keys

    private, public = generate_keys(getattr(args, "algorithm", None) or "ed25519", args.name)
    print(json.dumps({"privateKey": private, "publicKey": public}, indent=2))
    return 0


def _verify(token: str, config: Config, source: str = "") -> VerifiedToken:
    """Verify ``token`` through the one verify entry point for ``source`` (``""`` like Etcha).

    The trust policy that needs no daemon state (allowlist, key windows, maxTokenAge) applies
    too, so `agent jwt -s web` refuses what the daemon's ``web`` source would refuse.

    Raises:
        VerifyError: the token did not verify, or the policy refused it.
    """
    import asyncio

    from agent.trust.policy import check_offline
    from agent.trust.verify import verify_for_source

    verified = asyncio.run(verify_for_source(token, config=config, source=source))
    check_offline(verified, config=config, source=source)
    return verified


def _display_claims(decoded: DecodedToken) -> dict[str, Any]:
    """Every decoded claim; ``etchaRunVars`` falls back to an old token's ``etchaRunEnv``."""
    claims = dict(decoded.claims)
    if claims.get("etchaRunVars") is None and claims.get("etchaRunEnv") is not None:
        claims["etchaRunVars"] = claims["etchaRunEnv"]
    return claims


def cmd_jwt(args: argparse.Namespace) -> int:
    """``agent jwt <path|url>``: print the decoded claims; fail if the token does not verify.

    Args:
        args: ``path`` (a file path or an http(s) URL) and the global config flags.

    Returns:
        0 when the token verified.

    Raises:
        SourceError: the token could not be read.
        VerifyError: the token is malformed (nothing printed) or did not verify (the decoded
            claims are printed first): no verify keys, no key matched, expired, not yet valid.
        KeyFormatError: a verify key does not parse (the decoded claims are printed first).
        ConfigError: the config could not be loaded.
    """
    from agent.cli.common import load_config_for, read_token_arg
    from agent.core.errors import AgentError, ConfigError, VerifyError
    from agent.core.gojson import dumps_indent
    from agent.jws.tokens import decode_token

    config = load_config_for(args)
    token = read_token_arg(args.path, config=config)
    source = getattr(args, "source", "") or ""
    if source and source not in config.sources:
        known = ", ".join(sorted(config.sources)) or "none"
        raise ConfigError(f'unknown source "{source}" (configured sources: {known})')
    decoded = decode_token(token)
    error: AgentError | None = None
    try:
        _verify(token, config, source)
    except VerifyError as exc:
        error = VerifyError(f"{exc} (reason {exc.reason})", exc.reason)
    except AgentError as exc:  # a verify key that does not parse
        error = exc
    print(dumps_indent(_display_claims(decoded)))
    if error is not None:
        raise error
    return 0


def _diff(old: str, new: str, label: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"old {label}", f"new {label}", lineterm=""
    )
    return "\n".join(lines)


def _pattern_text(token: VerifiedToken) -> str:
    from agent.core.gojson import dumps_indent

    if not token.pattern_entrypoint and token.pattern_files is None:
        return "null"
    files = None if token.pattern_files is None else dict(token.pattern_files)
    return dumps_indent({"entrypoint": token.pattern_entrypoint, "files": files})


def compare_tokens(
    new: VerifiedToken, old: VerifiedToken, *, ignore_version: bool
) -> tuple[str, str] | None:
    """Etcha's ``Equal``: build manifest, then version (unless ignored), then pattern.

    Args:
        new: the new token.
        old: the old token.
        ignore_version: skip the ``etchaVersion`` comparison.

    Returns:
        ``None`` when equal, else ``(reason, unified diff)``.
    """
    if new.build_manifest != old.build_manifest:
        return "etchaBuildManifest differs", _diff(
            old.build_manifest, new.build_manifest, "etchaManifest"
        )
    if not ignore_version and new.version != old.version:
        return "etchaVersion differs", _diff(old.version, new.version, "etchaVersion")
    old_pattern, new_pattern = _pattern_text(old), _pattern_text(new)
    if old_pattern != new_pattern:
        return "etchaPattern differs", _diff(old_pattern, new_pattern, "etchaPattern")
    return None


def _read_verified(where: str, which: str, config: Config) -> VerifiedToken:
    from agent.cli.common import read_token_arg
    from agent.core.errors import VerifyError
    from agent.net.fetch import is_http, safe_url

    token = read_token_arg(where, config=config)
    try:
        return _verify(token, config)
    except VerifyError as exc:
        shown = safe_url(where) if is_http(where) else where
        raise VerifyError(f"{which} JWT {shown}: {exc}", exc.reason) from exc


def cmd_compare(args: argparse.Namespace) -> int:
    """``agent compare [-i] <new> <old>``: exit 0 when the tokens match, else diff and fail.

    Args:
        args: ``new``, ``old`` (paths or URLs), ``ignore_version``.

    Returns:
        0 when the tokens are equal.

    Raises:
        SourceError: a token could not be read.
        VerifyError: a token did not verify.
        TokenError: the tokens do not match (the diff is printed to stdout first).
    """
    from agent.cli.common import load_config_for
    from agent.core.errors import TokenError

    config = load_config_for(args)
    new = _read_verified(args.new, "new", config)
    old = _read_verified(args.old, "old", config)
    mismatch = compare_tokens(new, old, ignore_version=bool(args.ignore_version))
    if mismatch is None:
        return 0
    reason, diff = mismatch
    if diff:
        print(diff)
    raise TokenError(f"JWTs do not match: {reason}")


__all__: Sequence[str] = ("cmd_compare", "cmd_generate_keys", "cmd_jwt", "compare_tokens")
