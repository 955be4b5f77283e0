"""``--diff`` for the file helpers: what ``file``, ``copy`` and ``line`` would change, or changed.

How it is switched on: ``agent local --diff`` runs the pattern's commands with ``ETCHA_DIFF=1``
and ``ETCHA_DIFF_REDACT`` (the ``run.diffRedact`` globs, one a line). The helpers are separate
``agent file|copy|line`` processes started by pattern scripts, so the setting travels in their
environment; ``AGENT_*`` variables are never passed to commands (they may hold keys), hence the
``ETCHA_`` prefix. A user may set the same variables by hand to see a helper's diff.

What is printed (on stdout, before the check's one-line reason on stderr):

- a unified diff of the current content against the wanted content, ``--- <path>`` /
  ``+++ <path>`` headers; a missing file diffs from ``/dev/null``;
- ``mode 0644 -> 0600``, ``owner 0 -> 1000``, ``group 0 -> 1000`` for permission and owner changes
  (``new file, mode 0644`` for a file that does not exist yet);
- ``(content hidden)`` instead of the diff when the file's current or wanted mode is 0600 or
  stricter (no group or other bits), or its path matches one of the redaction globs
  (:func:`fnmatch.fnmatchcase` on the full path, so ``*`` also matches ``/``);
- ``(binary content differs)`` when either side is not UTF-8 text.

In check mode this describes what a change would do; in change mode, what it did.
"""

from __future__ import annotations

import fnmatch
import os
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.tools.helpers.fs import DEFAULT_FILE_PERMS, Ownership, lstat_or_none, read_file

__all__ = [
    "DIFF_ENV",
    "DIFF_REDACT_ENV",
    "DiffSettings",
    "content_diff",
    "diff_settings",
    "emit",
    "file_changes",
    "ownership_changes",
]

#: ``1`` switches the helpers' diffs on.
DIFF_ENV = "ETCHA_DIFF"
#: The ``run.diffRedact`` globs, one a line.
DIFF_REDACT_ENV = "ETCHA_DIFF_REDACT"
#: Largest side of a diff (bytes); a bigger file is summarised, never diffed line by line.
MAX_DIFF_BYTES = 1024 * 1024
HIDDEN = "(content hidden)"


@dataclass(frozen=True, slots=True)
class DiffSettings:
    """Diff output is on; ``redact`` holds the path globs whose content stays hidden."""

    redact: tuple[str, ...] = ()


def diff_settings(environ: Mapping[str, str] | None = None) -> DiffSettings | None:
    """The settings from ``environ`` (default ``os.environ``), or ``None`` when diffs are off."""
    env = os.environ if environ is None else environ
    if env.get(DIFF_ENV, "") not in ("1", "true"):
        return None
    globs = tuple(g.strip() for g in env.get(DIFF_REDACT_ENV, "").splitlines() if g.strip())
    return DiffSettings(globs)


def _secret_mode(mode: int | None) -> bool:
    return mode is not None and mode & 0o077 == 0


def is_hidden(path: Path, modes: Sequence[int | None], redact: Sequence[str]) -> bool:
    """Whether ``path``'s content must not be shown: a 0600-or-stricter mode, or a glob match."""
    if any(_secret_mode(m) for m in modes):
        return True
    text = str(path)
    return any(fnmatch.fnmatchcase(text, g) for g in redact)


def content_diff(
    path: Path,
    old: bytes | None,
    new: bytes,
    *,
    settings: DiffSettings,
    modes: Sequence[int | None] = (),
) -> list[str]:
    """The diff lines from ``old`` (``None``: no file) to ``new``; nothing when equal.

    Args:
        path: the file (headers, redaction globs).
        old: the current content, or ``None`` when the file does not exist.
        new: the wanted content.
        settings: the redaction globs.
        modes: the current and wanted permission bits (``None``: unknown); 0600 or stricter hides.
    """
    if old == new:
        return []
    if is_hidden(path, modes, settings.redact):
        return [f"{path}: {HIDDEN}"]
    if len(new) > MAX_DIFF_BYTES or (old is not None and len(old) > MAX_DIFF_BYTES):
        return [f"{path}: content differs (over {MAX_DIFF_BYTES} bytes, not diffed)"]
    try:
        old_text = "" if old is None else old.decode("utf-8")
        new_text = new.decode("utf-8")
    except UnicodeDecodeError:
        return [f"{path}: (binary content differs)"]
    import difflib  # only when a diff is shown

    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile="/dev/null" if old is None else str(path),
        tofile=str(path),
    )
    out: list[str] = []
    for line in lines:
        if line.endswith("\n"):
            out.append(line[:-1])
        else:
            out.extend([line, "\\ No newline at end of file"])
    return out


def ownership_changes(st: os.stat_result | None, want: Ownership, *, new_perms: int) -> list[str]:
    """``mode A -> B``, ``owner A -> B``, ``group A -> B`` for what differs from ``st``.

    Args:
        st: the current stat (``None``: no regular file: the line is ``new file, mode B``).
        want: the wanted ownership (``None`` fields are kept as they are).
        new_perms: the mode a new file gets when ``want.perms`` is ``None``.
    """
    if st is None:
        return [f"new file, mode {(want.perms if want.perms is not None else new_perms):04o}"]
    lines: list[str] = []
    mode = stat.S_IMODE(st.st_mode)
    if want.perms is not None and mode != want.perms:
        lines.append(f"mode {mode:04o} -> {want.perms:04o}")
    if want.uid is not None and st.st_uid != want.uid:
        lines.append(f"owner {st.st_uid} -> {want.uid}")
    if want.gid is not None and st.st_gid != want.gid:
        lines.append(f"group {st.st_gid} -> {want.gid}")
    return lines


def file_changes(
    path: Path, contents: bytes | None, want: Ownership, settings: DiffSettings
) -> list[str]:
    """What making ``path`` a regular file with ``contents`` and ``want`` changes (``file``,
    ``copy``): ownership lines, then the content diff. ``contents=None`` keeps the content."""
    st = lstat_or_none(path)
    regular = st is not None and stat.S_ISREG(st.st_mode)
    old = read_file(path) if regular else None
    new = contents if contents is not None else (old if old is not None else b"")
    current = stat.S_IMODE(st.st_mode) if st is not None and regular else None
    kept = current if current is not None else DEFAULT_FILE_PERMS
    wanted = want.perms if want.perms is not None else kept
    lines = ownership_changes(st if regular else None, want, new_perms=wanted)
    return lines + content_diff(path, old, new, settings=settings, modes=(current, wanted))


def emit(lines: Sequence[str], out: Callable[[bytes], object] | None = None) -> None:
    """Print diff lines on stdout (or ``out``) and flush them (before any stderr line)."""
    if not lines:
        return
    text = "".join(line + "\n" for line in lines)
    if out is not None:
        out(text.encode("utf-8", "surrogateescape"))
        return
    sys.stdout.write(text)
    sys.stdout.flush()
