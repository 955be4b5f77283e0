"""The one token-equality function: Etcha's ``Equal`` on two verified tokens.

Two tokens carry the same pattern when their build manifests are equal, their ``etchaVersion``
values are equal (unless ignored, ``pullIgnoreVersion``/``compare -i``), and their pattern
entrypoints and files are equal (a missing file map equals an empty one). runVars, ``jti``,
``iat`` and ``exp`` are not compared (as in Etcha). :func:`token_difference` also says which
part differs, with a unified diff, for ``agent compare``; :func:`same_pattern` is its boolean
form for the daemon (a pulled or pushed token that is the same pattern does not run again).
"""

from __future__ import annotations

from agent.core.gojson import dumps_indent
from agent.jws.tokens import VerifiedToken


def same_pattern(a: VerifiedToken, b: VerifiedToken, *, ignore_version: bool) -> bool:
    """Whether ``b`` carries the same pattern as ``a`` (see the module docstring).

    Args:
        a: one token.
        b: the other token.
        ignore_version: do not compare ``etchaVersion``.
    """
    return _difference(b, a, ignore_version=ignore_version) is None


def token_difference(
    new: VerifiedToken, old: VerifiedToken, *, ignore_version: bool
) -> tuple[str, str] | None:
    """Etcha's ``Equal``: build manifest, then version (unless ignored), then pattern.

    Args:
        new: the new token.
        old: the old token.
        ignore_version: skip the ``etchaVersion`` comparison.

    Returns:
        ``None`` when equal, else ``(reason, unified diff)``.
    """
    found = _difference(new, old, ignore_version=ignore_version)
    if found is None:
        return None
    reason, old_text, new_text, label = found
    return reason, _diff(old_text, new_text, label)


def _difference(
    new: VerifiedToken, old: VerifiedToken, *, ignore_version: bool
) -> tuple[str, str, str, str] | None:
    """The first part that differs: ``(reason, old text, new text, diff label)``, or ``None``."""
    if new.build_manifest != old.build_manifest:
        return "etchaBuildManifest differs", old.build_manifest, new.build_manifest, "etchaManifest"
    if not ignore_version and new.version != old.version:
        return "etchaVersion differs", old.version, new.version, "etchaVersion"
    if _pattern_key(old) != _pattern_key(new):
        return "etchaPattern differs", _pattern_text(old), _pattern_text(new), "etchaPattern"
    return None


def _pattern_key(token: VerifiedToken) -> tuple[str, dict[str, str]]:
    return token.pattern_entrypoint, dict(token.pattern_files or {})


def _pattern_text(token: VerifiedToken) -> str:
    if not token.pattern_entrypoint and token.pattern_files is None:
        return "null"
    files = None if token.pattern_files is None else dict(token.pattern_files)
    return dumps_indent({"entrypoint": token.pattern_entrypoint, "files": files})


def _diff(old: str, new: str, label: str) -> str:
    import difflib  # lazy: only `agent compare` diffs; the daemon's pulls only compare

    lines = difflib.unified_diff(
        old.splitlines(), new.splitlines(), f"old {label}", f"new {label}", lineterm=""
    )
    return "\n".join(lines)
