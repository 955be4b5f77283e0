"""Listener extras: the failure rate limiter (SPEC 15) and the metrics endpoint (§6.3, §8).

Responsibility: HTTP glue (:mod:`agent.net.httpserver`) around
:class:`agent.daemon.ratelimit.FailureRateLimiter` and :class:`agent.daemon.metrics.Metrics`, and
:func:`app_extras`, which :mod:`agent.daemon.app` uses to add them and the webhook dispatcher to
the app.

Rate limiting:

- Key = the client's socket address (:func:`agent.daemon.ratelimit.client_key`: IPv6 by /64) + the
  matched route pattern (``/etcha/v1/push/{source}``, ``/etcha/v1/system/metrics``, or the
  catch-all for webhooks). ``X-Forwarded-For`` and ``X-Real-IP`` are **not** trusted (Etcha
  honours them; anyone can forge them to dodge the limit).
- Only responses with status >= 300 are counted. Before handling, the key is peeked: a limited
  key gets **429** with ``Retry-After`` (whole seconds) and an empty body, without calling the
  handler, so a limited client causes no expensive work.
- **The one exception, a key-signed push**: on the push route a limited client's body is read
  and checked with :func:`quick_key_check` (the source accepts pushes, has no
  ``verifyCommands``, and the signature verifies with its verify keys). Only then is the push
  handled (full verification, trust policy, run); an answer that shows the token verified
  (200, or 500 with its Result JSON) is returned as is, any refusal is replaced by the 429. So
  an operator who shares an address with an attacker can still push, and ``verifyCommands``
  never run for a limited client.
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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.core.logs import escape
from agent.daemon.ratelimit import DEFAULT_RATE, FailureRateLimiter, RateStatus, client_key
from agent.daemon.server import read_body
from agent.daemon.sources import SourceView
from agent.daemon.status import STATUS_PATH, status_handler
from agent.daemon.telemetry import Exposition
from agent.daemon.webhooks import WebhookDispatcher
from agent.net.httpserver import Handler, HTTPError, Middleware, Request, Response
from agent.trust.gate import signature_precheck

if TYPE_CHECKING:
    from agent.config.schema import Config

logger = logging.getLogger(__name__)

METRICS_PATH = "/etcha/v1/system/metrics"
#: Name of the push resource in :func:`agent.daemon.server.create_app`.
PUSH_ROUTE_NAME = "push"


def route_of(request: Request) -> str:
    """The matched route pattern of a request (the path when nothing matched).

    Args:
        request: the request.

    Returns:
        e.g. ``/etcha/v1/push/{source}``.
    """
    return request.route or request.path


def _is_push(request: Request) -> bool:
    return request.route_name == PUSH_ROUTE_NAME


def _verified_push(response: Response) -> bool:
    """Whether a push answer shows the token verified and ran (200, or 500 with a Result)."""
    if response.status < 300:
        return True
    return response.status == 500 and response.content_type == "application/json"


def _set_headers(response: Response, status: RateStatus, now: Callable[[], float]) -> None:
    if response.prepared:
        return
    response.headers["x-rate-limit-limit"] = str(status.limit)
    response.headers["x-rate-limit-remaining"] = str(status.remaining)
    response.headers["x-rate-limit-reset"] = str(math.ceil(now() + status.reset_after))


def quick_key_check(config: Config, source: str, token: str) -> bool:
    """The cheap check that may let a rate-limited client's push through.

    Only a source that accepts pushes and is verified by keys qualifies: the token's signature
    must verify with ``run.verifyKeys`` + ``sources.<source>.verifyKeys`` (and ``exp``/``nbf``
    hold). A source verified by ``verifyCommands`` never qualifies, so a limited client never
    makes the agent spawn a process. The full verification and trust policy still run after.

    Args:
        config: the current config.
        source: the source name from the URL.
        token: the request body.

    Returns:
        Whether the push may be handled.
    """
    return signature_precheck(config, source, token)


def _too_many(key: str, status: RateStatus, wall_clock: Callable[[], float]) -> Response:
    logger.warning("Rate limiting remote address: %s", escape(key))
    response = Response(429, headers={"Retry-After": str(max(1, math.ceil(status.reset_after)))})
    _set_headers(response, status, wall_clock)
    return response


def rate_limit_middleware(
    limiter: FailureRateLimiter,
    *,
    wall_clock: Callable[[], float] = time.time,
    config: Callable[[], Config] | None = None,
    push_limit: int = DEFAULT_MAX_TOKEN_BYTES,
    timeout_body: float | None = 30.0,
) -> Middleware:
    """The rate-limiting middleware (see the module docstring).

    Args:
        limiter: the failure limiter (its own clock decides windows).
        wall_clock: Unix time, for ``x-rate-limit-reset``.
        config: returns the current config, for :func:`quick_key_check`; without it a limited
            client's push is always 429.
        push_limit: ``run.maxTokenBytes`` (the push body bound).
        timeout_body: ``run.timeoutBody``.

    Returns:
        A middleware. A handler that raises counts as a failure (the server answers 500).
    """

    def too_many(key: str, status: RateStatus) -> Response:
        return _too_many(key, status, wall_clock)

    async def limited_push_allowed(request: Request) -> bool:
        if config is None:
            return False
        body = await read_body(request, limit=push_limit, timeout=timeout_body)
        if body.status:
            return False
        token = body.data.decode("utf-8", errors="replace").strip()
        return quick_key_check(config(), request.match_info.get("source", ""), token)

    async def middleware(request: Request, handler: Handler) -> Response:
        key = f"{client_key(request.remote or '')} {route_of(request)}"
        before = limiter.status(key)
        if before.limited and not (_is_push(request) and await limited_push_allowed(request)):
            return too_many(key, before)
        try:
            response = await handler(request)
        except HTTPError as exc:  # the answer it stands for, counted like any other
            response = exc.response()
        except Exception:  # answered 500 by the server: a failure
            limiter.record_failure(key)
            if before.limited:
                return too_many(key, limiter.status(key))
            raise
        if response.status >= 300:
            limiter.record_failure(key)
        if before.limited and not _verified_push(response):
            return too_many(key, limiter.status(key))
        _set_headers(response, limiter.status(key), wall_clock)
        return response

    return middleware


def metrics_handler(metrics: Exposition, key: str) -> Handler:
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

    async def handle(request: Request) -> Response:
        given = request.query.get("key", "").encode("utf-8")
        if not hmac.compare_digest(given, expected):
            logger.warning(
                "Metrics request from %s refused: wrong key", escape(request.remote or "")
            )
            return Response(401)
        body, content_type = metrics.render()
        return Response(200, body=body, headers={"Content-Type": content_type})

    return handle


def app_extras(
    view: SourceView,
    exposition: Exposition | None = None,
    status: Callable[[], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The metrics and status routes, the webhook dispatcher and the rate limiter, for
    :func:`agent.daemon.server.create_app`.

    Args:
        view: the daemon's source view (its config and stored patterns).
        exposition: the Prometheus registry to serve (``None``: no metrics route).
        status: builds the status document (``None``: no status route); like metrics, the
            route exists only when ``run.systemMetricsKey`` is set.

    Returns:
        ``extra_routes``, ``fallback`` and ``middlewares``.

    Raises:
        ConfigError: a malformed ``run.rateLimiterRate``.
    """
    run = view.config.run
    limiter = FailureRateLimiter.from_rate(run.rate_limiter_rate or DEFAULT_RATE)

    def current_config() -> Config:
        return view.config

    routes: list[tuple[str, str, Handler]] = []
    if run.system_metrics_key and exposition is not None:
        routes.append(("*", METRICS_PATH, metrics_handler(exposition, run.system_metrics_key)))
    if run.system_metrics_key and status is not None:
        routes.append(("GET", STATUS_PATH, status_handler(status, run.system_metrics_key)))
    return {
        "extra_routes": tuple(routes),
        "fallback": WebhookDispatcher(view).handle,
        "middlewares": (
            rate_limit_middleware(
                limiter,
                config=current_config,
                push_limit=int(run.max_token_bytes),
                timeout_body=float(run.timeout_body) or None,
            ),
        ),
    }


__all__ = [
    "METRICS_PATH",
    "app_extras",
    "metrics_handler",
    "quick_key_check",
    "rate_limit_middleware",
    "route_of",
]
