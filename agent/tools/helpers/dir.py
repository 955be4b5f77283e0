"""``dir``: a directory with permissions and owner.

``dir remove`` removes only an empty directory (``directory not empty`` otherwise); never a symlink.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from agent.core.errors import CommandError
from agent.tools.helpers.fs import (
    DEFAULT_DIR_PERMS,
    Ownership,
    apply_ownership,
    fsync_dir,
    kind_of,
    lstat_or_none,
    ownership_mismatch,
)


def check_dir(path: Path, want: Ownership) -> str | None:
    """Return why ``path`` is not a directory with ``want``, or ``None`` (symlinks followed)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        raise CommandError(f"{path}: cannot stat: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        return f"expected a directory, got {kind_of(st)}"
    return ownership_mismatch(st, want)


def change_dir(path: Path, want: Ownership) -> bool:
    """Create ``path`` (and missing parents) and apply ``want``; True when something changed.

    Raises:
        CommandError: something other than a directory is in the way, or chown/chmod failed.
    """
    reason = check_dir(path, want)
    if reason is None:
        return False
    if not path.is_dir():
        if path.exists() or path.is_symlink():
            raise CommandError(f"{path}: expected a directory, got {kind_of(path.lstat())}")
        try:
            path.mkdir(parents=True, mode=DEFAULT_DIR_PERMS if want.perms is None else want.perms)
        except OSError as exc:
            raise CommandError(f"{path}: cannot create directory: {exc.strerror}") from exc
    apply_ownership(path, want)
    return True


def _count_entries(path: Path, limit: int = 1000) -> str:
    """``"N entries"`` for a directory, counting at most ``limit``."""
    count = 0
    try:
        with os.scandir(path) as entries:
            for _ in entries:
                count += 1
                if count >= limit:
                    return f"{limit} or more entries"
    except OSError:
        return "entries"
    return "1 entry" if count == 1 else f"{count} entries"


def remove_dir(path: Path) -> bool:
    """Delete the directory ``path`` only when it is empty; True when it was removed.

    A directory with anything in it holds data the pattern may not have created, so it is left
    alone (Etcha: ``directory not empty``). A symlink is not a directory that ``change`` made, so
    it is left alone too, and so is its target.

    Raises:
        CommandError: ``path`` is not empty, is not a directory, or cannot be removed. Nothing
            was removed.
    """
    st = lstat_or_none(path)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise CommandError(f"{path}: expected a directory, got {kind_of(st)}; nothing was removed")
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise CommandError(
                f"{path}: directory not empty: expected an empty directory, got"
                f" {_count_entries(path)}; nothing was removed"
            ) from exc
        raise CommandError(f"{path}: cannot remove: {exc.strerror}") from exc
    fsync_dir(path.parent)
    return True
