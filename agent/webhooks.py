"""Webhooks: requests on a source's ``webhookPaths`` run its pattern and answer with its output.

Responsibility: the listener's catch-all (``fallback`` of :func:`agent.server.create_app`),
reference etcha-run.md §6.5 with SPEC 13.

- Any method on a path listed in some source's ``webhookPaths``. Several sources may list the
  same path: they are tried **alphabetically** and the first whose run succeeds and emits
  ``webhookBody`` answers (SPEC 13). None answering → 404 ``404 page not found``.
- A source runs its last accepted pattern, else its static commands (the daemon's stored
  pattern); a source with neither is skipped. The run is direct (change mode, no diff, checkOnly
  and triggerOnly do not apply), exec = config ⊕ source ⊕ pattern runExec, ParentID = the source,
  bounded by ``run.timeoutWebhook``; events it emits are not dispatched (no cascades).
- Env: ``ETCHA_SOURCE_NAME``, ``ETCHA_SOURCE_TRIGGER=webhook``, ``ETCHA_WEBHOOK_BODY`` (standard
  padded base64 of the body), ``ETCHA_WEBHOOK_HEADERS`` (``Canonical-Name: value`` lines, one per
  value, ``Host`` excluded, sorted, joined by newlines), ``ETCHA_WEBHOOK_METHOD``,
  ``ETCHA_WEBHOOK_PATH`` and ``ETCHA_WEBHOOK_QUERY`` (keys sorted, re-encoded like Go's
  ``url.Values.Encode``).
- Answer: 200 with the change output of the first output carrying ``webhookBody`` and the
  ``Content-Type`` from the first ``webhookContentType`` output (trimmed; default
  ``text/plain; charset=utf-8``). The engine keeps outputs trimmed, so the body is the trimmed
  output (Etcha sends it untrimmed).
- The body is bounded by ``run.maxBodyBytes`` (413 beyond it).
- Paths under ``/etcha`` are refused at start-up (:func:`check_webhook_paths`) and never matched.

Invariants: the dispatcher holds only the daemon; every request reads the daemon's current config.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

from agent.errors import AgentError, ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from agent.config import Config
    from agent.daemon import Daemon
    from agent.engine import RunOutcome

logger = logging.getLogger(__name__)

#: Paths under this prefix belong to the agent's own API.
RESERVED_PREFIX = "/etcha"
NOT_FOUND_TEXT = "404 page not found"
DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"


def check_webhook_paths(config: Config) -> None:
    """Refuse webhook paths under ``/etcha`` (start-up check, reference §6.5).

    Args:
        config: the loaded config.

    Raises:
        ConfigError: naming the first such source and path, in source-name order.
    """
    for name in sorted(config.sources):
        for path in config.sources[name].webhook_paths:
            if path.startswith(RESERVED_PREFIX):
                raise ConfigError(
                    f"sources.{name}.webhookPaths: expected paths outside {RESERVED_PREFIX}, "
                    f"got {path!r}"
                )


def webhook_sources(config: Config, path: str) -> list[str]:
    """The sources listing ``path`` in ``webhookPaths``, alphabetically.

    Args:
        config: the current config.
        path: the request path (decoded).

    Returns:
        The source names; empty for paths under ``/etcha``.
    """
    if path.startswith(RESERVED_PREFIX):
        return []
    return sorted(n for n, s in config.sources.items() if path in s.webhook_paths)


def canonical_header(name: str) -> str:
    """Go's ``CanonicalMIMEHeaderKey``: ``x-my-header`` → ``X-My-Header``.

    Args:
        name: a header name.

    Returns:
        The canonical form (unchanged when it contains a space or other non-token byte).
    """
    if any(c == " " or ord(c) > 126 or ord(c) < 33 for c in name):
        return name
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def headers_text(items: Iterable[tuple[str, str]]) -> str:
    """``ETCHA_WEBHOOK_HEADERS``: sorted ``Name: value`` lines, ``Host`` excluded.

    Args:
        items: ``(name, value)`` pairs, one per value.

    Returns:
        The lines joined by ``\\n``.
    """
    lines = [f"{canonical_header(k)}: {v}" for k, v in items if canonical_header(k) != "Host"]
    return "\n".join(sorted(lines))


def query_text(items: Iterable[tuple[str, str]]) -> str:
    """``ETCHA_WEBHOOK_QUERY``: Go's ``url.Values.Encode`` (keys sorted, values in order).

    Args:
        items: ``(key, value)`` pairs in request order.

    Returns:
        ``k=v&k2=v2`` with both sides query-escaped.
    """
    by_key: dict[str, list[str]] = {}
    for k, v in items:
        by_key.setdefault(k, []).append(v)
    return "&".join(
        f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}"
        for k in sorted(by_key)
        for v in by_key[k]
    )


def webhook_env(
    source: str,
    *,
    method: str,
    path: str,
    query: Iterable[tuple[str, str]],
    headers: Iterable[tuple[str, str]],
    body: bytes,
) -> dict[str, str]:
    """The initial variables of a webhook run.

    Args:
        source: the source that runs.
        method: the HTTP method.
        path: the decoded request path.
        query: the query pairs.
        headers: the header pairs.
        body: the request body.

    Returns:
        The ``ETCHA_SOURCE_*`` and ``ETCHA_WEBHOOK_*`` variables.
    """
    return {
        "ETCHA_SOURCE_NAME": source,
        "ETCHA_SOURCE_TRIGGER": "webhook",
        "ETCHA_WEBHOOK_BODY": base64.standard_b64encode(body).decode("ascii"),
        "ETCHA_WEBHOOK_HEADERS": headers_text(headers),
        "ETCHA_WEBHOOK_METHOD": method,
        "ETCHA_WEBHOOK_PATH": path,
        "ETCHA_WEBHOOK_QUERY": query_text(query),
    }


def webhook_answer(outcome: RunOutcome) -> tuple[str, str] | None:
    """The body and content type a run answers with.

    Args:
        outcome: a successful webhook run.

    Returns:
        ``(body, content type or "")`` from the first ``webhookBody`` and ``webhookContentType``
        outputs, or ``None`` when no output carried ``webhookBody``.
    """
    body: str | None = None
    content_type = ""
    for name, out in outcome.events():
        if name == "webhookBody" and body is None:
            body = out.change_out
        elif name == "webhookContentType" and not content_type:
            content_type = out.change_out.strip()
    return None if body is None else (body, content_type)


class WebhookDispatcher:
    """The listener's catch-all: pass :meth:`handle` as ``fallback``.

    Args:
        daemon: the daemon whose sources and stored patterns answer.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one request (see the module docstring).

        Args:
            request: the request.

        Returns:
            200 with the first answering source's ``webhookBody``, 413 for an oversized body,
            else 404 ``404 page not found``.
        """
        from aiohttp import web

        config = self.daemon.config
        path = request.path
        sources = webhook_sources(config, path)
        if not sources:
            return web.Response(status=404, text=NOT_FOUND_TEXT)
        max_body = int(config.run.max_body_bytes)
        remote = request.remote or ""
        length = request.content_length
        if length is not None and length > max_body:
            logger.error(
                "Webhook %s from %s refused: body exceeds run.maxBodyBytes %d",
                path,
                remote,
                max_body,
            )
            return web.Response(status=413)
        try:
            body = await request.content.read(max_body + 1)
        except Exception:  # a broken connection while reading the body
            logger.exception("Webhook %s from %s: reading the body failed", path, remote)
            return web.Response(status=404, text=NOT_FOUND_TEXT)
        if len(body) > max_body:
            logger.error(
                "Webhook %s from %s refused: body exceeds run.maxBodyBytes %d",
                path,
                remote,
                max_body,
            )
            return web.Response(status=413)
        for source in sources:
            answer = await self._try(request, source, body, remote)
            if answer is None:
                continue
            text, content_type = answer
            return web.Response(
                status=200,
                body=text.encode("utf-8"),
                headers={"Content-Type": content_type or DEFAULT_CONTENT_TYPE},
            )
        return web.Response(status=404, text=NOT_FOUND_TEXT)

    async def _try(
        self, request: web.Request, source: str, body: bytes, remote: str
    ) -> tuple[str, str] | None:
        from agent.events import run_direct

        daemon = self.daemon
        path = request.path
        pattern = await daemon.admitted_pattern(source)
        if pattern is None or not pattern.run:
            logger.error(
                "Source %s: no pattern with runnable commands for webhook %s", source, path
            )
            return None
        logger.info("Running source %s for webhook %s", source, path)
        env = webhook_env(
            source,
            method=request.method,
            path=path,
            query=request.query.items(),
            headers=request.headers.items(),
            body=body,
        )
        token = daemon.stored_token(source)
        public_key = token.key_id if token is not None else ""
        timeout = float(daemon.config.run.timeout_webhook or 0) or None
        try:
            outcome = await daemon.tracked(
                asyncio.wait_for(
                    run_direct(
                        daemon,
                        source,
                        pattern,
                        env,
                        trigger="webhook",
                        public_key=public_key,
                        remote_addr=remote,
                    ),
                    timeout,
                )
            )
        except TimeoutError:
            logger.error(
                "Source %s: webhook %s timed out after %ss (run.timeoutWebhook)",
                source,
                path,
                timeout,
            )
            return None
        except AgentError as exc:
            logger.error("Source %s: webhook %s failed: %s", source, path, exc)
            return None
        if outcome.error is not None:
            logger.error("Source %s: webhook %s failed: %s", source, path, outcome.error)
            return None
        return webhook_answer(outcome)


__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "NOT_FOUND_TEXT",
    "WebhookDispatcher",
    "canonical_header",
    "check_webhook_paths",
    "headers_text",
    "query_text",
    "webhook_answer",
    "webhook_env",
    "webhook_sources",
]
