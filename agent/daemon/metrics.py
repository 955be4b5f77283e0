"""Prometheus metrics of the daemon, on a registry owned by each :class:`Metrics` instance.

Names and labels follow Etcha (reference etcha-run.md §8) with the labels its docs add
(``public_key``, ``remote_addr``; ``parentID`` keeps the code's spelling), plus the agent's own:

- ``etcha_commands_total{error,id,mode,parentID,public_key,remote_addr,source}`` counter
- ``etcha_sources_commands{mode,name,public_key,remote_addr,trigger}`` gauge
- ``etcha_sources_total{error,name,public_key,remote_addr,trigger}`` counter
- ``etcha_sources_shells{name,public_key,remote_addr}`` gauge (open shell sessions)
- ``agent_verify_failures_total{source,reason}`` counter
- ``agent_pattern_expires_in_seconds{source}`` gauge, computed at scrape time from ``exp``
- ``etcha_source_token_expires_in_seconds{source}`` gauge, the same value under the name the
  publisher's alerts use (every source with an applied token that has ``exp``)
- ``agent_pull_total{source,result}`` counter, result ``fetched``/``not_modified``/``error``
- ``agent_connections_refused_total{reason}`` counter, reason ``total`` (``run.maxConnections``)
  or ``address`` (``run.maxConnectionsPerAddress``)
- process, GC and platform collectors.

Cardinality is bounded: no unauthenticated request input becomes a label value without a bound.
``remote_addr`` keeps at most :data:`MAX_ADDRESS_LABELS` distinct addresses per instance; later
new addresses are counted under ``remote_addr="other"``. Webhook runs carry no address
(``remote_addr=""``); unknown source names from a push URL are counted under ``source=""`` (the
daemon's side).

Counters are rendered without prometheus_client's ``*_created`` series, as Etcha's Go client.

Invariants: nothing touches prometheus_client's global ``REGISTRY``; two instances never share
a series. ``error`` labels are ``"0"``/``"1"`` as in Etcha. Only the daemon imports this module
(prometheus_client is imported at module level); lighter modules must not import it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PULL_RESULTS = frozenset({"fetched", "not_modified", "error"})
REFUSAL_REASONS = frozenset({"total", "address"})
#: Distinct ``remote_addr`` label values kept per instance; further addresses become "other".
MAX_ADDRESS_LABELS = 64
#: The ``remote_addr`` label value of addresses beyond :data:`MAX_ADDRESS_LABELS`.
OTHER_ADDRESS = "other"
COMMAND_MODES = frozenset({"check", "change", "remove"})


def _flag(error: bool) -> str:
    return "1" if error else "0"


class _ExpiryCollector(Collector):
    """Yields ``agent_pattern_expires_in_seconds`` and ``etcha_source_token_expires_in_seconds``
    as ``exp - now`` at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def set(self, source: str, exp_ts: float | None) -> None:
        if exp_ts is None:
            self._expiry.pop(source, None)
        else:
            self._expiry[source] = float(exp_ts)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "agent_pattern_expires_in_seconds",
            "Seconds until the current pattern token of a source expires (negative: expired).",
            labels=["source"],
        )
        token = GaugeMetricFamily(
            "etcha_source_token_expires_in_seconds",
            "Seconds until the applied token of a source expires (negative: expired).",
            labels=["source"],
        )
        now = self._clock()
        for source, exp in sorted(dict(self._expiry).items()):
            family.add_metric([source], exp - now)
            token.add_metric([source], exp - now)
        yield family
        yield token


class _WithoutCreated(Collector):
    """The registry's metrics minus the ``*_created`` series prometheus_client adds to counters.

    Etcha (Go client) exposes no ``_created`` series; dropping them here avoids
    ``prometheus_client.disable_created_metrics()``, which is process-global.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            created = family.name + "_created"
            family.samples = [s for s in family.samples if s.name != created]
            yield family


@dataclass(frozen=True, slots=True)
class CommandObserver:
    """Binds a source context to :meth:`Metrics.command_done`; satisfies engine's observer.

    Created by :meth:`Metrics.command_observer`; pass it to ``engine.run_commands``.
    """

    metrics: Metrics
    source: str
    public_key: str = ""
    remote_addr: str = ""

    def command_done(self, *, id: str, parent_id: str, mode: str, error: bool) -> None:
        """Count one command step (see :meth:`Metrics.command_done`)."""
        self.metrics.command_done(
            id=id,
            parent_id=parent_id,
            mode=mode,
            error=error,
            source=self.source,
            public_key=self.public_key,
            remote_addr=self.remote_addr,
        )


def _nats_metrics(reg: CollectorRegistry) -> tuple[Gauge, Counter]:
    """``etcha_nats_connected`` and ``etcha_nats_messages_total{source,status}``."""
    connected = Gauge("etcha_nats_connected", "1 while connected to NATS, else 0.", registry=reg)
    messages = Counter(
        "etcha_nats_messages",
        "NATS pushes (live and caught up), by source and status (ok, failed, refused).",
        ["source", "status"],
        registry=reg,
    )
    return connected, messages


class Metrics:
    """The daemon's metrics and their registry.

    Args:
        process_metrics: register the process, GC and platform collectors (default on).
        clock: Unix time, used for ``agent_pattern_expires_in_seconds``; for tests.
    """

    def __init__(
        self, *, process_metrics: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._commands = Counter(
            "etcha_commands",
            "Commands run, by mode; error=1 on mode check means drift was found.",
            ["error", "id", "mode", "parentID", "public_key", "remote_addr", "source"],
            registry=reg,
        )
        self._source_commands = Gauge(
            "etcha_sources_commands",
            "Commands changed or removed by the last successful run of a source.",
            ["mode", "name", "public_key", "remote_addr", "trigger"],
            registry=reg,
        )
        self._sources = Counter(
            "etcha_sources",
            "Source runs, by trigger and outcome.",
            ["error", "name", "public_key", "remote_addr", "trigger"],
            registry=reg,
        )
        self._shells = Gauge(
            "etcha_sources_shells",
            "Open shell sessions.",
            ["name", "public_key", "remote_addr"],
            registry=reg,
        )
        self._verify_failures = Counter(
            "agent_verify_failures",
            "Tokens that failed verification, by reason.",
            ["source", "reason"],
            registry=reg,
        )
        self._pulls = Counter(
            "agent_pull",
            "Pull attempts, by result (fetched, not_modified, error).",
            ["source", "result"],
            registry=reg,
        )
        self._connections_refused = Counter(
            "agent_connections_refused",
            "Listener connections closed at once because a connection cap was reached.",
            ["reason"],
            registry=reg,
        )
        self._nats_connected, self._nats_messages = _nats_metrics(reg)
        self._addresses: set[str] = set()
        self._expiry = _ExpiryCollector(clock)
        reg.register(self._expiry)
        if process_metrics:
            ProcessCollector(registry=reg)
            GCCollector(registry=reg)
            PlatformCollector(registry=reg)

    def address_label(self, remote_addr: str) -> str:
        """The bounded ``remote_addr`` label value for a client address.

        Args:
            remote_addr: the client address (``""`` for none).

        Returns:
            The address itself while fewer than :data:`MAX_ADDRESS_LABELS` distinct addresses
            have been labelled (or it is one of them), else ``"other"``.
        """
        if not remote_addr or remote_addr in self._addresses:
            return remote_addr
        if len(self._addresses) >= MAX_ADDRESS_LABELS:
            return OTHER_ADDRESS
        self._addresses.add(remote_addr)
        return remote_addr

    def connection_refused(self, reason: str) -> None:
        """Count a connection closed at once over a cap.

        Args:
            reason: ``total`` or ``address``.

        Raises:
            ValueError: an unknown reason.
        """
        if reason not in REFUSAL_REASONS:
            raise ValueError(f"refusal reason: expected total or address, got {reason!r}")
        self._connections_refused.labels(reason=reason).inc()

    def command_done(
        self,
        *,
        id: str,
        parent_id: str,
        mode: str,
        error: bool,
        source: str,
        public_key: str = "",
        remote_addr: str = "",
    ) -> None:
        """Count one command step in ``etcha_commands_total``.

        Args:
            id: the command id.
            parent_id: the group chain (``""`` at top level).
            mode: ``check``, ``change`` or ``remove``.
            error: for check, whether action is needed; otherwise whether the script failed.
            source: the source name.
            public_key: the key that verified the pattern (``""`` when unknown).
            remote_addr: the client address for push/webhook/shell runs.

        Raises:
            ValueError: an unknown mode.
        """
        if mode not in COMMAND_MODES:
            raise ValueError(f"command mode: expected check, change or remove, got {mode!r}")
        self._commands.labels(
            error=_flag(error),
            id=id,
            mode=mode,
            parentID=parent_id,
            public_key=public_key,
            remote_addr=self.address_label(remote_addr),
            source=source,
        ).inc()

    def command_observer(
        self, source: str, *, public_key: str = "", remote_addr: str = ""
    ) -> CommandObserver:
        """An engine ``CommandObserver`` recording into this instance for one source run."""
        return CommandObserver(self, source, public_key, remote_addr)

    def source_run(
        self,
        name: str,
        trigger: str,
        error: bool,
        public_key: str = "",
        remote_addr: str = "",
    ) -> None:
        """Count a source run step in ``etcha_sources_total``.

        Args:
            name: the source name.
            trigger: ``init``, ``pull``, ``push``, ``event`` or ``webhook``.
            error: whether it failed.
            public_key: the key that verified the pattern.
            remote_addr: the client address.
        """
        self._sources.labels(
            error=_flag(error),
            name=name,
            public_key=public_key,
            remote_addr=self.address_label(remote_addr),
            trigger=trigger,
        ).inc()

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
        """Set ``etcha_sources_commands`` after a successful run.

        Args:
            name: the source name.
            trigger: what started the run.
            changed: number of changed ids (mode ``change``).
            removed: number of removed ids (mode ``remove``).
            public_key: the key that verified the pattern.
            remote_addr: the client address.
        """
        for mode, value in (("change", changed), ("remove", removed)):
            self._source_commands.labels(
                mode=mode,
                name=name,
                public_key=public_key,
                remote_addr=self.address_label(remote_addr),
                trigger=trigger,
            ).set(value)

    def shells(self, name: str, delta: int, *, public_key: str = "", remote_addr: str = "") -> None:
        """Adjust ``etcha_sources_shells``: +1 when a shell session opens, -1 when it closes.

        Args:
            name: the source name.
            delta: the change in open sessions.
            public_key: the key that verified the shell request.
            remote_addr: the client address.
        """
        self._shells.labels(
            name=name, public_key=public_key, remote_addr=self.address_label(remote_addr)
        ).inc(delta)

    def verify_failure(self, source: str, reason: str) -> None:
        """Count a verification failure (``reason`` is ``VerifyError.reason``)."""
        self._verify_failures.labels(source=source, reason=reason).inc()

    def pattern_expiry(self, source: str, exp_ts: float | None) -> None:
        """Record the ``exp`` of a source's current token; ``None`` removes the series.

        Args:
            source: the source name.
            exp_ts: Unix time the token expires, or ``None`` when it has no ``exp``.
        """
        self._expiry.set(source, exp_ts)

    def pull(self, source: str, result: str) -> None:
        """Count a pull attempt.

        Args:
            source: the source name.
            result: ``fetched``, ``not_modified`` or ``error``.

        Raises:
            ValueError: an unknown result.
        """
        if result not in PULL_RESULTS:
            raise ValueError(
                f"pull result: expected fetched, not_modified or error, got {result!r}"
            )
        self._pulls.labels(source=source, result=result).inc()

    def nats_connected(self, connected: bool) -> None:
        """Set ``etcha_nats_connected``."""
        self._nats_connected.set(1 if connected else 0)

    def nats_message(self, source: str, status: str) -> None:
        """Count one NATS push by status (``ok``, ``failed``, ``refused``)."""
        self._nats_messages.labels(source=source, status=status).inc()

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this registry.

        Returns:
            ``(body, content_type)``.
        """
        return generate_latest(_WithoutCreated(self.registry)), CONTENT_TYPE_LATEST
