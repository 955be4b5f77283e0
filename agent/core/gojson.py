"""Go ``encoding/json``-compatible serialisation.

Etcha builds its JWT payload by marshalling a ``map[string]any`` with Go's ``encoding/json`` (Go
1.22), and prints human output with ``json.MarshalIndent(v, "", "  ")``. This module reproduces
those bytes exactly so that tokens built here are byte-identical to Etcha's.

Invariants:

- Object keys are sorted by their UTF-8 bytes at every level (Go sorts ``map[string]any`` keys).
- Strings use Go's escaping: ``"`` ``\\`` and the short forms ``\\n \\r \\t \\b \\f``; other bytes
  below 0x20 as ``\\u00xx`` (lowercase hex); ``< > &`` as ``\\u003c \\u003e \\u0026``; U+2028 and
  U+2029 as ``\\u2028``/``\\u2029``; a lone surrogate (an undecodable byte, e.g. from
  ``surrogateescape``) as ``\\ufffd``; every other character raw as UTF-8. ``/`` and DEL are not
  escaped.
- Numbers pass through float64 (as ``map[string]any`` unmarshalling makes them): integers print
  without a fraction (``1``, ``100``), integers beyond 2**53 lose precision like Go's, and floats
  use the shortest representation that round-trips, in exponent form when ``abs < 1e-6`` or
  ``abs >= 1e21`` (``1e+21``, ``1e-7``: Go trims a leading zero of a negative two-digit exponent).
- NaN, infinities, non-string keys and unsupported types are errors (Go refuses them too).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from agent.core.errors import AgentError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["GoJSONError", "dumps_compact", "dumps_indent"]


class GoJSONError(AgentError):
    """A value cannot be represented the way Go's ``encoding/json`` would marshal it."""


_ESCAPES: dict[str, str] = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
for _code in range(0x20):
    _ESCAPES.setdefault(chr(_code), f"\\u{_code:04x}")
del _code

#: Deeper values are refused (recursion stays well inside Python's limit).
_MAX_DEPTH = 400

_NEEDS_ESCAPE = re.compile('[\\x00-\\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')


def _escape_char(match: re.Match[str]) -> str:
    ch = match.group()
    return _ESCAPES.get(ch, "\\ufffd")  # only lone surrogates are not in the table


def _string(value: str) -> str:
    if _NEEDS_ESCAPE.search(value) is None:
        return f'"{value}"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, value) + '"'


def _float(value: float) -> str:
    if not math.isfinite(value):
        raise GoJSONError(f"json: unsupported value: expected a finite number, got {value!r}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    text = repr(value)  # shortest round-trip digits
    if magnitude < 1e-6 or magnitude >= 1e21:
        # repr uses exponent form here too, with at least two exponent digits like Go's 'e'.
        mantissa, _, exponent = text.partition("e")
        if mantissa.endswith(".0"):
            mantissa = mantissa[:-2]
        if len(exponent) == 3 and exponent[0] == "-" and exponent[1] == "0":
            exponent = "-" + exponent[2]
        return f"{mantissa}e{exponent}"
    if "e" not in text:
        return text[:-2] if text.endswith(".0") else text
    from decimal import Decimal  # rare path: 1e16 <= abs < 1e21

    return format(Decimal(text).normalize(), "f")


def _number(value: int | float) -> str:
    if isinstance(value, int):
        try:
            return _float(float(value))
        except OverflowError as exc:
            raise GoJSONError(
                "json: unsupported value: expected a number within float64 range, got a "
                f"{value.bit_length()}-bit integer"
            ) from exc
    return _float(value)


def _sorted_items(value: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    for key in value:
        if not isinstance(key, str):
            raise GoJSONError(
                f"json: unsupported map key: expected a string, got {type(key).__name__}"
            )
    # UTF-8 keeps code point order (lone surrogates too), so this is Go's byte order.
    return sorted(value.items(), key=_first)


def _first(item: tuple[str, Any]) -> str:
    return item[0]


def _type_error(value: Any) -> GoJSONError:
    return GoJSONError(
        "json: unsupported type: expected null, bool, number, string, list or object, "
        f"got {type(value).__name__}"
    )


def _compact(value: Any, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise GoJSONError(f"json: unsupported value: expected nesting up to {_MAX_DEPTH} levels")
    if isinstance(value, str):
        out.append(_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int | float):
        out.append(_number(value))
    elif isinstance(value, Mapping):
        _compact_object(value, out, depth)
    elif isinstance(value, list | tuple):
        _compact_array(value, out, depth)
    else:
        raise _type_error(value)


def _compact_object(value: Mapping[Any, Any], out: list[str], depth: int) -> None:
    out.append("{")
    first = True
    for key, item in _sorted_items(value):
        if not first:
            out.append(",")
        first = False
        out.append(_string(key))
        out.append(":")
        _compact(item, out, depth + 1)
    out.append("}")


def _compact_array(value: list[Any] | tuple[Any, ...], out: list[str], depth: int) -> None:
    out.append("[")
    for index, item in enumerate(value):
        if index:
            out.append(",")
        _compact(item, out, depth + 1)
    out.append("]")


def _indent(value: Any, out: list[str], level: int) -> None:
    if level > _MAX_DEPTH:
        raise GoJSONError(f"json: unsupported value: expected nesting up to {_MAX_DEPTH} levels")
    if type(value) is str:  # the common leaf, without the ABC checks below
        out.append(_string(value))
        return
    if isinstance(value, Mapping):
        items = _sorted_items(value)
        if not items:
            out.append("{}")
            return
        inner = "\n" + "  " * (level + 1)
        out.append("{")
        for index, (key, item) in enumerate(items):
            if index:
                out.append(",")
            out.append(inner)
            out.append(_string(key))
            out.append(": ")
            _indent(item, out, level + 1)
        out.append("\n" + "  " * level + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        inner = "\n" + "  " * (level + 1)
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            out.append(inner)
            _indent(item, out, level + 1)
        out.append("\n" + "  " * level + "]")
    else:
        _compact(value, out, level)


def dumps_compact(value: Any) -> bytes:
    """Serialise ``value`` like Go's ``json.Marshal`` of a ``map[string]any``.

    Args:
        value: JSON-like data: ``None``, ``bool``, ``int``, ``float``, ``str``, lists, tuples and
            mappings with string keys.

    Returns:
        Compact UTF-8 JSON with sorted keys and Go escaping and number formatting. A lone
        surrogate in a string is emitted as ``\\ufffd``, so the result is always valid UTF-8.

    Raises:
        GoJSONError: NaN or infinity, a non-string key, an unsupported type, or nesting deeper
            than 400 levels.
    """
    out: list[str] = []
    _compact(value, out, 0)
    return "".join(out).encode("utf-8")


def dumps_indent(value: Any) -> str:
    """Serialise ``value`` like Go's ``json.MarshalIndent(v, "", "  ")``.

    Args:
        value: as for :func:`dumps_compact`.

    Returns:
        Two-space indented JSON with ``": "`` separators, sorted keys, ``{}`` and ``[]`` for empty
        containers, and the same escaping as :func:`dumps_compact`. No trailing newline.

    Raises:
        GoJSONError: as for :func:`dumps_compact`.
    """
    out: list[str] = []
    _indent(value, out, 0)
    return "".join(out)
