"""Collecting a pattern's files from disk into an ``etchaPattern`` file set (reference §2.6).

- :func:`collect_files` finds dependencies *statically* (:func:`scan_imports`, a Jsonnet lexer,
  finds every ``import*`` keyword followed by a string literal), like go-jsonnet's
  ``FindDependencies`` that Etcha uses. Imports in branches that are not evaluated are collected
  too, and collecting never calls a native function (no HTTP, no DNS). Imports resolve like
  go-jsonnet's file importer: relative to the importing file's directory, then to the entry
  file's directory.
- The standard library ships in the package (``agent/lib/etcha/``). When collecting from disk, a
  relative import ``etcha/<file>`` that resolves to nothing on disk resolves to the package's
  file; the library's own imports stay inside the library. Those files join the file set under
  ``/etcha/<file>``, where the sandboxed resolution (and Etcha's) finds them from any importer,
  so a token carries them like any import and a host never reads its own package's copy.
- Key normalisation deliberately differs from Etcha's ``GetPath`` (§2.6, §9.19): the base is the
  deepest common directory computed on **whole path components**, not a string prefix, so
  ``/a/b`` is never taken as the parent of ``/a/bc/x.libsonnet`` and every key starts with ``/``.
"""

from __future__ import annotations

import os
import posixpath
import string
from collections.abc import Mapping

from agent.core.errors import RenderError
from agent.jsonnet.sandbox import resolve_in_files

__all__ = ["STDLIB_PREFIX", "collect_files", "scan_imports"]

#: A relative import starting with this resolves to the package's standard library when it is
#: not found on disk.
STDLIB_PREFIX = "etcha/"

_IDENT_START = frozenset(string.ascii_letters + "_")
_IDENT_CHARS = frozenset(string.ascii_letters + string.digits + "_")
_IMPORT_KEYWORDS = frozenset({"import", "importstr", "importbin"})
_ESCAPES = {
    '"': '"',
    "'": "'",
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}


def scan_imports(text: str) -> list[tuple[str, str, int]]:
    """Find the static imports of a Jsonnet source.

    Comments and string literals are lexed, so ``import`` inside them is ignored.

    Args:
        text: Jsonnet source.

    Returns:
        ``(keyword, path, line)`` for every ``import``/``importstr``/``importbin`` followed by a
        string literal, in source order (``line`` is 1-based).
    """
    out: list[tuple[str, str, int]] = []
    if "import" not in text:  # every keyword contains it: no lexing needed (most patterns)
        return out
    n = len(text)
    i = 0
    pending: tuple[str, int] | None = None
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == "#" or text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        start = i
        literal: str | None = None
        word = ""
        if c in "\"'":
            literal, i = _lex_quoted(text, i)
        elif c == "@" and i + 1 < n and text[i + 1] in "\"'":
            literal, i = _lex_verbatim(text, i + 1)
        elif text.startswith("|||", i):
            literal, i = _lex_block(text, i)
        elif c in _IDENT_START:
            j = i + 1
            while j < n and text[j] in _IDENT_CHARS:
                j += 1
            word, i = text[i:j], j
        else:
            i += 1
        if pending is not None and literal is not None:
            out.append((pending[0], literal, pending[1]))
        pending = (word, text.count("\n", 0, start) + 1) if word in _IMPORT_KEYWORDS else None
    return out


def _lex_quoted(text: str, i: int) -> tuple[str, int]:
    quote, n, j = text[i], len(text), i + 1
    parts: list[str] = []
    while j < n:
        c = text[j]
        if c == quote:
            return "".join(parts), j + 1
        if c == "\\" and j + 1 < n:
            e = text[j + 1]
            if e == "u" and j + 6 <= n:
                try:
                    parts.append(chr(int(text[j + 2 : j + 6], 16)))
                except ValueError:
                    parts.append(text[j : j + 6])
                j += 6
                continue
            parts.append(_ESCAPES.get(e, "\\" + e))
            j += 2
            continue
        parts.append(c)
        j += 1
    return "".join(parts), n


def _lex_verbatim(text: str, i: int) -> tuple[str, int]:
    quote, n, j = text[i], len(text), i + 1
    parts: list[str] = []
    while j < n:
        if text[j] == quote:
            if j + 1 < n and text[j + 1] == quote:
                parts.append(quote)
                j += 2
                continue
            return "".join(parts), j + 1
        parts.append(text[j])
        j += 1
    return "".join(parts), n


def _lex_block(text: str, i: int) -> tuple[str, int]:
    n = len(text)
    j = i + 3
    chomp = j < n and text[j] == "-"
    eol = text.find("\n", j)
    if eol < 0:
        return "", n
    pos = eol + 1
    first_end = text.find("\n", pos)
    first = text[pos : n if first_end < 0 else first_end]
    indent = first[: len(first) - len(first.lstrip(" \t"))]
    lines: list[str] = []
    while pos < n:
        end = text.find("\n", pos)
        line = text[pos : n if end < 0 else end]
        if indent and line.startswith(indent):
            lines.append(line[len(indent) :])
        elif not line.strip():
            lines.append("")
        else:
            stripped = line.lstrip(" \t")
            close = pos + (len(line) - len(stripped))
            value = "\n".join(lines) + ("" if chomp else "\n")
            return value, (close + 3 if stripped.startswith("|||") else close)
        pos = n if end < 0 else end + 1
    return "\n".join(lines), n


def _read_bytes(path: str) -> bytes:
    """``Path(path).read_bytes()`` (no pathlib on the render path: start-up, issue 14)."""
    with open(path, "rb") as fh:
        return fh.read()


def collect_files(path: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """Collect a pattern's entry file and its transitive imports into an ``etchaPattern`` set.

    A relative import whose first segment is ``etcha`` (``import 'etcha/etcha.libsonnet'``) and
    that does not resolve on disk resolves to the standard library shipped in the package
    (``agent/lib/etcha/``). Such files are embedded like any other import, under the keys
    ``/etcha/<file>``, so a host renders them from the token alone.

    Args:
        path: the entry Jsonnet file (relative paths are taken against the CWD).

    Returns:
        ``(entrypoint, files)``: keys are ``/`` + the path relative to the deepest common
        directory (whole components) of all the files from disk, and ``/etcha/<file>`` for the
        package's standard library; values are the raw contents.

    Raises:
        RenderError: the entry file or an import cannot be read; the message names the importer,
            the import and the OS error.
    """
    entry = os.path.normpath(os.path.abspath(path))
    try:
        entry_bytes = _read_bytes(entry)
    except OSError as exc:
        raise RenderError(
            f"error reading pattern {entry}: expected a readable file, got {exc.strerror or exc}"
        ) from None
    collector = _Collector(entry, entry_bytes)
    collector.run()
    return collector.file_set()


class _Collector:
    """One walk over a pattern's imports: disk files and standard-library files, by path."""

    def __init__(self, entry: str, entry_bytes: bytes) -> None:
        self.entry = entry
        self.entry_dir = os.path.dirname(entry)
        self.contents: dict[str, bytes] = {entry: entry_bytes}
        self.stdlib: dict[str, bytes] = {}
        # (importer, import path, the standard library file it must resolve to when rendered)
        self.stdlib_imports: list[tuple[str, str, str]] = []
        self.queue: list[tuple[bool, str]] = [(False, entry)]

    def run(self) -> None:
        scanned: set[tuple[bool, str]] = set()
        while self.queue:
            item = self.queue.pop()
            if item in scanned:
                continue
            scanned.add(item)
            in_stdlib, current = item
            if in_stdlib:
                self._scan_stdlib_file(current)
            else:
                self._scan_disk_file(current)

    def _scan_stdlib_file(self, current: str) -> None:
        """The library's own imports stay inside the library."""
        where = _stdlib_display(current)
        for keyword, rel, line in scan_imports(self.stdlib[current].decode("utf-8", "replace")):
            lib_rel = _stdlib_path(posixpath.join(posixpath.dirname(current), rel))
            if lib_rel is None or posixpath.isabs(rel):
                raise RenderError(
                    f"couldn't find import {rel} from {where}:{line}: expected a file of "
                    f"the standard library ({STDLIB_PREFIX}*)"
                )
            _read_stdlib(lib_rel, rel, f"{where}:{line}", self.stdlib)
            if keyword == "import":
                self.queue.append((True, lib_rel))

    def _scan_disk_file(self, current: str) -> None:
        where = current
        for keyword, rel, line in scan_imports(self.contents[current].decode("utf-8", "replace")):
            found = _resolve_on_disk(rel, os.path.dirname(current), self.entry_dir)
            lib_rel = None if found is not None or os.path.isabs(rel) else _stdlib_path(rel)
            if lib_rel is not None:
                _read_stdlib(lib_rel, rel, f"{where}:{line}", self.stdlib)
                self.stdlib_imports.append((current, rel, lib_rel))
                if keyword == "import":
                    self.queue.append((True, lib_rel))
                continue
            if found is None:
                raise RenderError(
                    f"couldn't find import {rel} from {where}:{line}: "
                    "expected a file relative to the importer or the pattern directory, "
                    f"or {STDLIB_PREFIX}<file> of the standard library"
                )
            self._read_disk(found, rel, f"{where}:{line}")
            if keyword == "import":
                self.queue.append((False, found))

    def _read_disk(self, found: str, rel: str, importer: str) -> None:
        if found in self.contents:
            return
        try:
            self.contents[found] = _read_bytes(found)
        except OSError as exc:
            raise RenderError(
                f"error reading import {rel} from {importer}: "
                f"expected a readable file, got {exc.strerror or exc}"
            ) from None

    def file_set(self) -> tuple[str, dict[str, str]]:
        """``(entrypoint key, files)`` keyed under the deepest common directory."""
        base = os.path.commonpath([self.entry_dir, *self.contents])
        files = {
            _key(p, base): data.decode("utf-8", "replace") for p, data in self.contents.items()
        }
        for lib_rel, data in self.stdlib.items():
            key = "/" + lib_rel
            if key in files:
                raise RenderError(
                    f"error collecting {self.entry}: {os.path.join(base, lib_rel)} and the "
                    f"standard library's {lib_rel} would both be stored as {key}; expected only "
                    "one of them (import the file on disk by a path that does not start with "
                    "etcha/)"
                )
            files[key] = data.decode("utf-8", "replace")
        entry_key = _key(self.entry, base)
        _check_stdlib_imports(files, self.stdlib_imports, base, posixpath.dirname(entry_key))
        return entry_key, files


def _stdlib_path(rel: str) -> str | None:
    """``etcha/<file>`` cleaned, or ``None`` when ``rel`` does not name a library file."""
    if not rel or rel.startswith("/"):
        return None
    clean = posixpath.normpath(rel)
    if not clean.startswith(STDLIB_PREFIX) or clean == STDLIB_PREFIX.rstrip("/"):
        return None
    return clean


def _stdlib_display(lib_rel: str) -> str:
    return f"<agent standard library>/{lib_rel}"


def _read_stdlib(lib_rel: str, rel: str, importer: str, into: dict[str, bytes]) -> None:
    """Read ``agent/lib/<lib_rel>`` from the package data into ``into`` (once)."""
    if lib_rel in into:
        return
    from importlib import resources  # only when a pattern imports the standard library

    node = resources.files("agent").joinpath("lib", *lib_rel.split("/"))
    try:
        if not node.is_file():
            raise RenderError(
                f"couldn't find import {rel} from {importer}: expected a file relative to the "
                f"importer or the pattern directory, or a file of the standard library "
                f"({STDLIB_PREFIX}*), got no {lib_rel} in either"
            )
        into[lib_rel] = node.read_bytes()
    except OSError as exc:
        raise RenderError(
            f"error reading the standard library's {lib_rel} (import {rel} from {importer}): "
            f"expected a readable file, got {exc.strerror or exc}"
        ) from None


def _check_stdlib_imports(
    files: Mapping[str, str],
    imports: list[tuple[str, str, str]],
    base: str,
    entry_key_dir: str,
) -> None:
    """Every standard-library import must render (sandboxed) to the file collected for it."""
    for importer, rel, lib_rel in imports:
        importer_dir = posixpath.dirname(_key(importer, base))
        got = resolve_in_files(files, importer_dir, rel, entry_key_dir)
        if got != "/" + lib_rel:
            raise RenderError(
                f"error collecting import {rel} from {importer}: expected it to resolve to the "
                f"standard library's /{lib_rel} when rendered, got {got}; import the file on "
                "disk by another path"
            )


def _resolve_on_disk(rel: str, importer_dir: str, entry_dir: str) -> str | None:
    """The first candidate path that exists (like go-jsonnet: a directory or an unreadable file
    there is an error when it is read, not a reason to try the next candidate)."""
    if not rel:
        return None
    candidates = (
        [rel] if os.path.isabs(rel) else [os.path.join(d, rel) for d in (importer_dir, entry_dir)]
    )
    for candidate in candidates:
        if os.path.exists(candidate):
            return os.path.normpath(candidate)
    return None


def _key(path: str, base: str) -> str:
    return "/" + os.path.relpath(path, base).replace(os.sep, "/")
