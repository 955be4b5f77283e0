"""Atomic file writes: the one implementation every state, token and scaffold write uses.

A write goes to a temp file in the destination's directory, is fsynced, gets its mode, replaces
the destination with ``os.replace`` and then the directory is fsynced. Readers see the old file
or the new one, never a mix; on any failure the temp file is removed and the destination is
unchanged. :func:`atomic_write_many` does the same for several files of one directory with a
single directory fsync (all temp files written and fsynced, then the renames in order).

Temp files are named ``.<name>.<8 random characters>.agent-tmp`` (:func:`is_temp_name`), so the
ones a crashed writer left behind are recognisable, and the writer holds an exclusive ``flock``
on its temp file while it exists. :func:`remove_stale_temp_files` removes only files with that
name whose lock it can take: a live writer's temp file is never touched, and nothing else is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

logger = logging.getLogger(__name__)

#: Suffix of every temp file :func:`atomic_write` creates.
TEMP_SUFFIX = ".agent-tmp"
# mkstemp's random part: 8 characters of [a-z0-9_].
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + r"$")
# Before the distinctive suffix, temp files were ``.<name>.<random>.tmp``; recognised only for
# state files (tokens, metadata, the replay cache) so an upgrade also clears old leftovers.
_LEGACY_TEMP_NAME = re.compile(
    r"^\.(?P<target>.+\.jwt|.+\.meta\.json|agent-replay\.json)\.[a-z0-9_]{8}\.tmp$"
)


def atomic_write(
    path: Path, data: bytes | str, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: destination; its directory must exist.
        data: the complete new content (``str`` is written as UTF-8).
        mode: permission bits of the new file.
        owner: ``(uid, gid)`` of the new file (-1 leaves one unchanged); None = the process's.

    Raises:
        OSError: the write failed; the destination is unchanged and the temp file is removed.
    """
    atomic_write_many([(path, data)], mode=mode, owner=owner)


def atomic_write_many(
    items: Sequence[tuple[Path, bytes | str]],
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write several files of ONE directory atomically each, with one directory fsync.

    Every temp file is written and fsynced first, then the destinations are replaced in the
    order given, then the directory is fsynced once. Each file is atomic on its own (old or new
    content, never a mix); the renames happen in order, so a reader never sees a later file new
    while an earlier one is still old (a crash can leave the first ones new and the rest old).
    On a failure before the renames nothing changed; every temp file not yet renamed is removed.

    Args:
        items: ``(path, data)`` pairs; every path must be in the same directory.
        mode: permission bits of the new files.
        owner: ``(uid, gid)`` of the new files (-1 leaves one unchanged); None = the process's.

    Raises:
        ValueError: the paths are not all in one directory.
        OSError: a write failed (see above for what changed).
    """
    if not items:
        return
    directory = items[0][0].parent if str(items[0][0].parent) else Path(".")
    for path, _ in items[1:]:
        if (path.parent if str(path.parent) else Path(".")) != directory:
            raise ValueError(f"atomic_write_many: expected paths in {directory}, got {path.parent}")
    staged: list[tuple[BinaryIO, str, Path]] = []
    try:
        for path, data in items:
            staged.append(_stage(directory, path, data, mode, owner))
        while staged:
            fh, tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
            fh.close()  # releases the flock that marked the temp file live
    finally:
        for fh, tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            fh.close()
    fsync_dir(directory)


def _stage(
    directory: Path, path: Path, data: bytes | str, mode: int, owner: tuple[int, int] | None
) -> tuple[BinaryIO, str, Path]:
    """A flocked, fsynced temp file for ``path`` holding ``data`` (removed on failure)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    fh = os.fdopen(fd, "wb")
    try:
        # Held until the file is closed (after os.replace): marks the temp file as live.
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        if owner is not None:
            os.fchown(fh.fileno(), *owner)
        os.fchmod(fh.fileno(), mode)
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        fh.close()
        raise
    return fh, tmp, path


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so renames and creations in it are durable."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of :func:`atomic_write`'s temp files (or an older one's).

    Args:
        name: a file name, without directory.

    Returns:
        ``True`` for ``.<name>.<random>.agent-tmp`` (and the older ``.<state file>.<random>.tmp``).
    """
    return bool(_TEMP_NAME.match(name) or _LEGACY_TEMP_NAME.match(name))


def remove_stale_temp_files(directory: Path) -> list[Path]:
    """Remove the temp files crashed writers left in ``directory`` (not recursive).

    Only regular files whose name passes :func:`is_temp_name` are candidates, and one is removed
    only when its ``flock`` can be taken, i.e. no live writer holds it. Anything else (the state
    files themselves, other files, directories, symlinks) is never touched.

    Args:
        directory: the directory to clean; a missing directory has nothing to clean.

    Returns:
        The removed files, sorted.

    Raises:
        OSError: the directory exists but cannot be listed.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed: list[Path] = []
    for name in sorted(names):
        if not is_temp_name(name):
            continue
        path = Path(directory) / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:  # vanished, a symlink (ELOOP), unreadable: leave it
            if exc.errno not in (errno.ENOENT, errno.ELOOP):
                logger.warning("Cannot inspect temp file %s: %s", path, exc.strerror)
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer holds it
            try:
                same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                continue
            if same:
                os.unlink(path)
                removed.append(path)
        except OSError as exc:
            logger.warning("Cannot remove stale temp file %s: %s", path, exc.strerror)
        finally:
            os.close(fd)
    return removed
