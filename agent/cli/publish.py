"""Registrar for ``publish`` (keep pull artifacts fresh; handlers in :mod:`.publish_cmds`)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add ``publish`` to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "publish",
        help="keep pull artifacts fresh: re-sign or rebuild them before they expire",
        description="For every publish.artifacts entry and each of its dest (file paths or "
        "http(s) URLs, written with a conditional PUT): publish a new token when nothing is "
        "published, it does not verify with the publishing key, the pattern's files changed "
        "(rebuild), or it expires within resignBefore or has no exp (re-sign: same claims, new "
        "iat/nbf/exp/jti, no build command runs). Without --once or --dry-run it runs as a "
        "service: a check every publish.checkFrequency (jittered), SIGHUP re-reads the config, "
        "SIGTERM stops after the running check, metrics on publish.metricsAddress at "
        "/etcha/v1/system/metrics?key=<run.systemMetricsKey>.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--once",
        dest="once",
        action="store_true",
        help="check every artifact once and exit: 0 when all are fresh or were published, "
        "1 when any destination failed (for cron and CI)",
    )
    mode.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="print `<artifact> <dest>: <action> (<reason>)` per destination, write nothing, "
        "exit 0",
    )
    p.set_defaults(handler="agent.cli.publish_cmds:cmd_publish")


__all__ = ["register"]
