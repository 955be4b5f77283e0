"""Remote shell sessions over the listener: ``POST /etcha/v1/shell/{source}`` (Etcha's wire).

Protocol (reference etcha-run.md §7): every request body is a compact JWT signed like a push, with
the claims ``c`` (terminal columns), ``r`` (rows), ``i`` (session id; absent at first), ``s``
(base64 of stdin bytes; absent when empty) and ``exp``.

- A request whose ``i`` names no live session opens one: the answer is ``200``,
  ``Content-Type: text/event-stream``, and a newline-delimited stream: the session id line first,
  then ``o<base64>`` records (pty output, at most 4096 bytes each) and ``k<random>`` keepalives
  every random 1-10 s. The stream ends when the shell exits (or the session is closed).
- A request whose ``i`` names a live session resizes its pty to ``c`` x ``r``, writes ``s`` to it,
  and is answered ``200`` with an empty body.

Who may: every request (the first and every follow-up) goes through the trust gate
(:meth:`agent.trust.gate.TrustGate.admit`, :attr:`~agent.trust.gate.Context.SHELL`,
:attr:`~agent.trust.gate.Action.SHELL`); a session never trusts its id alone, and a follow-up
must be signed by the key (and delegation chain) that opened the session. The token must carry
``exp``. Every refusal is the same empty 404 as a refused push: an unknown source, a source
whose ``shell`` is empty (the default), a token the gate refuses, a token without ``exp``, a
follow-up signed by another key or naming a session of another source.

Limits: ``run.shellMaxSessions`` open sessions per source (429 beyond); a session idle (no input
and no output) for ``run.timeoutShell`` is closed; the body is bounded (:data:`MAX_BODY_BYTES`,
and ``run.maxTokenBytes``, 413 beyond) before it is parsed, and the stdin of one request to
:data:`MAX_STDIN_BYTES` (413); the output of a session is rate-bounded (:data:`OUTPUT_RATE`
bytes per second after a :data:`OUTPUT_BURST` burst; the pty is not read meanwhile, so a
flooding program blocks).

The shell: ``sources.X.shell`` is a command (shell words) or an exec object with a ``command``;
it runs under a pty (:func:`agent.run.shell.spawn_pty`) with ``exec`` ⊕ ``sources.X.exec`` (⊕
the shell's exec object): user (with that user's groups), group, env and workDir apply. The
pty is its controlling terminal; at the end of a session its process group gets SIGHUP, then
SIGKILL.

Observability: ``Shell session started/ended`` log lines (source, key id, address); the
``shell`` system event (``ETCHA_EVENT_ID`` = the source, ``ETCHA_EVENT_OUTPUT`` = ``opened``,
``ETCHA_EVENT_PUBLIC_KEY`` = the key id, ``ETCHA_EVENT_SRC`` = the address) when a session
opens; the gauge ``etcha_sources_shells``; and the ``audit`` callback (``shell_start`` and
``shell_end`` records), the one place the audit log is told.

Invariants: all session state lives in one :class:`ShellSessions`; the session id is never
logged; no token is logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import pty
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol

from agent.config.execs import source_exec
from agent.core.errors import AgentError, ConfigError
from agent.core.logs import escape, fields
from agent.daemon.server import SHELL_PATH, body_refusal, read_body
from agent.daemon.shell_session import (
    MAX_STDIN_BYTES,
    ClaimsError,
    Session,
    ShellClaims,
    TokenBucket,
    keepalive_interval,
    keepalive_record,
    parse_claims,
    read_chunk,
    set_size,
    stop_group,
)
from agent.daemon.sources import SourceView
from agent.daemon.telemetry import DaemonMetrics
from agent.net.httpserver import Handler, Request, Response, StreamResponse
from agent.run.model import Exec
from agent.run.shell import spawn_pty
from agent.trust.gate import Action, AdmittedToken, Context, TrustGate

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.daemon.events import EventDispatcher

logger = logging.getLogger(__name__)

#: Most body bytes read before parsing: a JWT carrying MAX_STDIN_BYTES of stdin fits.
MAX_BODY_BYTES = 128 * 1024
#: Output bytes per second a session may send after its burst.
OUTPUT_RATE = 256 * 1024
#: Output bytes a session may send at once.
OUTPUT_BURST = 64 * 1024
#: Seconds between two looks at whether the client of a session's stream went away.
DISCONNECT_CHECK = 1.0


class AuditHook(Protocol):
    """The audit log's ``record(event, **fields)``."""

    def __call__(self, event: str, **fields: Any) -> object:
        """Record one event (what it returns, e.g. a receipt, is not used)."""
        ...


def shell_exec(config: Config, source: str) -> tuple[Exec, str]:
    """The exec and the command of ``source``'s shell.

    Returns:
        ``(exec ⊕ sources.X.exec [⊕ the shell's exec object], command)``.

    Raises:
        ConfigError: the source has no shell, or its exec object has no command.
    """
    src = config.sources.get(source)
    if src is None or not src.shell:
        raise ConfigError(f"sources.{source}.shell: expected a command, got none")
    base = source_exec(config, source)
    if isinstance(src.shell, Exec):
        if not src.shell.command:
            raise ConfigError(
                f"sources.{source}.shell: expected the exec object to set command, got none"
            )
        return base.override(src.shell), src.shell.command
    return base, src.shell


class ShellSessions:
    """The daemon's shell sessions and the handler of ``POST /etcha/v1/shell/{source}``.

    Args:
        config: returns the current config.
        gate: the trust gate every request goes through.
        view: what event receivers see of the daemon (for the ``shell`` event).
        events: the event dispatcher (``None``: no event).
        metrics: the gauge ``etcha_sources_shells``.
        audit: the audit log's ``record(event, **fields)`` (``None``: none); told
            ``shell_start`` and ``shell_end``.
        clock: monotonic seconds (idle timeout, output rate).
    """

    def __init__(
        self,
        *,
        config: Callable[[], Config],
        gate: TrustGate,
        view: SourceView,
        events: EventDispatcher | None,
        metrics: DaemonMetrics,
        audit: AuditHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._gate = gate
        self._view = view
        self._events = events
        self._metrics = metrics
        self._audit = audit
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._open: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def open_count(self, source: str) -> int:
        """Sessions of ``source`` open (or opening) now."""
        return self._open.get(source, 0)

    def routes(self) -> tuple[tuple[str, str, Handler], ...]:
        """The ``extra_routes`` entry of :func:`agent.daemon.server.create_app`."""
        return (("POST", SHELL_PATH + "/{source}", self.handle),)

    async def close_all(self, _app: Any = None) -> None:
        """Close every session (the app's ``on_shutdown``); their streams end."""
        for session in list(self._sessions.values()):
            session.closing.set()
        for task in list(self._tasks):
            task.cancel()

    # ------------------------------------------------------------------ the request

    async def handle(self, request: Request) -> Response:
        """Answer one shell request (see the module docstring)."""
        source = request.match_info["source"]
        remote = request.remote or ""
        what = f"Shell request for {escape(source)} from {escape(remote)}"
        config = self._config()
        src = config.sources.get(source)
        if src is None or not src.shell:
            reason = "unknown source" if src is None else "shell not enabled"
            logger.error(
                "%s refused: %s", what, reason, extra=fields(source=source, trigger="shell")
            )
            return Response(404)
        limit = min(MAX_BODY_BYTES, int(config.run.max_token_bytes))
        body = await read_body(request, limit=limit, timeout=float(config.run.timeout_body) or None)
        if body.status:
            return body_refusal(body, what, "the shell body limit", limit)
        token = await self._admit(
            body.data.decode("utf-8", errors="replace").strip(), source, remote
        )
        if token is None:
            return Response(404)
        try:
            claims = parse_claims(token.verified.claims)
        except ClaimsError as exc:
            logger.error("%s refused: %s", what, exc, extra=fields(source=source, trigger="shell"))
            return Response(exc.status)
        session = self._sessions.get(claims.session) if claims.session else None
        if session is not None:
            return await self._follow_up(session, token, claims, what)
        return await self._open_session(request, token, claims, remote, what)

    async def _admit(self, raw: str, source: str, remote: str) -> AdmittedToken | None:
        """The gate's answer, or ``None`` for a refusal (logged by the gate or here)."""
        try:
            token = await self._gate.admit(
                raw, source, Context.SHELL, origin=f"from {remote}", action=Action.SHELL
            )
        except AgentError:
            return None
        if token.exp is None:
            logger.error(
                "Shell request for %s from %s refused: the token has no exp",
                escape(source),
                escape(remote),
                extra=fields(source=source, trigger="shell", error="missing_exp"),
            )
            return None
        return token

    async def _follow_up(
        self, session: Session, token: AdmittedToken, claims: ShellClaims, what: str
    ) -> Response:
        if not session.same_signer(token):
            logger.error(
                "%s refused: a follow-up signed by key %s, not by %s who opened the session",
                what,
                token.key_id or "(none)",
                session.key_id or "(none)",
                extra=fields(source=token.source, trigger="shell", error="other_signer"),
            )
            return Response(404)
        session.touch()
        await session.resize(claims.cols, claims.rows)
        if claims.stdin:
            written = await session.write(claims.stdin)
            if written < len(claims.stdin):
                logger.warning(
                    "%s: %d of %d stdin bytes dropped (the shell did not read them)",
                    what,
                    len(claims.stdin) - written,
                    len(claims.stdin),
                )
        return Response(200)

    async def _open_session(
        self,
        request: Request,
        token: AdmittedToken,
        claims: ShellClaims,
        remote: str,
        what: str,
    ) -> Response:
        source = token.source
        config = self._config()
        limit = int(config.run.shell_max_sessions)
        if self.open_count(source) >= limit:
            logger.error(
                "%s refused: %d sessions open (run.shellMaxSessions)",
                what,
                limit,
                extra=fields(source=source, trigger="shell", error="too_many_sessions"),
            )
            return Response(429)
        self._open[source] = self.open_count(source) + 1
        try:
            session = await self._spawn(config, token, claims, remote)
        except (AgentError, OSError) as exc:
            self._release(source)
            logger.error(
                "%s: the shell did not start: %s",
                what,
                exc,
                extra=fields(source=source, trigger="shell", error="spawn"),
            )
            return Response(500)
        self._started(session)
        reason = "ended"
        response = StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Connection": "keep-alive",
            },
        )
        try:
            await response.prepare(request)
            await response.write(session.sid.encode() + b"\n")
            reason = await self._pump(
                response, session, float(config.run.timeout_shell), request.transport
            )
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except (ConnectionError, RuntimeError):
            reason = "disconnected"
        except asyncio.CancelledError:
            reason = "disconnected"
            raise
        finally:
            await self._end(session, reason)
        return response

    async def _spawn(
        self, config: Config, token: AdmittedToken, claims: ShellClaims, remote: str
    ) -> Session:
        ex, command = shell_exec(config, token.source)
        master, slave = pty.openpty()
        try:
            set_size(master, claims.cols, claims.rows)
            os.set_blocking(master, False)
            proc = await spawn_pty(replace(ex, timeout=None), command, slave)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        sid = _uuid4()
        session = Session(sid, token, remote, proc, master, self._clock)
        self._sessions[sid] = session
        return session

    async def _pump(
        self, response: StreamResponse, session: Session, idle: float, transport: Any
    ) -> str:
        """Copy the pty to the stream until the shell exits, the session closes or the client
        goes away (looked at every :data:`DISCONNECT_CHECK` seconds)."""
        bucket = TokenBucket(OUTPUT_RATE, OUTPUT_BURST, self._clock)
        next_keepalive = self._clock() + keepalive_interval()
        while True:
            now = self._clock()
            idle_left = session.last_active + idle - now if idle > 0 else float("inf")
            if idle_left <= 0:
                return "idle"
            state = await session.wait_readable(
                min(next_keepalive - now, idle_left, DISCONNECT_CHECK)
            )
            if transport is None or transport.is_closing():
                return "disconnected"
            if state == "closing":
                return "closed"
            if state == "timeout":
                if self._clock() >= next_keepalive:
                    await response.write(keepalive_record())
                    next_keepalive = self._clock() + keepalive_interval()
                continue
            data = read_chunk(session.master)
            if (data is None and state == "exited") or data == b"":
                return "exited"  # the shell exited and its output is drained
            if data:
                session.touch()
                await response.write(b"o" + base64.b64encode(data) + b"\n")
                await bucket.spend(len(data))

    # ------------------------------------------------------------------ start and end

    def _started(self, session: Session) -> None:
        source, key = session.source, session.key_id
        self._metrics.shells(source, 1, public_key=key, remote_addr=session.remote)
        logger.info(
            "Shell session started for source %s using key %s from %s",
            source,
            key or "(none)",
            escape(session.remote),
            extra=fields(source=source, trigger="shell"),
        )
        self._record("shell_start", session)
        if self._events is not None:
            task = asyncio.get_running_loop().create_task(self._fire(session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fire(self, session: Session) -> None:
        if self._events is None:
            return
        try:
            await self._view.tracked(
                self._events.fire(
                    self._view,
                    session.source,
                    "shell",
                    "opened",
                    public_key=session.key_id,
                    remote_addr=session.remote,
                )
            )
        except AgentError as exc:
            logger.error("Source %s: shell event failed: %s", session.source, exc)

    async def _end(self, session: Session, reason: str) -> None:
        self._sessions.pop(session.sid, None)
        self._release(session.source)
        await stop_group(session.proc)
        await session.close_pty()
        self._metrics.shells(
            session.source, -1, public_key=session.key_id, remote_addr=session.remote
        )
        duration = self._clock() - session.started
        logger.info(
            "Shell session ended for source %s using key %s from %s (%s)",
            session.source,
            session.key_id or "(none)",
            escape(session.remote),
            reason,
            extra=fields(source=session.source, trigger="shell", duration=duration),
        )
        self._record("shell_end", session, reason=reason, duration=round(duration, 3))

    def _record(self, event: str, session: Session, **extra: Any) -> None:
        """The one call site of the audit log."""
        if self._audit is None:
            return
        try:
            self._audit(
                "shell",
                source=session.source,
                phase=event.removeprefix("shell_"),
                kid=session.key_id,
                remoteAddr=session.remote,
                **extra,
            )
        except Exception:  # the audit log must not end a session
            logger.exception("Audit record %s failed", event)

    def _release(self, source: str) -> None:
        left = self.open_count(source) - 1
        if left > 0:
            self._open[source] = left
        else:
            self._open.pop(source, None)


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())


__all__ = [
    "MAX_BODY_BYTES",
    "MAX_STDIN_BYTES",
    "SHELL_PATH",
    "AuditHook",
    "ShellSessions",
    "shell_exec",
]
