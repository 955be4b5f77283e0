"""Handlers for ``agent copy|dir|file|line|link`` (registered by :mod:`agent.cli.files`).

Each handler turns its arguments into a call of the one implementation in
:mod:`agent.tools.helpers` and maps the result to an exit code: 0 in state or done, 1 when a check
finds a difference (one line on stderr saying what differs).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

from agent.cli.common import http_client_for, load_config_for
from agent.core.errors import CommandError, UsageError
from agent.net.urls import is_http
from agent.tools.helpers.copy import read_source as _read_source
from agent.tools.helpers.copy import source_perms
from agent.tools.helpers.diff import (
    content_diff,
    diff_settings,
    emit,
    file_changes,
    ownership_changes,
)
from agent.tools.helpers.dir import change_dir, check_dir, remove_dir
from agent.tools.helpers.file import change_file, check_file, remove_file
from agent.tools.helpers.fs import (
    DEFAULT_DIR_PERMS,
    DEFAULT_FILE_PERMS,
    MAX_COPY_BYTES,
    Ownership,
    kind_of,
    lstat_or_none,
    ownership,
    read_file,
    write_atomic,
)
from agent.tools.helpers.line import compile_match, line_apply, line_remove
from agent.tools.helpers.link import change_link, check_link, remove_link

__all__ = ["cmd_copy", "cmd_dir", "cmd_file", "cmd_line", "cmd_link"]


def _report(name: str, target: object, reason: str | None) -> int:
    if reason is None:
        return 0
    print(f"{name} check {target}: {reason}", file=sys.stderr)
    return 1


def _stdin_bytes() -> bytes:
    data = sys.stdin.buffer.read(MAX_COPY_BYTES + 1)
    if len(data) > MAX_COPY_BYTES:
        raise CommandError(f"stdin: expected at most {MAX_COPY_BYTES} bytes, got more")
    return data


def _run_mode(
    mode: str,
    name: str,
    target: object,
    check: Callable[[], str | None],
    change: Callable[[], object],
    remove: Callable[[], object] | None,
    describe: Callable[[], list[str]] | None = None,
) -> int:
    """Run one mode. ``describe`` (diffs on) gives the lines that say what a change does: printed
    before a failing check's reason, and after a change that changed something."""
    if mode == "check":
        reason = check()
        if reason is not None and describe is not None:
            emit(describe())
        return _report(name, target, reason)
    if mode == "change":
        lines = describe() if describe is not None else []
        if change():
            emit(lines)
        return 0
    if remove is None:
        raise UsageError(f"{name}: expected mode check or change, got {mode}")
    remove()
    return 0


def cmd_file(args: argparse.Namespace) -> int:
    """``agent file <mode> <path> [contents | -]``: manage a regular file.

    Returns:
        0 in state / done; 1 when a check finds a difference.

    Raises:
        CommandError: the change or removal failed.
    """
    path = Path(args.path)
    contents: bytes | None
    if args.contents is None:
        contents = None
    elif args.contents == "-":
        contents = _stdin_bytes()
    else:
        contents = os.fsencode(args.contents)
    if args.mode == "remove":
        remove_file(path, contents)
        return 0
    want = ownership(args.owner, args.group, args.perms, DEFAULT_FILE_PERMS)
    return _run_mode(
        args.mode,
        "file",
        path,
        lambda: check_file(path, contents, want),
        lambda: change_file(path, contents, want),
        None,
        _describer(path, contents, want),
    )


def _describer(
    path: Path, contents: bytes | None, want: Ownership
) -> Callable[[], list[str]] | None:
    """What ``file``/``copy`` print with diffs on (``ETCHA_DIFF=1``), or ``None`` when off."""
    settings = diff_settings()
    if settings is None:
        return None
    return lambda: file_changes(path, contents, want, settings)


def cmd_dir(args: argparse.Namespace) -> int:
    """``agent dir <mode> <path>``: manage a directory; ``remove`` removes only an empty one.

    Raises:
        CommandError: the change or removal failed.
    """
    path = Path(args.path)
    if args.mode == "remove":
        remove_dir(path)
        return 0
    want = ownership(args.owner, args.group, args.perms, DEFAULT_DIR_PERMS)
    return _run_mode(
        args.mode,
        "dir",
        path,
        lambda: check_dir(path, want),
        lambda: change_dir(path, want),
        None,
    )


def cmd_copy(args: argparse.Namespace) -> int:
    """``agent copy <mode> <src> <dst | ->``: copy a local file or URL to ``dst`` or stdout.

    Without ``-p`` the destination gets the source's permission bits (0644 for a URL), as Etcha.
    ``remove`` deletes ``dst`` only when it still has the source's contents.

    Raises:
        UsageError: ``check``/``remove`` with ``-`` as destination.
        CommandError: the source cannot be read, or the destination cannot be written.
    """
    # Only a URL needs the config: httpClient.caFile, noSystemCA, tlsSkipVerify, redirects.
    client = http_client_for(load_config_for(args)) if is_http(args.src) else None

    def read_source(src: str) -> bytes:
        return _read_source(src, client=client)

    if args.dst == "-":
        if args.mode != "change":
            raise UsageError(f"copy: mode {args.mode} needs a destination path, got '-'")
        data = read_source(args.src)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    dst = Path(args.dst)
    if args.mode == "remove":
        if lstat_or_none(dst) is not None:
            remove_file(dst, read_source(args.src))
        return 0
    want = ownership(args.owner, args.group, args.perms, None)
    data = read_source(args.src)
    if want.perms is None:
        want = dataclasses.replace(want, perms=source_perms(args.src))
    return _run_mode(
        args.mode,
        "copy",
        dst,
        lambda: check_file(dst, data, want),
        lambda: change_file(dst, data, want),
        None,
        _describer(dst, data, want),
    )


def cmd_line(args: argparse.Namespace) -> int:
    """``agent line <mode> <path | -> <match> <replacement>``: manage a line by regexp.

    With ``-`` the text comes from stdin and ``change``/``remove`` print the result to stdout.

    Raises:
        CommandError: invalid regexp, or the file cannot be read or written.
    """
    compile_match(args.match)
    if args.path == "-":
        text = _stdin_bytes().decode("utf-8", "surrogateescape")
        if args.mode == "check":
            changed = line_apply(text, args.match, args.replacement) != text
            return _report("line", "stdin", "replacement not present" if changed else None)
        out = (
            line_apply(text, args.match, args.replacement)
            if args.mode == "change"
            else line_remove(text, args.match, args.replacement)
        )
        sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
        return 0
    path = Path(os.path.realpath(args.path))  # edit the target of a symlink, keep the link
    st = lstat_or_none(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise CommandError(f"{path}: expected a regular file, got {kind_of(st)}")
    exists = st is not None
    text = read_file(path).decode("utf-8", "surrogateescape") if exists else ""
    if args.mode == "check":
        if not exists:
            _line_diff(path, st, None, line_apply("", args.match, args.replacement))
            return _report("line", path, "does not exist")
        new = line_apply(text, args.match, args.replacement)
        if new != text:
            _line_diff(path, st, text, new)
        return _report("line", path, "replacement not present" if new != text else None)
    if args.mode == "change":
        new = line_apply(text, args.match, args.replacement)
    else:
        if not exists:
            return 0
        new = line_remove(text, args.match, args.replacement)
    if not exists or new != text:
        write_atomic(path, new.encode("utf-8", "surrogateescape"), Ownership())
        _line_diff(path, st, text if exists else None, new)
    return 0


def _line_diff(path: Path, st: os.stat_result | None, old: str | None, new: str) -> None:
    """Print the diff of a ``line`` edit when diffs are on (``ETCHA_DIFF=1``)."""
    settings = diff_settings()
    if settings is None:
        return
    mode = stat.S_IMODE(st.st_mode) if st is not None else None
    new_file = ownership_changes(None, Ownership(), new_perms=DEFAULT_FILE_PERMS)
    lines = new_file if mode is None else []
    old_bytes = None if old is None else old.encode("utf-8", "surrogateescape")
    new_bytes = new.encode("utf-8", "surrogateescape")
    emit(lines + content_diff(path, old_bytes, new_bytes, settings=settings, modes=(mode,)))


def cmd_link(args: argparse.Namespace) -> int:
    """``agent link <mode> <src> <dst>``: manage the symlink ``dst`` -> ``src``.

    ``remove`` deletes only a symlink to ``src``, never its target or anything else at ``dst``.

    Raises:
        CommandError: the link cannot be made or removed.
    """
    dst = Path(args.dst)
    return _run_mode(
        args.mode,
        "link",
        dst,
        lambda: check_link(args.src, dst),
        lambda: change_link(args.src, dst),
        lambda: remove_link(args.src, dst),
    )
