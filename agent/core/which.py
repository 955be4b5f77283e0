"""``shutil.which`` for POSIX, without importing :mod:`shutil`.

:mod:`shutil` imports :mod:`bz2`, :mod:`lzma` and :mod:`fnmatch` (with their C libraries), a
cost paid by every ``agent render`` and ``agent local`` that only looks a program up. The
lookup here is the one ``shutil.which(cmd, path=path)`` does on POSIX (mode ``F_OK | X_OK``).
"""

from __future__ import annotations

import os

__all__ = ["which"]


def _executable(path: str) -> bool:
    return os.path.exists(path) and os.access(path, os.F_OK | os.X_OK) and not os.path.isdir(path)


def which(cmd: str, path: str | None = None) -> str | None:
    """What ``shutil.which(cmd, path=path)`` returns on POSIX.

    A ``cmd`` with a directory part is returned when it is an executable non-directory.
    Otherwise each entry of ``path`` (default ``$PATH``, else ``os.confstr("CS_PATH")``, else
    :data:`os.defpath`) is tried in order; an empty ``path`` finds nothing.
    """
    if os.path.dirname(cmd):
        return cmd if _executable(cmd) else None
    if path is None:
        path = os.environ.get("PATH", None)
        if path is None:
            try:
                path = os.confstr("CS_PATH")
            except (AttributeError, ValueError):
                path = os.defpath
    if not path:
        return None
    seen: set[str] = set()
    for entry in path.split(os.pathsep):
        if entry in seen:
            continue
        seen.add(entry)
        candidate = os.path.join(entry, cmd)
        if _executable(candidate):
            return candidate
    return None
