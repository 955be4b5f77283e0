"""`agent run`: the daemon's lifecycle (start-up, schedules, signals, reload, shutdown).

The work is split: ``sources`` (per-source state), :mod:`agent.trust.gate` (admission), ``runner``
(render, diff, run, save), ``pull``, ``ingress`` (pushes) and ``app`` (listener, TLS, routes), all
in :mod:`agent.daemon`. :class:`Service` wires them and is the SourceView events and webhooks see.

Start-up (reference etcha-run.md §4.2, SPEC 6 and 21): refuse a token source without a verifier;
load each source in name order (static ``commands``, else, unless ``noRestore``, the stored token,
admitted again in the ``restore`` context and rendered); sleep ``0..randomizedStartDelaySec``; run
each once (``init``); start the listener (unless ``-o``); notify ``READY=1``; schedule runs.

Lifecycle: SIGTERM/SIGINT stop the listener, wait (bounded) for in-flight runs, exit 0. SIGHUP
re-reads the config (added sources load and run once, removed ones are unscheduled, kept ones'
tokens are re-admitted at once; the log says what changed; listener settings need a restart).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from agent.core.errors import AgentError, ConfigError
from agent.daemon import schedule, sdnotify
from agent.daemon.app import listener_changed, start_app
from agent.daemon.audit import audit_session, open_audit
from agent.daemon.events import EventDispatcher, Events
from agent.daemon.httpmw import app_extras
from agent.daemon.ingress import Ingress, PushOutcome
from agent.daemon.pull import Puller
from agent.daemon.render_worker import Renderer
from agent.daemon.replay import ReplayJournal
from agent.daemon.runner import Runner
from agent.daemon.sources import SourceTable, StoredPattern
from agent.daemon.state import StateStore, check_state_dir
from agent.daemon.status import status_document
from agent.daemon.tasks import Inflight
from agent.daemon.telemetry import DaemonMetrics, Exposition, NoMetrics, metrics_for
from agent.daemon.webhooks import check_webhook_paths
from agent.trust.gate import AdmittedToken, TrustGate, warn_expiring_keys
from agent.trust.verify import check_verifiers

if TYPE_CHECKING:
    import re

    from agent.config.schema import Config
    from agent.daemon.runner import InProcessFactory
    from agent.run.engine import Result
    from agent.run.hooks import CommandObserver

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long shutdown waits for in-flight runs before cancelling them.
SHUTDOWN_GRACE_SECONDS = 30.0


class Service:
    """The daemon for one config: sources, their runs, the listener and the lifecycle.

    Args:
        config: the loaded config.
        state: the state store (default: ``StateStore(config.run.state_dir)``).
        observer: the default command observer.
        events: event dispatcher (default: none; :class:`~agent.daemon.events.Events` in run).
        disable_external: disable external Jsonnet natives when rendering tokens.
        metrics: the metrics (default: :class:`~agent.daemon.telemetry.NoMetrics`).
    """

    def __init__(
        self,
        config: Config,
        *,
        state: StateStore | None = None,
        observer: CommandObserver | None = None,
        events: EventDispatcher | None = None,
        disable_external: bool = False,
        metrics: DaemonMetrics | None = None,
    ) -> None:
        self._config = config
        self._inflight = Inflight()
        self.state = state or StateStore(
            Path(config.run.state_dir or "."), max_token_bytes=config.run.max_token_bytes
        )
        self.observer = observer
        self.metrics: DaemonMetrics = metrics if metrics is not None else NoMetrics()
        self.exposition = metrics if isinstance(metrics, Exposition) else None
        self.sources = SourceTable(list(config.sources))
        self.replay = ReplayJournal(self.state)
        self.audit = open_audit(config)  # the gate's observer; runs record their receipts
        self.gate = TrustGate(
            config,
            marks=self.sources.mark,
            replay=self.replay,
            on_replay=self.replay.persist,
            metrics=self.metrics,
            observer=self.audit,
        )
        self.runner = Runner(
            lambda: self._config,
            self.sources,
            self.gate,
            self.state,
            view=self,
            events=events,
            metrics=self.metrics,
            observer=observer,
            disable_external=disable_external,
        )
        self.runner.audit = self.audit
        self.runner.renderer = Renderer()  # the daemon never loads the Jsonnet engine
        self.puller = Puller(self.runner)
        self.ingress = Ingress(
            self.runner, stopping=lambda: self._stopping, track=self._inflight.track
        )
        self._stopping = False
        self._stop_event: asyncio.Event | None = None
        self._scheduler: schedule.Jobs | None = None

    @property
    def config(self) -> Config:
        """The current config (replaced at SIGHUP)."""
        return self._config

    @property
    def source_names(self) -> list[str]:
        """Configured source names, sorted."""
        return self.sources.names

    def stored_pattern(self, source: str) -> StoredPattern | None:
        """The pattern a source would run now."""
        return self.sources.pattern(source)

    def stored_token(self, source: str) -> AdmittedToken | None:
        """The token a source last admitted (restored, pushed or pulled)."""
        return self.sources.token(source)

    async def admitted_pattern(self, source: str) -> StoredPattern | None:
        """The stored pattern, after its token was re-admitted (``None``: withdrawn)."""
        return await self.runner.admitted_pattern(source)

    async def tracked(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` as a task that shutdown waits for; a caller's cancel does not stop it."""
        return await self._inflight.run(coro)

    def stop(self) -> None:
        """Ask :meth:`serve` to shut down (signal handlers call this)."""
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()

    def status(self) -> dict[str, Any]:
        """The ``GET /etcha/v1/system/status`` document (:mod:`agent.daemon.status`)."""
        return status_document(self.sources, self._next_run)

    def _next_run(self, name: str) -> float | None:
        return self._scheduler.next_run(name) if self._scheduler is not None else None

    async def load(self) -> None:
        """Load every source's pattern (static, then the stored token re-admitted), in name order.

        Raises:
            ConfigError: a token-accepting source has no verifier (nothing is loaded then).
        """
        check_verifiers(self._config)
        try:
            removed = await asyncio.to_thread(self.state.remove_stale_temp_files)
        except OSError as exc:
            logger.warning("State directory: stale temporary files not removed: %s", exc)
        else:
            for path in removed:
                logger.info("Removed a temporary file a crashed write left: %s", path)
        warn_expiring_keys(self._config)
        await self.replay.restore()
        for name in self.source_names:
            await self._load_source(name)

    async def _load_source(self, name: str) -> None:
        self.runner.load_static(name)
        if not self._config.sources[name].no_restore:
            await self.runner.restore(name)

    async def init_runs(self) -> dict[str, Result]:
        """Run every source once, in name order (the start-up run and ``-o``)."""
        results: dict[str, Result] = {}
        for name in self.source_names:
            if self._stopping:
                break
            results[name] = await self.tracked(self.run_source(name, init=True))
        return results

    async def run_source(self, name: str, *, init: bool = False) -> Result:
        """Pull (when the source has pullPaths) and diff-run the source."""
        return await self.puller.run_source(name, init=init)

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
    ) -> PushOutcome:
        """A push (see :meth:`agent.daemon.ingress.Ingress.handle_push`)."""
        return await self.ingress.handle_push(
            source, token, check=check, parent_id_filter=parent_id_filter, remote=remote
        )

    async def run_once(self) -> int:
        """``agent run -o``: load, run every source once, no listener; 1 if any failed."""
        await self.load()
        results = await self.init_runs()
        failed = sorted(name for name, r in results.items() if r.err)
        for name in failed:
            logger.error("Source %s failed: %s", name, results[name].err)
        return 1 if failed else 0

    async def _start_delay(self) -> None:
        await schedule.start_delay(self._config, self._stop_event)

    async def _tick(self, name: str) -> None:
        if self._stopping or name not in self.sources:
            return
        try:
            result = await self.tracked(self.run_source(name))
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("Source %s: periodic run crashed", name)
            return
        if result.err:
            logger.error("Source %s: periodic run failed: %s", name, result.err)
        if result.exit:
            logger.info("Source %s: exit requested by an event receiver", name)
            self.stop()

    def _sync_jobs(self) -> None:
        if self._scheduler is not None:
            self._scheduler.sync(self._config, self.source_names, self._tick)

    async def reload(self, fresh: Config) -> list[str]:
        """Apply a re-read config (SIGHUP); return the top-level sections that changed.

        Raises ConfigError when a token source has no verifier (nothing is applied then)."""
        check_verifiers(fresh)
        old, new = self._config.to_dict(), fresh.to_dict()
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if not changed:
            return changed
        if listener_changed(old["run"], new["run"]):
            logger.warning("SIGHUP: listener settings changed; restart the agent to apply them")
        added = sorted(set(fresh.sources) - set(self.sources.names))
        removed = sorted(set(self.sources.names) - set(fresh.sources))
        self._config = fresh
        self.gate.config = fresh
        for name in removed:
            self.sources.remove(name)
            logger.info("SIGHUP: source %s removed", name)
        for name in added:
            self.sources.add(name)
            await self._load_source(name)
        for name in sorted(set(self.sources.names) - set(added)):
            await self.runner.readmit(name)  # a removed or retired key withdraws the pattern now
        self._sync_jobs()
        self.audit.record("reload", changed=changed, added=added, removed=removed)
        for name in added:
            logger.info("SIGHUP: source %s added", name)
            result = await self.tracked(self.run_source(name, init=True))
            if result.err:
                logger.error("Source %s failed: %s", name, result.err)
        return changed

    async def _reload(self, loader: Callable[[], Config] | None) -> None:
        if loader is None:
            logger.info("SIGHUP: no config loader; ignoring")
            return
        sdnotify.reloading()
        try:
            fresh = await asyncio.to_thread(loader)
            changed = await self.reload(fresh)
        except AgentError as exc:
            logger.error("SIGHUP: config not reloaded: %s", exc)
            return
        finally:
            sdnotify.ready()
        if changed:
            logger.info("SIGHUP: config sections changed: %s", ", ".join(changed))
        else:
            logger.info("SIGHUP: config unchanged")

    async def serve(self, *, config_loader: Callable[[], Config] | None = None) -> int:
        """Run until SIGTERM/SIGINT (load, start-up runs, listener, schedules, drain); 0 after a
        clean stop. ``config_loader`` re-reads the config on SIGHUP. Raises ConfigError (no
        verifier, bad listen address) or SourceError (the listener could not start)."""
        loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(
            signal.SIGHUP,
            lambda: self._inflight.track(loop.create_task(self._reload(config_loader))),
        )
        runner: Any = None
        try:
            await self.load()
            await self._start_delay()
            if not self._stopping:
                init = loop.create_task(self.init_runs())
                stop_wait = loop.create_task(self._stop_event.wait())
                await asyncio.wait({init, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
            if not self._stopping:
                runner = await self._serving(self._stop_event)
            await self._inflight.drain(SHUTDOWN_GRACE_SECONDS)
            await self.replay.close()  # compact the replay journal (agent.daemon.replay)
        finally:
            if runner is not None:
                await runner.cleanup()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        logger.info("Stopped")
        return 0

    async def _serving(self, stop_event: asyncio.Event) -> Any:
        """Listener, READY=1, schedules and the watchdog until stopped; then stop accepting."""
        runner = await start_app(
            self._config,
            self.ingress,
            extras=app_extras(self, self.exposition, self.status),
            on_refused=self.metrics.connection_refused,
            audit=self.audit.record,
        )
        sdnotify.ready()
        sdnotify.status(f"running {len(self.sources)} source(s)")
        self._scheduler = schedule.Jobs()
        self._sync_jobs()
        if self._config.nats.enabled:
            from agent.daemon import nats_host  # lazy: the NATS side, only with `nats.servers`

            nats_host.start(self, stop_event, track=self._inflight.track)
        watchdog = asyncio.get_running_loop().create_task(schedule.watchdog())
        await stop_event.wait()
        watchdog.cancel()
        logger.info("Stopping: no new requests; waiting for running sources")
        sdnotify.stopping()
        self._scheduler.shutdown()
        if runner is not None:
            for site in list(runner.sites):
                await site.stop()
        return runner

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("Received %s", sig.name)
        self.stop()


Daemon = Service  # the name the tests and older callers use


def run_daemon(
    config: Config,
    *,
    once: bool = False,
    config_loader: Callable[[], Config] | None = None,
    disable_external: bool = False,
    inprocess: InProcessFactory | None = None,
) -> int:
    """Entry point for ``agent run`` (blocking).

    ``once`` is ``-o`` (run every source once, exit 1 if any failed); ``config_loader`` re-reads
    the config on SIGHUP; ``inprocess`` the helper hook. Raises ConfigError (a webhook path under
    ``/etcha``, ``-o`` without sources, :meth:`Service.serve`'s) or SourceError (bad stateDir).
    """
    check_webhook_paths(config)
    if once and not config.sources:
        raise ConfigError("agent run -o: no sources configured (expected sources.<name>, got none)")
    check_state_dir(Path(config.run.state_dir or "."))

    metrics = metrics_for(config.run.system_metrics_key)

    async def main() -> int:
        service = Service(
            config, disable_external=disable_external, events=Events(), metrics=metrics
        )
        service.runner.inprocess = inprocess
        async with audit_session(service.audit, once=once or None):
            if once:
                return await service.run_once()
            return await service.serve(config_loader=config_loader)

    return asyncio.run(main())


__all__ = ["Daemon", "Service", "check_state_dir", "check_verifiers", "run_daemon"]
