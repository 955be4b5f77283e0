"""The daemon's metrics interface: what the runner, pull, ingress, events and the listener call.

:class:`agent.daemon.metrics.Metrics` (Prometheus, imported only by ``agent run``) implements
:class:`DaemonMetrics`; :class:`NoMetrics` is the no-op used when none is attached (tests,
embedding). Callers never probe for methods by name.

Invariants: no state, no heavy imports at module level (this module is imported on every daemon
path); :func:`metrics_for` imports prometheus_client only when a metrics key is set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from agent.run.hooks import CommandObserver


class DaemonMetrics(Protocol):
    """The metric hooks the daemon calls (see :class:`agent.daemon.metrics.Metrics`)."""

    def command_observer(
        self, source: str, *, public_key: str = "", remote_addr: str = ""
    ) -> CommandObserver | None:
        """The per-run command observer (``None``: use the daemon's default observer)."""
        ...

    def source_run(
        self, name: str, trigger: str, error: bool, public_key: str = "", remote_addr: str = ""
    ) -> None:
        """Count one source run step (``etcha_sources_total``)."""
        ...

    def set_source_commands(
        self,
        name: str,
        trigger: str,
        *,
        changed: int,
        removed: int,
        public_key: str = "",
        remote_addr: str = "",
    ) -> None:
        """Set ``etcha_sources_commands`` after a successful run."""
        ...

    def pattern_expiry(self, source: str, exp_ts: float | None) -> None:
        """Record the ``exp`` of the source's current token."""
        ...

    def pull(self, source: str, result: str) -> None:
        """Count a pull attempt (``fetched``, ``not_modified``, ``error``)."""
        ...

    def verify_failure(self, source: str, reason: str) -> None:
        """Count a refused token (the trust gate calls it)."""
        ...

    def connection_refused(self, reason: str) -> None:
        """Count a connection the listener refused."""
        ...

    def shells(self, name: str, delta: int, *, public_key: str = "", remote_addr: str = "") -> None:
        """Adjust ``etcha_sources_shells`` (open shell sessions) by ``delta``."""
        ...

    def nats_connected(self, connected: bool) -> None:
        """Set ``etcha_nats_connected`` (1 while connected to NATS)."""
        ...

    def nats_message(self, source: str, status: str) -> None:
        """Count a NATS push (``ok``, ``failed``, ``refused``): ``etcha_nats_messages_total``."""
        ...


@runtime_checkable
class Exposition(Protocol):
    """Metrics that can be served (``/etcha/v1/system/metrics``)."""

    def render(self) -> tuple[bytes, str]:
        """``(body, content_type)`` of the text exposition."""
        ...


class NoMetrics:
    """Records nothing."""

    def command_observer(
        self, source: str, *, public_key: str = "", remote_addr: str = ""
    ) -> CommandObserver | None:
        """No observer: the daemon's default one is used."""
        return None

    def source_run(
        self, name: str, trigger: str, error: bool, public_key: str = "", remote_addr: str = ""
    ) -> None:
        """Do nothing."""

    def set_source_commands(
        self,
        name: str,
        trigger: str,
        *,
        changed: int,
        removed: int,
        public_key: str = "",
        remote_addr: str = "",
    ) -> None:
        """Do nothing."""

    def pattern_expiry(self, source: str, exp_ts: float | None) -> None:
        """Do nothing."""

    def pull(self, source: str, result: str) -> None:
        """Do nothing."""

    def verify_failure(self, source: str, reason: str) -> None:
        """Do nothing."""

    def connection_refused(self, reason: str) -> None:
        """Do nothing."""

    def shells(self, name: str, delta: int, *, public_key: str = "", remote_addr: str = "") -> None:
        """Do nothing."""

    def nats_connected(self, connected: bool) -> None:
        """Do nothing."""

    def nats_message(self, source: str, status: str) -> None:
        """Do nothing."""


__all__ = ["DaemonMetrics", "Exposition", "NoMetrics", "metrics_for"]


def metrics_for(metrics_key: str) -> DaemonMetrics:
    """Prometheus metrics when ``run.systemMetricsKey`` is set at start-up, else :class:`NoMetrics`.

    prometheus_client is imported only then (issue 14: a smaller idle daemon). A key first set by
    a SIGHUP reload takes effect at the next restart: the registry is created once.
    """
    if not metrics_key:
        return NoMetrics()
    from agent.daemon.metrics import Metrics  # lazy: prometheus_client, only with a metrics key

    return Metrics()
