"""Jsonnet evaluation through go-jsonnet (``gojsonnet``), Etcha's own engine.

This module is the only place that talks to the Jsonnet binding. The package is split by job:

- :mod:`agent.jsonnet.engine` (this module): :func:`evaluate_text`, evaluate a snippet (config
  files, the ``render`` native), and the error translation every evaluation shares.
- :mod:`agent.jsonnet.imports`: :func:`~agent.jsonnet.imports.collect_files`, gather a pattern's
  entry file and its transitive ``import``/``importstr``/``importbin`` files from disk into the
  ``etchaPattern`` file set (reference §2.6), including the packaged ``etcha/`` library.
- :mod:`agent.jsonnet.sandbox`: :func:`~agent.jsonnet.sandbox.render_files`, render such a file
  set **sandboxed** (reference §7.2).
- :mod:`agent.jsonnet.natives`: :func:`~agent.jsonnet.natives.make_natives`, the ``std.native``
  functions (reference §7.1), with Etcha's bugs fixed.

Invariants and decisions:

- Errors from the binding become :class:`~agent.core.errors.RenderError` with one line that names
  the file and line the engine reported (``/main.jsonnet:3:5-17``).
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
- A native set that evaluates nested Jsonnet (the ``render`` native) derives from
  :class:`EvaluationFrames`: the evaluation records itself there, so the nested text resolves its
  imports like the evaluation that called it (the file set when sandboxed). This keeps the engine
  free of any import of the natives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping

from agent.core.errors import RenderError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "EvaluationFrames",
    "ImportCallback",
    "NativeCallbacks",
    "evaluate",
    "evaluate_text",
    "one_line",
]

ImportCallback = Callable[[str, str], tuple[str, bytes]]
#: (the native's value type is a string: ``typing`` stays off the render path)
NativeCallbacks = Mapping[str, "tuple[tuple[str, ...], Callable[..., Any]]"]

_NATIVE_ARGS = (
    "native function call failed: expected string, number, boolean or null arguments "
    "(the Jsonnet binding cannot pass arrays or objects to native functions)"
)
_IMPORTER_ERROR = "RUNTIME ERROR: importer error"
_NATIVE_FAILED = "failed to execute native callback"
_LOCATION = re.compile(r"^(?P<file>.+?):\d+:\d+")


class EvaluationFrames(Mapping[str, "tuple[tuple[str, ...], Callable[..., Any]]"]):
    """A native set that records the evaluations it is serving, innermost last.

    Abstract (a subclass provides the mapping); see the module docstring.
    """

    def __init__(self) -> None:
        self._frames: list[tuple[ImportCallback | None, str]] = []

    def current_frame(self) -> tuple[ImportCallback | None, str]:
        """``(import callback, file name)`` of the innermost evaluation, or ``(None, "")``."""
        return self._frames[-1] if self._frames else (None, "")


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
    return evaluate(text, filename, import_callback, native_callbacks)


def evaluate(
    text: str,
    filename: str,
    import_callback: ImportCallback | None,
    native_callbacks: NativeCallbacks | None,
    failure: _Failure | None = None,
) -> Any:
    """Evaluate ``text``; import and native callbacks are guarded (see the module docstring)."""
    failure = failure if failure is not None else _Failure()
    kwargs: dict[str, Any] = {}
    if import_callback is not None:
        kwargs["import_callback"] = _guard_import(import_callback, failure)
    natives = native_callbacks if isinstance(native_callbacks, EvaluationFrames) else None
    if native_callbacks is not None:
        kwargs["native_callbacks"] = {
            name: (params, _guard_native(fn, failure))
            for name, (params, fn) in native_callbacks.items()
        }
    if natives is not None:
        natives._frames.append((import_callback, filename))
    import _gojsonnet  # the Go runtime (~6 MiB resident): loaded on the first render only

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
            detail = one_line(str(exc))
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
            failure.native_detail = one_line(str(exc)) or type(exc).__name__
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


def one_line(message: str) -> str:
    """``message`` on one line: its non-empty lines joined by `` | ``."""
    return " | ".join(line.strip() for line in message.strip().splitlines() if line.strip())
