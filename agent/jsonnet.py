"""Jsonnet evaluation through go-jsonnet (``gojsonnet``), Etcha's own engine.

This module is the only place that talks to the Jsonnet binding. Errors from the binding become
:class:`~agent.errors.RenderError` with the file and line the engine reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import _gojsonnet

from agent.errors import RenderError

ImportCallback = Callable[[str, str], tuple[str, bytes]]
NativeCallbacks = Mapping[str, tuple[tuple[str, ...], Callable[..., Any]]]


def evaluate_text(
    text: str,
    filename: str,
    *,
    import_callback: ImportCallback | None = None,
    native_callbacks: NativeCallbacks | None = None,
) -> Any:
    """Evaluate Jsonnet ``text`` (named ``filename`` in errors) and return the JSON value.

    Raises:
        RenderError: the Jsonnet did not evaluate; the message names ``file:line``.
    """
    kwargs: dict[str, Any] = {}
    if import_callback is not None:
        kwargs["import_callback"] = import_callback
    if native_callbacks is not None:
        kwargs["native_callbacks"] = dict(native_callbacks)
    try:
        out = _gojsonnet.evaluate_snippet(filename, text, **kwargs)
    except RuntimeError as exc:
        raise RenderError(f"error rendering {filename}: {_first_lines(str(exc))}") from exc
    return json.loads(out)


def _first_lines(message: str) -> str:
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " | ".join(lines[:3])
