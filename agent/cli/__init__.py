"""Command-line entry point: global flags, dispatch, and the error-to-exit-code edge.

The CLI imports lazily. Each module listed in ``_REGISTRARS`` only builds argparse parsers (cheap);
a subcommand's handler is named by a ``"module:function"`` string and imported only when that
subcommand runs, so ``agent version`` and ``agent jwt`` never import aiohttp or apscheduler.

Output conventions: results go to stdout; a failure is one line on stderr (no traceback unless
``-l debug``). Exit codes: 0 success, 1 failure, 2 usage error. Bare ``agent`` prints the help
(the command list) and exits 0; ``agent --version`` prints what ``agent version`` prints.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from agent import __version__
from agent.core.errors import AgentError, UsageError
from agent.core.logs import error_line, setup

#: Modules that register subcommands. Each defines ``register(subparsers) -> None``.
_REGISTRARS = (
    "agent.cli.basic",
    "agent.cli.files",
    "agent.cli.pattern",
    "agent.cli.daemon",
    "agent.cli.status",
    "agent.cli.publish",
    "agent.cli.audit",
    "agent.cli.trust",
)

logger = logging.getLogger("agent")

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """Build the full parser (global flags and every registered subcommand)."""
    parser = _Parser(
        prog="agent",
        description="GitOps configuration agent for signed Pattern JWTs (Etcha-compatible).",
    )
    parser.add_argument(
        "--version", dest="show_version", action="store_true", help="print the agent version"
    )
    parser.add_argument("-c", dest="config_path", metavar="PATH", help="config file path")
    parser.add_argument(
        "-x",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override, e.g. run_stateDir=/tmp (repeatable)",
    )
    parser.add_argument(
        "-l",
        dest="log_level",
        choices=("debug", "info", "error", "none"),
        default=None,
        help="log level (default info)",
    )
    parser.add_argument(
        "-f",
        dest="log_format",
        choices=("human", "json"),
        default=None,
        help="log format (default human): human lines are an RFC 3339 time, level, message; "
        "json is one object per line with time, level, msg and, where they apply, source, id, "
        "trigger, duration_ms and error. When JOURNAL_STREAM names stderr (systemd), lines "
        "start with their journald priority (<3> error ... <7> debug) and human lines have no "
        "time",
    )
    parser.add_argument(
        "-n",
        dest="no_color",
        action="store_true",
        help="no colour in output (also when the NO_COLOR variable is set)",
    )
    parser.add_argument(
        "-d",
        dest="disable_external",
        action="store_true",
        help="disable external Jsonnet natives (http getFile, getRecord)",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="<command>", parser_class=_Parser, title="commands"
    )
    for name in _REGISTRARS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a registrar not yet written
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def version_line() -> str:
    """What ``agent version`` and ``agent --version`` print."""
    return f"agent {__version__}"


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the completion script for ``args.shell``, generated from the parser by shtab.

    shtab rather than argcomplete: it generates a static script from the argparse parser, so
    a completion never starts Python (argcomplete re-runs the program on every <Tab> through a
    runtime hook in the shell), it covers bash, zsh and fish from one parser, and it is imported
    only here, never on the other commands' paths.
    """
    import shtab  # third-party, only for this command

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0


def _resolve(handler: str) -> Handler:
    module_name, _, func = handler.partition(":")
    module = importlib.import_module(module_name)
    fn: Handler = getattr(module, func)
    return fn


def configure_logging(level: str | None, fmt: str | None, no_color: bool) -> None:
    """Configure the ``agent`` logger once, on stderr."""
    setup(level or "info", fmt or "human", no_color)


def _print_error(message: str, level: str | None, fmt: str | None) -> None:
    """The one error line: ``ERROR: …``; JSON with ``-f json``; nothing with ``-l none``."""
    if level == "none":
        return
    print(error_line(message, fmt or "human"), file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return the exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = False
    level: str | None = None
    fmt: str | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if args.show_version:
            print(version_line())
            return 0
        if args.command is None:
            parser.print_help()
            return 0
        level, fmt = args.log_level, args.log_format
        debug = level == "debug"
        configure_logging(args.log_level, args.log_format, args.no_color)
        handler = _resolve(args.handler)
        return handler(args)
    except UsageError as exc:
        print(f"usage error: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        if debug:
            logger.exception("%s", exc)
        msg = str(exc)
        if exc.hint:
            msg = f"{msg} ({exc.hint})"
        _print_error(msg, level, fmt)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
