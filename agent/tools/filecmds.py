"""Helper commands that pattern scripts call: ``copy``, ``dir``, ``file``, ``line`` and ``link``.

Every helper takes a mode:

- ``check``: exit 0 when the target is already in the desired state; otherwise print one line
  to stderr saying what differs and exit 1. Never modifies anything.
- ``change``: make the target so. Idempotent: a second ``change`` does nothing and exits 0.
- ``remove``: delete the target; exits 0 when it is already absent.

Removal never destroys what the helper did not create. A remove deletes only the kind of thing its
``change`` makes, in the state ``change`` leaves it, and otherwise fails (exit 1) naming what it
found, with nothing deleted:

- ``dir remove``: only an empty directory (``directory not empty`` otherwise); never a symlink.
- ``file remove``: only a regular file or a symlink (the link, never its target). Given contents
  (``-`` = stdin), only a regular file with exactly those contents.
- ``copy remove``: only a regular file whose contents equal the source's.
- ``link remove``: only a symlink that points at ``src``.
- ``line remove``: only lines that ``change`` would leave as they are (the whole line is a match
  whose replacement is the line itself) and lines equal to the replacement; the file stays.

Invariants:

- Contents are written atomically: a temp file in the same directory gets the data, the mode and
  the owner, is fsynced, then ``os.replace``-d over the target, and the directory is fsynced. The
  target never appears with partial contents or the wrong permissions.
- Owners and groups are names or numeric ids. When the process may not chown (not root), a check
  still reports the mismatch and a change fails with a clear error before anything is written.
- ``copy`` reads local paths or ``http(s)`` URLs (``#Header:value\\r\\n...`` fragment = request
  headers) through the one HTTP client (:mod:`agent.net.http`) with a timeout and a size bound;
  header values never appear in messages.
- ``line`` applies a regular expression to the whole text with ``^``/``$`` matching at line
  boundaries (as if prefixed with ``(?m)``); the replacement expands Go-style ``${1}``/``$name``
  groups (``$$`` is a literal ``$``). When nothing matches, the replacement is appended as a line
  unless the text already contains it. ``check`` passes when a ``change`` would be a no-op.

Errors are :class:`~agent.core.errors.CommandError` (exit 1) or
:class:`~agent.core.errors.UsageError`
(exit 2), each one line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import grp
import os
import pwd
import re
import secrets
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.core.errors import CommandError, SourceError, UsageError
from agent.net.http import HTTPClient
from agent.net.urls import parse_http_path, safe_url

MODES = ("check", "change", "remove")
DEFAULT_FILE_PERMS = 0o644
DEFAULT_DIR_PERMS = 0o755
#: Upper bound for what ``copy`` reads from a source (bytes).
MAX_COPY_BYTES = 256 * 1024 * 1024
#: Permission bits ``copy`` takes from a local source (set-id and sticky bits are never copied).
COPY_PERMS_MASK = 0o777
#: Seconds before an HTTP source request gives up.
HTTP_TIMEOUT = 60.0

_TEMPLATE_VAR = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")


@dataclass(frozen=True, slots=True)
class Ownership:
    """Desired permission bits and owner of a path; ``None`` means "leave as is"."""

    perms: int | None = None
    uid: int | None = None
    gid: int | None = None


# --------------------------------------------------------------------------------------------
# Parsing helpers


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


# --------------------------------------------------------------------------------------------
# Shared filesystem primitives


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandError(f"{path}: cannot stat: {exc.strerror}") from exc


def _ownership_mismatch(st: os.stat_result, want: Ownership) -> str | None:
    if want.perms is not None and stat.S_IMODE(st.st_mode) != want.perms:
        return f"permissions are {stat.S_IMODE(st.st_mode):04o}, expected {want.perms:04o}"
    if want.uid is not None and st.st_uid != want.uid:
        return f"owner uid is {st.st_uid}, expected {want.uid}"
    if want.gid is not None and st.st_gid != want.gid:
        return f"group gid is {st.st_gid}, expected {want.gid}"
    return None


def _chown_error(path: Path, want: Ownership, exc: OSError) -> CommandError:
    who = f"{'' if want.uid is None else want.uid}:{'' if want.gid is None else want.gid}"
    hint = " (not running as root)" if os.geteuid() != 0 else ""
    return CommandError(f"{path}: cannot set owner to {who}: {exc.strerror}{hint}")


def _apply_ownership(path: Path, want: Ownership) -> None:
    """chown then chmod ``path`` (chown may clear set-id bits, so it goes first)."""
    st = path.stat()
    uid = -1 if want.uid is None or want.uid == st.st_uid else want.uid
    gid = -1 if want.gid is None or want.gid == st.st_gid else want.gid
    if uid != -1 or gid != -1:
        try:
            os.chown(path, uid, gid)
        except OSError as exc:
            raise _chown_error(path, want, exc) from exc
    if want.perms is not None and stat.S_IMODE(path.stat().st_mode) != want.perms:
        try:
            os.chmod(path, want.perms)
        except OSError as exc:
            raise CommandError(f"{path}: cannot set permissions: {exc.strerror}") from exc


def _fsync_dir(directory: Path) -> None:
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
    old = _lstat(path)
    perms = want.perms
    uid, gid = want.uid, want.gid
    if old is not None and stat.S_ISREG(old.st_mode):
        perms = stat.S_IMODE(old.st_mode) if perms is None else perms
        uid = old.st_uid if uid is None else uid
        gid = old.st_gid if gid is None else gid
    if perms is None:
        perms = DEFAULT_FILE_PERMS
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CommandError(f"{path}: cannot create a temp file: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            made = os.fstat(fh.fileno())
            new_uid = -1 if uid is None or uid == made.st_uid else uid
            new_gid = -1 if gid is None or gid == made.st_gid else gid
            if new_uid != -1 or new_gid != -1:
                try:
                    os.fchown(fh.fileno(), new_uid, new_gid)
                except OSError as exc:
                    raise _chown_error(path, Ownership(perms, uid, gid), exc) from exc
            os.fchmod(fh.fileno(), perms)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise CommandError(f"{path}: cannot write: {exc.strerror}") from exc
        raise
    _fsync_dir(directory)


def _read_file(path: Path, max_bytes: int = MAX_COPY_BYTES) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(data) > max_bytes:
        raise CommandError(f"{path}: expected at most {max_bytes} bytes, got more")
    return data


# --------------------------------------------------------------------------------------------
# file


def check_file(path: Path, contents: bytes | None, want: Ownership) -> str | None:
    """Return why ``path`` is not a regular file with ``contents`` and ``want``, or ``None``.

    Args:
        path: the file.
        contents: exact wanted contents, or ``None`` to not compare contents.
        want: wanted mode and owner.
    """
    st = _lstat(path)
    if st is None:
        return "does not exist"
    if not stat.S_ISREG(st.st_mode):
        return f"expected a regular file, got {_kind(st)}"
    if contents is not None:
        if st.st_size != len(contents):
            return "contents differ"
        if _read_file(path, max(len(contents), 1)) != contents:
            return "contents differ"
    return _ownership_mismatch(st, want)


def change_file(path: Path, contents: bytes | None, want: Ownership) -> bool:
    """Make ``path`` a regular file with ``contents`` (``None``: keep/empty) and ``want``.

    Returns:
        True when something changed.

    Raises:
        CommandError: ``path`` is a directory, its parent is missing, or chown/write failed.
    """
    st = _lstat(path)
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise CommandError(f"{path}: expected a regular file, got a directory")
    if st is None or not stat.S_ISREG(st.st_mode):
        write_atomic(path, b"" if contents is None else contents, want)
        return True
    if contents is not None and check_file(path, contents, Ownership()) is not None:
        write_atomic(path, contents, want)
        return True
    if _ownership_mismatch(st, want) is None:
        return False
    _apply_ownership(path, want)
    return True


def remove_file(path: Path, contents: bytes | None = None) -> bool:
    """Delete the regular file or symlink at ``path``; True when something was removed.

    A symlink is unlinked, never followed. With ``contents``, only a regular file with exactly
    those contents is removed: anything else was not written by the command that removes it.

    Args:
        path: the file.
        contents: the contents the pattern wrote, or ``None`` to not compare.

    Raises:
        CommandError: ``path`` is a directory, a special file, a file with other contents (or a
            symlink when ``contents`` is given), or cannot be removed. Nothing was removed.
    """
    st = _lstat(path)
    if st is None:
        return False
    if contents is not None and not stat.S_ISREG(st.st_mode):
        raise CommandError(f"{path}: expected a regular file, got {_kind(st)}; nothing was removed")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise CommandError(
            f"{path}: expected a regular file or a symlink, got {_kind(st)}; nothing was removed"
        )
    if contents is not None and check_file(path, contents, Ownership()) is not None:
        raise CommandError(
            f"{path}: expected the contents the pattern wrote ({len(contents)} bytes), got"
            f" other contents ({st.st_size} bytes); nothing was removed"
        )
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise CommandError(f"{path}: cannot remove: {exc.strerror}") from exc
    return True


# --------------------------------------------------------------------------------------------
# dir


def check_dir(path: Path, want: Ownership) -> str | None:
    """Return why ``path`` is not a directory with ``want``, or ``None`` (symlinks followed)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        raise CommandError(f"{path}: cannot stat: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        return f"expected a directory, got {_kind(st)}"
    return _ownership_mismatch(st, want)


def change_dir(path: Path, want: Ownership) -> bool:
    """Create ``path`` (and missing parents) and apply ``want``; True when something changed.

    Raises:
        CommandError: something other than a directory is in the way, or chown/chmod failed.
    """
    reason = check_dir(path, want)
    if reason is None:
        return False
    if not path.is_dir():
        if path.exists() or path.is_symlink():
            raise CommandError(f"{path}: expected a directory, got {_kind(path.lstat())}")
        try:
            path.mkdir(parents=True, mode=DEFAULT_DIR_PERMS if want.perms is None else want.perms)
        except OSError as exc:
            raise CommandError(f"{path}: cannot create directory: {exc.strerror}") from exc
    _apply_ownership(path, want)
    return True


def _count_entries(path: Path, limit: int = 1000) -> str:
    """``"N entries"`` for a directory, counting at most ``limit``."""
    count = 0
    try:
        with os.scandir(path) as entries:
            for _ in entries:
                count += 1
                if count >= limit:
                    return f"{limit} or more entries"
    except OSError:
        return "entries"
    return "1 entry" if count == 1 else f"{count} entries"


def remove_dir(path: Path) -> bool:
    """Delete the directory ``path`` only when it is empty; True when it was removed.

    A directory with anything in it holds data the pattern may not have created, so it is left
    alone (Etcha: ``directory not empty``). A symlink is not a directory that ``change`` made, so
    it is left alone too, and so is its target.

    Raises:
        CommandError: ``path`` is not empty, is not a directory, or cannot be removed. Nothing
            was removed.
    """
    st = _lstat(path)
    if st is None:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise CommandError(f"{path}: expected a directory, got {_kind(st)}; nothing was removed")
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise CommandError(
                f"{path}: directory not empty: expected an empty directory, got"
                f" {_count_entries(path)}; nothing was removed"
            ) from exc
        raise CommandError(f"{path}: cannot remove: {exc.strerror}") from exc
    _fsync_dir(path.parent)
    return True


# --------------------------------------------------------------------------------------------
# copy


def read_source(
    src: str,
    *,
    max_bytes: int = MAX_COPY_BYTES,
    timeout: float = HTTP_TIMEOUT,
    client: HTTPClient | None = None,
) -> bytes:
    """Read a local path or an ``http(s)`` URL (``#Name:value\\r\\n...`` = request headers).

    Args:
        src: path or URL.
        max_bytes: the most bytes accepted.
        timeout: seconds for the HTTP request (a ``#clientTimeout:`` entry overrides it).
        client: the HTTP client (pass one built from ``httpClient.*``); default: verify
            against the system CAs, same-origin redirects only.

    Returns:
        The bytes.

    Raises:
        UsageError: a header entry without ``:``, or a bad ``clientTimeout``.
        CommandError: unreadable, non-2xx, too large, or the request failed. The message names the
            URL without its user info, query or fragment, so secrets never leak.
    """
    if not src.startswith(("http://", "https://")):
        return _read_file(Path(src), max_bytes)
    try:
        parsed = parse_http_path(src, what="copy source", strict=True)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    shown = safe_url(parsed.url)
    try:
        resp = (client or HTTPClient()).request(
            parsed.url,
            headers=parsed.headers,
            timeout=parsed.timeout if parsed.timeout is not None else timeout,
            max_bytes=max_bytes,
            body_statuses=range(200, 300),
            skip_verify=parsed.skip_verify,
        )
    except SourceError as exc:  # RequestError, FingerprintMismatch
        raise CommandError(f"copy source {shown}: {exc}") from None
    if not 200 <= resp.status < 300:
        raise CommandError(f"copy source {shown}: expected HTTP 2xx, got {resp.status}")
    return resp.body


def source_perms(src: str) -> int:
    """The permission bits ``copy`` gives a destination when ``-p`` is not given.

    A local source's permission bits (``0777`` mask: set-id and sticky bits are never copied, so
    a copy made as root cannot become a set-uid program); ``0644`` for a URL.

    Raises:
        CommandError: the local source cannot be stat-ed.
    """
    if src.startswith(("http://", "https://")):
        return DEFAULT_FILE_PERMS
    try:
        st = os.stat(src)
    except OSError as exc:
        raise CommandError(f"{src}: cannot read: {exc.strerror}") from exc
    return stat.S_IMODE(st.st_mode) & COPY_PERMS_MASK


# --------------------------------------------------------------------------------------------
# line


def _compile(match: str) -> re.Pattern[str]:
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
    rx = _compile(match)
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
    rx = _compile(match)
    literal = expand_template(replacement, None).rstrip("\n")
    kept = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        if body == literal or _written_by_change(rx, replacement, body):
            continue
        kept.append(line)
    return "".join(kept)


# --------------------------------------------------------------------------------------------
# link


def check_link(src: str, dst: Path) -> str | None:
    """Return why ``dst`` is not a symlink to ``src``, or ``None``."""
    st = _lstat(dst)
    if st is None:
        return "does not exist"
    if not stat.S_ISLNK(st.st_mode):
        return f"expected a symlink, got {_kind(st)}"
    target = os.readlink(dst)
    if target != src:
        return f"symlink points to {target}, expected {src}"
    return None


def change_link(src: str, dst: Path) -> bool:
    """Make ``dst`` a symlink to ``src`` (replacing a file or another symlink atomically).

    Raises:
        CommandError: a non-empty directory is at ``dst``, or the link cannot be made.
    """
    if check_link(src, dst) is None:
        return False
    st = _lstat(dst)
    try:
        if st is not None and stat.S_ISDIR(st.st_mode):
            try:
                dst.rmdir()
            except OSError as exc:
                raise CommandError(
                    f"{dst}: expected a symlink, got a directory that cannot be replaced: "
                    f"{exc.strerror}"
                ) from exc
        tmp = dst.parent / f".{dst.name}.{secrets.token_hex(6)}.tmp"
        os.symlink(src, tmp)
        try:
            os.replace(tmp, dst)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
    except CommandError:
        raise
    except OSError as exc:
        raise CommandError(f"{dst}: cannot create symlink: {exc.strerror}") from exc
    _fsync_dir(dst.parent)
    return True


def remove_link(src: str, dst: Path) -> bool:
    """Delete the symlink ``dst`` when it points at ``src``; True when it was removed.

    The link's target is never touched. Anything else at ``dst`` (a regular file, a directory, a
    symlink pointing elsewhere) was not made by ``change``, so it is left alone.

    Raises:
        CommandError: ``dst`` is not a symlink to ``src``, or it cannot be removed. Nothing was
            removed.
    """
    st = _lstat(dst)
    if st is None:
        return False
    if not stat.S_ISLNK(st.st_mode):
        raise CommandError(
            f"{dst}: expected a symlink to {src}, got {_kind(st)}; nothing was removed"
        )
    target = os.readlink(dst)
    if target != src:
        raise CommandError(
            f"{dst}: expected a symlink to {src}, got a symlink to {target}; nothing was removed"
        )
    try:
        dst.unlink()
    except OSError as exc:
        raise CommandError(f"{dst}: cannot remove: {exc.strerror}") from exc
    return True


# --------------------------------------------------------------------------------------------
# CLI handlers


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symlink"
    return "a special file"


def _report(name: str, target: object, reason: str | None) -> int:
    if reason is None:
        return 0
    print(f"{name} check {target}: {reason}", file=sys.stderr)
    return 1


def _stdin_bytes() -> bytes:
    data = sys.stdin.buffer.read(MAX_COPY_BYTES + 1)
    if len(data) > MAX_COPY_BYTES:
        raise CommandError(f"stdin: expected at most {MAX_COPY_BYTES} bytes, got more")
    return data


def _run_mode(
    mode: str,
    name: str,
    target: object,
    check: Callable[[], str | None],
    change: Callable[[], object],
    remove: Callable[[], object] | None,
) -> int:
    if mode == "check":
        return _report(name, target, check())
    if mode == "change":
        change()
        return 0
    if remove is None:
        raise UsageError(f"{name}: expected mode check or change, got {mode}")
    remove()
    return 0


def cmd_file(args: argparse.Namespace) -> int:
    """``agent file <mode> <path> [contents | -]``: manage a regular file.

    Returns:
        0 in state / done; 1 when a check finds a difference.

    Raises:
        CommandError: the change or removal failed.
    """
    path = Path(args.path)
    contents: bytes | None
    if args.contents is None:
        contents = None
    elif args.contents == "-":
        contents = _stdin_bytes()
    else:
        contents = os.fsencode(args.contents)
    if args.mode == "remove":
        remove_file(path, contents)
        return 0
    want = ownership(args.owner, args.group, args.perms, DEFAULT_FILE_PERMS)
    return _run_mode(
        args.mode,
        "file",
        path,
        lambda: check_file(path, contents, want),
        lambda: change_file(path, contents, want),
        None,
    )


def cmd_dir(args: argparse.Namespace) -> int:
    """``agent dir <mode> <path>``: manage a directory; ``remove`` removes only an empty one.

    Raises:
        CommandError: the change or removal failed.
    """
    path = Path(args.path)
    if args.mode == "remove":
        remove_dir(path)
        return 0
    want = ownership(args.owner, args.group, args.perms, DEFAULT_DIR_PERMS)
    return _run_mode(
        args.mode,
        "dir",
        path,
        lambda: check_dir(path, want),
        lambda: change_dir(path, want),
        None,
    )


def cmd_copy(args: argparse.Namespace) -> int:
    """``agent copy <mode> <src> <dst | ->``: copy a local file or URL to ``dst`` or stdout.

    Without ``-p`` the destination gets the source's permission bits (0644 for a URL), as Etcha.
    ``remove`` deletes ``dst`` only when it still has the source's contents.

    Raises:
        UsageError: ``check``/``remove`` with ``-`` as destination.
        CommandError: the source cannot be read, or the destination cannot be written.
    """
    if args.dst == "-":
        if args.mode != "change":
            raise UsageError(f"copy: mode {args.mode} needs a destination path, got '-'")
        data = read_source(args.src)
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    dst = Path(args.dst)
    if args.mode == "remove":
        if _lstat(dst) is not None:
            remove_file(dst, read_source(args.src))
        return 0
    want = ownership(args.owner, args.group, args.perms, None)
    data = read_source(args.src)
    if want.perms is None:
        want = dataclasses.replace(want, perms=source_perms(args.src))
    return _run_mode(
        args.mode,
        "copy",
        dst,
        lambda: check_file(dst, data, want),
        lambda: change_file(dst, data, want),
        None,
    )


def cmd_line(args: argparse.Namespace) -> int:
    """``agent line <mode> <path | -> <match> <replacement>``: manage a line by regexp.

    With ``-`` the text comes from stdin and ``change``/``remove`` print the result to stdout.

    Raises:
        CommandError: invalid regexp, or the file cannot be read or written.
    """
    _compile(args.match)
    if args.path == "-":
        text = _stdin_bytes().decode("utf-8", "surrogateescape")
        if args.mode == "check":
            changed = line_apply(text, args.match, args.replacement) != text
            return _report("line", "stdin", "replacement not present" if changed else None)
        out = (
            line_apply(text, args.match, args.replacement)
            if args.mode == "change"
            else line_remove(text, args.match, args.replacement)
        )
        sys.stdout.buffer.write(out.encode("utf-8", "surrogateescape"))
        sys.stdout.buffer.flush()
        return 0
    path = Path(os.path.realpath(args.path))  # edit the target of a symlink, keep the link
    st = _lstat(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise CommandError(f"{path}: expected a regular file, got {_kind(st)}")
    exists = st is not None
    text = _read_file(path).decode("utf-8", "surrogateescape") if exists else ""
    if args.mode == "check":
        if not exists:
            return _report("line", path, "does not exist")
        changed = line_apply(text, args.match, args.replacement) != text
        return _report("line", path, "replacement not present" if changed else None)
    if args.mode == "change":
        new = line_apply(text, args.match, args.replacement)
    else:
        if not exists:
            return 0
        new = line_remove(text, args.match, args.replacement)
    if not exists or new != text:
        write_atomic(path, new.encode("utf-8", "surrogateescape"), Ownership())
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    """``agent link <mode> <src> <dst>``: manage the symlink ``dst`` -> ``src``.

    ``remove`` deletes only a symlink to ``src``, never its target or anything else at ``dst``.

    Raises:
        CommandError: the link cannot be made or removed.
    """
    dst = Path(args.dst)
    return _run_mode(
        args.mode,
        "link",
        dst,
        lambda: check_link(args.src, dst),
        lambda: change_link(args.src, dst),
        lambda: remove_link(args.src, dst),
    )
