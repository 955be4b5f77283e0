"""Handler for ``agent publish`` (imported on use)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from agent.cli.common import http_client_for, load_config_for
from agent.config.schema import Config
from agent.core.errors import ConfigError
from agent.daemon import sdnotify
from agent.daemon.app import parse_listen_address
from agent.daemon.httpmw import metrics_handler
from agent.net.httpserver import App, start_server
from agent.tools.build import delegation_chain
from agent.tools.publish import Publisher
from agent.tools.publish_service import PublishMetrics, PublishService

logger = logging.getLogger(__name__)


def _publisher(config: Config) -> Publisher:
    return Publisher(config, client=http_client_for(config), chain=tuple(delegation_chain(config)))


def cmd_publish(args: argparse.Namespace) -> int:
    """``agent publish [--once | --dry-run]``."""
    config = load_config_for(args)
    if not config.publish.artifacts:
        raise ConfigError("publish.artifacts: expected at least one artifact, got none")
    if args.dry_run or args.once:
        reports = asyncio.run(_publisher(config).check_all(dry_run=bool(args.dry_run)))
        for report in reports:
            print(report.line(), flush=True)
        if args.dry_run:
            return 0
        return 1 if any(r.result == "failed" for r in reports) else 0
    return asyncio.run(_serve(config, args))


async def _serve(config: Config, args: argparse.Namespace) -> int:
    metrics = None
    runner: Any = None
    key = config.run.system_metrics_key
    address = config.publish.metrics_address
    if address and not key:
        logger.warning("publish.metricsAddress is set but run.systemMetricsKey is not: no metrics")
    if address and key:
        metrics = PublishMetrics()
        runner = await _start_metrics(address, metrics, key)
    service = PublishService(
        config,
        publisher_for=_publisher,
        loader=lambda: load_config_for(args),
        metrics=metrics,
        notifier=sdnotify,
    )
    try:
        return await service.serve()
    finally:
        if runner is not None:
            await runner.cleanup()


async def _start_metrics(address: str, metrics: PublishMetrics, key: str) -> Any:
    """Serve ``GET /etcha/v1/system/metrics?key=`` with the daemon's handler (plain HTTP)."""
    host, port = parse_listen_address(address)
    app = App()
    app.router.add("GET", "/etcha/v1/system/metrics", metrics_handler(metrics, key))
    runner = await start_server(app, host, port)
    logger.info("Publish metrics on %s/etcha/v1/system/metrics", address)
    return runner


__all__ = ["cmd_publish"]
