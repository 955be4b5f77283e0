"""POSIX path text as ``pathlib`` shows it, without importing ``pathlib``.

``pathlib`` brings ``urllib.parse`` and ``fnmatch`` with it (start-up, issue 14); the CLI's
render and config paths only need the text of a path, in messages, exactly as ``str(Path(x))``
shows it, so that nothing they print changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from errno import EBADF, ELOOP, ENOENT, ENOTDIR
from stat import S_ISREG

__all__ = ["directories_up", "is_file", "join_text", "path_text"]


def path_text(path: str | os.PathLike[str]) -> str:
    """``str(pathlib.PurePosixPath(path))``: empty and ``.`` components and trailing slashes
    dropped, a leading ``//`` kept (three or more leading slashes are one), ``.`` for nothing."""
    text = os.fspath(path)
    stripped = text.lstrip("/")
    slashes = len(text) - len(stripped)
    root = "//" if slashes == 2 else ("/" if slashes else "")
    parts = [p for p in stripped.split("/") if p and p != "."]
    return (root + "/".join(parts)) or "."


def join_text(base: str | os.PathLike[str], rel: str) -> str:
    """``str(Path(base) / rel)``."""
    return path_text(os.path.join(os.fspath(base), rel))


def directories_up(start: str | os.PathLike[str]) -> Iterator[str]:
    """``start`` and then its parents, as ``(p, *p.parents)`` of ``pathlib`` shows them."""
    text = path_text(start)
    yield text
    stripped = text.lstrip("/")
    root = text[: len(text) - len(stripped)]
    parts = [] if text == "." else [p for p in stripped.split("/") if p]
    for i in range(len(parts) - 1, -1, -1):
        yield (root + "/".join(parts[:i])) or "."


#: The errors ``pathlib`` takes for "no such file" (``pathlib._IGNORED_ERRNOS``).
_NOT_THERE = (ENOENT, ENOTDIR, EBADF, ELOOP)


def is_file(path: str | os.PathLike[str]) -> bool:
    """``Path(path).is_file()`` without pathlib: ``False`` for a missing path (or one a NUL
    makes invalid), the ``OSError`` for any other failure (a directory that cannot be searched)."""
    try:
        return S_ISREG(os.stat(path_text(path)).st_mode)
    except OSError as exc:
        if exc.errno not in _NOT_THERE:
            raise
        return False
    except ValueError:
        return False
