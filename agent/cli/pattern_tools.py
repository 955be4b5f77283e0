"""Handlers for ``test``, ``lint`` and ``init`` (registered by :mod:`agent.cli.pattern`).

Output: results and listings go to stdout; notes and the final ``ERROR: ...`` line go to stderr.
Exit codes: 0 success, 1 test failures or lint findings (or any other error), 2 usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agent import __version__
from agent.cli.common import load_config_for
from agent.core.errors import UsageError
from agent.core.logs import error_line
from agent.tools.lint import lint_path
from agent.tools.report import log_command_output
from agent.tools.scaffold import init_project
from agent.tools.testmode import format_failures, root_warning, run_pattern_tests

__all__ = ["cmd_init", "cmd_lint", "cmd_test"]

#: Above CRITICAL: nothing is logged.
_SILENT = logging.CRITICAL + 10


@contextmanager
def _quiet_unless_debug(args: argparse.Namespace) -> Iterator[None]:
    """Silence the ``agent`` loggers unless ``-l debug`` (Etcha's test and lint do the same)."""
    root = logging.getLogger("agent")
    previous = root.level
    if getattr(args, "log_level", None) != "debug":
        root.setLevel(_SILENT)
    try:
        yield
    finally:
        root.setLevel(previous)


def _filter(text: str | None) -> re.Pattern[str] | None:
    if not text:
        return None
    try:
        return re.compile(text)
    except re.error as exc:
        raise UsageError(f"test: -f {text!r} is not a valid regexp: {exc}") from exc


def cmd_test(args: argparse.Namespace) -> int:
    """Test patterns for idempotency: change, check, remove, check.

    Prints ``<file>:<id>:`` and the messages of each failing command, then a summary line.
    Returns 1 (``test failure``) when any command failed.
    """
    config = load_config_for(args)
    flt = _filter(getattr(args, "filter", None))
    if getattr(args, "verbose", False):
        log_command_output()
    in_place = bool(getattr(args, "in_place", False))
    if warning := root_warning(in_place=in_place):
        print(f"WARNING: {warning}", file=sys.stderr)
    with _quiet_unless_debug(args):
        report = asyncio.run(
            run_pattern_tests(
                Path(args.path),
                config=config,
                build=bool(getattr(args, "build", False)),
                parent_id_filter=flt,
                disable_external=bool(getattr(args, "disable_external", False)),
                in_place=in_place,
            )
        )
    for line in format_failures(report.failures):
        print(line)
    print(report.summary())
    if not report.ok:
        n = len(report.failures)
        msg = f"test failure: {n} command{'' if n == 1 else 's'} failed"
        print(error_line(msg, getattr(args, "log_format", None) or "human"), file=sys.stderr)
        return 1
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    """Lint Jsonnet files: syntax, pattern validation, formatting (``-f``), script linters.

    Prints each finding as ``file:line: message``, then a summary line. Returns 1 when there are
    findings.
    """
    config = load_config_for(args)
    with _quiet_unless_debug(args):
        report = asyncio.run(
            lint_path(
                Path(args.path),
                config=config,
                check_format=bool(getattr(args, "check_format", False)),
                disable_external=bool(getattr(args, "disable_external", False)),
            )
        )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for finding in report.findings:
        print(finding)
    print(report.summary())
    if not report.ok:
        n = len(report.findings)
        msg = f"lint failure: {n} finding{'' if n == 1 else 's'}"
        print(error_line(msg, getattr(args, "log_format", None) or "human"), file=sys.stderr)
        return 1
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Scaffold ``lib/``, ``patterns/`` and a README, and rewrite ``lib/etcha/``."""
    report = init_project(Path(getattr(args, "directory", ".") or "."), version=__version__)
    for line in report.lines():
        print(line)
    return 0
