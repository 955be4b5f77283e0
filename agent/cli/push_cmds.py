"""Handler for ``agent push`` (imported on use; ``fingerprint`` is in
:mod:`agent.cli.fingerprint_cmds`).

It never imports the daemon stack (aiohttp) nor asyncio: push uses the one HTTP client on a
thread pool (:mod:`agent.tools.push`).
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.cli.common import load_config_for
from agent.core.durations import parse_duration
from agent.core.errors import ConfigError, UsageError
from agent.tools.push import PushOptions, run_push_cli

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def cmd_push(args: argparse.Namespace) -> int:
    """``agent push [-c] [-f f] [-h host] [-p port] [-n re] [-u path] [--fingerprint fp]
    [--timeout d] [--forks n] [--serial n] [--detailed-exitcode] <source> [pattern|cmd]``."""
    config = load_config_for(args)
    no_color = bool(getattr(args, "no_color", False)) or bool(
        getattr(getattr(config, "cli", None), "no_color", False)
    )
    color = not no_color and sys.stdout.isatty() and "NO_COLOR" not in os.environ
    options = PushOptions(
        check=bool(args.check),
        parent_filter=args.filter or "",
        timeout=_timeout(getattr(args, "timeout", None)),
        forks=getattr(args, "forks", None),
        serial=getattr(args, "serial", None),
        json_output=(getattr(args, "log_format", None) or config.cli.log_format) == "json",
        detailed_exitcode=bool(getattr(args, "detailed_exitcode", False)),
        color=color,
        verbose=bool(getattr(args, "verbose", False)),
    )
    if getattr(args, "nats", False):
        return _nats_push(config, args, options)
    if getattr(args, "nats_host", "") or getattr(args, "expect", None):
        raise UsageError("push: --host and --expect need --nats (the HTTPS host is -h HOST)")
    return run_push_cli(
        config,
        args.source,
        list(args.words or ()),
        options=options,
        host=args.host,
        port=args.port,
        path=args.path,
        target_filter=args.target_filter,
        fingerprint=args.fingerprint,
        progress=sys.stderr if sys.stderr.isatty() else None,
        disable_external=bool(getattr(args, "disable_external", False)),
    )


def _nats_push(config: Any, args: argparse.Namespace, options: PushOptions) -> int:
    """``agent push --nats [--host NAME] [--expect N] [--timeout d] SOURCE pattern|command``."""
    from agent.tools.nats_push import (  # lazy: asyncio and nats-py, only for --nats
        DEFAULT_TIMEOUT,
        NATSPushOptions,
        run_nats_push_cli,
    )

    timeout = options.timeout if options.timeout is not None else DEFAULT_TIMEOUT
    nats_options = NATSPushOptions(
        host=args.nats_host or "", expect=args.expect, timeout=timeout or DEFAULT_TIMEOUT
    )
    return run_nats_push_cli(
        config,
        args.source,
        list(args.words or ()),
        options=options,
        nats_options=nats_options,
        disable_external=bool(getattr(args, "disable_external", False)),
    )


def _timeout(text: str | None) -> float | None:
    """``--timeout``: seconds (None = build.pushTimeout)."""
    if text is None:
        return None
    try:
        return parse_duration(text, name="--timeout")
    except ConfigError as exc:
        raise UsageError(str(exc)) from exc


__all__ = ["cmd_push"]
