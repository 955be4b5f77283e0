"""Filesystem primitives shared by the helper commands (see :mod:`agent.tools.helpers`).

Ownership and permission parsing, stat and ownership checks, and the atomic writer: a temp file
in the same directory gets the data, the mode and the owner, is fsynced, then ``os.replace``-d
over the target, and the directory is fsynced. The target never appears with partial contents or
the wrong permissions. Owners and groups are names or numeric ids; when the process may not chown
(not root), a check still reports the mismatch and a change fails before anything is written.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.core.atomicio import atomic_write
from agent.core.errors import CommandError, UsageError

DEFAULT_FILE_PERMS = 0o644
DEFAULT_DIR_PERMS = 0o755
#: Upper bound for what ``copy`` reads from a source (bytes).
MAX_COPY_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Ownership:
    """Desired permission bits and owner of a path; ``None`` means "leave as is"."""

    perms: int | None = None
    uid: int | None = None
    gid: int | None = None


def parse_perms(text: str | None, default: int | None) -> int | None:
    """Parse an octal permission string such as ``0644`` or ``755``.

    Args:
        text: the ``-p`` value; ``None`` or ``""`` selects ``default``.
        default: returned when ``text`` is empty.

    Returns:
        The permission bits, or ``default``.

    Raises:
        UsageError: ``text`` is not an octal number between 0 and 07777.
    """
    if text is None or text == "":
        return default
    try:
        value = int(text, 8)
    except ValueError:
        raise UsageError(f"permissions: expected an octal number like 0644, got {text!r}") from None
    if not 0 <= value <= 0o7777:
        raise UsageError(f"permissions: expected a value between 0 and 07777, got {text!r}")
    return value


def resolve_owner(owner: str | None) -> int | None:
    """Resolve a user name or numeric uid; empty means "do not manage".

    Raises:
        CommandError: the name is not a known user.
    """
    if not owner:
        return None
    if owner.isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(owner).pw_uid
    except KeyError:
        raise CommandError(
            f"owner: expected a user name or numeric uid, got unknown user {owner!r}"
        ) from None


def resolve_group(group: str | None) -> int | None:
    """Resolve a group name or numeric gid; empty means "do not manage".

    Raises:
        CommandError: the name is not a known group.
    """
    if not group:
        return None
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise CommandError(
            f"group: expected a group name or numeric gid, got unknown group {group!r}"
        ) from None


def ownership(
    owner: str | None, group: str | None, perms: str | None, default: int | None
) -> Ownership:
    """Build an :class:`Ownership` from the ``-o``, ``-g`` and ``-p`` flag values."""
    return Ownership(
        perms=parse_perms(perms, default), uid=resolve_owner(owner), gid=resolve_group(group)
    )


def lstat_or_none(path: Path) -> os.stat_result | None:
    """``path.lstat()``, or ``None`` when nothing is there."""
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"{path}: cannot stat: {exc.strerror}") from exc


def ownership_mismatch(st: os.stat_result, want: Ownership) -> str | None:
    """Why ``st`` does not have the wanted mode and owner, or ``None``."""
    if want.perms is not None and stat.S_IMODE(st.st_mode) != want.perms:
        return f"permissions are {stat.S_IMODE(st.st_mode):04o}, expected {want.perms:04o}"
    if want.uid is not None and st.st_uid != want.uid:
        return f"owner uid is {st.st_uid}, expected {want.uid}"
    if want.gid is not None and st.st_gid != want.gid:
        return f"group gid is {st.st_gid}, expected {want.gid}"
    return None


def chown_error(path: Path, want: Ownership, exc: OSError) -> CommandError:
    """The error for a failed chown, with a hint when not running as root."""
    who = f"{'' if want.uid is None else want.uid}:{'' if want.gid is None else want.gid}"
    hint = " (not running as root)" if os.geteuid() != 0 else ""
    return CommandError(f"{path}: cannot set owner to {who}: {exc.strerror}{hint}")


def apply_ownership(path: Path, want: Ownership) -> None:
    """chown then chmod ``path`` (chown may clear set-id bits, so it goes first)."""
    st = path.stat()
    uid = -1 if want.uid is None or want.uid == st.st_uid else want.uid
    gid = -1 if want.gid is None or want.gid == st.st_gid else want.gid
    if uid != -1 or gid != -1:
        try:
            os.chown(path, uid, gid)
        except OSError as exc:
            raise chown_error(path, want, exc) from exc
    if want.perms is not None and stat.S_IMODE(path.stat().st_mode) != want.perms:
        try:
            os.chmod(path, want.perms)
        except OSError as exc:
            raise CommandError(f"{path}: cannot set permissions: {exc.strerror}") from exc


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename or unlink in it is durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, want: Ownership) -> None:
    """Write ``data`` to ``path`` atomically with the wanted mode and owner.

    Args:
        path: the target; its directory must exist.
        data: the exact contents.
        want: mode and owner; ``perms=None`` keeps an existing file's mode (0644 for a new one),
            ``uid``/``gid`` ``None`` keep an existing file's owner.

    Raises:
        CommandError: the directory is missing, or writing/chown failed (nothing was changed).
    """
    directory = path.parent
    if not directory.is_dir():
        raise CommandError(f"{path}: expected an existing parent directory, got none")
    old = lstat_or_none(path)
    perms = want.perms
    uid, gid = want.uid, want.gid
    if old is not None and stat.S_ISREG(old.st_mode):
        perms = stat.S_IMODE(old.st_mode) if perms is None else perms
        uid = old.st_uid if uid is None else uid
        gid = old.st_gid if gid is None else gid
    if perms is None:
        perms = DEFAULT_FILE_PERMS
    owner = None
    if uid is not None or gid is not None:
        owner = (-1 if uid is None else uid, -1 if gid is None else gid)
    try:
        # The one atomic writer: temp file, owner, mode, fsync, os.replace, directory fsync.
        atomic_write(path, data, mode=perms, owner=owner)
    except PermissionError as exc:
        if owner is not None:
            raise chown_error(path, Ownership(perms, uid, gid), exc) from exc
        raise CommandError(f"{path}: cannot write: {exc.strerror}") from exc
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror}") from exc


def read_file(path: Path, max_bytes: int = MAX_COPY_BYTES) -> bytes:
    """The bytes of ``path``, at most ``max_bytes``."""
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise CommandError(f"{path}: expected at most {max_bytes} bytes, got more")
    return data


def kind_of(st: os.stat_result) -> str:
    """``a regular file``, ``a directory``, ``a symlink`` or ``a special file``."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a special file"
