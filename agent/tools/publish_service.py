"""`agent publish` as a service: a check every ``publish.checkFrequency`` (jittered ±10 %), SIGHUP
re-reads the config, SIGTERM/SIGINT let the running check finish and exit 0 (as ``agent run``).

Metrics (:class:`PublishMetrics`, on its own registry; prometheus_client imported only when
``run.systemMetricsKey`` is set):

- ``agent_publish_expires_in_seconds{artifact,dest}`` gauge, ``exp - now`` at scrape time;
- ``agent_publish_total{artifact,dest,result}`` counter, result ``fresh``/``published``/``failed``;
- ``agent_publish_last_success_timestamp_seconds`` gauge: the end of the last check in which no
  destination failed.

The tools layer cannot import the daemon: the caller (``agent.cli.publish_cmds``) serves the
exposition with the daemon's metrics handler and passes the systemd notifier in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from agent.core.durations import format_duration_short
from agent.core.errors import AgentError
from agent.tools.publish import DestReport, Publisher

if TYPE_CHECKING:
    from agent.config.schema import Config

logger = logging.getLogger(__name__)

#: Each wait is ``checkFrequency`` times a factor drawn from this range.
JITTER = (0.9, 1.1)


class Notifier(Protocol):
    """The systemd notifications the service sends (:mod:`agent.daemon.sdnotify` fits)."""

    def ready(self) -> bool: ...
    def stopping(self) -> bool: ...
    def reloading(self) -> bool: ...


class PublishMetrics:
    """The publisher's metrics on their own registry (prometheus_client imported here)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge  # lazy: heavy

        self._clock = clock
        self._expiry: dict[tuple[str, str], float] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self._total = Counter(
            "agent_publish",
            "Destination checks, by result (fresh, published, failed).",
            ["artifact", "dest", "result"],
            registry=self.registry,
        )
        self._success = Gauge(
            "agent_publish_last_success_timestamp_seconds",
            "Unix time of the end of the last check in which no destination failed.",
            registry=self.registry,
        )
        self.registry.register(_ExpiryCollector(self))

    def record(self, reports: Sequence[DestReport]) -> None:
        """Count one check's reports and keep each destination's ``exp``."""
        for report in reports:
            self._total.labels(
                artifact=report.artifact, dest=report.dest, result=report.result
            ).inc()
            if report.exp is not None:
                self._expiry[(report.artifact, report.dest)] = float(report.exp)
        if not any(report.result == "failed" for report in reports):
            self._success.set(self._clock())

    def expiries(self) -> Iterator[tuple[str, str, float]]:
        """``(artifact, dest, seconds left)`` for every destination with a known ``exp``."""
        now = self._clock()
        for (artifact, dest), exp in sorted(self._expiry.items()):
            yield artifact, dest, exp - now

    def render(self) -> tuple[bytes, str]:
        """The text exposition, without the ``*_created`` series."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # lazy: heavy

        return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE_LATEST


class _WithoutCreated:
    """The registry minus the ``*_created`` series of counters (as the daemon's metrics)."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Any]:
        for family in self._registry.collect():
            created = family.name + "_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


class _ExpiryCollector:
    def __init__(self, metrics: PublishMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # lazy: heavy

        family = GaugeMetricFamily(
            "agent_publish_expires_in_seconds",
            "Seconds until the token published at a destination expires (negative: expired).",
            labels=["artifact", "dest"],
        )
        for artifact, dest, left in self._metrics.expiries():
            family.add_metric([artifact, dest], left)
        yield family


class PublishService:
    """The service loop.

    Args:
        config: the loaded config.
        publisher_for: makes the :class:`Publisher` for a config (again after SIGHUP).
        loader: re-reads the config (SIGHUP); ``None`` ignores SIGHUP.
        metrics: the metrics, or ``None``.
        notifier: systemd notifications, or ``None``.
    """

    def __init__(
        self,
        config: Config,
        *,
        publisher_for: Callable[[Config], Publisher],
        loader: Callable[[], Config] | None = None,
        metrics: PublishMetrics | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.publisher_for = publisher_for
        self.loader = loader
        self.metrics = metrics
        self.notifier = notifier
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()

    async def check(self) -> list[DestReport]:
        """One check of every artifact (metrics recorded, failures logged; the loop goes on)."""
        try:
            reports = await self.publisher_for(self.config).check_all()
        except AgentError as exc:
            logger.error("Publish check failed: %s", exc)
            return []
        if self.metrics is not None:
            self.metrics.record(reports)
        for report in reports:
            if report.result == "failed":
                logger.error("Publish: %s", report.line())
        return reports

    def stop(self) -> None:
        """Stop after the running check."""
        self._stop.set()
        self._wake.set()

    async def _reload(self) -> None:
        if self.loader is None:
            logger.info("SIGHUP: no config loader; ignoring")
            return
        if self.notifier is not None:
            self.notifier.reloading()
        try:
            self.config = await asyncio.to_thread(self.loader)
        except AgentError as exc:
            logger.error("SIGHUP: config not reloaded: %s", exc)
        else:
            logger.info("SIGHUP: config reloaded; checking now")
            self._wake.set()
        if self.notifier is not None:
            self.notifier.ready()

    async def serve(self) -> int:
        """Check, wait ``checkFrequency`` (jittered), repeat until SIGTERM/SIGINT; 0 after."""
        loop = asyncio.get_running_loop()
        reloads: set[asyncio.Task[None]] = set()

        def on_hup() -> None:
            task = loop.create_task(self._reload())
            reloads.add(task)
            task.add_done_callback(reloads.discard)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        try:
            if self.notifier is not None:
                self.notifier.ready()
            while not self._stop.is_set():
                self._wake.clear()
                await self.check()
                wait = self.config.publish.check_frequency * random.uniform(*JITTER)  # noqa: S311 - jitter
                logger.debug("Next publish check in %s", format_duration_short(wait))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
        finally:
            if self.notifier is not None:
                self.notifier.stopping()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        logger.info("Stopped")
        return 0

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("Received %s", sig.name)
        self.stop()


__all__ = ["JITTER", "Notifier", "PublishMetrics", "PublishService"]
