"""The argument parsers of the helper verbs: copy, dir, file, line, link.

One definition for both entry points: the CLI (:mod:`agent.cli.files` registers these
subcommands; the handlers live in :mod:`agent.cli.file_cmds` and are imported when run) and the
in-process runner (:mod:`agent.tools.inprocess` parses a pattern script's words with them). Only
builds parsers; imports nothing beyond :mod:`argparse`.
"""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MODES_ALL = ("check", "change", "remove")


def _ownership_flags(
    p: argparse.ArgumentParser, default_perms: str | None, default_text: str = ""
) -> None:
    p.add_argument("-o", dest="owner", default="", metavar="OWNER", help="owner name or uid")
    p.add_argument("-g", dest="group", default="", metavar="GROUP", help="group name or gid")
    default_text = f"default {default_perms}" if default_perms else default_text
    p.add_argument(
        "-p",
        dest="perms",
        default=default_perms,
        metavar="PERMS",
        help=f"octal permissions ({default_text})",
    )


def register(sub: Any) -> None:
    """Add the helper subcommands to ``sub`` (an argparse subparsers action)."""
    _register_copy(sub)
    _register_dir(sub)
    _register_file(sub)
    _register_line(sub)
    _register_link(sub)


def _register_copy(sub: Any) -> None:
    """``copy``."""
    p = sub.add_parser(
        "copy",
        help="copy a local file or http(s) URL to a path or stdout",
        description=(
            "check: exit 0 when dst already has src's contents and mode; change: copy src to dst"
            " ('-' = stdout), with src's permission bits unless -p is given (0644 for a URL);"
            " remove: delete dst only if it still has src's contents. URL headers go in the"
            " fragment: #Name:value\\r\\n..."
        ),
    )
    p.add_argument("mode", choices=_MODES_ALL, help="check, change or remove")
    p.add_argument("src", help="source path or http(s) URL")
    p.add_argument("dst", help="destination path, or - for stdout")
    _ownership_flags(p, None, "default: the source's, 0644 for a URL")
    p.set_defaults(handler="agent.cli.file_cmds:cmd_copy")


def _register_dir(sub: Any) -> None:
    """``dir``."""
    p = sub.add_parser(
        "dir",
        help="manage a directory",
        description=(
            "check/change/remove a directory with the given permissions and owner. remove"
            " removes only an empty directory: anything else fails with 'directory not empty'"
            " and nothing is deleted."
        ),
    )
    p.add_argument("mode", choices=_MODES_ALL, help="check, change or remove")
    p.add_argument("path", help="directory path")
    _ownership_flags(p, "0755")
    p.set_defaults(handler="agent.cli.file_cmds:cmd_dir")


def _register_file(sub: Any) -> None:
    """``file``."""
    p = sub.add_parser(
        "file",
        help="manage a file",
        description=(
            "check/change/remove a regular file with exact contents ('-' = stdin; omitted = any"
            " contents), permissions and owner. Writes are atomic. remove deletes only a"
            " regular file or a symlink (never its target); given contents, only a regular file"
            " with exactly those contents."
        ),
    )
    p.add_argument("mode", choices=_MODES_ALL, help="check, change or remove")
    p.add_argument("path", help="file path")
    p.add_argument("contents", nargs="?", default=None, help="exact contents, or - for stdin")
    _ownership_flags(p, "0644")
    p.set_defaults(handler="agent.cli.file_cmds:cmd_file")


def _register_line(sub: Any) -> None:
    """``line``."""
    p = sub.add_parser(
        "line",
        help="manage a line in a file or stdin by regexp",
        description=(
            "Replace every match of the regexp (multi-line mode; ${1} expands groups), or append"
            " the replacement when nothing matches. check: exit 0 when change would do nothing."
            " remove: delete the lines change wrote (whole-line matches whose replacement is"
            " the line itself, and lines equal to the replacement). Path '-' reads stdin and"
            " prints the result."
        ),
    )
    p.add_argument("mode", choices=_MODES_ALL, help="check, change or remove")
    p.add_argument("path", help="file path, or - for stdin/stdout")
    p.add_argument("match", help="regular expression")
    p.add_argument("replacement", help="replacement text (${1} or $name for groups, $$ for $)")
    p.set_defaults(handler="agent.cli.file_cmds:cmd_line")


def _register_link(sub: Any) -> None:
    """``link``."""
    p = sub.add_parser(
        "link",
        help="manage a symlink dst -> src",
        description=(
            "check/change/remove the symlink dst pointing at src. remove deletes only a symlink"
            " to src, never its target or anything else at dst."
        ),
    )
    p.add_argument("mode", choices=_MODES_ALL, help="check, change or remove")
    p.add_argument("src", help="what the link points to")
    p.add_argument("dst", help="the symlink path")
    p.set_defaults(handler="agent.cli.file_cmds:cmd_link")
