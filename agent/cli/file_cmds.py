"""Handlers for ``agent copy|dir|file|line|link`` (registered by :mod:`agent.cli.files`).

Each handler runs the one implementation (:mod:`agent.tools.helpers.verbs`) with this process's
streams and environment; the in-process runner (:mod:`agent.tools.inprocess`) runs the same
functions for pattern commands. Exit codes: 0 in state or done, 1 when a check finds a difference
(one line on stderr saying what differs).
"""

from __future__ import annotations

import argparse

from agent.cli.common import http_client_for, load_config_for
from agent.net.urls import is_http
from agent.tools.helpers.copy import read_source
from agent.tools.helpers.verbs import HelperIO, run_copy, run_dir, run_file, run_line, run_link

__all__ = ["cmd_copy", "cmd_dir", "cmd_file", "cmd_line", "cmd_link"]


def cmd_file(args: argparse.Namespace) -> int:
    """``agent file <mode> <path> [contents | -]``: manage a regular file."""
    return run_file(args, HelperIO.system())


def cmd_dir(args: argparse.Namespace) -> int:
    """``agent dir <mode> <path>``: manage a directory; ``remove`` removes only an empty one."""
    return run_dir(args, HelperIO.system())


def cmd_copy(args: argparse.Namespace) -> int:
    """``agent copy <mode> <src> <dst | ->``: copy a local file or URL to ``dst`` or stdout."""
    # Only a URL needs the config: httpClient.caFile, noSystemCA, tlsSkipVerify, redirects.
    client = http_client_for(load_config_for(args)) if is_http(args.src) else None

    def read(src: str) -> bytes:
        return read_source(src, client=client)

    return run_copy(args, HelperIO.system(), read)


def cmd_line(args: argparse.Namespace) -> int:
    """``agent line <mode> <path | -> <match> <replacement>``: manage a line by regexp."""
    return run_line(args, HelperIO.system())


def cmd_link(args: argparse.Namespace) -> int:
    """``agent link <mode> <src> <dst>``: manage the symlink ``dst`` -> ``src``."""
    return run_link(args, HelperIO.system())
