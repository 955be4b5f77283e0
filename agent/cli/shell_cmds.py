"""Handler for ``agent shell SOURCE [TARGET]`` (imported on use; never imports aiohttp)."""

from __future__ import annotations

import argparse
import sys

from agent.cli.common import load_config_for
from agent.core.errors import UsageError
from agent.tools.shell import run_shell, shell_target


def cmd_shell(args: argparse.Namespace) -> int:
    """``agent shell [-h host] [-p port] [-u path] [--fingerprint fp] <source> [target]``."""
    if not args.target and not args.host:
        raise UsageError("shell: expected TARGET (a name from targets) or -h HOST, got neither")
    config = load_config_for(args)
    where = shell_target(
        config,
        args.target or "",
        host=args.host,
        port=args.port,
        path=args.path,
        fingerprint=args.fingerprint,
    )

    def report(message: str) -> None:
        print(f"\r\nagent shell: {message}", file=sys.stderr)

    return run_shell(config, args.source, where, report=report)


__all__ = ["cmd_shell"]
