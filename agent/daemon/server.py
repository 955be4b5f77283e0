"""The HTTP application of `agent run`: the push endpoint and the extension points around it.

Responsibility: HTTP only. The server never verifies, renders or runs anything itself; it asks a
:class:`PushHandler` (:class:`agent.daemon.ingress.Ingress`) and maps the domain outcome it answers
to a status and a body (:func:`reply_for`, the only place that does): ``Refused`` -> the uniform
empty 404, ``Unavailable`` -> 503, ``Ran`` -> 200 or 500 (the run failed) with the Result JSON.

Routes:

- ``POST /etcha/v1/push/{source}``: the body is the raw compact JWT, read whole (to EOF, however
  it is split or chunked) and bounded by ``max_token_bytes`` (``run.maxTokenBytes``, 413 beyond
  it) and ``run.timeoutBody`` (408). ``?check=true`` asks for a check-mode run and
  ``?filter=<regex>`` restricts the run to matching parent ids (a bad regex is 400 and nothing
  runs). Answers: 200 + Result JSON, 500 + Result JSON (a command failed), or 404 with an
  **empty** body that is identical for an unknown source, a source without ``allowPush``, a
  token that does not verify and a refusal under the source lock (``PushReply.refused``).
- Any other method on the push path: 405.
- ``extra_routes``: more exact routes (``/etcha/v1/system/metrics`` is added this way).
- ``fallback``: a catch-all for every other method and path (webhooks plug in here); without one the
  answer is 404 ``404 page not found``.
- ``middlewares``: e.g. the rate limiter.

The application is an :class:`agent.net.httpserver.App` (h11, no aiohttp).

Invariants: a 404 from the push endpoint never says why (the log does); Result JSON is written
with a 2-space indent and ``Content-Type: application/json``; request-derived values are
escaped (:func:`agent.core.logs.escape`) before they reach a log line. Connection limits (caps,
header deadline, keep-alive) live in :mod:`agent.daemon.listener`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.core.gojson import dumps_indent
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.core.logs import escape
from agent.daemon.ingress import PushOutcome, Ran, Refused, Unavailable
from agent.daemon.listener import BODY_KEY
from agent.net.httpserver import App, Handler, Middleware, Request, Response, not_found

logger = logging.getLogger(__name__)

#: Path prefix of the push endpoint (Etcha's wire name).
PUSH_PATH = "/etcha/v1/push"
#: Path prefix of the shell endpoint (Etcha's wire name; :mod:`agent.daemon.shell`).
SHELL_PATH = "/etcha/v1/shell"


@dataclass(frozen=True, slots=True)
class PushReply:
    """The HTTP answer to a push (:func:`reply_for`).

    Attributes:
        status: 200 (ran), 404 (refused: unknown source, push not allowed, token refused),
            500 (run failed), 503 (shutting down).
        body: the Result JSON for 200/500/503; ``None`` for an empty body.
    """

    status: int
    body: Mapping[str, Any] | None = None


def reply_for(outcome: PushOutcome) -> PushReply:
    """Map a push outcome to its HTTP answer (the only place that picks push status codes).

    Args:
        outcome: what :meth:`agent.daemon.ingress.Ingress.handle_push` answered.

    Returns:
        ``Refused`` -> 404 with no body (identical for every refusal: no oracle);
        ``Unavailable`` -> 503 with the Result; ``Ran`` -> 200, or 500 when the run failed.
    """
    if isinstance(outcome, Refused):
        return PushReply(404)
    if isinstance(outcome, Unavailable):
        return PushReply(503, outcome.result.to_json())
    if isinstance(outcome, Ran):
        return PushReply(500 if outcome.result.err else 200, outcome.result.to_json())
    raise TypeError(f"push outcome: expected Refused, Unavailable or Ran, got {outcome!r}")


class PushHandler(Protocol):
    """The daemon side of a push (implemented by :class:`agent.daemon.ingress.Ingress`)."""

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
    ) -> PushOutcome:
        """Admit, render, diff and run ``token`` for ``source``; never raises for user errors."""
        ...


def query_flag(value: str | None) -> bool:
    """Interpret a query flag like ``check``: present means true unless ``false``/``0``/``no``.

    Args:
        value: the raw query value, or ``None`` when the parameter is absent.

    Returns:
        Whether the flag is set.
    """
    if value is None:
        return False
    return value.strip().lower() not in ("false", "0", "no", "off")


def result_json_text(body: Mapping[str, Any] | None) -> str:
    """Serialise a Result the way the server sends it (2-space indent, keys sorted, Go escaping).

    Args:
        body: the Result JSON, or ``None`` (serialised as ``null``).

    Returns:
        The JSON text.
    """
    return dumps_indent(body)


async def _method_not_allowed(request: Request) -> Response:
    return Response(405, headers={"Allow": "POST"})


@dataclass(frozen=True, slots=True)
class Body:
    """A request body, read whole (:func:`read_body`).

    Attributes:
        data: the bytes (empty when refused).
        status: 0 when read whole; else the answer: 413 (over the limit), 408 (not complete
            within ``run.timeoutBody``) or 400 (the connection or the chunked encoding broke).
    """

    data: bytes = b""
    status: int = 0


async def read_body(request: Request, *, limit: int, timeout: float | None) -> Body:
    """Read a request body to its end, however it is split or chunked; cached on the request.

    ``request.readany()`` returns whatever is buffered, so a body that arrives in several
    pieces must be read in a loop until EOF. Reading stops as soon as more than ``limit`` bytes
    arrived (the rest is drained by the server, then the connection is kept or closed).

    Args:
        request: the request.
        limit: the most bytes accepted (``run.maxTokenBytes`` for pushes, ``run.maxBodyBytes``
            for webhooks).
        timeout: seconds allowed for the whole body (``run.timeoutBody``); ``None``: no limit.

    Returns:
        The body, or its refusal status. A second call returns the first result (the stream
        can be read once), so a middleware and the handler can both look at it.
    """
    cached = request.state.get(BODY_KEY)
    if isinstance(cached, Body):
        return cached
    body = await _read_whole(request, limit, timeout)
    request.state[BODY_KEY] = body
    return body


async def _read_whole(request: Request, limit: int, timeout: float | None) -> Body:
    length = request.content_length
    if length is not None and length > limit:
        return Body(status=413)
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                chunk = await request.readany()
                if not chunk:
                    break
                buf += chunk
                if len(buf) > limit:
                    return Body(status=413)
    except TimeoutError:
        return Body(status=408)
    except Exception:  # a broken connection or chunked encoding while reading the body
        logger.debug("Reading a request body failed", exc_info=True)
        return Body(status=400)
    return Body(bytes(buf))


def body_refusal(body: Body, what: str, limit_name: str, limit: int) -> Response:
    """Log why a body was refused and answer it (413, 408 or 400; empty body).

    A 413 leaves the connection to the server, which drains what is left of the body for a while
    so the client reads the answer. A 408 or 400 closes the connection after the answer: a
    client too slow to send its body gets no more time.

    Args:
        body: a refused body (``status`` set).
        what: e.g. ``"Push for web from 10.0.0.7"`` (already escaped).
        limit_name: the setting that bounds the body, e.g. ``run.maxTokenBytes``.
        limit: its value.

    Returns:
        The response (``Connection: close`` for 408 and 400).
    """
    if body.status == 413:
        logger.error("%s refused: body exceeds %s %d", what, limit_name, limit)
        return Response(413)
    if body.status == 408:
        logger.error("%s refused: body not complete within run.timeoutBody", what)
    else:
        logger.error("%s refused: reading the body failed", what)
    return Response(body.status, close=True)


async def _push(
    request: Request, handler: PushHandler, max_token: int, timeout_body: float | None
) -> Response:
    source = request.match_info["source"]
    remote = request.remote or ""
    what = f"Push for {escape(source)} from {escape(remote)}"
    logger.info("Received push request for %s from %s", escape(source), escape(remote))

    body = await read_body(request, limit=max_token, timeout=timeout_body)
    if body.status:
        return body_refusal(body, what, "run.maxTokenBytes", max_token)

    pattern_text = request.query.get("filter", "")
    parent_id_filter: re.Pattern[str] | None = None
    if pattern_text:
        try:
            parent_id_filter = re.compile(pattern_text)
        except re.error as exc:
            logger.error("%s: bad filter regex: %s", what, escape(exc))
            return Response(
                400, text=f"filter: expected a regular expression, got an invalid one: {exc}"
            )
    check = query_flag(request.query.get("check"))
    token = body.data.decode("utf-8", errors="replace").strip()

    reply = reply_for(
        await handler.handle_push(
            source, token, check=check, parent_id_filter=parent_id_filter, remote=remote
        )
    )
    if reply.body is None:
        return Response(reply.status)
    return Response(
        reply.status,
        text=result_json_text(reply.body),
        content_type="application/json",
    )


def create_app(
    handler: PushHandler,
    *,
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    max_body_bytes: int = 4 * 1024 * 1024,
    timeout_body: float | None = 30.0,
    extra_routes: Sequence[tuple[str, str, Handler]] = (),
    fallback: Handler | None = None,
    middlewares: Sequence[Middleware] = (),
) -> App:
    """Build the application.

    Args:
        handler: the daemon that runs pushes.
        max_token_bytes: the largest accepted push body (``run.maxTokenBytes``); larger gets 413.
        max_body_bytes: ``run.maxBodyBytes``, the webhook bound (webhooks read it from the
            config); kept for callers, handlers bound their own reads.
        timeout_body: seconds allowed to read a push body (``run.timeoutBody``).
        extra_routes: ``(method, path, handler)`` routes added before the catch-all, e.g.
            ``("*", "/etcha/v1/system/metrics", metrics_handler)``.
        fallback: the catch-all handler for every other method and path (webhooks); default 404.
        middlewares: middlewares, outermost first (e.g. the rate limiter).

    Returns:
        The application (not yet started).
    """
    app = App(middlewares)

    async def push(request: Request) -> Response:
        return await _push(request, handler, max_token_bytes, timeout_body)

    app.router.add("POST", PUSH_PATH + "/{source}", push, name="push")
    app.router.add("*", PUSH_PATH + "/{source}", _method_not_allowed, name="push")
    for method, path, extra in extra_routes:
        app.router.add(method, path, extra)
    app.router.fallback = fallback or not_found
    return app
