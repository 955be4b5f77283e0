"""Handler for ``agent run`` (imported on use: it loads the daemon stack)."""

from __future__ import annotations

import argparse
from functools import partial

from agent.cli.common import load_config_for
from agent.core.deferred import load_deferred
from agent.daemon.service import run_daemon
from agent.tools.inprocess import helper_runner


def cmd_run(args: argparse.Namespace) -> int:
    """``agent run [-o] [-v]``: the daemon, or one pass over every source."""
    load_deferred()  # a long-lived process runs on the real standard-library modules only
    config = load_config_for(args)
    if getattr(args, "verbose", False):
        from agent.tools.report import log_command_output  # lazy: only `run -v`

        log_command_output()
    return run_daemon(
        config,
        once=bool(args.once),
        config_loader=partial(load_config_for, args),
        disable_external=bool(getattr(args, "disable_external", False)),
        inprocess=helper_runner,
    )


__all__ = ["cmd_run"]
