"""``line``: manage lines of a text by regular expression.

The expression applies to the whole text with ``^``/``$`` matching at line boundaries (as if
prefixed with ``(?m)``); the replacement expands Go-style ``${1}``/``$name`` groups (``$$`` is a
literal ``$``). When nothing matches, the replacement is appended as a line unless the text already
contains it. ``line remove`` deletes only lines that ``change`` would leave as they are (the whole
line is a match whose replacement is the line itself) and lines equal to the replacement.
"""

from __future__ import annotations

import re

from agent.core.errors import CommandError

_TEMPLATE_VAR = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


def compile_match(match: str) -> re.Pattern[str]:
    try:
        return re.compile(match, re.MULTILINE)
    except re.error as exc:
        raise CommandError(f"line: expected a valid regexp, got {match!r}: {exc}") from exc


def expand_template(template: str, m: re.Match[str] | None) -> str:
    """Expand Go ``Regexp.Expand`` syntax: ``${1}``, ``$1``, ``${name}``, ``$name``, ``$$``.

    Unknown or unmatched groups expand to ``""`` (as in Go); without a match every group is ``""``.
    """

    def repl(var: re.Match[str]) -> str:
        if var.group(0) == "$$":
            return "$"
        name = var.group(1) or var.group(2)
        if m is None:
            return ""
        try:
            value = m.group(int(name) if name.isdigit() else name)
        except (IndexError, re.error):
            return ""
        return value or ""

    return _TEMPLATE_VAR.sub(repl, template)


def line_apply(text: str, match: str, replacement: str) -> str:
    """Return ``text`` with every match of ``match`` replaced, or the replacement appended.

    Raises:
        CommandError: ``match`` is not a valid regexp.
    """
    rx = compile_match(match)
    result, count = rx.subn(lambda m: expand_template(replacement, m), text)
    if count:
        return result
    literal = expand_template(replacement, None)
    if literal in text:
        return text
    prefix = text if text == "" or text.endswith("\n") else text + "\n"
    return prefix + literal + ("" if literal.endswith("\n") else "\n")


def _written_by_change(rx: re.Pattern[str], replacement: str, body: str) -> bool:
    """True when ``body`` is, as a whole, a match that ``change`` would replace by itself."""
    m = rx.search(body)
    return (
        m is not None
        and m.span() == (0, len(body))
        and expand_template(replacement, m).rstrip("\n") == body
    )


def line_remove(text: str, match: str, replacement: str) -> str:
    """Return ``text`` without the lines that a ``change`` wrote.

    A line goes when it equals the (group-less) replacement, as ``change`` appends it, or when the
    whole line matches ``match`` and the replacement expands to the line itself, as ``change``
    leaves a replaced line. Other lines stay, even when ``match`` finds something in them: a line
    such as ``c=1`` for the replacement ``c=2`` is not what the pattern wrote.

    Raises:
        CommandError: ``match`` is not a valid regexp.
    """
    rx = compile_match(match)
    literal = expand_template(replacement, None).rstrip("\n")
    kept = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if body == literal or _written_by_change(rx, replacement, body):
            continue
        kept.append(line)
    return "".join(kept)
