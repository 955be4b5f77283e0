"""Pull (reference etcha-run.md §4.5) and the source run it feeds (Etcha ``runSource``).

Paths are tried in order; requests are conditional on the ETag/Last-Modified that came with the
token in hand, and a 304 (or identical bytes from a file) reuses that token without admitting it
again, after the gate's freeze check (``maxTokenAge``: a stale token is logged and counted on
every such pull but keeps running, SPEC 31). A new token is admitted by the gate in the ``pull``
context and replaces the stored one only when it differs by manifest, pattern files or version
(``pullIgnoreVersion``). Every tick re-runs the checks (drift correction).

A newly admitted token of the same pattern (re-signed by ``agent publish``: new ``iat``/``exp``/
``jti``) runs nothing new, but becomes the source's token: it is saved to stateDir, its ``iat``
moves the rollback mark and its ``exp`` feeds the expiry gauges.

Every pull attempt is counted in ``agent_pull_total`` and fires the ``pull`` system event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from agent.core.errors import AgentError, VerifyError
from agent.daemon.runner import RefusedUnderLock, Runner, RunRequest, empty_result
from agent.daemon.sources import Pulled
from agent.daemon.state import SourceMeta
from agent.jws.compare import same_pattern
from agent.net.fetch import FetchResult, fetch_path, is_http, safe_url
from agent.trust.gate import AdmittedToken, Context

if TYPE_CHECKING:
    from agent.run.engine import Result

logger = logging.getLogger(__name__)


class Puller:
    """Pulls tokens for sources and runs them.

    Args:
        runner: runs admitted tokens and stored patterns; its config, source table, gate,
            view, events and metrics are the puller's too.
    """

    def __init__(self, runner: Runner) -> None:
        self._config = runner.config_fn
        self.table = runner.table
        self.gate = runner.gate
        self.runner = runner
        self.view = runner.view
        self.events = runner.events
        self.metrics = runner.metrics

    async def run_source(self, name: str, *, init: bool = False) -> Result:
        """Pull (when the source has pullPaths) and diff-run the source.

        Args:
            name: the source.
            init: the start-up run (logs say so).

        Returns:
            The Result; ``err`` set on failure.
        """
        src = self._config().sources[name]
        rt = self.table[name]
        token = rt.token
        if src.pull_paths:
            pulled = await self.pull(name)
            if pulled is not None:
                if token is None or not same_pattern(
                    token.verified, pulled.token.verified, ignore_version=src.pull_ignore_version
                ):
                    logger.info("Source %s: pulled a new token", name)
                    token = pulled.token
                elif pulled.token is not token and pulled.token.raw != token.raw:
                    await self._adopt(name, pulled)
                    token = rt.token
            elif token is not None:
                logger.warning("Source %s: no pull path gave a token; using the stored token", name)
            elif rt.pattern is None:
                return empty_result(
                    f"source {name}: expected a verified token from a pull path or state, got none"
                )
        if token is not None and token is rt.token and rt.pattern is not None:
            token = None  # the stored token: run its stored pattern (drift correction)
        if token is None and not await self.runner.readmit(name):
            return empty_result(f"source {name}: the stored token is no longer accepted")
        req = RunRequest(trigger="init" if init else "pull", meta=self._meta_for(name, token))
        try:
            return await self.runner.run(name, token, req)
        except RefusedUnderLock as exc:
            return empty_result(str(exc))

    async def _adopt(self, name: str, pulled: Pulled) -> None:
        """A re-signed token of the pattern in hand becomes the source's token; nothing runs.

        Under the source lock (as a run): the rollback mark is re-checked, the token saved
        (unless ``noRestore``/``checkOnly``, which save nothing) and the expiry gauge fed.
        """
        src = self._config().sources[name]
        rt = self.table[name]
        lock: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if src.run_multi else rt.lock
        )
        new = pulled.token
        async with lock:
            current = rt.token
            if current is None or not same_pattern(
                current.verified, new.verified, ignore_version=src.pull_ignore_version
            ):
                return  # a run changed the source meanwhile; the next pull decides again
            try:
                self.gate.recheck(new, origin="(re-signed, same pattern)")
            except VerifyError as exc:
                self.runner.refused(name, "pull", exc)
                return
            if not src.no_restore and not src.check_only:
                try:
                    await self.runner.save(name, new, self._meta_for(name, new))
                except AgentError as exc:
                    logger.error("Source %s: state not saved: %s", name, exc)
                    return
            rt.token = new
        logger.info(
            "Source %s: pulled a re-signed token of the same pattern; nothing re-runs", name
        )
        self.metrics.pattern_expiry(name, new.exp)

    def _meta_for(self, name: str, token: AdmittedToken | None) -> SourceMeta | None:
        rt = self.table[name]
        if token is None:
            return None
        if rt.pulled is not None and rt.pulled.token is token:
            return dataclasses.replace(
                rt.meta, etag=rt.pulled.etag, last_modified=rt.pulled.last_modified
            )
        return dataclasses.replace(rt.meta, etag="", last_modified="")

    async def pull(self, name: str) -> Pulled | None:
        """Try each pull path in order; the first that yields an admitted token wins.

        Returns:
            The pulled token with its validators, or ``None`` when every path failed (logged).
        """
        src = self._config().sources[name]
        previous = self.table[name].pulled
        pulled = await self._pull_paths(name, src.pull_paths)
        await self._after_pull(name, previous, pulled)
        return pulled

    async def _after_pull(self, name: str, previous: Pulled | None, pulled: Pulled | None) -> None:
        """Count the pull in ``agent_pull_total`` and fire the ``pull`` system event."""
        if pulled is None:
            outcome = "error"
        elif previous is not None and pulled.token is previous.token:
            outcome = "not_modified"
        else:
            outcome = "fetched"
        self.metrics.pull(name, outcome)
        if self.events is not None:
            key_id = pulled.token.key_id if pulled is not None else ""
            try:
                await self.events.fire(self.view, name, "pull", outcome, public_key=key_id)
            except AgentError as exc:
                logger.error("Source %s: pull event failed: %s", name, exc)

    async def _fetch(self, path: str, current: Pulled | None) -> FetchResult:
        config = self._config()
        client = config.http_client
        return await fetch_path(
            path,
            etag=current.etag if current else "",
            last_modified=current.last_modified if current else "",
            tls_skip_verify=client.tls_skip_verify,
            ca_file=client.ca_file,
            no_system_ca=client.no_system_ca,
            max_bytes=config.run.max_token_bytes,
            follow_cross_origin=client.follow_cross_origin_redirects,
        )

    async def _pull_paths(self, name: str, paths: tuple[str, ...]) -> Pulled | None:
        for path in paths:
            shown = safe_url(path) if is_http(path) else path
            current = self.table[name].pulled
            try:
                fetched = await self._fetch(path, current)
            except AgentError as exc:
                logger.error("Source %s: pull path %s failed: %s", name, shown, exc)
                continue
            pulled = await self._one_path(name, shown, fetched, current)
            if pulled is not None:
                return pulled
        logger.error("Source %s: no valid token from any pull path", name)
        return None

    async def _one_path(
        self, name: str, shown: str, fetched: FetchResult, current: Pulled | None
    ) -> Pulled | None:
        """What one fetched path gives: the token in hand (304, same bytes), a new one, or none."""
        rt = self.table[name]
        if fetched.status == "not_modified" or fetched.body is None:
            if current is None:
                logger.error("Source %s: %s answered 304 but no token is in hand", name, shown)
                return None
            logger.debug("Source %s: %s not modified; keeping the token in hand", name, shown)
            rt.stale = self.gate.freeze_check(current.token, origin=f"from {shown} (not modified)")
            return current
        raw = fetched.body.strip()
        if current is not None and raw == current.token.raw:
            rt.pulled = Pulled(current.token, fetched.etag, fetched.last_modified)
            rt.stale = self.gate.freeze_check(current.token, origin=f"from {shown} (same token)")
            return rt.pulled
        try:
            token = await self.gate.admit(raw, name, Context.PULL, origin=f"from {shown}")
        except AgentError as exc:
            self.runner.refused(name, "pull", exc)
            return None  # logged (and counted) by the gate; the last good pattern keeps running
        rt.stale = False
        rt.pulled = Pulled(token, fetched.etag, fetched.last_modified)
        return rt.pulled


__all__ = ["Puller"]
