"""What a host runs: the per-source record of runs and refusals, the tick summary line, and the
``GET /etcha/v1/system/status`` document (issue 15, points 4 and 8).

The runner records a :class:`LastRun` after every run that had something to run, and the
ingress, the puller and the re-admission a :class:`Refusal` when the trust gate refuses a token
for a known source; both live on the source's :class:`~agent.daemon.sources.SourceRuntime`.

:func:`summary_line` is the one INFO line a run logs: ``Source web: 42 checks, no changes
[180ms]`` (passing checks themselves log at DEBUG).

:func:`status_document` answers, per source: the applied pattern's ``iat``, ``exp``, ``jti`` and
signing key id (``pattern``), the last run (``lastRun``: time, trigger, changed/removed/failed
ids, duration), the next scheduled run (``nextRun``), the last refusal (``lastRefusal``) and
``stale`` (the token in hand was over ``maxTokenAge`` at the last pull). Times are RFC 3339 UTC.
The endpoint is protected like metrics (:func:`status_handler`): the route exists only when
``run.systemMetricsKey`` is set (otherwise 404), and a missing or wrong key is 401 with an empty
body. The key is taken from ``Authorization: Bearer <key>`` (what ``agent status`` sends, so it
stays out of URLs and access logs) or, as for metrics, ``?key=``.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agent.core.durations import format_duration
from agent.core.logs import escape, fields
from agent.net.httptypes import Headers, Query, Request, Response

if TYPE_CHECKING:
    from agent.daemon.sources import SourceRuntime, SourceTable
    from agent.run.engine import Result, RunOutcome

logger = logging.getLogger(__name__)

STATUS_PATH = "/etcha/v1/system/status"
#: The document's format version (``agent status`` checks it).
STATUS_VERSION = 1


@dataclass(frozen=True, slots=True)
class LastRun:
    """One finished run of a source.

    Attributes:
        time: Unix time the run finished.
        trigger: ``init``, ``pull``, ``push`` (the ``RunRequest`` trigger).
        checks: how many checks ran.
        changed_ids, removed_ids: what changed and was removed (would, in check mode).
        failed_ids: commands whose change or remove failed.
        duration: seconds the run took.
        check: a check-mode run.
        err: the run's error ("" when it succeeded).
    """

    time: float
    trigger: str
    checks: int = 0
    changed_ids: tuple[str, ...] = ()
    removed_ids: tuple[str, ...] = ()
    failed_ids: tuple[str, ...] = ()
    duration: float = 0.0
    check: bool = False
    err: str = ""

    @classmethod
    def of(
        cls,
        result: Result,
        outcome: RunOutcome | None,
        *,
        trigger: str,
        duration: float,
        check: bool,
        now: float | None = None,
    ) -> LastRun:
        """Summarise a run from its Result and (when it got that far) its outcome."""
        outs = outcome.outputs if outcome is not None else ()
        return cls(
            time=time.time() if now is None else now,
            trigger=trigger,
            checks=sum(1 for o in outs if o.checked),
            changed_ids=result.changed_ids,
            removed_ids=result.removed_ids,
            failed_ids=tuple(o.id for o in outs if o.change_fail or o.remove_fail),
            duration=duration,
            check=check,
            err=result.err,
        )

    def to_json(self) -> dict[str, Any]:
        """The ``lastRun`` object of the status document."""
        return {
            "time": rfc3339(self.time),
            "trigger": self.trigger,
            "check": self.check,
            "checks": self.checks,
            "changedIDs": list(self.changed_ids),
            "removedIDs": list(self.removed_ids),
            "failedIDs": list(self.failed_ids),
            "durationMs": round(self.duration * 1000),
            "err": self.err,
        }


@dataclass(frozen=True, slots=True)
class Refusal:
    """A token the trust gate refused for a source.

    Attributes:
        time: Unix time of the refusal.
        trigger: ``push``, ``pull`` or ``run`` (the stored token, re-checked before a run).
        reason: the gate's reason (``signature``, ``rollback``, ``replay``, …).
    """

    time: float
    trigger: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The ``lastRefusal`` object of the status document."""
        return {"time": rfc3339(self.time), "trigger": self.trigger, "reason": self.reason}


def rfc3339(ts: float) -> str:
    """``2024-05-01T12:00:00Z`` (UTC, whole seconds)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def summary_line(name: str, run: LastRun) -> str:
    """``Source web: 42 checks, no changes [180ms]``; else the counts of what changed."""
    parts = [f"{run.checks} check{'' if run.checks == 1 else 's'}"]
    if run.check:
        would = len(run.changed_ids) + len(run.removed_ids)
        parts.append(f"{would} would change" if would else "no changes")
    else:
        if run.changed_ids:
            parts.append(f"{len(run.changed_ids)} changed")
        if run.removed_ids:
            parts.append(f"{len(run.removed_ids)} removed")
        if not run.changed_ids and not run.removed_ids and not run.failed_ids:
            parts.append("no changes")
    if run.failed_ids:
        parts.append(f"{len(run.failed_ids)} failed")
    elif run.err:
        parts.append("failed")
    return f"Source {name}: {', '.join(parts)} [{format_duration(run.duration)}]"


def log_summary(name: str, run: LastRun) -> None:
    """Log :func:`summary_line` at INFO (one line per run)."""
    extra = fields(source=name, trigger=run.trigger, duration=run.duration, error=run.err or None)
    logger.info("%s", summary_line(escape(name), run), extra=extra)


def source_status(rt: SourceRuntime, next_run: float | None) -> dict[str, Any]:
    """The status of one source (see the module docstring)."""
    token = rt.token
    pattern: dict[str, Any] | None = None
    if token is not None:
        pattern = {
            "iat": token.iat,
            "exp": token.exp,
            "jti": token.jti,
            "keyID": token.key_id,
            "origin": rt.pattern.origin if rt.pattern is not None else "",
        }
    elif rt.pattern is not None:
        pattern = {"iat": None, "exp": None, "jti": "", "keyID": "", "origin": rt.pattern.origin}
    return {
        "pattern": pattern,
        "lastRun": rt.last_run.to_json() if rt.last_run is not None else None,
        "nextRun": rfc3339(next_run) if next_run is not None else None,
        "lastRefusal": rt.last_refusal.to_json() if rt.last_refusal is not None else None,
        "stale": rt.stale,
    }


def status_document(
    table: SourceTable, next_run: Callable[[str], float | None], *, now: float | None = None
) -> dict[str, Any]:
    """The whole ``/etcha/v1/system/status`` document."""
    return {
        "version": STATUS_VERSION,
        "time": rfc3339(time.time() if now is None else now),
        "sources": {name: source_status(table[name], next_run(name)) for name in table.names},
    }


def _given_key(headers: Headers, query: Query) -> bytes:
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip().encode("utf-8")
    return str(query.get("key", "")).encode("utf-8")


def status_handler(
    document: Callable[[], Mapping[str, Any]], key: str
) -> Callable[[Request], Awaitable[Response]]:
    """The handler of :data:`STATUS_PATH` (GET), protected by ``key``.

    Raises:
        ValueError: ``key`` is empty (the route must not exist then).
    """
    if not key:
        raise ValueError("status key: expected a non-empty run.systemMetricsKey, got ''")
    expected = key.encode("utf-8")

    async def handle(request: Request) -> Response:
        given = _given_key(request.headers, request.query)
        if not hmac.compare_digest(given, expected):
            logger.warning(
                "Status request from %s refused: wrong key", escape(request.remote or "")
            )
            return Response(401)
        body = json.dumps(document(), sort_keys=True).encode("utf-8")
        return Response(200, body=body, content_type="application/json")

    return handle


__all__ = [
    "STATUS_PATH",
    "STATUS_VERSION",
    "LastRun",
    "Refusal",
    "log_summary",
    "rfc3339",
    "source_status",
    "status_document",
    "status_handler",
    "summary_line",
]
