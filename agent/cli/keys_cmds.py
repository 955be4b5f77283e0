"""Handlers for ``generate-keys``, ``jwt`` and ``compare``.

Invariants:

- These handlers never import aiohttp or apscheduler: tokens are read with
  :func:`agent.cli.common.read_token_arg` (urllib) and admitted by the trust gate
  (:class:`agent.trust.gate.TrustGate`, context ``offline``) for the ``-s`` source, or for none
  (``run.verifyKeys``, or verifyCommands when configured) like Etcha's CLI. ``render -s`` goes
  through the same gate, so it refuses exactly what ``jwt -s`` refuses.
- ``jwt`` prints what it could decode to stdout even when verification fails, then fails with one
  error line (the CLI edge prints ``ERROR: <message>``) and exit code 1.
- ``compare`` compares only verified tokens (reference §4.5).
"""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.admit import admit_offline, check_source, with_kept_revocations
from agent.cli.common import load_config_for, read_token_arg
from agent.core.atomicio import atomic_write
from agent.core.errors import AgentError, ConfigError, TokenError, UsageError, VerifyError
from agent.core.gojson import dumps_indent
from agent.jws.compare import token_difference
from agent.jws.keys import generate_keys
from agent.jws.tokens import decode_token
from agent.net.urls import is_http, safe_url
from agent.trust.gate import Action, TrustGate
from agent.trust.report import chain_report

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.jws.tokens import DecodedToken, VerifiedToken


def cmd_generate_keys(args: argparse.Namespace) -> int:
    """``agent generate-keys [name] [-a algorithm] [--private-file P --public-file Q [--force]]``.

    Without the file flags, print the new key pair as JSON. With them, write the private key
    (mode 0600) and the public key (mode 0644), each atomically, and print where they went.
    Nothing is written when either file exists and ``--force`` is not given.

    Args:
        args: ``name`` (key id, optional), ``algorithm``, ``private_file``, ``public_file`` and
            ``force``.

    Returns:
        0.

    Raises:
        KeyFormatError: unknown algorithm or an unusable id.
        UsageError: only one of the file flags, both naming the same file, or a file exists.
        ConfigError: a key file could not be written.
    """
    private_file = getattr(args, "private_file", "") or ""
    public_file = getattr(args, "public_file", "") or ""
    if bool(private_file) != bool(public_file):
        raise UsageError("generate-keys: --private-file and --public-file go together")
    if private_file and Path(private_file).resolve() == Path(public_file).resolve():
        raise UsageError(f"generate-keys: --private-file and --public-file are both {private_file}")
    private, public = generate_keys(getattr(args, "algorithm", None) or "ed25519", args.name)
    if not private_file:
        print(json.dumps({"privateKey": private, "publicKey": public}, indent=2))
        return 0
    targets = ((Path(private_file), private, 0o600), (Path(public_file), public, 0o644))
    if not getattr(args, "force", False):
        for path, _, _ in targets:
            if path.exists() or path.is_symlink():
                raise UsageError(f"generate-keys: {path} exists; use --force to overwrite it")
    for path, text, mode in targets:
        try:
            atomic_write(path, text, mode=mode)  # no newline: importstr gives the key
        except OSError as exc:
            raise ConfigError(f"generate-keys: cannot write {path}: {exc.strerror}") from exc
    print(
        f"Wrote {private_file} (private key, mode 0600) and {public_file} (public key, mode 0644)"
    )
    return 0


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
    config = load_config_for(args)
    token = read_token_arg(args.path, config=config)
    source = getattr(args, "source", "") or ""
    check_source(config, source)
    named = getattr(args, "action", "") or ""
    action = Action(named) if named else (Action.PUSH if source else None)
    decoded = decode_token(token)
    error: AgentError | None = None
    try:
        admit_offline(token, config, source, action)
    except VerifyError as exc:
        error = VerifyError(f"{exc} (reason {exc.reason})", exc.reason)
    except AgentError as exc:  # a verify key that does not parse
        error = exc
    print(dumps_indent(_display_claims(decoded)))
    _print_verdict(token, config, source, action, error, always=bool(named))
    if error is not None:
        raise error
    return 0


def _print_verdict(
    token: str,
    config: Config,
    source: str,
    action: Action | None,
    error: AgentError | None,
    *,
    always: bool,
) -> None:
    """The chain link by link, then whether ``source`` admits the token (printed with
    ``--action``, or for a token with a chain or ``etchaScope``)."""
    gate = with_kept_revocations(TrustGate(config))
    lines = chain_report(token, config, source, revoked=gate.revocations())
    if not lines and not always:
        return
    for line in lines:
        print(line)
    what = f"source {source or '(none)'}" + (f" for {action.value}" if action else "")
    if error is None:
        print(f"Verdict: {what}: admitted")
    else:
        reason = error.reason if isinstance(error, VerifyError) else "error"
        print(f"Verdict: {what}: refused ({reason})")


def _diff(old: str, new: str, label: str) -> str:
    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"old {label}", f"new {label}", lineterm=""
    )
    return "\n".join(lines)


def _pattern_text(token: VerifiedToken) -> str:
    if not token.pattern_entrypoint and token.pattern_files is None:
        return "null"
    files = None if token.pattern_files is None else dict(token.pattern_files)
    return dumps_indent({"entrypoint": token.pattern_entrypoint, "files": files})


def _read_admitted(where: str, which: str, config: Config, source: str) -> VerifiedToken:
    token = read_token_arg(where, config=config)
    try:
        return admit_offline(token, config, source).verified
    except VerifyError as exc:
        shown = safe_url(where) if is_http(where) else where
        raise VerifyError(f"{which} JWT {shown}: {exc} (reason {exc.reason})", exc.reason) from exc


def cmd_compare(args: argparse.Namespace) -> int:
    """``agent compare [-i] [-s source] <new> <old>``: exit 0 when the tokens match, else diff.

    Both tokens go through the trust gate (context ``offline``) for ``-s``'s source first.

    Args:
        args: ``new``, ``old`` (paths or URLs), ``ignore_version``, ``source``.

    Returns:
        0 when the tokens are equal.

    Raises:
        SourceError: a token could not be read.
        VerifyError: a token did not verify.
        TokenError: the tokens do not match (the diff is printed to stdout first).
    """
    config = load_config_for(args)
    source = getattr(args, "source", "") or ""
    check_source(config, source)
    new = _read_admitted(args.new, "new", config, source)
    old = _read_admitted(args.old, "old", config, source)
    mismatch = token_difference(new, old, ignore_version=bool(args.ignore_version))
    if mismatch is None:
        return 0
    reason, diff = mismatch
    if diff:
        print(diff)
    raise TokenError(f"JWTs do not match: {reason}")


__all__: Sequence[str] = (
    "admit_offline",
    "check_source",
    "cmd_compare",
    "cmd_generate_keys",
    "cmd_jwt",
)
