"""``jwtRule``: a CEL expression over a verified token's claims and header.

The expression language is CEL (https://cel.dev), evaluated by the ``common-expression-language``
package (a Rust CEL interpreter with Python bindings), imported lazily: only a config that sets a
``jwtRule`` loads it. The rule sees two variables, ``claims`` and ``header`` (JSON objects), and
only a boolean ``true`` accepts. Etcha's ``jwtRule`` uses the expr language instead; the syntax
differences are in docs/configuration.md#jwtrule.

Invariants: compile errors are reported at config load (:func:`check_rule`); at admission,
:func:`evaluate_rule` returns the boolean verdict or raises :class:`RuleError` (never anything
else); no module-level mutable state (the caller caches compiled programs).
"""

from __future__ import annotations

from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["MAX_RULE_CHARS", "RuleError", "check_rule", "compile_rule", "evaluate_rule"]

#: Longest accepted rule text.
MAX_RULE_CHARS = 4096


class RuleError(Exception):
    """A rule that does not compile, or whose evaluation failed (message says why)."""


def compile_rule(text: str) -> Any:
    """Compile ``text`` into a CEL program.

    Raises:
        RuleError: too long, or not a valid CEL expression.
    """
    if len(text) > MAX_RULE_CHARS:
        raise RuleError(f"expected at most {MAX_RULE_CHARS} characters, got {len(text)}")
    import cel  # lazy: only a configured jwtRule loads the CEL interpreter

    try:
        return cel.compile(text)
    except Exception as exc:  # the binding raises ValueError and others on syntax errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuleError(first[:300]) from None


def check_rule(text: str) -> str:
    """The compile error of ``text`` (``""`` when it compiles)."""
    try:
        compile_rule(text)
    except RuleError as exc:
        return str(exc)
    return ""


def evaluate_rule(program: Any, claims: Mapping[str, Any], header: Mapping[str, Any]) -> bool:
    """Run a compiled rule; ``True`` only for a boolean ``true`` result.

    Raises:
        RuleError: the evaluation failed (e.g. a missing claim, a type error).
    """
    try:
        result = program.execute({"claims": dict(claims), "header": dict(header)})
    except Exception as exc:  # the binding raises KeyError, TypeError, ValueError, RuntimeError
        raise RuleError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
    return result is True
