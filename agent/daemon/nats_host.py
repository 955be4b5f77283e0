"""The host side of the NATS fleet transport (issue 20, docs/scaling.md).

When the config has a ``nats`` section with ``servers`` and at least one source sets
``allowNATS``, ``agent run`` connects to NATS (outbound: the host needs no open port for it) and
subscribes, per such source, to ``<prefix>.push.<source>``, ``<prefix>.push.<source>.<host>``
and their ``direct`` twins (check mode and ad-hoc commands, which the stream never stores), and
to ``<prefix>.status`` (:mod:`agent.net.natsconn`). ``<host>`` is ``nats.hostname``, else
``vars.sysinfo.hostname``.

Each message goes through the one push ingress (:meth:`agent.daemon.ingress.Ingress.handle_push`,
context push, so the trust gate checks signature, chain and scope, rollback, replay, maxTokenAge
and revocation). The reply is the Result JSON plus ``hostname`` and ``status`` (``ok``,
``failed``); a refusal is exactly ``{"hostname": …, "status": "refused"}``, the same rule as the
HTTPS 404: the log says why, the publisher learns nothing.

Catch-up: when ``nats.stream`` is set, at every (re)connection the host reads the last stored
message of each of its push subjects (oldest first) and admits it like a push. A token the
source already holds is skipped (nothing runs; it counts as ``ok``); an older one is refused by
the rollback mark.

Reconnection: a lost or failed connection is retried with exponential backoff and jitter
(:func:`backoff`), each attempt logged. ``etcha_nats_connected`` and
``etcha_nats_messages_total{source,status}`` are exported. The NATS client (nats-py) is imported
only here, on connection: a host without a ``nats`` section never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from agent.core.errors import ConfigError
from agent.daemon.ingress import PushOutcome, Refused, Unavailable
from agent.jsonnet import sysinfo
from agent.net.natsconn import (
    CHECK_HEADER,
    FILTER_HEADER,
    KEY_HEADER,
    NATSSettings,
    connect,
    connect_options,
    host_token,
    push_subjects,
    source_token_ok,
    status_subject,
)

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.daemon.ingress import Ingress
    from agent.daemon.telemetry import DaemonMetrics
    from agent.trust.gate import AdmittedToken

logger = logging.getLogger(__name__)

#: First reconnection delay (seconds) and the cap of the exponential backoff.
BACKOFF_BASE = 0.5
BACKOFF_MAX = 30.0
#: Seconds shutdown waits for replies to runs still in progress before closing the connection.
CLOSE_GRACE = 5.0
#: Messages handled at once; further ones wait in the subscription's bounded queue.
MAX_IN_FLIGHT = 32
#: Result keys dropped from a reply that would pass the server's max_payload.
_OUTPUT_KEYS = ("changedOutputs", "removedOutputs", "failedOutputs")


class NATSService(Protocol):
    """What the NATS side needs of :class:`agent.daemon.service.Service`."""

    @property
    def config(self) -> Config: ...

    ingress: Ingress
    metrics: DaemonMetrics

    def stored_token(self, source: str) -> AdmittedToken | None: ...

    def status(self) -> dict[str, Any]: ...


def backoff(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Seconds before reconnection attempt ``attempt`` (0-based): half of
    ``min(cap, base * 2**attempt)`` plus a random part up to the other half (jitter, so a fleet
    that lost its server does not come back all at once)."""
    delay = min(cap, base * 2.0 ** min(attempt, 16))
    return delay / 2 + secrets.SystemRandom().uniform(0, delay / 2)


def nats_sources(config: Config) -> list[str]:
    """Sources with ``allowNATS`` whose names can be subject tokens (others are logged)."""
    names: list[str] = []
    for name, src in sorted(config.sources.items()):
        if not src.allow_nats:
            continue
        if not source_token_ok(name):
            logger.error(
                "NATS: source %r not subscribed: expected a name of letters, digits, _ and -",
                name,
            )
            continue
        names.append(name)
    return names


def reply_document(hostname: str, outcome: PushOutcome) -> tuple[dict[str, Any], str]:
    """The reply to a push message and its status (``ok``, ``failed``, ``refused``)."""
    if isinstance(outcome, Refused):
        return {"hostname": hostname, "status": "refused"}, "refused"
    result = outcome.result
    status = "failed" if result.err or isinstance(outcome, Unavailable) else "ok"
    return {**result.to_json(), "hostname": hostname, "status": status}, status


def _header(headers: dict[str, str] | None, name: str) -> str:
    return str((headers or {}).get(name) or "")


class NATSHost:
    """One daemon's NATS connection: subscriptions, replies, catch-up and reconnection."""

    def __init__(self, service: NATSService) -> None:
        config = service.config
        self.service = service
        self.settings = NATSSettings.of(config.nats)
        self.prefix = self.settings.subject_prefix
        self.hostname = host_token(config.nats.hostname or str(sysinfo.collect()["hostname"]))
        self.sources = nats_sources(config)
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._nc: Any = None

    # ------------------------------------------------------------------ the connection loop

    async def run(self) -> None:
        """Connect, serve until the connection is lost, and reconnect, until :meth:`close`."""
        attempt = 0
        while not self._stop.is_set():
            closed = asyncio.Event()
            try:
                nc = await self._connect(closed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = backoff(attempt)
                attempt += 1
                logger.warning(
                    "NATS: cannot connect to %s (attempt %d): %s; retrying in %.1fs",
                    ", ".join(self.settings.servers),
                    attempt,
                    exc or type(exc).__name__,
                    delay,
                )
                await self._sleep(delay)
                continue
            attempt = 0
            await self._connected(nc, closed)

    async def _connect(self, closed: asyncio.Event) -> Any:
        async def on_closed() -> None:
            closed.set()

        nc = await connect(
            self.settings, name=f"agent {self.hostname}", callbacks={"closed_cb": on_closed}
        )
        try:
            await self._subscribe(nc)
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        return nc

    async def _connected(self, nc: Any, closed: asyncio.Event) -> None:
        self._nc = nc
        self.service.metrics.nats_connected(True)
        logger.info(
            "NATS: connected to %s as host %s; sources: %s",
            nc.connected_url.netloc if nc.connected_url else "?",
            self.hostname,
            ", ".join(self.sources),
        )
        self._spawn(self._catch_up(nc))
        stop = asyncio.ensure_future(self._stop.wait())
        lost = asyncio.ensure_future(closed.wait())
        await asyncio.wait({stop, lost}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        lost.cancel()
        self.service.metrics.nats_connected(False)
        if not self._stop.is_set():
            logger.warning("NATS: connection lost; reconnecting")
            with contextlib.suppress(Exception):
                await nc.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def close(self) -> None:
        """Stop reconnecting; give replies in progress a moment; close the connection."""
        self._stop.set()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE)
        for task in list(self._tasks):
            task.cancel()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handler(
        self, work: Callable[[Any], Awaitable[None]]
    ) -> Callable[[Any], Coroutine[Any, Any, None]]:
        """A subscription callback that hands each message to its own task (a long run does not
        hold up the next message), at most :data:`MAX_IN_FLIGHT` at once."""

        async def cb(msg: Any) -> None:
            await self._slots.acquire()
            self._spawn(self._guarded(work, msg))

        return cb

    async def _guarded(self, work: Callable[[Any], Awaitable[None]], msg: Any) -> None:
        try:
            await work(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("NATS: message on %s failed", getattr(msg, "subject", "?"))
        finally:
            self._slots.release()

    async def _subscribe(self, nc: Any) -> None:
        for source in self.sources:
            on_push = self._handler(self._push_handler(source))
            for stored in (True, False):
                await nc.subscribe(push_subjects(self.prefix, source, stored=stored), cb=on_push)
                subject = push_subjects(self.prefix, source, self.hostname, stored=stored)
                await nc.subscribe(subject, cb=on_push)
        await nc.subscribe(status_subject(self.prefix), cb=self._handler(self._on_status))
        await nc.flush()

    # ------------------------------------------------------------------ messages

    async def admit(
        self, source: str, data: bytes, headers: dict[str, str] | None, *, check: bool
    ) -> tuple[dict[str, Any], str]:
        """Admit one message's token through the ingress; the reply and its status."""
        limit = self.service.config.run.max_token_bytes
        if len(data) > limit:
            err = f"push: expected a token of at most {limit} bytes, got {len(data)}"
            return {"hostname": self.hostname, "status": "failed", "err": err}, "failed"
        text = _header(headers, FILTER_HEADER)
        try:
            parent_filter = re.compile(text) if text else None
        except re.error as exc:
            err = f"{FILTER_HEADER}: expected a regular expression, got {text!r}: {exc}"
            return {"hostname": self.hostname, "status": "failed", "err": err}, "failed"
        outcome = await self.service.ingress.handle_push(
            source,
            data.decode("utf-8", errors="replace"),
            check=check,
            parent_id_filter=parent_filter,
            remote="nats",
            via_nats=True,
        )
        return reply_document(self.hostname, outcome)

    def _push_handler(self, source: str) -> Callable[[Any], Awaitable[None]]:
        async def work(msg: Any) -> None:
            await self._on_push(msg, source)

        return work

    async def _on_push(self, msg: Any, source: str) -> None:
        check = _header(msg.headers, CHECK_HEADER).lower() == "true"
        doc, status = await self.admit(source, msg.data, msg.headers, check=check)
        self.service.metrics.nats_message(source, status)
        logger.info("NATS: push for %s on %s: %s", source, msg.subject, status)
        if msg.reply:
            await self._respond(msg, doc)

    async def _respond(self, msg: Any, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        nc = self._nc
        limit = int(getattr(nc, "max_payload", 0) or 0)
        if limit and len(body) > limit:
            doc = {k: v for k, v in doc.items() if k not in _OUTPUT_KEYS}
            doc["err"] = (doc.get("err") or "") + (
                f" (command outputs left out: the reply was {len(body)} bytes, over the NATS "
                f"server's max_payload {limit})"
            )
            body = json.dumps(doc).encode()
        await msg.respond(body)

    async def _on_status(self, msg: Any) -> None:
        key = self.service.config.run.system_metrics_key
        given = _header(msg.headers, KEY_HEADER).removeprefix("Bearer ")
        if key and not hmac.compare_digest(given.encode(), key.encode()):
            logger.info("NATS: status request without the right run.systemMetricsKey ignored")
            return
        if msg.reply:
            await self._respond(msg, {"hostname": self.hostname, "status": self.service.status()})

    # ------------------------------------------------------------------ catch-up

    async def _catch_up(self, nc: Any) -> None:
        """Admit the last stored message of each push subject of each source, oldest first."""
        if not self.settings.stream:
            return
        from nats.js.errors import NotFoundError  # lazy: nats-py, only with a `nats` section

        js = nc.jetstream()
        for source in self.sources:
            found: list[Any] = []
            for host in ("", self.hostname):
                subject = push_subjects(self.prefix, source, host)
                try:
                    found.append(await js.get_last_msg(self.settings.stream, subject))
                except NotFoundError:
                    continue
                except Exception as exc:
                    logger.warning(
                        "NATS: catch-up skipped: cannot read stream %s: %s",
                        self.settings.stream,
                        exc or type(exc).__name__,
                    )
                    return
            for stored in sorted(found, key=lambda m: int(m.seq or 0)):
                await self._apply_stored(source, stored)

    async def _apply_stored(self, source: str, stored: Any) -> None:
        data: bytes = stored.data or b""
        if _header(stored.headers, CHECK_HEADER).lower() == "true":
            return  # never stored by agent push; a check changes nothing anyway
        held = self.service.stored_token(source)
        if held is not None and held.verified.raw == data.decode("utf-8", "replace").strip():
            logger.info(
                "NATS: catch-up for %s: stream message %s already applied; skipped",
                source,
                stored.seq,
            )
            self.service.metrics.nats_message(source, "ok")
            return
        _, status = await self.admit(source, data, stored.headers, check=False)
        self.service.metrics.nats_message(source, status)
        logger.info(
            "NATS: catch-up for %s: stream message %s on %s: %s",
            source,
            stored.seq,
            stored.subject,
            status,
        )


async def start_nats(service: NATSService) -> NATSHost | None:
    """Start the NATS side when ``nats.servers`` is set and a source has ``allowNATS``."""
    config = service.config
    if not config.nats.enabled:
        return None
    host = NATSHost(service)
    if not host.sources:
        logger.info("NATS: no source has allowNATS; not connecting")
        return None
    try:
        connect_options(host.settings)
    except ConfigError as exc:
        logger.error("NATS: not connecting: %s", exc)
        return None
    host._spawn(host.run())
    return host


async def serve(service: NATSService, stop: asyncio.Event) -> None:
    """The NATS side (when configured) until ``stop`` is set, then closed."""
    host = await start_nats(service)
    if host is not None:
        await stop.wait()
        await host.close()


def start(
    service: NATSService, stop: asyncio.Event, *, track: Callable[[asyncio.Task[Any]], None]
) -> None:
    """The daemon's one hook: run :func:`serve` as a task that ``track`` registers (shutdown
    waits for it)."""
    track(asyncio.get_running_loop().create_task(serve(service, stop)))


__all__ = [
    "NATSHost",
    "NATSService",
    "backoff",
    "nats_sources",
    "reply_document",
    "serve",
    "start",
    "start_nats",
]
