"""The runner: admitted token → render → diff → execute → save → events.

Responsibility: everything between "the gate admitted a token" and "its commands ran and the
state was saved", plus restoring a source's stored token at start-up and re-admitting it before
every later run (SPEC 31).

Diff-run (reference etcha-run.md §4.4): under the source's lock (none with ``runMulti``) the gate
re-checks the rollback mark (:meth:`~agent.trust.gate.TrustGate.recheck`: the only check that can
change while the run waited), then the token is rendered (by a forked render worker,
:mod:`agent.daemon.render_worker`, so the daemon never loads the Jsonnet engine; in a worker thread
when ``renderer`` is unset), diffed against the
stored pattern and run. A request in check mode (``?check=true``) changes nothing and saves
nothing. ``checkOnly`` sources run only checks but, as in Etcha, still record the accepted token
in memory. State is saved only after a successful run, atomically, unless ``noRestore``.

An ad-hoc token (:func:`agent.daemon.sources.is_adhoc`) runs once under the source lock, as a
first run of its one command: nothing is diffed, removed or saved, and the source's stored token,
pattern and rollback mark stay as they were.

Invariants: nothing is rendered (no Jsonnet native runs) for a token the gate refused; the mark
only moves up (the largest of the mark in memory, the mark the run started with and the token's
``iat``), computed under the source's save lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.config.execs import source_exec
from agent.core.errors import AgentError, VerifyError
from agent.core.gojson import dumps_compact
from agent.daemon.audit import AuditLog, NoAudit
from agent.daemon.render_worker import Renderer
from agent.daemon.revocations import RevocationPuller
from agent.daemon.sources import Pulled, SourceTable, SourceView, StoredPattern, is_adhoc
from agent.daemon.state import SourceMeta, StateStore
from agent.daemon.status import LastRun, Refusal, log_summary
from agent.daemon.telemetry import DaemonMetrics
from agent.jws.tokens import decode_token
from agent.pattern.load import load_from_token
from agent.run.engine import Result, RunOutcome, diff_run
from agent.trust.gate import AdmittedToken, Context, TrustGate, stored_action
from agent.trust.policy import next_high_water
from agent.trust.revocation import RevocationList

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.daemon.events import EventDispatcher
    from agent.run.hooks import CommandObserver, InProcess

    #: Makes the in-process helper hook for a config (``None``: spawn every script); ``agent
    #: run`` passes :func:`agent.tools.inprocess.helper_runner`.
    InProcessFactory = Callable[[Config], InProcess | None]

logger = logging.getLogger(__name__)


class RefusedUnderLock(AgentError):
    """The gate refused a token on its re-check under the source lock (logged, counted).

    A push answers it with the same empty 404 as every other refusal; a pull run reports it.
    """


@dataclass(frozen=True, slots=True)
class RunRequest:
    """One diff-run of a source.

    Attributes:
        check: a check-mode request: run checks only, save nothing.
        parent_id_filter: restrict runs to matching parent ids.
        trigger: ``push``, ``pull`` or ``init`` (logs, metrics).
        meta: metadata to store with the token (pull validators, the mark seen before).
        remote: the pusher's address (metrics labels, ``ETCHA_EVENT_SRC``).
        origin: for the gate's log line, e.g. ``from 10.0.0.7``.
    """

    check: bool = False
    parent_id_filter: re.Pattern[str] | None = None
    trigger: str = "push"
    meta: SourceMeta | None = None
    remote: str = ""
    origin: str = ""


@dataclass(slots=True)
class _Attempt:
    """What one run got as far as (the outcome, when commands ran), for :class:`LastRun`."""

    outcome: RunOutcome | None = None
    check: bool = False


def empty_result(err: str = "") -> Result:
    """A Result with nothing run (``err`` says why)."""
    return Result(err=err)


def _raw_iat(raw: str) -> int | None:
    """The ``iat`` of a stored token, decoded without trusting it (only to keep a mark)."""
    try:
        iat = decode_token(raw).claims.get("iat")
    except AgentError:
        return None
    return int(iat) if isinstance(iat, int | float) and not isinstance(iat, bool) else None


def _utc_text(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Runner:
    """Renders, diffs, runs and saves admitted tokens for the sources of one :class:`SourceTable`.

    Args:
        config: returns the current config.
        table: the sources' runtime state.
        gate: the trust gate (re-admission, the re-check under the lock).
        state: the state store.
        view: what event receivers see of the daemon.
        events: the event dispatcher (``None``: no events).
        metrics: the metrics interface.
        observer: the default command observer.
        disable_external: disable external Jsonnet natives when rendering.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        table: SourceTable,
        gate: TrustGate,
        state: StateStore,
        *,
        view: SourceView,
        events: EventDispatcher | None,
        metrics: DaemonMetrics,
        observer: CommandObserver | None = None,
        disable_external: bool = False,
    ) -> None:
        self._config = config
        #: Returns the current config (pull and ingress share it).
        self.config_fn = config
        self.table = table
        self.gate = gate
        self.state = state
        self.view = view
        self.events = events
        self.metrics = metrics
        self.observer = observer
        self.disable_external = disable_external
        #: Set by ``agent run`` (the daemon layer cannot import the helpers).
        self.inprocess: InProcessFactory | None = None
        #: The hook built for the config in force: one per config, not one per run.
        self._hook: tuple[Config, InProcess | None] | None = None
        #: Renders tokens outside the daemon's process (the service sets it: the daemon never
        #: loads the Jsonnet engine); ``None`` renders in a worker thread.
        self.renderer: Renderer | None = None
        #: The audit log (set by the service): each finished run is recorded, with its receipt.
        self.audit: AuditLog | NoAudit = NoAudit()
        #: ``run.revocationPaths``: pulled before restores and re-admissions (docs/security.md).
        self.revocations = RevocationPuller(
            config, gate, state.state_dir, on_applied=self._revocations_applied
        )

    def _inprocess_hook(self) -> InProcess | None:
        """The in-process helper hook for the current config (rebuilt only after a reload)."""
        if self.inprocess is None:
            return None
        config = self._config()
        if self._hook is None or self._hook[0] is not config:
            self._hook = (config, self.inprocess(config))
        return self._hook[1]

    # ------------------------------------------------------------------ restore and re-admission

    def load_static(self, name: str) -> None:
        """Load a source's config commands as its static pattern (the fallback)."""
        config = self._config()
        src = config.sources[name]
        rt = self.table[name]
        if not src.commands:
            return
        # Parsed and validated when the config loaded.
        rt.pattern = StoredPattern(src.commands, source_exec(config, name), "static")
        rt.static = rt.pattern
        logger.info("Loading config commands for %s", name)

    async def restore(self, name: str) -> None:
        """Restore a source's stored token: keep its mark, re-admit it, render it (SPEC 31).

        The rollback mark survives even when the stored token is not restored (it expired, its
        key was removed, the policy refuses it): a later push or pull is still judged against
        it. The token file is written before the meta file, so the stored token's own ``iat``
        also counts (a crash between the two writes, or a lost meta file).
        """
        await self.revocations.due()
        try:
            stored = await asyncio.to_thread(self.state.load, name)
        except AgentError as exc:
            logger.error("Source %s: cached token not restored: %s", name, exc)
            return
        if stored is None:
            return
        rt = self.table[name]
        marks = [m for m in (stored.meta.high_water_iat, _raw_iat(stored.token)) if m is not None]
        rt.meta = SourceMeta(high_water_iat=max(marks) if marks else None)
        try:
            token = await self.gate.admit(
                stored.token,
                name,
                Context.RESTORE,
                origin="(cached)",
                action=stored_action(stored.meta.action),
            )
        except AgentError as exc:
            self.refused(name, "restore", exc)
            return  # logged and counted by the gate
        try:
            loaded = await self._render(name, token, origin="cached")
        except AgentError as exc:
            logger.error("Source %s: cached token did not render: %s", name, exc)
            return
        logger.info("Loading cached config for %s", name)
        if token.exp and token.exp < time.time():
            logger.info(
                "Source %s: the stored token expired at %s; it stays applied until a newer one "
                "is accepted",
                name,
                _utc_text(token.exp),
            )
        rt.token = token
        rt.meta = dataclasses.replace(stored.meta, high_water_iat=rt.meta.high_water_iat)
        rt.pattern = loaded
        if stored.meta.etag or stored.meta.last_modified:
            rt.pulled = Pulled(token, stored.meta.etag, stored.meta.last_modified)

    async def readmit(self, name: str) -> bool:
        """Re-admit the source's stored token before its pattern runs again (SPEC 31).

        The gate checks it in the ``run`` context (keys, key windows, ``allowedKeys``,
        ``verifyCommands``; not ``exp``/``nbf``/``maxTokenAge``). A refused token is withdrawn:
        the source falls back to its config commands (or nothing) and the mark stays.

        Returns:
            Whether the source may run its stored pattern (``True`` without a stored token).
        """
        await self.revocations.due()
        rt = self.table.get(name)
        if rt is None or rt.token is None:
            return True
        token = rt.token
        try:
            await self.gate.admit(
                token.raw, name, Context.RUN, origin="(stored token)", action=token.action
            )
        except VerifyError as exc:
            self.refused(name, "run", exc)
            rt.withdraw(token)
            logger.error(
                "Source %s: the stored token is no longer accepted (%s); its pattern stops "
                "running until a new one is accepted",
                name,
                exc.reason,
            )
            return False
        except AgentError:
            return False
        return True

    async def admitted_pattern(self, name: str) -> StoredPattern | None:
        """The pattern events and webhooks may run now: the stored one, re-admitted first."""
        if not await self.readmit(name):
            return None
        return self.table.pattern(name)

    # ------------------------------------------------------------------ diff-run

    async def run(self, name: str, token: AdmittedToken | None, req: RunRequest) -> Result:
        """Diff-run a source, then record metrics and fire the ``push`` system event.

        ``etcha_sources_total`` rises by exactly one per run that had something to run;
        ``etcha_sources_commands`` is set after a successful non-check, non-ad-hoc run;
        ``agent_pattern_expires_in_seconds`` follows the stored token. A non-check push fires
        ``push`` with the Result as compact JSON.

        Args:
            name: the source.
            token: an admitted token, or ``None`` to run the stored pattern.
            req: the run's options.

        Returns:
            The Result.

        Raises:
            RefusedUnderLock: the gate refused ``token`` on its re-check under the lock.
        """
        runnable = token is not None or self.table.pattern(name) is not None
        attempt = _Attempt(check=req.check)
        started = time.monotonic()
        result, adhoc = await self._run_locked(name, token, req, attempt)
        key_id = self.table.key_id(name, token)
        if runnable:
            self._count(name, req, result, adhoc=adhoc, key_id=key_id)
            duration = time.monotonic() - started
            self._record(name, req, result, attempt, duration)
            result = await self.audit.record_run(
                name,
                token,
                trigger=req.trigger,
                remote=req.remote,
                result=result,
                duration=duration,
                check=attempt.check,
            )
        if req.trigger == "push" and token is not None and not req.check:
            result = await self._fire_push(name, result, key_id=key_id, remote=req.remote)
        return result

    def _record(
        self, name: str, req: RunRequest, result: Result, attempt: _Attempt, duration: float
    ) -> None:
        """Keep the run for the status endpoint and log its one summary line."""
        run = LastRun.of(
            result, attempt.outcome, trigger=req.trigger, duration=duration, check=attempt.check
        )
        rt = self.table.get(name)
        if rt is not None:
            rt.last_run = run
        log_summary(name, run)

    def _revocations_applied(self, path: str, parsed: RevocationList) -> None:
        """A newly pulled revocation list is in force: the audit log records it."""
        self.audit.record_revocations(
            "", revoked=[e.key for e in parsed.entries], origin=path, listIat=parsed.iat
        )

    def refused(self, name: str, trigger: str, reason: BaseException | str) -> None:
        """Keep a refusal of a token for ``name`` (logged and counted where it happened).

        Args:
            name: the source (unknown sources are not kept).
            trigger: ``push``, ``pull``, ``run`` or ``restore``.
            reason: the reason, or the gate's error (its ``reason``).
        """
        rt = self.table.get(name)
        if rt is not None:
            if not isinstance(reason, str):
                reason = str(getattr(reason, "reason", "") or "error")
            rt.last_refusal = Refusal(time=time.time(), trigger=trigger, reason=reason)

    def _count(
        self, name: str, req: RunRequest, result: Result, *, adhoc: bool, key_id: str
    ) -> None:
        metrics = self.metrics
        metrics.source_run(name, req.trigger, bool(result.err), key_id, req.remote)
        if not result.err and not req.check and not adhoc:
            metrics.set_source_commands(
                name,
                req.trigger,
                changed=len(result.changed_ids),
                removed=len(result.removed_ids),
                public_key=key_id,
                remote_addr=req.remote,
            )
        stored = self.table.token(name)
        metrics.pattern_expiry(name, stored.exp if stored is not None else None)

    async def _fire_push(self, name: str, result: Result, *, key_id: str, remote: str) -> Result:
        if self.events is None:
            return result
        output = dumps_compact(result.to_json()).decode("utf-8")
        try:
            if await self.events.fire(
                self.view, name, "push", output, public_key=key_id, remote_addr=remote
            ):
                return dataclasses.replace(result, exit=True)
        except AgentError as exc:
            logger.error("Source %s: push event failed: %s", name, exc)
        return result

    async def _render(self, name: str, token: AdmittedToken, *, origin: str) -> StoredPattern:
        """Render an admitted token outside the process (``renderer``) or in a worker thread.

        Raises:
            AgentError: it did not render.
        """
        if self.renderer is not None:
            loaded = await self.renderer.render(
                token, config=self._config(), source=name, disable_external=self.disable_external
            )
        else:
            loaded = await asyncio.to_thread(
                load_from_token,
                token,
                config=self._config(),
                source=name,
                disable_external=self.disable_external,
            )
        return StoredPattern(loaded.pattern.run, loaded.run_exec, origin)

    async def _run_locked(
        self, name: str, token: AdmittedToken | None, req: RunRequest, attempt: _Attempt
    ) -> tuple[Result, bool]:
        """Under the source lock: re-check the mark, render, diff-run, save, dispatch events."""
        src = self._config().sources[name]
        rt = self.table[name]
        lock: contextlib.AbstractAsyncContextManager[Any] = (
            contextlib.nullcontext() if src.run_multi else rt.lock
        )
        async with lock:
            if token is None:
                new = rt.pattern
                if new is None:
                    logger.debug("Source %s: no pattern with runnable commands", name)
                    return empty_result(), False
            else:
                try:
                    self.gate.recheck(token, origin=req.origin)
                except VerifyError as exc:
                    self.refused(name, req.trigger, exc)
                    raise RefusedUnderLock(
                        f"source {name}: token refused by the trust policy"
                    ) from exc
                try:
                    new = await self._render(name, token, origin=req.trigger)
                except AgentError as exc:
                    logger.error("Source %s: token did not render: %s", name, exc)
                    return empty_result(str(exc)), False
            adhoc = token is not None and is_adhoc(new.run)
            return await self._execute(name, token, new, req, adhoc=adhoc, attempt=attempt), adhoc

    async def _execute(
        self,
        name: str,
        token: AdmittedToken | None,
        new: StoredPattern,
        req: RunRequest,
        *,
        adhoc: bool,
        attempt: _Attempt,
    ) -> Result:
        """Diff-run ``new`` against the stored pattern (the source lock is held)."""
        src = self._config().sources[name]
        rt = self.table[name]
        old = rt.pattern if token is not None and not adhoc else None
        check_mode = req.check or src.check_only
        attempt.check = check_mode
        outcome: RunOutcome | None = None
        if adhoc:
            logger.info(
                "Running ad-hoc command for %s (%s); the stored pattern stays", name, req.trigger
            )
        elif not src.trigger_only:
            logger.debug("Diffing Pattern for %s (%s)", name, req.trigger)
        if adhoc or not src.trigger_only:
            try:
                outcome = await diff_run(
                    new.run,
                    old.run if old is not None else None,
                    exec=new.run_exec,
                    check=check_mode,
                    no_remove=src.no_remove,
                    source=name,
                    parent_id_filter=req.parent_id_filter,
                    observer=self._observer_for(name, token, req.remote),
                    inprocess=self._inprocess_hook(),
                    persistent_shell=self._config().run.persistent_shell,
                )
            except AgentError as exc:
                logger.error("Source %s: run failed: %s", name, exc)
                return empty_result(str(exc))
            attempt.outcome = outcome
            if outcome.error is not None or req.check or adhoc:
                return await self._finish_early(name, token, outcome, req, check_mode)
        # Check mode saves no state: a checkOnly source keeps the accepted pattern in memory
        # (event and webhook handlers run it, as in Etcha) but writes nothing to stateDir.
        if token is not None and not src.no_restore and not check_mode:
            try:
                await self.save(name, token, req.meta)
            except AgentError as exc:
                logger.error("Source %s: state not saved: %s", name, exc)
                return empty_result(str(exc))
        if token is not None:
            rt.token = token
        rt.pattern = new
        if outcome is None:
            return empty_result()
        return await self._with_events(name, token, outcome, req, check_mode)

    async def _finish_early(
        self,
        name: str,
        token: AdmittedToken | None,
        outcome: RunOutcome,
        req: RunRequest,
        check_mode: bool,
    ) -> Result:
        """A failed run, a check-mode request or an ad-hoc command: nothing is saved."""
        if outcome.error is not None:
            logger.error("Source %s: run failed: %s", name, outcome.error)
            result = Result.from_outcome(outcome, check=check_mode)
            if req.check:
                return result
            exit_ = await self._dispatch(name, outcome, token=token, remote=req.remote)
            return dataclasses.replace(result, exit=exit_)
        if req.check:
            return Result.from_outcome(outcome, check=True)
        return await self._with_events(name, token, outcome, req, check_mode)

    async def _with_events(
        self,
        name: str,
        token: AdmittedToken | None,
        outcome: RunOutcome,
        req: RunRequest,
        check_mode: bool,
    ) -> Result:
        result = Result.from_outcome(outcome, check=check_mode)
        exit_ = await self._dispatch(name, outcome, token=token, remote=req.remote)
        return dataclasses.replace(result, exit=exit_) if exit_ else result

    def _observer_for(self, name: str, token: AdmittedToken | None, remote: str) -> Any:
        """The command observer of one run: per-source metrics labels, else ``observer``."""
        observer = self.metrics.command_observer(
            name, public_key=self.table.key_id(name, token), remote_addr=remote
        )
        return observer if observer is not None else self.observer

    async def save(self, name: str, token: AdmittedToken, meta: SourceMeta | None) -> None:
        """Store ``token`` and move the rollback mark, serialised per source (also with runMulti).

        The mark is computed under the save lock as the largest of the mark in memory now, the
        mark ``meta`` carried (taken before the run) and the token's ``iat``, so a concurrent
        push and pull, or ``allowRollback``, can never lower it.
        """
        rt = self.table[name]
        async with rt.save_lock:
            base = meta or dataclasses.replace(rt.meta, etag="", last_modified="")
            marks = [m for m in (rt.meta.high_water_iat, base.high_water_iat) if m is not None]
            high = next_high_water(max(marks) if marks else None, token.verified)
            action = token.action.value if token.action is not None else base.action
            new_meta = dataclasses.replace(
                base, high_water_iat=high, accepted_at=time.time(), action=action
            )
            logger.info("Saving JWT for %s", name)
            await asyncio.to_thread(self.state.save, name, token, new_meta)
            rt.meta = new_meta

    async def _dispatch(
        self, name: str, outcome: RunOutcome, *, token: AdmittedToken | None, remote: str
    ) -> bool:
        if self.events is None:
            return False
        try:
            return await self.events.dispatch(
                self.view,
                name,
                outcome,
                public_key=self.table.key_id(name, token),
                remote_addr=remote,
            )
        except AgentError as exc:
            logger.error("Source %s: event dispatch failed: %s", name, exc)
            return False


__all__ = ["RefusedUnderLock", "RunRequest", "Runner", "empty_result"]
