"""Registrar for the pattern workflow: render, local, build, test, lint, init."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add the pattern-workflow subcommands to ``sub``."""
    p = sub.add_parser(
        "render",
        help="render a JWT, pattern file or Jsonnet text and print the pattern",
        description="A JWT is verified first (verifyKeys/verifyCommands); only verified tokens "
        "are rendered, sandboxed to their embedded files.",
    )
    p.add_argument("target", metavar="jwt|pattern|jsonnet", help="JWT path/URL, pattern or text")
    p.add_argument("-s", dest="source", default="", help="source name to render for")
    p.set_defaults(handler="agent.cli.render_cmds:cmd_render")

    _register_local(sub)

    p = sub.add_parser(
        "build",
        help="run build commands and sign a pattern into a JWT",
        description="The destination defaults to the pattern's buildOutput, else etcha.jwt.",
    )
    p.add_argument("pattern", help="pattern path (.jsonnet)")
    p.add_argument("dest", nargs="?", default=None, help="destination JWT path")
    p.set_defaults(handler="agent.cli.build_cmds:cmd_build")

    p = sub.add_parser(
        "test",
        help="test patterns for idempotency: change, check, remove, check",
        description="The standard library's file, dir, copy, line and symlink functions put "
        "their absolute paths under vars.root, a fresh temporary directory per pattern (removed "
        "afterwards), unless --in-place is given. Commands outside those functions that touch "
        "absolute paths still run for real on this host.",
    )
    p.add_argument("-b", dest="build", action="store_true", help="also test build commands")
    p.add_argument(
        "--in-place",
        dest="in_place",
        action="store_true",
        help="use the real paths (vars.root stays as configured, '' by default)",
    )
    p.add_argument("-f", dest="filter", default=None, help="parent-id filter regexp")
    p.add_argument(
        "-v", dest="verbose", action="store_true", help="log each command's output under its id"
    )
    p.add_argument("path", help="pattern file or directory")
    p.set_defaults(handler="agent.cli.pattern_tools:cmd_test")

    p = sub.add_parser(
        "lint",
        help="lint Jsonnet patterns and their scripts",
        description="Check every .jsonnet and .libsonnet file under PATH: syntax and render "
        "errors, missing imports, pattern and command validation, scripts through lint.linters "
        "(default shellcheck) and, with -f, jsonnetfmt formatting. Findings print as "
        "path:LINE:COL: message; exit 1 when there are any.",
    )
    p.add_argument("-f", dest="check_format", action="store_true", help="check formatting")
    p.add_argument("path", help="file or directory")
    p.set_defaults(handler="agent.cli.pattern_tools:cmd_lint")

    _register_lint_init(sub)


def _register_lint_init(sub: Any) -> None:
    """Add ``lint`` and ``init``."""
    p = sub.add_parser(
        "init",
        help="scaffold lib/, patterns/ and the standard library",
        description="Create lib/ and patterns/ in DIRECTORY when missing, always rewrite the "
        "standard library lib/etcha/ from this agent's copy, and write README.md and "
        "patterns/motd.jsonnet only when absent.",
    )
    p.add_argument("directory", nargs="?", default=".", help="directory (default .)")
    p.set_defaults(handler="agent.cli.pattern_tools:cmd_init")


def _register_local(sub: Any) -> None:
    """``local``."""
    p = sub.add_parser(
        "local",
        help="run a pattern (or Jsonnet command text) on this host",
        description="Text that is not a .jsonnet path is wrapped as {run: [<text>]}.",
    )
    p.add_argument("-r", dest="remove", action="store_true", help="remove mode")
    p.add_argument(
        "-c", dest="check", action="store_true", help="check mode: run checks only, change nothing"
    )
    p.add_argument(
        "--diff",
        dest="diff",
        action="store_true",
        help="file, copy and line print a unified diff of what they would change (with -c) or "
        "changed; sets ETCHA_DIFF=1 for the commands",
    )
    p.add_argument("-v", dest="verbose", action="store_true", help="print each command's output")
    p.add_argument("-s", dest="source", default="local", help="source name (default local)")
    p.add_argument("-f", dest="filter", default=None, help="parent-id filter regexp")
    p.add_argument("target", metavar="pattern.jsonnet|jsonnet", help="pattern path or text")
    p.set_defaults(handler="agent.cli.pattern_cmds:cmd_local")
