"""Pulling revocation lists (``run.revocationPaths``) and handing them to the trust gate.

Each path (a file or an http(s) URL, like a pull path) holds one revocation list
(:mod:`agent.trust.revocation`): ``typ`` ``etcha-revocations+jwt``, signed by a
``run.trustRoots`` key. Lists are pulled at start-up (before stored tokens are restored) and every
``run.revocationFrequency``, with conditional requests (``If-None-Match``/``If-Modified-Since``).
Each accepted list is kept in ``stateDir`` (``agent-revocations-<hash>.jwt`` and ``.meta.json``),
so a restart starts from the lists held; a list whose ``iat`` is older than the one held for its
path is ignored (logged). The gate's pulled set is the union of the lists held
(:meth:`agent.trust.gate.TrustGate.set_pulled_revocations`); ``run.revocations`` are added by the
gate itself.

A stored pattern whose signer or chain is now revoked stops running at its next run: the runner
re-admits the stored token before each run (:meth:`agent.daemon.runner.Runner.readmit`).

Invariants: a failed pull or a refused list keeps the lists held (logged, never raised); state
files are written atomically; no token text is logged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.atomicio import atomic_write
from agent.core.errors import AgentError, VerifyError
from agent.net.fetch import fetch_path, safe_url
from agent.trust.revocation import RevocationList, RevocationSet, parse_revocation_list

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.trust.gate import TrustGate

logger = logging.getLogger(__name__)

__all__ = ["HeldList", "RevocationPuller", "kept_revocations"]

_PREFIX = "agent-revocations-"


@dataclass(frozen=True, slots=True)
class HeldList:
    """A list accepted for one path, with its validators."""

    token: str
    parsed: RevocationList
    etag: str = ""
    last_modified: str = ""


class RevocationPuller:
    """Keeps the revocation lists of ``run.revocationPaths`` current in the gate.

    Args:
        config: returns the config in force (reloads are followed).
        gate: the trust gate (its pulled revocations are replaced after each change).
        state_dir: where lists are kept.
        clock: Unix time.
        on_applied: told of each newly pulled list (``path``, the list): the audit log.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        gate: TrustGate,
        state_dir: Path,
        *,
        clock: Callable[[], float] = time.time,
        on_applied: Callable[[str, RevocationList], object] | None = None,
    ) -> None:
        self._config = config
        self.on_applied = on_applied
        self._gate = gate
        self._dir = Path(state_dir)
        self._clock = clock
        self._held: dict[str, HeldList] = {}
        self._last: float | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def held(self) -> dict[str, HeldList]:
        """The lists held, by path (a copy)."""
        return dict(self._held)

    async def due(self) -> None:
        """Pull now if never pulled (loading the lists kept in stateDir first) or
        ``revocationFrequency`` has passed; start the periodic pull once."""
        config = self._config()
        if not config.run.revocation_paths:
            if self._held:  # revocationPaths were removed by a reload
                self._held.clear()
                self._publish()
            return
        async with self._lock:
            if self._last is None:
                self.load_held(config)
            elif self._clock() - self._last < config.run.revocation_frequency:
                return
            self._last = self._clock()
            await self.pull_all()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._periodic())

    async def _periodic(self) -> None:
        while True:
            frequency = max(self._config().run.revocation_frequency, 1.0)
            await asyncio.sleep(frequency)
            try:
                await self.due()
            except asyncio.CancelledError:
                raise
            except Exception:  # a pull never stops the loop
                logger.exception("Revocation lists: periodic pull crashed")

    async def pull_all(self) -> None:
        """Pull every path once and update the gate (errors are logged)."""
        config = self._config()
        for path in config.run.revocation_paths:
            await self._pull(path, config)
        for path in [p for p in self._held if p not in config.run.revocation_paths]:
            del self._held[path]
        self._publish()

    def _publish(self) -> None:
        entries = [e for held in self._held.values() for e in held.parsed.entries]
        self._gate.set_pulled_revocations(entries)

    def _revoked(self) -> RevocationSet:
        return self._gate.revocations()

    async def _pull(self, path: str, config: Config) -> None:
        shown = safe_url(path)
        current = self._held.get(path)
        client = config.http_client
        try:
            result = await fetch_path(
                path,
                etag=current.etag if current else "",
                last_modified=current.last_modified if current else "",
                tls_skip_verify=client.tls_skip_verify,
                ca_file=client.ca_file,
                no_system_ca=client.no_system_ca,
                max_bytes=config.run.max_token_bytes,
                follow_cross_origin=client.follow_cross_origin_redirects,
            )
        except AgentError as exc:
            logger.error("Revocation list %s: not pulled: %s", shown, exc)
            return
        if result.body is None:
            logger.debug("Revocation list %s: not modified", shown)
            return
        try:
            parsed = parse_revocation_list(
                result.body.strip(), config, revoked=self._revoked(), now=self._clock()
            )
        except VerifyError as exc:
            logger.error("Revocation list %s: refused (reason %s): %s", shown, exc.reason, exc)
            return
        if current is not None and result.body.strip() == current.token:
            # A file (or a server without validators) gives the whole body every time: the same
            # list is not applied, logged or audited again.
            logger.debug("Revocation list %s: unchanged", shown)
            return
        if current is not None and parsed.iat < current.parsed.iat:
            logger.warning(
                "Revocation list %s: ignored, issued at %d, older than the one held (%d)",
                shown,
                parsed.iat,
                current.parsed.iat,
            )
            return
        held = HeldList(result.body.strip(), parsed, result.etag, result.last_modified)
        self._held[path] = held
        logger.info(
            "Revocation list %s: %d entries (iat %d)", shown, len(parsed.entries), parsed.iat
        )
        if self.on_applied is not None:
            self.on_applied(shown, parsed)
        await asyncio.to_thread(self._save, path, held)

    def _paths(self, path: str) -> tuple[Path, Path]:
        digest = hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]
        return self._dir / f"{_PREFIX}{digest}.jwt", self._dir / f"{_PREFIX}{digest}.meta.json"

    def _save(self, path: str, held: HeldList) -> None:
        token_path, meta_path = self._paths(path)
        meta = {"path": safe_url(path), "etag": held.etag, "last_modified": held.last_modified}
        try:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(token_path, held.token + "\n", mode=0o600)
            atomic_write(meta_path, json.dumps(meta) + "\n", mode=0o600)
        except OSError as exc:
            logger.error("Revocation list %s: not kept in %s: %s", safe_url(path), self._dir, exc)

    def load_held(self, config: Config) -> None:
        """The lists kept in stateDir, verified again (a list that fails now is dropped)."""
        for path in config.run.revocation_paths:
            token_path, meta_path = self._paths(path)
            try:
                token = token_path.read_text(encoding="utf-8").strip()
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            try:
                parsed = parse_revocation_list(
                    token, config, revoked=self._revoked(), now=self._clock()
                )
            except VerifyError as exc:
                logger.warning("Revocation list kept for %s: dropped: %s", safe_url(path), exc)
                continue
            etag = meta.get("etag") if isinstance(meta, dict) else ""
            modified = meta.get("last_modified") if isinstance(meta, dict) else ""
            self._held[path] = HeldList(
                token,
                parsed,
                etag if isinstance(etag, str) else "",
                modified if isinstance(modified, str) else "",
            )
        self._publish()


def kept_revocations(config: Config, gate: TrustGate) -> None:
    """Give ``gate`` the lists the daemon keeps in ``stateDir`` (the CLI: ``jwt -s``, ``render
    -s``), verified again; nothing is pulled."""
    if not config.run.revocation_paths:
        return
    puller = RevocationPuller(lambda: config, gate, Path(config.run.state_dir or "."))
    puller.load_held(config)
