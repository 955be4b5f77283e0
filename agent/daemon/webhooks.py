"""Webhooks: requests on a source's ``webhookPaths`` run its pattern and answer with its output.

Responsibility: the listener's catch-all (``fallback`` of :func:`agent.daemon.server.create_app`),
reference etcha-run.md §6.5 with SPEC 13.

- Any method on a path listed in some source's ``webhookPaths``. Several sources may list the
  same path: they are tried **alphabetically** and the first whose run succeeds and emits
  ``webhookBody`` answers (SPEC 13). None answering → 404 ``404 page not found``.
- A source runs its last accepted pattern, else its static commands (the daemon's stored
  pattern); a source with neither is skipped. The run is direct (change mode, no diff, checkOnly
  and triggerOnly do not apply), exec = config ⊕ source ⊕ pattern runExec, ParentID = the source,
  bounded by ``run.timeoutWebhook``; events it emits are not dispatched (no cascades).
- Env: ``ETCHA_SOURCE_NAME``, ``ETCHA_SOURCE_TRIGGER=webhook``, ``ETCHA_WEBHOOK_BODY`` (standard
  padded base64 of the body; empty when the body is over :data:`MAX_BODY_IN_ENV` bytes),
  ``ETCHA_WEBHOOK_BODY_FILE`` (a 0600 file holding the raw body bytes, removed after the
  request), ``ETCHA_WEBHOOK_HEADERS`` (``Canonical-Name: value`` lines, one per
  value, ``Host`` excluded, sorted, joined by newlines), ``ETCHA_WEBHOOK_METHOD``,
  ``ETCHA_WEBHOOK_PATH`` and ``ETCHA_WEBHOOK_QUERY`` (keys sorted, re-encoded like Go's
  ``url.Values.Encode``).
- Answer: 200 with the change output of the first output carrying ``webhookBody``, exactly as
  the command wrote it (untrimmed, as Etcha: ``echo hook-body`` answers ``hook-body\n``), and the
  ``Content-Type`` from the first ``webhookContentType`` output (trimmed; default
  ``text/plain; charset=utf-8``).
- The body is read whole (however it is split or chunked), bounded by ``run.maxBodyBytes`` (413
  beyond it) and ``run.timeoutBody`` (408).
- At most ``run.webhookMaxConcurrent`` runs of one source at once; a request that would start
  one more gets **429** (empty body). Metrics of webhook runs carry no client address.
- Paths under ``/etcha`` are refused at start-up (:func:`check_webhook_paths`) and never matched.

Invariants: the dispatcher holds the daemon's :class:`~agent.daemon.sources.SourceView` and
the count of running webhooks per source; every request reads the current config;
request-derived values are escaped in log lines.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

from agent.core.errors import AgentError, ConfigError
from agent.core.logs import escape
from agent.daemon.events import run_direct
from agent.daemon.server import body_refusal, read_body
from agent.daemon.sources import SourceView, StoredPattern
from agent.net.httpserver import Request, Response

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.run.engine import RunOutcome

logger = logging.getLogger(__name__)

#: Paths under this prefix belong to the agent's own API.
RESERVED_PREFIX = "/etcha"
NOT_FOUND_TEXT = "404 page not found"
DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"
#: Largest body also passed in ``ETCHA_WEBHOOK_BODY``; above it only the file is set (the
#: base64 text would make the environment too large for execve: "Argument list too long").
MAX_BODY_IN_ENV = 64 * 1024


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
    body_file: str = "",
) -> dict[str, str]:
    """The initial variables of a webhook run.

    Args:
        source: the source that runs.
        method: the HTTP method.
        path: the decoded request path.
        query: the query pairs.
        headers: the header pairs.
        body: the request body.
        body_file: the file holding the body (``ETCHA_WEBHOOK_BODY_FILE``).

    Returns:
        The ``ETCHA_SOURCE_*`` and ``ETCHA_WEBHOOK_*`` variables; ``ETCHA_WEBHOOK_BODY`` is empty
        for a body over :data:`MAX_BODY_IN_ENV` bytes.
    """
    encoded = (
        base64.standard_b64encode(body).decode("ascii") if len(body) <= MAX_BODY_IN_ENV else ""
    )
    return {
        "ETCHA_SOURCE_NAME": source,
        "ETCHA_SOURCE_TRIGGER": "webhook",
        "ETCHA_WEBHOOK_BODY": encoded,
        "ETCHA_WEBHOOK_BODY_FILE": body_file,
        "ETCHA_WEBHOOK_HEADERS": headers_text(headers),
        "ETCHA_WEBHOOK_METHOD": method,
        "ETCHA_WEBHOOK_PATH": path,
        "ETCHA_WEBHOOK_QUERY": query_text(query),
    }


@contextlib.contextmanager
def body_file(body: bytes) -> Iterator[str]:
    """A private temporary file holding ``body``, removed on exit.

    Args:
        body: the request body.

    Yields:
        The file's path (mode 0600, in the system temporary directory).
    """
    fd, path = tempfile.mkstemp(prefix="agent-webhook-", suffix=".body")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def webhook_answer(outcome: RunOutcome) -> tuple[str, str] | None:
    """The body and content type a run answers with.

    Args:
        outcome: a successful webhook run.

    Returns:
        ``(body, content type or "")`` from the first ``webhookBody`` (its raw, untrimmed output)
        and ``webhookContentType`` outputs, or ``None`` when no output carried ``webhookBody``.
    """
    body: str | None = None
    content_type = ""
    for name, out in outcome.events():
        if name == "webhookBody" and body is None:
            body = out.change_raw
        elif name == "webhookContentType" and not content_type:
            content_type = out.change_out.strip()
    return None if body is None else (body, content_type)


class WebhookDispatcher:
    """The listener's catch-all: pass :meth:`handle` as ``fallback``.

    Args:
        view: the daemon's source view (sources, stored patterns, callbacks).
    """

    def __init__(self, view: SourceView) -> None:
        self.view = view
        self._running: dict[str, int] = {}

    async def handle(self, request: Request) -> Response:
        """Answer one request (see the module docstring).

        Args:
            request: the request.

        Returns:
            200 with the first answering source's ``webhookBody``; 413 (oversized body), 408
            (body too slow), 429 (``run.webhookMaxConcurrent`` reached), else 404
            ``404 page not found``.
        """
        config = self.view.config
        path = request.path
        sources = webhook_sources(config, path)
        if not sources:
            return Response(404, text=NOT_FOUND_TEXT)
        max_body = int(config.run.max_body_bytes)
        remote = request.remote or ""
        what = f"Webhook {escape(path)} from {escape(remote)}"
        timeout = float(config.run.timeout_body) or None
        body = await read_body(request, limit=max_body, timeout=timeout)
        if body.status:
            return body_refusal(body, what, "run.maxBodyBytes", max_body)
        try:
            with body_file(body.data) as file_name:
                for source in sources:
                    answer = await self._try(request, source, body.data, file_name)
                    if answer is None:
                        continue
                    if isinstance(answer, int):
                        return Response(answer)
                    text, content_type = answer
                    return Response(
                        200,
                        body=text.encode("utf-8"),
                        headers={"Content-Type": content_type or DEFAULT_CONTENT_TYPE},
                    )
        except OSError as exc:
            logger.error("%s: the body file could not be written: %s", what, exc)
        return Response(404, text=NOT_FOUND_TEXT)

    async def _try(
        self, request: Request, source: str, body: bytes, file_name: str
    ) -> tuple[str, str] | int | None:
        """Run one source; ``None`` when it does not answer, 429 when it is at its limit."""
        view = self.view
        path = request.path
        pattern = await view.admitted_pattern(source)
        if pattern is None or not pattern.run:
            logger.error(
                "Source %s: no pattern with runnable commands for webhook %s", source, escape(path)
            )
            return None
        limit = int(view.config.run.webhook_max_concurrent)
        if self._running.get(source, 0) >= limit:
            logger.warning(
                "Source %s: webhook %s refused: %d runs going (run.webhookMaxConcurrent)",
                source,
                escape(path),
                limit,
            )
            return 429
        self._running[source] = self._running.get(source, 0) + 1
        try:
            return await self._run(request, source, pattern, body, file_name)
        finally:
            left = self._running[source] - 1
            if left:
                self._running[source] = left
            else:
                del self._running[source]

    async def _run(
        self,
        request: Request,
        source: str,
        pattern: StoredPattern,
        body: bytes,
        file_name: str,
    ) -> tuple[str, str] | None:
        view = self.view
        path = request.path
        logger.info("Running source %s for webhook %s", source, escape(path))
        env = webhook_env(
            source,
            method=request.method,
            path=path,
            query=request.query.items(),
            headers=request.headers.items(),
            body=body,
            body_file=file_name,
        )
        token = view.stored_token(source)
        public_key = token.key_id if token is not None else ""
        timeout = float(view.config.run.timeout_webhook or 0) or None
        try:
            outcome = await view.tracked(
                asyncio.wait_for(
                    # No remote_addr: a client address must not become a metric label value.
                    run_direct(
                        view, source, pattern, env, trigger="webhook", public_key=public_key
                    ),
                    timeout,
                )
            )
        except TimeoutError:
            logger.error(
                "Source %s: webhook %s timed out after %ss (run.timeoutWebhook)",
                source,
                escape(path),
                timeout,
            )
            return None
        except AgentError as exc:
            logger.error("Source %s: webhook %s failed: %s", source, escape(path), exc)
            return None
        if outcome.error is not None:
            logger.error("Source %s: webhook %s failed: %s", source, escape(path), outcome.error)
            return None
        return webhook_answer(outcome)


__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "MAX_BODY_IN_ENV",
    "NOT_FOUND_TEXT",
    "WebhookDispatcher",
    "body_file",
    "canonical_header",
    "check_webhook_paths",
    "headers_text",
    "query_text",
    "webhook_answer",
    "webhook_env",
    "webhook_sources",
]
