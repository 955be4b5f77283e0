"""Registrar for the file helper subcommands: copy, dir, file, line, link.

The parsers are defined once in :mod:`agent.tools.helpers.args` (the in-process runner parses
pattern scripts with the same ones); the handlers live in :mod:`agent.cli.file_cmds`.
"""

from __future__ import annotations

from agent.tools.helpers.args import register

__all__ = ["register"]
