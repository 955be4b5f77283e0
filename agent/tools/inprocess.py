"""The in-process runner of the helper verbs: the :class:`agent.run.inprocess.InProcess` hook.

``agent local``, ``agent test`` and the daemon pass a :class:`HelperRunner` to the engine; the
engine hands it the words of a script that is exactly one helper invocation under the default
exec (:func:`agent.run.inprocess.helper_argv`). It parses them with the CLI's own parsers
(:mod:`agent.tools.helpers.args`) and runs the CLI's own verb functions
(:mod:`agent.tools.helpers.verbs`) with the command's stdin, environment and a capture buffer, and
renders failures as ``agent`` does: ``ERROR: <message>`` and exit 1, ``usage error: ...`` and
exit 2. Output is stdout and stderr combined in write order, capped like a child's
(:data:`agent.run.shell.MAX_OUTPUT`).

It declines (the script then runs in a shell, so nothing changes) when the words do not parse
(usage errors, ``-h``), and for a ``copy`` from an ``http(s)`` URL (the child loads the config's
HTTP client settings). Differences from a child, by design: ``exec.timeout`` does not apply (the
verbs touch one local path), and an unexpected Python exception is one ``ERROR:`` line rather
than a traceback, with exit 1 as before.

Nothing is process-global: no redirection of ``sys.stdout``, no change to ``os.environ``, so the
daemon may run helpers of several sources at once.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Mapping, Sequence

from agent.config.tree import Config
from agent.core.errors import AgentError, UsageError
from agent.core.logs import get_logger
from agent.run.shell import MAX_OUTPUT, ShellResult, capped_output
from agent.tools.helpers.args import register

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agent.tools.helpers.verbs import HelperIO

__all__ = ["HelperRunner", "helper_runner"]

logger = get_logger(__name__)


class _Declined(Exception):
    """The words do not parse as a helper invocation."""


class _Parser(argparse.ArgumentParser):
    """A parser that raises instead of printing and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _Declined(message)

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise _Declined(message or "")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agent", add_help=False)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    register(sub)
    return parser


class HelperRunner:
    """Runs ``[verb, args...]`` inside the agent (see the module doc).

    Attributes:
        ran: how many invocations ran in-process (a marker for logs and tests).
    """

    def __init__(self, *, etcha: bool = False) -> None:
        self._etcha = etcha
        self._parser: argparse.ArgumentParser | None = None  # built on the first invocation
        self.ran = 0

    @property
    def etcha(self) -> bool:
        """Whether ``etcha <verb> ...`` runs in-process too (``run.inProcessEtcha``)."""
        return self._etcha

    def _parse(self, argv: Sequence[str]) -> argparse.Namespace | None:
        before = argv[: argv.index("--")] if "--" in argv else argv
        if "-h" in before or "--help" in before:
            return None
        if self._parser is None:
            self._parser = _build_parser()
        try:
            return self._parser.parse_args(list(argv))
        except _Declined:
            return None

    def try_run(
        self, argv: Sequence[str], env: Mapping[str, str], stdin: str
    ) -> ShellResult | None:
        """Run the verb, or ``None`` to decline (see the module doc)."""
        args = self._parse(argv)
        if args is None:
            return None
        if args.command == "copy":
            from agent.net.urls import is_http  # lazy: urllib.parse, for copy only

            if is_http(args.src):
                return None
        from agent.tools.helpers.verbs import HelperIO  # lazy: the verbs, once one runs

        buf = bytearray()

        def err(text: str) -> None:
            buf.extend(text.encode("utf-8", "backslashreplace"))

        helper_io = HelperIO(io.BytesIO(stdin.encode()), buf.extend, err, env)
        start = time.monotonic()
        code = _call(args, helper_io)
        duration = time.monotonic() - start
        self.ran += 1
        logger.debug("Ran %s %s in-process: exit %d", args.command, args.mode, code)
        return _result(code, bytes(buf), duration)


def _call(args: argparse.Namespace, helper_io: HelperIO) -> int:
    """Run the verb; errors become the CLI's error line and exit code."""
    from agent.tools.helpers.verbs import RUNNERS  # lazy: loaded by try_run already

    try:
        return RUNNERS[args.command](args, helper_io)
    except UsageError as exc:
        helper_io.err(f"usage error: {exc}\n")
        return 2
    except AgentError as exc:
        msg = f"{exc} ({exc.hint})" if exc.hint else str(exc)
        helper_io.err(f"ERROR: {msg}\n")
        return 1
    except Exception as exc:  # a child would print a traceback and exit 1
        helper_io.err(f"ERROR: {args.command}: unexpected error: {exc!r}\n")
        return 1


def _result(code: int, data: bytes, duration: float) -> ShellResult:
    """A :class:`ShellResult` like :func:`agent.run.shell.run` makes from a child's output."""
    output, truncated = capped_output(data, len(data), MAX_OUTPUT)
    return ShellResult(code, output, duration, False, truncated)


def helper_runner(config: Config) -> HelperRunner | None:
    """The hook for ``config`` (``run.inProcessHelpers``, ``run.inProcessEtcha``), or ``None``
    when helpers are to run as child processes."""
    if not config.run.in_process_helpers:
        return None
    return HelperRunner(etcha=config.run.in_process_etcha)
