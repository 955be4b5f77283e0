"""The ``copy|dir|file|line|link`` verbs over explicit streams: one implementation, two entries.

``agent file ...`` (:mod:`agent.cli.file_cmds`) calls these with the process's own streams and
environment (:meth:`HelperIO.system`); the in-process runner (:mod:`agent.tools.inprocess`) calls
them with a capture buffer and the command's environment, so a pattern's helper commands behave
the same whether they run in a child process or inside the agent.

Each verb takes the parsed arguments (:mod:`agent.tools.helpers.args`) and returns the exit code:
0 in state or done, 1 when a check finds a difference (one line on stderr saying what differs).
Errors are raised (:class:`~agent.core.errors.CommandError`, :class:`UsageError`); the entry point
turns them into its ``ERROR: ...`` line and exit code.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent.core.errors import CommandError, UsageError
from agent.tools.helpers.copy import read_source, source_perms
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

__all__ = [
    "RUNNERS",
    "VERBS",
    "HelperIO",
    "run_copy",
    "run_dir",
    "run_file",
    "run_line",
    "run_link",
]

#: The helper verbs, by the name scripts use.
VERBS = ("copy", "dir", "file", "line", "link")


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


@dataclass(frozen=True, slots=True)
class HelperIO:
    """Where a verb reads stdin, writes its output and finds its environment.

    Attributes:
        stdin: the binary stream ``-`` reads.
        out: writes bytes to stdout.
        err: writes text to stderr (the one-line check reason).
        env: the variables the helper sees (``ETCHA_DIFF``, ``ETCHA_DIFF_REDACT``).
    """

    stdin: BinaryIO
    out: Callable[[bytes], object]
    err: Callable[[str], object]
    env: Mapping[str, str]

    @classmethod
    def system(cls) -> HelperIO:
        """This process's stdin, stdout, stderr and environment (the CLI verbs)."""
        return cls(sys.stdin.buffer, _write_stdout, _write_stderr, os.environ)

    def emit(self, lines: list[str]) -> None:
        """Print diff lines on stdout."""
        emit(lines, self.out)


def _report(io: HelperIO, name: str, target: object, reason: str | None) -> int:
    if reason is None:
        return 0
    io.err(f"{name} check {target}: {reason}\n")
    return 1


def _stdin_bytes(io: HelperIO) -> bytes:
    data = io.stdin.read(MAX_COPY_BYTES + 1)
    if len(data) > MAX_COPY_BYTES:
        raise CommandError(f"stdin: expected at most {MAX_COPY_BYTES} bytes, got more")
    return data


def _run_mode(
    io: HelperIO,
    mode: str,
    name: str,
    target: object,
    actions: tuple[Callable[[], str | None], Callable[[], object], Callable[[], object] | None],
    describe: Callable[[], list[str]] | None = None,
) -> int:
    """Run one mode: ``actions`` is (check, change, remove). ``describe`` (diffs on) gives the
    lines that say what a change does: printed before a failing check's reason, and after a
    change that changed something."""
    check, change, remove = actions
    if mode == "check":
        reason = check()
        if reason is not None and describe is not None:
            io.emit(describe())
        return _report(io, name, target, reason)
    if mode == "change":
        lines = describe() if describe is not None else []
        if change():
            io.emit(lines)
        return 0
    if remove is None:
        raise UsageError(f"{name}: expected mode check or change, got {mode}")
    remove()
    return 0


def _describer(
    io: HelperIO, path: Path, contents: bytes | None, want: Ownership
) -> Callable[[], list[str]] | None:
    """What ``file``/``copy`` print with diffs on (``ETCHA_DIFF=1``), or ``None`` when off."""
    settings = diff_settings(io.env)
    if settings is None:
        return None
    return lambda: file_changes(path, contents, want, settings)


def run_file(args: argparse.Namespace, io: HelperIO) -> int:
    """``file <mode> <path> [contents | -]``: manage a regular file.

    Raises:
        CommandError: the change or removal failed.
    """
    path = Path(args.path)
    contents: bytes | None
    if args.contents is None:
        contents = None
    elif args.contents == "-":
        contents = _stdin_bytes(io)
    else:
        contents = os.fsencode(args.contents)
    if args.mode == "remove":
        remove_file(path, contents)
        return 0
    want = ownership(args.owner, args.group, args.perms, DEFAULT_FILE_PERMS)
    return _run_mode(
        io,
        args.mode,
        "file",
        path,
        (
            lambda: check_file(path, contents, want),
            lambda: change_file(path, contents, want),
            None,
        ),
        _describer(io, path, contents, want),
    )


def run_dir(args: argparse.Namespace, io: HelperIO) -> int:
    """``dir <mode> <path>``: manage a directory; ``remove`` removes only an empty one.

    Raises:
        CommandError: the change or removal failed.
    """
    path = Path(args.path)
    if args.mode == "remove":
        remove_dir(path)
        return 0
    want = ownership(args.owner, args.group, args.perms, DEFAULT_DIR_PERMS)
    return _run_mode(
        io,
        args.mode,
        "dir",
        path,
        (lambda: check_dir(path, want), lambda: change_dir(path, want), None),
    )


def run_copy(
    args: argparse.Namespace, io: HelperIO, read: Callable[[str], bytes] = read_source
) -> int:
    """``copy <mode> <src> <dst | ->``: copy a local file or URL to ``dst`` or stdout.

    Without ``-p`` the destination gets the source's permission bits (0644 for a URL), as Etcha.
    ``remove`` deletes ``dst`` only when it still has the source's contents.

    Args:
        args: the parsed arguments.
        io: the streams.
        read: reads the source (the CLI passes one with the config's HTTP client for URLs).

    Raises:
        UsageError: ``check``/``remove`` with ``-`` as destination.
        CommandError: the source cannot be read, or the destination cannot be written.
    """
    if args.dst == "-":
        if args.mode != "change":
            raise UsageError(f"copy: mode {args.mode} needs a destination path, got '-'")
        io.out(read(args.src))
        return 0
    dst = Path(args.dst)
    if args.mode == "remove":
        if lstat_or_none(dst) is not None:
            remove_file(dst, read(args.src))
        return 0
    want = ownership(args.owner, args.group, args.perms, None)
    data = read(args.src)
    if want.perms is None:
        want = dataclasses.replace(want, perms=source_perms(args.src))
    return _run_mode(
        io,
        args.mode,
        "copy",
        dst,
        (lambda: check_file(dst, data, want), lambda: change_file(dst, data, want), None),
        _describer(io, dst, data, want),
    )


def _line_stdin(args: argparse.Namespace, io: HelperIO) -> int:
    """``line <mode> - ...``: edit stdin, print the result (change/remove) or check it."""
    text = _stdin_bytes(io).decode("utf-8", "surrogateescape")
    if args.mode == "check":
        changed = line_apply(text, args.match, args.replacement) != text
        return _report(io, "line", "stdin", "replacement not present" if changed else None)
    out = (
        line_apply(text, args.match, args.replacement)
        if args.mode == "change"
        else line_remove(text, args.match, args.replacement)
    )
    io.out(out.encode("utf-8", "surrogateescape"))
    return 0


def run_line(args: argparse.Namespace, io: HelperIO) -> int:
    """``line <mode> <path | -> <match> <replacement>``: manage a line by regexp.

    With ``-`` the text comes from stdin and ``change``/``remove`` print the result to stdout.

    Raises:
        CommandError: invalid regexp, or the file cannot be read or written.
    """
    compile_match(args.match)
    if args.path == "-":
        return _line_stdin(args, io)
    path = Path(os.path.realpath(args.path))  # edit the target of a symlink, keep the link
    st = lstat_or_none(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise CommandError(f"{path}: expected a regular file, got {kind_of(st)}")
    exists = st is not None
    text = read_file(path).decode("utf-8", "surrogateescape") if exists else ""
    if args.mode == "check":
        if not exists:
            _line_diff(io, path, st, None, line_apply("", args.match, args.replacement))
            return _report(io, "line", path, "does not exist")
        new = line_apply(text, args.match, args.replacement)
        if new != text:
            _line_diff(io, path, st, text, new)
        return _report(io, "line", path, "replacement not present" if new != text else None)
    if args.mode == "change":
        new = line_apply(text, args.match, args.replacement)
    else:
        if not exists:
            return 0
        new = line_remove(text, args.match, args.replacement)
    if not exists or new != text:
        write_atomic(path, new.encode("utf-8", "surrogateescape"), Ownership())
        _line_diff(io, path, st, text if exists else None, new)
    return 0


def _line_diff(
    io: HelperIO, path: Path, st: os.stat_result | None, old: str | None, new: str
) -> None:
    """Print the diff of a ``line`` edit when diffs are on (``ETCHA_DIFF=1``)."""
    settings = diff_settings(io.env)
    if settings is None:
        return
    mode = stat.S_IMODE(st.st_mode) if st is not None else None
    new_file = ownership_changes(None, Ownership(), new_perms=DEFAULT_FILE_PERMS)
    lines = new_file if mode is None else []
    old_bytes = None if old is None else old.encode("utf-8", "surrogateescape")
    new_bytes = new.encode("utf-8", "surrogateescape")
    io.emit(lines + content_diff(path, old_bytes, new_bytes, settings=settings, modes=(mode,)))


def run_link(args: argparse.Namespace, io: HelperIO) -> int:
    """``link <mode> <src> <dst>``: manage the symlink ``dst`` -> ``src``.

    ``remove`` deletes only a symlink to ``src``, never its target or anything else at ``dst``.

    Raises:
        CommandError: the link cannot be made or removed.
    """
    dst = Path(args.dst)
    return _run_mode(
        io,
        args.mode,
        "link",
        dst,
        (
            lambda: check_link(args.src, dst),
            lambda: change_link(args.src, dst),
            lambda: remove_link(args.src, dst),
        ),
    )


#: The verb functions by name (``copy`` takes an optional source reader too).
RUNNERS: Mapping[str, Callable[[argparse.Namespace, HelperIO], int]] = {
    "copy": run_copy,
    "dir": run_dir,
    "file": run_file,
    "line": run_line,
    "link": run_link,
}
