"""Registrar for ``status``: ask daemons what they run (``GET /etcha/v1/system/status``)."""

from __future__ import annotations

from agent.cli.flags import add_target_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add ``status`` to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "status",
        help="ask targets what they run: pattern, last run, next run, last refusal",
        description="Queries GET /etcha/v1/system/status on every config target whose name "
        "matches -n (or on -h HOST), with the client config's run.systemMetricsKey as the key "
        "(the targets must set the same key). TLS works as for push. Prints a table, or one "
        "JSON object with -f json. Exit 1 when a target did not answer.",
        add_help=False,  # -h is the host, as for push
    )
    add_target_flags(p, host_help="ask this host only (https; http://HOST for plain HTTP)")
    p.add_argument(
        "-n", dest="target_filter", default=None, metavar="REGEX", help="target name filter"
    )
    p.add_argument(
        "-f",
        dest="output_format",
        choices=("table", "json"),
        default=None,
        help="output format (default table; the global -f json also selects json)",
    )
    p.add_argument(
        "--timeout",
        dest="timeout",
        default="30s",
        metavar="DURATION",
        help="time allowed for each target, connection included (default 30s)",
    )
    p.add_argument(
        "--nats",
        dest="nats",
        action="store_true",
        help="ask every host over NATS (<nats.subjectPrefix>.status) instead of the targets; "
        "waiting ends at --timeout or 2s after the last answer",
    )
    p.set_defaults(handler="agent.cli.status_cmds:cmd_status")
