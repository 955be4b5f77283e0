"""The aiohttp application of `agent run`: the push endpoint and the extension points around it.

Responsibility: HTTP only. The server never verifies, renders or runs anything itself; it asks a
:class:`PushHandler` (the daemon) and turns the answer into a status and a body.

Routes:

- ``POST /etcha/v1/push/{source}``: the body is the raw compact JWT, bounded by
  ``max_body_bytes`` (413 beyond it). ``?check=true`` asks for a check-mode run and
  ``?filter=<regex>`` restricts the run to matching parent ids (a bad regex is 400 and nothing
  runs). Answers: 200 + Result JSON, 500 + Result JSON (a command failed), or 404 with an
  **empty** body that is identical for an unknown source, a source without ``allowPush`` and a
  token that does not verify.
- Any other method on the push path: 405.
- ``extra_routes``: more exact routes (``/etcha/v1/system/metrics`` is added this way).
- ``fallback``: a catch-all for every other method and path (webhooks plug in here); without one the
  answer is 404 ``404 page not found``.
- ``middlewares``: e.g. the rate limiter.

Invariants: a 404 from the push endpoint never says why (the log does); Result JSON is written
with a 2-space indent and ``Content-Type: application/json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web

logger = logging.getLogger(__name__)

#: Path prefix of the push endpoint (Etcha's wire name).
PUSH_PATH = "/etcha/v1/push"

Handler = Callable[["web.Request"], Awaitable["web.StreamResponse"]]


@dataclass(frozen=True, slots=True)
class PushReply:
    """What the daemon answers to a push.

    Attributes:
        status: 200 (ran), 404 (unknown source, push not allowed, token refused), 500 (run failed).
        body: the Result JSON for 200/500; ``None`` for an empty body.
    """

    status: int
    body: Mapping[str, Any] | None = None


class PushHandler(Protocol):
    """The daemon side of a push (implemented by :class:`agent.daemon.Daemon`)."""

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
    ) -> PushReply:
        """Verify, render, diff and run ``token`` for ``source``; never raises for user errors."""
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
    from agent.gojson import dumps_indent

    return dumps_indent(body)


async def _not_found(request: web.Request) -> web.StreamResponse:
    from aiohttp import web

    return web.Response(status=404, text="404 page not found")


async def _method_not_allowed(request: web.Request) -> web.StreamResponse:
    from aiohttp import web

    return web.Response(status=405, headers={"Allow": "POST"})


async def _push(request: web.Request, handler: PushHandler, max_body: int) -> web.StreamResponse:
    from aiohttp import web

    source = request.match_info["source"]
    remote = request.remote or ""
    logger.info("Received push request for %s from %s", source, remote)

    length = request.content_length
    if length is not None and length > max_body:
        logger.error(
            "Push for %s from %s refused: body of %d bytes exceeds run.maxBodyBytes %d",
            source,
            remote,
            length,
            max_body,
        )
        return web.Response(status=413)
    try:
        raw = await request.content.read(max_body + 1)
    except Exception:  # a broken connection while reading the body
        logger.exception("Push for %s from %s: reading the body failed", source, remote)
        return web.Response(status=404)
    if len(raw) > max_body:
        logger.error(
            "Push for %s from %s refused: body exceeds run.maxBodyBytes %d",
            source,
            remote,
            max_body,
        )
        return web.Response(status=413)

    pattern_text = request.query.get("filter", "")
    parent_id_filter: re.Pattern[str] | None = None
    if pattern_text:
        try:
            parent_id_filter = re.compile(pattern_text)
        except re.error as exc:
            logger.error("Push for %s from %s: bad filter regex: %s", source, remote, exc)
            return web.Response(
                status=400, text=f"filter: expected a regular expression, got an invalid one: {exc}"
            )
    check = query_flag(request.query.get("check"))
    token = raw.decode("utf-8", errors="replace").strip()

    reply = await handler.handle_push(
        source, token, check=check, parent_id_filter=parent_id_filter, remote=remote
    )
    if reply.body is None and reply.status == 404:
        return web.Response(status=404)
    return web.Response(
        status=reply.status,
        text=result_json_text(reply.body),
        content_type="application/json",
    )


def create_app(
    handler: PushHandler,
    *,
    max_body_bytes: int = 4 * 1024 * 1024,
    extra_routes: Sequence[tuple[str, str, Handler]] = (),
    fallback: Handler | None = None,
    middlewares: Sequence[Any] = (),
) -> web.Application:
    """Build the aiohttp application.

    Args:
        handler: the daemon that runs pushes.
        max_body_bytes: the largest accepted push body (``run.maxBodyBytes``); larger gets 413.
        extra_routes: ``(method, path, handler)`` routes added before the catch-all, e.g.
            ``("*", "/etcha/v1/system/metrics", metrics_handler)``.
        fallback: the catch-all handler for every other method and path (webhooks); default 404.
        middlewares: aiohttp middlewares, outermost first (e.g. the rate limiter).

    Returns:
        The application (not yet started).
    """
    from aiohttp import web

    app = web.Application(
        middlewares=list(middlewares),
        # The push handler reads at most max_body_bytes + 1 itself; this also bounds any other
        # handler that calls request.read().
        client_max_size=max_body_bytes + 1,
    )

    async def push(request: web.Request) -> web.StreamResponse:
        return await _push(request, handler, max_body_bytes)

    resource = app.router.add_resource(PUSH_PATH + "/{source}", name="push")
    resource.add_route("POST", push)
    resource.add_route("*", _method_not_allowed)
    for method, path, extra in extra_routes:
        app.router.add_route(method, path, extra)
    app.router.add_route("*", "/{tail:.*}", fallback or _not_found, name="fallback")
    return app
