"""``link``: the symlink ``dst`` -> ``src``; ``link remove`` deletes only a symlink to ``src``."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from agent.core.errors import CommandError
from agent.tools.helpers.fs import fsync_dir, kind_of, lstat_or_none


def check_link(src: str, dst: Path) -> str | None:
    """Return why ``dst`` is not a symlink to ``src``, or ``None``."""
    st = lstat_or_none(dst)
    if st is None:
        return "does not exist"
    if not stat.S_ISLNK(st.st_mode):
        return f"expected a symlink, got {kind_of(st)}"
    target = os.readlink(dst)
    if target != src:
        return f"symlink points to {target}, expected {src}"
    return None


def change_link(src: str, dst: Path) -> bool:
    """Make ``dst`` a symlink to ``src`` (replacing a file or another symlink atomically).

    Raises:
        CommandError: a non-empty directory is at ``dst``, or the link cannot be made.
    """
    if check_link(src, dst) is None:
        return False
    st = lstat_or_none(dst)
    try:
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                dst.rmdir()
            except OSError as exc:
                raise CommandError(
                    f"{dst}: expected a symlink, got a directory that cannot be replaced: "
                    f"{exc.strerror}"
                ) from exc
        tmp = dst.parent / f".{dst.name}.{secrets.token_hex(6)}.tmp"
        os.symlink(src, tmp)
        try:
            os.replace(tmp, dst)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    except CommandError:
        raise
    except OSError as exc:
        raise CommandError(f"{dst}: cannot create symlink: {exc.strerror}") from exc
    fsync_dir(dst.parent)
    return True


def remove_link(src: str, dst: Path) -> bool:
    """Delete the symlink ``dst`` when it points at ``src``; True when it was removed.

    The link's target is never touched. Anything else at ``dst`` (a regular file, a directory, a
    symlink pointing elsewhere) was not made by ``change``, so it is left alone.

    Raises:
        CommandError: ``dst`` is not a symlink to ``src``, or it cannot be removed. Nothing was
            removed.
    """
    st = lstat_or_none(dst)
    if st is None:
        return False
    if not stat.S_ISLNK(st.st_mode):
        raise CommandError(
            f"{dst}: expected a symlink to {src}, got {kind_of(st)}; nothing was removed"
        )
    target = os.readlink(dst)
    if target != src:
        raise CommandError(
            f"{dst}: expected a symlink to {src}, got a symlink to {target}; nothing was removed"
        )
    try:
        dst.unlink()
    except OSError as exc:
        raise CommandError(f"{dst}: cannot remove: {exc.strerror}") from exc
    return True
