"""Listener extras: the failure rate limiter (SPEC 15) and the metrics endpoint (§6.3, §8).

Responsibility: aiohttp glue around :class:`agent.ratelimit.FailureRateLimiter` and
:class:`agent.metrics.Metrics`, and :func:`app_extras`, the ``app_hook`` of
:meth:`agent.daemon.Daemon.serve` that adds them and the webhook dispatcher to the app.

Rate limiting:

- Key = the client's socket address + the matched route pattern (``/etcha/v1/push/{source}``,
  ``/etcha/v1/system/metrics``, or the catch-all for webhooks). ``X-Forwarded-For`` and
  ``X-Real-IP`` are **not** trusted (Etcha honours them; anyone can forge them to dodge the limit).
- Only responses with status >= 300 are counted. Before handling, the key is peeked: a limited
  key gets **429** with ``Retry-After`` (whole seconds) and an empty body.
- **Verified pushes are never limited**: on the push route a limited client is still served, and
  an answer that shows the token verified (200, or 500 with its Result JSON) is returned as is;
  any refusal is replaced by the 429. So a rate-limited client's valid push gets 200, and only
  refusals count and get 429.
- Every response that is not already streaming carries ``x-rate-limit-limit``,
  ``x-rate-limit-remaining`` and ``x-rate-limit-reset`` (Unix seconds).
- Memory is bounded by the limiter's ``max_keys``.

Metrics: ``/etcha/v1/system/metrics?key=<run.systemMetricsKey>`` (any method) serves the
Prometheus text; the route exists only when a key is set (otherwise the path is a 404), and a
missing or wrong key is **401** with an empty body (compared in constant time).
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from agent.ratelimit import DEFAULT_RATE, FailureRateLimiter, RateStatus

if TYPE_CHECKING:
    from agent.daemon import Daemon
    from agent.metrics import Metrics

logger = logging.getLogger(__name__)

METRICS_PATH = "/etcha/v1/system/metrics"
#: Name of the push resource in :func:`agent.server.create_app`.
PUSH_ROUTE_NAME = "push"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The matched route pattern of a request (the path when nothing matched).

    Args:
        request: the request.

    Returns:
        e.g. ``/etcha/v1/push/{source}``.
    """
    resource = request.match_info.route.resource
    if resource is None:
        return request.path
    return resource.canonical


def _is_push(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.name == PUSH_ROUTE_NAME


def _verified_push(response: web.StreamResponse) -> bool:
    """Whether a push answer shows the token verified and ran (200, or 500 with a Result)."""
    if response.status < 300:
        return True
    return response.status == 500 and response.content_type == "application/json"


def _set_headers(
    response: web.StreamResponse, status: RateStatus, now: Callable[[], float]
) -> None:
    if response.prepared:
        return
    response.headers["x-rate-limit-limit"] = str(status.limit)
    response.headers["x-rate-limit-remaining"] = str(status.remaining)
    response.headers["x-rate-limit-reset"] = str(math.ceil(now() + status.reset_after))


def rate_limit_middleware(
    limiter: FailureRateLimiter, *, wall_clock: Callable[[], float] = time.time
) -> Any:
    """The rate-limiting aiohttp middleware (see the module docstring).

    Args:
        limiter: the failure limiter (its own clock decides windows).
        wall_clock: Unix time, for ``x-rate-limit-reset``.

    Returns:
        An aiohttp middleware.
    """

    def too_many(key: str, status: RateStatus) -> web.Response:
        logger.warning("Rate limiting remote address: %s", key)
        response = web.Response(
            status=429, headers={"Retry-After": str(max(1, math.ceil(status.reset_after)))}
        )
        _set_headers(response, status, wall_clock)
        return response

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = f"{request.remote or ''} {route_of(request)}"
        before = limiter.status(key)
        if before.limited and not _is_push(request):
            return too_many(key, before)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 300:
                limiter.record_failure(key)
            if before.limited:
                return too_many(key, limiter.status(key))
            _set_headers(exc, limiter.status(key), wall_clock)
            raise
        if response.status >= 300:
            limiter.record_failure(key)
        if before.limited and not _verified_push(response):
            return too_many(key, limiter.status(key))
        _set_headers(response, limiter.status(key), wall_clock)
        return response

    return middleware


def metrics_handler(metrics: Metrics, key: str) -> Handler:
    """The ``/etcha/v1/system/metrics`` handler.

    Args:
        metrics: the daemon's metrics.
        key: ``run.systemMetricsKey`` (non-empty).

    Returns:
        A handler answering 200 + Prometheus text for ``?key=<key>``, else 401 (empty body).

    Raises:
        ValueError: an empty key (the route must not exist then).
    """
    if not key:
        raise ValueError("metrics key: expected a non-empty run.systemMetricsKey, got ''")
    expected = key.encode("utf-8")

    async def handle(request: web.Request) -> web.StreamResponse:
        given = request.query.get("key", "").encode("utf-8")
        if not hmac.compare_digest(given, expected):
            logger.warning("Metrics request from %s refused: wrong key", request.remote or "")
            return web.Response(status=401)
        body, content_type = metrics.render()
        return web.Response(status=200, body=body, headers={"Content-Type": content_type})

    return handle


def app_extras(daemon: Daemon) -> dict[str, Any]:
    """The ``app_hook`` of :meth:`agent.daemon.Daemon.serve`: metrics, webhooks, rate limiter.

    Args:
        daemon: the daemon (its config, metrics and stored patterns).

    Returns:
        ``extra_routes``, ``fallback`` and ``middlewares`` for :func:`agent.server.create_app`.

    Raises:
        ConfigError: a malformed ``run.rateLimiterRate``.
    """
    from agent.webhooks import WebhookDispatcher

    run = daemon.config.run
    limiter = FailureRateLimiter.from_rate(run.rate_limiter_rate or DEFAULT_RATE)
    routes: list[tuple[str, str, Handler]] = []
    if run.system_metrics_key and daemon.metrics is not None:
        routes.append(("*", METRICS_PATH, metrics_handler(daemon.metrics, run.system_metrics_key)))
    return {
        "extra_routes": tuple(routes),
        "fallback": WebhookDispatcher(daemon).handle,
        "middlewares": (rate_limit_middleware(limiter),),
    }


__all__ = [
    "METRICS_PATH",
    "app_extras",
    "metrics_handler",
    "rate_limit_middleware",
    "route_of",
]
