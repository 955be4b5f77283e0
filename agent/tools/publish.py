"""`agent publish`: keep pull artifacts fresh by re-signing them before they expire.

For each ``publish.artifacts.<name>`` and each of its destinations (:mod:`.publish_dest`), the
publisher reads what is published and decides (:func:`decide`):

- ``rebuild`` when nothing is published, it does not verify with the publishing key, or the
  pattern's collected files differ from its ``etchaPattern``;
- ``resign`` when ``now >= exp - resignBefore`` or it has no ``exp``;
- ``keep`` otherwise.

One new token per artifact and check serves every destination that needs one: a re-sign of the
freshest published token whose files are current (same ``etchaPattern``, ``etchaBuildManifest``,
``etchaRunVars``, ``etchaVersion``, aud/iss/sub; new ``iat``/``nbf``/``exp`` and a new ``jti``; no
build command runs), else a rebuild as ``agent build`` does. Both sign through
:func:`agent.tools.build.sign_claims` (signing key or ``signingCommands``). A ``412`` on an HTTP
``PUT`` reads and decides again, once; a second one fails that destination. A destination that
was deleted is recreated at the next check (nothing published ⇒ publish).

The publishing key that published tokens must verify with is the public half of
``build.signingKey``/``signingKeyPath``, else ``run.verifyKeys`` (with ``signingCommands``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config.tree import PublishArtifact
from agent.core.durations import format_duration_short
from agent.core.errors import AgentError, ConfigError, VerifyError
from agent.jsonnet.imports import collect_files
from agent.jws.keys import VerifyKey, parse_signing_key, parse_verify_key
from agent.jws.tokens import VerifiedToken, decode_token, etcha_claims, verify_token
from agent.net.http import HTTPClient
from agent.pattern.load import load_from_disk
from agent.tools.build import build_token, find_upward, sign_claims
from agent.tools.publish_chain import check_chain
from agent.tools.publish_dest import Conflict, Destination, Published, destination

if TYPE_CHECKING:
    from agent.config.schema import Config

logger = logging.getLogger(__name__)

KEEP, RESIGN, REBUILD = "keep", "resign", "rebuild"


@dataclass(frozen=True, slots=True)
class Decision:
    """What one destination needs: ``keep``, ``resign`` or ``rebuild``, and why.

    ``base`` is the published token when it verified and its files are current (a re-sign
    starts from it).
    """

    action: str
    reason: str
    base: VerifiedToken | None = None


@dataclass(frozen=True, slots=True)
class DestReport:
    """The outcome for one artifact destination.

    ``result`` is ``fresh`` (nothing to do), ``published``, ``planned`` (``--dry-run``) or
    ``failed`` (``error`` says why); ``exp`` is the ``exp`` of the token there now.
    """

    artifact: str
    dest: str
    action: str
    reason: str
    result: str
    exp: int | None = None
    error: str = ""

    def line(self) -> str:
        """``<artifact> <dest>: <action> (<reason>)``, plus the outcome when not planned."""
        text = f"{self.artifact} {self.dest}: {self.action} ({self.reason})"
        if self.result == "failed":
            return f"{text}: failed: {self.error}"
        if self.result == "published":
            return f"{text}: published"
        return text


def _left(seconds: float) -> str:
    return format_duration_short(seconds) if seconds >= 0 else "-" + format_duration_short(-seconds)


def decide(
    published: Published,
    *,
    entrypoint: str,
    files: dict[str, str],
    keys: Sequence[VerifyKey],
    resign_before: float,
    now: float,
) -> Decision:
    """Decide what one destination needs (pure).

    Args:
        published: what the destination holds.
        entrypoint: the pattern's collected entrypoint.
        files: the pattern's collected files.
        keys: the publishing key(s) a published token must verify with.
        resign_before: the artifact's ``resignBefore`` (seconds).
        now: the current time.
    """
    if published.raw is None:
        return Decision(REBUILD, "nothing published")
    try:
        token = verify_token(published.raw, keys, now=now, check_times=False)
    except VerifyError as exc:
        return Decision(REBUILD, f"does not verify with the publishing key: {exc.reason}")
    if token.pattern_entrypoint != entrypoint or dict(token.pattern_files or {}) != files:
        return Decision(REBUILD, "pattern files changed")
    if not token.exp:
        return Decision(RESIGN, "no exp", token)
    left = token.exp - now
    if left <= resign_before:
        return Decision(
            RESIGN,
            f"expires in {_left(left)}, within resignBefore {format_duration_short(resign_before)}",
            token,
        )
    return Decision(KEEP, f"fresh, expires in {_left(left)}", token)


def publishing_keys(config: Config) -> list[VerifyKey]:
    """The keys published tokens must verify with (see the module docstring).

    Raises:
        ConfigError: no signing key and no ``run.verifyKeys``.
    """
    text = config.build.signing_key
    if not text and config.build.signing_key_path:
        found = find_upward(config.build.signing_key_path, Path.cwd())
        if found is not None:
            try:
                text = found.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"build.signingKeyPath: cannot read {found}") from exc
    if text:
        return [parse_signing_key(text).public()]
    keys = [parse_verify_key(entry.key) for entry in config.run.verify_keys]
    if not keys:
        raise ConfigError(
            "publish: expected build.signingKey, build.signingKeyPath or run.verifyKeys to "
            "verify published tokens with, got none"
        )
    return keys


class Publisher:
    """Checks artifacts and publishes what needs it.

    Args:
        config: the loaded config (``publish``, ``build`` signing, ``httpClient``).
        client: the HTTP client for URL destinations.
        chain: the delegation chain's link JWTs, root first (``build.delegationChain``).
        clock: unix time (tests).
    """

    def __init__(
        self,
        config: Config,
        *,
        client: HTTPClient,
        chain: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.client = client
        self.chain = tuple(chain)
        self.clock = clock

    async def check_all(self, *, dry_run: bool = False) -> list[DestReport]:
        """Check every artifact once (in name order)."""
        reports: list[DestReport] = []
        for artifact in self.config.publish.artifacts.values():
            reports += await self.check_artifact(artifact, dry_run=dry_run)
        return reports

    def _dests(self, artifact: PublishArtifact) -> list[Destination]:
        mode = int(self.config.publish.file_mode, 8)
        limit = self.config.run.max_token_bytes
        return [
            destination(spec, client=self.client, mode=mode, max_bytes=limit)
            for spec in artifact.dest
        ]

    async def check_artifact(
        self, artifact: PublishArtifact, *, dry_run: bool = False
    ) -> list[DestReport]:
        """Read, decide and (unless ``dry_run``) publish one artifact's destinations."""
        now = self.clock()
        dests = self._dests(artifact)
        try:
            entrypoint, files = await asyncio.to_thread(collect_files, Path(artifact.pattern))
            keys = publishing_keys(self.config)
        except AgentError as exc:
            return [_failed(artifact, d.shown, "check", "pattern and key", exc) for d in dests]

        def judge(published: Published) -> Decision:
            return decide(
                published,
                entrypoint=entrypoint,
                files=files,
                keys=keys,
                resign_before=artifact.resign_before,
                now=now,
            )

        reports: list[DestReport] = []
        pending: list[tuple[Destination, Published, Decision]] = []
        kept: list[VerifiedToken] = []
        for dest in dests:
            try:
                published = await asyncio.to_thread(dest.read)
            except AgentError as exc:
                reports.append(_failed(artifact, dest.shown, "read", "read failed", exc))
                continue
            decision = judge(published)
            if decision.action == KEEP:
                exp = decision.base.exp if decision.base else None
                kept += [decision.base] if decision.base else []
                reports.append(
                    DestReport(artifact.name, dest.shown, KEEP, decision.reason, "fresh", exp)
                )
            else:
                pending.append((dest, published, decision))
        if pending:
            reports += await self._publish(
                artifact, pending, judge, kept=kept, now=now, dry_run=dry_run
            )
        order = {d.shown: i for i, d in enumerate(dests)}
        return sorted(reports, key=lambda r: order.get(r.dest, 0))

    async def _publish(
        self,
        artifact: PublishArtifact,
        pending: list[tuple[Destination, Published, Decision]],
        judge: Callable[[Published], Decision],
        *,
        kept: list[VerifiedToken],
        now: float,
        dry_run: bool,
    ) -> list[DestReport]:
        """Make one token (re-sign the freshest current one, else rebuild) and write it."""
        bases = [*kept, *(d.base for _, _, d in pending if d.base is not None)]
        base = max(bases, key=lambda t: t.iat or 0) if bases else None
        action = RESIGN if base is not None else REBUILD
        if dry_run:
            return [
                DestReport(artifact.name, dest.shown, action, decision.reason, "planned")
                for dest, _, decision in pending
            ]
        try:
            token = await (
                self._resign(base, artifact, now) if base else self._rebuild(artifact, now)
            )
            exp = _exp(token)
            self._check_chain(artifact, exp, now)
        except AgentError as exc:
            return [
                _failed(artifact, dest.shown, action, decision.reason, exc)
                for dest, _, decision in pending
            ]
        reports = []
        for dest, published, decision in pending:
            try:
                note = await asyncio.to_thread(_write, dest, token, published, judge)
            except AgentError as exc:
                logger.error("Publish %s to %s failed: %s", artifact.name, dest.shown, exc)
                reports.append(_failed(artifact, dest.shown, action, decision.reason, exc))
                continue
            logger.info(
                "Publish %s to %s: %s (%s)%s",
                artifact.name,
                dest.shown,
                action,
                decision.reason,
                note,
            )
            reports.append(
                DestReport(artifact.name, dest.shown, action, decision.reason, "published", exp)
            )
        return reports

    async def _resign(self, base: VerifiedToken, artifact: PublishArtifact, now: float) -> str:
        """The same claims with a new ``iat``/``nbf``/``exp`` and ``jti``; no build command."""
        claims = etcha_claims(
            pattern_entrypoint=base.pattern_entrypoint,
            pattern_files=base.pattern_files,
            build_manifest=base.build_manifest,
            run_vars=base.run_vars,
            version=base.version,
            audience=base.aud,
            expires_in=artifact.expires_in,
            issuer=base.iss,
            subject=base.sub,
            jti=uuid.uuid4().hex,
            now=now,
        )
        return await sign_claims(claims, config=self.config)

    async def _rebuild(self, artifact: PublishArtifact, now: float) -> str:
        """Render, run the build commands and sign, as ``agent build`` does."""
        path = Path(artifact.pattern)
        first = artifact.dest[0]
        extra = {"srcDir": str(path.parent), "srcPath": str(path), "dstPath": first}
        loaded = await asyncio.to_thread(
            load_from_disk, path, config=self.config, source="", extra_vars=extra
        )
        return await build_token(
            loaded, config=self.config, expires_in=artifact.expires_in, now=now
        )

    def _check_chain(self, artifact: PublishArtifact, exp: int | None, now: float) -> None:
        if not self.chain:
            return
        found = check_chain(
            self.chain, token_exp=exp, resign_before=artifact.resign_before, now=now
        )
        for warning in found.warnings:
            logger.warning("Publish %s: %s", artifact.name, warning)
        if found.refusal:
            raise AgentError(f"refusing to publish: {found.refusal}")


def _exp(token: str) -> int | None:
    exp = decode_token(token).claims.get("exp")
    return int(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def _write(
    dest: Destination, token: str, published: Published, judge: Callable[[Published], Decision]
) -> str:
    """Write ``token``; on a 412 read and decide again, once (a second 412 fails)."""
    try:
        dest.write(token, published)
        return ""
    except Conflict as exc:
        logger.warning("Publish to %s: %s; reading again", dest.shown, exc)
    again = dest.read()
    if judge(again).action == KEEP:
        return "; another writer published a fresh token meanwhile"
    dest.write(token, again)
    return " after a 412 retry"


def _failed(
    artifact: PublishArtifact, shown: str, action: str, reason: str, exc: AgentError
) -> DestReport:
    return DestReport(artifact.name, shown, action, reason, "failed", error=exc.message)


def lines(reports: Sequence[DestReport]) -> list[str]:
    """One line per destination."""
    return [report.line() for report in reports]


__all__ = ["Decision", "DestReport", "Publisher", "decide", "lines", "publishing_keys"]
