"""Per-source persistent state, and an in-memory replay cache for token ids.

Layout in ``stateDir`` (one pair of files per source):

- ``<source>.jwt``: the raw token that was last accepted and run. This is Etcha's location and
  format, so a state directory can be moved between Etcha and the agent.
- ``<source>.meta.json``: the agent's own metadata (pull ``etag``/``last_modified``, the
  ``high_water_iat`` rollback mark and ``accepted_at``). Etcha ignores it.

Invariants:

- Every write is atomic: a temp file in the same directory, fsync of the file, ``os.replace``,
  fsync of the directory. A crash leaves either the old or the new file, never a half-written one,
  and no temp file is left behind by a failed write. A killed writer can leave its temp file
  (``.<file>.<random>.agent-tmp``); :meth:`StateStore.remove_stale_temp_files`, called at start-up,
  removes those of every state file (tokens, metadata, the replay cache) and nothing else.
- Files are created with mode 0600 (tokens can carry secrets in their run vars).
- :meth:`StateStore.save` writes and fsyncs both temp files, then renames the token first and
  the metadata second, then fsyncs the directory once (one commit instead of two): metadata never
  describes a token that is not on disk. Durable order of the two renames relies on the file
  system logging a directory's operations in order (ext4, xfs and btrfs do), as every journaled
  rename does.
- Source names are checked before any path is built from them: no ``/``, no ``..``, no NUL.
- A missing metadata file next to a present token is normal (Etcha wrote the state, or an older
  agent did): the metadata takes its defaults. An unreadable or malformed metadata file is logged
  and also defaults; it only ever holds hints, and the token file stays authoritative.

:class:`ReplayCache` (in :mod:`agent.daemon.replay_cache`, re-exported here) remembers
token ids (``jti``) until they expire, with a hard cap on entries;
its live entries are persisted so a restart does not forget them: each new entry is appended to
``<stateDir>/agent-replay.journal`` (one JSON line ``[jti, forget_at]`` per entry, one
``fdatasync`` per batch, 0600), and now and then the whole cache is compacted into
``<stateDir>/agent-replay.json`` (atomic, 0600) and the journal is emptied. A reader takes the
union of both files, so a crash at any point (mid-append, between the compaction's rename and the
truncation) loses no entry that was synced; a torn last line is skipped. An older agent reads
only ``agent-replay.json``; a state directory written by one loads unchanged (no journal yet).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.atomicio import atomic_write, atomic_write_many, fsync_dir
from agent.core.atomicio import remove_stale_temp_files as _remove_stale_temp_files
from agent.core.errors import SourceError
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.daemon.replay_cache import DEFAULT_REPLAY_LEEWAY as DEFAULT_REPLAY_LEEWAY
from agent.daemon.replay_cache import ReplayCache as ReplayCache
from agent.trust.gate import AdmittedToken

logger = logging.getLogger(__name__)

#: Longest accepted source name; keeps ``<name>.meta.json`` and temp names under NAME_MAX (255).
MAX_SOURCE_NAME = 200
_META_VERSION = 1
#: File in ``stateDir`` with accepted push jtis; cannot clash with ``<source>.jwt``/``.meta.json``.
REPLAY_FILE = "agent-replay.json"
#: Append-only journal of the jtis remembered since the last compaction into :data:`REPLAY_FILE`.
REPLAY_JOURNAL = "agent-replay.journal"
_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass(frozen=True, slots=True)
class SourceMeta:
    """The agent's metadata about a source's stored token.

    Attributes:
        etag: the ``ETag`` of the last pull answer (or a content hash for local paths); ``""``.
        last_modified: the ``Last-Modified`` of the last pull answer; ``""`` when unknown.
        high_water_iat: the highest ``iat`` ever accepted for the source (rollback protection);
            ``None`` when no token with an ``iat`` was accepted yet.
        accepted_at: Unix time the stored token was accepted; ``None`` when unknown.
        action: the action the stored token was admitted for (``push``/``pull``; ``""``
            unknown), so a restart re-admits it for the same action (scopes, docs/security.md).
    """

    etag: str = ""
    last_modified: str = ""
    high_water_iat: int | None = None
    accepted_at: float | None = None
    action: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``<source>.meta.json``."""
        return {
            "version": _META_VERSION,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "high_water_iat": self.high_water_iat,
            "accepted_at": self.accepted_at,
            "action": self.action,
        }

    @classmethod
    def from_json(cls, data: Any) -> SourceMeta:
        """Read metadata written by :meth:`to_json`; wrong-typed or unknown fields are ignored.

        Args:
            data: the decoded JSON document.

        Returns:
            The metadata, with defaults for anything missing or of the wrong type.
        """
        if not isinstance(data, dict):
            return cls()
        etag = data.get("etag")
        last_modified = data.get("last_modified")
        iat = data.get("high_water_iat")
        accepted = data.get("accepted_at")
        action = data.get("action")
        return cls(
            action=action if isinstance(action, str) else "",
            etag=etag if isinstance(etag, str) else "",
            last_modified=last_modified if isinstance(last_modified, str) else "",
            high_water_iat=iat if isinstance(iat, int) and not isinstance(iat, bool) else None,
            accepted_at=(
                float(accepted)
                if isinstance(accepted, int | float) and not isinstance(accepted, bool)
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class StoredState:
    """A source's stored token and its metadata."""

    token: str
    meta: SourceMeta


def check_source_name(source: str) -> str:
    """Check that a source name is safe to use as a file name in the state directory.

    Args:
        source: the source name from config or from a request path.

    Returns:
        The name, unchanged.

    Raises:
        SourceError: the name is empty, too long, or contains ``/``, ``..`` or NUL.
    """
    if not source:
        raise SourceError("source name: expected a non-empty name, got ''")
    if len(source) > MAX_SOURCE_NAME:
        raise SourceError(
            f"source name: expected at most {MAX_SOURCE_NAME} characters, got {len(source)}"
        )
    if "/" in source or "\0" in source or ".." in source or source == ".":
        shown = source.replace("\0", "\\0")
        raise SourceError(
            f"source name: expected a file-name-safe name without '/', '..' or NUL, got {shown!r}"
        )
    return source


def check_state_dir(path: Path) -> None:
    """Fail fast when ``run.stateDir`` cannot be created or written (before anything runs).

    Creates the directory (0700) when missing and writes and removes a probe file.

    Raises:
        SourceError: naming the path and the OS error.
    """
    if path.exists() and not path.is_dir():
        raise SourceError(
            f"run.stateDir {str(path)!r}: expected a directory, got a path that exists and is not "
            "a directory"
        )
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".agent-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise SourceError(
            f"run.stateDir {str(path)!r}: expected a directory the agent can create and write, "
            f"got {exc.strerror or exc}"
        ) from exc


class StateStore:
    """Reads and writes ``<stateDir>/<source>.jwt`` and ``<stateDir>/<source>.meta.json``.

    Args:
        state_dir: the state directory; created (with parents, mode 0700) on the first write.
        max_token_bytes: largest token file :meth:`load` reads (``run.maxTokenBytes``).
    """

    def __init__(self, state_dir: Path, *, max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> None:
        self.state_dir = Path(state_dir)
        self.max_token_bytes = max_token_bytes

    def token_path(self, source: str) -> Path:
        """Path of the source's token file (raises SourceError for an unsafe name)."""
        return self.state_dir / f"{check_source_name(source)}.jwt"

    def meta_path(self, source: str) -> Path:
        """Path of the source's metadata file (raises SourceError for an unsafe name)."""
        return self.state_dir / f"{check_source_name(source)}.meta.json"

    def _ensure_dir(self) -> None:
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise SourceError(
                f"state dir {self.state_dir}: expected a writable directory, got {exc.strerror}"
            ) from exc

    def save(self, source: str, token: AdmittedToken, meta: SourceMeta) -> None:
        """Store a token the trust gate admitted, and its metadata, token first.

        Args:
            source: the source name.
            token: the admitted token (only the gate builds one).
            meta: the metadata to store with it.

        Raises:
            SourceError: unsafe source name, or a file could not be written.
        """
        token_path = self.token_path(source)
        meta_path = self.meta_path(source)
        self._ensure_dir()
        if not isinstance(token, AdmittedToken):  # the type is the guarantee
            raise TypeError("StateStore.save needs an AdmittedToken (agent.trust.gate)")
        items: list[tuple[Path, bytes | str]] = [
            (token_path, token.raw.encode("utf-8")),
            (meta_path, _meta_bytes(meta)),
        ]
        try:
            # Both files fsynced, renamed token first, then ONE directory fsync (was two).
            atomic_write_many(items, mode=0o600)
        except OSError as exc:
            raise SourceError(
                f"state for source {source}: expected to write {token_path} and {meta_path}, "
                f"got {exc.strerror}"
            ) from exc

    def save_meta(self, source: str, meta: SourceMeta) -> None:
        """Store only the metadata (e.g. a new ETag after a pull), leaving the token alone.

        Args:
            source: the source name.
            meta: the new metadata.

        Raises:
            SourceError: unsafe source name, or the file could not be written.
        """
        meta_path = self.meta_path(source)
        self._ensure_dir()
        self._write(meta_path, _meta_bytes(meta), source)

    def load(self, source: str) -> StoredState | None:
        """Read the stored token and metadata of a source.

        Args:
            source: the source name.

        Returns:
            The stored state, or ``None`` when there is no token file (or it is empty).

        Raises:
            SourceError: unsafe source name, or the token file exists but cannot be read.
        """
        token_path = self.token_path(source)
        meta_path = self.meta_path(source)
        try:
            with token_path.open("rb") as fh:
                raw = fh.read(self.max_token_bytes + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceError(
                f"state file {token_path}: expected a readable file, got {exc.strerror}"
            ) from exc
        if len(raw) > self.max_token_bytes:
            raise SourceError(
                f"state file {token_path}: expected at most {self.max_token_bytes} bytes, got more"
            )
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"state file {token_path}: expected UTF-8 text, got undecodable bytes"
            ) from exc
        if not token:
            return None
        return StoredState(token=token, meta=self._load_meta(meta_path))

    def replay_path(self) -> Path:
        """Path of the persisted push replay cache (``agent-replay.json``; never a source file)."""
        return self.state_dir / REPLAY_FILE

    def save_replay(self, entries: list[tuple[str, float | None]]) -> None:
        """Store the replay cache's live entries atomically (see :meth:`ReplayCache.snapshot`).

        Args:
            entries: ``(jti, forget_at)`` pairs; ``None`` for a token without ``exp``.

        Raises:
            SourceError: the file could not be written.
        """
        self._ensure_dir()
        data = json.dumps({"version": _META_VERSION, "jtis": entries}).encode("utf-8")
        self._write(self.replay_path(), data, "(replay cache)")

    def replay_journal_path(self) -> Path:
        """Path of the replay journal (``agent-replay.journal``; never a source file)."""
        return self.state_dir / REPLAY_JOURNAL

    def append_replay(self, entries: list[tuple[str, float | None]]) -> None:
        """Append entries to the replay journal in one write, then ``fdatasync`` it.

        A journal created here also gets its directory fsynced (once), so the new name is durable.

        Args:
            entries: ``(jti, forget_at)`` pairs, as for :meth:`save_replay`.

        Raises:
            SourceError: the journal could not be written (it may hold a torn last line, which
                readers skip; compact with :meth:`compact_replay` before appending again).
        """
        self._ensure_dir()
        path = self.replay_journal_path()
        data = b"".join(_replay_line(jti, until) for jti, until in entries)
        try:
            created = False
            try:
                fd = os.open(path, _APPEND_FLAGS)
            except FileNotFoundError:
                fd = os.open(path, _APPEND_FLAGS | os.O_CREAT | os.O_EXCL, 0o600)
                created = True
            try:
                view = memoryview(data)
                while view:  # a short write (disk full) continues where it stopped
                    view = view[os.write(fd, view) :]
                os.fdatasync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_dir(self.state_dir)
        except OSError as exc:
            raise SourceError(
                f"state for (replay journal): expected to append to {path}, got {exc.strerror}"
            ) from exc

    def compact_replay(self, entries: list[tuple[str, float | None]]) -> None:
        """Store ``entries`` (the whole cache) in ``agent-replay.json``, then empty the journal.

        The file is durable before the journal is truncated, so a crash in between leaves both
        (their union is the same cache).

        Raises:
            SourceError: a file could not be written.
        """
        self.save_replay(entries)
        path = self.replay_journal_path()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SourceError(
                f"state for (replay journal): expected to open {path}, got {exc.strerror}"
            ) from exc
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError as exc:
            raise SourceError(
                f"state for (replay journal): expected to truncate {path}, got {exc.strerror}"
            ) from exc
        finally:
            os.close(fd)

    def has_replay_journal(self) -> bool:
        """Whether the replay journal holds anything (it is compacted at start-up)."""
        try:
            return self.replay_journal_path().stat().st_size > 0
        except OSError:
            return False

    def load_replay(self) -> list[tuple[str, float | None]]:
        """Read the persisted replay cache: ``agent-replay.json``, then the journal's entries.

        A missing file gives nothing; a malformed file, or a malformed journal line (a torn last
        line after a crash), is skipped and logged.

        Returns:
            ``(jti, forget_at)`` pairs as written by :meth:`save_replay` and
            :meth:`append_replay`, the file's first.
        """
        return [*self._load_replay_file(), *self._load_replay_journal()]

    def _load_replay_journal(self) -> list[tuple[str, float | None]]:
        path = self.replay_journal_path()
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            logger.warning("Ignoring unreadable replay journal %s: %s", path, exc.strerror)
            return []
        out: list[tuple[str, float | None]] = []
        skipped = 0
        for line in raw.split(b"\n"):
            if not line:
                continue
            try:
                entry = _replay_entry(json.loads(line))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError included
                entry = None
            if entry is None:
                skipped += 1
            else:
                out.append(entry)
        if skipped:
            logger.warning("Replay journal %s: skipped %d malformed line(s)", path, skipped)
        return out

    def _load_replay_file(self) -> list[tuple[str, float | None]]:
        path = self.replay_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("Ignoring unreadable replay cache %s: %s", path, exc)
            return []
        items = data.get("jtis") if isinstance(data, dict) else None
        out: list[tuple[str, float | None]] = []
        for item in items if isinstance(items, list) else []:
            entry = _replay_entry(item)
            if entry is not None:
                out.append(entry)
        return out

    def remove_stale_temp_files(self) -> list[Path]:
        """Remove the temp files that killed writers left in the state directory.

        Only :func:`agent.core.atomicio.atomic_write` temp files (``.<file>.<random>.agent-tmp``,
        and
        the older ``.<state file>.<random>.tmp``) that no live writer holds are removed; state
        files and anything else stay. Each removal is logged. Call it at start-up.

        Returns:
            The removed files, sorted; ``[]`` when the directory does not exist yet.

        Raises:
            SourceError: the state directory exists but cannot be listed.
        """
        try:
            removed = _remove_stale_temp_files(self.state_dir)
        except OSError as exc:
            raise SourceError(
                f"state dir {self.state_dir}: expected a readable directory, got {exc.strerror}"
            ) from exc
        for path in removed:
            logger.info("Removed a stale temporary state file %s", path.name)
        return removed

    def _load_meta(self, meta_path: Path) -> SourceMeta:
        try:
            text = meta_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return SourceMeta()
        except (OSError, UnicodeDecodeError) as exc:
            logger.warning("Ignoring unreadable state metadata %s: %s", meta_path, exc)
            return SourceMeta()
        try:
            data = json.loads(text)
        except ValueError:
            logger.warning("Ignoring malformed state metadata %s: expected JSON", meta_path)
            return SourceMeta()
        return SourceMeta.from_json(data)

    def _write(self, path: Path, data: bytes, source: str) -> None:
        try:
            atomic_write(path, data, mode=0o600)
        except OSError as exc:
            raise SourceError(
                f"state for source {source}: expected to write {path}, got {exc.strerror}"
            ) from exc


def _replay_entry(item: Any) -> tuple[str, float | None] | None:
    """One ``[jti, forget_at]`` item of the replay file or journal; ``None`` when malformed."""
    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
        return None
    until = item[1]
    if until is None:
        return item[0], None
    if isinstance(until, int | float) and not isinstance(until, bool):
        return item[0], float(until)
    return None


def _replay_line(jti: str, until: float | None) -> bytes:
    return json.dumps([jti, until], separators=(",", ":")).encode("utf-8") + b"\n"


def _meta_bytes(meta: SourceMeta) -> bytes:
    return (json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")
