"""`agent push`: build and sign a pattern (or an ad-hoc command), POST it to targets, print results.

Flow (reference etcha-run.md §6.6 with SPEC 14 fixes):

1. Targets: the config's ``targets`` whose ``sourcePatterns`` has the source as a key and whose
   name matches ``-n`` (unanchored search), sorted by name; or the single ad-hoc ``-h`` target.
2. Each target's pattern is its ``sourcePatterns[source]`` when non-empty, else the command-line
   argument. A value ending in ``.jsonnet`` is a pattern path; anything else is an ad-hoc command,
   embedded **as a JSON string** in ``{run:[{always:true, change:<cmd>, id:"etcha push"}]}``.
3. Build commands run **once per distinct pattern per push**, not once per target. Signing happens
   once per distinct set of target ``vars`` (they are laid over the runVars). Every signed push
   token gets a random ``jti`` and an ``exp`` of ``build.pushTokenExpiresIn`` (default 5m; a
   shorter pattern ``expiresIn`` wins), for the receiver's replay protection; Etcha ignores both.
4. At most ``build.pushMaxWorkers`` targets are pushed at once. Check mode and the parent-id filter
   travel as ``?check=true&filter=…``.
5. Output: for each target, in name order, a ``<target>:`` line and 4-space-indented lines. Exit 1
   when any target failed.

TLS verification is on by default; ``build.tlsSkipVerify`` or ``httpClient.tlsSkipVerify`` turn it
off; ``httpClient.caFile`` (or ``build.caFile``) adds a CA; ``httpClient.noSystemCA`` drops the
system store. A target with ``insecure: true``, or ``-h http://host``, uses plain HTTP (for a daemon
with ``run.tlsDisable``). A target with a ``fingerprint`` (``targets.<name>.fingerprint`` or
``--fingerprint``) is pinned instead: the SHA-256 of the DER certificate it presents must equal the
fingerprint, and neither a CA nor the host name is checked, so a daemon's self-signed certificate
works the first time. A failed verification names the three ways to trust a target.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote, urlencode

from agent.core.errors import AgentError, UsageError

if TYPE_CHECKING:
    import ssl

    from agent.config.schema import Config
    from agent.pattern.load import LoadedPattern

logger = logging.getLogger(__name__)

DEFAULT_PORT = "4000"
DEFAULT_PUSH_PATH = "/etcha/v1/push"
AD_HOC_ID = "etcha push"


@dataclass(frozen=True, slots=True)
class PushTarget:
    """One destination of a push.

    Attributes:
        name: the target name (``-h`` host for an ad-hoc target).
        scheme: ``https``, or ``http`` for ``insecure`` targets.
        hostname: host name or address.
        port: TCP port as text.
        path_push: push path prefix (``/etcha/v1/push``).
        pattern: the target's ``sourcePatterns`` entry for the source ("" = use the CLI argument).
        vars: target vars laid over the runVars when signing.
        fingerprint: ``sha256:<hex>`` pinning the target's certificate ("" = verify as usual).
    """

    name: str
    scheme: str
    hostname: str
    port: str
    path_push: str
    pattern: str = ""
    vars: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def url(self, source: str, *, check: bool = False, parent_filter: str = "") -> str:
        """The push URL for ``source`` with the check/filter query (SPEC 14).

        Args:
            source: the source name.
            check: ask for a check-mode run.
            parent_filter: parent-id filter regex ("" = none).

        Returns:
            ``<scheme>://<host:port><pathPush>/<source>[?check=true&filter=…]``.
        """
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        path = "/" + self.path_push.strip("/") if self.path_push.strip("/") else ""
        url = f"{self.scheme}://{host}:{self.port}{path}/{quote(source, safe='')}"
        query: dict[str, str] = {}
        if check:
            query["check"] = "true"
        if parent_filter:
            query["filter"] = parent_filter
        if query:
            url += "?" + urlencode(query)
        return url


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """What one target answered.

    Attributes:
        target: the target name.
        error: "" on success, else the reason (already worded for the user).
        has_result: whether a Result was received (so the ID lines are meaningful).
        changed_ids: ids changed (or, in check mode, that would change).
        changed_outputs: change outputs (command mode prints these).
        removed_ids: ids removed (or that would be removed).
    """

    target: str
    error: str = ""
    has_result: bool = False
    changed_ids: tuple[str, ...] = ()
    changed_outputs: tuple[str, ...] = ()
    removed_ids: tuple[str, ...] = ()


def _text_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v) for v in value)


def outcome_from_response(target: str, status: int, body: bytes) -> PushOutcome:
    """Interpret a push response (reference §6.6, SPEC 20).

    Args:
        target: the target name.
        status: the HTTP status.
        body: the response body.

    Returns:
        The outcome; ``error`` set for 404, 429, undecodable bodies and Results with ``err``.
    """
    if status == 404:
        return PushOutcome(target, error="push didn't match any sources")
    if status == 429:
        return PushOutcome(target, error="push destination is rate limiting")
    if status == 304:
        return PushOutcome(target, has_result=True)
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        text = body.decode("utf-8", errors="replace").strip().splitlines()
        detail = f" {text[0][:200]}" if text else ""
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        return PushOutcome(target, error=f"error decoding response: HTTP {status}{detail} ({why})")
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return PushOutcome(
            target, error=f"error decoding response (HTTP {status}): expected a JSON object"
        )
    err = str(doc.get("err") or "")
    if not err and status >= 300:
        err = f"bad response from server: {status}"
    return PushOutcome(
        target,
        error=err,
        has_result=True,
        changed_ids=_text_list(doc.get("changedIDs")),
        changed_outputs=_text_list(doc.get("changedOutputs")),
        removed_ids=_text_list(doc.get("removedIDs")),
    )


def format_outcome(outcome: PushOutcome, *, check: bool, command_mode: bool, color: bool) -> str:
    """Render one target's block: ``<target>:`` then 4-space-indented lines.

    Args:
        outcome: the target's outcome.
        check: the push was in check mode (``Would change``/``Would remove``).
        command_mode: an ad-hoc command was pushed (print its change outputs).
        color: wrap ``ERROR:`` lines in red.

    Returns:
        The block, without a trailing newline.
    """
    lines: list[str] = []
    if outcome.error:
        err = f"ERROR: {outcome.error}"
        lines.append(f"\033[31m{err}\033[0m" if color else err)
    if outcome.has_result:
        if command_mode and not check:
            lines.extend(outcome.changed_outputs)
        elif not outcome.changed_ids and not outcome.removed_ids:
            lines.append("No changes")
        else:
            change_word, remove_word = (
                ("Would change", "Would remove")
                if check
                else (
                    "Changed",
                    "Removed",
                )
            )
            if outcome.changed_ids:
                n = len(outcome.changed_ids)
                lines.append(f"{change_word} {n}: {', '.join(outcome.changed_ids)}")
            if outcome.removed_ids:
                n = len(outcome.removed_ids)
                lines.append(f"{remove_word} {n}: {', '.join(outcome.removed_ids)}")
    body = "".join("\n    " + line.replace("\n", "\n    ") for line in lines)
    return f"{outcome.target}:{body}"


def _port_text(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_PORT
    return str(value)


def ad_hoc_target(
    host: str, *, port: str | None, path: str | None, fingerprint: str = ""
) -> PushTarget:
    """The ``-h host`` target: https unless the host is written ``http://host``.

    Args:
        host: host name, address, or ``http(s)://host[:port]``.
        port: ``-p`` (default 4000, or the port in the URL).
        path: ``-u`` (default ``/etcha/v1/push``).
        fingerprint: ``--fingerprint`` (canonical ``sha256:<hex>``, "" = none).

    Returns:
        The target.

    Raises:
        UsageError: the host is empty.
    """
    from urllib.parse import urlsplit

    scheme = "https"
    hostname = host
    url_port: str | None = None
    if host.startswith(("http://", "https://")):
        parts = urlsplit(host)
        scheme = parts.scheme
        hostname = parts.hostname or ""
        url_port = str(parts.port) if parts.port else None
    if not hostname:
        raise UsageError(f"-h: expected a host name or http(s)://host, got {host!r}")
    return PushTarget(
        name=host,
        scheme=scheme,
        hostname=hostname,
        port=port or url_port or DEFAULT_PORT,
        path_push=path or DEFAULT_PUSH_PATH,
        fingerprint=fingerprint,
    )


def select_targets(
    config: Config,
    source: str,
    *,
    host: str | None = None,
    port: str | None = None,
    path: str | None = None,
    target_filter: str | None = None,
    fingerprint: str | None = None,
) -> list[PushTarget]:
    """The targets a push goes to, sorted by name.

    Args:
        config: the loaded config.
        source: the source name; config targets must list it in ``sourcePatterns``.
        host: ``-h``: push to this host only.
        port: ``-p``: port for ``-h`` (and, when given, for config targets).
        path: ``-u``: push path for ``-h`` (and, when given, for config targets).
        target_filter: ``-n``: a regex searched (unanchored) in target names.
        fingerprint: ``--fingerprint``: pin this certificate for every selected target (it
            replaces the targets' own ``fingerprint``).

    Returns:
        The targets.

    Raises:
        UsageError: ``target_filter`` is not a valid regex, ``fingerprint`` is malformed, or
            ``fingerprint`` is given for a plain-HTTP target.
    """
    pinned = ""
    if fingerprint:
        from agent.config.schema import parse_fingerprint

        try:
            pinned = parse_fingerprint(fingerprint)
        except ValueError as exc:
            raise UsageError(f"--fingerprint: {exc}") from exc
    targets = _select(config, source, host, port, path, target_filter, pinned)
    for target in targets:
        if pinned and target.scheme != "https":
            raise UsageError(
                f"--fingerprint: expected an https target to pin, got {target.name} over http"
            )
    return targets


def _select(
    config: Config,
    source: str,
    host: str | None,
    port: str | None,
    path: str | None,
    target_filter: str | None,
    pinned: str,
) -> list[PushTarget]:
    if host:
        return [ad_hoc_target(host, port=port, path=path, fingerprint=pinned)]
    regex: re.Pattern[str] | None = None
    if target_filter:
        try:
            regex = re.compile(target_filter)
        except re.error as exc:
            raise UsageError(
                f"-n: expected a regular expression, got {target_filter!r}: {exc}"
            ) from exc
    targets: list[PushTarget] = []
    for name in sorted(config.targets):
        tc = config.targets[name]
        patterns: Mapping[str, str] = tc.source_patterns or {}
        if source not in patterns:
            continue
        if regex is not None and not regex.search(name):
            continue
        targets.append(
            PushTarget(
                name=name,
                scheme="http" if tc.insecure else "https",
                hostname=tc.hostname or name,
                port=port or _port_text(tc.port),
                path_push=path or tc.path_push or DEFAULT_PUSH_PATH,
                pattern=patterns[source] or "",
                vars=dict(tc.vars or {}),
                fingerprint=pinned or tc.fingerprint,
            )
        )
    return targets


def ad_hoc_pattern_text(command: str) -> str:
    """The Jsonnet for an ad-hoc command; the command is a JSON string literal (no injection).

    Args:
        command: the shell command.

    Returns:
        ``{run:[{always:true, change:"<cmd>", id:"etcha push"}]}`` as Jsonnet text.
    """
    return (
        "{run: [{always: true, change: "
        + json.dumps(command, ensure_ascii=True)
        + ", id: "
        + json.dumps(AD_HOC_ID)
        + "}]}"
    )


def client_ssl_context(config: Config) -> ssl.SSLContext | bool:
    """The TLS setting for push requests: verification on unless a tlsSkipVerify is set.

    Args:
        config: the loaded config (``build.tlsSkipVerify``/``httpClient.*``, which are aliases).

    Returns:
        ``False`` to skip verification, ``True`` for the default verifying context, or a
        verifying context with ``httpClient.caFile`` loaded.

    Raises:
        ConfigError: the CA file cannot be loaded.
    """
    from agent.net.fetch import make_ssl_context

    client = config.http_client
    return make_ssl_context(
        client.tls_skip_verify or config.build.tls_skip_verify,
        client.ca_file or config.build.ca_file,
        client.no_system_ca,
    )


@dataclass(frozen=True, slots=True)
class _Built:
    loaded: LoadedPattern | None
    manifest: str
    run_vars: Mapping[str, Any]
    error: str


async def _build(
    spec: str, *, config: Config, cwd: Path, disable_external: bool
) -> tuple[_Built, bool]:
    """Render and build one pattern spec once. Returns (built, command_mode)."""
    from agent.pattern.load import load_from_disk, load_from_text
    from agent.tools.build import collect_build

    command_mode = not spec.endswith(".jsonnet")
    try:
        if command_mode:
            loaded = await asyncio.to_thread(
                load_from_text,
                ad_hoc_pattern_text(spec),
                config=config,
                source="",
                disable_external=disable_external,
            )
        else:
            path = Path(spec)
            if not path.is_absolute():
                path = cwd / path
            loaded = await asyncio.to_thread(
                load_from_disk, path, config=config, source="", disable_external=disable_external
            )
        manifest, run_vars = await collect_build(loaded)
    except AgentError as exc:
        return _Built(None, "", {}, str(exc)), command_mode
    return _Built(loaded, manifest, run_vars, ""), command_mode


async def _sign(built: _Built, target: PushTarget, *, config: Config) -> str:
    from agent import __version__
    from agent.jws.tokens import etcha_claims
    from agent.tools.build import sign_claims

    if built.loaded is None:  # callers only sign successful builds
        raise AgentError("push: expected a built pattern to sign, got none")
    pattern = built.loaded.pattern
    run_vars = dict(built.run_vars)
    run_vars.update(target.vars)
    claims = etcha_claims(
        pattern_entrypoint=built.loaded.entrypoint,
        pattern_files=built.loaded.files,
        build_manifest=built.manifest,
        run_vars=run_vars,
        version=__version__,
        audience=pattern.audience,
        expires_in=push_expires_in(config, pattern.expires_in),
        issuer=pattern.issuer,
        subject=pattern.subject,
        jti=secrets.token_urlsafe(16),  # replay protection: each signed push is unique
        now=time.time(),
    )
    return await sign_claims(claims, config=config)


def push_expires_in(config: Config, pattern_expires_in: float) -> float:
    """Lifetime of a push token: ``build.pushTokenExpiresIn`` (default 5m), else the pattern's.

    Args:
        config: the loaded config.
        pattern_expires_in: the pattern's own ``expiresIn`` (seconds, 0 = none).

    Returns:
        Seconds until ``exp``; a shorter pattern ``expiresIn`` wins.
    """
    configured = float(config.build.push_token_expires_in or 0)
    if configured <= 0:
        return pattern_expires_in
    if pattern_expires_in > 0:
        return min(configured, pattern_expires_in)
    return configured


def tls_failure_message(target: PushTarget, reason: str) -> str:
    """The error for a certificate the push client could not verify: names the three fixes.

    Args:
        target: the target.
        reason: what the TLS library said (e.g. ``self-signed certificate``).

    Returns:
        One line naming ``httpClient.caFile``, ``fingerprint`` and ``httpClient.tlsSkipVerify``.
    """
    return (
        f"TLS verification of {target.hostname}:{target.port} failed ({reason}). "
        "To trust it: set httpClient.caFile to its CA (for an agent's self-signed certificate, "
        "a copy of the target's <stateDir>/tls/cert.pem); or pin "
        "the certificate with fingerprint (--fingerprint sha256:… or targets.<name>.fingerprint; "
        "`agent fingerprint` on the target prints it, `agent run` logs it); or, least safe, set "
        "httpClient.tlsSkipVerify: true"
    )


def fingerprint_mismatch_message(target: PushTarget, expected: bytes, got: bytes) -> str:
    """The error for a pinned target that presented another certificate."""
    return (
        f"certificate fingerprint mismatch for {target.hostname}:{target.port}: expected "
        f"sha256:{expected.hex()}, got sha256:{got.hex()} (a different certificate: "
        "if the target's certificate was replaced on purpose, pin the new fingerprint)"
    )


async def _send(
    session: Any, target: PushTarget, url: str, token: str, *, timeout: float | None
) -> PushOutcome:
    import aiohttp

    extra: dict[str, Any] = {}
    if target.fingerprint:
        extra["ssl"] = aiohttp.Fingerprint(bytes.fromhex(target.fingerprint.partition(":")[2]))
    try:
        async with session.post(
            url,
            data=token.encode("ascii", errors="replace"),
            headers={"Content-Type": "application/jwt"},
            timeout=aiohttp.ClientTimeout(total=timeout),
            **extra,
        ) as resp:
            body = await resp.read()
            return outcome_from_response(target.name, resp.status, body)
    except aiohttp.ServerFingerprintMismatch as exc:
        return PushOutcome(
            target.name, error=fingerprint_mismatch_message(target, exc.expected, exc.got)
        )
    except aiohttp.ClientConnectorCertificateError as exc:
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", "") or str(cert_error) or "unverified"
        return PushOutcome(
            target.name, error="error performing request: " + tls_failure_message(target, reason)
        )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        return PushOutcome(target.name, error=f"error performing request: {reason}")


async def push(
    config: Config,
    source: str,
    spec: str,
    *,
    check: bool = False,
    parent_filter: str = "",
    host: str | None = None,
    port: str | None = None,
    path: str | None = None,
    target_filter: str | None = None,
    fingerprint: str | None = None,
    out: TextIO | None = None,
    progress: TextIO | None = None,
    color: bool = False,
    disable_external: bool = False,
    cwd: Path | None = None,
) -> int:
    """Push ``spec`` (pattern path or command) for ``source`` to the selected targets.

    Args:
        config: the loaded config.
        source: the source name on the targets.
        spec: a ``*.jsonnet`` pattern path or an ad-hoc command ("" = use ``sourcePatterns``).
        check: ``-c``: check mode on the targets.
        parent_filter: ``-f``: parent-id filter regex.
        host: ``-h``: ad-hoc target.
        port: ``-p``.
        path: ``-u``.
        target_filter: ``-n``.
        fingerprint: ``--fingerprint``: pin this certificate (``sha256:<hex>``).
        out: where results go (stdout by default).
        progress: where a progress line goes when several targets (None = no progress line).
        color: colour ``ERROR:`` lines.
        disable_external: disable external Jsonnet natives while rendering.
        cwd: directory relative pattern paths are resolved against (default: the cwd).

    Returns:
        0 when every target succeeded, else 1.

    Raises:
        UsageError: bad ``-f``/``-n`` regex or ``--fingerprint``, or no target matches.
    """
    import aiohttp

    out = out or sys.stdout
    cwd = cwd or Path.cwd()
    if parent_filter:
        try:
            re.compile(parent_filter)
        except re.error as exc:
            raise UsageError(
                f"-f: expected a regular expression, got {parent_filter!r}: {exc}"
            ) from exc
    targets = select_targets(
        config,
        source,
        host=host,
        port=port,
        path=path,
        target_filter=target_filter,
        fingerprint=fingerprint,
    )
    if not targets:
        raise UsageError(
            f"push: expected at least one target with sourcePatterns for {source!r}, got none"
            + (f" matching {target_filter!r}" if target_filter else "")
        )

    # Build once per distinct pattern spec (SPEC 14), then sign per distinct target vars.
    specs = {t.name: (t.pattern or spec) for t in targets}
    built: dict[str, tuple[_Built, bool]] = {}
    for s in sorted(set(specs.values())):
        if s:
            built[s] = await _build(s, config=config, cwd=cwd, disable_external=disable_external)

    workers = config.build.push_max_workers or (os.cpu_count() or 1)
    semaphore = asyncio.Semaphore(max(1, workers))
    # The server bounds a run by its run.timeoutPush; allow the same (our config's) plus slack.
    timeout = config.run.timeout_push + 30.0 if config.run.timeout_push else None
    tokens: dict[tuple[str, str], str] = {}
    token_lock = asyncio.Lock()
    done = 0
    outcomes: dict[str, PushOutcome] = {}
    modes: dict[str, bool] = {}

    def show_progress() -> None:
        if progress is not None and len(targets) > 1:
            progress.write(f"\rPushing to {len(targets)} targets: {done}/{len(targets)} done")
            progress.flush()

    async def one(session: Any, target: PushTarget) -> None:
        nonlocal done
        target_spec = specs[target.name]
        modes[target.name] = not target_spec.endswith(".jsonnet")
        async with semaphore:
            if not target_spec:
                outcomes[target.name] = PushOutcome(
                    target.name, error="no pattern or command given for this source"
                )
            else:
                b, _ = built[target_spec]
                if b.error:
                    outcomes[target.name] = PushOutcome(target.name, error=b.error)
                else:
                    key = (target_spec, json.dumps(dict(target.vars), sort_keys=True, default=str))
                    async with token_lock:
                        try:
                            if key not in tokens:
                                tokens[key] = await _sign(b, target, config=config)
                            token: str | None = tokens[key]
                        except AgentError as exc:
                            outcomes[target.name] = PushOutcome(target.name, error=str(exc))
                            token = None
                    if token is not None:
                        url = target.url(source, check=check, parent_filter=parent_filter)
                        logger.debug("Pushing %s to %s", source, url)
                        outcomes[target.name] = await _send(
                            session, target, url, token, timeout=timeout
                        )
            done += 1
            show_progress()

    ssl_ctx = client_ssl_context(config)
    connector = aiohttp.TCPConnector(ssl=ssl_ctx)
    async with aiohttp.ClientSession(connector=connector) as session:
        show_progress()
        await asyncio.gather(*(one(session, t) for t in targets))
    if progress is not None and len(targets) > 1:
        progress.write("\r\033[K")
        progress.flush()

    failed = False
    for target in targets:
        outcome = outcomes[target.name]
        failed = failed or bool(outcome.error)
        out.write(
            format_outcome(outcome, check=check, command_mode=modes[target.name], color=color)
            + "\n"
        )
    out.flush()
    return 1 if failed else 0


def run_push_cli(
    config: Config,
    source: str,
    words: Sequence[str],
    **kwargs: Any,
) -> int:
    """Synchronous wrapper for the CLI: join ``words`` into the spec and run :func:`push`.

    Args:
        config: the loaded config.
        source: the source name.
        words: the remaining command-line words (a pattern path, or a command's words).
        **kwargs: passed to :func:`push`.

    Returns:
        The exit code.
    """
    return asyncio.run(push(config, source, " ".join(words), **kwargs))
