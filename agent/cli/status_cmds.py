"""Handler for ``agent status`` (imported on use; it never imports the daemon stack)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from agent.cli.common import load_config_for
from agent.core.durations import parse_duration
from agent.tools.nats_push import nats_status
from agent.tools.status import (
    StatusAnswer,
    format_json,
    format_table,
    query_status,
    status_targets,
)

__all__ = ["cmd_status"]


def cmd_status(args: argparse.Namespace) -> int:
    """``agent status [-n REGEX] [-h HOST] [-p PORT] [-f table|json]``: 1 when a target failed."""
    config = load_config_for(args)
    if getattr(args, "nats", False):
        return _nats_status(config, args)
    targets = status_targets(
        config,
        host=args.host,
        port=args.port,
        target_filter=args.target_filter,
        fingerprint=args.fingerprint,
    )
    timeout = parse_duration(str(args.timeout), name="--timeout")
    answers = query_status(config, targets, timeout=timeout)
    _print_answers(answers, args)
    failed = [a.target for a in answers if a.error]
    if failed:
        print(f"ERROR: status: no answer from {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _print_answers(answers: list[StatusAnswer], args: argparse.Namespace) -> None:
    """The answers as a table, or as JSON with ``-f json`` (or the global ``-f json``)."""
    as_json = args.output_format == "json" or (
        args.output_format is None and getattr(args, "log_format", None) == "json"
    )
    if as_json:
        print(format_json(answers))
    else:
        for line in format_table(answers):
            print(line)


def _nats_status(config: Any, args: argparse.Namespace) -> int:
    """``agent status --nats``: every host's answer on ``<prefix>.status``; 1 when none."""
    timeout = parse_duration(str(args.timeout), name="--timeout")
    docs = asyncio.run(nats_status(config, timeout=timeout))
    answers = [StatusAnswer(host, "nats", document=doc) for host, doc in sorted(docs.items())]
    _print_answers(answers, args)
    if not answers:
        print("ERROR: status --nats: no host answered", file=sys.stderr)
        return 1
    return 0
