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
import functools
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from agent import __version__
from agent.config.schema import Config
from agent.core.errors import AgentError, UsageError
from agent.jws.tokens import etcha_claims
from agent.net.http import HTTPClient, RequestError, TLSVerifyError
from agent.net.tls import FingerprintMismatch, TLSOptions
from agent.pattern.load import LoadedPattern, load_from_disk, load_from_text
from agent.tools.build import collect_build, sign_claims
from agent.tools.push_targets import (
    DEFAULT_PORT,
    DEFAULT_PUSH_PATH,
    PushTarget,
    ad_hoc_target,
    select_targets,
)

__all__ = [
    "AD_HOC_ID",
    "DEFAULT_PORT",
    "DEFAULT_PUSH_PATH",
    "PushOutcome",
    "PushTarget",
    "ad_hoc_pattern_text",
    "ad_hoc_target",
    "client_options",
    "fingerprint_mismatch_message",
    "format_outcome",
    "outcome_from_response",
    "push",
    "push_expires_in",
    "run_push_cli",
    "select_targets",
    "tls_failure_message",
]

logger = logging.getLogger(__name__)

AD_HOC_ID = "etcha push"
#: The largest push response read (a Result with its change outputs).
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


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


def client_options(config: Config) -> TLSOptions:
    """The TLS settings for push requests: verification on unless a tlsSkipVerify is set.

    Args:
        config: the loaded config (``build.tlsSkipVerify``/``build.caFile`` are aliases of
            ``httpClient.tlsSkipVerify``/``httpClient.caFile``).

    Returns:
        The options for :class:`agent.net.http.HTTPClient`.
    """
    client = config.http_client
    return TLSOptions(
        skip_verify=client.tls_skip_verify or config.build.tls_skip_verify,
        ca_file=client.ca_file or config.build.ca_file,
        no_system_ca=client.no_system_ca,
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


def _send(
    client: HTTPClient, target: PushTarget, url: str, token: str, *, timeout: float | None
) -> PushOutcome:
    """POST one token (in a worker thread) and interpret the answer."""
    try:
        resp = client.request(
            url,
            method="POST",
            headers=(("Content-Type", "application/jwt"),),
            body=token.encode("ascii", errors="replace"),
            timeout=timeout,
            max_bytes=MAX_RESPONSE_BYTES,
            fingerprint=target.fingerprint,
        )
    except FingerprintMismatch as exc:
        return PushOutcome(
            target.name, error=fingerprint_mismatch_message(target, exc.expected, exc.got)
        )
    except TLSVerifyError as exc:
        return PushOutcome(
            target.name,
            error="error performing request: " + tls_failure_message(target, exc.reason),
        )
    except RequestError as exc:
        return PushOutcome(target.name, error=f"error performing request: {exc}")
    return outcome_from_response(target.name, resp.status, resp.body)


class _PushRun:
    """One push to many targets: signs once per distinct (spec, vars), sends with bounded workers.

    At most ``build.pushMaxWorkers`` targets are worked on at once (signing and sending); the
    requests run on a thread pool of that size, so the event loop only coordinates.
    """

    def __init__(
        self,
        config: Config,
        source: str,
        specs: Mapping[str, str],
        built: Mapping[str, tuple[_Built, bool]],
        *,
        query: tuple[bool, str],
        progress: TextIO | None,
    ) -> None:
        self.config = config
        self.source = source
        self.specs = specs
        self.built = built
        self.check, self.parent_filter = query
        self.progress = progress
        self.client = HTTPClient(client_options(config))
        self.workers = max(1, config.build.push_max_workers or (os.cpu_count() or 1))
        # The server bounds a run by its run.timeoutPush; allow the same (our config's) + slack.
        self.timeout = config.run.timeout_push + 30.0 if config.run.timeout_push else None
        self.tokens: dict[tuple[str, str], str] = {}
        self.token_lock = asyncio.Lock()
        self.outcomes: dict[str, PushOutcome] = {}
        self.done = 0
        self.total = 0

    async def all(self, targets: Sequence[PushTarget]) -> dict[str, PushOutcome]:
        """Push to every target; the outcomes by target name."""
        self.total = len(targets)
        for pinned in sorted({bool(t.fingerprint) for t in targets if t.scheme == "https"}):
            self.client.context(pinned=pinned)  # a bad caFile fails here, before any request
        semaphore = asyncio.Semaphore(self.workers)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="push") as pool:
            self._show_progress()
            await asyncio.gather(*(self._one(t, semaphore, pool) for t in targets))
        if self.progress is not None and self.total > 1:
            self.progress.write("\r\033[K")
            self.progress.flush()
        return self.outcomes

    def _show_progress(self) -> None:
        if self.progress is not None and self.total > 1:
            self.progress.write(f"\rPushing to {self.total} targets: {self.done}/{self.total} done")
            self.progress.flush()

    async def _one(
        self, target: PushTarget, semaphore: asyncio.Semaphore, pool: ThreadPoolExecutor
    ) -> None:
        async with semaphore:
            self.outcomes[target.name] = await self._outcome(target, pool)
            self.done += 1
            self._show_progress()

    async def _outcome(self, target: PushTarget, pool: ThreadPoolExecutor) -> PushOutcome:
        spec = self.specs[target.name]
        if not spec:
            return PushOutcome(target.name, error="no pattern or command given for this source")
        built, _ = self.built[spec]
        if built.error:
            return PushOutcome(target.name, error=built.error)
        key = (spec, json.dumps(dict(target.vars), sort_keys=True, default=str))
        async with self.token_lock:
            try:
                if key not in self.tokens:
                    self.tokens[key] = await _sign(built, target, config=self.config)
            except AgentError as exc:
                return PushOutcome(target.name, error=str(exc))
        url = target.url(self.source, check=self.check, parent_filter=self.parent_filter)
        logger.debug("Pushing %s to %s", self.source, url)
        send = functools.partial(
            _send, self.client, target, url, self.tokens[key], timeout=self.timeout
        )
        return await asyncio.get_running_loop().run_in_executor(pool, send)


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
        host, port, path, target_filter, fingerprint: ``-h``, ``-p``, ``-u``, ``-n`` and
            ``--fingerprint`` (see :func:`agent.tools.push_targets.select_targets`).
        out, progress: results (stdout by default); a progress line for several targets.
        color: colour ``ERROR:`` lines.
        disable_external, cwd: no external natives; where relative pattern paths start.

    Returns:
        0 when every target succeeded, else 1.

    Raises:
        UsageError: bad ``-f``/``-n`` regex or ``--fingerprint``, or no target matches.
        ConfigError: ``httpClient.caFile`` cannot be loaded.
    """
    _check_regex("-f", parent_filter)
    targets = select_targets(
        config,
        source,
        host=host,
        port=port,
        path=path,
        target_filter=target_filter,
        fingerprint=fingerprint,
    )
    _need_targets(targets, source, target_filter)
    # Build once per distinct pattern spec (SPEC 14), then sign per distinct target vars.
    specs = {t.name: (t.pattern or spec) for t in targets}
    built: dict[str, tuple[_Built, bool]] = {}
    for s in sorted(set(specs.values()) - {""}):
        built[s] = await _build(
            s, config=config, cwd=cwd or Path.cwd(), disable_external=disable_external
        )
    run = _PushRun(config, source, specs, built, query=(check, parent_filter), progress=progress)
    outcomes = await run.all(targets)
    return _write_outcomes(targets, outcomes, specs, out or sys.stdout, check=check, color=color)


def _need_targets(targets: Sequence[PushTarget], source: str, target_filter: str | None) -> None:
    if not targets:
        raise UsageError(
            f"push: expected at least one target with sourcePatterns for {source!r}, got none"
            + (f" matching {target_filter!r}" if target_filter else "")
        )


def _check_regex(flag: str, pattern: str) -> None:
    if not pattern:
        return
    try:
        re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{flag}: expected a regular expression, got {pattern!r}: {exc}") from exc


def _write_outcomes(
    targets: Sequence[PushTarget],
    outcomes: Mapping[str, PushOutcome],
    specs: Mapping[str, str],
    out: TextIO,
    *,
    check: bool,
    color: bool,
) -> int:
    """Print each target's block in name order; 1 when any target failed, else 0."""
    failed = False
    for target in targets:
        outcome = outcomes[target.name]
        failed = failed or bool(outcome.error)
        command_mode = not specs[target.name].endswith(".jsonnet")
        out.write(
            format_outcome(outcome, check=check, command_mode=command_mode, color=color) + "\n"
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
