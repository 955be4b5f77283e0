"""Atomic file writes: the one implementation every state, token and scaffold write uses.

A write goes to a temp file in the destination's directory, is fsynced, gets its mode, replaces
the destination with ``os.replace`` and then the directory is fsynced. Readers see the old file
or the new one, never a mix; on any failure the temp file is removed and the destination is
unchanged.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` atomically.

    Args:
        path: destination; its directory must exist.
        data: the complete new content (``str`` is written as UTF-8).
        mode: permission bits of the new file.

    Raises:
        OSError: the write failed; the destination is unchanged and the temp file is removed.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else data
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
