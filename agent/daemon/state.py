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
- :meth:`StateStore.save` writes the token first and the metadata second, so metadata never
  describes a token that is not on disk.
- Source names are checked before any path is built from them: no ``/``, no ``..``, no NUL.
- A missing metadata file next to a present token is normal (Etcha wrote the state, or an older
  agent did): the metadata takes its defaults. An unreadable or malformed metadata file is logged
  and also defaults; it only ever holds hints, and the token file stays authoritative.

:class:`ReplayCache` remembers token ids (``jti``) until they expire, with a hard cap on entries;
its live entries can be persisted to ``<stateDir>/agent-replay.json`` (atomic, 0600) so a restart
does not forget them.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.atomicio import atomic_write
from agent.core.atomicio import remove_stale_temp_files as _remove_stale_temp_files
from agent.core.errors import SourceError
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.trust.gate import AdmittedToken

logger = logging.getLogger(__name__)

#: Longest accepted source name; keeps ``<name>.meta.json`` and temp names under NAME_MAX (255).
MAX_SOURCE_NAME = 200
#: Leeway added to ``exp`` before a remembered jti is forgotten (matches ``tokens.LEEWAY_SECONDS``,
#: because a token stays acceptable that long after ``exp``).
DEFAULT_REPLAY_LEEWAY = 30.0
_META_VERSION = 1
#: File in ``stateDir`` with accepted push jtis; cannot clash with ``<source>.jwt``/``.meta.json``.
REPLAY_FILE = "agent-replay.json"


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
        self._write(token_path, token.raw.encode("utf-8"), source)
        self._write(meta_path, _meta_bytes(meta), source)

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

    def load_replay(self) -> list[tuple[str, float | None]]:
        """Read the persisted replay cache; a missing or malformed file gives ``[]`` (logged).

        Returns:
            ``(jti, forget_at)`` pairs as written by :meth:`save_replay`.
        """
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
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                continue
            until = item[1]
            if until is None or (isinstance(until, int | float) and not isinstance(until, bool)):
                out.append((item[0], None if until is None else float(until)))
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


def _meta_bytes(meta: SourceMeta) -> bytes:
    return (json.dumps(meta.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")


class ReplayCache:
    """Remembers token ids (``jti``) until they expire, to refuse a token seen before.

    Memory is bounded twice: entries are dropped once ``exp + leeway`` has passed, and there are
    never more than ``cap`` entries (when full, expired entries go first, then the oldest
    inserted). Lookups and inserts are O(1) dict work plus one O(log n) heap push; expired
    entries are popped from an expiry heap as time passes, and the heap is rebuilt (O(n), once
    per ``cap`` inserts at most) when cap evictions have left it twice as long as the dict.

    Args:
        cap: the most entries held (at least 1).
        leeway: seconds after ``exp`` a token is still acceptable, so the jti is kept as long.
        clock: returns Unix time; for tests.

    Raises:
        ValueError: ``cap`` is below 1.
    """

    def __init__(
        self,
        cap: int,
        *,
        leeway: float = DEFAULT_REPLAY_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if cap < 1:
            raise ValueError(f"ReplayCache cap: expected at least 1, got {cap}")
        self.cap = cap
        self.leeway = leeway
        self._clock = clock
        self._entries: dict[str, float] = {}  # jti -> forget-at; insertion order = age
        self._heap: list[tuple[float, str]] = []  # (forget-at, jti); may hold stale pairs

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, jti: object) -> bool:
        if not isinstance(jti, str):
            return False
        until = self._entries.get(jti)
        return until is not None and until > self._clock()

    def remember(self, jti: str, exp: float | None, *, now: float | None = None) -> bool:
        """Record a jti, unless it is already known and not yet expired.

        Args:
            jti: the token id.
            exp: the token's ``exp`` (Unix seconds); ``None`` for a token that never expires,
                which is then only forgotten by cap eviction.
            now: the current Unix time; defaults to the clock.

        Returns:
            ``True`` when the jti was new (or its earlier entry had expired), ``False`` when it
            is a replay.
        """
        t = self._clock() if now is None else now
        self._expire(t)
        until = self._entries.get(jti)
        if until is not None:
            if until > t:
                return False
            del self._entries[jti]
        forget_at = math.inf if exp is None else float(exp) + self.leeway
        if forget_at <= t:
            # Already past its acceptance window: the verifier rejects it anyway.
            return True
        while len(self._entries) >= self.cap:
            oldest = next(iter(self._entries))
            del self._entries[oldest]
        self._entries[jti] = forget_at
        heapq.heappush(self._heap, (forget_at, jti))
        if len(self._heap) > 2 * self.cap + 16:
            self._heap = [(v, k) for k, v in self._entries.items()]
            heapq.heapify(self._heap)
        return True

    def snapshot(self, *, now: float | None = None) -> list[tuple[str, float | None]]:
        """The live entries, oldest first, for persisting across restarts.

        Args:
            now: the current Unix time; defaults to the clock.

        Returns:
            ``(jti, forget_at)`` pairs; ``forget_at`` is ``None`` for a token without ``exp``.
        """
        t = self._clock() if now is None else now
        self._expire(t)
        return [(k, None if math.isinf(v) else v) for k, v in self._entries.items()]

    def restore(self, entries: list[tuple[str, float | None]], *, now: float | None = None) -> None:
        """Re-load entries from :meth:`snapshot` (expired ones are skipped).

        Args:
            entries: ``(jti, forget_at)`` pairs.
            now: the current Unix time; defaults to the clock.
        """
        for jti, forget_at in entries:
            self.remember(jti, None if forget_at is None else forget_at - self.leeway, now=now)

    def _expire(self, now: float) -> None:
        heap = self._heap
        entries = self._entries
        while heap and heap[0][0] <= now:
            forget_at, jti = heapq.heappop(heap)
            if entries.get(jti) == forget_at:
                del entries[jti]
