"""Jsonnet evaluation through go-jsonnet (``gojsonnet``), Etcha's own engine.

This module is the only place that talks to the Jsonnet binding. It owns:

- :func:`evaluate_text`: evaluate a snippet (config files, ``render`` native).
- :func:`collect_files`: gather a pattern's entry file and its transitive ``import``/``importstr``/
  ``importbin`` files from disk into the ``etchaPattern`` file set (reference §2.6).
- :func:`render_files`: render such a file set **sandboxed** (reference §7.2).
- :func:`make_natives`: the ``std.native`` functions (reference §7.1), with Etcha's bugs fixed.

Invariants and decisions:

- Errors from the binding become :class:`~agent.core.errors.RenderError` with one line that names
the
  file and line the engine reported (``/main.jsonnet:3:5-17``).
- Native functions receive only strings, numbers (as floats), booleans and null: gojsonnet's
  Python binding cannot pass arrays or objects (e.g. ``getEnv('K', [])`` fails with a message that
  says so). Fallbacks must therefore be scalars or null.
- Python exceptions are never handed to the binding as messages. gojsonnet 0.22's Python binding
  copies an import-callback error text into a buffer **without** a terminating NUL, and the Go side
  reads it as a C string: it reads past the buffer into whatever the heap holds. The message then
  carries garbage bytes, and when those are not UTF-8 the binding cannot build its exception text
  and raises an empty ``RuntimeError`` (which used to surface as ``unknown error``). What the
  heap holds depends on the process (user, environment, earlier allocations), so it looked like a
  difference between root and other users. An empty text is copied as a NULL buffer, which the Go
  side reads safely, so the import guard raises an exception with an **empty** message. Native
  callback texts are dropped by the binding altogether. Callbacks therefore record their message
  on the evaluation, and the recorded message replaces the engine's first line afterwards (or
  stands alone when the engine's text is empty).
- :func:`collect_files` finds dependencies *statically* (a Jsonnet lexer finds every ``import*``
  keyword followed by a string literal), like go-jsonnet's ``FindDependencies`` that Etcha uses.
  Imports in branches that are not evaluated are collected too, and collecting never calls a
  native function (no HTTP, no DNS). Imports resolve like go-jsonnet's file importer: relative to
  the importing file's directory, then to the entry file's directory.
- The standard library ships in the package (``agent/lib/etcha/``). When collecting from disk, a
  relative import ``etcha/<file>`` that resolves to nothing on disk resolves to the package's
  file; the library's own imports stay inside the library. Those files join the file set under
  ``/etcha/<file>``, where the sandboxed resolution (and Etcha's) finds them from any importer,
  so a token carries them like any import and a host never reads its own package's copy.
- Key normalisation deliberately differs from Etcha's ``GetPath`` (§2.6, §9.19): the base is the
  deepest common directory computed on **whole path components**, not a string prefix, so
  ``/a/b`` is never taken as the parent of ``/a/bc/x.libsonnet`` and every key starts with ``/``.
- :func:`render_files` never reads the disk: ``import``, ``importstr`` and ``importbin`` resolve
  only to keys of the file set. The import is joined with the importer's directory (then the entry
  file's directory) and cleaned with ``posixpath.normpath`` rooted at ``/``, so ``..`` and absolute
  paths cannot leave the set; then Etcha's forgiving fallback strips the first path segment until a
  key matches. Keys and entry points without a leading ``/`` are treated as rooted at ``/``.
- :class:`Natives` holds the per-render cache: :func:`make_natives` returns a fresh one, so a
  cache never outlives the render(s) it was made for. One ``Natives`` serves one render at a time.
- The ``render`` native evaluates its text in-process with the same natives and the same import
  resolution as the evaluation that called it (the file set when sandboxed); no temp file.
- Heavy or network modules (``dns``, ``ssl``, ``http.client``) are imported lazily.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import string
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import _gojsonnet

from agent.core.errors import RenderError, SourceError
from agent.jsonnet.sysinfo import go_arch, go_os
from agent.net.http import HTTPClient
from agent.net.tls import TLSOptions
from agent.net.urls import parse_http_path

__all__ = [
    "MAX_FETCH_BYTES",
    "ImportCallback",
    "NativeCallbacks",
    "NativeContext",
    "Natives",
    "collect_files",
    "evaluate_text",
    "make_natives",
    "render_files",
    "resolve_in_files",
    "scan_imports",
]

ImportCallback = Callable[[str, str], tuple[str, bytes]]
NativeCallbacks = Mapping[str, tuple[tuple[str, ...], Callable[..., Any]]]

MAX_FETCH_BYTES = 16 * 1024 * 1024
"""Largest file or HTTP body ``getFile`` accepts."""

_NATIVE_ARGS = (
    "native function call failed: expected string, number, boolean or null arguments "
    "(the Jsonnet binding cannot pass arrays or objects to native functions)"
)
_IMPORTER_ERROR = "RUNTIME ERROR: importer error"
_NATIVE_FAILED = "failed to execute native callback"
_RANDOM_ALPHABET = string.ascii_letters + string.digits
_FIRST_SEGMENT = re.compile(r"^/[^/]*")
_LOCATION = re.compile(r"^(?P<file>.+?):\d+:\d+")
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


# --------------------------------------------------------------------------------------------
# Evaluation core


class _Failure:
    """What a callback recorded during one evaluation (see the module docstring)."""

    __slots__ = ("import_detail", "native_detail")

    def __init__(self) -> None:
        # (import path, importer directory, callback message unless a plain "not found")
        self.import_detail: tuple[str, str, str] | None = None
        self.native_detail: str | None = None


def evaluate_text(
    text: str,
    filename: str,
    *,
    import_callback: ImportCallback | None = None,
    native_callbacks: NativeCallbacks | None = None,
) -> Any:
    """Evaluate Jsonnet ``text`` (named ``filename`` in errors) and return the JSON value.

    Args:
        text: the Jsonnet source.
        filename: the name used in error messages and as the base for relative imports.
        import_callback: ``(dir, rel) -> (found_here, bytes)``; ``None`` uses go-jsonnet's file
            importer (reads the disk).
        native_callbacks: ``std.native`` functions, e.g. from :func:`make_natives`.

    Returns:
        The evaluated JSON value.

    Raises:
        RenderError: the Jsonnet did not evaluate; the message names ``file:line``.
    """
    return _evaluate(text, filename, import_callback, native_callbacks)


def _evaluate(
    text: str,
    filename: str,
    import_callback: ImportCallback | None,
    native_callbacks: NativeCallbacks | None,
    failure: _Failure | None = None,
) -> Any:
    failure = failure if failure is not None else _Failure()
    kwargs: dict[str, Any] = {}
    if import_callback is not None:
        kwargs["import_callback"] = _guard_import(import_callback, failure)
    natives = native_callbacks if isinstance(native_callbacks, Natives) else None
    if native_callbacks is not None:
        kwargs["native_callbacks"] = {
            name: (params, _guard_native(fn, failure))
            for name, (params, fn) in native_callbacks.items()
        }
    if natives is not None:
        natives._frames.append((import_callback, filename))
    try:
        out = _gojsonnet.evaluate_snippet(filename, text, **kwargs)
    except (RuntimeError, UnicodeDecodeError) as exc:
        raise _render_error(filename, exc, failure) from None
    finally:
        if natives is not None:
            natives._frames.pop()
    return json.loads(out)


def _guard_import(callback: ImportCallback, failure: _Failure) -> ImportCallback:
    def guarded(directory: str, rel: str) -> tuple[str, bytes]:
        try:
            return callback(directory, rel)
        except Exception as exc:
            detail = _one_line(str(exc))
            extra = "" if detail.startswith("couldn't find import") else detail
            failure.import_detail = (rel, directory, extra)
            # An empty text: the binding copies a non-empty one without a NUL (module docstring).
            raise RuntimeError() from None

    return guarded


def _guard_native(fn: Callable[..., Any], failure: _Failure) -> Callable[..., Any]:
    def guarded(*args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:
            failure.native_detail = _one_line(str(exc)) or type(exc).__name__
            raise

    return guarded


def _render_error(
    filename: str, exc: RuntimeError | UnicodeDecodeError, f: _Failure
) -> RenderError:
    text = _engine_text(exc)
    lines = [line.strip().replace("\t", " ") for line in text.strip().splitlines()]
    lines = [line for line in lines if line]
    first = lines[0] if lines else ""
    # The binding may append garbage (even newlines) to the first line: keep the trace only.
    start = next((i for i, line in enumerate(lines) if i and _LOCATION.match(line)), len(lines))
    located = _LOCATION.match(lines[start]) if start < len(lines) else None
    if f.import_detail is not None and (not lines or first.startswith(_IMPORTER_ERROR)):
        rel, directory, extra = f.import_detail
        importer = located.group("file") if located else (directory or "/")
        detail = f"couldn't find import {rel} from {importer}" + (f" ({extra})" if extra else "")
        lines = [f"RUNTIME ERROR: {detail}", *lines[start:]]
    elif f.native_detail is not None and (not lines or _NATIVE_FAILED in first):
        lines = [f"RUNTIME ERROR: {f.native_detail}", *lines[start:]]
    elif _NATIVE_FAILED in first:
        lines = [f"RUNTIME ERROR: {_NATIVE_ARGS}", *lines[start:]]
    if not lines:
        lines = [
            "the Jsonnet engine reported an error without a message "
            "(expected a RUNTIME or STATIC ERROR text)"
        ]
    return RenderError(f"error rendering {filename}: {' | '.join(lines[:3])}")


def _engine_text(exc: BaseException) -> str:
    """The engine's error text, also when the binding could not decode it.

    When the text is not UTF-8 the binding raises an empty ``RuntimeError`` (its attempt to build
    the message failed with a ``UnicodeDecodeError``, kept as the context) or, in other versions,
    the ``UnicodeDecodeError`` itself: the raw bytes are decoded with replacement characters.
    """
    for candidate in (exc, exc.__context__, exc.__cause__):
        if isinstance(candidate, UnicodeDecodeError):
            raw = candidate.object
            return bytes(raw).decode("utf-8", "replace")
    return str(exc)


def _one_line(message: str) -> str:
    return " | ".join(line.strip() for line in message.strip().splitlines() if line.strip())


# --------------------------------------------------------------------------------------------
# Collecting a pattern's files from disk (reference §2.6)


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


def collect_files(path: Path) -> tuple[str, dict[str, str]]:
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
    entry_dir = os.path.dirname(entry)
    try:
        entry_bytes = Path(entry).read_bytes()
    except OSError as exc:
        raise RenderError(
            f"error reading pattern {entry}: expected a readable file, got {exc.strerror or exc}"
        ) from None
    contents: dict[str, bytes] = {entry: entry_bytes}
    stdlib: dict[str, bytes] = {}
    # (importer, import path, the standard library file it must resolve to when rendered)
    stdlib_imports: list[tuple[str, str, str]] = []
    queue: list[tuple[bool, str]] = [(False, entry)]
    scanned: set[tuple[bool, str]] = set()
    while queue:
        item = queue.pop()
        if item in scanned:
            continue
        scanned.add(item)
        in_stdlib, current = item
        data = stdlib[current] if in_stdlib else contents[current]
        where = _stdlib_display(current) if in_stdlib else current
        for keyword, rel, line in scan_imports(data.decode("utf-8", "replace")):
            if in_stdlib:
                lib_rel = _stdlib_path(posixpath.join(posixpath.dirname(current), rel))
                if lib_rel is None or posixpath.isabs(rel):
                    raise RenderError(
                        f"couldn't find import {rel} from {where}:{line}: expected a file of "
                        f"the standard library ({STDLIB_PREFIX}*)"
                    )
                _read_stdlib(lib_rel, rel, f"{where}:{line}", stdlib)
                if keyword == "import":
                    queue.append((True, lib_rel))
                continue
            found = _resolve_on_disk(rel, os.path.dirname(current), entry_dir)
            lib_rel = None if found is not None or os.path.isabs(rel) else _stdlib_path(rel)
            if lib_rel is not None:
                _read_stdlib(lib_rel, rel, f"{where}:{line}", stdlib)
                stdlib_imports.append((current, rel, lib_rel))
                if keyword == "import":
                    queue.append((True, lib_rel))
                continue
            if found is None:
                raise RenderError(
                    f"couldn't find import {rel} from {where}:{line}: "
                    "expected a file relative to the importer or the pattern directory, "
                    f"or {STDLIB_PREFIX}<file> of the standard library"
                )
            if found not in contents:
                try:
                    contents[found] = Path(found).read_bytes()
                except OSError as exc:
                    raise RenderError(
                        f"error reading import {rel} from {where}:{line}: "
                        f"expected a readable file, got {exc.strerror or exc}"
                    ) from None
            if keyword == "import":
                queue.append((False, found))
    base = os.path.commonpath([entry_dir, *contents])
    files = {_key(p, base): data.decode("utf-8", "replace") for p, data in contents.items()}
    for lib_rel, data in stdlib.items():
        key = "/" + lib_rel
        if key in files:
            raise RenderError(
                f"error collecting {entry}: {os.path.join(base, lib_rel)} and the standard "
                f"library's {lib_rel} would both be stored as {key}; expected only one of them "
                "(import the file on disk by a path that does not start with etcha/)"
            )
        files[key] = data.decode("utf-8", "replace")
    entry_key = _key(entry, base)
    _check_stdlib_imports(files, stdlib_imports, base, posixpath.dirname(entry_key))
    return entry_key, files


#: A relative import starting with this resolves to the package's standard library when it is
#: not found on disk.
STDLIB_PREFIX = "etcha/"


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
    from importlib import resources

    if lib_rel in into:
        return
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


# --------------------------------------------------------------------------------------------
# Rendering a file set (reference §7.2)


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

    return _evaluate(table[entry], entry, importer, natives)


# --------------------------------------------------------------------------------------------
# Native functions (reference §7.1)


@dataclass(frozen=True, slots=True)
class NativeContext:
    """What the native functions of one render may see.

    Attributes:
        config_view: returned by ``getConfig()`` (for patterns ``{exec, vars, targets}``).
        env: the ``getEnv`` environment when ``envInherit`` is false; ``None`` = process env.
        disable_external: ``-d``: HTTP ``getFile`` and ``getRecord`` fail (fallbacks still apply).
        entry_dir: returned by ``getPath()`` (absolute directory of the entry file, or ``""``).
        http_timeout: default ``getFile`` HTTP timeout and DNS lifetime, in seconds.
        tls_skip_verify: skip TLS verification for every ``getFile`` request.
        ca_file: extra CA bundle for ``getFile`` (``""`` = system CAs only).
        no_system_ca: trust only ``ca_file`` for ``getFile``, not the system store.
        follow_cross_origin: ``getFile`` follows a redirect to another origin (without the
            custom headers).
        dns_server: resolver address for ``getRecord`` (``""`` = the system resolver).
        dns_port: resolver port used with ``dns_server``.
    """

    config_view: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    env: Mapping[str, str] | None = None
    disable_external: bool = False
    entry_dir: str = ""
    http_timeout: float = 10.0
    tls_skip_verify: bool = False
    ca_file: str = ""
    no_system_ca: bool = False
    follow_cross_origin: bool = False
    dns_server: str = ""
    dns_port: int = 53


class Natives(Mapping[str, tuple[tuple[str, ...], Callable[..., Any]]]):
    """The native functions of one render, with their private cache.

    A mapping ``name -> (parameter names, function)`` as the binding expects. Build it with
    :func:`make_natives`; it is stateful (cache, the evaluation it is serving) and must not be
    shared by concurrent renders.
    """

    def __init__(self, ctx: NativeContext) -> None:
        self.ctx = ctx
        self._cache: dict[str, Any] = {}
        self._frames: list[tuple[ImportCallback | None, str]] = []
        self._http = HTTPClient(
            TLSOptions(
                skip_verify=ctx.tls_skip_verify, ca_file=ctx.ca_file, no_system_ca=ctx.no_system_ca
            ),
            follow_cross_origin=ctx.follow_cross_origin,
        )
        self._callbacks: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
            "getArch": ((), go_arch),
            "getConfig": ((), self._get_config),
            "getEnv": (("key", "fallback"), self._get_env),
            "getFile": (("path", "fallback"), self._get_file),
            "getOS": ((), go_os),
            "getPath": ((), self._get_path),
            "getRecord": (("type", "name", "fallback"), self._get_record),
            "randStr": (("length",), self._rand_str),
            "regexMatch": (("regex", "string"), self._regex_match),
            "render": (("string",), self._render),
        }

    def __getitem__(self, name: str) -> tuple[tuple[str, ...], Callable[..., Any]]:
        return self._callbacks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    # -- simple natives ----------------------------------------------------------------------

    def _get_config(self) -> Any:
        if "getConfig" not in self._cache:
            self._cache["getConfig"] = json.loads(json.dumps(_plain(self.ctx.config_view)))
        return self._cache["getConfig"]

    def _get_path(self) -> str:
        return self.ctx.entry_dir

    def _get_env(self, key: Any, fallback: Any) -> Any:
        if not isinstance(key, str):
            raise RenderError(f"getEnv: expected a string key, got {type(key).__name__}")
        source = self.ctx.env if self.ctx.env is not None else os.environ
        value = source.get(key, "")
        if value:
            return value
        if fallback is not None:
            return fallback
        raise RenderError(f"no value found for {key} and no fallback provided")

    def _rand_str(self, length: Any) -> str:
        if not isinstance(length, int | float) or isinstance(length, bool) or length < 0:
            raise RenderError(f"randStr: expected a length >= 0, got {length!r}")
        return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(int(length)))

    def _regex_match(self, regex: Any, value: Any) -> bool:
        if not isinstance(regex, str) or not isinstance(value, str):
            raise RenderError("regexMatch: expected (regex string, string)")
        try:
            return re.search(regex, value) is not None
        except re.error as exc:
            raise RenderError(f"regexMatch: invalid regex {regex!r}: {exc}") from None

    def _render(self, text: Any) -> Any:
        if not isinstance(text, str):
            raise RenderError(f"render: expected a string, got {type(text).__name__}")
        callback, outer = self._frames[-1] if self._frames else (None, "")
        name = posixpath.join(posixpath.dirname(outer), "<render>")
        return _evaluate(text, name, callback, self)

    # -- getFile ------------------------------------------------------------------------------

    def _get_file(self, path: Any, fallback: Any) -> Any:
        if not isinstance(path, str) or not path:
            raise RenderError("getFile: expected a path or URL string")
        key = "getFile_" + path
        if key in self._cache:
            return self._cache[key]
        try:
            if path.startswith(("http://", "https://")):
                if self.ctx.disable_external:
                    raise RenderError(
                        "error calling getFile: external native functions are disabled"
                    )
                value = self._fetch(path)
            else:
                value = _read_local(path)
        except Exception as exc:
            if fallback is not None:
                return fallback
            if isinstance(exc, RenderError):
                raise
            raise RenderError(f"getFile {_redact(path)}: {_one_line(str(exc))}") from None
        value = value.strip()
        self._cache[key] = value
        return value

    def _fetch(self, spec: str) -> str:
        # The one HTTP client (agent.net.http): httpClient.caFile, noSystemCA, tlsSkipVerify,
        # TLS 1.2 minimum, the same-origin redirect policy and the one #Header: parser.
        try:
            parsed = parse_http_path(spec, what="getFile")
        except SourceError as exc:
            raise RenderError(str(exc)) from None
        timeout = parsed.timeout if parsed.timeout is not None else self.ctx.http_timeout
        try:
            resp = self._http.request(
                parsed.url,
                headers=parsed.headers,
                timeout=timeout,
                max_bytes=MAX_FETCH_BYTES,
                body_statuses=(200,),
                skip_verify=parsed.skip_verify,
            )
        except SourceError as exc:
            raise RenderError(f"getFile {_redact(spec)}: {exc}") from None
        if resp.status != 200:
            raise RenderError(f"getFile {_redact(spec)}: bad response from server: {resp.status}")
        return resp.body.decode("utf-8", "replace")

    # -- getRecord ----------------------------------------------------------------------------

    def _get_record(self, rtype: Any, name: Any, fallback: Any) -> Any:
        if not isinstance(rtype, str) or not isinstance(name, str):
            raise RenderError("getRecord: expected (type string, name string, fallback)")
        try:
            if self.ctx.disable_external:
                raise RenderError("error calling getRecord: external native functions are disabled")
            kind = rtype.lower()
            key = f"getRecord_{kind}_{name}"
            if key not in self._cache:
                self._cache[key] = sorted(self._lookup(kind, name))
            return list(self._cache[key])
        except Exception as exc:
            if fallback is not None:
                return fallback
            if isinstance(exc, RenderError):
                raise
            raise RenderError(
                f"getRecord {rtype} {name}: error resolving record: {_one_line(str(exc))}"
            ) from None

    def _lookup(self, kind: str, name: str) -> list[str]:
        if kind not in ("a", "aaaa", "cname", "txt"):
            raise RenderError(f"getRecord: expected type a, aaaa, cname or txt, got {kind}")
        if kind in ("a", "aaaa") and not self.ctx.dns_server:
            return _lookup_host(name, ipv6=kind == "aaaa")
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=not self.ctx.dns_server)
        if self.ctx.dns_server:
            resolver.nameservers = [self.ctx.dns_server]
            resolver.port = self.ctx.dns_port
        resolver.lifetime = self.ctx.http_timeout
        if kind == "cname":
            answer = resolver.resolve(name, "A", raise_on_no_answer=False)
            return [answer.canonical_name.to_text()]
        rdtype = {"a": "A", "aaaa": "AAAA", "txt": "TXT"}[kind]
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
        if answer.rrset is None:
            return []
        if kind == "txt":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]
        return [r.address for r in answer.rrset]


def make_natives(ctx: NativeContext) -> Natives:
    """Build the native functions for one render, with a fresh cache.

    Args:
        ctx: what the functions may see.

    Returns:
        A :class:`Natives` mapping to pass to :func:`render_files` or :func:`evaluate_text`.
    """
    return Natives(ctx)


def _lookup_host(name: str, *, ipv6: bool) -> list[str]:
    """Go ``net.LookupHost`` semantics: the system resolver (hosts file, then DNS), filtered."""
    import socket

    infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    return sorted({str(i[4][0]).split("%", 1)[0] for i in infos if i[0] == family})


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_local(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    try:
        with open(os.path.expanduser(path), "rb") as fh:
            data = fh.read(MAX_FETCH_BYTES + 1)
    except OSError as exc:
        raise RenderError(
            f"getFile {path}: expected a readable file, got {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FETCH_BYTES:
        raise RenderError(f"getFile {path}: expected at most {MAX_FETCH_BYTES} bytes, got more")
    return data.decode("utf-8", "replace")


def _redact(spec: str) -> str:
    """A URL without headers, credentials or query, safe for messages."""
    from urllib.parse import urlsplit

    url = spec.partition("#")[0]
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    try:
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url
