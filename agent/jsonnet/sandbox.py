"""Rendering an in-memory file set (a JWT's ``etchaPattern``) sandboxed (reference §7.2).

:func:`render_files` never reads the disk: ``import``, ``importstr`` and ``importbin`` resolve only
to keys of the file set. The import is joined with the importer's directory (then the entry file's
directory) and cleaned with ``posixpath.normpath`` rooted at ``/``, so ``..`` and absolute paths
cannot leave the set; then Etcha's forgiving fallback strips the first path segment until a key
matches. Keys and entry points without a leading ``/`` are treated as rooted at ``/``.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping

from agent.core.errors import RenderError
from agent.jsonnet.engine import NativeCallbacks, evaluate

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["render_files", "resolve_in_files"]

_FIRST_SEGMENT = re.compile(r"^/[^/]*")


def resolve_in_files(
    files: Mapping[str, Any], directory: str, rel: str, entry_dir: str = "/"
) -> str | None:
    """Resolve an import against a normalised file set, never outside it.

    Args:
        files: keys normalised to start with ``/``.
        directory: the importing file's directory (``""`` means ``/``).
        rel: the path written in the import.
        entry_dir: the entry file's directory, tried second for relative imports.

    Returns:
        The matching key, or ``None``.
    """
    if not rel:
        return None
    if rel.startswith("/"):
        tried = [_clean(rel)]
    else:
        tried = [
            _clean(posixpath.join(directory or "/", rel)),
            _clean(posixpath.join(entry_dir, rel)),
        ]
    for candidate in tried:
        if candidate in files:
            return candidate
    candidate = tried[0]
    while candidate:
        candidate = _FIRST_SEGMENT.sub("", candidate, count=1)
        if candidate in files:
            return candidate
    return None


def _clean(p: str) -> str:
    """Root ``p`` at ``/`` and clean it; ``..`` cannot climb above the root."""
    return posixpath.normpath("/" + p.lstrip("/"))


def _normalise_files(files: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in files.items():
        nk = _clean(k)
        if nk not in out or k == nk:
            out[nk] = v
    return out


def render_files(entrypoint: str, files: Mapping[str, str], *, natives: NativeCallbacks) -> Any:
    """Render an in-memory file set (a JWT's ``etchaPattern``), sandboxed.

    Args:
        entrypoint: the key of the entry file (with or without a leading ``/``).
        files: file name -> contents.
        natives: native functions, normally from :func:`make_natives`.

    Returns:
        The evaluated JSON value.

    Raises:
        RenderError: the entry is not in the set, an import is not in the set, or the Jsonnet
            failed; the message names ``file:line``.
    """
    table = _normalise_files(files)
    entry = _clean(entrypoint)
    if entry not in table:
        raise RenderError(
            f"error rendering pattern: expected entrypoint {entrypoint!r} among its "
            f"{len(table)} files, got no such file"
        )
    entry_dir = posixpath.dirname(entry)
    encoded: dict[str, bytes] = {}

    def importer(directory: str, rel: str) -> tuple[str, bytes]:
        found = resolve_in_files(table, directory, rel, entry_dir)
        if found is None:
            raise RenderError(f"couldn't find import {rel} from {directory or '/'}")
        data = encoded.get(found)
        if data is None:
            data = encoded[found] = table[found].encode("utf-8", "surrogatepass")
        return found, data

    return evaluate(table[entry], entry, importer, natives)
