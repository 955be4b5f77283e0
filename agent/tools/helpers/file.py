"""``file``: a regular file with exact contents, permissions and owner.

``file remove`` deletes only a regular file or a symlink (the link, never its target); given
contents, only a regular file with exactly those contents.
"""

from __future__ import annotations

import stat
from pathlib import Path

from agent.core.errors import CommandError
from agent.tools.helpers.fs import (
    Ownership,
    apply_ownership,
    kind_of,
    lstat_or_none,
    ownership_mismatch,
    read_file,
    write_atomic,
)


def check_file(path: Path, contents: bytes | None, want: Ownership) -> str | None:
    """Return why ``path`` is not a regular file with ``contents`` and ``want``, or ``None``.

    Args:
        path: the file.
        contents: exact wanted contents, or ``None`` to not compare contents.
        want: wanted mode and owner.
    """
    st = lstat_or_none(path)
    if st is None:
        return "does not exist"
    if not stat.S_ISREG(st.st_mode):
        return f"expected a regular file, got {kind_of(st)}"
    if contents is not None:
        if st.st_size != len(contents):
            return "contents differ"
        if read_file(path, max(len(contents), 1)) != contents:
            return "contents differ"
    return ownership_mismatch(st, want)


def change_file(path: Path, contents: bytes | None, want: Ownership) -> bool:
    """Make ``path`` a regular file with ``contents`` (``None``: keep/empty) and ``want``.

    Returns:
        True when something changed.

    Raises:
        CommandError: ``path`` is a directory, its parent is missing, or chown/write failed.
    """
    st = lstat_or_none(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CommandError(f"{path}: expected a regular file, got a directory")
    if st is None or not stat.S_ISREG(st.st_mode):
        write_atomic(path, b"" if contents is None else contents, want)
        return True
    if contents is not None and check_file(path, contents, Ownership()) is not None:
        write_atomic(path, contents, want)
        return True
    if ownership_mismatch(st, want) is None:
        return False
    apply_ownership(path, want)
    return True


def remove_file(path: Path, contents: bytes | None = None) -> bool:
    """Delete the regular file or symlink at ``path``; True when something was removed.

    A symlink is unlinked, never followed. With ``contents``, only a regular file with exactly
    those contents is removed: anything else was not written by the command that removes it.

    Args:
        path: the file.
        contents: the contents the pattern wrote, or ``None`` to not compare.

    Raises:
        CommandError: ``path`` is a directory, a special file, a file with other contents (or a
            symlink when ``contents`` is given), or cannot be removed. Nothing was removed.
    """
    st = lstat_or_none(path)
    if st is None:
        return False
    if contents is not None and not stat.S_ISREG(st.st_mode):
        raise CommandError(
            f"{path}: expected a regular file, got {kind_of(st)}; nothing was removed"
        )
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise CommandError(
            f"{path}: expected a regular file or a symlink, got {kind_of(st)}; nothing was removed"
        )
    if contents is not None and check_file(path, contents, Ownership()) is not None:
        raise CommandError(
            f"{path}: expected the contents the pattern wrote ({len(contents)} bytes), got"
            f" other contents ({st.st_size} bytes); nothing was removed"
        )
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CommandError(f"{path}: cannot remove: {exc.strerror}") from exc
    return True
