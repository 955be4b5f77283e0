"""Handler for `build`.

A pattern without build commands, signed with a key (no ``build.signingCommands``), runs no
command: it is built without an event loop (:func:`agent.tools.syncrun.finish`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.cli.common import load_config_for
from agent.core.errors import AgentError, BuildError, UsageError
from agent.tools.build import build_token, prepare_build, write_token
from agent.tools.syncrun import build_runs_commands, finish, signing_runs_commands


def cmd_build(args: argparse.Namespace) -> int:
    """Build and sign a pattern into a JWT file."""
    config = load_config_for(args)
    path = Path(args.pattern)
    if not path.is_file():
        raise UsageError(f"build: pattern file {args.pattern} does not exist")
    dest = Path(args.dest) if args.dest else None
    loaded, target = prepare_build(
        path, dest, config=config, disable_external=bool(args.disable_external)
    )
    needs_loop = build_runs_commands(loaded) or signing_runs_commands(config)
    try:
        token = finish(build_token(loaded, config=config), needs_loop=needs_loop)
    except BuildError:
        raise
    except AgentError as exc:
        raise BuildError(f"building {path}: {exc}") from exc
    written = write_token(target, token)
    print(f"Wrote {written}", file=sys.stderr)
    return 0


__all__ = ["cmd_build"]
