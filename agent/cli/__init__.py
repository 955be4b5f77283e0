"""Command-line entry point: global flags, dispatch, and the error-to-exit-code edge.

The CLI imports lazily. Each module listed in ``_REGISTRARS`` only builds argparse parsers, and at
start-up only the parser of the verb that runs is built (:func:`verb_of`, :func:`build_parser`);
a subcommand's handler is named by a ``"module:function"`` string and imported only when that
subcommand runs, so ``agent version`` and ``agent jwt`` never import aiohttp or apscheduler.

Output conventions: results go to stdout; a failure is one line on stderr (no traceback unless
``-l debug``). Exit codes: 0 success, 1 failure, 2 usage error. Bare ``agent`` prints the help
(the command list) and exits 0; ``agent --version`` prints what ``agent version`` prints.
"""

from __future__ import annotations

from agent.core.deferred import defer_stdlib

# First, before logging and the config's dataclasses import them: inspect, traceback... load at
# their first use only (start-up, issue 14; see agent.core.deferred).
defer_stdlib()

import argparse  # noqa: E402
import importlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402

from agent import __version__  # noqa: E402
from agent.core.errors import AgentError, UsageError  # noqa: E402
from agent.core.logs import error_line, get_logger, setup  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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

#: The verbs (and aliases) each registrar adds, so that start-up imports only the registrar of
#: the verb it runs; tests/unit/cli/test_cli_main.py checks it against what each one registers.
REGISTRAR_VERBS = {
    "agent.cli.basic": (
        "generate-keys",
        "gen-keys",
        "jwt",
        "compare",
        "show-config",
        "version",
        "completion",
    ),
    "agent.cli.files": ("copy", "dir", "file", "line", "link"),
    "agent.cli.pattern": ("render", "local", "build", "test", "lint", "init"),
    "agent.cli.daemon": ("run", "push", "shell", "fingerprint"),
    "agent.cli.status": ("status",),
    "agent.cli.publish": ("publish",),
    "agent.cli.audit": ("audit",),
    "agent.cli.trust": ("delegate", "revoke"),
}

logger = get_logger("agent")

Handler = Callable[[argparse.Namespace], int]


def _terminal_columns() -> int:
    """``shutil.get_terminal_size().columns`` (what argparse asks), without importing shutil
    (and with it bz2 and lzma) on every start."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter, its default width computed as argparse does (see above)."""

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


class _Skipped:
    """Stands for the parser of a verb that is not run: every call is accepted and ignored."""

    def __getattr__(self, name: str) -> Callable[..., _Skipped]:
        return self._ignore

    def _ignore(self, *args: object, **kwargs: object) -> _Skipped:
        return self


class _OnlyVerb:
    """The subparsers action restricted to one verb: the other verbs' parsers are not built."""

    def __init__(self, sub: Any, verb: str) -> None:
        self._sub = sub
        self._verb = verb

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self._verb or self._verb in kwargs.get("aliases", ()):
            return self._sub.add_parser(name, **kwargs)
        return _Skipped()


#: Global options that take a value (the verb is not among their values).
_VALUED = frozenset({"-c", "-x", "-l", "-f"})
#: Global flags without a value that may come before the verb.
_FLAGS = frozenset({"-n", "-d"})


def verb_of(args: Sequence[str]) -> str | None:
    """The verb ``args`` run, when the global options before it are plain ones; else ``None``.

    Only ``-c/-x/-l/-f VALUE`` (or ``-cVALUE``), ``-n`` and ``-d`` may precede the verb; anything
    else (help, ``--version``, combined flags, ``--``) gives ``None`` and the full parser is built.
    """
    i = 0
    while i < len(args):
        tok = args[i]
        if tok in _VALUED:
            i += 2
        elif tok in _FLAGS or (tok[:2] in _VALUED and not tok.startswith("--")):
            i += 1
        elif tok.startswith("-"):
            return None
        else:
            return tok
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Build the parser: global flags and every registered subcommand, or with ``only``, just
    that subcommand (start-up builds the parser of the verb it runs, not of every verb)."""
    parser = _Parser(
        prog="agent",
        description="GitOps configuration agent for signed Pattern JWTs (Etcha-compatible).",
    )
    _add_global_flags(parser)
    sub = parser.add_subparsers(
        dest="command", metavar="<command>", parser_class=_Parser, title="commands"
    )
    target = sub if only is None else _OnlyVerb(sub, only)
    for name in _registrars(only):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a registrar not yet written
            if exc.name != name:
                raise
            continue
        module.register(target)
    if only is not None and only not in sub.choices:
        return build_parser()
    return parser


def _registrars(only: str | None) -> tuple[str, ...]:
    """The registrar modules to import: the one that adds ``only``, else all of them."""
    if only is not None:
        for name, verbs in REGISTRAR_VERBS.items():
            if only in verbs:
                return (name,)
    return _REGISTRARS


def _add_global_flags(parser: argparse.ArgumentParser) -> None:
    """The flags before the verb."""
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


def _parse(args: list[str]) -> argparse.Namespace:
    """Parse with the parser of the verb ``args`` run; usage errors come from the full parser,
    so their text is the same as ever."""
    verb = verb_of(args)
    if verb is not None:
        try:
            return build_parser(verb).parse_args(args)
        except UsageError:
            pass
    return build_parser().parse_args(args)


def main(argv: Sequence[str] | None = None, *, loaded: Callable[[], None] | None = None) -> int:
    """Run the CLI and return the exit code.

    ``loaded`` is called once the verb's handler module is imported, right before it runs
    (:mod:`agent.__main__` uses it to turn the garbage collector back on).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = False
    level: str | None = None
    fmt: str | None = None
    try:
        args = _parse(args_list)
        if args.show_version:
            print(version_line())
            return 0
        if args.command is None:
            build_parser().print_help()
            return 0
        level, fmt = args.log_level, args.log_format
        debug = level == "debug"
        configure_logging(args.log_level, args.log_format, args.no_color)
        handler = _resolve(args.handler)
        if loaded is not None:
            loaded()
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
