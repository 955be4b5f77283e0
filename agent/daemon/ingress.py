"""Push ingress: turns a pushed token into a domain outcome.

:meth:`Ingress.push` answers :class:`Refused` (unknown source, no ``allowPush``, the gate refused
the token, or it refused it again under the source lock), :class:`Unavailable` (shutting down) or
:class:`Ran` (with the Result, failed or not). Only the HTTP server
(:func:`agent.daemon.server.reply_for`) maps outcomes to status codes: every ``Refused`` becomes
the same empty 404, so a client learns nothing about why (the log says).

Order: unknown source, ``allowPush`` (both counted as ``not_allowed``, an unknown source under
the label ``""`` so a client cannot mint label values), shutdown, then the gate (context
``push``), then the run (bounded by ``run.timeoutPush``; a timeout is a ``Ran`` whose Result
carries the error). The run is tracked, so shutdown waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.core.durations import format_duration_short
from agent.core.errors import AgentError
from agent.daemon.runner import RefusedUnderLock, Runner, RunRequest, empty_result
from agent.trust.gate import Action, Context

if TYPE_CHECKING:
    from agent.run.engine import Result

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Refused:
    """The push was refused (the reason is for logs and tests, never for the client)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """The daemon is shutting down."""

    result: Result


@dataclass(frozen=True, slots=True)
class Ran:
    """The token was admitted and ran; ``result.err`` is set when the run failed."""

    result: Result


PushOutcome = Refused | Unavailable | Ran


class Ingress:
    """Handles pushes for the daemon (it is the server's :class:`~agent.daemon.server.PushHandler`).

    Args:
        runner: runs admitted tokens; its config, gate and metrics are the ingress's too.
        stopping: whether the daemon is shutting down.
        track: registers a run task so that shutdown waits for it.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        stopping: Callable[[], bool],
        track: Callable[[asyncio.Task[Result]], None],
    ) -> None:
        self._config = runner.config_fn
        self.gate = runner.gate
        self.runner = runner
        self.metrics = runner.metrics
        self._stopping = stopping
        self._track = track

    def _refuse_early(self, source: str, remote: str, via_nats: bool) -> Refused | None:
        src = self._config().sources.get(source)
        if src is None:
            logger.error("Push from %s refused: unknown source %r", remote, source)
            self.metrics.verify_failure("", "not_allowed")
            return Refused("not_allowed")
        if not (src.allow_nats if via_nats else src.allow_push):
            flag = "allowNATS" if via_nats else "allowPush"
            logger.error("Push from %s refused: source %s does not %s", remote, source, flag)
            self.metrics.verify_failure(source, "not_allowed")
            self.runner.refused(source, "push", "not_allowed")
            return Refused("not_allowed")
        return None

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
        via_nats: bool = False,
    ) -> PushOutcome:
        """Admit and run a pushed token.

        Args:
            source: the source in the URL.
            token: the raw JWT body.
            check: ``?check=true``.
            parent_id_filter: ``?filter=``.
            remote: the client address (logs, metrics labels).
            via_nats: a NATS message (:mod:`agent.daemon.nats_host`): the source must
                ``allowNATS`` instead of ``allowPush``.

        Returns:
            The outcome (see the module docstring).
        """
        refused = self._refuse_early(source, remote, via_nats)
        if refused is not None:
            return refused
        if self._stopping():
            logger.error("Push from %s for %s refused: shutting down", remote, source)
            return Unavailable(empty_result("agent is shutting down"))
        origin = f"from {remote}"
        try:
            action = Action.CHECK if check else Action.PUSH
            admitted = await self.gate.admit(
                token, source, Context.PUSH, origin=origin, action=action
            )
        except AgentError as exc:
            self.runner.refused(source, "push", exc)
            return Refused(getattr(exc, "reason", "") or "error")
        req = RunRequest(
            check=check,
            parent_id_filter=parent_id_filter,
            trigger="push",
            remote=remote,
            origin=origin,
        )
        task = asyncio.get_running_loop().create_task(self.runner.run(source, admitted, req))
        self._track(task)
        timeout = float(self._config().run.timeout_push or 0) or None
        try:
            return Ran(await asyncio.wait_for(asyncio.shield(task), timeout))
        except RefusedUnderLock:
            return Refused("rollback")
        except TimeoutError:
            return await _timed_out(source, task, timeout or 0)


async def _timed_out(source: str, task: asyncio.Task[Result], timeout: float) -> Ran:
    """Cancel a push run that passed ``run.timeoutPush``; the Result says so."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    shown = format_duration_short(timeout)
    logger.error("Push for %s timed out after %s (run.timeoutPush)", source, shown)
    return Ran(
        empty_result(
            f"push for {source}: expected to finish within run.timeoutPush {shown}, got a timeout"
        )
    )


__all__ = ["Ingress", "PushOutcome", "Ran", "Refused", "Unavailable"]
